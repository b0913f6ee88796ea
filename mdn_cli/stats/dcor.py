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
"""

from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional, Sequence

import numba
import numpy as np
import pandas as pd
import scipy.stats
import torch

from mdn_cli.stats.validation import check_finite
from mdn_cli.stats.columns import numeric_row_sums
from mdn_cli.stats.jackknife import deleted_dcor2, deleted_partial, jackknife_interval
from mdn_cli.stats.partial import PartialSums
from mdn_cli.stats.sums import JobSums, RowSums

# Pairs closer than this fraction of (|x_i|^2 + |x_j|^2) lose precision in the
# |x_i|^2 + |x_j|^2 - 2 x_i.x_j form; their distance is recomputed from the coordinates.
_NEAR_PAIR_FRACTION = 1.0 / 64.0
_DEFAULT_TILE = 1024


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


# ----------------------------------------------------------------------------------------------
# The tile kernel
# ----------------------------------------------------------------------------------------------


@numba.njit(cache=True, inline="always")
def _tile_range(lo, hi, j0, tj):
    """The columns of a tile inside [lo, hi), as unsigned bounds.

    Unsigned indices spare numba's negative-index wraparound check, which otherwise blocks
    vectorisation of the inner loops (a 5x difference).
    """
    start = max(lo - j0, 0)
    stop = max(min(hi - j0, tj), start)
    return np.uint64(start), np.uint64(stop)


@numba.njit(fastmath=True, cache=True, nogil=True)
def _accumulate_tile(
    gram, norms_i, norms_j, x_i, x_j, i0, j0, diagonal, near_fraction,
    weights, lo, hi, dense, values, job_mask, job_categorical,
    rowsum, saa, sab,
    job_rows, rowprod, rowprod_within, rowsq, rowsq_within, linear, linear_mask, linear_out,
    groups, group_sums,
):  # fmt: skip
    """Distances of one tile from its Gram block, then every row sum, S_aa and S_ab from them.

    The jackknife's per-row sums are optional (empty arrays skip them): for jobs with
    ``job_rows[r] >= 0``, ``rowprod[job_rows[r], i]`` = sum_j a_ij b_ij; per mask, ``rowsq`` =
    sum_j a_ij^2; ``linear_out[l, i]`` = sum_j a_ij linear[l, j] (weights zero off the mask);
    with cluster ids ``groups``, ``group_sums[m, i, g]`` = sum over j in cluster g of a_ij and
    ``*_within`` the row products over j in i's own cluster. Mirror halves are added to the
    rows of J unweighted: the caller multiplies every per-row array by the mask afterwards.
    An empty ``saa`` skips the masks' own sums (a pass for linear sums only).

    Serial and GIL-free: each worker thread owns its accumulators, so tiles need no locks and
    no barriers (a busy machine slows a worker down instead of stalling all of them).
    Off-diagonal tiles stand for their mirror image too: they add their column sums to the
    rows of J and count twice in S_aa and S_ab. Constants come from ``near_fraction`` (an array
    of the tile's dtype) because a Python literal would promote float32 arithmetic to float64.
    """
    ti, tj = gram.shape
    n_masks = weights.shape[0]
    n_jobs = values.shape[0]
    n_dims = x_i.shape[1]
    n_linear = linear.shape[0]
    collect_masks = saa.shape[0] > 0
    collect_squares = rowsq.shape[0] > 0
    collect_groups = group_sums.shape[0] > 0
    mirror = 1.0 if diagonal else 2.0
    j0u = np.uint64(j0)
    a = np.empty(tj, dtype=gram.dtype)
    scratch = np.empty(tj, dtype=gram.dtype)
    fraction = near_fraction[0]
    zero = fraction - fraction
    for ii in range(ti):
        i = i0 + ii
        norm_i = norms_i[ii]
        near_pairs = 0
        for jj in range(tj):
            squared = norm_i + norms_j[jj] - (gram[ii, jj] + gram[ii, jj])
            near_pairs += squared < fraction * (norm_i + norms_j[jj])
            a[jj] = np.sqrt(max(squared, zero))
        if near_pairs > 0:
            for jj in range(tj):
                if a[jj] * a[jj] < fraction * (norm_i + norms_j[jj]):
                    exact = 0.0
                    for k in range(n_dims):
                        diff = np.float64(x_i[ii, k]) - np.float64(x_j[jj, k])
                        exact += diff * diff
                    a[jj] = np.sqrt(exact)
        if diagonal:
            a[ii] = zero

        for m in range(n_masks if collect_masks else 0):
            if i < lo[m] or i >= hi[m] or weights[m, i] == 0:
                continue
            js, je = _tile_range(lo[m], hi[m], j0, tj)
            mask_row = weights[m]
            row_total = 0.0
            row_squares = 0.0
            if dense[m]:
                for jj in range(js, je):
                    value = np.float64(a[jj])
                    row_total += value
                    row_squares += value * value
            else:
                for jj in range(js, je):
                    value = np.float64(a[jj] * mask_row[j0u + jj])
                    row_total += value
                    row_squares += value * a[jj]
            if not diagonal:
                column_sums = rowsum[m]
                for jj in range(js, je):
                    column_sums[j0u + jj] += a[jj]
            rowsum[m, i] += row_total
            saa[m] += mirror * row_squares
            if collect_squares:
                rowsq[m, i] += row_squares
                if not diagonal:
                    column_squares = rowsq[m]
                    for jj in range(js, je):
                        column_squares[j0u + jj] += np.float64(a[jj]) * a[jj]
            if collect_groups:
                g_i = groups[i]
                sums_m = group_sums[m]
                within_m = rowsq_within[m]
                for jj in range(js, je):
                    j = j0u + jj
                    value = np.float64(a[jj]) * mask_row[j]
                    sums_m[i, groups[j]] += value
                    if not diagonal:
                        sums_m[j, g_i] += a[jj]
                    if groups[j] == g_i:
                        within_m[i] += value * a[jj]
                        if not diagonal:
                            within_m[j] += np.float64(a[jj]) * a[jj]

        for l in range(n_linear):
            m = linear_mask[l]
            if i < lo[m] or i >= hi[m] or weights[m, i] == 0:
                continue
            js, je = _tile_range(lo[m], hi[m], j0, tj)
            w = linear[l]
            total = 0.0
            for jj in range(js, je):
                total += np.float64(a[jj] * w[j0u + jj])
            linear_out[l, i] += total
            if not diagonal:
                w_i = np.float64(w[i])
                out = linear_out[l]
                for jj in range(js, je):
                    out[j0u + jj] += np.float64(a[jj]) * w_i

        for r in range(n_jobs):
            m = job_mask[r]
            if i < lo[m] or i >= hi[m] or weights[m, i] == 0:
                continue
            js, je = _tile_range(lo[m], hi[m], j0, tj)
            mask_row = weights[m]
            row = values[r]
            v_i = row[i]
            total = 0.0
            k = job_rows[r]
            if k >= 0:
                # Products kept in ``products`` (the tile's a row is free now) for the per-row sums.
                products = scratch
                if job_categorical[r]:
                    for jj in range(js, je):
                        products[jj] = a[jj] if row[j0u + jj] != v_i else zero
                else:
                    for jj in range(js, je):
                        products[jj] = a[jj] * abs(v_i - row[j0u + jj])
                for jj in range(js, je):
                    total += np.float64(products[jj] * mask_row[j0u + jj])
                out = rowprod[k]
                if not diagonal:
                    for jj in range(js, je):
                        out[j0u + jj] += products[jj]
                if collect_groups:
                    g_i = groups[i]
                    within = rowprod_within[k]
                    for jj in range(js, je):
                        j = j0u + jj
                        if groups[j] == g_i:
                            within[i] += np.float64(products[jj] * mask_row[j])
                            if not diagonal:
                                within[j] += products[jj]
                out[i] += total
            elif job_categorical[r]:
                if dense[m]:
                    for jj in range(js, je):
                        total += np.float64(a[jj] if row[j0u + jj] != v_i else zero)
                else:
                    for jj in range(js, je):
                        weighted = a[jj] * mask_row[j0u + jj]
                        total += np.float64(weighted if row[j0u + jj] != v_i else zero)
            else:
                if dense[m]:
                    for jj in range(js, je):
                        total += np.float64(a[jj] * abs(v_i - row[j0u + jj]))
                else:
                    for jj in range(js, je):
                        total += np.float64(a[jj] * mask_row[j0u + jj] * abs(v_i - row[j0u + jj]))
            sab[r] += mirror * total


# ----------------------------------------------------------------------------------------------
# Metadata side: closed forms in float64
# ----------------------------------------------------------------------------------------------


def _metadata_sums(values: np.ndarray, categorical: bool) -> tuple[np.ndarray, float]:
    """Row sums b_i. and S_bb = sum_ij b_ij^2 of one column's distance matrix (masked rows)."""
    n = values.size
    if categorical:
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        row_sums = (n - counts[inverse]).astype(np.float64)
        return row_sums, float(n * n - np.sum(counts.astype(np.float64) ** 2))
    centred = values - values.mean()
    sum_squares = 2.0 * n * float(np.sum(centred**2)) - 2.0 * float(np.sum(centred)) ** 2
    return numeric_row_sums(values), sum_squares


def _v_centred(s: float, cross: float, total_a: float, total_b: float, n: int) -> float:
    return s / n**2 - 2.0 * cross / n**3 + total_a * total_b / n**4


# ----------------------------------------------------------------------------------------------
# The t-test
# ----------------------------------------------------------------------------------------------


def dcor_t_test(dcor2_u: float, n: int) -> float:
    """One-sided p-value of the distance-correlation t-test (Szekely & Rizzo 2013).

    T = sqrt(v - 1) R / sqrt(1 - R^2), v = n(n-3)/2, R the U-statistic dcor^2; T ~ t(v - 1)
    under independence in high dimension.
    """
    v = n * (n - 3) / 2.0
    if dcor2_u >= 1.0:
        return 0.0
    statistic = math.sqrt(v - 1.0) * dcor2_u / math.sqrt(1.0 - dcor2_u**2)
    return float(scipy.stats.t.sf(statistic, v - 1.0))


# ----------------------------------------------------------------------------------------------
# The tiled pass
# ----------------------------------------------------------------------------------------------


def _features_matrix(x, dtype: torch.dtype) -> torch.Tensor:
    """(n, ...) -> (n, d) in ``dtype``, translated to near the origin (distances do not change)."""
    matrix = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    matrix = matrix.detach().to("cpu").reshape(matrix.shape[0], -1)
    if not bool(torch.isfinite(matrix).all()):  # the check in torch; the message from the shared one
        check_finite(matrix.double().numpy())
    centre = matrix.sum(dim=0, dtype=torch.float64) / max(matrix.shape[0], 1)
    return (matrix.to(dtype) - centre.to(dtype)).contiguous()


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


def distance_correlation(
    x,
    columns: Sequence,
    categorical: Sequence[bool],
    *,
    subsets: Optional[Sequence[Optional[np.ndarray]]] = None,
    given: Optional[Sequence] = None,
    given_categorical: Optional[Sequence[bool]] = None,
    test: Optional[str] = None,
    permutations: int = 999,
    seed: int = 0,
    permute_within=None,
    ci: Optional[float] = None,
    cluster=None,
    dtype: torch.dtype = torch.float32,
    tile_size: int = _DEFAULT_TILE,
    progress: Optional[Callable[[int, int], None]] = None,
    device: torch.device | str = "cpu",
    engine: Optional[str] = None,
    share_over_processes: bool = False,
) -> list[DcorResult]:
    """dcor^2 between features ``x`` (n, ...) and each metadata column, in one tiled pass.

    ``columns[k]`` has n values (NaN / None = missing; those rows are left out for that column
    only). ``subsets[k]``, a boolean mask of n, restricts column k to some rows (a stratum); the
    same column may appear several times with different subsets. ``test`` is None,
    "permutation" (``permutations`` seeded shuffles within the used rows, evaluated in the same
    pass) or "t". ``progress(done, total)`` is called after each tile.

    ``given[k]`` (n values, or None) makes result k the partial dcor² of the features and column
    k given that column (Székely & Rizzo 2014), on the rows where both have a value; its
    permutation test shuffles column k's part orthogonal to the given one (stats.partial).
    ``permute_within`` (n block labels) keeps every shuffle within blocks (and strata).
    ``ci`` (a level in (0, 1)) adds a jackknife normal interval to every result; ``cluster``
    (n group ids) leaves out whole groups instead of single rows.
    ``engine`` "numba" (the default on the CPU: tiles from ``device``, sums on the CPU) or
    "torch" (the default on other devices: tiles and sums stay on ``device``).
    ``share_over_processes``: every process of the running torch.distributed group calls this with
    the same arguments; the tiles are shared out and the sums all-reduced, so each gets the
    one-process results (off by default: a rank may audit alone while others wait, as in training).
    """
    if test not in (None, "permutation", "t"):
        raise ValueError(f"unknown test {test!r}")
    if len(columns) != len(categorical):
        raise ValueError("columns and categorical differ in length")
    if ci is not None and not 0.0 < ci < 1.0:
        raise ValueError(f"ci is a confidence level in (0, 1), not {ci}")
    device = torch.device(device)
    engine = engine or ("numba" if device.type == "cpu" else "torch")
    if engine not in ("numba", "torch"):
        raise ValueError(f"unknown engine {engine!r} (numba or torch)")
    features = _features_matrix(x, dtype)
    n = features.shape[0]
    subsets = list(subsets) if subsets is not None else [None] * len(columns)
    given = list(given) if given is not None else [None] * len(columns)
    given_categorical = list(given_categorical) if given_categorical is not None else [False] * len(given)
    if len(given) != len(columns) or len(given_categorical) != len(columns):
        raise ValueError("given, given_categorical and columns differ in length")
    if test == "t" and any(z is not None for z in given):
        raise ValueError("the t-test is for dcor²; partial dcor² has the permutation test only")
    blocks, groups = _labels(permute_within, n, "permute_within"), _labels(cluster, n, "cluster")

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
    jobs: list[_Job] = []
    requests = []  # (result index, its jobs: the column's, then the given column's; n_missing)
    rng = np.random.default_rng(seed)
    n_permutations = permutations if test == "permutation" else 0
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
            results[index] = _undefined(count, n_missing, test, n_permutations, note)
            continue
        # The column's job and the given column's share their shuffles (the permutation test
        # of partial dcor moves both with one permutation).
        members = [(values, is_categorical)] + ([(z_values, z_categorical)] if z_values is not None else [])
        requests.append((index, list(range(len(jobs), len(jobs) + len(members))), n_missing))
        for member_values, member_categorical in members:
            ordered = member_values if member_categorical else _scaled_numeric(member_values, used)
            jobs.append(_Job(distinct_masks[used.tobytes()], ordered[order], used[order], member_categorical, len(requests)))

    if jobs:
        if not np.array_equal(order, np.arange(n)):  # a copy only when strata reorder the rows
            features = features[torch.as_tensor(order)]
        sums = _run_jobs(features, mask_list, order, jobs, n_permutations, rng,
                         None if blocks is None else blocks[order], ci is not None,
                         None if groups is None else groups[order], dtype, tile_size, progress, device, engine,
                         share_over_processes)  # fmt: skip
        for index, members, n_missing in requests:
            if len(members) == 1:
                results[index] = _dcor_result(sums[members[0]], n_missing, test, n_permutations, ci)
            else:
                results[index] = _partial_result(sums[members[0]], sums[members[1]], n_missing, test, n_permutations, ci)
    return results  # type: ignore[return-value]


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


def _undefined(count: int, n_missing: int, test: Optional[str], n_permutations: int, note: str) -> DcorResult:
    """The result of a column whose dcor² is not defined on its rows, with the reason."""
    return DcorResult(None, None, None, count, n_missing, None, test,
                      n_permutations if test == "permutation" else None, note)  # fmt: skip


def _dcor_result(job: JobSums, n_missing: int, test: Optional[str], n_permutations: int,
                 ci: Optional[float]) -> DcorResult:  # fmt: skip
    """dcor² (U and V), its p-value and interval from one job's sums."""
    count = job.n
    var_a_u, var_b_u = job.var_a, job.var_b
    if var_a_u <= 0 or var_b_u <= 0:
        note = "constant features on these rows" if var_a_u <= 0 else "constant column"
        return _undefined(count, n_missing, test, n_permutations, note)
    dcor2_u = job.dcov() / math.sqrt(var_a_u * var_b_u)
    total_a, total_b = float(job.a_rows.sum()), float(job.b_rows.sum())
    cross = float(job.a_rows @ job.b_rows)
    var_a_v = _v_centred(job.s_aa, float(job.a_rows @ job.a_rows), total_a, total_a, count)
    var_b_v = _v_centred(job.s_bb, float(job.b_rows @ job.b_rows), total_b, total_b, count)
    dcor2_v = _v_centred(float(job.s_ab[0]), cross, total_a, total_b, count) / math.sqrt(var_a_v * var_b_v)
    pvalue = None
    if test == "t":
        pvalue = dcor_t_test(dcor2_u, count)
    elif test == "permutation":
        pvalue = _permutation_pvalue(job.s_ab, job.a_rows, job.b_rows, job.shuffles)
    interval = None if ci is None else jackknife_interval(dcor2_u, deleted_dcor2(job), ci)
    return DcorResult(
        dcor2_u=dcor2_u,
        dcor2_v=dcor2_v,
        dcor_v=math.sqrt(max(dcor2_v, 0.0)),
        n=count,
        n_missing=n_missing,
        pvalue=pvalue,
        test=test,
        permutations=n_permutations if test == "permutation" else None,
        **_interval_fields(interval, job),
    )


def _partial_result(y: JobSums, z: JobSums, n_missing: int, test: Optional[str], n_permutations: int,
                    ci: Optional[float]) -> DcorResult:  # fmt: skip
    """Partial dcor² of features and y given z; the V-statistic fields stay None."""
    if y.var_a <= 0:
        return _undefined(y.n, n_missing, test, n_permutations, "constant features on these rows")
    partial = PartialSums(y, z)
    pvalue = partial.permutation_pvalue() if test == "permutation" else None
    interval = None if ci is None else jackknife_interval(partial.estimate, deleted_partial(partial), ci)
    return DcorResult(
        dcor2_u=partial.estimate, dcor2_v=None, dcor_v=None, n=y.n, n_missing=n_missing, pvalue=pvalue, test=test,
        permutations=n_permutations if test == "permutation" else None, note=partial.note, **_interval_fields(interval, y),
    )  # fmt: skip


def _interval_fields(interval: Optional[tuple[float, float]], job: JobSums) -> dict:
    if interval is None:
        return {}
    groups = job.rows.groups
    method = "jackknife" if groups is None else f"cluster jackknife ({int(groups.max()) + 1} clusters)"
    return {"ci_low": interval[0], "ci_high": interval[1], "ci_method": method}


@dataclass
class _Job:
    """One metadata column on one row mask, in row order, as the pass sees it."""

    mask: int
    values: np.ndarray
    used: np.ndarray
    categorical: bool
    shuffle_group: int


class _PassArrays(NamedTuple):
    """The kernel's arguments after the tile itself, in its order; _OUTPUTS are its sums."""

    weights: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    dense: np.ndarray
    values: np.ndarray
    job_mask: np.ndarray
    job_categorical: np.ndarray
    rowsum: np.ndarray
    saa: np.ndarray
    sab: np.ndarray
    job_rows: np.ndarray
    rowprod: np.ndarray
    rowprod_within: np.ndarray
    rowsq: np.ndarray
    rowsq_within: np.ndarray
    linear: np.ndarray
    linear_mask: np.ndarray
    linear_out: np.ndarray
    groups: np.ndarray
    group_sums: np.ndarray


_OUTPUTS = ("rowsum", "saa", "sab", "rowprod", "rowprod_within", "rowsq", "rowsq_within", "linear_out", "group_sums")
_GROUP_SUMS_LIMIT = 1 << 26  # float64 values of per-row cluster sums (512 MB)


def _draw_shuffles(count: int, blocks: Optional[np.ndarray], n_permutations: int, rng) -> np.ndarray:
    """Shuffles of ``count`` rows: free, or within each block (exchangeability blocks)."""
    shuffles = np.empty((n_permutations, count), dtype=np.int32)
    if blocks is None:
        for p in range(n_permutations):
            shuffles[p] = rng.permutation(count)
        return shuffles
    sizes = np.unique(blocks, return_counts=True)[1]
    if n_permutations and (sizes == 1).all():
        raise ValueError(f"permute_within: all {sizes.size} blocks have a single row, so no shuffle can move a row")
    in_order = np.lexsort((np.arange(count), blocks))
    for p in range(n_permutations):
        shuffles[p, in_order] = np.lexsort((rng.random(count), blocks))
    return shuffles


def _run_jobs(features, mask_list, order, jobs, n_permutations, rng, blocks, collect, groups, dtype,
              tile_size, progress, device, engine, shared) -> list[JobSums]:  # fmt: skip
    """Build the kernel's arrays, run the pass over upper-triangle tiles, gather each job's sums.

    With ``collect`` (intervals) the pass also gathers the jackknife's per-row sums, and a
    second pass gets sum_j a_kj a_j., which needs every feature row sum a_j. first.
    """
    n = features.shape[0]
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    used_masks = sorted({job.mask for job in jobs})
    mask_index = {mask: k for k, mask in enumerate(used_masks)}
    n_masks = len(used_masks)
    weights = np.stack([mask_list[m][order] for m in used_masks]).astype(np_dtype)
    positions = [np.flatnonzero(w) for w in weights]
    lo = np.array([p[0] for p in positions], dtype=np.int64)
    hi = np.array([p[-1] + 1 for p in positions], dtype=np.int64)
    dense = np.array([p.size == h - l for p, l, h in zip(positions, lo, hi)], dtype=np.bool_)

    # Each job owns 1 + n_permutations rows of values_all: its values, then each shuffle of them,
    # written straight in the kernel's dtype.
    per_job = 1 + n_permutations
    values_all = np.empty((len(jobs) * per_job, n), dtype=np_dtype)
    drawn: dict[int, np.ndarray] = {}
    job_rows, job_shuffles, column_sums = [], [], []
    for k, job in enumerate(jobs):
        rows = np.flatnonzero(job.used)
        if job.shuffle_group not in drawn:
            drawn[job.shuffle_group] = _draw_shuffles(rows.size, None if blocks is None else blocks[rows], n_permutations, rng)
        shuffles = drawn[job.shuffle_group]
        start = k * per_job
        values_all[start] = job.values
        for p in range(n_permutations):
            values_all[start + 1 + p] = job.values
            values_all[start + 1 + p, rows] = job.values[rows[shuffles[p]]]
        job_rows.append(rows)
        job_shuffles.append(shuffles)
        seen = job.values[rows].astype(np_dtype).astype(np.float64)
        column_sums.append((seen, *_metadata_sums(seen, job.categorical)))
    job_mask = np.array([mask_index[job.mask] for job in jobs], dtype=np.int64)

    clustered = collect and groups is not None
    n_groups = int(groups.max()) + 1 if clustered else 1
    if clustered and n_masks * n * n_groups > _GROUP_SUMS_LIMIT:
        raise ValueError(f"the cluster jackknife keeps {n_masks} x {n} x {n_groups} sums (row x cluster per "
                         f"stratum), over the limit of {_GROUP_SUMS_LIMIT}: use fewer clusters or strata")  # fmt: skip
    linear = np.zeros((len(jobs) if collect else 0, n), dtype=np_dtype)
    for k, rows in enumerate(job_rows if collect else []):
        linear[k, rows] = column_sums[k][1]
    arrays = _PassArrays(
        weights, lo, hi, dense, values_all, np.repeat(job_mask, per_job),
        np.repeat(np.array([job.categorical for job in jobs], dtype=np.bool_), per_job),
        np.zeros((n_masks, n)), np.zeros(n_masks), np.zeros(values_all.shape[0]),
        np.where(np.arange(values_all.shape[0]) % per_job == 0, np.arange(values_all.shape[0]) // per_job, -1)
        if collect else np.full(values_all.shape[0], -1, dtype=np.int64),
        np.zeros((len(jobs) if collect else 0, n)), np.zeros((len(jobs) if clustered else 0, n)),
        np.zeros((n_masks if collect else 0, n)), np.zeros((n_masks if clustered else 0, n)),
        linear, job_mask if collect else np.zeros(0, np.int64), np.zeros(linear.shape),
        groups.astype(np.int64) if clustered else np.zeros(0, np.int64),
        np.zeros((n_masks, n, n_groups) if clustered else (0, 1, 1)),
    )  # fmt: skip
    sums = _tile_pass(features, arrays, tile_size, progress, device, engine, shared)
    a_a = None
    if collect:
        # Second pass: sum_j a_kj a_j. per mask (the linear sums with the row sums as weights).
        second = _tile_pass(features, _empty_pass(sums, np_dtype), tile_size, progress, device, engine, shared)
        a_a = second.linear_out

    out = []
    for k, (job, rows, shuffles, (seen, b_rows, s_bb)) in enumerate(zip(jobs, job_rows, job_shuffles, column_sums)):
        m = mask_index[job.mask]
        row_sums = None
        if collect:
            row_sums = RowSums(ab=sums.rowprod[k, rows], a_b=sums.linear_out[k, rows], aa=sums.rowsq[m, rows],
                               a_a=a_a[m, rows])  # fmt: skip
            if clustered:
                present, codes = np.unique(groups[rows], return_inverse=True)
                row_sums.groups = codes.reshape(-1)
                row_sums.a_groups = sums.group_sums[m][rows][:, present]
                row_sums.ab_within = sums.rowprod_within[k, rows]
                row_sums.aa_within = sums.rowsq_within[m, rows]
        out.append(JobSums(n=rows.size, values=seen, categorical=job.categorical, a_rows=sums.rowsum[m, rows],
                           s_aa=float(sums.saa[m]), b_rows=b_rows, s_bb=s_bb,
                           s_ab=sums.sab[k * per_job : (k + 1) * per_job], shuffles=shuffles, rows=row_sums))  # fmt: skip
    return out


def _empty_pass(first: _PassArrays, np_dtype) -> _PassArrays:
    """Arrays of a pass with no jobs, no mask sums and one linear sum per mask, weighted by its row sums."""
    n = first.weights.shape[1]
    n_masks = first.weights.shape[0]
    return first._replace(
        values=np.zeros((0, n), np_dtype), job_mask=np.zeros(0, np.int64), job_categorical=np.zeros(0, np.bool_),
        rowsum=np.zeros((0, n)), saa=np.zeros(0), sab=np.zeros(0), job_rows=np.zeros(0, np.int64),
        rowprod=np.zeros((0, n)), rowprod_within=np.zeros((0, n)), rowsq=np.zeros((0, n)), rowsq_within=np.zeros((0, n)),
        linear=first.rowsum.astype(np_dtype), linear_mask=np.arange(n_masks, dtype=np.int64), linear_out=np.zeros((n_masks, n)),
        groups=np.zeros(0, np.int64), group_sums=np.zeros((0, 1, 1)),
    )  # fmt: skip


def _tile_pass(features, arrays: _PassArrays, tile_size, progress, device, engine, shared: bool) -> _PassArrays:
    """One pass over the upper-triangle tiles; returns ``arrays`` with every sum filled in.

    Per-row sums come back restricted to each mask's rows (the kernel adds mirror halves to
    every row of a tile).
    """
    n = features.shape[0]
    tile = max(16, min(tile_size, n))
    lo, hi = arrays.lo, arrays.hi
    starts = range(0, n, tile)
    tiles = [(i0, j0) for i0 in starts for j0 in starts if j0 >= i0]
    # Tiles that no mask touches (strata far from each other in row order) are skipped.
    tiles = [(i0, j0) for i0, j0 in tiles
             if ((lo < i0 + tile) & (hi > i0) & (lo < j0 + tile) & (hi > j0)).any()]  # fmt: skip
    rank, processes = _process_share() if shared else (0, 1)
    tiles = tiles[rank::processes]  # shared: each process of the group takes every processes-th tile
    if engine == "torch":
        from mdn_cli.stats.torch_pass import accumulate

        total = accumulate(features, arrays, tiles, tile, device, progress, _NEAR_PAIR_FRACTION)
    else:
        total = _numba_pass(features, arrays, tiles, tile, device, progress)
    if processes > 1:
        total = _summed_over_processes(total)
    weights = total.weights
    job_weights = weights[total.job_mask[total.job_rows >= 0]] if total.rowprod.shape[0] else weights[:0]
    return total._replace(
        rowsum=total.rowsum * (weights if total.rowsum.shape[0] else 1.0),
        rowprod=total.rowprod * job_weights,
        rowprod_within=total.rowprod_within * (job_weights if total.rowprod_within.shape[0] else 1.0),
        rowsq=total.rowsq * (weights if total.rowsq.shape[0] else 1.0),
        rowsq_within=total.rowsq_within * (weights if total.rowsq_within.shape[0] else 1.0),
        linear_out=total.linear_out * weights[total.linear_mask],
        group_sums=total.group_sums * (weights[:, :, None] if total.group_sums.shape[0] else 1.0),
    )


def _process_share() -> tuple[int, int]:
    """(rank, number of processes) of the running torch.distributed group, else (0, 1).

    Every process computes the same jobs from the same inputs; the tiles are shared out and the
    sums all-reduced (gloo on CPU, nccl on GPU), so each process ends with the one-process sums.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _summed_over_processes(arrays: _PassArrays) -> _PassArrays:
    """Every float64 sum of the pass added over the process group."""
    device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    summed = {}
    for name in _OUTPUTS:
        tensor = torch.from_numpy(np.ascontiguousarray(getattr(arrays, name), dtype=np.float64)).to(device)
        torch.distributed.all_reduce(tensor)
        summed[name] = tensor.cpu().numpy()
    return arrays._replace(**summed)


def _numba_pass(features, arrays: _PassArrays, tiles, tile, device, progress) -> _PassArrays:
    """The tiles shared out to worker threads, each with its own sums (no locks, no barriers)."""
    n = features.shape[0]
    near_fraction = np.array([_NEAR_PAIR_FRACTION], dtype=arrays.weights.dtype)
    norms_np = (features * features).sum(dim=1).numpy()
    features_np = features.numpy()
    features_on_device = features.to(device)
    n_workers = max(1, min(torch.get_num_threads(), len(tiles)))
    accumulators = [arrays._replace(**{name: np.zeros_like(getattr(arrays, name)) for name in _OUTPUTS})
                    for _ in range(n_workers)]  # fmt: skip
    lock = threading.Lock()
    done = [0]

    def work(worker, own):
        for i0, j0 in tiles[worker::n_workers]:
            i1, j1 = min(i0 + tile, n), min(j0 + tile, n)
            gram = (features_on_device[i0:i1] @ features_on_device[j0:j1].T).cpu().numpy()
            _accumulate_tile(
                gram, norms_np[i0:i1], norms_np[j0:j1], features_np[i0:i1], features_np[j0:j1],
                i0, j0, i0 == j0, near_fraction, *own,
            )  # fmt: skip
            if progress is not None:
                with lock:
                    done[0] += 1
                    progress(done[0], len(tiles))

    # One single-threaded matmul + kernel per worker thread, no barrier between them. Each worker
    # takes a fixed share of the tiles (every n_workers-th), so the sums are added in the same
    # order on every run: the same input gives the same bytes out (for a given thread count).
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(n_workers) as pool:
            for future in [pool.submit(work, w, own) for w, own in enumerate(accumulators)]:
                future.result()
    finally:
        torch.set_num_threads(threads_before)
    return arrays._replace(**{name: np.sum([getattr(own, name) for own in accumulators], axis=0) for name in _OUTPUTS})


def _permutation_pvalue(s_ab: np.ndarray, a_rows: np.ndarray, b_rows: np.ndarray,
                        shuffles: np.ndarray) -> float:  # fmt: skip
    """p = (1 + #{T_perm >= T_obs}) / (N + 1), T the part of dCov2_U that a shuffle changes.

    ``s_ab[0]`` is the observed S_ab, ``s_ab[1:]`` those of the shuffles; a shuffle moves the
    metadata row sums with the values. Statistics equal up to rounding count as ties.
    """
    n = a_rows.size
    observed = s_ab[0] - 2.0 * float(a_rows @ b_rows) / (n - 2)
    shuffled = np.empty(shuffles.shape[0])
    for start in range(0, shuffles.shape[0], 256):
        block = shuffles[start : start + 256]
        shuffled[start : start + block.shape[0]] = (
            s_ab[1 + start : 1 + start + block.shape[0]] - 2.0 * (b_rows[block] @ a_rows) / (n - 2)
        )
    tolerance = 1e-9 * (abs(s_ab[0]) + abs(observed))
    extreme = int(np.count_nonzero(shuffled >= observed - tolerance))
    return (1.0 + extreme) / (shuffles.shape[0] + 1.0)


def dcor2(x, y, *, categorical: bool = False) -> float:
    """Bias-corrected squared distance correlation (U-statistic) of features ``x`` and column ``y``.

    The paper's metric; NaN when it is undefined (fewer than 4 rows, or a constant side).
    """
    (result,) = distance_correlation(x, [y], [categorical], dtype=torch.float64)
    return math.nan if result.dcor2_u is None else result.dcor2_u
