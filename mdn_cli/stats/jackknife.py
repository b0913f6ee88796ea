"""Jackknife intervals for dcor² and partial dcor² from per-row sums of the same tile pass.

Leaving row k out of a U-product needs, besides the totals, only per-row sums: with
r_k = sum_j a_kj b_kj, p_k = sum_j a_kj b_j. and q_k = sum_j b_kj a_j.,
    S' = S - 2 r_k,  a..' = a.. - 2 a_k.,  sum_i a_i.' b_i.' = C - a_k. b_k. - p_k - q_k + r_k
(the row sums lose a_ik), and dCov²_U' is the U-product of these on n - 1 rows. Leaving a
cluster G out adds back the pairs inside G and needs a_iG = sum_{l in G} a_il for every row:
    S' = S - 2 R_G + W_G,  a..' = a.. - 2 a_G + A_GG,
    C' = C - C_G - (Q_G - Q_in) - (P_G - P_in) + (X_G - X_in),  X_G = sum_i a_iG b_iG,
with R_G, P_G, Q_G, C_G the sums over G of r, p, q, a_k. b_k. and the *_in terms the same sums
over i in G only. The feature side of these comes from the pass (and sum_j a_kj a_j. from a
second one), the column side from exact column sums (stats.columns). The interval is normal,
estimate ± z se_jack, clipped to [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist  # its inverse CDF is accurate to 1e-15, as scipy's
from typing import Optional

import numpy as np

from mdn_cli.stats.columns import group_row_sums, row_products, weighted_row_sums, within_products
from mdn_cli.stats.partial import PartialSums, partial_from_products
from mdn_cli.stats.sums import JobSums, u_product


@dataclass
class Pair:
    """Two distance matrices a, b on the same rows, by the sums their deleted U-products need.

    ``ab`` = sum_j a_kj b_kj, ``a_b`` = sum_j a_kj b_j., ``b_a`` = sum_j b_kj a_j. per row;
    for clusters also (n, g) sums per cluster and the products inside each row's cluster.
    """

    s: float
    a_rows: np.ndarray
    b_rows: np.ndarray
    ab: np.ndarray
    a_b: np.ndarray
    b_a: np.ndarray
    a_groups: Optional[np.ndarray] = None
    b_groups: Optional[np.ndarray] = None
    ab_within: Optional[np.ndarray] = None

    def deleted(self, groups: Optional[np.ndarray] = None) -> np.ndarray:
        """dCov²_U without each row (groups None) or without each cluster."""
        n = self.a_rows.size
        total_a, total_b = self.a_rows.sum(), self.b_rows.sum()
        cross = float(self.a_rows @ self.b_rows)
        if groups is None:
            kept_cross = cross - self.a_rows * self.b_rows - self.a_b - self.b_a + self.ab
            return u_product(self.s - 2.0 * self.ab, kept_cross, total_a - 2.0 * self.a_rows,
                             total_b - 2.0 * self.b_rows, n - 1)  # fmt: skip
        by = lambda weights: np.bincount(groups, weights=weights)  # noqa: E731
        own = np.arange(n), groups
        a_own, b_own = self.a_groups[own], self.b_groups[own]  # sums over the row's own cluster
        kept_cross = (cross - by(self.a_rows * self.b_rows) - (by(self.b_a) - by(self.a_rows * b_own))
                      - (by(self.a_b) - by(a_own * self.b_rows))
                      + ((self.a_groups * self.b_groups).sum(axis=0) - by(a_own * b_own)))  # fmt: skip
        return u_product(self.s - 2.0 * by(self.ab) + by(self.ab_within), kept_cross,
                         total_a - 2.0 * by(self.a_rows) + by(a_own), total_b - 2.0 * by(self.b_rows) + by(b_own),
                         n - np.bincount(groups))  # fmt: skip


def _features_pair(job: JobSums) -> Pair:
    rows = job.rows
    return Pair(job.s_aa, job.a_rows, job.a_rows, rows.aa, rows.a_a, rows.a_a, rows.a_groups, rows.a_groups, rows.aa_within)


def _features_column_pair(job: JobSums) -> Pair:
    rows = job.rows
    b_groups = None if rows.groups is None else group_row_sums(job.values, job.categorical, rows.groups)
    return Pair(float(job.s_ab[0]), job.a_rows, job.b_rows, rows.ab, rows.a_b,
                weighted_row_sums(job.values, job.categorical, job.a_rows), rows.a_groups, b_groups, rows.ab_within)  # fmt: skip


def _columns_pair(u: JobSums, v: JobSums) -> Pair:
    """Two columns on the same rows (u is v for a column's own variance)."""
    groups = u.rows.groups
    products = row_products(u.values, u.categorical, v.values, v.categorical)
    clustered = groups is not None
    return Pair(
        float(products.sum()), u.b_rows, v.b_rows, products,
        weighted_row_sums(u.values, u.categorical, v.b_rows), weighted_row_sums(v.values, v.categorical, u.b_rows),
        group_row_sums(u.values, u.categorical, groups) if clustered else None,
        group_row_sums(v.values, v.categorical, groups) if clustered else None,
        within_products(u.values, u.categorical, v.values, v.categorical, groups) if clustered else None,
    )  # fmt: skip


def _ratio(cross: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    scale = first * second
    return np.divide(cross, np.sqrt(np.abs(scale)), out=np.full_like(cross, np.nan), where=scale > 0)


def deleted_dcor2(job: JobSums) -> np.ndarray:
    """dcor²_U without each row (or cluster); NaN where a deleted variance is not positive."""
    groups = job.rows.groups
    return _ratio(_features_column_pair(job).deleted(groups), _features_pair(job).deleted(groups),
                  _columns_pair(job, job).deleted(groups))  # fmt: skip


def deleted_partial(partial: PartialSums) -> np.ndarray:
    """pdcor* without each row (or cluster), from the six deleted U-products."""
    y, z = partial.y, partial.z
    groups = y.rows.groups
    aa, bb, cc = (pair.deleted(groups) for pair in (_features_pair(y), _columns_pair(y, y), _columns_pair(z, z)))
    ab, ac, bc = (pair.deleted(groups) for pair in (_features_column_pair(y), _features_column_pair(z), _columns_pair(y, z)))
    values = partial_from_products(aa, bb, cc, ab, ac, bc)
    return np.where((aa > 0) & (bb > 0) & (cc > 0), values, np.nan)


def jackknife_interval(estimate: float, deleted: np.ndarray, level: float) -> Optional[tuple[float, float]]:
    """estimate ± z se, se² = (m-1)/m sum (theta_(k) - mean)² over the m deleted values.

    None when a deleted value is undefined or there are fewer than 2 clusters.
    """
    if deleted.size < 2 or not np.isfinite(deleted).all():
        return None
    m = deleted.size
    se = math.sqrt((m - 1) / m * float(np.sum((deleted - deleted.mean()) ** 2)))
    half = NormalDist().inv_cdf(0.5 + level / 2.0) * se
    return max(-1.0, estimate - half), min(1.0, estimate + half)
