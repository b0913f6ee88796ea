"""Prediction metrics, overall and per metadata group, with their gaps and bootstrap intervals.

Pure (numpy and pandas: no files, no torch, nothing of mdn_cli outside stats) so `mdn evaluate`,
training and cross-validation share it and the CLI layer adds file and option names to the errors.

Every metric is scikit-learn's definition (Pearson r: numpy's weighted covariance), computed by
``_weighted_metrics`` for a matrix of row weights. A bootstrap replicate weights each row by its
count in the resample, which is exactly the metric of the resampled rows, so the point estimate
(every weight 1) and all replicates share one definition and one pass. A metric undefined on the
rows at hand (one class only for AUC, 0/0 for F1, a constant column for R² or r) is None with a
reason (``MetricValues.undefined``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from mdn_cli.stats._weighted_metrics import ROWS_BY_TASK, WeightedRows, predicted_classes
from mdn_cli.stats.validation import level_text, listing

__all__ = [
    "LOWER_IS_BETTER", "METRICS_BY_TASK", "MetricValues", "MetricsInputError", "bootstrap_intervals", "gaps",
    "group_table", "mean_sd", "overall_metrics", "predicted_classes", "quantile_groups",
]  # fmt: skip

METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "binary": ("accuracy", "balanced_accuracy", "roc_auc", "average_precision", "f1", "log_loss", "brier"),
    "multiclass": ("accuracy", "balanced_accuracy", "macro_f1", "log_loss", "confusion_matrix"),
    "regression": ("mae", "rmse", "r2", "pearson_r"),
}
LOWER_IS_BETTER = frozenset({"log_loss", "brier", "mae", "rmse"})
_NOT_GAPPED = frozenset({"confusion_matrix"})  # a table, not a number: no gap, no interval
_PROBABILITY_TOLERANCE = 1e-4  # |row sum - 1| allowed for multiclass probabilities (float32 softmax)
_WEIGHTS_PER_CHUNK = 1 << 21  # bootstrap counts per block (replicates x rows): 16 MB of float64, a few arrays of it while summed; fixes the draws
_REASONS = {
    "roc_auc": "only one class among these rows (ranking needs both)",
    "average_precision": "only one class among these rows (ranking needs both)",
    "f1": "no positive labels and no positive predictions (F1 is 0/0)",
    "r2": "y_true is constant (R² divides by its variance)",
    "pearson_r": "y_true is constant (the correlation divides by its spread)",
}


class MetricsInputError(ValueError):
    """Inputs no metric can be computed from: the message says what is wrong and what to do."""


@dataclass(frozen=True)
class MetricValues:
    """Metric name -> value (None when undefined on these rows), and why each None is None."""

    values: dict[str, float | list | None]
    undefined: dict[str, str] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------------


def _rows(count: int) -> str:
    return f"{count} row{'s' * (count != 1)}"


def _class_codes(y_true, n_classes: int, classes: Optional[Sequence]) -> np.ndarray:
    """y_true as codes 0..n_classes-1: mapped through ``classes`` when given, else checked to be codes."""
    labels = pd.Series(np.asarray(y_true, dtype=object))
    missing = int(labels.isna().sum())
    if missing:
        raise MetricsInputError(f"y_true is missing in {_rows(missing)}; drop those rows before evaluating.")
    if classes is not None:
        index = pd.Index(list(classes))
        if len(index) != n_classes or not index.is_unique:
            raise MetricsInputError(
                f"classes must name the {n_classes} columns of score once each, in order (got {listing(index)})."
            )
        codes = index.get_indexer(labels)
        if (codes < 0).any():
            raise MetricsInputError(
                f"y_true has labels not among classes: {listing(labels[codes < 0].unique())}; "
                f"classes are {listing(index)}."
            )
        return codes.astype(np.int64)
    numbers = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isin(numbers, np.arange(n_classes))
    if bad.any():
        raise MetricsInputError(
            f"y_true must hold class codes 0..{n_classes - 1}, got {listing(labels[bad].unique())}; "
            "pass classes=[...] (the labels of score's columns, in order) to use other labels."
        )
    return numbers.astype(np.int64)


def _prepare(task: str, y_true, score, classes: Optional[Sequence]) -> WeightedRows:
    """The rows, checked: float64 scores, and y_true as class codes (classification) or floats (regression)."""
    if task not in METRICS_BY_TASK:
        raise MetricsInputError(f"unknown task {task!r}; expected one of {', '.join(METRICS_BY_TASK)}.")
    if np.ndim(y_true) != 1:
        raise MetricsInputError(f"y_true must be one value per row (got shape {np.shape(y_true)}).")
    n = len(y_true)
    if n == 0:
        raise MetricsInputError("no rows to evaluate.")
    if task == "regression" and classes is not None:
        raise MetricsInputError("classes name the columns of a classifier's scores; regression has none.")
    try:
        score = np.asarray(score, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MetricsInputError(f"score must be numbers: {error}.") from None
    want = "(n, K) class probabilities" if task == "multiclass" else "(n,) " + (
        "probabilities of class 1" if task == "binary" else "predictions"
    )
    if score.ndim != (2 if task == "multiclass" else 1) or score.shape[0] != n:
        raise MetricsInputError(f"score has shape {score.shape}; the {task} task needs {want} for the {n} rows of y_true.")
    bad = ~np.isfinite(score.reshape(n, -1)).all(axis=1)
    if bad.any():
        raise MetricsInputError(f"score is NaN or infinite in {_rows(int(bad.sum()))}: {listing(np.flatnonzero(bad))}.")
    if task == "regression":
        y = pd.to_numeric(pd.Series(np.asarray(y_true, dtype=object)), errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(y)
        if bad.any():
            raise MetricsInputError(f"y_true is missing, infinite or not a number in {_rows(int(bad.sum()))}.")
        return ROWS_BY_TASK[task](y, score)
    if task == "binary":
        if ((score < 0) | (score > 1)).any():
            raise MetricsInputError("binary scores must be probabilities in [0, 1]; apply a sigmoid to logits first.")
        return ROWS_BY_TASK[task](_class_codes(y_true, 2, classes), score)
    if score.shape[1] < 2:
        raise MetricsInputError(f"multiclass scores need at least 2 columns (got {score.shape[1]}).")
    sums = score.sum(axis=1)
    if (score < 0).any() or (np.abs(sums - 1) > _PROBABILITY_TOLERANCE).any():
        raise MetricsInputError(
            "multiclass scores must be probabilities: non-negative, each row summing to 1 "
            f"(row sums range {sums.min():.4g}..{sums.max():.4g}); apply a softmax to logits first."
        )
    # rows within the tolerance (float32 softmax) made to sum to 1 exactly, as sklearn's log_loss expects
    return ROWS_BY_TASK[task](_class_codes(y_true, score.shape[1], classes), score / sums[:, None])


def _point(task: str, rows: WeightedRows) -> MetricValues:
    """The metrics of these rows, each weighted 1."""
    arrays = rows.metrics(np.ones((1, len(rows.y))))
    values: dict[str, float | list | None] = {}
    for name in METRICS_BY_TASK[task]:
        if name == "confusion_matrix":
            values[name] = rows.confusion_matrix()
        else:
            value = arrays[name][0]
            values[name] = None if np.isnan(value) else float(value)
    undefined = {name: _why_undefined(name, rows.y) for name, value in values.items() if value is None}
    return MetricValues(values=values, undefined=undefined)


def _why_undefined(name: str, y: np.ndarray) -> str:
    if name == "pearson_r" and not (y == y[0]).all():
        return "score is constant (the correlation divides by its spread)"
    return _REASONS[name]


def overall_metrics(task: str, y_true, score, classes: Optional[Sequence] = None) -> MetricValues:
    """Every metric of ``task`` (``METRICS_BY_TASK``) on all rows.

    binary: ``score`` (n,) is the probability of class 1 and ``y_true`` holds 0/1 (or the two
    ``classes``, negative first); multiclass: ``score`` (n, K) probabilities, ``y_true`` codes
    0..K-1 (or ``classes``, the labels of score's columns); regression: ``score`` the prediction.
    """
    return _point(task, _prepare(task, y_true, score, classes))


# ----------------------------------------------------------------------------------------------
# Groups
# ----------------------------------------------------------------------------------------------


def _edge_texts(edges: np.ndarray) -> list[str]:
    """Bin edges with 2 decimals, or as many more as it takes to tell them apart."""
    for decimals in range(2, 16):
        texts = [f"{edge:.{decimals}f}" for edge in edges]
        if len(set(texts)) == len(texts):
            return texts
    return [repr(float(edge)) for edge in edges]


def _levels(values: pd.Series) -> pd.Series:
    """Each value as text, in the column's own category order or sorted."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        order = list(values.cat.categories)
    else:
        order = sorted(values.dropna().unique(), key=lambda value: (str(type(value)), value))
    texts = list(dict.fromkeys(level_text(value) for value in order))
    labelled = values.astype(object).map(lambda value: None if pd.isna(value) else level_text(value))
    return pd.Series(pd.Categorical(labelled, categories=texts, ordered=True), index=values.index, name=values.name)


def quantile_groups(values, bins: int = 4, categorical: bool = False) -> pd.Series:
    """Each row's group label: a quantile bin of a numeric column, or the level of a categorical one.

    Numeric columns are cut at their ``bins``-quantiles into ranges ``[1.00, 2.31)`` ... with the
    last one closed, ``[4.10, 9.87]`` (2 decimals, more when edges would read alike). Tied values
    can make quantiles coincide; those bins merge, so a column may get fewer than ``bins`` groups
    (bins left empty, possible with very few rows, are dropped too). A numeric column with at most
    ``bins`` distinct values is grouped by value, like strings, booleans, pandas categoricals and
    ``categorical=True``: their levels as text, 3 rather than 3.0. Missing values stay missing
    (group_table leaves those rows out and counts them). Returns an ordered pandas categorical
    (bins low to high, levels sorted) with ``values``' index.
    """
    values = values if isinstance(values, pd.Series) else pd.Series(values)
    if bins < 2:
        raise MetricsInputError(f"bins must be at least 2 (got {bins}).")
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if categorical or not numeric:
        return _levels(values)
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    if np.isinf(numbers).any():
        raise MetricsInputError(
            f"column {values.name!r} has infinite values in {_rows(int(np.isinf(numbers).sum()))}; "
            "leave the cell empty to mark a missing value."
        )
    present = ~np.isnan(numbers)
    if len(np.unique(numbers[present])) <= bins:
        return _levels(values)
    edges = np.unique(np.quantile(numbers[present], np.linspace(0, 1, bins + 1)))
    last = len(edges) - 2
    texts = _edge_texts(edges)
    labels = [f"[{texts[i]}, {texts[i + 1]}{']' if i == last else ')'}" for i in range(last + 1)]
    codes = np.where(present, np.clip(np.searchsorted(edges, numbers, side="right") - 1, 0, last), -1)
    groups = pd.Categorical.from_codes(codes, categories=labels, ordered=True).remove_unused_categories()
    return pd.Series(groups, index=values.index, name=values.name)


@dataclass(frozen=True)
class _Column:
    """One grouping column: a row mask per group (in order) and how many rows had no group."""

    name: str
    masks: dict[str, np.ndarray]
    n_missing: int


def _columns(groups: Optional[Mapping[str, pd.Series]], n: int) -> list[_Column]:
    columns = []
    for name, labels in (groups or {}).items():
        labels = labels if isinstance(labels, pd.Series) else pd.Series(labels)
        if len(labels) != n:
            raise MetricsInputError(f"group column {name!r} has {len(labels)} values for {n} rows.")
        labels = labels.reset_index(drop=True)
        if not isinstance(labels.dtype, pd.CategoricalDtype):
            labels = _levels(labels)
        present = labels.notna().to_numpy()
        masks = {level_text(group): (labels == group).to_numpy() & present for group in labels.cat.categories}
        masks = {group: mask for group, mask in masks.items() if mask.any()}
        if len(masks) < 2:
            raise MetricsInputError(
                f"group column {name!r} has {len(masks)} group{'s' * (len(masks) != 1)}"
                f"{' (' + listing(masks) + ')' if masks else ''} among its {_rows(int(present.sum()))} "
                "with a value: there is nothing to compare; leave it out or choose finer bins."
            )
        columns.append(_Column(name=str(name), masks=masks, n_missing=int((~present).sum())))
    return columns


def _group_rows(task: str, rows_of: dict[tuple[str, str], WeightedRows], columns: list[_Column]) -> list[dict]:
    """The ``group_table`` rows, from each group's prepared rows (``rows_of[column, group]``)."""
    table = []
    for column in columns:
        for group, mask in column.masks.items():
            metrics = _point(task, rows_of[column.name, group])
            table.append({
                "column": column.name, "group": group, "n": int(mask.sum()), "n_missing": column.n_missing,
                **metrics.values, "undefined": metrics.undefined,
            })  # fmt: skip
    return table


def _rows_of_groups(rows: WeightedRows, columns: list[_Column]) -> dict[tuple[str, str], WeightedRows]:
    return {(column.name, group): rows.subset(mask) for column in columns for group, mask in column.masks.items()}


def group_table(task: str, y_true, score, groups: Mapping[str, pd.Series], classes: Optional[Sequence] = None) -> list[dict]:
    """One row per (column, group): ``{"column", "group", "n", "n_missing", <metric>: value, ..., "undefined"}``.

    ``groups`` maps a column name to each row's group label (``quantile_groups`` output, or any
    values, taken as levels), row for row with ``y_true``. Rows whose label is missing are left out
    of that column and counted in ``n_missing``; ``undefined`` says why a metric is None in that
    group. The shape of fairlearn's ``MetricFrame.by_group``, one column after another.
    """
    rows = _prepare(task, y_true, score, classes)
    columns = _columns(groups, len(rows.y))
    return _group_rows(task, _rows_of_groups(rows, columns), columns)


def gaps(rows: Sequence[dict]) -> list[dict]:
    """Per column and metric: ``{"column", "metric", "difference", "worst_group"}`` over ``group_table`` rows.

    The difference is max - min over the groups where the metric is defined (fairlearn's
    ``MetricFrame.difference()``); the worst group has the lowest value, or the highest for a
    loss or error (``LOWER_IS_BETTER``); the first in group order on a tie. Both are None when
    fewer than two groups have the metric. The confusion matrix has no gap.
    """
    out = []
    for column in dict.fromkeys(row["column"] for row in rows):
        members = [row for row in rows if row["column"] == column]
        metrics = [key for key in members[0] if any(key in names for names in METRICS_BY_TASK.values())]
        for metric in (name for name in metrics if name not in _NOT_GAPPED):
            defined = [(row[metric], row["group"]) for row in members if row[metric] is not None]
            difference = worst = None
            if len(defined) >= 2:
                values = [value for value, _ in defined]
                difference = max(values) - min(values)
                pick = max if metric in LOWER_IS_BETTER else min
                worst = pick(defined, key=lambda pair: pair[0])[1]
            out.append({"column": column, "metric": metric, "difference": difference, "worst_group": worst})
    return out


# ----------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------


def _resampled_counts(strata: Optional[np.ndarray], n_rows: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, n_rows): each row's count in ``size`` bootstrap resamples of the rows.

    Rows are drawn with replacement within each stratum (all rows form one when ``strata`` is
    None), so every resample keeps each stratum's row count.
    """
    members = [np.arange(n_rows)] if strata is None else [np.flatnonzero(strata == v) for v in np.unique(strata)]
    offsets = (np.arange(size) * n_rows)[:, None]
    drawn = [(offsets + rows[rng.integers(0, len(rows), size=(size, len(rows)))]).ravel() for rows in members]
    return np.bincount(np.concatenate(drawn), minlength=size * n_rows).reshape(size, n_rows)


def _interval(replicates: list[np.ndarray], level: float) -> dict:
    values = np.concatenate(replicates) if replicates else np.empty(0)
    values = values[~np.isnan(values)]
    if not values.size:
        return {"low": None, "high": None, "n_used": 0}
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return {"low": float(low), "high": float(high), "n_used": int(values.size)}


def bootstrap_intervals(
    task: str,
    y_true,
    score,
    groups: Optional[Mapping[str, pd.Series]] = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    classes: Optional[Sequence] = None,
) -> dict:
    """Percentile bootstrap intervals for every overall metric and every gap of ``groups``' columns.

    Classification resamples rows within each class of ``y_true`` (stratified: every replicate
    keeps the class counts, so AUC is always defined); regression resamples rows. Each resampled
    row keeps its group, and the groups are evaluated on the resample. A replicate where a metric
    is undefined is skipped for it, and so is a gap replicate where the metric is undefined in a
    group that has it on the original rows (a group can go undrawn): a gap always compares the
    same groups. ``n_used`` counts the replicates behind each interval (low/high None at 0).
    Returns ``{"n_boot", "seed", "level", "method", "resampling", "overall": {metric: {"estimate",
    "low", "high", "n_used"}}, "gaps": [{"column", "metric", "difference", "low", "high", "n_used"}],
    "groups": [{"column", "group", "metric", "estimate", "low", "high", "n_used"}]}``: every metric of
    every group too, from the same replicates.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise MetricsInputError(f"n_boot must be a whole number of at least 1 (got {n_boot!r}).")
    if not 0 < level < 1:
        raise MetricsInputError(f"level must be between 0 and 1, such as 0.95 (got {level!r}).")
    rows = _prepare(task, y_true, score, classes)
    n = len(rows.y)
    columns = _columns(groups, n)
    rows_of = _rows_of_groups(rows, columns)
    names = [name for name in METRICS_BY_TASK[task] if name not in _NOT_GAPPED]
    point = _point(task, rows)
    point_rows = _group_rows(task, rows_of, columns)
    point_gaps = gaps(point_rows)
    had = {(row["column"], row["group"], name): row[name] is not None for row in point_rows for name in names}

    overall: dict[str, list[np.ndarray]] = {name: [] for name in names}
    gapped: dict[tuple[str, str], list[np.ndarray]] = {(gap["column"], gap["metric"]): [] for gap in point_gaps}
    grouped: dict[tuple[str, str, str], list[np.ndarray]] = {key: [] for key in had}
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _WEIGHTS_PER_CHUNK // n)
    for start in range(0, n_boot, per_chunk):
        size = min(per_chunk, n_boot - start)
        w = _resampled_counts(None if task == "regression" else rows.y, n, size, rng).astype(np.float64)
        replicate = rows.metrics(w)
        for name in names:
            overall[name].append(replicate[name])
        for column in columns:
            by_group = {group: rows_of[column.name, group].metrics(w[:, mask]) for group, mask in column.masks.items()}
            for group, replicate_of_group in by_group.items():
                for name in names:
                    grouped[column.name, group, name].append(replicate_of_group[name])
            for name in names:
                compared = [by_group[group][name] for group in by_group if had[column.name, group, name]]
                if len(compared) >= 2:
                    stack = np.stack(compared)
                    usable = ~np.isnan(stack).any(axis=0)
                    with np.errstate(invalid="ignore"):
                        difference = stack.max(axis=0) - stack.min(axis=0)
                    gapped[column.name, name].append(np.where(usable, difference, np.nan))
    return {
        "n_boot": int(n_boot),
        "seed": int(seed),
        "level": float(level),
        "method": "percentile",
        "resampling": "rows" if task == "regression" else "rows within each class (stratified)",
        "overall": {name: {"estimate": point.values[name], **_interval(overall[name], level)} for name in names},
        "gaps": [
            {"column": gap["column"], "metric": gap["metric"], "difference": gap["difference"],
             **_interval(gapped[gap["column"], gap["metric"]], level)}
            for gap in point_gaps
        ],
        "groups": [
            {"column": row["column"], "group": row["group"], "metric": name, "estimate": row[name],
             **_interval(grouped[row["column"], row["group"], name], level)}
            for row in point_rows for name in names
        ],
    }


def mean_sd(values: Sequence) -> dict:
    """``{"mean", "sd", "n"}`` of the values that are not None (sd: the sample sd, ddof 1; None below two).

    How results over folds (or over the folds' models) are summarised.
    """
    present = [float(v) for v in values if v is not None]
    if not present:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(np.mean(present)), "sd": float(np.std(present, ddof=1)) if len(present) > 1 else None, "n": len(present)}
