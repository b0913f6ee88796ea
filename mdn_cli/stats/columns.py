"""Exact sums over the distance matrices of metadata columns, in O(n log n) and O(n) memory.

Partial distance correlation, its permutation test and the jackknife need, between two 1-D
columns u and v (numeric: |u_i - u_j|; categorical: [u_i != u_j]), the per-row products
r_k = sum_j d_u(k, j) d_v(k, j) and weighted row sums sum_j d_u(k, j) w_j. Sorting and prefix
sums (numeric) or category counts (categorical) give them without any n x n array, so a
permutation of a column costs O(n log n) rather than a tiled O(n^2) pass.
"""

from __future__ import annotations

import numba
import numpy as np

from mdn_cli.stats._jit import CACHE


@numba.njit(cache=CACHE)
def _fenwick_add(tree, position, values):
    position += 1
    while position < tree.shape[0]:
        for m in range(values.shape[0]):
            tree[position, m] += values[m]
        position += position & -position


@numba.njit(cache=CACHE)
def _fenwick_prefix(tree, position, out):
    """Sums of the entries at ranks < ``position`` into ``out``."""
    out[:] = 0.0
    while position > 0:
        for m in range(out.shape[0]):
            out[m] += tree[position, m]
        position -= position & -position


@numba.njit(cache=CACHE)
def _numeric_products_one_way(u, v, order, v_rank, n_ranks, out):
    """Adds to ``out[k]`` the sum over j with u_j < u_k of |u_k - u_j||v_k - v_j|.

    |u_k - u_j||v_k - v_j| = sign(v_k - v_j)(u_k - u_j)(v_k - v_j), expanded into the moments
    (1, v_j, u_j, u_j v_j) of the earlier rows below and above v_k, kept in a Fenwick tree over
    the ranks of v. Rows with equal u are queried before any of them is inserted (their terms are 0).
    """
    n = u.shape[0]
    tree = np.zeros((n_ranks + 1, 4))
    total = np.zeros(4)
    below = np.empty(4)
    upto = np.empty(4)
    moments = np.empty(4)
    start = 0
    while start < n:
        stop = start
        while stop < n and u[order[stop]] == u[order[start]]:
            stop += 1
        for p in range(start, stop):
            k = order[p]
            _fenwick_prefix(tree, v_rank[k], below)
            _fenwick_prefix(tree, v_rank[k] + 1, upto)
            uk, vk = u[k], v[k]
            for m in range(4):
                above = total[m] - upto[m]
                moments[m] = below[m] - above
            signed = uk * vk * moments[0] - uk * moments[1] - vk * moments[2] + moments[3]
            out[k] += signed
        for p in range(start, stop):
            k = order[p]
            moments[0] = 1.0
            moments[1] = v[k]
            moments[2] = u[k]
            moments[3] = u[k] * v[k]
            _fenwick_add(tree, v_rank[k], moments)
            for m in range(4):
                total[m] += moments[m]
        start = stop


