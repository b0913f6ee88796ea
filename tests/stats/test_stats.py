"""The tiled distance correlation against the `dcor` package, and its invariances."""

from __future__ import annotations

import math

import dcor
import numpy as np
import pytest
import torch

from mdn_cli.stats import IndependenceTest, Tiles, dcor2, dcor_t_test, distance_correlation


def _ours(x, y, *, categorical=False, dtype=torch.float64, tile_size=64, **kwargs):
    (result,) = distance_correlation(x, [y], [categorical], tiles=Tiles(dtype=dtype, tile_size=tile_size), **kwargs)
    return result


def _datasets():
    rng = np.random.default_rng(7)
    n = 157  # not a multiple of the tile size: partial tiles on both axes
    x = rng.normal(size=(n, 12))
    yield "random", x, rng.normal(size=n), False
    yield "dependent", x, np.sin(x[:, 0]) + 0.3 * x[:, 1] ** 2 + 0.1 * rng.normal(size=n), False
    yield "categorical", x + rng.integers(0, 3, n)[:, None], rng.integers(0, 3, n), True
    # ties: duplicated feature rows and repeated metadata values
    tied = np.round(rng.normal(size=(n, 2)))
    yield "tied", tied, np.round(tied[:, 0] + rng.normal(size=n)), False
    yield "tied categorical", tied, np.where(tied[:, 1] > 0, "a", "b"), True
    yield "large offset", 1e3 + x, 1e6 + x[:, 2] + rng.normal(size=n), False


def _reference(x, y, categorical):
    if categorical:
        _, codes = np.unique(y, return_inverse=True)
        y = np.eye(codes.max() + 1)[codes]
    return dcor.u_distance_correlation_sqr(x, y), dcor.distance_correlation_sqr(x, y)


@pytest.mark.parametrize("case", list(_datasets()), ids=lambda case: case[0])
def test_matches_dcor_in_float64(case):
    _, x, y, categorical = case
    expected_u, expected_v = _reference(x, y, categorical)
    result = _ours(x, y, categorical=categorical)
    assert result.dcor2_u == pytest.approx(expected_u, rel=1e-8, abs=1e-12)
    assert result.dcor2_v == pytest.approx(expected_v, rel=1e-8, abs=1e-12)
    assert result.dcor_v == pytest.approx(math.sqrt(expected_v), rel=1e-8)
    assert result.n == len(y) and result.pvalue is None and result.test is None


@pytest.mark.parametrize("case", list(_datasets()), ids=lambda case: case[0])
def test_matches_dcor_in_float32(case):
    _, x, y, categorical = case
    expected_u, expected_v = _reference(x, y, categorical)
    result = _ours(x, y, categorical=categorical, dtype=torch.float32)
    assert result.dcor2_u == pytest.approx(expected_u, rel=1e-5, abs=1e-7)
    assert result.dcor2_v == pytest.approx(expected_v, rel=1e-5, abs=1e-7)


def test_matches_dcor_at_n_300_with_one_tile_and_many():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 32))
    y = x[:, :3].sum(axis=1) + rng.normal(size=300)
    expected = dcor.u_distance_correlation_sqr(x, y)
    for tile_size in (17, 128, 1024):
        assert _ours(x, y, tile_size=tile_size).dcor2_u == pytest.approx(expected, rel=1e-8)


def test_several_columns_match_one_at_a_time():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(120, 5))
    columns = [x[:, 0] + rng.normal(size=120), rng.integers(0, 4, 120), rng.normal(size=120)]
    together = distance_correlation(x, columns, [False, True, False], tiles=Tiles(dtype=torch.float64))
    for column, is_categorical, result in zip(columns, [False, True, False], together):
        assert result.dcor2_u == pytest.approx(_ours(x, column, categorical=is_categorical).dcor2_u, rel=1e-10)


