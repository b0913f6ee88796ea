"""The synthetic data set of the MDN paper (after BR-Net): a main factor and a confounder in pixels.

Each 32x32 image has four 16x16 quadrants. A Gaussian bump that spans a quadrant is scaled by
the main factor ``mf`` in the top-left and bottom-right quadrants and by the confounder ``cf``
in the bottom-left one; the top-right is empty. Group (label) 0 draws ``mf`` and ``cf`` from
U(1, 4), group 1 from U(3, 6), independently, so ``cf`` predicts the label as well as ``mf``
does: a network can lean on the confounder, which MDN is meant to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import pandas as pd

from mdn_cli.utils.fileio import atomic_path

SIZE, QUADRANT = 32, 16
NOISE_STD = 0.01
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}


def gaussian_bump(size: int = QUADRANT, sigma: float = QUADRANT / 6) -> np.ndarray:
    """A bump with peak 1 whose +-3 sigma spans the quadrant."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return np.outer(g, g)


@dataclass
class SyntheticSet:
    images: np.ndarray  # (n, 1, 32, 32) float32; volumes (n, 1, 32, 32, 32); videos (n, 1, T, 32, 32)
    table: pd.DataFrame  # id, label, cf, mf, split


def make_synthetic(per_group: int, seed: int | Sequence[int] = 0, lows: tuple[float, float] = (1.0, 3.0), width: float = 3.0,
                   shift: float = 0.0) -> SyntheticSet:
    """Group g draws mf and cf from U(lows[g], lows[g] + width): the MDN paper's U(1, 4) / U(3, 6) by
    default; the R-MDN reference's data are lows (3, 4), width 2 (benchmarks/rmdn_reference_data.py).

    ``shift`` moves the groups' cf ranges apart and their mf ranges together by ``shift`` each:
    at half the gap between the lows, mf no longer tells the groups apart and cf does entirely.
    """
    rng = np.random.default_rng(seed)
    label = np.repeat([0, 1], per_group)
    low = np.where(label == 0, lows[0], lows[1])
    sign = np.where(label == 0, -1.0, 1.0)
    mf = low - sign * shift + width * rng.random(2 * per_group)
    cf = low + sign * shift + width * rng.random(2 * per_group)
    bump = gaussian_bump().astype(np.float32)
    images = np.zeros((2 * per_group, 1, SIZE, SIZE), dtype=np.float32)
    q = QUADRANT
    images[:, 0, :q, :q] = mf[:, None, None] * bump  # top-left
    images[:, 0, q:, q:] = mf[:, None, None] * bump  # bottom-right
    images[:, 0, q:, :q] = cf[:, None, None] * bump  # bottom-left
    images += rng.normal(0.0, NOISE_STD, images.shape).astype(np.float32)

    table = pd.DataFrame({"id": np.arange(2 * per_group), "label": label, "cf": cf.round(6), "mf": mf.round(6), "split": _splits(2 * per_group, rng)})
    return SyntheticSet(images, table)


def make_staged_synthetic(per_group: int, stages: int, seed: int = 0) -> SyntheticSet:
    """The synthetic set as ``stages`` stages (R-MDN's continual setting): stage k is ``make_synthetic``
    with ``shift`` rising evenly from 0 (the MDN paper's set) to half the gap between the groups'
    lows, so the confounder's tie to the label grows and the main factor's fades from stage to stage,
    as R-MDN's reference shifts its five stages. Each stage has its own draws and 60/20/20 splits;
    the table has a ``stage`` column (0..stages-1) and ids run on over the stages."""
    lows = (1.0, 3.0)
    parts = [make_synthetic(per_group, (seed, k), lows, shift=(lows[1] - lows[0]) / 2 * k / max(stages - 1, 1)) for k in range(stages)]
    tables = [part.table.assign(id=part.table["id"] + k * 2 * per_group, stage=k) for k, part in enumerate(parts)]
    return SyntheticSet(np.concatenate([part.images for part in parts]), pd.concat(tables, ignore_index=True))


