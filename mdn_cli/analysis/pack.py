"""`mdn pack`: a file-based study decoded once into one HDF5 file, with the spec that trains on it.

Decoding dominates reading files (benchmarks/README.md: packed HDF5 rows are 2-5x faster), so a
study read for many epochs can be packed: every file is read once and ``data.transform`` applied,
into ``DIR/inputs.h5`` (``x`` and ``ids``) beside ``DIR/spec.yaml``, the same spec reading the
packed file (``augment`` kept: it is drawn per epoch). A video is packed as its centre clip
(C, T, H, W), with the clip settings as attributes of ``x`` and in the new spec's ``data.clip``
(train: center, eval_clips: 1). When the transforms only move or select
values (``transforms.needs_float`` is False) 8- and 16-bit samples stay integers, with an ``x``
attribute ``divisor`` that ``H5Rows`` divides by exactly as the file reader does: training on the
packed spec gives the same numbers as training on the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import torch

from mdn_cli.config import Spec, dump_spec
from mdn_cli.data.file_dataset import FileSamples, SampleTransformError
from mdn_cli.data.h5 import CHUNK_BYTES, DIVISOR_ATTR, write_ids
from mdn_cli.data.readers import DIVISORS, SampleReadError
from mdn_cli.data.rows import sample_error
from mdn_cli.data.training import load_training_data
from mdn_cli.data.transforms import Compose, TransformApplyError, needs_float
from mdn_cli.utils.errors import MdnError
from mdn_cli.utils.fileio import atomic_path
from mdn_cli.utils.interrupts import raise_pending

CLIP_NOTE = ("each video is packed as its centre clip: random training starts (clip.train: random) and several evaluation clips "
             "(clip.eval_clips) do not carry over; train on the videos for those.")


def pack(spec: Spec, out_dir: str | Path, progress: Callable[[int, int], None] | None = None) -> dict:
    """Write ``out_dir/inputs.h5`` and ``out_dir/spec.yaml``; the folder appears whole or not at all."""
    out_dir = Path(out_dir)
    d = spec.data
    if d.path_column is None:
        raise MdnError("this spec reads an HDF5 file already (data.inputs); there is nothing to pack.", where=str(spec.source or "spec"),
                       hint="pack a spec with data.path_column.")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise MdnError("already exists and is not an empty folder.", where=str(out_dir), hint="choose a new output folder.")
    data = load_training_data(spec, spec.train.seed)  # every file exists, the first of each split decodes, one shape
    samples = data.inputs.samples
    transform = Compose.from_spec(d.transform, clips=d.clip is not None)
    n, shape = len(samples), data.sample_shape
    first = _raw(samples, 0)
    integer = first.dtype in DIVISORS and not needs_float(transform)
    dtype = first.dtype if integer else np.dtype(np.float32)

    with atomic_path(out_dir, directory=True) as tmp:  # renamed onto out_dir, which is new or an empty folder
        with h5py.File(tmp / "inputs.h5", "w") as f:
            width = int(np.prod(shape)) * dtype.itemsize
            x = f.create_dataset("x", shape=(n, *shape), dtype=dtype, chunks=(max(1, min(n, CHUNK_BYTES // max(width, 1))), *shape),
                                 compression="gzip", compression_opts=4, shuffle=True)
            if integer:
                x.attrs[DIVISOR_ATTR] = DIVISORS[dtype]
            if d.clip is not None:
                x.attrs.update({"clip_frames": d.clip.frames, "clip_stride": d.clip.stride, "clip_start": "center"})
            for row in range(n):
                raise_pending()
                x[row] = _packed_sample(samples, transform, row, dtype, integer, shape).numpy()
                if progress is not None and (row % 64 == 63 or row == n - 1):
                    progress(row + 1, n)
            write_ids(f, np.asarray(samples.ids))
        clip = None if d.clip is None else d.clip.model_copy(update={"train": "center", "eval_clips": 1})
        packed = spec.model_copy(update={"data": d.model_copy(update={
            "inputs": Path("inputs.h5"), "dataset": "x", "ids_dataset": "ids", "path_column": None, "root": None, "channels": None, "transform": [],
            "clip": clip})})
        header = (f"# written by `mdn pack` from {spec.source}: data.transform applied, data.augment kept.\n"
                  "# data.inputs is relative to this file's folder; the table is the original one.\n"
                  + (f"# {CLIP_NOTE}\n" if clip is not None else ""))
        (tmp / "spec.yaml").write_text(header + dump_spec(packed))
    result = {"output": str(out_dir), "inputs": str(out_dir / "inputs.h5"), "spec": str(out_dir / "spec.yaml"), "n": n,
              "sample_shape": list(shape), "dtype": str(dtype), "divisor": DIVISORS[dtype] if integer else None}
    if d.clip is not None and (d.clip.train != "center" or d.clip.eval_clips != 1):
        result["note"] = CLIP_NOTE
    return result


def _raw(samples: FileSamples, row: int) -> np.ndarray:
    try:
        return samples.raw(row)
    except SampleReadError as exc:
        raise sample_error(exc) from None


def _packed_sample(samples: FileSamples, transform: Compose, row: int, dtype: np.dtype, integer: bool, shape: tuple[int, ...]) -> torch.Tensor:
    """A row's sample after ``transform``: as stored (integers) when ``integer``, else the float32 a model sees."""
    try:
        if not integer:
            x = samples.sample(row)
        else:
            raw = samples.raw(row)
            if raw.dtype != dtype:
                raise SampleReadError(f"is stored as {raw.dtype}, but the first file is {dtype}; packed integer samples need one dtype.",
                                      path=samples.paths[row], row_id=samples.ids[row], hint="convert the files to one bit depth.")
            try:
                x = transform(torch.from_numpy(raw))
            except TransformApplyError as exc:
                raise SampleTransformError(exc, transforms="transform", path=samples.paths[row], row_id=samples.ids[row]) from None
    except SampleReadError as exc:
        raise sample_error(exc if exc.row_id is not None else exc.for_row(samples.ids[row])) from None
    if tuple(x.shape) != shape:
        raise MdnError(f"its sample has shape {tuple(x.shape)} after data.transform; the first samples have {shape}.",
                       where=f"row id {samples.ids[row]}, {samples.paths[row]}", hint="end data.transform with resize or pad_or_crop.")
    return x