def test_missing_values_leave_out_rows_for_that_column_only():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(100, 4))
    y = x[:, 0] + rng.normal(size=100)
    y[[3, 10, 50]] = np.nan
    site = np.array(["a", "b", None, "c"] * 25, dtype=object)
    with_gaps, categorical_gaps = distance_correlation(x, [y, site], [False, True], tiles=Tiles(dtype=torch.float64))
    keep = ~np.isnan(y)
    assert with_gaps.n == 97 and with_gaps.n_missing == 3
    assert with_gaps.dcor2_u == pytest.approx(dcor.u_distance_correlation_sqr(x[keep], y[keep]), rel=1e-8)
    present = np.array([s is not None for s in site])
    assert categorical_gaps.n == 75 and categorical_gaps.n_missing == 25
    expected = _reference(x[present], site[present].astype(str), True)[0]
    assert categorical_gaps.dcor2_u == pytest.approx(expected, rel=1e-8)


def test_subsets_equal_dcor_on_those_rows():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(150, 6))
    label = rng.integers(0, 3, 150)
    y = x[:, 0] * label + rng.normal(size=150)
    subsets = [None] + [label == value for value in range(3)]
    results = distance_correlation(x, [y] * 4, [False] * 4, subsets=subsets, tiles=Tiles(dtype=torch.float64, tile_size=32))
    assert results[0].dcor2_u == pytest.approx(dcor.u_distance_correlation_sqr(x, y), rel=1e-8)
    for value, result in zip(range(3), results[1:]):
        rows = label == value
        assert result.n == rows.sum()
        assert result.dcor2_u == pytest.approx(dcor.u_distance_correlation_sqr(x[rows], y[rows]), rel=1e-8)


def test_undefined_cases_are_notes_not_crashes():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 3))
    constant, tiny, constant_features = distance_correlation(
        np.vstack([x[:27], np.ones((3, 3))]),
        [np.ones(30), np.r_[np.arange(3.0), [np.nan] * 27], np.r_[[np.nan] * 27, np.arange(3.0)]],
        [False, False, False],
    )
    assert constant.dcor2_u is None and "constant" in constant.note
    assert tiny.dcor2_u is None and "4" in tiny.note and tiny.n == 3 and tiny.n_missing == 27
    assert constant_features.dcor2_u is None and constant_features.n == 3
    (features_constant,) = distance_correlation(np.ones((10, 3)), [np.arange(10.0)], [False])
    assert features_constant.dcor2_u is None and "features" in features_constant.note
    assert math.isnan(dcor2(x, np.ones(30)))


def test_non_finite_features_are_rejected():
    x = np.ones((10, 2))
    x[4, 1] = np.inf
    with pytest.raises(ValueError, match=r"NaN or Inf in 1 rows: 4\."):
        dcor2(x, np.arange(10.0))


def test_accepts_torch_tensors_of_any_rank():
    rng = np.random.default_rng(6)
    images = rng.normal(size=(50, 2, 3, 4))
    y = images[:, 0, 0, 0] + rng.normal(size=50)
    expected = dcor.u_distance_correlation_sqr(images.reshape(50, -1), y)
    assert dcor2(torch.from_numpy(images), torch.from_numpy(y)) == pytest.approx(expected, rel=1e-8)
    assert dcor2(torch.from_numpy(images).float(), y) == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Invariances
# ---------------------------------------------------------------------------------------------


def test_invariant_to_translation_rotation_and_scaling_of_features():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(80, 5))
    y = x[:, 0] ** 2 + rng.normal(size=80)
    rotation, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    base = dcor2(x, y)
    assert dcor2(x + 50.0, y) == pytest.approx(base, rel=1e-9)
    assert dcor2(x @ rotation, y) == pytest.approx(base, rel=1e-9)
    assert dcor2(3.7 * x, y) == pytest.approx(base, rel=1e-9)
    assert dcor2(x, 1e-3 * y - 4.0) == pytest.approx(base, rel=1e-9)


