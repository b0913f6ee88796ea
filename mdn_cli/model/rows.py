"""The rows a loaded run scores: a split of its own data, or new data, in output order with their batches.

``extract`` and ``evaluate`` take their rows from here (``split_source``, ``new_source``), so
new data is checked against the run one way: the spec's dataset and columns, the trained
sample shape, the design matrix's columns and levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import torch

from mdn_cli.data.clips import ClipSampler
from mdn_cli.data.design import apply_design
from mdn_cli.data.file_dataset import default_num_workers
from mdn_cli.data.h5 import H5Rows
from mdn_cli.data.rows import FileProvider, H5Provider, checked_shape, file_samples
from mdn_cli.data.tables import align_table, read_table
from mdn_cli.data.transforms import Compose
from mdn_cli.model.checkpoint import LoadedRun
from mdn_cli.utils.errors import MdnError

SPLIT_CHOICES = ("train", "val", "test", "all")


@dataclass
class Source:
    """Rows to run through the model, in output order: ids, their table rows, a batch iterator.

    ``views``: samples per row in a batch's inputs, (n, views, ...) when more than one (a video's evaluation clips).
    """

    description: str
    ids: np.ndarray
    table: pd.DataFrame
    batches: Callable[[int], Iterator[tuple[slice, torch.Tensor, torch.Tensor]]]
    views: int = 1


def split_source(loaded: LoadedRun, split: str) -> Source:
    """The rows of a split of the run's own data (``all``: every row in file order)."""
    data = loaded.training_data()
    if split not in SPLIT_CHOICES:
        raise MdnError(f"unknown split {split!r}.", where="--split", hint=f"use one of {', '.join(SPLIT_CHOICES)}.")
    rows = np.arange(len(data.table)) if split == "all" else data.splits[split]
    if len(rows) == 0:
        raise MdnError(f"the run's data has no {split!r} rows.", where="--split", hint="choose another split.")
    table = data.table.iloc[rows].reset_index(drop=True)
    design_rows = apply_design(loaded.design, table, str(loaded.spec.data.table)).astype(np.float32)
    spec = loaded.spec.data
    if spec.path_column is not None:
        ids = table[spec.id_column].to_numpy() if spec.id_column else rows.copy()
    else:
        file_ids = data.inputs.rows.ids
        ids = file_ids[rows] if file_ids is not None else rows.copy()  # the inputs' own ids, in their dtype
    return Source(f"split={split}", ids, table, _provider_batches(data.inputs, rows, design_rows), data.inputs.views)


def _provider_batches(provider: H5Provider | FileProvider, rows: np.ndarray, design_rows: np.ndarray):
    """Batches of ``rows`` in order through a rows provider (its loader workers for files), without augmentation."""
    def batches(size: int):
        parts = [slice(start, min(start + size, len(rows))) for start in range(0, len(rows), size)]
        for part, x in zip(parts, provider.batches([rows[p] for p in parts])):
            yield part, x, torch.from_numpy(design_rows[part])

    return batches


def new_source(loaded: LoadedRun, inputs: str | Path | None, table_path: str | Path | None) -> Source | None:
    """New rows for `extract` and `evaluate`: HDF5 ``inputs`` with their table, or, for a run that
    reads files, the table alone (``table_source``); None when neither is given (use a split)."""
    if inputs is None and table_path is None:
        return None
    if inputs is not None and table_path is not None:
        return file_source(loaded, inputs, table_path)  # refuses a run that reads files, with the hint to give --table alone
    if loaded.spec.data.path_column is not None and table_path is not None:
        return table_source(loaded, table_path)
    raise MdnError("--inputs and --table go together.", where="--inputs" if inputs is None else "--table", hint="give both for new data, or neither to use --split.")


def _refuse_empty(n: int, where: str) -> None:
    if n == 0:
        raise MdnError("there are no rows to run.", where=where, hint="give data with at least one sample.")


