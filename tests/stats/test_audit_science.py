"""Partial dcor, its permutation test, jackknife intervals, restricted shuffles and the torch engine.

References: the `dcor` package, brute-force n x n U-centred matrices written here, and
leave-one-out recomputation.
"""

from __future__ import annotations

import inspect

import dcor
import numpy as np
import pytest
import scipy.stats
import torch

from mdn_cli.stats import _jobs, _kernel, _tiled
from mdn_cli.stats._pass_arrays import INPUTS, OUTPUTS, PassArrays
from mdn_cli.stats import dcor as stats
from mdn_cli.stats import Engine, IndependenceTest, Interval, Tiles, distance_correlation
from mdn_cli.stats.columns import group_row_sums, row_products, weighted_row_sums, within_products


def _distances(values, categorical=False):
    values = np.asarray(values)
    if categorical:
        return (values[:, None] != values[None, :]).astype(float)
    if values.ndim == 1:
        return np.abs(values[:, None] - values[None, :])
    return np.sqrt(((values[:, None, :] - values[None, :, :]) ** 2).sum(-1))


def _one_hot(values):
    _, codes = np.unique(values, return_inverse=True)
    return np.eye(codes.max() + 1)[codes]


def _u_centred(d):
    n = d.shape[0]
    u = d - d.sum(0)[None, :] / (n - 2) - d.sum(1)[:, None] / (n - 2) + d.sum() / ((n - 1) * (n - 2))
    np.fill_diagonal(u, 0.0)
    return u


def _u_product(u, v):
    n = u.shape[0]
    return float((u * v).sum() / (n * (n - 3)))


def _partial(x, y, z, *, y_categorical=False, z_categorical=False, **kwargs):
    (result,) = distance_correlation(x, [y], [y_categorical], given=[z], given_categorical=[z_categorical],
                                     tiles=Tiles(dtype=torch.float64, tile_size=32), **kwargs)  # fmt: skip
    return result


def _reference_partial(x, y, z, y_categorical=False, z_categorical=False):
    return dcor.partial_distance_correlation(x, _one_hot(y) if y_categorical else y, _one_hot(z) if z_categorical else z)


