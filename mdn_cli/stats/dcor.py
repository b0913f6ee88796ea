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
from typing import Callable, Optional, Sequence

import numba
import numpy as np
import pandas as pd
import scipy.stats
import torch

from mdn_cli.validation import check_finite

# Pairs closer than this fraction of (|x_i|^2 + |x_j|^2) lose precision in the
# |x_i|^2 + |x_j|^2 - 2 x_i.x_j form; their distance is recomputed from the coordinates.
_NEAR_PAIR_FRACTION = 1.0 / 64.0
_DEFAULT_TILE = 1024


@dataclass(frozen=True)
class DcorResult:
    """One distance correlation: both statistics, and a p-value only when a test was run."""

    dcor2_u: Optional[float]
    dcor2_v: Optional[float]
    dcor_v: Optional[float]
    n: int
    n_missing: int
    pvalue: Optional[float]
    test: Optional[str]
    permutations: Optional[int]
    note: Optional[str] = None


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
):  # fmt: skip
    """Distances of one tile from its Gram block, then every row sum, S_aa and S_ab from them.

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
    mirror = 1.0 if diagonal else 2.0
    j0u = np.uint64(j0)
    a = np.empty(tj, dtype=gram.dtype)
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

        for m in range(n_masks):
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

        for r in range(n_jobs):
            m = job_mask[r]
            if i < lo[m] or i >= hi[m] or weights[m, i] == 0:
                continue
            js, je = _tile_range(lo[m], hi[m], j0, tj)
            mask_row = weights[m]
            row = values[r]
            v_i = row[i]
            total = 0.0
            if job_categorical[r]:
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


def _numeric_row_sums(values: np.ndarray) -> np.ndarray:
    """b_i. = sum_j |v_i - v_j| for all i in O(n log n), via sorting and prefix sums."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    n = ordered.size
    prefix = np.concatenate(([0.0], np.cumsum(ordered)))
    rank = np.arange(n)
    below = ordered * rank - prefix[:-1]
    above = (prefix[-1] - prefix[1:]) - ordered * (n - 1 - rank)
    sums = np.empty(n)
    sums[order] = below + above
    return sums


def _metadata_sums(values: np.ndarray, categorical: bool) -> tuple[np.ndarray, float]:
    """Row sums b_i. and S_bb = sum_ij b_ij^2 of one column's distance matrix (masked rows)."""
    n = values.size
    if categorical:
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        row_sums = (n - counts[inverse]).astype(np.float64)
        return row_sums, float(n * n - np.sum(counts.astype(np.float64) ** 2))
    centred = values - values.mean()
    sum_squares = 2.0 * n * float(np.sum(centred**2)) - 2.0 * float(np.sum(centred)) ** 2
    return _numeric_row_sums(values), sum_squares


