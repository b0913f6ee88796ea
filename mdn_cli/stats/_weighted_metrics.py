"""Prediction metrics of weighted rows, for many weight vectors at once.

Each metric is scikit-learn's definition with ``sample_weight``, written as weighted sums of
per-row terms: for a (B, n) matrix of row weights (B bootstrap resamples as counts, or one row of
ones) a single matrix product gives every replicate's sums, so B replicates cost a few passes over
the weights instead of B rounds of scikit-learn calls. ROC AUC and average precision sort the
scores once; a replicate's curve is its weights summed over each run of tied scores and
accumulated down the ranking, which is scikit-learn's ``_binary_clf_curve`` with the weights as
columns. A row of weight 0 is not in the replicate: it adds nothing to a sum, and a metric
undefined on the rows of positive weight (one class only for the ranking metrics, 0/0 for F1, a
constant column for R² and r, no row at all) is NaN. ``tests/stats/test_metrics.py`` holds the
values equal to scikit-learn's on the resampled rows.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

# Binary prediction is class 1 when score > THRESHOLD: logit > 0, as training's accuracy counts it.
THRESHOLD = 0.5


def predicted_classes(task: str, score: np.ndarray) -> np.ndarray:
    """The predicted class index per row: class 1 when P(class 1) > THRESHOLD (binary), the most probable class (multiclass)."""
    return score.argmax(axis=1) if task == "multiclass" else (score > THRESHOLD).astype(np.int64)


def _ratio(numerator: np.ndarray, denominator: np.ndarray, defined: np.ndarray) -> np.ndarray:
    """numerator / denominator where ``defined``, NaN elsewhere, without a division warning."""
    out = np.full(np.broadcast_shapes(numerator.shape, denominator.shape), np.nan)
    return np.divide(numerator, denominator, out=out, where=defined)


def _log_loss_terms(probability_of_truth: np.ndarray) -> np.ndarray:
    """Each row's log loss, with the probability clipped to [eps, 1 - eps] as scikit-learn does."""
    eps = np.finfo(np.float64).eps
    return -np.log(np.clip(probability_of_truth, eps, 1 - eps))