# ---------------------------------------------------------------------------------------------
# Exact column sums
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kinds", [(False, False), (True, False), (False, True), (True, True)], ids=str)
def test_column_sums_equal_brute_force(rng, kinds):
    u_cat, v_cat = kinds
    n = 97
    u = rng.integers(0, 4, n).astype(float) if u_cat else np.round(rng.normal(size=n), 1)  # ties too
    v = rng.integers(0, 3, n).astype(float) if v_cat else rng.normal(size=n)
    du, dv = _distances(u, u_cat), _distances(v, v_cat)
    weights = rng.normal(size=n)
    groups = rng.integers(0, 5, n)
    np.testing.assert_allclose(row_products(u, u_cat, v, v_cat), (du * dv).sum(1), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(weighted_row_sums(u, u_cat, weights), du @ weights, rtol=1e-12, atol=1e-10)
    one_hot = np.eye(5)[groups]
    np.testing.assert_allclose(group_row_sums(u, u_cat, groups), du @ one_hot, rtol=1e-12, atol=1e-10)
    same = groups[:, None] == groups[None, :]
    np.testing.assert_allclose(within_products(u, u_cat, v, v_cat, groups), (du * dv * same).sum(1), rtol=1e-12, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# Partial distance correlation
# ---------------------------------------------------------------------------------------------


def _partial_cases():
    rng = np.random.default_rng(21)
    n = 83
    z = rng.normal(size=n)
    x = np.c_[z + 0.5 * rng.normal(size=n), rng.normal(size=(n, 3))]
    yield "random", rng.normal(size=(n, 4)), rng.normal(size=n), rng.normal(size=n), False, False
    yield "dependent", x, np.sin(x[:, 0]) + z + 0.3 * rng.normal(size=n), z, False, False
    site = rng.integers(0, 3, n)
    yield "categorical given", x + site[:, None], x[:, 1] + rng.normal(size=n), site, False, True
    yield "categorical column", x + site[:, None], site, z, True, False
    yield "both categorical", x + site[:, None], site, rng.integers(0, 2, n), True, True


@pytest.mark.parametrize("case", list(_partial_cases()), ids=lambda case: case[0])
def test_partial_dcor_matches_dcor(case):
    _, x, y, z, y_cat, z_cat = case
    result = _partial(x, y, z, y_categorical=y_cat, z_categorical=z_cat)
    expected = _reference_partial(x, y, z, y_cat, z_cat)
    assert result.dcor2_u == pytest.approx(expected, rel=1e-8, abs=1e-12)
    assert result.dcor2_v is None and result.n == len(y)


def test_partial_dcor_in_strata_and_with_gaps_uses_the_rows_where_both_have_values(rng):
    n = 120
    x = rng.normal(size=(n, 3))
    z = x[:, 0] + rng.normal(size=n)
    y = x[:, 1] + z + rng.normal(size=n)
    y[[2, 5]] = np.nan
    z[[5, 9, 11]] = np.nan
    label = rng.integers(0, 2, n)
    subsets = [None, label == 1]
    results = distance_correlation(x, [y, y], [False, False], given=[z, z], given_categorical=[False, False],
                                   subsets=subsets, tiles=Tiles(dtype=torch.float64, tile_size=32))  # fmt: skip
    for subset, result in zip(subsets, results):
        rows = ~np.isnan(y) & ~np.isnan(z) & (True if subset is None else subset)
        assert result.n == rows.sum()
        assert result.n_missing == (n if subset is None else subset.sum()) - rows.sum()
        assert result.dcor2_u == pytest.approx(dcor.partial_distance_correlation(x[rows], y[rows], z[rows]), rel=1e-8)


def test_partial_dcor_is_zero_when_the_column_is_a_function_of_the_given_one(rng):
    x = rng.normal(size=(40, 2))
    z = rng.normal(size=40)
    result = _partial(x, 3.0 * z + 1.0, z)
    assert result.dcor2_u == 0.0 and "function of the given column" in result.note
    assert dcor.partial_distance_correlation(x, 3.0 * z + 1.0, z) == pytest.approx(0.0, abs=1e-12)


def test_a_constant_given_column_is_a_note(rng):
    result = _partial(rng.normal(size=(30, 2)), rng.normal(size=30), np.ones(30))
    assert result.dcor2_u is None and "constant given column" in result.note


def _brute_force_partial_pvalue(x, y, z, shuffles, y_categorical=False, z_categorical=False):
    a, b, c = (_u_centred(_distances(v, cat)) for v, cat in ((x, False), (y, y_categorical), (z, z_categorical)))
    cc = _u_product(c, c)
    p_x = a - _u_product(a, c) / cc * c
    p_y = b - _u_product(b, c) / cc * c
    observed = _u_product(p_x, p_y)
    replicates = np.array([_u_product(p_x, p_y[np.ix_(s, s)]) for s in shuffles])
    return (1 + np.count_nonzero(replicates >= observed - 1e-12)) / (len(shuffles) + 1)


@pytest.mark.parametrize("categorical", [False, True], ids=["numeric given", "categorical given"])
def test_partial_permutation_p_value_equals_brute_force_with_the_same_shuffles(rng, categorical):
    n, permutations, seed = 36, 80, 5
    z = rng.integers(0, 3, n).astype(float) if categorical else rng.normal(size=n)
    x = np.c_[z + rng.normal(size=n), rng.normal(size=n)]
    y = z + 0.4 * x[:, 1] + rng.normal(size=n)
    result = _partial(x, y, z, z_categorical=categorical, test=IndependenceTest("permutation", permutations=permutations, seed=seed))
    draws = np.random.default_rng(seed)
    shuffles = [draws.permutation(n) for _ in range(permutations)]
    assert result.pvalue == pytest.approx(_brute_force_partial_pvalue(x, y, z, shuffles, z_categorical=categorical))
    assert result.test == "permutation" and result.permutations == permutations


def test_partial_test_separates_conditional_independence_from_conditional_dependence(rng):
    """x and y both follow z: dcor sees dependence, pdcor given z does not; add a direct link and it does."""
    n = 150
    z = rng.normal(size=n)
    x = np.c_[z + 0.5 * rng.normal(size=n), rng.normal(size=n)]
    y = z + 0.5 * rng.normal(size=n)
    options = dict(test=IndependenceTest("permutation", permutations=199, seed=1))
    (marginal,) = distance_correlation(x, [y], [False], **options)
    assert marginal.pvalue <= 0.01
    independent = _partial(x, y, z, **options)
    assert independent.pvalue > 0.05
    dependent = _partial(x, y + x[:, 1], z, **options)
    assert dependent.pvalue <= 0.01


# ---------------------------------------------------------------------------------------------
# Jackknife intervals
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def deleted_values(monkeypatch):
    """Records the deleted (leave-one-out) values each interval is built from."""
    seen = []
    original = stats.jackknife_interval

    def spy(estimate, deleted, level):
        seen.append(np.array(deleted))
        return original(estimate, deleted, level)

    monkeypatch.setattr(stats, "jackknife_interval", spy)
    return seen


def _interval(estimate, deleted, level):
    m = len(deleted)
    se = np.sqrt((m - 1) / m * np.sum((deleted - np.mean(deleted)) ** 2))
    half = scipy.stats.norm.ppf(0.5 + level / 2) * se
    return max(-1.0, estimate - half), min(1.0, estimate + half)


@pytest.mark.parametrize("categorical", [False, True], ids=["numeric", "categorical"])
def test_jackknife_values_equal_dcor_recomputed_without_each_row(rng, deleted_values, categorical):
    n = 40
    y = rng.integers(0, 3, n) if categorical else rng.normal(size=n)
    x = np.c_[np.asarray(y, float) + rng.normal(size=n), rng.normal(size=(n, 2))]
    (result,) = distance_correlation(x, [y], [categorical], interval=Interval(0.9), tiles=Tiles(dtype=torch.float64, tile_size=16))
    reference_y = _one_hot(y) if categorical else y
    expected = np.array([dcor.u_distance_correlation_sqr(np.delete(x, i, 0), np.delete(reference_y, i, 0)) for i in range(n)])
    np.testing.assert_allclose(deleted_values[0], expected, rtol=1e-10, atol=1e-13)
    assert (result.ci_low, result.ci_high) == pytest.approx(_interval(result.dcor2_u, expected, 0.9), rel=1e-9)
    assert result.ci_method == "jackknife" and result.ci_low < result.dcor2_u < result.ci_high


def test_jackknife_in_a_stratum_with_gaps_and_float32(rng, deleted_values):
    n = 70
    x = rng.normal(size=(n, 3))
    y = x[:, 0] + rng.normal(size=n)
    y[[1, 4]] = np.nan
    label = rng.integers(0, 2, n)
    distance_correlation(x, [y, y], [False, False], subsets=[None, label == 0], interval=Interval(0.95),
                         tiles=Tiles(dtype=torch.float64, tile_size=16))  # fmt: skip
    for subset, deleted in zip([np.ones(n, bool), label == 0], deleted_values):
        keep = np.flatnonzero(~np.isnan(y) & subset)
        expected = [dcor.u_distance_correlation_sqr(x[np.delete(keep, i)], y[np.delete(keep, i)]) for i in range(keep.size)]
        np.testing.assert_allclose(np.sort(deleted), np.sort(expected), rtol=1e-10, atol=1e-13)  # strata reorder rows
    deleted_values.clear()
    distance_correlation(x.astype(np.float32), [y], [False], interval=Interval(0.95), tiles=Tiles(tile_size=16))
    keep = np.flatnonzero(~np.isnan(y))
    expected = [dcor.u_distance_correlation_sqr(x[np.delete(keep, i)], y[np.delete(keep, i)]) for i in range(keep.size)]
    np.testing.assert_allclose(np.sort(deleted_values[0]), np.sort(expected), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("categorical", [False, True], ids=["numeric", "categorical"])
def test_cluster_jackknife_values_equal_dcor_recomputed_without_each_cluster(rng, deleted_values, categorical):
    n = 60
    subject = rng.integers(0, 9, n)
    y = rng.integers(0, 3, n) if categorical else rng.normal(size=n) + subject
    x = np.c_[np.asarray(y, float) + rng.normal(size=n), subject + rng.normal(size=n)]
    (result,) = distance_correlation(x, [y], [categorical], interval=Interval(0.95, cluster=subject.astype(str)),
                                     tiles=Tiles(dtype=torch.float64, tile_size=16))  # fmt: skip
    reference_y = _one_hot(y) if categorical else y
    in_order_seen = list(dict.fromkeys(subject))  # clusters are numbered in order of appearance
    expected = [dcor.u_distance_correlation_sqr(x[subject != s], reference_y[subject != s]) for s in in_order_seen]
    np.testing.assert_allclose(deleted_values[0], expected, rtol=1e-10, atol=1e-13)
    assert result.ci_method == "cluster jackknife (9 clusters)"
    assert (result.ci_low, result.ci_high) == pytest.approx(_interval(result.dcor2_u, np.array(expected), 0.95), rel=1e-9)


@pytest.mark.parametrize("clustered", [False, True], ids=["rows", "clusters"])
def test_partial_jackknife_values_equal_pdcor_recomputed(rng, deleted_values, clustered):
    n = 45
    z = rng.integers(0, 3, n).astype(float)
    x = np.c_[z + rng.normal(size=n), rng.normal(size=n)]
    y = z + x[:, 1] + rng.normal(size=n)
    subject = np.repeat(np.arange(9), 5)  # in order of appearance, as the clusters are numbered
    result = _partial(x, y, z, z_categorical=True, interval=Interval(0.95, cluster=subject if clustered else None))
    onehot = _one_hot(z)
    leave_out = [subject != s for s in range(9)] if clustered else [np.arange(n) != i for i in range(n)]
    expected = [dcor.partial_distance_correlation(x[keep], y[keep], onehot[keep]) for keep in leave_out]
    np.testing.assert_allclose(deleted_values[0], expected, rtol=1e-9, atol=1e-12)
    assert result.ci_low < result.dcor2_u < result.ci_high


def test_bad_intervals_and_labels_are_value_errors(rng):
    x, y = rng.normal(size=(20, 2)), rng.normal(size=20)
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        distance_correlation(x, [y], [False], interval=Interval(1.5))
    with pytest.raises(ValueError, match="no label in 1 rows"):
        distance_correlation(x, [y], [False], interval=Interval(0.9, cluster=[None] + ["a"] * 19))
    with pytest.raises(ValueError, match="permutation test only"):
        distance_correlation(x, [y], [False], given=[y], test=IndependenceTest("t"))


# ---------------------------------------------------------------------------------------------
# Restricted permutations
# ---------------------------------------------------------------------------------------------


def test_shuffles_within_blocks_see_no_effect_that_lies_between_blocks(rng):
    """Features follow the block; the column is the block's level plus tiny noise."""
    block = np.repeat(np.arange(10), 12)
    level = rng.normal(size=10)
    x = level[block][:, None] + 0.5 * rng.normal(size=(120, 3))
    column = level[block] + 1e-3 * rng.normal(size=120)
    (free,) = distance_correlation(x, [column], [False], test=IndependenceTest("permutation", permutations=199, seed=2))
    within_blocks = IndependenceTest("permutation", permutations=199, seed=2, permute_within=block)
    (within,) = distance_correlation(x, [column], [False], test=within_blocks)
    assert free.pvalue <= 0.01
    assert within.pvalue > 0.05


def test_shuffles_stay_inside_blocks_and_strata(rng):
    block = rng.integers(0, 4, 50)
    stratum = rng.integers(0, 2, 50).astype(bool)
    rows = np.flatnonzero(stratum)
    shuffles = _jobs.draw_shuffles(rows.size, block[rows], 30, rng)
    assert all(np.array_equal(np.sort(s), np.arange(rows.size)) for s in shuffles)
    assert (block[rows][shuffles] == block[rows][None, :]).all()
    assert (shuffles != np.arange(rows.size)).any()


def test_blocks_of_one_row_cannot_be_shuffled(rng):
    x, y = rng.normal(size=(12, 2)), rng.normal(size=12)
    with pytest.raises(ValueError, match="all 12 blocks have a single row"):
        distance_correlation(x, [y], [False], test=IndependenceTest("permutation", permutations=9, permute_within=np.arange(12)))


# ---------------------------------------------------------------------------------------------
# The torch engine
# ---------------------------------------------------------------------------------------------


def _fields(results):
    return np.array([[np.nan if v is None else v for v in (r.dcor2_u, r.dcor2_v, r.pvalue, r.ci_low, r.ci_high)]
                     for r in results])  # fmt: skip


def test_torch_engine_gives_the_numba_numbers(rng):
    n = 90
    x = rng.normal(size=(n, 5))
    x[10] = x[11] + 1e-9  # a near pair, recomputed from the coordinates
    y = x[:, 0] + rng.normal(size=n)
    site = rng.integers(0, 3, n)
    label = rng.integers(0, 2, n)
    subject = rng.integers(0, 12, n)
    columns, kinds = [y, site, y], [False, True, False]
    given, given_kinds = [None, y, site], [False, False, True]
    for cluster in (None, subject):
        options = dict(subsets=[None, None, label == 1], given=given, given_categorical=given_kinds,
                       test=IndependenceTest("permutation", permutations=15, seed=3), interval=Interval(0.9, cluster=cluster))  # fmt: skip
        numba_results = distance_correlation(x, columns, kinds, tiles=Tiles(dtype=torch.float64, tile_size=32, engine=Engine.NUMBA), **options)
        torch_results = distance_correlation(x, columns, kinds, tiles=Tiles(dtype=torch.float64, tile_size=32, engine=Engine.TORCH), **options)
        np.testing.assert_allclose(_fields(torch_results), _fields(numba_results), rtol=1e-10, atol=1e-14)
    float32 = [distance_correlation(x, columns, kinds, tiles=Tiles(tile_size=32, engine=engine))[0].dcor2_u for engine in Engine]
    assert float32[1] == pytest.approx(float32[0], rel=1e-5)


def test_both_engines_fill_every_declared_output(rng, monkeypatch):
    """OUTPUTS is the one list of the pass's sums: the kernel takes exactly the declared arrays, and
    both engines fill every declared output, in the shape it was declared with, with equal values."""
    assert PassArrays._fields == INPUTS + tuple(output.name for output in OUTPUTS)
    kernel_parameters = tuple(inspect.signature(_kernel.accumulate_tile.py_func).parameters)
    assert kernel_parameters[-len(PassArrays._fields) :] == PassArrays._fields

    seen = {engine: [] for engine in Engine}

    def recorded(engine):
        def tile_pass(features, arrays, options):
            filled = _tiled.tile_pass(features, arrays, options)
            seen[engine].append((arrays, filled))
            return filled

        return tile_pass

    n = 70
    subject = rng.integers(0, 7, n)
    label = rng.integers(0, 2, n)
    site = rng.integers(0, 3, n)
    z = rng.normal(size=n)
    x = np.c_[z + rng.normal(size=n), site + rng.normal(size=n), rng.normal(size=(n, 2))]
    y = x[:, 0] + rng.normal(size=n)
    for engine in Engine:  # every output in use: strata, shuffles, a given column, cluster intervals
        monkeypatch.setattr(_jobs, "tile_pass", recorded(engine))
        distance_correlation(x, [y, site, y], [False, True, False], subsets=[None, None, label == 1], given=[z, None, None],
                             test=IndependenceTest("permutation", permutations=7, seed=1), interval=Interval(0.9, cluster=subject),
                             tiles=Tiles(dtype=torch.float64, tile_size=16, engine=engine))  # fmt: skip
    assert len(seen[Engine.NUMBA]) == len(seen[Engine.TORCH]) == 2  # the jobs' pass, then the row sums' pass
    for output in OUTPUTS:
        in_use = False
        for (declared, by_numba), (_, by_torch) in zip(seen[Engine.NUMBA], seen[Engine.TORCH]):
            zeros = getattr(declared, output.name)
            assert zeros.dtype == np.float64 and not zeros.any(), output.name
            numba_sums, torch_sums = getattr(by_numba, output.name), getattr(by_torch, output.name)
            assert numba_sums.shape == torch_sums.shape == zeros.shape, output.name
            np.testing.assert_allclose(torch_sums, numba_sums, rtol=1e-10, atol=1e-10, err_msg=output.name)
            in_use |= bool(numba_sums.any())
        assert in_use, f"no engine filled {output.name}"
