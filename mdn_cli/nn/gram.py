"""The whole training set's Gram inverse ``(X'X)^-1``, with an error that names collinear columns."""

from __future__ import annotations

from typing import Sequence

import numpy as np


class CollinearDesignError(ValueError):
    """The design matrix is (nearly) singular; ``columns`` are the design columns involved.

    Callers that know where the design came from (a spec, a command's options) add their own
    advice on how to fix it.
    """

    def __init__(self, message: str, columns: list[str]):
        super().__init__(message)
        self.columns = columns


def gram_inverse(design: np.ndarray, column_names: Sequence[str] | None = None, ridge: float = 0.0) -> np.ndarray:
    """``(X'X + ridge·n·I)^-1`` in float64, or a ``CollinearDesignError`` naming the collinear columns.

    Collinearity is judged on the Gram matrix rescaled to unit diagonal, so it does not depend
    on the columns' units. With ``ridge > 0`` the penalty keeps any design invertible.
    """
    x = np.asarray(design, dtype=np.float64)
    n, p = x.shape
    names = list(column_names) if column_names is not None else [f"column {i}" for i in range(p)]
    gram = x.T @ x
    if ridge > 0:
        gram = gram + ridge * n * np.eye(p)
    scale = np.sqrt(np.clip(np.diag(gram), 1e-300, None))
    eigvals, eigvecs = np.linalg.eigh(gram / np.outer(scale, scale))
    if eigvals[0] < 1e-10 * max(eigvals[-1], 1e-300):
        weights = np.abs(eigvecs[:, 0])
        involved = [names[i] for i in np.flatnonzero(weights > 0.1 * weights.max())]
        raise CollinearDesignError(
            f"the design matrix is singular or nearly so (n={n} rows, {p} columns): columns "
            f"{', '.join(involved)} are collinear; drop one of them, merge rare categories, or use a ridge > 0.",
            involved,
        )
    return np.linalg.solve(gram, np.eye(p))
