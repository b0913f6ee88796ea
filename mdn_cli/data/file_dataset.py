"""A torch Dataset over sample files listed in a table, with checks up front and a DataLoader that keeps row order.

Augmentation draws from ``sample_generator(seed, epoch, row)``: batches are identical whatever
the number of workers, and a resumed run continues identically. Every failure is a
SampleReadError naming the row id and the file, also when it happens in a worker process.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from mdn_cli.data.batching import batch_rows
from mdn_cli.data.clips import ClipSampler
from mdn_cli.data.readers import SampleReadError, read_raw, to_float
from mdn_cli.data.transforms import Compose, TransformApplyError, output_shape, sample_generator
from mdn_cli.data.video import VideoInfo, probe, read_clips


class MissingFilesError(SampleReadError):
    """Sample files that do not exist; ``missing`` lists every one as (row id, path)."""

    def __init__(self, missing: list[tuple[object, str]], total: int, limit: int = 10):
        self.missing = missing
        super().__init__(f"{len(missing)} of {total} sample files do not exist: {rows_listed(missing, limit)}.", hint="check the path column and the folder the paths are relative to.")


def rows_listed(rows: list[tuple[object, str]], limit: int) -> str:
    """(row id, path) pairs for a message: the first ``limit``, then how many more."""
    shown = "; ".join(f"row id {row_id}: {path}" for row_id, path in rows[:limit])
    return shown + (f"; and {len(rows) - limit} more" if len(rows) > limit else "")


class SampleShapeError(SampleReadError):
    """Samples that end up with different shapes; ``shapes`` lists (row id, path, shape) of those compared."""

    def __init__(self, message: str, *, shapes: list[tuple[object, str, tuple[int, ...]]], hint: str | None, path: str | None = None, row_id: object = None):
        self.shapes = shapes
        super().__init__(message, path=path, row_id=row_id, hint=hint)


class SampleTransformError(SampleReadError):
    """A transform that cannot apply to a row's sample; ``transforms`` ('transform' or 'augment'), ``step`` and ``name`` locate it in the spec."""

    def __init__(self, error: TransformApplyError, *, transforms: str, path: str, row_id: object):
        self.transforms, self.step, self.name, self.detail = transforms, error.step, error.name, error.message
        super().__init__(f"{transforms} step {error.step} ({error.name}): {error.message}", path=path, row_id=row_id, hint=error.hint)


class FileSamples(Dataset):
    """One sample per file: ``samples[row] -> (row, tensor)``, read as float32 (``readers.read_sample``).

    ``transform`` applies to every sample; ``augment`` (random steps) only while ``training`` is
    True, like ``nn.Module.train()``: set it before each pass (``loader`` picks it up, with the
    epoch from ``set_epoch``, when a pass starts, also for persistent workers; other attributes
    reach workers as they were when the workers started). ``expected_shape`` (set by
    ``check_shapes``) is the shape after ``transform``; a sample that differs raises
    SampleShapeError with its row id when it is loaded. ``views`` is the number of samples a row
    gives at evaluation (1; a video's ``eval_clips``).
    """

    views = 1

    def __init__(
        self,
        paths: Sequence[str | Path],
        ids: Sequence,
        channels: int | None = None,
        transform: Compose | None = None,
        augment: Compose | None = None,
        seed: int = 0,
        training: bool = False,
    ):
        if len(paths) != len(ids):
            raise ValueError(f"{len(paths)} paths but {len(ids)} ids")
        self.paths = [str(path) for path in paths]
        self.ids = [value.item() if isinstance(value, np.generic) else value for value in ids]
        self.channels, self.transform, self.augment, self.seed = channels, transform, augment, seed
        self.training = training
        self.epoch = 0
        self.expected_shape: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose augmentation the next pass draws."""
        self.epoch = epoch

    def __getitem__(self, row: int) -> tuple[int, torch.Tensor]:
        return row, self.load(row, self.epoch, self.training)

    def sample(self, row: int) -> torch.Tensor:
        """The row's sample after ``transform``, without augmentation (a video's centre clip)."""
        return self._checked(row, self._transformed(row))

    def load(self, row: int, epoch: int, training: bool) -> torch.Tensor:
        x = self.sample(row)
        if training and self.augment is not None:
            x = self._apply(self.augment, "augment", x, row, sample_generator(self.seed, epoch, row))
        return x

    def _checked(self, row: int, x: torch.Tensor) -> torch.Tensor:
        if self.expected_shape is not None and tuple(x.shape) != self.expected_shape:
            shape = tuple(x.shape)
            raise SampleShapeError(
                f"its sample has shape {shape} after the transforms; the first samples have {self.expected_shape}.",
                shapes=[(self.ids[row], self.paths[row], shape)],
                hint=_shape_hint(shape, self.expected_shape),
                path=self.paths[row],
                row_id=self.ids[row],
            )
        return x

    def raw(self, row: int) -> np.ndarray:
        """The row's sample as stored (``readers.read_raw``): what ``mdn pack`` keeps when it can."""
        try:
            return read_raw(self.paths[row], self.channels)
        except SampleReadError as exc:
            raise exc.for_row(self.ids[row]) from None

    def _transformed(self, row: int) -> torch.Tensor:
        x = to_float(self.raw(row))
        return x if self.transform is None else self._apply(self.transform, "transform", x, row, None)

    def _apply(self, steps: Compose, transforms: str, x: torch.Tensor, row: int, generator: torch.Generator | None) -> torch.Tensor:
        try:
            return steps(x, generator)
        except TransformApplyError as exc:
            raise SampleTransformError(exc, transforms=transforms, path=self.paths[row], row_id=self.ids[row]) from exc


