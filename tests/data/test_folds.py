"""folds: a partition per repeat, stratified, groups whole, deterministic; errors that say what to do."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mdn_cli.data.folds import FoldError, assign_folds

pytestmark = pytest.mark.filterwarnings("error")  # sklearn's splitter warnings would mean a missed check


def assert_partition(folds: list[np.ndarray], n: int, k: int):
    for fold in folds:
        assert fold.shape == (n,) and fold.dtype.kind == "i"
        assert sorted(set(fold.tolist())) == list(range(k))  # no -1, no empty fold


def test_every_row_validates_once_and_classes_spread_evenly(rng):
    labels = np.array(["a"] * 53 + ["b"] * 31 + ["c"] * 11)
    rng.shuffle(labels)
    folds = assign_folds(labels, k=5, repeats=3, seed=0)
    assert len(folds) == 3
    assert_partition(folds, len(labels), 5)
    for fold in folds:
        for value in ("a", "b", "c"):
            expected = (labels == value).sum() / 5
            for j in range(5):
                count = ((fold == j) & (labels == value)).sum()
                assert expected - 1 < count < expected + 1


def test_groups_never_straddle_folds(rng):
    subjects = rng.integers(0, 30, 300)
    labels = rng.integers(0, 2, 300)
    folds = assign_folds(labels, k=4, groups=pd.Series(subjects).map("s{}".format), repeats=2, seed=5)
    assert_partition(folds, 300, 4)
    for fold in folds:
        assert all(len(set(fold[subjects == s])) == 1 for s in np.unique(subjects))
    assert not np.array_equal(folds[0], folds[1])


def test_deterministic_for_a_seed_and_repeats_differ(rng):
    labels = rng.integers(0, 3, 120)
    first = assign_folds(labels, k=3, repeats=3, seed=11)
    again = assign_folds(labels, k=3, repeats=3, seed=11)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    assert not np.array_equal(first[0], assign_folds(labels, k=3, seed=12)[0])
    assert np.array_equal(first[0], assign_folds(labels, k=3, seed=11)[0])  # repeat 0 does not depend on repeats


def test_regression_folds_span_the_label_range(rng):
    y = np.exp(rng.normal(size=400))  # skewed: the tail must not fall into one fold
    folds = assign_folds(y, k=5, regression=True, seed=0)
    assert_partition(folds, 400, 5)
    deciles = np.searchsorted(np.quantile(y, np.linspace(0, 1, 11)[1:-1]), y)
    for j in range(5):
        assert np.bincount(deciles[folds[0] == j], minlength=10).min() >= 7  # 8 of each decile per fold
        assert (folds[0] == j).sum() == 80


def test_regression_with_few_rows_and_groups(rng):
    y = rng.normal(size=7)
    assert_partition(assign_folds(y, k=3, regression=True), 7, 3)
    sites = np.repeat(np.arange(10), 6)
    folds = assign_folds(rng.normal(size=60), k=5, groups=sites, regression=True, seed=2)
    assert_partition(folds, 60, 5)
    assert all(len(set(folds[0][sites == s])) == 1 for s in range(10))


@pytest.mark.parametrize(
    ("labels", "kwargs", "message"),
    [
        ([0, 1] * 10, {"k": 1}, "k must be a whole number of at least 2 (got 1)"),
        ([0, 1] * 10, {"k": 2.5}, "k must be a whole number"),
        ([0, 1] * 10, {"k": 2, "repeats": 0}, "repeats must be a whole number of at least 1"),
        (["a"] * 10 + ["b"] * 3, {"k": 5}, "class 'b' has only 3 rows"),
        (["a"] * 10 + ["b"] * 3, {"k": 5}, "use k <= 3"),
        ([0, 1, None] * 4, {"k": 2}, "missing in 4 of 12 rows"),
        ([0.5, 1.5, 2.5], {"k": 5, "regression": True}, "5 folds but only 3 rows"),
        ([0.5, np.inf, 2.5, 3.0], {"k": 2, "regression": True}, "1 of 4 rows are not"),
        ([0, 1] * 6, {"k": 2, "groups": [1, 2, None] * 4}, "groups is missing in 4 of 12 rows"),
        ([0, 1] * 6, {"k": 4, "groups": [1, 2, 3] * 4}, "4 folds but only 3 groups"),
        ([0, 1] * 6, {"k": 2, "groups": [1, 2, 3]}, "groups has 3 values for 12 rows"),
    ],
)
def test_errors_say_what_is_wrong(labels, kwargs, message):
    with pytest.raises(FoldError) as error:
        assign_folds(labels, **kwargs)
    assert message in str(error.value)
    assert isinstance(error.value, ValueError)