def table_source(loaded: LoadedRun, table_path: str | Path) -> Source:
    """New data for a run that reads files: a table with the run's path column (paths relative to the table's folder) and columns."""
    spec = loaded.spec.data
    table = read_table(table_path, spec.id_column)
    _refuse_empty(len(table), str(table_path))
    id_column = spec.id_column if spec.id_column in table.columns else None  # without the id column: ids are row numbers
    if id_column is not None:
        table = align_table(table, table[id_column].to_numpy(), id_column, len(table), str(table_path), "the table")
    ids = table[id_column].to_numpy() if id_column else np.arange(len(table))
    folder = Path.cwd() if str(table_path) == "-" else Path(table_path).resolve().parent
    samples = file_samples(table, spec.path_column, str(folder), ids, str(table_path), channels=spec.channels,
                           transform=Compose.from_spec(spec.transform, spec.clip is not None), augment=Compose(()), seed=loaded.spec.train.seed,
                           clips=None if spec.clip is None else ClipSampler.from_spec(spec.clip))
    rows = np.arange(len(table))
    shape = checked_shape(samples, {"all": rows})
    if shape != loaded.sample_shape:
        raise MdnError(f"its samples have shape {shape} after data.transform, but the model was trained on {loaded.sample_shape}.",
                       where=str(table_path), hint="new files must look like the training files.")
    workers = default_num_workers() if loaded.spec.train.num_workers is None else loaded.spec.train.num_workers
    design_rows = apply_design(loaded.design, table, str(table_path)).astype(np.float32)
    return Source(str(table_path), ids, table, _provider_batches(FileProvider(samples, workers), rows, design_rows), samples.views)


def file_source(loaded: LoadedRun, inputs: str | Path, table_path: str | Path, id_column: str | None = None) -> Source:
    """New data: an HDF5 file of inputs (the spec's dataset names) and a table with the spec's columns."""
    spec = loaded.spec.data
    if spec.path_column is not None:
        raise MdnError("this run reads the files named in its table's path column, not HDF5 inputs.", where="--inputs",
                       hint=f"give the new table alone: --table new.csv, with a {spec.path_column!r} column (paths relative to the table's folder).")
    inputs = Path(inputs)
    h5 = H5Rows(inputs, spec.dataset, spec.ids_dataset,  # the training inputs' reader: divisor, checks, in memory when small
                hint=f"new inputs keep the run's dataset name (data.dataset: {spec.dataset}).")
    provider = H5Provider(h5, Compose.from_spec(spec.transform), Compose(()), loaded.spec.train.seed)
    if provider.sample_shape != loaded.sample_shape:
        raise MdnError(
            f"dataset {spec.dataset!r} holds samples of shape {h5.shape[1:]} ({provider.sample_shape} after data.transform), but the model was trained on {loaded.sample_shape}.",
            where=str(inputs),
            hint="new inputs must look like the training inputs.",
        )
    n, ids = len(h5), h5.ids
    id_column = id_column or spec.id_column
    table = read_table(table_path, id_column)  # ids as text: '007' stays '007'
    if id_column is not None and ids is None and id_column not in table.columns:
        id_column = None  # neither side has ids: match by row order
    table = align_table(table, ids, id_column, n, str(table_path), f"{inputs}:{spec.dataset}")
    design_rows = apply_design(loaded.design, table, str(table_path)).astype(np.float32)
    if ids is None:
        ids = table[id_column].to_numpy() if id_column else np.arange(n)
    return Source(str(inputs), ids, table, _provider_batches(provider, np.arange(n), design_rows))


def row_splits(loaded: LoadedRun, split: str) -> str | list[str]:
    """The split of each row: ``split`` itself, or per row for ``all`` (rows in no split: ``none``)."""
    if split != "all":
        return split
    data = loaded.training_data()
    names = np.full(len(data.table), "none", dtype=object)
    for name, rows in data.splits.items():
        names[rows] = name
    return names.tolist()