class VideoSamples(FileSamples):
    """One video per row (a video file or a folder of frames), read as (C, T, H, W) clips (``clips.ClipSampler``).

    Training gives one clip per row and epoch, its start drawn first from ``sample_generator(seed,
    epoch, row)`` (``train: random``), the augmentation then drawing from the same generator;
    evaluation gives the ``eval_clips`` evenly spread clips, stacked as (K, C, T, H, W) when K > 1.
    ``transform`` and ``augment`` must be built with ``clips=True``. Each sample opens its video
    once and decodes only the frames its clips need (``video.read_clips``).
    """

    def __init__(self, paths: Sequence[str | Path], ids: Sequence, clips: ClipSampler, channels: int | None = None,
                 transform: Compose | None = None, augment: Compose | None = None, seed: int = 0, training: bool = False):
        super().__init__(paths, ids, channels, transform, augment, seed, training)
        self.clips = clips

    @property
    def views(self) -> int:
        return self.clips.eval_clips

    def info(self, row: int) -> VideoInfo:
        """The row's frame count and size, from the header."""
        try:
            return probe(self.paths[row])
        except SampleReadError as exc:
            raise exc.for_row(self.ids[row]) from None

    def raw(self, row: int) -> np.ndarray:
        """The uint8 (C, T, H, W) centre clip, as decoded."""
        return self._read(row, lambda n: [self.clips.indices(n, self.clips.center_start(n))])[0]

    def _read(self, row: int, clips) -> list[np.ndarray]:
        try:
            return read_clips(self.paths[row], clips, self.channels)
        except SampleReadError as exc:
            raise exc.for_row(self.ids[row]) from None

    def _prepared(self, row: int, clip: np.ndarray) -> torch.Tensor:
        x = to_float(clip)
        return x if self.transform is None else self._apply(self.transform, "transform", x, row, None)

    def _transformed(self, row: int) -> torch.Tensor:
        return self._prepared(row, self.raw(row))

    def load(self, row: int, epoch: int, training: bool) -> torch.Tensor:
        if not training:
            clips = self._read(row, lambda n: [self.clips.indices(n, s) for s in self.clips.eval_starts(n)])
            clips = [self._checked(row, self._prepared(row, clip)) for clip in clips]
            return torch.stack(clips) if len(clips) > 1 else clips[0]
        generator = sample_generator(self.seed, epoch, row)
        [clip] = self._read(row, lambda n: [self.clips.indices(n, self.clips.train_start(n, generator))])
        x = self._checked(row, self._prepared(row, clip))
        return x if self.augment is None else self._apply(self.augment, "augment", x, row, generator)


def check_files(paths: Sequence[str | Path], ids: Sequence, limit: int = 10, folders: bool = False) -> None:
    """MissingFilesError listing every missing file (or folder, with ``folders``) with its row id (the first ``limit`` in the message);
    paths that are directories where files are expected are named as such."""
    exists = os.path.exists if folders else os.path.isfile
    missing = [(row_id.item() if isinstance(row_id, np.generic) else row_id, str(path)) for path, row_id in zip(paths, ids) if not exists(path)]
    directories = [] if folders else [(row_id, path) for row_id, path in missing if os.path.isdir(path)]  # not missing: the wrong kind
    if directories:
        raise SampleReadError(f"{len(directories)} of {len(paths)} sample paths are directories, not files: {rows_listed(directories, limit)}.",
                              hint="point the path column at the sample files themselves.")
    if missing:
        raise MissingFilesError(missing, total=len(paths), limit=limit)


def check_shapes(samples: FileSamples, rows_by_split: Mapping[str, Sequence[int]]) -> tuple[int, ...]:
    """The one shape of the samples after ``transform``, checked on the first row of each split; sets ``samples.expected_shape``.

    Decoding every file up front would take as long as an epoch for a big study, so only the
    first row of each split is read here; a later sample with another shape fails when it is
    loaded, naming its row id. ``augment`` must keep the shape (evaluation does not augment).
    """
    samples.expected_shape = None
    firsts = [(split, int(rows[0])) for split, rows in rows_by_split.items() if len(rows)]
    shapes = [(split, row, tuple(samples._transformed(row).shape)) for split, row in firsts]
    if not shapes:
        raise ValueError("no rows to check")
    if len({shape for _, _, shape in shapes}) > 1:
        listed = "; ".join(f"{split} row id {samples.ids[row]} ({samples.paths[row]}): {shape}" for split, row, shape in shapes)
        raise SampleShapeError(
            f"samples have different shapes after the transforms: {listed}.",
            shapes=[(samples.ids[row], samples.paths[row], shape) for _, row, shape in shapes],
            hint=_shape_hint(next(shape for _, _, shape in shapes if shape != shapes[0][2]), shapes[0][2]),
        )
    _, row, shape = shapes[0]
    if samples.augment is not None:
        try:
            augmented = output_shape(samples.augment, shape)
        except TransformApplyError as exc:
            raise SampleTransformError(exc, transforms="augment", path=samples.paths[row], row_id=samples.ids[row]) from exc
        if augmented != shape:
            raise SampleShapeError(
                f"augment changes the sample shape {shape} to {augmented}, but evaluation (without augment) sees {shape}.",
                shapes=[(samples.ids[row], samples.paths[row], shape)],
                hint="keep the shape: e.g. random_crop with size equal to the input and padding 4; crop or resize in transform instead.",
            )
    samples.expected_shape = shape
    return shape


