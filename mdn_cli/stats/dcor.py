"""Distance correlation between a feature matrix and metadata columns: exact, tiled, with tests.

Everything the U- and V-statistics need is a sum over the feature-distance matrix a_ij:
the row sums a_i., the total a.., S_aa = sum a_ij^2 and, per metadata column, S_ab = sum a_ij b_ij.
One pass over row tiles of the upper triangle collects them all, so memory stays
O(n*d + tile^2) and every metadata column, stratum and permutation shares each distance tile.
The metadata side (b_i., b.., S_bb) has closed forms and is computed exactly in float64.

U-centred distance covariance (Szekely & Rizzo 2014), with n rows:
    dCov2_U(a, b) = [S_ab - 2/(n-2) sum_i a_i. b_i. + a.. b.. / ((n-1)(n-2))] / (n(n-3))
V-statistic (double centring):
    dCov2_V(a, b) = S_ab / n^2 - 2/n^3 sum_i a_i. b_i. + a.. b.. / n^4
A permutation of the metadata changes only S_ab and sum_i a_i. b_i., so permutations are
extra metadata vectors in the same pass.

This module is the API, in the style of the ``dcor`` package: ``distance_correlation`` with its
options ``IndependenceTest``, ``Interval`` and ``Tiles`` (how the pass runs, on which
``Engine``), ``dcor2``, ``dcor_t_test`` and ``DcorResult``. Behind it: ``_jobs`` (columns as
jobs of one pass), ``_tiled`` (tiles, worker threads, processes), the engines ``_kernel``
(numba) and ``_torch_engine``, and ``_pass_arrays`` (OUTPUTS, the one declaration of the
pass's sums); ``sums``, ``partial``, ``jackknife`` and ``columns`` turn the sums into statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from mdn_cli.stats._jobs import Job, job_sums
from mdn_cli.stats._tiled import Engine, Tiles, features_matrix
from mdn_cli.stats.jackknife import deleted_dcor2, deleted_partial, jackknife_interval
from mdn_cli.stats.partial import PartialSums
from mdn_cli.stats.sums import JobSums, v_product

__all__ = ["DcorResult", "Engine", "IndependenceTest", "Interval", "Tiles", "dcor2", "dcor_t_test", "distance_correlation"]


@dataclass(frozen=True)
class DcorResult:
    """One distance correlation: both statistics, a p-value only when a test was run, an interval only when asked.

    A partial result (a given column) has its partial dcor² in ``dcor2_u`` and no V-statistic.
    """

    dcor2_u: Optional[float]
    dcor2_v: Optional[float]
    dcor_v: Optional[float]
    n: int
    n_missing: int
    pvalue: Optional[float]
    test: Optional[str]
    permutations: Optional[int]
    note: Optional[str] = None
    ci_low: Optional[float] = None
    ci_high: Optional[float] = None
    ci_method: Optional[str] = None


@dataclass(frozen=True)
class IndependenceTest:
    """A test of independence: "permutation" or "t" (Székely & Rizzo 2013).

    The permutation test evaluates ``permutations`` shuffles drawn from ``seed`` in the same
    pass; ``permute_within`` (n block labels) keeps every shuffle within blocks (and strata).
    """

    kind: str
    permutations: int = 999
    seed: int = 0
    permute_within: Optional[Sequence] = None

    def __post_init__(self):
        if self.kind not in ("permutation", "t"):
            raise ValueError(f"unknown test {self.kind!r}")

    @property
    def shuffles(self) -> int:
        """Shuffles of each column in the pass (none for the t-test)."""
        return self.permutations if self.kind == "permutation" else 0


@dataclass(frozen=True)
class Interval:
    """A jackknife normal interval at ``level``; ``cluster`` (n group ids) leaves out whole groups instead of rows."""

    level: float
    cluster: Optional[Sequence] = None

    def __post_init__(self):
        if not 0.0 < self.level < 1.0:
            raise ValueError(f"ci is a confidence level in (0, 1), not {self.level}")


def dcor_t_test(dcor2_u: float, n: int) -> float:
    """One-sided p-value of the distance-correlation t-test (Szekely & Rizzo 2013).

    T = sqrt(v - 1) R / sqrt(1 - R^2), v = n(n-3)/2, R the U-statistic dcor^2; T ~ t(v - 1)
    under independence in high dimension.
    """
    v = n * (n - 3) / 2.0
    if dcor2_u >= 1.0:
        return 0.0
    from scipy.special import stdtr  # the t CDF that scipy.stats.t.sf calls, without scipy.stats' second of import

    statistic = math.sqrt(v - 1.0) * dcor2_u / math.sqrt(1.0 - dcor2_u**2)
    return float(stdtr(v - 1.0, -statistic))


def distance_correlation(
    x,
    columns: Sequence,
    categorical: Sequence[bool],
    *,
    subsets: Optional[Sequence[Optional[np.ndarray]]] = None,
    given: Optional[Sequence] = None,
    given_categorical: Optional[Sequence[bool]] = None,
    test: Optional[IndependenceTest] = None,
    interval: Optional[Interval] = None,
    tiles: Tiles = Tiles(),
) -> list[DcorResult]:
    """dcor^2 between features ``x`` (n, ...) and each metadata column, in one tiled pass.

    ``columns[k]`` has n values (NaN / None = missing; those rows are left out for that column
    only). ``subsets[k]``, a boolean mask of n, restricts column k to some rows (a stratum); the
    same column may appear several times with different subsets.

    ``given[k]`` (n values, or None) makes result k the partial dcor² of the features and column
    k given that column (Székely & Rizzo 2014), on the rows where both have a value; its
    permutation test shuffles column k's part orthogonal to the given one (stats.partial).
    ``test`` adds p-values, ``interval`` a jackknife interval to every result; ``tiles`` says
    how the pass runs.
    """
    if len(columns) != len(categorical):
        raise ValueError("columns and categorical differ in length")
    features = features_matrix(x, tiles.dtype)
    n = features.shape[0]
    subsets = list(subsets) if subsets is not None else [None] * len(columns)
    given = list(given) if given is not None else [None] * len(columns)
    given_categorical = list(given_categorical) if given_categorical is not None else [False] * len(given)
    if len(given) != len(columns) or len(given_categorical) != len(columns):
        raise ValueError("given, given_categorical and columns differ in length")
    if _kind(test) == "t" and any(z is not None for z in given):
        raise ValueError("the t-test is for dcor²; partial dcor² has the permutation test only")
    blocks = _labels(None if test is None else test.permute_within, n, "permute_within")
    groups = _labels(None if interval is None else interval.cluster, n, "cluster")

    prepared = []
    for column, is_categorical, subset, z, z_categorical in zip(columns, categorical, subsets, given, given_categorical):
        values, present = _prepare_column(column, is_categorical)
        if values.shape[0] != n:
            raise ValueError(f"a metadata column has {values.shape[0]} values for {n} feature rows")
        in_subset = np.ones(n, bool) if subset is None else np.asarray(subset, dtype=bool)
        used = present & in_subset
        z_values = None
        if z is not None:
            z_values, z_present = _prepare_column(z, z_categorical)
            if z_values.shape[0] != n:
                raise ValueError(f"a given column has {z_values.shape[0]} values for {n} feature rows")
            used &= z_present
        prepared.append((values, bool(is_categorical), used, int(in_subset.sum() - used.sum()), z_values, bool(z_categorical)))

    # Rows ordered so that each distinct row subset is (close to) one contiguous range; the
    # kernel then skips everything outside a stratum instead of multiplying it by zero.
    distinct_masks: dict[bytes, int] = {}
    mask_list: list[np.ndarray] = []
    for _, _, used, *_ in prepared:
        key = used.tobytes()
        if key not in distinct_masks:
            distinct_masks[key] = len(mask_list)
            mask_list.append(used)
    order = np.lexsort(tuple(~mask for mask in reversed(mask_list))) if mask_list else np.arange(n)

    results: list[Optional[DcorResult]] = [None] * len(prepared)
    jobs: list[Job] = []
    requests = []  # (result index, its jobs: the column's, then the given column's; n_missing)
    for index, (values, is_categorical, used, n_missing, z_values, z_categorical) in enumerate(prepared):
        count = int(used.sum())
        note = None
        if count < 4:
            note = f"only {count} rows with a value (needs at least 4)"
        elif np.unique(values[used]).size < 2:
            note = "constant column: distance correlation is undefined"
        elif z_values is not None and np.unique(z_values[used]).size < 2:
            note = "constant given column: partial distance correlation is undefined"
        if note is not None:
            results[index] = _undefined(count, n_missing, test, note)
            continue
        # The column's job and the given column's share their shuffles (the permutation test
        # of partial dcor moves both with one permutation).
        members = [(values, is_categorical)] + ([(z_values, z_categorical)] if z_values is not None else [])
        requests.append((index, list(range(len(jobs), len(jobs) + len(members))), n_missing))
        for member_values, member_categorical in members:
            ordered = member_values if member_categorical else _scaled_numeric(member_values, used)
            jobs.append(Job(distinct_masks[used.tobytes()], ordered[order], used[order], member_categorical, len(requests)))

    if jobs:
        if not np.array_equal(order, np.arange(n)):  # a copy only when strata reorder the rows
            features = features[order]
        sums = job_sums(features, mask_list, order, jobs, 0 if test is None else test.shuffles,
                        np.random.default_rng(0 if test is None else test.seed), None if blocks is None else blocks[order],
                        interval is not None, None if groups is None else groups[order], tiles)  # fmt: skip
        for index, members, n_missing in requests:
            if len(members) == 1:
                results[index] = _dcor_result(sums[members[0]], n_missing, test, interval)
            else:
                results[index] = _partial_result(sums[members[0]], sums[members[1]], n_missing, test, interval)
    return results  # type: ignore[return-value]


def dcor2(x, y, *, categorical: bool = False) -> float:
    """Bias-corrected squared distance correlation (U-statistic) of features ``x`` and column ``y``.

    The paper's metric; NaN when it is undefined (fewer than 4 rows, or a constant side).
    """
    (result,) = distance_correlation(x, [y], [categorical], tiles=Tiles(dtype=np.float64))
    return math.nan if result.dcor2_u is None else result.dcor2_u


def _prepare_column(column, categorical: bool) -> tuple[np.ndarray, np.ndarray]:
    """Values as float codes (categorical) or floats, and the mask of usable rows."""
    if categorical:
        codes, _ = pd.factorize(pd.Series(np.asarray(column, dtype=object)), use_na_sentinel=True)
        return codes.astype(np.float64), codes >= 0
    values = np.asarray(column, dtype=np.float64)
    if np.isinf(values).any():
        raise ValueError("numeric metadata column contains infinite values")
    present = ~np.isnan(values)
    return np.where(present, values, 0.0), present


def _scaled_numeric(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Centre and scale a numeric column on its present rows, so float32 keeps its digits."""
    used = values[present]
    spread = used.std() if used.size else 0.0
    scaled = (values - (used.mean() if used.size else 0.0)) / (spread if spread > 0 else 1.0)
    return np.where(present, scaled, 0.0)