def gaussian_bump_3d(size: int = QUADRANT, sigma: float = QUADRANT / 6) -> np.ndarray:
    """The 3D version of ``gaussian_bump``: peak 1, +-3 sigma spans the octant."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r**2) / (2 * sigma**2))
    return g[:, None, None] * g[None, :, None] * g[None, None, :]


def make_synthetic_3d(per_group: int, seed: int = 0) -> SyntheticSet:
    """The same study as volumes of 32^3 (1, X, Y, Z): the same table (labels, mf, cf, splits) as ``make_synthetic``.

    The bumps become 3D Gaussians in octants: mf in the (0, 0, 0) and (1, 1, 1) octants, cf in
    (1, 0, 0); the other five are empty.
    """
    table = make_synthetic(per_group, seed).table
    rng = np.random.default_rng([seed, 3])
    q = QUADRANT
    bump = gaussian_bump_3d().astype(np.float32)
    mf, cf = table["mf"].to_numpy(np.float32), table["cf"].to_numpy(np.float32)
    volumes = rng.normal(0.0, NOISE_STD, (len(table), 1, SIZE, SIZE, SIZE)).astype(np.float32)
    volumes[:, 0, :q, :q, :q] += mf[:, None, None, None] * bump
    volumes[:, 0, q:, q:, q:] += mf[:, None, None, None] * bump
    volumes[:, 0, q:, :q, :q] += cf[:, None, None, None] * bump
    return SyntheticSet(volumes, table)


def _splits(n: int, rng: np.random.Generator) -> np.ndarray:
    order = rng.permutation(n)
    bounds = np.cumsum([0] + [round(f * n) for f in SPLIT_FRACTIONS.values()])
    bounds[-1] = n
    split = np.empty(n, dtype=object)
    for name, start, stop in zip(SPLIT_FRACTIONS, bounds[:-1], bounds[1:]):
        split[order[start:stop]] = name
    return split


def make_synthetic_video(per_group: int, seed: int = 0, frames: int = 24, size: int = SIZE, confounded: bool = True) -> SyntheticSet:
    """The synthetic idea in motion: videos (n, 1, T, H, W) in [0, 1] whose label is a direction of motion.

    A Gaussian blob (sigma 2.5 px, peak 0.45) crosses the frame horizontally (wrapping at the
    edges) at a signed speed of ``(mf - 3.75) / 2`` px per frame: group 0 draws the main factor
    ``mf`` from U(1, 4) (mostly leftwards), group 1 from U(3.5, 6.5) (mostly rightwards), so the
    slowest videos of the two groups overlap. The scene's lighting, a uniform background of
    ``0.08 cf``, is the confounder: group 0 draws ``cf`` from U(1, 4), group 1 from U(3, 6), as in the
    image set; one frame shows it, only several show the direction. ``shake`` (U(0, 2), both groups)
    is a nuisance: each frame is shifted by a random whole number of pixels up to it, in both axes.
    Frame noise N(0, 0.01). Splits 60/20/20. With ``confounded`` False both groups draw ``cf`` from
    U(1, 6) (the same draws otherwise): the lighting then tells nothing of the label.
    """
    rng = np.random.default_rng([seed, 7])
    n = 2 * per_group
    label = np.repeat([0, 1], per_group)
    mf = np.where(label == 0, 1.0, 3.5) + 3.0 * rng.random(n)
    cf = np.where(label == 0, 1.0, 3.0) + 3.0 * rng.random(n) if confounded else 1.0 + 5.0 * rng.random(n)
    shake = 2.0 * rng.random(n)
    speed = (mf - 3.75) / 2
    x0, y0 = rng.random(n) * size, size / 4 + rng.random(n) * size / 2
    grid = np.arange(size)
    videos = np.empty((n, 1, frames, size, size), dtype=np.float32)
    for i in range(n):
        for t in range(frames):
            dx = (grid - (x0[i] + speed[i] * t) + size / 2) % size - size / 2  # wrapped distance
            dy = grid - y0[i]
            frame = 0.08 * cf[i] + 0.45 * np.exp(-(dy[:, None] ** 2 + dx[None, :] ** 2) / (2 * 2.5**2))
            jitter = np.round(rng.uniform(-shake[i], shake[i], 2)).astype(int)
            videos[i, 0, t] = np.roll(frame, tuple(jitter), axis=(0, 1))
    videos += rng.normal(0.0, NOISE_STD, videos.shape).astype(np.float32)
    np.clip(videos, 0.0, 1.0, out=videos)
    table = pd.DataFrame({"id": np.arange(n), "label": label, "cf": cf.round(6), "mf": mf.round(6), "shake": shake.round(6), "split": _splits(n, rng)})
    return SyntheticSet(videos, table)


def write_dataset(out_dir: str | Path, inputs: np.ndarray, table: pd.DataFrame, ids_column: str = "id") -> tuple[Path, Path]:
    """Write ``images.h5`` (datasets ``x`` and ``ids``) and ``meta.csv`` into ``out_dir``, atomically."""
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

