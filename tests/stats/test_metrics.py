"""metrics: hand-counted small cases, scikit-learn and numpy references, groups, gaps, bootstrap."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from mdn_cli.stats._weighted_metrics import ROWS_BY_TASK
from mdn_cli.stats.metrics import (
    LOWER_IS_BETTER,
    METRICS_BY_TASK,
    MetricsInputError,
    _resampled_counts,
    bootstrap_intervals,
    gaps,
    group_table,
    overall_metrics,
    quantile_groups,
)

# Any warning (sklearn's UndefinedMetricWarning, numpy's divide by zero) fails the test.
pytestmark = pytest.mark.filterwarnings("error")


def binary_data(rng, n, ties=False):
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-rng.normal(2 * y - 1, 1.2)))
    return y, (np.round(p, 1) if ties else p)


def sklearn_binary(y, p):
    predicted = (p > 0.5).astype(int)
    return {
        "accuracy": skm.accuracy_score(y, predicted),
        "balanced_accuracy": skm.balanced_accuracy_score(y, predicted),
        "roc_auc": skm.roc_auc_score(y, p),
        "average_precision": skm.average_precision_score(y, p),
        "f1": skm.f1_score(y, predicted),
        "log_loss": skm.log_loss(y, p, labels=[0, 1]),
        "brier": skm.brier_score_loss(y, p, labels=[0, 1]),
    }


def multiclass_data(rng, n, k=3):
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p


def sklearn_multiclass(y, p):
    k = p.shape[1]
    predicted = p.argmax(axis=1)
    return {
        "accuracy": skm.accuracy_score(y, predicted),
        "balanced_accuracy": skm.balanced_accuracy_score(y, predicted),
        "macro_f1": skm.f1_score(y, predicted, average="macro"),
        "log_loss": skm.log_loss(y, p, labels=list(range(k))),
        "confusion_matrix": skm.confusion_matrix(y, predicted, labels=list(range(k))).tolist(),
    }


def regression_reference(y, s):
    return {
        "mae": np.mean(np.abs(s - y)),
        "rmse": np.sqrt(np.mean((s - y) ** 2)),
        "r2": 1 - np.sum((y - s) ** 2) / np.sum((y - y.mean()) ** 2),
        "pearson_r": np.corrcoef(y, s)[0, 1],
    }


def assert_values(got: dict, expected: dict):
    assert list(got) == list(expected)
    for name, value in expected.items():
        if isinstance(value, list):
            assert got[name] == value, name
        else:
            assert got[name] == pytest.approx(value, rel=1e-10, abs=1e-12), name


# ----------------------------------------------------------------------------------------------
# Overall metrics
# ----------------------------------------------------------------------------------------------


def test_binary_six_rows_by_hand():
    y = np.array([0, 0, 1, 1, 1, 0])
    p = np.array([0.1, 0.6, 0.8, 0.3, 0.7, 0.3])  # a positive and a negative tie at 0.3
    predicted = [0, 1, 1, 0, 1, 0]  # p > 0.5
    positives, negatives = p[y == 1], p[y == 0]
    concordant = sum((a > b) + 0.5 * (a == b) for a in positives for b in negatives)
    # From the top: 0.8 (+) P=1, 0.7 (+) P=1, 0.6 (-), 0.3 (+ and -) P=3/5, 0.1 (-): recall steps of 1/3.
    average_precision = (1 + 1 + 3 / 5) / 3
    expected = {
        "accuracy": 4 / 6,
        "balanced_accuracy": (2 / 3 + 2 / 3) / 2,  # recall 2/3 in each class
        "roc_auc": concordant / 9,
        "average_precision": average_precision,
        "f1": 2 * 2 / (2 * 2 + 1 + 1),  # tp 2, fp 1, fn 1
        "log_loss": -np.mean([math.log(1 - 0.1), math.log(1 - 0.6), math.log(0.8), math.log(0.3),
                              math.log(0.7), math.log(1 - 0.3)]),
        "brier": np.mean((p - y) ** 2),
    }
    assert sum(a == b for a, b in zip(predicted, y)) == 4 and concordant == 7.5
    result = overall_metrics("binary", y, p)
    assert_values(result.values, expected)
    assert result.undefined == {}
    assert_values(result.values, sklearn_binary(y, p))


@pytest.mark.parametrize("ties", [False, True])
def test_binary_matches_sklearn_on_random_data(rng, ties):
    for n in (7, 50, 400):
        y, p = binary_data(rng, n, ties)
        assert_values(overall_metrics("binary", y, p).values, sklearn_binary(y, p))


def test_threshold_is_strict_like_training_logit_above_zero():
    result = overall_metrics("binary", [0, 1], [0.5, 0.5])
    assert result.values["accuracy"] == 0.5  # 0.5 predicts class 0


def test_multiclass_matches_sklearn_and_counted_confusion_matrix(rng):
    y, p = multiclass_data(rng, 300, k=4)
    result = overall_metrics("multiclass", y, p)
    assert_values(result.values, sklearn_multiclass(y, p))
    counted = [[0] * 4 for _ in range(4)]
    for true, predicted in zip(y, p.argmax(axis=1)):
        counted[true][predicted] += 1
    assert result.values["confusion_matrix"] == counted


def test_multiclass_with_a_class_never_seen_nor_predicted(rng):
    y, p = multiclass_data(rng, 60, k=3)
    p = np.c_[p * 0.999, np.full(60, 0.001)]  # class 3: neither true nor predicted
    result = overall_metrics("multiclass", y, p)
    assert_values(result.values, sklearn_multiclass(y, p))  # macro F1 over classes seen or predicted
    assert result.values["confusion_matrix"][3] == [0, 0, 0, 0]


def test_regression_matches_numpy_formulas(rng):
    y = rng.normal(100, 5, 200)  # a large mean: the variance must not cancel
    s = y + rng.normal(0, 2, 200)
    result = overall_metrics("regression", y, s)
    assert_values(result.values, regression_reference(y, s))
    assert result.values["r2"] == pytest.approx(skm.r2_score(y, s), rel=1e-10)


def test_one_class_present_leaves_ranking_undefined_and_the_rest_defined():
    y, p = np.zeros(4, dtype=int), np.array([0.2, 0.7, 0.1, 0.4])
    result = overall_metrics("binary", y, p)
    assert result.values["roc_auc"] is None and result.values["average_precision"] is None
    assert set(result.undefined) == {"roc_auc", "average_precision"}
    assert "one class" in result.undefined["roc_auc"]
    assert result.values["balanced_accuracy"] == 0.75  # recall of the one class present
    assert result.values["f1"] == 0.0  # a false positive and no true positive: 0, not undefined
    assert result.values["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=[0, 1]))
    assert result.values["brier"] == pytest.approx(skm.brier_score_loss(y, p, labels=[0, 1]))


def test_f1_without_positives_or_positive_predictions_is_undefined():
    result = overall_metrics("binary", [0, 0, 0], [0.1, 0.2, 0.3])
    assert result.values["f1"] is None and "0/0" in result.undefined["f1"]
    assert result.values["accuracy"] == 1.0


def test_regression_constant_inputs_are_undefined():
    constant_score = overall_metrics("regression", [1.0, 2.0, 3.0], [2.0, 2.0, 2.0])
    assert constant_score.values["pearson_r"] is None and constant_score.values["r2"] == pytest.approx(0.0)
    assert "score is constant" in constant_score.undefined["pearson_r"]
    constant_truth = overall_metrics("regression", [2.0, 2.0], [1.0, 3.0])
    assert constant_truth.values["r2"] is None and constant_truth.values["pearson_r"] is None
    assert "y_true is constant" in constant_truth.undefined["pearson_r"]
    assert constant_truth.values["mae"] == 1.0


def test_class_labels_map_through_classes(rng):
    y, p = multiclass_data(rng, 40, k=3)
    names = np.array(["cat", "dog", "emu"])
    assert overall_metrics("multiclass", names[y], p, classes=names).values == overall_metrics("multiclass", y, p).values
    assert overall_metrics("binary", ["no", "yes"], [0.2, 0.9], classes=["no", "yes"]).values["accuracy"] == 1.0
    assert overall_metrics("binary", [0.0, 1.0, True], [0.2, 0.9, 0.8]).values["accuracy"] == 1.0


@pytest.mark.parametrize(
    ("task", "y_true", "score", "classes", "message"),
    [
        ("binry", [0, 1], [0.1, 0.9], None, "unknown task 'binry'"),
        ("binary", [], [], None, "no rows"),
        ("binary", [0, 1], [-2.0, 3.1], None, "sigmoid"),
        ("binary", [0, 1, 1], [0.1, 0.9], None, "shape (2,)"),
        ("binary", [0, 1], [0.1, np.nan], None, "NaN or infinite in 1 row:"),
        ("binary", [0, 2], [0.1, 0.9], None, "class codes 0..1, got 2"),
        ("binary", [0, None], [0.1, 0.9], None, "missing in 1 row;"),
        ("binary", ["a", "b"], [0.1, 0.9], None, "pass classes"),
        ("binary", ["a", "c"], [0.1, 0.9], ["a", "b"], "not among classes: c"),
        ("binary", ["a", "b"], [0.1, 0.9], ["a", "b", "c"], "the 2 columns"),
        ("multiclass", [0, 1], [[2.0, -1.0], [0.5, 0.1]], None, "softmax"),
        ("multiclass", [0, 1], [0.2, 0.8], None, "(n, K) class probabilities"),
        ("regression", [1.0, "x"], [1.0, 2.0], None, "not a number in 1 row."),
        ("regression", [1.0, 2.0], [1.0, 2.0], ["a", "b"], "regression has none"),
        ("binary", [[0, 1]], [0.1, 0.9], None, "one value per row"),
    ],
)
def test_input_errors(task, y_true, score, classes, message):
    with pytest.raises(MetricsInputError) as error:
        overall_metrics(task, y_true, score, classes)
    assert message in str(error.value)
    assert isinstance(error.value, ValueError)


def test_exported_names():
    assert set(LOWER_IS_BETTER) == {"log_loss", "brier", "mae", "rmse"}
    assert all(name in sum(METRICS_BY_TASK.values(), ()) for name in LOWER_IS_BETTER)


# ----------------------------------------------------------------------------------------------
# Groups and gaps
# ----------------------------------------------------------------------------------------------


def test_quantile_bins_and_labels():
    groups = quantile_groups(pd.Series(np.arange(1.0, 9.0), name="age"), bins=4)  # quartiles 2.75, 4.5, 6.25
    assert list(groups.cat.categories) == ["[1.00, 2.75)", "[2.75, 4.50)", "[4.50, 6.25)", "[6.25, 8.00]"]
    assert groups.value_counts(sort=False).tolist() == [2, 2, 2, 2]
    assert groups.name == "age"


def test_tied_quantiles_merge_bins():
    values = pd.Series([0.0] * 10 + [1.0, 2.0, 3.0, 4.0, 5.0])  # quantiles 0, 0, 0, 1.5, 5
    groups = quantile_groups(values, bins=4)
    assert list(groups.cat.categories) == ["[0.00, 1.50)", "[1.50, 5.00]"]
    assert groups.value_counts(sort=False).tolist() == [11, 4]


def test_close_edges_get_more_decimals():
    groups = quantile_groups(pd.Series([0.001, 0.002, 0.003, 0.004, 0.005]), bins=2)
    assert list(groups.cat.categories) == ["[0.001, 0.003)", "[0.003, 0.005]"]


def test_levels_as_text_and_missing_values_kept_missing():
    few = quantile_groups(pd.Series([1.0, 2.0, np.nan, 2.0, 3.0]))  # 3 distinct values <= 4 bins: by value
    assert list(few.cat.categories) == ["1", "2", "3"] and few.isna().tolist() == [False, False, True, False, False]
    forced = quantile_groups(pd.Series(np.arange(10)), categorical=True)
    assert list(forced.cat.categories) == [str(i) for i in range(10)]
    assert list(quantile_groups(pd.Series(["b", "a", None, "b"])).cat.categories) == ["a", "b"]
    assert list(quantile_groups(pd.Series([True, False, True])).cat.categories) == ["False", "True"]
    nullable = quantile_groups(pd.Series([3, 1, None], dtype="Int64"))
    assert list(nullable.cat.categories) == ["1", "3"] and nullable.isna().tolist() == [False, False, True]
    ordered = pd.Series(pd.Categorical(["lo", "hi", "mid"], categories=["lo", "mid", "hi"]))
    assert list(quantile_groups(ordered).cat.categories) == ["lo", "mid", "hi"]
    with pytest.raises(MetricsInputError, match="infinite"):
        quantile_groups(pd.Series([1.0, np.inf, 2.0, 3.0, 4.0, 5.0]))


def test_group_table_matches_sklearn_on_masks_and_gaps_follow(rng):
    n = 600
    y, p = binary_data(rng, n)
    site = pd.Series(rng.choice(["A", "B", "C"], n)).where(rng.random(n) > 0.1)  # 10% missing
    age = pd.Series(rng.normal(40, 10, n))
    rows = group_table("binary", y, p, {"site": site, "age": quantile_groups(age, bins=3)})
    assert [(row["column"], row["group"]) for row in rows][:3] == [("site", "A"), ("site", "B"), ("site", "C")]
    assert [row["column"] for row in rows].count("age") == 3
    for row in rows:
        labels = site if row["column"] == "site" else quantile_groups(age, bins=3)
        mask = (labels == row["group"]).to_numpy()
        assert row["n"] == mask.sum() and row["n_missing"] == (site.isna().sum() if row["column"] == "site" else 0)
        assert_values({name: row[name] for name in METRICS_BY_TASK["binary"]}, sklearn_binary(y[mask], p[mask]))

    by_gap = {(gap["column"], gap["metric"]): gap for gap in gaps(rows)}
    assert len(by_gap) == 2 * len(METRICS_BY_TASK["binary"])
    for (column, metric), gap in by_gap.items():
        values = {row["group"]: row[metric] for row in rows if row["column"] == column}
        assert gap["difference"] == pytest.approx(max(values.values()) - min(values.values()))
        worst = (max if metric in LOWER_IS_BETTER else min)(values.values())
        assert values[gap["worst_group"]] == worst


def test_gaps_skip_undefined_groups_and_the_confusion_matrix(rng):
    y = np.array([0, 0, 1, 1, 1, 1, 0, 1])
    p = np.array([0.2, 0.6, 0.7, 0.4, 0.9, 0.8, 0.1, 0.3])
    site = pd.Series(["a", "a", "a", "a", "b", "b", "c", "c"])  # b has only positives: no AUC
    rows = group_table("binary", y, p, {"site": site})
    assert rows[1]["roc_auc"] is None and "roc_auc" in rows[1]["undefined"]
    auc = next(gap for gap in gaps(rows) if gap["metric"] == "roc_auc")
    assert auc["difference"] == pytest.approx(abs(rows[0]["roc_auc"] - rows[2]["roc_auc"]))
    y3, p3 = multiclass_data(rng, 40)
    rows3 = group_table("multiclass", y3, p3, {"half": pd.Series(np.arange(40) % 2)})
    assert {gap["metric"] for gap in gaps(rows3)} == {"accuracy", "balanced_accuracy", "macro_f1", "log_loss"}
    assert rows3[0]["confusion_matrix"] == sklearn_multiclass(y3[::2], p3[::2])["confusion_matrix"]


def test_gap_needs_two_defined_groups():
    rows = group_table("regression", [1.0, 2.0, 3.0, 4.0], [1.0, 1.0, 2.0, 3.0], {"g": pd.Series([0, 0, 1, 1])})
    pearson = next(gap for gap in gaps(rows) if gap["metric"] == "pearson_r")
    assert pearson == {"column": "g", "metric": "pearson_r", "difference": None, "worst_group": None}


def test_a_column_with_one_group_is_an_error():
    with pytest.raises(MetricsInputError, match=r"'site' has 1 group \(A\) among its 2 rows with a value"):
        group_table("binary", [0, 1, 1], [0.1, 0.9, 0.8], {"site": pd.Series(["A", None, "A"])})
    with pytest.raises(MetricsInputError, match="3 values for 2 rows"):
        group_table("binary", [0, 1], [0.1, 0.9], {"site": pd.Series(["A", "B", "C"])})


# ----------------------------------------------------------------------------------------------
# Bootstrap
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_weighted_replicates_equal_sklearn_on_the_resampled_rows(rng, task):
    n = 80
    if task == "binary":
        y, s = binary_data(rng, n, ties=True)
    elif task == "multiclass":
        y, s = multiclass_data(rng, n)
    else:
        y = rng.normal(size=n)
        s = y + rng.normal(size=n)
    counts = _resampled_counts(None if task == "regression" else y, n, 5, rng)
    replicates = ROWS_BY_TASK[task](y, s).metrics(counts.astype(float))
    reference = {"binary": sklearn_binary, "multiclass": sklearn_multiclass, "regression": regression_reference}[task]
    for b in range(5):
        rows = np.repeat(np.arange(n), counts[b])
        expected = reference(y[rows], s[rows])
        expected.pop("confusion_matrix", None)  # the point estimate's alone
        assert_values({name: replicates[name][b] for name in expected}, expected)


def sklearn_weighted(task: str, y: np.ndarray, s: np.ndarray, w: np.ndarray) -> dict:
    """One replicate through scikit-learn with ``sample_weight``, its undrawn rows dropped; NaN where undefined."""
    drawn = w > 0
    y, s, w = y[drawn], s[drawn], w[drawn]
    if not len(y):
        return {}
    if task == "regression":
        varied = y.min() != y.max() and s.min() != s.max()
        covariance = np.cov(y, s, aweights=w) if varied else None
        return {
            "mae": skm.mean_absolute_error(y, s, sample_weight=w),
            "rmse": np.sqrt(skm.mean_squared_error(y, s, sample_weight=w)),
            "r2": skm.r2_score(y, s, sample_weight=w) if y.min() != y.max() else np.nan,
            "pearson_r": covariance[0, 1] / np.sqrt(covariance[0, 0] * covariance[1, 1]) if varied else np.nan,
        }
    predicted = (s > 0.5).astype(int) if task == "binary" else s.argmax(axis=1)
    labels = [0, 1] if task == "binary" else list(range(s.shape[1]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # balanced accuracy over a class missing from y_true: documented, handled
        values = {
            "accuracy": skm.accuracy_score(y, predicted, sample_weight=w),
            "balanced_accuracy": skm.balanced_accuracy_score(y, predicted, sample_weight=w),
        }
    if task == "multiclass":
        values["macro_f1"] = skm.f1_score(y, predicted, sample_weight=w, average="macro")
        values["log_loss"] = skm.log_loss(y, s, sample_weight=w, labels=labels)
        return values
    both = y.min() != y.max()
    values["roc_auc"] = skm.roc_auc_score(y, s, sample_weight=w) if both else np.nan
    values["average_precision"] = skm.average_precision_score(y, s, sample_weight=w) if both else np.nan
    values["f1"] = skm.f1_score(y, predicted, sample_weight=w) if (y.any() or predicted.any()) else np.nan
    values["log_loss"] = skm.log_loss(y, s, sample_weight=w, labels=labels)
    values["brier"] = skm.brier_score_loss(y, s, sample_weight=w)
    return values


def percentile_interval(values: list) -> dict:
    values = np.array([value for value in values if not np.isnan(value)])
    if not values.size:
        return {"low": None, "high": None, "n_used": 0}
    low, high = np.quantile(values, [0.025, 0.975])
    return {"low": low, "high": high, "n_used": values.size}


def study(rng, task: str, n: int):
    """Rows with ties (binary), a class never predicted (multiclass), and a 3-row group often drawn once or not at all."""
    if task == "binary":
        y, s = binary_data(rng, n, ties=True)
    elif task == "multiclass":
        y, s = multiclass_data(rng, n, k=3)
        s = np.c_[s * 0.99, np.full(n, 0.01)]
    else:
        y = rng.normal(size=n)
        s = y + rng.normal(size=n)
    site = pd.Series(rng.choice(["a", "b"], n))
    site[:3] = "tiny"
    return y, s, {"site": site, "half": pd.Series(np.arange(n) % 2)}


@pytest.mark.parametrize("task", ["binary", "multiclass", "regression"])
def test_intervals_equal_sklearn_with_sample_weight_on_the_same_resamples(rng, task):
    n, n_boot, seed = 90, 200, 5
    y, s, groups = study(rng, task, n)
    result = bootstrap_intervals(task, y, s, groups, n_boot=n_boot, seed=seed)
    counts = _resampled_counts(None if task == "regression" else y, n, n_boot, np.random.default_rng(seed))  # one chunk
    names = [name for name in METRICS_BY_TASK[task] if name != "confusion_matrix"]
    replicates = [sklearn_weighted(task, y, s, w.astype(float)) for w in counts]
    expected_overall = {name: percentile_interval([r[name] for r in replicates]) for name in names}
    expected_groups, expected_gaps = {}, {}
    for column, labels in groups.items():
        masks = {str(group): (labels == group).to_numpy() for group in labels.unique()}
        by_group = {group: [sklearn_weighted(task, y[mask], s[mask], w[mask].astype(float)) for w in counts]
                    for group, mask in masks.items()}  # fmt: skip
        for group, values in by_group.items():
            for name in names:
                expected_groups[column, group, name] = percentile_interval([v.get(name, np.nan) for v in values])
        for name in names:
            had = [group for group, mask in masks.items() if not np.isnan(sklearn_weighted(task, y[mask], s[mask], np.ones(mask.sum()))[name])]
            differences = []
            for b in range(n_boot):
                compared = [by_group[group][b].get(name, np.nan) for group in had]
                differences.append(np.nan if np.isnan(compared).any() else max(compared) - min(compared))
            expected_gaps[column, name] = percentile_interval(differences) if len(had) >= 2 else None

    def same(got: dict, expected: dict):
        assert got["n_used"] == expected["n_used"]
        if expected["n_used"]:
            assert [got["low"], got["high"]] == pytest.approx([expected["low"], expected["high"]], rel=1e-12, abs=1e-12)

    for name in names:
        same(result["overall"][name], expected_overall[name])
    for interval in result["groups"]:
        same(interval, expected_groups[interval["column"], interval["group"], interval["metric"]])
    for gap in result["gaps"]:
        same(gap, expected_gaps[gap["column"], gap["metric"]])
    assert len(result["gaps"]) == sum(value is not None for value in expected_gaps.values())
    tiny = [interval["n_used"] for interval in result["groups"] if interval["group"] == "tiny"]
    assert min(tiny) < n_boot  # the tiny group's undefined replicates were met, and skipped


def test_stratified_resampling_keeps_class_counts(rng):
    y = np.array([0] * 7 + [1] * 3 + [2] * 5)
    counts = _resampled_counts(y, len(y), 200, rng)
    for value in (0, 1, 2):
        assert (counts[:, y == value].sum(axis=1) == (y == value).sum()).all()
    plain = _resampled_counts(None, len(y), 200, rng)
    assert (plain.sum(axis=1) == len(y)).all() and len(set(plain[:, y == 1].sum(axis=1))) > 1


def test_accuracy_that_equals_the_prevalence_does_not_vary(rng):
    y = rng.integers(0, 2, 300)
    result = bootstrap_intervals("binary", y, np.full(300, 0.9), n_boot=50, seed=0)  # predicts 1 everywhere
    accuracy = result["overall"]["accuracy"]
    assert accuracy["low"] == pytest.approx(y.mean()) and accuracy["high"] == pytest.approx(y.mean())
    assert result["resampling"] == "rows within each class (stratified)"


@pytest.mark.slow
def test_intervals_contain_the_estimate_and_shrink_with_n(rng):
    widths = []
    for n in (200, 3200):
        y, p = binary_data(rng, n)
        site = pd.Series(rng.choice(["a", "b"], n))
        result = bootstrap_intervals("binary", y, p, {"site": site}, n_boot=200, seed=1)
        for name, interval in result["overall"].items():
            assert interval["low"] <= interval["estimate"] <= interval["high"], name
            assert interval["n_used"] == 200
        assert [(gap["column"], gap["metric"]) for gap in result["gaps"]] == [
            ("site", name) for name in METRICS_BY_TASK["binary"]
        ]
        widths.append(result["overall"]["log_loss"]["high"] - result["overall"]["log_loss"]["low"])
    assert widths[1] < widths[0] / 2  # about 1/sqrt(16) = 1/4


def test_bootstrap_is_deterministic_for_a_seed(rng):
    y = rng.normal(size=150)
    s = y + rng.normal(size=150)
    groups = {"g": quantile_groups(pd.Series(rng.normal(size=150)), bins=3)}
    first = bootstrap_intervals("regression", y, s, groups, n_boot=40, seed=7)
    assert first == bootstrap_intervals("regression", y, s, groups, n_boot=40, seed=7)
    assert first != bootstrap_intervals("regression", y, s, groups, n_boot=40, seed=8)
    assert first["resampling"] == "rows" and first["n_boot"] == 40


def test_replicates_where_a_metric_is_undefined_are_skipped(rng):
    y = np.r_[rng.normal(size=40), [0.0, 1.0]]
    s = y + rng.normal(size=42)
    tiny = pd.Series(["big"] * 40 + ["tiny"] * 2)  # 2 rows: often drawn as one, so no correlation
    result = bootstrap_intervals("regression", y, s, {"size": tiny}, n_boot=300, seed=0)
    pearson = next(gap for gap in result["gaps"] if gap["metric"] == "pearson_r")
    assert 0 < pearson["n_used"] < 300
    mae = next(gap for gap in result["gaps"] if gap["metric"] == "mae")
    assert 0 < mae["n_used"] < 300  # the tiny group goes undrawn in about 1 replicate in 8


def test_bootstrap_in_chunks_uses_every_replicate(rng, monkeypatch):
    from mdn_cli.stats import metrics

    y, p = binary_data(rng, 100)
    monkeypatch.setattr(metrics, "_WEIGHTS_PER_CHUNK", 700)  # 7 replicates per chunk, the last one 2
    result = bootstrap_intervals("binary", y, p, {"half": pd.Series(np.arange(100) % 2)}, n_boot=30, seed=3)
    assert {interval["n_used"] for interval in result["overall"].values()} == {30}
    assert {gap["n_used"] for gap in result["gaps"]} == {30}


def test_bootstrap_argument_errors():
    with pytest.raises(MetricsInputError, match="n_boot must be a whole number of at least 1"):
        bootstrap_intervals("binary", [0, 1], [0.1, 0.9], n_boot=0, seed=0)
    with pytest.raises(MetricsInputError, match="level must be between 0 and 1"):
        bootstrap_intervals("binary", [0, 1], [0.1, 0.9], n_boot=10, seed=0, level=95)


def test_multiclass_intervals_leave_out_the_confusion_matrix(rng):
    y, p = multiclass_data(rng, 90)
    result = bootstrap_intervals("multiclass", y, p, {"half": pd.Series(np.arange(90) % 2)}, n_boot=20, seed=0)
    assert list(result["overall"]) == ["accuracy", "balanced_accuracy", "macro_f1", "log_loss"]
    assert [gap["metric"] for gap in result["gaps"]] == list(result["overall"])


def test_a_metric_undefined_on_every_replicate_has_no_interval():
    result = bootstrap_intervals("binary", [0, 0, 0, 0], [0.1, 0.6, 0.2, 0.3], n_boot=10, seed=0)
    assert result["overall"]["roc_auc"] == {"estimate": None, "low": None, "high": None, "n_used": 0}
    assert result["overall"]["accuracy"]["n_used"] == 10


def test_group_intervals_are_percentiles_of_sklearn_on_the_resampled_group_rows(rng):
    n, n_boot = 120, 25
    y, p = binary_data(rng, n)
    site = pd.Series(rng.choice(["a", "b"], n))
    result = bootstrap_intervals("binary", y, p, {"site": site}, n_boot=n_boot, seed=4)
    counts = _resampled_counts(y, n, n_boot, np.random.default_rng(4))  # the same draws: one chunk
    for group in ("a", "b"):
        rows = np.flatnonzero(site == group)
        drawn = [np.repeat(rows, counts[b, rows]) for b in range(n_boot)]
        accuracy = [skm.accuracy_score(y[r], p[r] > 0.5) for r in drawn]
        brier = [skm.brier_score_loss(y[r], p[r], labels=[0, 1]) for r in drawn]
        for metric, values in (("accuracy", accuracy), ("brier", brier)):
            interval = next(g for g in result["groups"] if (g["column"], g["group"], g["metric"]) == ("site", group, metric))
            assert [interval["low"], interval["high"]] == pytest.approx(np.quantile(values, [0.025, 0.975]))
            assert interval["n_used"] == n_boot and interval["estimate"] is not None


def test_float32_softmax_rows_are_accepted_and_renormalised(rng):
    y, p = multiclass_data(rng, 50)
    p32 = p.astype(np.float32).astype(np.float64) * (1 + 3e-7)  # rows summing to 1 only to float32 precision
    exact = p32 / p32.sum(axis=1, keepdims=True)
    assert overall_metrics("multiclass", y, p32).values["log_loss"] == pytest.approx(skm.log_loss(y, exact, labels=[0, 1, 2]))
