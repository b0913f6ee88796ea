"""HDF5: datasets with errors that list what a file has, input rows, ids, and the one chunked writer."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from mdn_cli.stats.validation import NonFiniteError, check_finite, listing
from mdn_cli.utils.errors import MdnError

IN_MEMORY_LIMIT = 2 * 1024**3  # inputs larger than this are read from disk batch by batch
READ_CHUNK_ROWS = 4096
CHUNK_BYTES = 1 << 20  # HDF5 chunks of about 1 MiB: good gzip ratio, small chunk cache


@contextlib.contextmanager
def open_h5_dataset(path: str | Path, dataset: str, option: str | None = None, hint: str | None = None,
                    min_ndim: int | None = None) -> Iterator[h5py.Dataset]:
    """An HDF5 file's dataset, or an MdnError naming the file and the datasets it does have.

    ``option`` is how the user names another dataset (``--dataset``, ``data.dataset``): the hint
    then shows it with an example; else ``hint`` is given as is. With ``min_ndim`` the dataset
    must hold samples: numbers, at least that many axes, at least one row.
    """
    path = Path(path)
    if path.is_dir():
        raise MdnError("is a directory; expected an HDF5 file.", where=str(path), hint="give the .h5 file itself.")
    if not path.is_file():
        raise MdnError("file not found.", where=str(path), hint="check the path.")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise MdnError(f"cannot open as HDF5 ({exc}).", where=str(path), hint="expected an HDF5 file (.h5).") from None
    with handle:
        node = handle.get(dataset)
        if not isinstance(node, h5py.Dataset):
            group = node if isinstance(node, h5py.Group) else handle
            names: list[str] = []
            group.visititems(lambda name, obj: names.append(f"{group.name}/{name}".lstrip("/")) if isinstance(obj, h5py.Dataset) else None)
            what = f"{dataset!r} is a group of datasets" if group is node else f"no dataset {dataset!r}"
            if option is not None:
                hint = f"choose one with {option}" + (f" (e.g. {option} {names[0]})." if names else ".")
            raise MdnError(f"{what} (has: {listing(names, 10) or 'none'}).", where=str(path), hint=hint)
        if min_ndim is not None:
            check_samples(node, f"{path}:{dataset}", min_ndim)
        yield node


def check_samples(ds: h5py.Dataset, where: str, min_ndim: int) -> None:
    """The one check of a stored array of samples: numbers, samples on axis 0, at least one."""
    if ds.dtype.kind not in "biuf":
        raise MdnError(f"holds {ds.dtype} values; expected numbers.", where=where, hint="store the samples as a numeric array (e.g. float32 or uint8).")
    if ds.ndim < min_ndim:
        raise MdnError(f"has shape {ds.shape}; expected (n_samples, {'features' if min_ndim == 1 else '...'}).", where=where,
                       hint="samples go on the first axis.")
    if ds.shape[0] == 0:
        raise MdnError(f"has no samples (shape {ds.shape}).", where=where, hint="the file holds no rows; write it again.")



DIVISOR_ATTR = "divisor"  # integer samples (written by `mdn pack`) are read as x / divisor


class H5Rows:
    """Rows of an HDF5 dataset as float32, read in memory when small, else from disk batch by batch.

    A dataset with a ``divisor`` attribute (uint8 with 255, uint16 with 65535, as `mdn pack`
    writes) is divided by it in float32: the same arithmetic as ``readers.to_float``, so packed
    samples equal the files' to the bit.
    """

    def __init__(self, path: str | Path, dataset: str, ids_dataset: str | None = None, hint: str | None = None):
        self.path, self.dataset = str(path), dataset
        with open_h5_dataset(self.path, dataset, option=None if hint else "data.dataset", hint=hint, min_ndim=2) as ds:
            self.shape, self.dtype = tuple(ds.shape), ds.dtype
            self.ids = read_ids(self.path, ids_dataset, self.shape[0]) if ids_dataset else None  # first: NaN rows are named by id
            divisor = ds.attrs.get(DIVISOR_ATTR)
            self._divisor = None if divisor is None else np.float32(divisor)
            self._memory = self._checked(self._read_all(ds), np.arange(self.shape[0])) if ds.size * 4 <= IN_MEMORY_LIMIT else None
        self._file: h5py.File | None = None

    def _checked(self, block: np.ndarray, rows: np.ndarray) -> np.ndarray:
        try:
            check_finite(block)
        except NonFiniteError as exc:
            bad = rows[exc.rows]
            names = bad.tolist() if self.ids is None else self.ids[bad].tolist()
            raise MdnError(f"holds NaN or Inf in {len(bad)} sample(s) ({'ids' if self.ids is not None else 'rows'} {listing(names)}).",
                           where=f"{self.path}:{self.dataset}", hint="fix or drop those samples.") from None
        return block

    def _read_all(self, ds) -> np.ndarray:
        out = np.empty(ds.shape, dtype=np.float32)
        for start in range(0, ds.shape[0], READ_CHUNK_ROWS):
            out[start : start + READ_CHUNK_ROWS] = ds[start : start + READ_CHUNK_ROWS]
        if self._divisor is not None:
            out /= self._divisor
        return out

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The given rows (any order, repeats allowed) as float32."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._memory is not None:
            return self._memory[rows]
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        unique, inverse = np.unique(rows, return_inverse=True)  # h5py wants increasing, distinct rows
        block = np.ascontiguousarray(self._file[self.dataset][unique][inverse.reshape(-1)], dtype=np.float32)
        if self._divisor is not None:
            block /= self._divisor
        return self._checked(block, rows)



def read_ids(path: str | Path, dataset: str, n: int) -> np.ndarray | None:
    """The ``n`` samples' ids (text or integers, one per sample), or None when the file has no such dataset."""
    with h5py.File(path, "r") as f:
        node = f.get(dataset)
        if node is None:
            return None
        where = f"{path}:{dataset}"
        if not isinstance(node, h5py.Dataset) or node.ndim != 1 or node.dtype.kind not in "OSUiu":
            raise MdnError(f"holds {node.dtype if isinstance(node, h5py.Dataset) else 'a group'} of shape {getattr(node, 'shape', None)}; expected one id per sample.",
                           where=where, hint="store the ids as a 1-D array of strings or integers.")
        if len(node) != n:
            raise MdnError(f"has {len(node)} ids for {n} samples.", where=where, hint="every sample needs exactly one id; write the file again.")
        ids = node[:]
    return _decoded(ids)


