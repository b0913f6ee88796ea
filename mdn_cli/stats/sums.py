"""What one tiled pass leaves for each metadata job, and the U- and V-centred inner products made of it.

Kept apart from the pass so that partial dcor and the jackknife build on the same sums
without importing it (and without an n x n matrix anywhere). ``_jobs.job_sums`` fills these
from the pass's outputs (``_pass_arrays.OUTPUTS``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np


def u_product(s, cross, total_a, total_b, n):
    """(A~ . B~) of two U-centred distance matrices from S_ab, sum_i a_i. b_i. and the totals.

    Works elementwise on arrays (the jackknife's leave-one-out values). Sums that overflowed
    (features of a diverging model) give NaN, without numpy's warning.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        return (s - 2.0 * cross / (n - 2) + total_a * total_b / ((n - 1) * (n - 2))) / (n * (n - 3))


def v_product(s, cross, total_a, total_b, n):
    """(A . B) / n^2 of two double-centred distance matrices (the V-statistic), from the same sums."""
    with np.errstate(invalid="ignore", over="ignore"):
        return s / n**2 - 2.0 * cross / n**3 + total_a * total_b / n**4


@dataclass
class RowSums:
    """Per-row sums of one job for the jackknife, on the job's rows.

    ``ab`` = sum_j a_kj b_kj (output ``rowprod``), ``a_b`` = sum_j a_kj b_j. (``linear_out``),
    ``aa`` = sum_j a_kj^2 (``rowsq``), ``a_a`` = sum_j a_kj a_j. (``linear_out`` of the second
    pass); with clusters, ``groups`` (codes 0..g-1 on these rows), ``a_groups`` (n, g) = sum of
    a_kj over each cluster's rows j (``group_sums``), and the ``*_within`` products over k's own
    cluster (``rowprod_within``, ``rowsq_within``).
    """

    ab: np.ndarray
    a_b: np.ndarray
    aa: np.ndarray
    a_a: np.ndarray
    groups: Optional[np.ndarray] = None
    a_groups: Optional[np.ndarray] = None
    ab_within: Optional[np.ndarray] = None
    aa_within: Optional[np.ndarray] = None


@dataclass
class JobSums:
    """One metadata column on its rows: feature side (a), column side (b), S_ab per shuffle.

    ``values`` are the column's values as the kernel saw them; shuffle p puts the value of row
    ``shuffles[p, i]`` on row i, so the column's row sums move the same way.
    """

    n: int
    values: np.ndarray
    categorical: bool
    a_rows: np.ndarray
    s_aa: float
    b_rows: np.ndarray
    s_bb: float
    s_ab: np.ndarray
    shuffles: np.ndarray
    rows: Optional[RowSums] = None

    def dcov(self, shuffle: Optional[int] = None) -> float:
        """dCov²_U of features and column, observed (None) or under shuffle ``shuffle``."""
        b_rows = self.b_rows if shuffle is None else self.b_rows[self.shuffles[shuffle]]
        s = self.s_ab[0 if shuffle is None else 1 + shuffle]
        return float(u_product(s, self.a_rows @ b_rows, self.a_rows.sum(), self.b_rows.sum(), self.n))

    @property
    def var_a(self) -> float:
        return float(u_product(self.s_aa, self.a_rows @ self.a_rows, self.a_rows.sum(), self.a_rows.sum(), self.n))

    @property
    def var_b(self) -> float:
        return float(u_product(self.s_bb, self.b_rows @ self.b_rows, self.b_rows.sum(), self.b_rows.sum(), self.n))

    def permutation_pvalue(self) -> float:
        """p = (1 + #{T_perm >= T_obs}) / (N + 1), T the part of dCov2_U that a shuffle changes.

        ``s_ab[0]`` is the observed S_ab, ``s_ab[1:]`` those of the shuffles; a shuffle moves the
        metadata row sums with the values. Statistics equal up to rounding count as ties.
        """
        s_ab, a_rows, b_rows, shuffles = self.s_ab, self.a_rows, self.b_rows, self.shuffles
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