def _u_centred(s: float, cross: float, total_a: float, total_b: float, n: int) -> float:
    return (s - 2.0 * cross / (n - 2) + total_a * total_b / ((n - 1) * (n - 2))) / (n * (n - 3))


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
    test: Optional[str] = None,
    permutations: int = 999,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    tile_size: int = _DEFAULT_TILE,
    progress: Optional[Callable[[int, int], None]] = None,
    device: torch.device | str = "cpu",
) -> list[DcorResult]:
    """dcor^2 between features ``x`` (n, ...) and each metadata column, in one tiled pass.

    ``columns[k]`` has n values (NaN / None = missing; those rows are left out for that column
    only). ``subsets[k]``, a boolean mask of n, restricts column k to some rows (a stratum); the
    same column may appear several times with different subsets. ``test`` is None,
    "permutation" (``permutations`` seeded shuffles within the used rows, evaluated in the same
    pass) or "t". ``progress(done, total)`` is called after each tile. ``device`` is where the
    feature-distance tiles (the n²·d matmuls) are computed; the accumulation runs on the CPU.
    """
    if test not in (None, "permutation", "t"):
        raise ValueError(f"unknown test {test!r}")
    if len(columns) != len(categorical):
        raise ValueError("columns and categorical differ in length")
    features = _features_matrix(x, dtype)
    n = features.shape[0]
    subsets = list(subsets) if subsets is not None else [None] * len(columns)

    prepared = []
    for column, is_categorical, subset in zip(columns, categorical, subsets):
        values, present = _prepare_column(column, is_categorical)
        if values.shape[0] != n:
            raise ValueError(f"a metadata column has {values.shape[0]} values for {n} feature rows")
        in_subset = np.ones(n, bool) if subset is None else np.asarray(subset, dtype=bool)
        used = present & in_subset
        prepared.append((values, bool(is_categorical), used, int(in_subset.sum() - used.sum())))

    # Rows ordered so that each distinct row subset is (close to) one contiguous range; the
    # kernel then skips everything outside a stratum instead of multiplying it by zero.
    distinct_masks: dict[bytes, int] = {}
    mask_list: list[np.ndarray] = []
    for _, _, used, _ in prepared:
        key = used.tobytes()
        if key not in distinct_masks:
            distinct_masks[key] = len(mask_list)
            mask_list.append(used)
    order = np.lexsort(tuple(~mask for mask in reversed(mask_list))) if mask_list else np.arange(n)

    results: list[Optional[DcorResult]] = [None] * len(prepared)
    jobs = []  # (result index, mask, values in row order, used rows in row order, categorical, n, n_missing)
    rng = np.random.default_rng(seed)
    n_permutations = permutations if test == "permutation" else 0
    for index, (values, is_categorical, used, n_missing) in enumerate(prepared):
        count = int(used.sum())
        note = None
        if count < 4:
            note = f"only {count} rows with a value (needs at least 4)"
        elif np.unique(values[used]).size < 2:
            note = "constant column: distance correlation is undefined"
        if note is not None:
            results[index] = _undefined(count, n_missing, test, n_permutations, note)
            continue
        ordered_used = used[order]
        ordered_values = values[order] if is_categorical else _scaled_numeric(values, used)[order]
        jobs.append((index, distinct_masks[used.tobytes()], ordered_values, ordered_used,
                     is_categorical, count, n_missing))  # fmt: skip

    if jobs:
        if not np.array_equal(order, np.arange(n)):  # a copy only when strata reorder the rows
            features = features[torch.as_tensor(order)]
        _run_jobs(features, mask_list, order, jobs, results, test,
                  n_permutations, rng, dtype, tile_size, progress, torch.device(device))  # fmt: skip
    return results  # type: ignore[return-value]


def _undefined(count: int, n_missing: int, test: Optional[str], n_permutations: int, note: str) -> DcorResult:
    """The result of a column whose dcor² is not defined on its rows, with the reason."""
    return DcorResult(None, None, None, count, n_missing, None, test,
                      n_permutations if test == "permutation" else None, note)  # fmt: skip