def _decoded(raw: np.ndarray) -> np.ndarray:
    """Stored strings as text (h5py gives bytes), numbers as they are."""
    return np.array([v.decode() if isinstance(v, bytes) else v for v in raw.tolist()]) if raw.dtype.kind in "OS" else raw



def write_ids(f: h5py.File, ids: np.ndarray) -> None:
    if ids.dtype.kind in "OUS":
        f.create_dataset("ids", data=np.asarray(ids, dtype=object).astype(str).astype(object), dtype=h5py.string_dtype())
    else:
        f.create_dataset("ids", data=ids)


def create_chunked(f: h5py.File, path: str, shape: tuple[int, ...], max_chunk_rows: int | None = None) -> h5py.Dataset:
    """A float32 dataset of ``shape`` (samples first) in gzip-compressed chunks of about 1 MiB.

    Chunks hold whole samples (``max_chunk_rows`` caps them, e.g. at the batch size written at
    once), so streaming rows in costs one chunk at a time.
    """
    n, width = shape[0], int(np.prod(shape[1:], dtype=np.int64))
    rows = max(1, min(n, max_chunk_rows or n, CHUNK_BYTES // (4 * max(width, 1))))
    return f.create_dataset(path, shape=shape, dtype="float32", chunks=(rows, *shape[1:]), compression="gzip", compression_opts=4, shuffle=True)
