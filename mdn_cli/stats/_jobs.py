"""Metadata columns as jobs of one tiled pass, and each job's sums after it.

A job is one column on one row mask, in the pass's row order. It owns a value row of the pass
and one more per shuffle (the permutation test in the same pass). With intervals the pass also
collects the jackknife's per-row sums, and a second pass gets sum_j a_kj a_j., which needs
every feature row sum a_j. first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from mdn_cli.stats._pass_arrays import PassArrays, Sizes, pass_arrays
from mdn_cli.stats._tiled import Tiles, tile_pass
from mdn_cli.stats.columns import distance_sums
from mdn_cli.stats.sums import JobSums, RowSums

_GROUP_SUMS_LIMIT = 1 << 26  # float64 values of per-row cluster sums (512 MB)


@dataclass
class Job:
    """One metadata column on one row mask, in row order, as the pass sees it."""

    mask: int
    values: np.ndarray
    used: np.ndarray
    categorical: bool
    shuffle_group: int


def draw_shuffles(count: int, blocks: Optional[np.ndarray], n_permutations: int, rng) -> np.ndarray:
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


def job_sums(features: np.ndarray, mask_list, order, jobs: list[Job], n_permutations: int, rng,
             blocks: Optional[np.ndarray], collect: bool, groups: Optional[np.ndarray], options: Tiles) -> list[JobSums]:  # fmt: skip
    """Every job's sums from one pass over the tiles (two with ``collect``, for intervals).

    ``mask_list`` are the distinct row masks in input order, ``order`` the pass's row order;
    ``blocks`` and ``groups`` (block and cluster codes) are in the pass's order already.
    """
    n = features.shape[0]
    np_dtype = options.dtype
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
            drawn[job.shuffle_group] = draw_shuffles(rows.size, None if blocks is None else blocks[rows], n_permutations, rng)
        shuffles = drawn[job.shuffle_group]
        start = k * per_job
        values_all[start] = job.values
        for p in range(n_permutations):
            values_all[start + 1 + p] = job.values
            values_all[start + 1 + p, rows] = job.values[rows[shuffles[p]]]
        job_rows.append(rows)
        job_shuffles.append(shuffles)
        seen = job.values[rows].astype(np_dtype).astype(np.float64)
        column_sums.append((seen, *distance_sums(seen, job.categorical)))
    job_mask = np.array([mask_index[job.mask] for job in jobs], dtype=np.int64)

    clustered = collect and groups is not None
    n_groups = int(groups.max()) + 1 if clustered else 1
    if clustered and n_masks * n * n_groups > _GROUP_SUMS_LIMIT:
        raise ValueError(f"the cluster jackknife keeps {n_masks} x {n} x {n_groups} sums (row x cluster per "
                         f"stratum), over the limit of {_GROUP_SUMS_LIMIT}: use fewer clusters or strata")  # fmt: skip
    linear = np.zeros((len(jobs) if collect else 0, n), dtype=np_dtype)
    for k, rows in enumerate(job_rows if collect else []):
        linear[k, rows] = column_sums[k][1]
    value_rows = np.arange(values_all.shape[0])
    sizes = Sizes(n=n, masks=n_masks, values=values_all.shape[0], jobs=len(jobs), linear=linear.shape[0],
                  groups=n_groups, intervals=collect, clustered=clustered)  # fmt: skip
    arrays = pass_arrays(
        sizes, weights=weights, lo=lo, hi=hi, dense=dense, values=values_all, job_mask=np.repeat(job_mask, per_job),
        job_categorical=np.repeat(np.array([job.categorical for job in jobs], dtype=np.bool_), per_job),
        job_rows=np.where(value_rows % per_job == 0, value_rows // per_job, -1) if collect else np.full(value_rows.size, -1, dtype=np.int64),
        linear=linear, linear_mask=job_mask if collect else np.zeros(0, np.int64),
        groups=groups.astype(np.int64) if clustered else np.zeros(0, np.int64),
    )  # fmt: skip
    sums = tile_pass(features, arrays, options)
    # Second pass: sum_j a_kj a_j. per mask (the linear sums with the row sums as weights).
    a_a = tile_pass(features, _row_sums_pass(sums, np_dtype), options).linear_out if collect else None

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


def _row_sums_pass(first: PassArrays, np_dtype) -> PassArrays:
    """A pass with no jobs and no mask sums: one linear sum per mask, weighted by its row sums."""
    n_masks, n = first.weights.shape
    sizes = Sizes(n=n, masks=0, values=0, jobs=0, linear=n_masks, groups=1, intervals=False, clustered=False)
    return pass_arrays(
        sizes, weights=first.weights, lo=first.lo, hi=first.hi, dense=first.dense, values=np.zeros((0, n), np_dtype),
        job_mask=np.zeros(0, np.int64), job_categorical=np.zeros(0, np.bool_), job_rows=np.zeros(0, np.int64),
        linear=first.rowsum.astype(np_dtype), linear_mask=np.arange(n_masks, dtype=np.int64), groups=np.zeros(0, np.int64),
    )  # fmt: skip
