"""Rows providers: how TrainingData reads its samples, from HDF5 rows or from one file per table row.

Both give ``batches(batches, epoch)``: one float32 tensor per array of row indices, ``transform``
applied to every sample and ``augment`` only when ``epoch`` is given (training batches), drawn
from ``sample_generator(seed, epoch, row)``. So a batch's numbers depend neither on the number
of loader workers nor on where a run was resumed. Read failures become ``MdnError`` naming the
row id and the file (or the spec key of the transform step that failed).
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Sampler

from mdn_cli.data.clips import ClipSampler
from mdn_cli.data.file_dataset import (
    FileLoader,
    FileSamples,
    SampleBatches,
    SampleTransformError,
    VideoSamples,
    check_files,
    check_shapes,
)
from mdn_cli.data.h5 import H5Rows
from mdn_cli.data.readers import SUPPORTED_EXTENSIONS, SampleReadError, extension_of
from mdn_cli.data.transforms import (
    Compose,
    TransformApplyError,
    output_shape,
    sample_generator,
)
from mdn_cli.data.video import VIDEO_EXTENSIONS
from mdn_cli.stats.validation import listing
from mdn_cli.utils.errors import MdnError


def sample_error(exc: SampleReadError) -> MdnError:
    """The user-facing form of a sample that cannot be used: row id and file, or the failing spec step."""
    where = ", ".join(part for part in (f"row id {exc.row_id}" if exc.row_id is not None else None, exc.path) if part) or None
    if isinstance(exc, SampleTransformError):
        return MdnError(f"cannot apply to {where}: {exc.detail}", where=f"data.{exc.transforms}[{exc.step}].{exc.name}", hint=exc.hint)
    return MdnError(exc.message, where=where, hint=exc.hint)


def transform_error(exc: TransformApplyError, key: str, shape: tuple[int, ...]) -> MdnError:
    return MdnError(f"cannot apply to samples of shape {shape}: {exc.message}", where=f"data.{key}[{exc.step}].{exc.name}", hint=exc.hint)


class H5Provider:
    """HDF5 rows (``H5Rows.take``), with the spec's transform and augment applied per sample when there are any.

    Without steps the tensor is ``take``'s, untouched (the shipped HDF5 runs keep their numbers).
    """

    views = 1  # samples per row at evaluation

    def __init__(self, rows: H5Rows, transform: Compose, augment: Compose, seed: int):
        self.rows, self.transform, self.augment, self.seed = rows, transform, augment, seed
        shape = tuple(rows.shape[1:])
        for key, steps in (("transform", transform), ("augment", augment)):
            try:
                shape_after = output_shape(steps, shape)
            except TransformApplyError as exc:
                raise transform_error(exc, key, shape) from None
            if key == "augment" and shape_after != shape:
                raise MdnError(f"changes the sample shape {shape} to {shape_after}, but evaluation (without augment) sees {shape}.", where="data.augment",
                               hint="keep the shape (e.g. random_crop with padding); crop or resize in data.transform instead.")
            shape = shape_after
        self.sample_shape = shape

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, rows: np.ndarray, epoch: int | None = None) -> torch.Tensor:
        x = torch.from_numpy(self.rows.take(rows))
        augment = epoch is not None and len(self.augment) > 0
        if not len(self.transform) and not augment:
            return x
        out = []
        for row, sample in zip(np.asarray(rows).tolist(), x):
            if len(self.transform):
                sample = self.transform(sample)
            if augment:
                sample = self.augment(sample, sample_generator(self.seed, epoch, row))
            out.append(sample)
        return torch.stack(out)

    def batches(self, batches: Sequence[np.ndarray], epoch: int | None = None) -> Iterator[torch.Tensor]:
        for rows in batches:
            yield self.take(rows, epoch) if len(rows) else torch.zeros(0, *self.sample_shape)


class _GivenBatches(Sampler):
    """The keys of the next pass, set by FileProvider before it starts (read in the main process, so persistent workers follow)."""

    def __init__(self):
        self.keys: list[tuple[tuple[int, ...], int, bool]] = []

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self):
        return iter(list(self.keys))


class FileProvider:
    """One file per table row (``FileSamples``), read through one DataLoader with persistent workers."""

    def __init__(self, samples: FileSamples, num_workers: int = 0, pin_memory: bool = False):
        self.samples, self.num_workers, self.pin_memory = samples, num_workers, pin_memory
        self.sample_shape = samples.expected_shape
        self.views = samples.views  # samples per row at evaluation (a video's clips)
        self._sampler = _GivenBatches()
        self._loader: FileLoader | None = None

    def __len__(self) -> int:
        return len(self.samples)

    def take(self, rows: np.ndarray, epoch: int | None = None) -> torch.Tensor:
        try:
            return torch.stack([self.samples.load(int(row), epoch or 0, epoch is not None) for row in rows])
        except SampleReadError as exc:
            raise sample_error(exc) from None

    def batches(self, batches: Sequence[np.ndarray], epoch: int | None = None) -> Iterator[torch.Tensor]:
        self._sampler.keys = [(tuple(np.asarray(rows).tolist()), epoch or 0, epoch is not None) for rows in batches if len(rows)]
        if self._loader is None:
            self._loader = FileLoader(SampleBatches(self.samples), batch_size=None, sampler=self._sampler, num_workers=self.num_workers,
                                      pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0)
        loaded = iter(self._loader)
        for rows in batches:
            if not len(rows):
                yield torch.zeros(0, *([self.views] if epoch is None and self.views > 1 else []), *self.sample_shape)
                continue
            try:
                _rows, x = next(loaded)
            except SampleReadError as exc:
                raise sample_error(exc) from None
            yield x


def file_samples(table: pd.DataFrame, path_column: str, folder: str, ids: Sequence, table_name: str, *, channels: int | None,
                 transform: Compose, augment: Compose, seed: int, clips: ClipSampler | None = None) -> FileSamples:
    """FileSamples for a table's path column (relative paths from ``folder``), every file checked to exist;
    VideoSamples with ``clips`` (video files or frame folders, the transforms built with ``clips=True``)."""
    if path_column not in table.columns:
        raise MdnError(f"no path column {path_column!r}.", where=table_name, hint=f"columns are: {listing(list(table.columns), 12)}.")
    values = table[path_column]
    empty = np.flatnonzero(values.isna().to_numpy())
    if len(empty):
        raise MdnError(f"path column {path_column!r} is empty in {len(empty)} row(s) (ids/rows {listing([ids[i] for i in empty])}).", where=table_name,
                       hint="every row needs its sample's file.")
    paths = [os.path.normpath(os.path.join(folder, os.path.expanduser(str(value)))) for value in values]
    if clips is None:
        unknown = [(ids[i], path) for i, path in enumerate(paths) if extension_of(path) not in SUPPORTED_EXTENSIONS]
        supported = f"supported extensions: {', '.join(SUPPORTED_EXTENSIONS)}" + (" (for videos, set data.clip)" if any(extension_of(p) in VIDEO_EXTENSIONS for _, p in unknown) else "")
    else:
        unknown = [(ids[i], path) for i, path in enumerate(paths) if extension_of(path) not in VIDEO_EXTENSIONS and not os.path.isdir(path) and os.path.exists(path)]
        supported = f"with data.clip every path is a video ({', '.join(VIDEO_EXTENSIONS)}) or a folder of frames"
    if unknown:
        shown = "; ".join(f"row id {row_id}: {path}" for row_id, path in unknown[:10])
        raise MdnError(f"{len(unknown)} of {len(paths)} sample files have an unsupported type: {shown}" + ("; ..." if len(unknown) > 10 else "") + ".",
                       where=f"{table_name}, column {path_column!r}", hint=f"{supported}.")
    try:
        check_files(paths, ids, folders=clips is not None)
    except SampleReadError as exc:
        raise MdnError(exc.message, where=f"{table_name}, column {path_column!r}", hint=f"{exc.hint} Paths are relative to {folder}.") from None
    steps = {"transform": transform if len(transform) else None, "augment": augment if len(augment) else None}
    if clips is not None:
        return VideoSamples(paths, ids, clips, channels=channels, seed=seed, **steps)
    return FileSamples(paths, ids, channels=channels, seed=seed, **steps)


def checked_shape(samples: FileSamples, splits: dict[str, np.ndarray]) -> tuple[int, ...]:
    """``check_shapes`` (the first file of each split decodes; one shape after transform), as an MdnError."""
    try:
        return check_shapes(samples, splits)
    except SampleReadError as exc:
        raise sample_error(exc) from None


def video_survey(samples: VideoSamples) -> dict:
    """Every video probed (header only): how many, their frame counts, how many are shorter than a clip
    (played in a loop), and one shape after ``transform`` for all, else an MdnError naming a video of each size."""
    infos = []
    for row in range(len(samples)):
        try:
            infos.append(samples.info(row))
        except SampleReadError as exc:
            raise sample_error(exc) from None
    frames = np.array([info.frames for info in infos])
    first_of: dict[tuple[int, int], int] = {}
    for row, info in enumerate(infos):
        first_of.setdefault((info.height, info.width), row)
    channels = samples.channels or 3
    shapes = {}
    for size, row in first_of.items():
        try:
            shapes[size] = output_shape(samples.transform or Compose((), clips=True), (channels, samples.clips.frames, *size))
        except TransformApplyError as exc:
            raise transform_error(exc, "transform", (channels, samples.clips.frames, *size)) from None
    if len(set(shapes.values())) > 1:
        shown = "; ".join(f"row id {samples.ids[row]} ({samples.paths[row]}): {size[1]}x{size[0]}" for size, row in list(first_of.items())[:5])
        raise MdnError(f"the videos have {len(first_of)} frame sizes ({shown}), and data.transform does not bring them to one.",
                       where="data.transform", hint="add resize: {size: [H, W]} (every frame alike) to data.transform.")
    return {"videos": len(infos), "frames": [int(frames.min()), int(np.median(frames)), int(frames.max())],
            "clip_span": samples.clips.span, "looped": int((frames < samples.clips.span).sum())}
