"""The numba kernel of the tiled pass: one tile's distances, then every sum of the pass from them.

After the tile's own arguments it takes the pass arrays by name, ``_pass_arrays.INPUTS`` then
``OUTPUTS``, and the pass calls it with keywords: a new output is a new parameter here and its
arithmetic.
"""

from __future__ import annotations

import numba
import numpy as np

from mdn_cli.stats._jit import CACHE


@numba.njit(cache=CACHE, inline="always")
def _tile_range(lo, hi, j0, tj):
    """The columns of a tile inside [lo, hi), as unsigned bounds.

    Unsigned indices spare numba's negative-index wraparound check, which otherwise blocks
    vectorisation of the inner loops (a 5x difference).
    """
    start = max(lo - j0, 0)
    stop = max(min(hi - j0, tj), start)
    return np.uint64(start), np.uint64(stop)


@numba.njit(fastmath=True, cache=CACHE, nogil=True)
def accumulate_tile(
    gram, norms_i, norms_j, x_i, x_j, i0, j0, diagonal, near_fraction,
    weights, lo, hi, dense, values, job_mask, job_categorical, job_rows, linear, linear_mask, groups,
    rowsum, saa, sab, rowprod, rowprod_within, rowsq, rowsq_within, linear_out, group_sums,
):  # fmt: skip
    """Distances of one tile from its Gram block, then every row sum, S_aa and S_ab from them.

    The jackknife's per-row sums are optional (empty arrays skip them): for jobs with
    ``job_rows[r] >= 0``, ``rowprod[job_rows[r], i]`` = sum_j a_ij b_ij; per mask, ``rowsq`` =
    sum_j a_ij^2; ``linear_out[l, i]`` = sum_j a_ij linear[l, j] (weights zero off the mask);
    with cluster ids ``groups``, ``group_sums[m, i, g]`` = sum over j in cluster g of a_ij and
    ``*_within`` the row products over j in i's own cluster. Mirror halves are added to the
    rows of J unweighted: the pass multiplies every per-row array by its mask afterwards
    (``_pass_arrays.masked``).
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
