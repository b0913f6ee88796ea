"""The one reader of stored features: an HDF5 dataset of per-sample features and its ids.

``mdn audit`` reads the whole matrix, ``mdn residualize`` streams it in row chunks; both get the
same checks (a dataset with samples, ids that fit, no NaN or Inf, named by id).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from mdn_cli.data.h5 import open_h5_dataset, read_ids
from mdn_cli.stats.validation import NonFiniteError, check_finite
from mdn_cli.utils.errors import MdnError
from mdn_cli.utils.interrupts import raise_pending

CHUNK_VALUES = 1 << 24  # values per chunk read (64 MB in float32)


@dataclass
class FeatureFile:
    """A dataset of per-sample features (samples on axis 0, any rank) in an HDF5 file, and its ids."""

    path: Path
    dataset: str
    shape: tuple[int, ...]
    ids: np.ndarray | None
    attrs: dict = field(default_factory=dict)
    clips: np.ndarray | None = None  # a video's clip per row (`mdn extract --per-clip`): rows join on (id, clip)

    @property
    def num_features(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64))

    def chunks(self, dtype=np.float64, rows: int | None = None) -> Iterator[tuple[slice, np.ndarray]]:
        """(rows, (m, d) block in ``dtype``) in file order; NaN/Inf are an error naming the samples."""
        rows = rows or max(1, CHUNK_VALUES // max(self.num_features, 1))
        with h5py.File(self.path, "r") as f:
            ds = f[self.dataset]
            for start in range(0, self.shape[0], rows):
                raise_pending()
                part = slice(start, min(start + rows, self.shape[0]))
                block = np.asarray(ds[part], dtype=dtype).reshape(part.stop - part.start, -1)
                try:
                    check_finite(block, self.ids, offset=start)
                except NonFiniteError as exc:
                    raise MdnError(str(exc), where=f"{self.path}:{self.dataset}", hint="fix or drop those samples.") from None
                yield part, block

    def read(self, dtype=np.float32) -> np.ndarray:
        """The whole (n, d) matrix, read in row chunks."""
        matrix = np.empty((self.shape[0], self.num_features), dtype=dtype)
        for part, block in self.chunks(dtype):
            matrix[part] = block
        return matrix


def open_features(path: str | Path, dataset: str = "features") -> FeatureFile:
    """Open ``dataset`` of ``path``; its ids are the ``ids`` dataset beside it, else at the root."""
    path = Path(path)
    with open_h5_dataset(path, dataset, option="--dataset", min_ndim=1) as node:
        shape = tuple(int(size) for size in node.shape)
        handle = node.file
        parent = node.parent.name.strip("/")
        ids_name = next((c for c in (f"{parent}/ids" if parent else None, "ids") if c and c in handle and c != dataset), None)
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in handle.attrs.items()}
        has_clips = "clip" in handle and ids_name is not None and dataset != "clip"
    ids = read_ids(path, ids_name, shape[0]) if ids_name else None
    clips = read_ids(path, "clip", shape[0]) if has_clips else None
    return FeatureFile(path, dataset, shape, ids, attrs, clips)