def _run_jobs(features, mask_list, order, jobs, results, test, n_permutations, rng, dtype,
              tile_size, progress, device):  # fmt: skip
    """Build the kernel's arrays, run the pass over upper-triangle tiles, finish each job."""
    n = features.shape[0]
    np_dtype = np.float32 if dtype == torch.float32 else np.float64
    used_masks = sorted({mask for _, mask, *_ in jobs})
    mask_index = {mask: k for k, mask in enumerate(used_masks)}
    weights = np.stack([mask_list[m][order] for m in used_masks]).astype(np_dtype)
    positions = [np.flatnonzero(w) for w in weights]
    lo = np.array([p[0] for p in positions], dtype=np.int64)
    hi = np.array([p[-1] + 1 for p in positions], dtype=np.int64)
    dense = np.array([p.size == h - l for p, l, h in zip(positions, lo, hi)], dtype=np.bool_)

    # Each job owns 1 + n_permutations rows of values_all: its values, then each shuffle of them,
    # written straight in the kernel's dtype.
    per_job = 1 + n_permutations
    values_all = np.empty((len(jobs) * per_job, n), dtype=np_dtype)
    job_slices, job_permutations = [], []
    for k, (_, _, values, used, _, _, _) in enumerate(jobs):
        rows = np.flatnonzero(used)
        start = k * per_job
        values_all[start] = values
        shuffles = np.empty((n_permutations, rows.size), dtype=np.int32)
        for p in range(n_permutations):
            shuffles[p] = rng.permutation(rows.size)
            values_all[start + 1 + p] = values
            values_all[start + 1 + p, rows] = values[rows[shuffles[p]]]
        job_permutations.append(shuffles)
        job_slices.append(slice(start, start + per_job))
    job_mask_arr = np.repeat(np.array([mask_index[job[1]] for job in jobs], dtype=np.int64), per_job)
    job_categorical_arr = np.repeat(np.array([job[4] for job in jobs], dtype=np.bool_), per_job)

    near_fraction = np.array([_NEAR_PAIR_FRACTION], dtype=np_dtype)
    tile = max(16, min(tile_size, n))
    norms_np = (features * features).sum(dim=1).numpy()
    features_np = features.numpy()
    features_on_device = features.to(device)
    starts = range(0, n, tile)
    tiles = [(i0, j0) for i0 in starts for j0 in starts if j0 >= i0]
    # Tiles that no mask touches (strata far from each other in row order) are skipped.
    tiles = [(i0, j0) for i0, j0 in tiles
             if ((lo < i0 + tile) & (hi > i0) & (lo < j0 + tile) & (hi > j0)).any()]  # fmt: skip
    n_workers = max(1, min(torch.get_num_threads(), len(tiles)))
    accumulators = [
        (np.zeros((len(used_masks), n)), np.zeros(len(used_masks)), np.zeros(values_all.shape[0]))
        for _ in range(n_workers)
    ]
    lock = threading.Lock()
    done = [0]

    def work(worker, rowsum, saa, sab):
        for i0, j0 in tiles[worker::n_workers]:
            i1, j1 = min(i0 + tile, n), min(j0 + tile, n)
            gram = (features_on_device[i0:i1] @ features_on_device[j0:j1].T).cpu().numpy()
            _accumulate_tile(
                gram, norms_np[i0:i1], norms_np[j0:j1], features_np[i0:i1], features_np[j0:j1],
                i0, j0, i0 == j0, near_fraction, weights, lo, hi, dense, values_all, job_mask_arr,
                job_categorical_arr, rowsum, saa, sab,
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
            for future in [pool.submit(work, w, *accumulator) for w, accumulator in enumerate(accumulators)]:
                future.result()
    finally:
        torch.set_num_threads(threads_before)
    rowsum, saa, sab = (np.sum([acc[k] for acc in accumulators], axis=0) for k in range(3))
    rowsum *= weights  # column sums were added for every row; keep the rows each mask uses

    for (index, mask, values, used, is_categorical, count, n_missing), rows_slice, shuffles in zip(
        jobs, job_slices, job_permutations
    ):
        m = mask_index[mask]
        rows = np.flatnonzero(used)
        a_rows = rowsum[m, rows]
        total_a = float(a_rows.sum())
        b_rows, s_bb = _metadata_sums(values[rows].astype(np_dtype).astype(np.float64),
                                      is_categorical)  # fmt: skip
        total_b = float(b_rows.sum())
        cross = float(a_rows @ b_rows)
        s_ab = float(sab[rows_slice.start])
        s_aa = float(saa[m])
        cross_aa, cross_bb = float(a_rows @ a_rows), float(b_rows @ b_rows)
        var_a_u = _u_centred(s_aa, cross_aa, total_a, total_a, count)
        var_b_u = _u_centred(s_bb, cross_bb, total_b, total_b, count)
        if var_a_u <= 0 or var_b_u <= 0:
            note = "constant features on these rows" if var_a_u <= 0 else "constant column"
            results[index] = _undefined(count, n_missing, test, n_permutations, note)
            continue
        dcor2_u = _u_centred(s_ab, cross, total_a, total_b, count) / math.sqrt(var_a_u * var_b_u)
        var_a_v = _v_centred(s_aa, cross_aa, total_a, total_a, count)
        var_b_v = _v_centred(s_bb, cross_bb, total_b, total_b, count)
        dcor2_v = _v_centred(s_ab, cross, total_a, total_b, count) / math.sqrt(var_a_v * var_b_v)
        pvalue = None
        if test == "t":
            pvalue = dcor_t_test(dcor2_u, count)
        elif test == "permutation":
            pvalue = _permutation_pvalue(sab[rows_slice], a_rows, b_rows, shuffles)
        results[index] = DcorResult(
            dcor2_u=dcor2_u,
            dcor2_v=dcor2_v,
            dcor_v=math.sqrt(max(dcor2_v, 0.0)),
            n=count,
            n_missing=n_missing,
            pvalue=pvalue,
            test=test,
            permutations=n_permutations if test == "permutation" else None,
        )


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
