"""Samples/s of whole epochs from sample files: `FileSamples` + `loader` against a plain Dataset and an HDF5 array.

Generates a PNG study (64x64 grayscale) and a NIfTI study (48^3 float32, gzipped), then loads
full epochs in batches of 64 with ``zscore`` as the transform and a random ``flip`` of every
axis as augmentation, at 0, 1 and 2 workers, three ways, interleaved round by round:

- ours: ``FileSamples`` + ``loader`` (per-sample generator from (seed, epoch, row), errors with row ids);
- plain: a hand-written Dataset that reads with Pillow/nibabel and does the same arithmetic;
- HDF5: the same samples packed into one float32 array, read as contiguous slices of 64 rows
  (the best case for `mdn` today: no decoding, sequential reads).

A video study (MPEG-4 .avi, 32 frames of 64x64 RGB) loads clips of 8 frames, every 2nd, at a
random start seeded per (seed, epoch, row), zscore over the clip and a random left-right flip:
ours is ``VideoSamples`` + ``loader``, plain a hand-written Dataset that seeks and decodes the same
clip with PyAV, HDF5 the centre clips as `mdn pack` stores them (uint8, divided by 255).

Every epoch is timed whole, worker start-up included, in row order.

    .venv/bin/python benchmarks/input_pipeline.py [--n-png 20000] [--n-nifti 2000] [--n-video 2000] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from mdn_cli.data.clips import ClipSampler
from mdn_cli.data.file_dataset import FileSamples, VideoSamples, loader
from mdn_cli.data.readers import write_image_study
from mdn_cli.data.transforms import Compose, parse_steps
from mdn_cli.data.video import write_video

BATCH, SEED, WORKERS = 64, 0, (0, 1, 2)
CLIPS = ClipSampler(frames=8, stride=2, train="random")
WAYS = ("ours", "plain", "HDF5")


def make_study(folder: Path, fmt: str, n: int, size: int, rng: np.random.Generator) -> tuple[list[Path], Path]:
    """Sample files plus the same samples as one HDF5 array ``x`` (float32, as `mdn` reads them)."""
    spatial = (size, size) if fmt == "png" else (size, size, size)
    packed, paths = folder / f"{fmt}.h5", []
    with h5py.File(packed, "w") as f:
        x = f.create_dataset("x", (n, 1, *spatial), dtype=np.float32)
        for start in range(0, n, 500):
            images = rng.normal(size=(min(500, n - start), 1, *spatial)).astype(np.float32)
            table = pd.DataFrame({"id": [f"{i:06d}" for i in range(start, start + len(images))]})
            part = [folder / fmt / path for path in write_image_study(folder / fmt, images, table, fmt)["path"]]
            x[start : start + len(images)] = np.stack([_plain_read(path) for path in part])  # as stored (PNG: 8-bit)
            paths += part
    return paths, packed


def make_video_study(folder: Path, n: int, rng: np.random.Generator) -> tuple[list[Path], Path]:
    """``n`` videos of 32 frames (64x64 RGB, MPEG-4 .avi) plus their centre clips packed as uint8 (what `mdn pack` writes)."""
    (folder / "video").mkdir(parents=True, exist_ok=True)
    paths = []
    with h5py.File(folder / "video.h5", "w") as f:
        x = f.create_dataset("x", (n, 3, CLIPS.frames, 64, 64), dtype=np.uint8)
        for row in range(n):
            path = folder / "video" / f"{row:06d}.avi"
            write_video(path, rng.integers(0, 255, (3, 32, 64, 64), dtype=np.uint8))
            x[row] = _plain_clip(path, CLIPS.center_start)
            paths.append(path)
    return paths, folder / "video.h5"


def _plain_clip(path: Path, choose_start) -> np.ndarray:
    """(3, T, H, W) uint8 from ``choose_start(frame count)``: seek to the keyframe before the start, decode to the clip's last frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        start = choose_start(stream.frames)
        rate = stream.average_rate
        container.seek(int(start / (rate * stream.time_base)), stream=stream)
        wanted, frames = set(range(start, start + CLIPS.span, CLIPS.stride)), []
        for frame in container.decode(stream):
            index = round(float(frame.pts * stream.time_base * rate))
            if index in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
            if index >= start + CLIPS.span - 1:
                break
    return np.stack(frames).transpose(3, 0, 1, 2)