def _mean_where(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per replicate (row), the mean of ``values`` over the columns ``present``; NaN when none is."""
    count = present.sum(axis=1)
    return _ratio(np.where(present, values, 0.0).sum(axis=1), count.astype(np.float64), count > 0)


class WeightedRows(Protocol):
    """Prepared rows of one task: metrics for any (B, n) weights, and the same for a subset of the rows."""

    y: np.ndarray

    def metrics(self, w: np.ndarray) -> dict[str, np.ndarray]: ...

    def subset(self, mask: np.ndarray) -> "WeightedRows": ...


class BinaryRows:
    """Rows of a binary task: y in {0, 1}, p the probability of class 1."""

    def __init__(self, y: np.ndarray, p: np.ndarray):
        self.y, self.p = y, p
        truth = y.astype(np.float64)
        predicted = predicted_classes("binary", p).astype(np.float64)
        # One column per weighted sum: rows, positives, negatives, predicted positives, true positives, true negatives, correct, log loss, Brier.
        self.terms = np.column_stack([
            np.ones_like(truth), truth, 1 - truth, predicted, truth * predicted, (1 - truth) * (1 - predicted),
            (truth == predicted).astype(np.float64), _log_loss_terms(np.where(y == 1, p, 1 - p)), (truth - p) ** 2,
        ])  # fmt: skip
        self.order = np.argsort(-p, kind="stable")  # the ranking, highest score first
        ranked = p[self.order]
        self.runs = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # first row of each run of tied scores
        self.ranked_truth = truth[self.order]

    def subset(self, mask: np.ndarray) -> BinaryRows:
        return BinaryRows(self.y[mask], self.p[mask])

    def metrics(self, w: np.ndarray) -> dict[str, np.ndarray]:
        total, positives, negatives, predicted, tp, tn, correct, log_loss, brier = (w @ self.terms).T
        drawn = total > 0
        present = np.column_stack([negatives > 0, positives > 0])  # the classes drawn
        recalls = _ratio(np.column_stack([tn, tp]), np.column_stack([negatives, positives]), present)
        roc_auc, average_precision = self._ranking(w, positives, negatives)
        f1_denominator = positives + predicted  # 2 tp + fp + fn
        return {
            "accuracy": _ratio(correct, total, drawn),
            "balanced_accuracy": _mean_where(recalls, present),
            "roc_auc": roc_auc,
            "average_precision": average_precision,
            "f1": _ratio(2 * tp, f1_denominator, f1_denominator > 0),
            "log_loss": _ratio(log_loss, total, drawn),
            "brier": _ratio(brier, total, drawn),
        }

    def _ranking(self, w: np.ndarray, positives: np.ndarray, negatives: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ROC AUC and average precision of every replicate from the one ranking of the scores.

        Per run r of tied scores (highest first) with weighted positives pos_r and negatives
        neg_r, and TP_r, FP_r their sums down to run r: AUC = Σ neg_r (TP_r - pos_r / 2) / (P N)
        (a tie counts one half, the trapezoid of the ROC curve) and AP = Σ pos_r TP_r / (TP_r + FP_r) / P
        (precision at each step of recall).
        """
        ranked = w[:, self.order]
        positive_runs = np.add.reduceat(ranked * self.ranked_truth, self.runs, axis=1)
        ranked *= 1 - self.ranked_truth
        negative_runs = np.add.reduceat(ranked, self.runs, axis=1)
        true_positives = np.cumsum(positive_runs, axis=1)
        both = (positives > 0) & (negatives > 0)
        area = (negative_runs * (true_positives - positive_runs / 2)).sum(axis=1)
        roc_auc = _ratio(area, positives * negatives, both)
        flagged = true_positives + np.cumsum(negative_runs, axis=1)  # TP_r + FP_r
        precision_steps = np.divide(positive_runs * true_positives, flagged, out=np.zeros_like(flagged), where=positive_runs > 0)
        average_precision = _ratio(precision_steps.sum(axis=1), positives, both)
        return roc_auc, average_precision


class MulticlassRows:
    """Rows of a K-class task: y codes 0..K-1, p (n, K) class probabilities."""

    def __init__(self, y: np.ndarray, p: np.ndarray):
        self.y, self.p = y, p
        k = p.shape[1]
        predicted = predicted_classes("multiclass", p)
        truth_columns = np.eye(k)[y]
        predicted_columns = np.eye(k)[predicted]
        correct = (y == predicted).astype(np.float64)
        # Columns: rows, correct, log loss, then per class: true rows, predicted rows, true positives.
        self.terms = np.column_stack([
            np.ones(len(y)), correct, _log_loss_terms(p[np.arange(len(y)), y]),
            truth_columns, predicted_columns, truth_columns * correct[:, None],
        ])  # fmt: skip

    def subset(self, mask: np.ndarray) -> MulticlassRows:
        return MulticlassRows(self.y[mask], self.p[mask])

    def metrics(self, w: np.ndarray) -> dict[str, np.ndarray]:
        k = self.p.shape[1]
        sums = w @ self.terms
        total, correct, log_loss = sums[:, 0], sums[:, 1], sums[:, 2]
        true, predicted, tp = sums[:, 3 : 3 + k], sums[:, 3 + k : 3 + 2 * k], sums[:, 3 + 2 * k :]
        drawn, either = total > 0, true + predicted  # either: 2 tp + fp + fn, positive for the classes in y_true or predicted
        return {
            "accuracy": _ratio(correct, total, drawn),
            "balanced_accuracy": _mean_where(_ratio(tp, true, true > 0), true > 0),  # classes in y_true
            "macro_f1": _mean_where(_ratio(2 * tp, either, either > 0), either > 0),
            "log_loss": _ratio(log_loss, total, drawn),
        }

    def confusion_matrix(self) -> list[list[int]]:
        """Rows are true classes, columns predicted ones, every row weighted 1."""
        k = self.p.shape[1]
        counts = np.bincount(self.y * k + predicted_classes("multiclass", self.p), minlength=k * k)
        return counts.reshape(k, k).tolist()


class RegressionRows:
    """Rows of a regression task: y the target, s the prediction."""

    def __init__(self, y: np.ndarray, s: np.ndarray):
        self.y, self.s = y, s
        error = s - y
        self.terms = np.column_stack([np.ones_like(y), y, s, np.abs(error), error**2])

    def subset(self, mask: np.ndarray) -> RegressionRows:
        return RegressionRows(self.y[mask], self.s[mask])

    def metrics(self, w: np.ndarray) -> dict[str, np.ndarray]:
        total, y_sum, s_sum, absolute, squared = (w @ self.terms).T
        drawn = total > 0
        y_constant, s_constant = self._constant(w, self.y), self._constant(w, self.s)
        with np.errstate(invalid="ignore", divide="ignore"):
            y_centred = self.y - (y_sum / total)[:, None]  # centred per replicate, as r2_score and np.cov do
            s_centred = self.s - (s_sum / total)[:, None]
        weighted_y = w * y_centred
        y_spread = (weighted_y * y_centred).sum(axis=1)
        s_spread = (w * s_centred * s_centred).sum(axis=1)
        covariance = (weighted_y * s_centred).sum(axis=1)
        pearson = _ratio(covariance, np.sqrt(y_spread * s_spread), ~(y_constant | s_constant))
        return {
            "mae": _ratio(absolute, total, drawn),
            "rmse": np.sqrt(_ratio(squared, total, drawn)),
            "r2": 1 - _ratio(squared, y_spread, ~y_constant),
            "pearson_r": np.clip(pearson, -1, 1),
        }

    @staticmethod
    def _constant(w: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Per replicate: do the rows of positive weight all hold one value (or is there none)?"""
        drawn = w > 0
        return np.where(drawn, values, np.inf).min(axis=1) >= np.where(drawn, values, -np.inf).max(axis=1)


ROWS_BY_TASK: dict[str, type] = {"binary": BinaryRows, "multiclass": MulticlassRows, "regression": RegressionRows}
