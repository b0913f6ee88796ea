"""Rows cut into batches, in order or in one seeded permutation: the one shuffle of training (one process or DDP) and the file loader."""

from __future__ import annotations

import numpy as np
import torch


def batch_rows(rows: np.ndarray, batch_size: int, shuffle_seed: int | None = None) -> list[np.ndarray]:
    """``rows`` in batches of ``batch_size`` (the last may be smaller), permuted by ``shuffle_seed`` when given.

    The permutation is torch's ``randperm`` from a generator seeded with ``shuffle_seed``, so a
    seed names the same order on every machine and in every process.
    """
    rows = np.asarray(rows)
    if shuffle_seed is not None:
        rows = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(shuffle_seed)).numpy()]
    return [rows[start : start + batch_size] for start in range(0, len(rows), batch_size)]