def _plain_video_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    x = (x - x.mean()) / x.std(correction=0)
    return torch.flip(x, [3]) if torch.rand(1, generator=generator).item() < 0.5 else x


class PlainClips(Dataset):
    def __init__(self, paths: list[Path], epoch: int):
        self.paths, self.epoch = paths, epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(SEED * 1_000_003 + self.epoch * 100_003 + row)
        clip = _plain_clip(self.paths[row], lambda frames: int(torch.randint(0, frames - CLIPS.span + 1, (1,), generator=generator)))
        return _plain_video_augment(torch.from_numpy(clip).float() / 255, generator)


def _plain_read(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        return (np.asarray(Image.open(path), dtype=np.float32) / np.float32(255))[None]
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)[None]


def _plain_augment(x: torch.Tensor, epoch: int, row: int) -> torch.Tensor:
    """zscore over the sample, then each spatial axis flipped with probability 0.5."""
    x = (x - x.mean()) / x.std(correction=0)
    draws = torch.rand(x.dim() - 1, generator=torch.Generator().manual_seed(SEED * 1_000_003 + epoch * 100_003 + row))
    axes = [axis + 1 for axis in range(x.dim() - 1) if draws[axis] < 0.5]
    return torch.flip(x, axes) if axes else x


class PlainFiles(Dataset):
    def __init__(self, paths: list[Path], epoch: int):
        self.paths, self.epoch = paths, epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> torch.Tensor:
        return _plain_augment(torch.from_numpy(_plain_read(self.paths[row])), self.epoch, row)


class PackedRows(Dataset):
    """Batch ``i`` is rows [64 i, 64 (i + 1)) of the HDF5 array, opened in each worker."""

    def __init__(self, path: Path, n: int, epoch: int):
        self.path, self.n, self.epoch, self.file = path, n, epoch, None

    def __len__(self) -> int:
        return math.ceil(self.n / BATCH)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self.file is None:
            self.file = h5py.File(self.path, "r")
        block = torch.from_numpy(self.file["x"][i * BATCH : (i + 1) * BATCH])
        if block.dtype == torch.uint8:  # video: centre clips
            return torch.stack([_plain_video_augment(x.float() / 255, torch.Generator().manual_seed(SEED * 1_000_003 + self.epoch * 100_003 + i * BATCH + k))
                                for k, x in enumerate(block)])
        return torch.stack([_plain_augment(x, self.epoch, i * BATCH + k) for k, x in enumerate(block)])


def epoch_seconds(way: str, paths: list[Path], packed: Path, workers: int, epoch: int) -> float:
    dims = 2 if paths[0].suffix == ".png" else 3
    if way == "ours" and paths[0].suffix == ".avi":
        samples = VideoSamples(paths, list(range(len(paths))), CLIPS, transform=Compose(parse_steps(["zscore"]), clips=True),
                               augment=Compose(parse_steps([{"flip": {"axes": [1]}}]), clips=True), seed=SEED, training=True)
        samples.set_epoch(epoch)
        batches = (x for _, x in loader(samples, range(len(paths)), BATCH, num_workers=workers))
    elif way == "plain" and paths[0].suffix == ".avi":
        batches = iter(DataLoader(PlainClips(paths, epoch), batch_size=BATCH, num_workers=workers))
    elif way == "ours":
        samples = FileSamples(paths, list(range(len(paths))), transform=Compose(parse_steps(["zscore"])), augment=Compose(parse_steps([{"flip": {"axes": list(range(dims))}}])), seed=SEED, training=True)
        samples.set_epoch(epoch)
        batches = (x for _, x in loader(samples, range(len(paths)), BATCH, num_workers=workers))
    elif way == "plain":
        batches = iter(DataLoader(PlainFiles(paths, epoch), batch_size=BATCH, num_workers=workers))
    else:
        batches = iter(DataLoader(PackedRows(packed, len(paths), epoch), batch_size=None, num_workers=workers))
    started = time.perf_counter()
    seen = sum(len(x) for x in batches)
    seconds = time.perf_counter() - started
    assert seen == len(paths)
    return seconds


