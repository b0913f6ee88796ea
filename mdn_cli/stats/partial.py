"""Partial distance correlation pdcor*(x, y; z) and its permutation test (Székely & Rizzo 2014).

With R* the bias-corrected dcor² (inner products of U-centred distance matrices A, B, C of
features x, column y, given column z):
    pdcor*(x, y; z) = (R*xy - R*xz R*yz) / sqrt((1 - R*xz²)(1 - R*yz²)), 0 if a factor vanishes,
the cosine of the projections P_x = A - (A.C / C.C) C and P_y = B - (B.C / C.C) C.
R*xy and R*xz come from the tile pass (z is one more job on the same rows); R*yz from the
exact O(n log n) column sums. The test (energy's pdcor.test) permutes rows and columns of P_y,
x's projection fixed; with c_x = A.C / C.C, c_y = B.C / C.C and a permutation pi acting on B and
C together,
    P_x . P_y^pi = A.B^pi - c_y A.C^pi - c_x C.B^pi + c_x c_y C.C^pi,
so the pass needs y and z as permuted jobs with the same shuffles (A.B^pi, A.C^pi) and the
column sums give C.B^pi and C.C^pi: no n x n matrix.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from mdn_cli.stats.columns import row_products
from mdn_cli.stats.sums import JobSums, u_product


def column_product(u: np.ndarray, u_categorical: bool, u_rows: np.ndarray,
                   v: np.ndarray, v_categorical: bool, v_rows: np.ndarray) -> float:  # fmt: skip
    """U-centred inner product of two columns' distance matrices (row sums given)."""
    s = float(row_products(u, u_categorical, v, v_categorical).sum())
    return float(u_product(s, u_rows @ v_rows, u_rows.sum(), v_rows.sum(), u.size))


# 1 - R*² below this is rounding of R* = ±1 (a column that is a function of the given one).
_VANISHING = 1e-12


def partial_from_products(aa, bb, cc, ab, ac, bc):
    """pdcor* from the six inner products (arrays elementwise), as the dcor package defines it:
    each R* clipped to [-1, 1], 0 where a variance or 1 - R*² vanishes."""
    aa, bb, cc, ab, ac, bc = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (aa, bb, cc, ab, ac, bc)))

    def correlation(cross, first, second):
        scale = first * second
        return np.clip(np.divide(cross, np.sqrt(np.abs(scale)), out=np.zeros_like(cross), where=scale > 0), -1.0, 1.0)

    r_xy, r_xz, r_yz = correlation(ab, aa, bb), correlation(ac, aa, cc), correlation(bc, bb, cc)
    rest_x, rest_y = 1.0 - r_xz**2, 1.0 - r_yz**2
    vanishing = (rest_x <= _VANISHING) | (rest_y <= _VANISHING)
    denominator = np.sqrt(np.where(vanishing, 1.0, rest_x * rest_y))
    return np.where(vanishing, 0.0, (r_xy - r_xz * r_yz) / denominator)


class PartialSums:
    """pdcor*(features, y; z) from the jobs of y and z (same rows, same shuffles)."""

    def __init__(self, y: JobSums, z: JobSums):
        self.y, self.z = y, z
        self.aa, self.bb, self.cc = y.var_a, y.var_b, z.var_b
        self.ab, self.ac = y.dcov(), z.dcov()
        self.bc = column_product(y.values, y.categorical, y.b_rows, z.values, z.categorical, z.b_rows)
        self.estimate = float(partial_from_products(self.aa, self.bb, self.cc, self.ab, self.ac, self.bc))
        rest_x, rest_y = (1.0 - cross**2 / (first * second) for cross, first, second in
                          ((self.ac, self.aa, self.cc), (self.bc, self.bb, self.cc)))  # fmt: skip
        self.note: Optional[str] = None
        if min(rest_x, rest_y) <= _VANISHING:
            side = "the features are" if rest_x <= _VANISHING else "the column is"
            self.note = f"{side} a function of the given column (R* = 1): partial dcor² set to 0"

    def projection_products(self) -> np.ndarray:
        """P_x . P_y^pi for the observed rows (first) and every shuffle of the pass."""
        y, z = self.y, self.z
        c_x, c_y = self.ac / self.cc, self.bc / self.cc
        values = [self.ab - c_y * self.ac - c_x * self.bc + c_x * c_y * self.cc]
        for p, shuffle in enumerate(y.shuffles):
            z_y = column_product(z.values, z.categorical, z.b_rows, y.values[shuffle], y.categorical, y.b_rows[shuffle])
            z_z = column_product(z.values, z.categorical, z.b_rows, z.values[shuffle], z.categorical, z.b_rows[shuffle])
            values.append(y.dcov(p) - c_y * z.dcov(p) - c_x * z_y + c_x * c_y * z_z)
        return np.array(values)

    def permutation_pvalue(self) -> float:
        """p = (1 + #{T_pi >= T}) / (N + 1); statistics equal up to rounding count as ties."""
        products = self.projection_products()
        tolerance = 1e-9 * np.sqrt(self.aa * self.bb)
        extreme = int(np.count_nonzero(products[1:] >= products[0] - tolerance))
        return (1.0 + extreme) / products.size