def _labels(labels, n: int, name: str) -> Optional[np.ndarray]:
    """Block or cluster labels as integer codes (None stays None); every row needs one."""
    if labels is None:
        return None
    codes, _ = pd.factorize(pd.Series(np.asarray(labels, dtype=object)), use_na_sentinel=True)
    if codes.shape[0] != n:
        raise ValueError(f"{name} has {codes.shape[0]} labels for {n} feature rows")
    if (codes < 0).any():
        raise ValueError(f"{name} has no label in {int((codes < 0).sum())} rows")
    return codes.astype(np.int64)


def _kind(test: Optional[IndependenceTest]) -> Optional[str]:
    return None if test is None else test.kind


def _test_fields(test: Optional[IndependenceTest]) -> dict:
    """The result fields that name the test."""
    kind = _kind(test)
    return {"test": kind, "permutations": test.permutations if kind == "permutation" else None}


def _undefined(count: int, n_missing: int, test: Optional[IndependenceTest], note: str) -> DcorResult:
    """The result of a column whose dcor² is not defined on its rows, with the reason."""
    return DcorResult(None, None, None, count, n_missing, None, note=note, **_test_fields(test))


def _dcor_result(job: JobSums, n_missing: int, test: Optional[IndependenceTest],
                 interval: Optional[Interval]) -> DcorResult:  # fmt: skip
    """dcor² (U and V), its p-value and interval from one job's sums."""
    count = job.n
    var_a_u, var_b_u = job.var_a, job.var_b
    if var_a_u <= 0 or var_b_u <= 0:
        note = "constant features on these rows" if var_a_u <= 0 else "constant column"
        return _undefined(count, n_missing, test, note)
    dcor2_u = job.dcov() / math.sqrt(var_a_u * var_b_u)
    total_a, total_b = float(job.a_rows.sum()), float(job.b_rows.sum())
    cross = float(job.a_rows @ job.b_rows)
    var_a_v = v_product(job.s_aa, float(job.a_rows @ job.a_rows), total_a, total_a, count)
    var_b_v = v_product(job.s_bb, float(job.b_rows @ job.b_rows), total_b, total_b, count)
    dcor2_v = v_product(float(job.s_ab[0]), cross, total_a, total_b, count) / math.sqrt(var_a_v * var_b_v)
    pvalue = None
    if _kind(test) == "t":
        pvalue = dcor_t_test(dcor2_u, count)
    elif _kind(test) == "permutation":
        pvalue = job.permutation_pvalue()
    bounds = None if interval is None else jackknife_interval(dcor2_u, deleted_dcor2(job), interval.level)
    return DcorResult(
        dcor2_u=dcor2_u,
        dcor2_v=dcor2_v,
        dcor_v=math.sqrt(max(dcor2_v, 0.0)),
        n=count,
        n_missing=n_missing,
        pvalue=pvalue,
        **_test_fields(test),
        **_interval_fields(bounds, job),
    )


def _partial_result(y: JobSums, z: JobSums, n_missing: int, test: Optional[IndependenceTest],
                    interval: Optional[Interval]) -> DcorResult:  # fmt: skip
    """Partial dcor² of features and y given z; the V-statistic fields stay None."""
    if y.var_a <= 0:
        return _undefined(y.n, n_missing, test, "constant features on these rows")
    partial = PartialSums(y, z)
    pvalue = partial.permutation_pvalue() if _kind(test) == "permutation" else None
    bounds = None if interval is None else jackknife_interval(partial.estimate, deleted_partial(partial), interval.level)
    return DcorResult(dcor2_u=partial.estimate, dcor2_v=None, dcor_v=None, n=y.n, n_missing=n_missing, pvalue=pvalue,
                      note=partial.note, **_test_fields(test), **_interval_fields(bounds, y))  # fmt: skip


def _interval_fields(bounds: Optional[tuple[float, float]], job: JobSums) -> dict:
    if bounds is None:
        return {}
    groups = job.rows.groups
    method = "jackknife" if groups is None else f"cluster jackknife ({int(groups.max()) + 1} clusters)"
    return {"ci_low": bounds[0], "ci_high": bounds[1], "ci_method": method}