def _shape_hint(shape: tuple[int, ...], expected: tuple[int, ...]) -> str:
    """Which setting would give every sample the ``expected`` shape."""
    if len(shape) != len(expected):
        return "the files mix 2D images and 3D volumes; a study needs one kind."
    if shape[0] != expected[0]:
        return f"read every file with the same channel count (channels: {expected[0]})."
    spatial = list(expected[1:])
    return f"end the transform list with resize: {{size: {spatial}}} (interpolates) or pad_or_crop: {{shape: {spatial}}} (pads or crops)."


class RowBatches(Sampler):
    """Batches of ``rows`` in the given order, or permuted by ``shuffle_seed`` (as ``TrainingData.batches``).

    Each batch travels as ``(rows, epoch, training)`` read from ``samples`` when a pass starts,
    in the main process, so that ``set_epoch`` and ``training`` reach persistent workers too;
    ``shuffle_seed`` may likewise be changed between passes.
    """

    def __init__(self, samples: FileSamples, rows: Sequence[int], batch_size: int, shuffle_seed: int | None = None):
        self.samples, self.rows, self.batch_size, self.shuffle_seed = samples, np.asarray(rows, dtype=np.int64), batch_size, shuffle_seed

    def __len__(self) -> int:
        return math.ceil(len(self.rows) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[tuple[int, ...], int, bool]]:
        epoch, training = self.samples.epoch, self.samples.training
        for rows in batch_rows(self.rows, self.batch_size, self.shuffle_seed):
            yield tuple(rows.tolist()), epoch, training


class SampleBatches(Dataset):
    """Whole batches for RowBatches' keys; an error is returned, not raised, so that it reaches the main process whole.

    The samples are stacked by ``default_collate``, which in a worker stacks straight into shared
    memory (a plain ``torch.stack`` would be copied there again to cross to the main process); the
    rows travel as a tuple, pickled with the batch, rather than as a second shared tensor.
    """

    def __init__(self, samples: FileSamples):
        self.samples = samples

    def __getitem__(self, key: tuple[tuple[int, ...], int, bool]) -> tuple[tuple[int, ...], torch.Tensor] | SampleReadError:
        rows, epoch, training = key
        try:
            tensors = [self.samples.load(row, epoch, training) for row in rows]
            for row, x in zip(rows, tensors):
                if x.shape != tensors[0].shape:
                    s = self.samples
                    raise SampleShapeError(
                        f"its sample has shape {tuple(x.shape)}, but row id {s.ids[rows[0]]} in the same batch has {tuple(tensors[0].shape)}.",
                        shapes=[(s.ids[r], s.paths[r], tuple(t.shape)) for r, t in ((rows[0], tensors[0]), (row, x))],
                        hint=_shape_hint(tuple(x.shape), tuple(tensors[0].shape)),
                        path=s.paths[row],
                        row_id=s.ids[row],
                    )
            return rows, default_collate(tensors)
        except SampleReadError as exc:
            return exc


def _whole(batch):
    """SampleBatches' batch as it is: the default (``default_convert``) would walk every row index of it."""
    return batch


class FileLoader(DataLoader):
    """A DataLoader of ``(rows, inputs)`` batches that re-raises a worker's SampleReadError with its fields."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, collate_fn=_whole, **kwargs)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for batch in super().__iter__():
            if isinstance(batch, SampleReadError):
                raise batch
            rows, inputs = batch
            yield torch.tensor(rows, dtype=torch.long), inputs


def loader(
    samples: FileSamples,
    rows: Sequence[int],
    batch_size: int,
    shuffle_seed: int | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    persistent_workers: bool = False,
) -> FileLoader:
    """``(rows, inputs)`` batches (a LongTensor of row indices, stacked samples) over ``rows`` in order (see RowBatches).

    Workers need no seeding: each sample's random numbers come from (seed, epoch, row).
    """
    return FileLoader(
        SampleBatches(samples),
        batch_size=None,
        sampler=RowBatches(samples, rows, batch_size, shuffle_seed),
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=persistent_workers and num_workers > 0,
    )


def default_num_workers() -> int:
    """min(4, usable cores - 1), at least 0: leaves a core for the training loop."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores - 1))
