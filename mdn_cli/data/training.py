"""The training data of a spec: inputs, the aligned table, targets, the design matrix and splits.

Every mismatch is an ``MdnError`` raised before any training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from mdn_cli.data.batching import batch_rows
from mdn_cli.data.clips import ClipSampler
from mdn_cli.data.design import DesignMatrix, level_strings, sorted_levels
from mdn_cli.data.file_dataset import default_num_workers
from mdn_cli.data.h5 import H5Rows
from mdn_cli.data.rows import FileProvider, H5Provider, checked_shape, file_samples
from mdn_cli.data.tables import align_table, read_table, row_names
from mdn_cli.data.transforms import Compose
from mdn_cli.stats.validation import listing
from mdn_cli.utils.errors import MdnError, did_you_mean

SPLITS = ("train", "val", "test")


@dataclass
class TrainingData:
    """Everything the training loop needs, aligned to the input rows."""

    inputs: H5Provider | FileProvider  # rows -> samples (HDF5 rows or one file per row)
    table: pd.DataFrame  # aligned with inputs' rows
    targets: torch.Tensor  # float (binary, regression) or long (multiclass)
    classes: list  # label values in class-index order; [] for regression
    design: DesignMatrix  # fitted on the training rows
    design_rows: torch.Tensor  # (n, num_design) float32, all rows
    splits: dict[str, np.ndarray]  # split name -> row indices
    stages: dict[str, np.ndarray] | None = None  # stage name -> row indices, in training order (data.stage_column)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.inputs.sample_shape

    @property
    def num_outputs(self) -> int:
        return num_outputs(self.classes)

    def stage(self, name: str) -> "TrainingData":
        """The same data with every split restricted to one stage's rows (design and encoding unchanged)."""
        rows = self.stages[name]
        return replace(self, splits={split: np.intersect1d(indices, rows) for split, indices in self.splits.items()}, stages=None)

    def batch_rows(self, split: str, batch_size: int, shuffle_seed: int | None = None) -> list[np.ndarray]:
        """The rows of each batch of a split, in order or permuted by ``shuffle_seed`` (the one shuffle: one process or DDP)."""
        return batch_rows(self.splits[split], batch_size, shuffle_seed)

    def batches(self, split: str, batch_size: int, shuffle_seed: int | None = None, epoch: int | None = None) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(rows, inputs, design, targets) per batch (``batch_rows``); augmented as ``epoch`` when given."""
        batches = self.batch_rows(split, batch_size, shuffle_seed)
        for batch, x in zip(batches, self.inputs.batches(batches, epoch)):
            yield batch, x, self.design_rows[batch], self.targets[batch]


def load_training_data(spec, seed: int, pin_memory: bool = False) -> TrainingData:
    """The spec's data, checked; file inputs are checked to exist and, on each split's first file, to decode to one shape."""
    d = spec.data
    clips = d.clip is not None  # the samples are (C, T, H, W) clips: the transforms act on H and W
    transform, augment = Compose.from_spec(d.transform, clips), Compose.from_spec(d.augment, clips)
    table = read_table(d.table, d.id_column)
    if d.path_column is None:
        h5 = H5Rows(d.inputs, d.dataset, d.ids_dataset if d.id_column else None)
        ids = h5.ids
        table = align_table(table, ids, d.id_column, len(h5), d.table, f"{d.inputs}:{d.dataset}")
    else:
        if d.id_column is not None:  # the table is the list of samples: only its ids' uniqueness to check
            table = align_table(table, table[d.id_column].to_numpy() if d.id_column in table.columns else None, d.id_column, len(table), d.table, "the table")
        ids = table[d.id_column].to_numpy() if d.id_column else np.arange(len(table))
        samples = file_samples(table, d.path_column, str(d.root or Path(d.table).parent), ids, str(d.table),
                               channels=d.channels, transform=transform, augment=augment, seed=spec.train.seed,
                               clips=ClipSampler.from_spec(d.clip) if d.path_column is not None and clips else None)
    used = [d.label, *d.metadata, *spec.mdn.preserve] + [c for c in (d.split_column, d.stage_column) if c]
    for column in dict.fromkeys(used):
        if column not in table.columns:
            hint = did_you_mean(column, table.columns, f"columns are: {listing(list(table.columns), 12)}.")
            raise MdnError(f"no column {column!r}.", where=d.table, hint=hint)
        nan_rows = np.flatnonzero(table[column].isna().to_numpy())
        if len(nan_rows):
            raise MdnError(f"column {column!r} is empty in {len(nan_rows)} row(s) (ids/rows {listing(row_names(table, nan_rows, d.id_column))}).", where=d.table, hint="fill or drop those rows; training needs every value.")
    if d.split_file is not None:
        splits = _splits(read_split_file(d.split_file, table, d.id_column), "split", d.val_fraction, seed, str(d.split_file))
    else:
        splits = _splits(table, d.split_column, d.val_fraction, seed, d.table)
    if d.path_column is None:
        inputs = H5Provider(h5, transform, augment, spec.train.seed)
    else:
        checked_shape(samples, splits)
        workers = default_num_workers() if spec.train.num_workers is None else spec.train.num_workers
        inputs = FileProvider(samples, workers, pin_memory)
    targets, classes = _targets(table[d.label], spec.train.task, d.label, d.table)
    categorical = list(d.categorical) + ([d.label] if spec.train.task == "multiclass" else [])
    design = DesignMatrix(d.metadata, spec.mdn.preserve, categorical, spec.mdn.standardize).fit(table.iloc[splits["train"]])
    design_rows = torch.from_numpy(design.transform(table).astype(np.float32))
    stages = _stages(table[d.stage_column], splits, d.stage_column, str(d.table)) if d.stage_column else None
    return TrainingData(inputs, table, targets, classes, design, design_rows, splits, stages)


def _stages(column: pd.Series, splits: dict[str, np.ndarray], name: str, table_name: str) -> dict[str, np.ndarray]:
    """Stage name -> rows, in the column's natural order (numbers by value); each stage needs train and val rows."""
    values = level_strings(column).to_numpy()
    stages = {stage: np.flatnonzero(values == stage) for stage in sorted_levels(column)}
    for stage, rows in stages.items():
        for split in ("train", "val"):
            if len(np.intersect1d(rows, splits[split])) == 0:
                raise MdnError(f"stage {stage!r} of column {name!r} has no {split!r} rows.", where=table_name,
                               hint="give every stage training and validation rows.")
    return stages


def read_split_file(path, table: pd.DataFrame, id_column: str | None) -> pd.DataFrame:
    """Each table row's split from a CSV of (the id column, or `row`: the row's position, and `split`).

    How `mdn train --folds` gives every fold its rows: the file sits in the fold's run directory,
    so the fold's splits are what every later command (extract, refit, evaluate) sees.
    """
    assignment = read_table(path, id_column)
    key = id_column if id_column is not None else "row"
    for column in (key, "split"):
        if column not in assignment.columns:
            raise MdnError(f"no column {column!r}.", where=str(path), hint=f"a split file has the columns {key} and split.")
    keys = table[id_column].astype(str) if id_column is not None else pd.Series(np.arange(len(table))).astype(str)
    split = assignment.set_index(assignment[key].astype(str))["split"]
    if not split.index.is_unique:
        raise MdnError(f"{key} values appear more than once.", where=str(path), hint="give each row one split.")
    missing = ~keys.isin(split.index)
    if missing.any():
        raise MdnError(f"{int(missing.sum())} rows of the table have no split (e.g. {listing(keys[missing].tolist())}).", where=str(path), hint="list every row of the table.")
    return pd.DataFrame({"split": split.loc[keys].to_numpy()})


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