def test_symmetric_in_its_two_arguments():
    rng = np.random.default_rng(9)
    u = rng.normal(size=90)
    v = u**2 + rng.normal(size=90)
    assert dcor2(u[:, None], v) == pytest.approx(dcor2(v[:, None], u), rel=1e-10)


def test_independent_data_gives_about_zero_and_dependence_gives_more():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(2000, 16))
    assert abs(dcor2(x, rng.normal(size=2000))) < 0.005
    assert dcor2(x, x[:, 0]) > 0.05


# ---------------------------------------------------------------------------------------------
# Tests of independence
# ---------------------------------------------------------------------------------------------


def test_t_test_matches_dcor():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(60, 4))
    for y in (rng.normal(size=60), x[:, 0] + rng.normal(size=60)):
        expected = dcor.independence.distance_correlation_t_test(x, y)
        result = _ours(x, y, test=IndependenceTest("t"))
        assert result.test == "t" and result.permutations is None
        assert result.pvalue == pytest.approx(expected.pvalue, rel=1e-8, abs=1e-14)


def test_t_test_of_perfect_dependence_is_zero():
    assert dcor_t_test(1.0, 50) == 0.0


def test_permutation_p_value_equals_brute_force_with_the_same_shuffles():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(40, 3))
    y = 0.3 * x[:, 0] + rng.normal(size=40)
    result = _ours(x, y, test=IndependenceTest("permutation", permutations=60, seed=3))
    shuffles = np.random.default_rng(3)
    observed = dcor.u_distance_correlation_sqr(x, y)
    extreme = sum(
        dcor.u_distance_correlation_sqr(x, y[shuffles.permutation(40)]) >= observed - 1e-12
        for _ in range(60)
    )
    assert result.pvalue == pytest.approx((1 + extreme) / 61)
    assert result.test == "permutation" and result.permutations == 60


def test_permutation_test_is_seeded_and_sensible():
    rng = np.random.default_rng(13)
    x = rng.normal(size=(100, 3))
    dependent = x[:, 0] + 0.1 * rng.normal(size=100)
    independent = rng.normal(size=100)
    test = IndependenceTest("permutation", permutations=99, seed=1)
    results = distance_correlation(x, [dependent, independent], [False, False], test=test)
    again = distance_correlation(x, [dependent, independent], [False, False], test=test)
    assert [r.pvalue for r in results] == [r.pvalue for r in again]
    assert results[0].pvalue == pytest.approx(1 / 100)
    assert results[1].pvalue > 0.05


def test_permutation_statistics_equal_to_the_observed_one_count_as_extreme():
    x = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0])[:, None]
    site = np.array([0, 0, 0, 1, 1, 1])
    result = _ours(x, site, categorical=True, test=IndependenceTest("permutation", permutations=300, seed=4))
    shuffles = np.random.default_rng(4)
    same_partition = 0
    for _ in range(300):
        shuffled = site[shuffles.permutation(6)]
        same_partition += bool((shuffled == site).all() or (shuffled != site).all())
    assert same_partition > 0
    assert result.pvalue == pytest.approx((1 + same_partition) / 301)


def test_same_input_same_bits_with_several_worker_threads(rng):
    """Tiles are shared out to the worker threads in a fixed way, so the sums are added in one order."""
    x = rng.normal(size=(700, 16)).astype(np.float32)
    y = x[:, 0] + rng.normal(size=700)
    groups = rng.integers(0, 2, size=700).astype(bool)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two workers even on a one-core runner
    try:
        runs = [
            distance_correlation(x, [y, y], [False, False], subsets=[None, groups], tiles=Tiles(tile_size=32),
                                 test=IndependenceTest("permutation", permutations=20))
            for _ in range(4)
        ]
    finally:
        torch.set_num_threads(threads)
    first = [(r.dcor2_u, r.dcor2_v, r.pvalue) for r in runs[0]]
    assert all([(r.dcor2_u, r.dcor2_v, r.pvalue) for r in run] == first for run in runs[1:])
