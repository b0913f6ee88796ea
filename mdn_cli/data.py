"""Inputs from HDF5 and labels/metadata from a CSV table, joined, checked and split for training.

Every mismatch is an ``MdnError`` raised before any training starts.
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import h5py
import numpy as np
import pandas as pd
import torch

from mdn_cli.design import DesignMatrix, level_strings
from mdn_cli.errors import MdnError, did_you_mean, listing

SPLITS = ("train", "val", "test")
IN_MEMORY_LIMIT = 2 * 1024**3  # inputs larger than this are read from disk batch by batch
READ_CHUNK_ROWS = 4096


def read_table(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """A CSV table from a path, or from stdin when ``path`` is '-'.

    The id column is read as text (ids are matched as text, and '007' must stay '007').
    """
    source = str(path)
    where = "stdin" if source == "-" else source
    dtype = {id_column: str} if id_column else None
    try:
        return pd.read_csv(io.StringIO(sys.stdin.read()) if source == "-" else source, dtype=dtype)
    except FileNotFoundError:
        raise MdnError("file not found.", where=where, hint="check the path (relative paths in a spec are relative to the spec file).") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MdnError(f"not a readable CSV table ({str(exc).strip()}).", where=where, hint="expected a comma-separated file with a header row, or - for stdin.") from None


@contextlib.contextmanager
def open_h5_dataset(path: str | Path, dataset: str, option: str | None = None, hint: str | None = None) -> Iterator[h5py.Dataset]:
    """An HDF5 file's dataset, or an MdnError naming the file and the datasets it does have.

    ``option`` is how the user names another dataset (``--dataset``, ``data.dataset``): the hint
    then shows it with an example; else ``hint`` is given as is.
    """
    path = Path(path)
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
        yield node


class H5Rows:
    """Rows of an HDF5 dataset, read in memory when small, else from disk batch by batch."""

    def __init__(self, path: str | Path, dataset: str):
        self.path, self.dataset = str(path), dataset
        with open_h5_dataset(self.path, dataset, option="data.dataset") as ds:
            self.shape, self.dtype = tuple(ds.shape), ds.dtype
            self._memory = self._read_all(ds) if ds.size * 4 <= IN_MEMORY_LIMIT else None
        if len(self.shape) < 2:
            raise MdnError(f"dataset {dataset!r} has shape {self.shape}; expected (n_samples, ...).", where=self.path, hint=None)
        self._file: h5py.File | None = None

    @staticmethod
    def _read_all(ds) -> np.ndarray:
        out = np.empty(ds.shape, dtype=np.float32)
        for start in range(0, ds.shape[0], READ_CHUNK_ROWS):
            out[start : start + READ_CHUNK_ROWS] = ds[start : start + READ_CHUNK_ROWS]
        return out

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, rows: np.ndarray) -> torch.Tensor:
        """The given rows (any order, repeats allowed) as a float32 tensor."""
        rows = np.asarray(rows, dtype=np.int64)
        if self._memory is not None:
            return torch.from_numpy(self._memory[rows])
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        unique, inverse = np.unique(rows, return_inverse=True)  # h5py wants increasing, distinct rows
        block = self._file[self.dataset][unique]
        return torch.from_numpy(np.ascontiguousarray(block[inverse.reshape(-1)], dtype=np.float32))


def read_ids(path: str | Path, dataset: str) -> np.ndarray | None:
    with h5py.File(path, "r") as f:
        if dataset not in f:
            return None
        ids = f[dataset][:]
    return np.array([v.decode() if isinstance(v, bytes) else v for v in ids]) if ids.dtype.kind in "OS" else ids


def align_table(table: pd.DataFrame, ids: np.ndarray | None, id_column: str | None, n_rows: int, table_name: str, rows_name: str) -> pd.DataFrame:
    """The table's rows in the order of the data rows (by id, or by row order with a length check)."""
    if id_column is None:
        if len(table) != n_rows:
            raise MdnError(
                f"the table has {len(table)} rows but {rows_name} has {n_rows}; without an id column they are matched by row order.",
                where=table_name,
                hint="set an id column (data.id_column / --id-column) or make the row counts equal.",
            )
        return table.reset_index(drop=True)
    if id_column not in table.columns:
        raise MdnError(f"no id column {id_column!r}.", where=table_name, hint=f"columns are: {listing(list(table.columns), 12)}.")
    if ids is None:
        raise MdnError(f"{rows_name} has no ids dataset to join on {id_column!r}.", where=table_name, hint="store sample ids beside the inputs, or drop the id column setting to match by row order.")
    key = table[id_column]
    duplicated = key[key.duplicated()].unique()
    if len(duplicated):
        raise MdnError(f"id column {id_column!r} has duplicate ids: {listing(duplicated)}.", where=table_name, hint="each sample must appear once.")
    if len(np.unique(ids)) != len(ids):
        values, counts = np.unique(ids, return_counts=True)
        raise MdnError(f"{rows_name} has duplicate ids: {listing(values[counts > 1])}.", where=table_name, hint="each sample must appear once.")
    lookup = pd.Index(level_strings(key))
    positions = lookup.get_indexer(level_strings(pd.Series(ids)))
    missing = ids[positions < 0]
    if len(missing):
        raise MdnError(f"{len(missing)} id(s) of {rows_name} are not in column {id_column!r}: {listing(missing)}.", where=table_name, hint="the table needs one row per sample.")
    return table.iloc[positions].reset_index(drop=True)


