"""The torch engine of the tiled pass: the numba kernel's sums on any device, in float64.

Same arrays in and out as ``_kernel.accumulate_tile`` (``_pass_arrays.PassArrays``, every
output of ``OUTPUTS``), so everything built on the sums (dcor², permutations, partial dcor,
jackknife) works unchanged. On a GPU the distance tiles, the metadata shuffles and every sum
stay on the device; only the per-row and per-job sums come back at the end. Masks are applied
as 0/1 weights on both sides of a tile, which gives the numba kernel's sums once the pass has
weighted the per-row arrays (``_pass_arrays.masked``).
"""

from __future__ import annotations

import numpy as np
import torch

from mdn_cli.stats._pass_arrays import OUTPUT_NAMES, PassArrays

# Elements of one (jobs x tile x tile) block of metadata distances.
_BLOCK_ELEMENTS = 1 << 22


def accumulate(features: np.ndarray, arrays: PassArrays, tiles, tile: int, device: str, progress,
               near_fraction: float) -> PassArrays:  # fmt: skip
    """Every output of one pass over ``tiles`` (upper-triangle (i0, j0) pairs) on ``device``."""
    n = features.shape[0]
    x = torch.from_numpy(features).to(device)
    dtype = x.dtype
    f64 = torch.float64
    x64 = x.to(f64)
    norms = (x * x).sum(dim=1)
    put = lambda array, kind=None: torch.as_tensor(array, device=device, dtype=kind)  # noqa: E731
    weights, values, linear = put(arrays.weights, dtype), put(arrays.values, dtype), put(arrays.linear, dtype)
    out = {name: put(getattr(arrays, name), f64).zero_() for name in OUTPUT_NAMES}
    collect_squares = arrays.rowsq.shape[0] > 0
    collect_groups = arrays.group_sums.shape[0] > 0
    groups = put(arrays.groups, torch.long)
    n_groups = arrays.group_sums.shape[2]

    # Jobs in blocks of one mask and one kind; the rows that collect per-row sums, and where.
    blocks = []
    for m in range(weights.shape[0]):
        for categorical in (False, True):
            members = [r for r in range(values.shape[0]) if arrays.job_mask[r] == m and bool(arrays.job_categorical[r]) == categorical]
            if members:
                blocks.append((m, categorical, put(members, torch.long), put(arrays.job_rows[members], torch.long)))
    linear_by_mask = [put([l for l in range(linear.shape[0]) if arrays.linear_mask[l] == m], torch.long)
                      for m in range(weights.shape[0])]  # fmt: skip

    for done, (i0, j0) in enumerate(tiles, start=1):
        i1, j1 = min(i0 + tile, n), min(j0 + tile, n)
        diagonal = i0 == j0
        squared = norms[i0:i1, None] + norms[None, j0:j1] - 2.0 * (x[i0:i1] @ x[j0:j1].T)
        a = squared.clamp_min(0.0).sqrt()
        near = torch.nonzero(squared < near_fraction * (norms[i0:i1, None] + norms[None, j0:j1]))
        if near.shape[0]:  # cancellation in |x_i|^2 + |x_j|^2 - 2 x_i.x_j: from the coordinates
            exact = (x64[i0 + near[:, 0]] - x64[j0 + near[:, 1]]).square().sum(dim=1).sqrt()
            a[near[:, 0], near[:, 1]] = exact.to(dtype)
        if diagonal:
            a.fill_diagonal_(0.0)
        mirror = 1.0 if diagonal else 2.0
        same = (groups[i0:i1, None] == groups[None, j0:j1]) if collect_groups else None

        def add_rows(target, block, index=None):
            """Row sums of ``block`` to rows I, and (off the diagonal) column sums to rows J."""
            rows = target if index is None else target[index]
            rows[..., i0:i1] += block.sum(dim=-1, dtype=f64)
            if not diagonal:
                rows[..., j0:j1] += block.sum(dim=-2, dtype=f64)
            if index is not None:
                target[index] = rows

        masked = []
        for m in range(weights.shape[0]):
            w_i, w_j = weights[m, i0:i1], weights[m, j0:j1]
            a_m = a * w_i[:, None] * w_j[None, :]
            masked.append(a_m)
            if out["saa"].numel():
                out["saa"][m] += mirror * (a_m * a_m).sum(dtype=f64)
                add_rows(out["rowsum"][m], a_m)
            if collect_squares:
                add_rows(out["rowsq"][m], a_m * a)
            if collect_groups:
                a64 = a_m.to(f64)
                one_hot_i = torch.nn.functional.one_hot(groups[i0:i1], n_groups).to(f64)
                one_hot_j = torch.nn.functional.one_hot(groups[j0:j1], n_groups).to(f64)
                out["group_sums"][m, i0:i1] += a64 @ one_hot_j
                if not diagonal:
                    out["group_sums"][m, j0:j1] += a64.T @ one_hot_i
                add_rows(out["rowsq_within"][m], a_m * a * same)
            chosen = linear_by_mask[m]
            if chosen.numel():
                w = linear[chosen].to(f64)
                a64 = a_m.to(f64)
                out["linear_out"][chosen, i0:i1] += (a64 @ w[:, j0:j1].T).T
                if not diagonal:
                    out["linear_out"][chosen, j0:j1] += (a64.T @ w[:, i0:i1].T).T

        step = max(1, _BLOCK_ELEMENTS // ((i1 - i0) * (j1 - j0)))
        for m, categorical, members, job_rows in blocks:
            for start in range(0, members.numel(), step):
                rows, collect = members[start : start + step], job_rows[start : start + step]
                v_i, v_j = values[rows, i0:i1, None], values[rows, None, j0:j1]
                distance = (v_i != v_j).to(dtype) if categorical else (v_i - v_j).abs()
                products = distance * masked[m]
                out["sab"][rows] += mirror * products.sum(dim=(1, 2), dtype=f64)
                wanted = collect >= 0
                if wanted.any():
                    targets = collect[wanted]
                    add_rows(out["rowprod"], products[wanted], targets)
                    if collect_groups:
                        add_rows(out["rowprod_within"], products[wanted] * same, targets)
        if progress is not None:
            progress(done, len(tiles))
    return arrays._replace(**{name: tensor.cpu().numpy() for name, tensor in out.items()})