def _numeric_products(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """r_k = sum_j |u_k - u_j||v_k - v_j| for every k: two sweeps (u_j < u_k, then u_j > u_k)."""
    _, v_rank = np.unique(v, return_inverse=True)
    v_rank = v_rank.astype(np.int64)
    n_ranks = int(v_rank.max()) + 1 if v.size else 0
    out = np.zeros(u.size)
    order = np.argsort(u, kind="stable")
    _numeric_products_one_way(u, v, order, v_rank, n_ranks, out)
    # u_j > u_k is u_j < u_k for -u; the product of the distances does not change.
    _numeric_products_one_way(-u, v, order[::-1].copy(), v_rank, n_ranks, out)
    return out


def numeric_row_sums(values: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """sum_j |v_k - v_j| w_j for every k (w = 1 when None), via sorting and prefix sums."""
    weights = np.ones(values.size) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ordered, w = values[order], weights[order]
    below_w = np.concatenate(([0.0], np.cumsum(w)))
    below_vw = np.concatenate(([0.0], np.cumsum(ordered * w)))
    left = ordered * below_w[:-1] - below_vw[:-1]  # ties before k contribute 0 either way
    right = (below_vw[-1] - below_vw[1:]) - ordered * (below_w[-1] - below_w[1:])
    sums = np.empty(values.size)
    sums[order] = left + right
    return sums


def distance_sums(values: np.ndarray, categorical: bool) -> tuple[np.ndarray, float]:
    """Row sums b_i. and S_bb = sum_ij b_ij^2 of one column's distance matrix, in closed form."""
    n = values.size
    if categorical:
        _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
        row_sums = (n - counts[inverse]).astype(np.float64)
        return row_sums, float(n * n - np.sum(counts.astype(np.float64) ** 2))
    centred = values - values.mean()
    sum_squares = 2.0 * n * float(np.sum(centred**2)) - 2.0 * float(np.sum(centred)) ** 2
    return numeric_row_sums(values), sum_squares


def _codes(values: np.ndarray) -> np.ndarray:
    return np.unique(values, return_inverse=True)[1].reshape(-1)


def weighted_row_sums(values: np.ndarray, categorical: bool, weights: np.ndarray) -> np.ndarray:
    """sum_j d(k, j) w_j for one column's distance d (numeric |.|, categorical [!=])."""
    if categorical:
        codes = _codes(values)
        return weights.sum() - np.bincount(codes, weights=weights)[codes]
    return numeric_row_sums(values, weights)


def row_products(u: np.ndarray, u_categorical: bool, v: np.ndarray, v_categorical: bool) -> np.ndarray:
    """r_k = sum_j d_u(k, j) d_v(k, j) for every row k of two columns on the same rows.

    Categorical x numeric: all pairs minus the pairs inside u's category; categorical x
    categorical: n - n_u(k) - n_v(k) + n_uv(k) from counts.
    """
    if u_categorical and v_categorical:
        cu, cv = _codes(u), _codes(v)
        joint = _codes(cu * (cv.max() + 1) + cv)
        count = lambda codes: np.bincount(codes)[codes].astype(np.float64)  # noqa: E731
        return u.size - count(cu) - count(cv) + count(joint)
    if u_categorical or v_categorical:
        categories, numbers = (u, v) if u_categorical else (v, u)
        codes = _codes(categories)
        within = np.empty(numbers.size)
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        for rows in np.split(order, bounds):
            within[rows] = numeric_row_sums(numbers[rows])
        return numeric_row_sums(numbers) - within
    return _numeric_products(np.asarray(u, np.float64), np.asarray(v, np.float64))


def group_row_sums(values: np.ndarray, categorical: bool, groups: np.ndarray) -> np.ndarray:
    """(n, g): sum of d(k, l) over the rows l of each cluster (codes 0..g-1 in ``groups``)."""
    n_groups = int(groups.max()) + 1
    if categorical:
        codes = _codes(values)
        counts = np.zeros((int(codes.max()) + 1, n_groups))
        np.add.at(counts, (codes, groups), 1.0)
        return np.bincount(groups, minlength=n_groups)[None, :] - counts[codes]
    out = np.empty((values.size, n_groups))
    for g in range(n_groups):
        members = np.sort(values[groups == g])
        prefix = np.concatenate(([0.0], np.cumsum(members)))
        below = np.searchsorted(members, values, side="left")
        out[:, g] = values * below - prefix[below] + (prefix[-1] - prefix[below]) - values * (members.size - below)
    return out


def within_products(u: np.ndarray, u_categorical: bool, v: np.ndarray, v_categorical: bool,
                    groups: np.ndarray) -> np.ndarray:  # fmt: skip
    """Per row k: sum of d_u(k, l) d_v(k, l) over the rows l of k's own cluster."""
    out = np.empty(u.size)
    for g in range(int(groups.max()) + 1):
        rows = np.flatnonzero(groups == g)
        out[rows] = row_products(u[rows], u_categorical, v[rows], v_categorical)
    return out
