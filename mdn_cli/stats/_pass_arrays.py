"""The arrays of one tiled pass, by name: what the engines read (INPUTS) and the sums they fill (OUTPUTS).

``OUTPUTS`` is the one declaration of the pass's sums. The pass arrays are built from it
(``pass_arrays``), the numba kernel is called with them by keyword, the torch engine allocates
and returns them, worker threads and processes add them up, and ``masked`` restricts the
per-row ones to their rows' masks. A new statistic of the pass is one more entry in OUTPUTS,
plus its arithmetic in both engines (``_kernel``, ``_torch_engine``) and where ``_jobs`` reads it.
"""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import numpy as np

# The inputs, all (n,) or (rows, n) in row order; "masks" are the distinct row subsets of the jobs.
INPUTS = (
    "weights",  # (masks, n) 0/1 in the tile dtype: the rows of each mask
    "lo",  # (masks,) int64: each mask's first row
    "hi",  # (masks,) int64: one past its last row
    "dense",  # (masks,) bool: every row in [lo, hi) is in the mask
    "values",  # (value rows, n) tile dtype: each job's values, then each of its shuffles
    "job_mask",  # (value rows,) int64: the mask of each value row
    "job_categorical",  # (value rows,) bool
    "job_rows",  # (value rows,) int64: the row of rowprod (and rowprod_within) it fills, or -1
    "linear",  # (linear, n) tile dtype: weights w of the linear sums
    "linear_mask",  # (linear,) int64: the mask of each linear sum
    "groups",  # (n,) int64 cluster ids, or empty (no cluster sums)
)


class Sizes(NamedTuple):
    """What the shapes of one pass's outputs depend on."""

    n: int  # feature rows
    masks: int  # masks whose feature sums (a_i., S_aa) the pass collects; 0 for linear sums only
    values: int  # value rows
    jobs: int  # jobs (observed value rows)
    linear: int  # linear sums
    groups: int  # clusters (1 without)
    intervals: bool  # the jackknife's per-row sums
    clustered: bool  # and its per-cluster ones


@dataclass(frozen=True)
class Output:
    """One sum of the pass: float64, zero before it, added over tiles, worker threads and processes.

    ``rows_in``: for per-row sums, what row l of the array belongs to ("mask" l, the mask of
    "job" l, or that of "linear" sum l), whose mask the pass multiplies it by afterwards (the
    engines add a tile's mirror half to all of its rows); None for totals.
    """

    name: str
    shape: Callable[[Sizes], tuple]
    rows_in: Optional[str] = None


OUTPUTS = (
    Output("rowsum", lambda s: (s.masks, s.n), "mask"),  # a_i.
    Output("saa", lambda s: (s.masks,)),  # S_aa = sum_ij a_ij^2
    Output("sab", lambda s: (s.values,)),  # S_ab = sum_ij a_ij b_ij per value row
    Output("rowprod", lambda s: (s.jobs if s.intervals else 0, s.n), "job"),  # sum_j a_ij b_ij
    Output("rowprod_within", lambda s: (s.jobs if s.clustered else 0, s.n), "job"),  # over j in i's cluster
    Output("rowsq", lambda s: (s.masks if s.intervals else 0, s.n), "mask"),  # sum_j a_ij^2
    Output("rowsq_within", lambda s: (s.masks if s.clustered else 0, s.n), "mask"),  # over j in i's cluster
    Output("linear_out", lambda s: (s.linear, s.n), "linear"),  # sum_j a_ij w_j
    Output("group_sums", lambda s: (s.masks if s.clustered else 0, s.n, s.groups), "mask"),  # sum_{j in g} a_ij
)
OUTPUT_NAMES = tuple(output.name for output in OUTPUTS)

PassArrays = namedtuple("PassArrays", INPUTS + OUTPUT_NAMES)
PassArrays.__doc__ = "A pass's INPUTS and OUTPUTS by name (build it with ``pass_arrays``)."


def pass_arrays(sizes: Sizes, **inputs: np.ndarray) -> PassArrays:
    """The inputs, and every output zeroed in its declared shape."""
    return PassArrays(**inputs, **{output.name: np.zeros(output.shape(sizes)) for output in OUTPUTS})


def masked(arrays: PassArrays) -> PassArrays:
    """Every per-row output multiplied by the weights of its rows' masks."""
    mask_of = {"mask": np.arange(arrays.weights.shape[0]), "job": arrays.job_mask[arrays.job_rows >= 0],
               "linear": arrays.linear_mask}  # fmt: skip
    weighted = {}
    for output in OUTPUTS:
        array = getattr(arrays, output.name)
        if output.rows_in is not None and array.shape[0]:
            weights = arrays.weights[mask_of[output.rows_in]]
            weighted[output.name] = array * weights.reshape(weights.shape + (1,) * (array.ndim - 2))
    return arrays._replace(**weighted)
