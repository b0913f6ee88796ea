"""Checks on arrays shared by every layer (like scikit-learn's ``utils/validation``); numpy only.

Pure building blocks raise ``ValueError`` subclasses; the layers that know the file or option
turn them into the user-facing ``MdnError``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class NonFiniteError(ValueError):
    """Features with NaN or Inf; ``rows`` are their positions."""

    def __init__(self, message: str, rows: np.ndarray):
        super().__init__(message)
        self.rows = rows


def as_matrix(x) -> np.ndarray:
    """Samples on axis 0 as an (n, d) array, from any array or a torch tensor (detached, on the CPU; without importing torch)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
        x = (x if str(x.dtype) in ("torch.float32", "torch.float64") else x.double()).numpy()
    matrix = np.asarray(x)
    return matrix.reshape(matrix.shape[0], -1) if matrix.ndim != 2 else matrix


def check_finite(matrix, row_names: Sequence | None = None, offset: int = 0) -> None:
    """Raise ``NonFiniteError`` naming the samples (by id when ``row_names`` are given) with NaN or Inf.

    ``matrix`` has samples on axis 0; ``offset`` is the position of its first row in the whole
    set (for a chunk), so rows are named as in the file.
    """
    values = np.asarray(matrix)
    bad = np.flatnonzero(~np.isfinite(values.reshape(values.shape[0], int(np.prod(values.shape[1:])))).all(axis=1))
    if bad.size:
        positions = bad + offset
        names = [row_names[i] for i in positions] if row_names is not None else positions.tolist()
        label = "ids" if row_names is not None else "rows"
        raise NonFiniteError(f"features contain NaN or Inf in {bad.size} {label}: {listing(names)}.", positions)


def float_dtype(dtype) -> np.dtype:
    """float32 or float64 from numpy's or torch's name for it (``torch.float64``, ``np.float32``, "float64")."""
    try:
        resolved = np.dtype(dtype)
    except TypeError:  # torch's dtypes are not numpy's, but their names are
        resolved = np.dtype(str(dtype).removeprefix("torch."))
    if resolved not in (np.float32, np.float64):
        raise ValueError(f"dtype is float32 or float64, not {dtype}")
    return resolved


def level_text(value) -> str:
    """A group or stratum value as the table reads: 3 rather than 3.0, strings unchanged."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.integer, np.bool_)):
        return str(value.item())
    return str(value)


def listing(values: Sequence, limit: int = 5) -> str:
    """The first ``limit`` values for a message, each as the table reads (``level_text``), then how many more there are."""
    values = list(values)
    shown = ", ".join(level_text(value) for value in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