def check_same_numbers(paths: list[Path], packed: Path) -> None:
    """Without augmentation the three ways give the same first batch (so they do the same work)."""
    first = paths[:BATCH]
    if first[0].suffix == ".avi":  # the centre clips, zscored
        samples = VideoSamples(first, list(range(len(first))), ClipSampler(8, 2, "center"), transform=Compose(parse_steps(["zscore"]), clips=True))
        _, ours = next(iter(loader(samples, range(len(first)), BATCH)))
        plain = torch.stack([torch.from_numpy(_plain_clip(p, CLIPS.center_start)).float() / 255 for p in first])
        with h5py.File(packed, "r") as f:
            block = torch.from_numpy(f["x"][: len(first)]).float() / 255
        assert torch.equal(plain, block)
        assert torch.allclose(ours, torch.stack([(x - x.mean()) / x.std(correction=0) for x in plain]), atol=1e-5)
        return
    samples = FileSamples(first, list(range(len(first))), transform=Compose(parse_steps(["zscore"])))
    _, ours = next(iter(loader(samples, range(len(first)), BATCH)))
    plain = torch.stack([(x - x.mean()) / x.std(correction=0) for x in (torch.from_numpy(_plain_read(p)) for p in first)])
    with h5py.File(packed, "r") as f:
        block = torch.from_numpy(f["x"][: len(first)])
    assert torch.allclose(ours, plain, atol=1e-5) and torch.allclose(ours, torch.stack([(x - x.mean()) / x.std(correction=0) for x in block]), atol=1e-5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-png", type=int, default=20_000)
    parser.add_argument("--n-nifti", type=int, default=2_000)
    parser.add_argument("--n-video", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the studies (default: a temporary folder)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one sample at a time: intra-op threads only add overhead
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        started = time.perf_counter()
        studies = {name: make(n) for name, n, make in (
            ("PNG 64x64", args.n_png, lambda n: make_study(folder, "png", n, 64, rng)),
            ("NIfTI 48^3", args.n_nifti, lambda n: make_study(folder, "nifti", n, 48, rng)),
            ("video 8x64x64 clips", args.n_video, lambda n: make_video_study(folder, n, rng))) if n}
        print(f"generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        results: dict[tuple[str, int, str], list[float]] = {}
        for name, (paths, packed) in studies.items():
            check_same_numbers(paths, packed)
            for r in range(args.rounds):
                for workers in WORKERS:
                    for way in WAYS if r % 2 == 0 else reversed(WAYS):
                        seconds = epoch_seconds(way, paths, packed, workers, epoch=r)
                        results.setdefault((name, workers, way), []).append(len(paths) / seconds)
        print(f"samples/s, median of {args.rounds} epochs each (batch {BATCH}; zscore + random flip of every axis; video: of W)\n")
        print("| study | n | workers | ours: FileSamples + loader | plain Dataset | HDF5 rows | ours / plain | ours / HDF5 |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|")
        for name, (paths, _) in studies.items():
            for workers in WORKERS:
                ours, plain, packed_rate = (statistics.median(results[(name, workers, way)]) for way in WAYS)
                print(f"| {name} | {len(paths):,} | {workers} | {ours:,.0f} | {plain:,.0f} | {packed_rate:,.0f} | {ours / plain:.2f} | {ours / packed_rate:.2f} |")


if __name__ == "__main__":
    main()