@dataclass
class TrainingData:
    """Everything the training loop needs, aligned to the input rows."""

    inputs: H5Rows
    table: pd.DataFrame  # aligned with inputs' rows
    targets: torch.Tensor  # float (binary, regression) or long (multiclass)
    classes: list  # label values in class-index order; [] for regression
    design: DesignMatrix  # fitted on the training rows
    design_rows: torch.Tensor  # (n, num_design) float32, all rows
    splits: dict[str, np.ndarray]  # split name -> row indices

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.inputs.shape[1:]

    @property
    def num_outputs(self) -> int:
        return num_outputs(self.classes)

    def batches(self, split: str, batch_size: int, shuffle_seed: int | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(rows, inputs, design, targets) per batch; shuffled by ``shuffle_seed`` when given."""
        rows = self.splits[split]
        if shuffle_seed is not None:
            gen = torch.Generator().manual_seed(shuffle_seed)
            rows = rows[torch.randperm(len(rows), generator=gen).numpy()]
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            yield batch, self.inputs.take(batch), self.design_rows[batch], self.targets[batch]


def load_training_data(spec, seed: int) -> TrainingData:
    d = spec.data
    inputs = H5Rows(d.inputs, d.dataset)
    table = read_table(d.table, d.id_column)
    ids = read_ids(d.inputs, d.ids_dataset) if d.id_column else None
    table = align_table(table, ids, d.id_column, len(inputs), d.table, f"{d.inputs}:{d.dataset}")
    used = [d.label, *d.metadata, *spec.mdn.preserve] + ([d.split_column] if d.split_column else [])
    for column in dict.fromkeys(used):
        if column not in table.columns:
            hint = did_you_mean(column, table.columns, f"columns are: {listing(list(table.columns), 12)}.")
            raise MdnError(f"no column {column!r}.", where=d.table, hint=hint)
        nan_rows = np.flatnonzero(table[column].isna().to_numpy())
        if len(nan_rows):
            raise MdnError(f"column {column!r} is empty in {len(nan_rows)} row(s) (ids/rows {listing(_row_names(table, nan_rows, d.id_column))}).", where=d.table, hint="fill or drop those rows; training needs every value.")
    splits = _splits(table, d.split_column, d.val_fraction, seed, d.table)
    targets, classes = _targets(table[d.label], spec.train.task, d.label, d.table)
    categorical = list(d.categorical) + ([d.label] if spec.train.task == "multiclass" else [])
    design = DesignMatrix(d.metadata, spec.mdn.preserve, categorical).fit(table.iloc[splits["train"]])
    design_rows = torch.from_numpy(design.transform(table).astype(np.float32))
    return TrainingData(inputs, table, targets, classes, design, design_rows, splits)


def _row_names(table: pd.DataFrame, rows: np.ndarray, id_column: str | None) -> list:
    return list(table[id_column].iloc[rows]) if id_column else [int(r) for r in rows]


def _splits(table: pd.DataFrame, split_column: str | None, val_fraction: float, seed: int, table_name: str) -> dict[str, np.ndarray]:
    if split_column is None:
        order = np.random.default_rng(seed).permutation(len(table))
        n_val = max(1, round(val_fraction * len(table)))
        splits = {"train": np.sort(order[n_val:]), "val": np.sort(order[:n_val]), "test": np.array([], dtype=np.int64)}
        source, hint = f"data.val_fraction={val_fraction} of {len(table)} rows", "use more rows or another val_fraction."
    else:
        values = table[split_column].astype(str)
        unknown = sorted(set(values) - set(SPLITS))
        if unknown:
            raise MdnError(f"split column {split_column!r} has value(s) {listing(unknown)}.", where=table_name, hint="use train, val and test.")
        splits = {name: np.flatnonzero((values == name).to_numpy()) for name in SPLITS}
        source, hint = f"split column {split_column!r}", "training needs train and val rows."
    for name in ("train", "val"):
        if len(splits[name]) == 0:
            raise MdnError(f"{source} leaves no {name!r} rows.", where=table_name, hint=hint)
    return splits


def num_outputs(classes: Sequence) -> int:
    """Network outputs for a task's classes: one logit for binary (or a regression value), else one per class."""
    return len(classes) if len(classes) > 2 else 1


def _targets(label: pd.Series, task: str, name: str, table_name: str) -> tuple[torch.Tensor, list]:
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(label):
            raise MdnError(f"label column {name!r} is not numeric, but train.task is regression.", where=table_name, hint="use a numeric label or a classification task.")
        return torch.tensor(label.to_numpy(dtype=np.float32)), []
    classes = sorted(label.unique().tolist())
    if len(classes) < 2:
        raise MdnError(f"label column {name!r} has a single class ({classes[0]!r}).", where=table_name, hint="classification needs at least two classes.")
    if task == "binary" and len(classes) != 2:
        raise MdnError(f"label column {name!r} has {len(classes)} classes, but train.task is binary.", where=table_name, hint="set train.task: multiclass.")
    index = pd.Index(classes).get_indexer(label)
    dtype = torch.float32 if task == "binary" else torch.long
    return torch.tensor(index, dtype=dtype), classes


def write_dataset(out_dir: str | Path, inputs: np.ndarray, table: pd.DataFrame, ids_column: str = "id") -> tuple[Path, Path]:
    """Write ``images.h5`` (datasets ``x`` and ``ids``) and ``meta.csv`` into ``out_dir``, atomically."""
    from mdn_cli.fileio import atomic_path

    out_dir = Path(out_dir)
    h5_path, csv_path = out_dir / "images.h5", out_dir / "meta.csv"
    with atomic_path(h5_path) as tmp:
        with h5py.File(tmp, "w") as f:
            chunk = (min(len(inputs), 256), *inputs.shape[1:])
            f.create_dataset("x", data=inputs, chunks=chunk, compression="gzip", shuffle=True)
            f.create_dataset("ids", data=table[ids_column].to_numpy())
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    return h5_path, csv_path
