"""Steps applied in order to one sample, the shape they make, and the seeded generator of random steps."""

from __future__ import annotations

import hashlib
from typing import Any, Iterator, Sequence

import torch

from mdn_cli.data.transforms.parse import parse_steps
from mdn_cli.data.transforms.steps import Step, TransformApplyError


class Compose:
    """Steps applied in order to one sample: ``compose(x, generator)``.

    Random steps need the generator (FileSamples passes ``sample_generator(seed, epoch, row)``);
    deterministic ones ignore it. A step that cannot apply raises TransformApplyError with its index.
    With ``clips`` the samples are video clips (C, T, H, W): spatial steps act on H and W, the same
    for every frame (one random draw per clip; time is not resampled), and value steps see the
    channels as they are (``normalize``'s per-channel numbers, ``zscore`` over the clip).
    """

    def __init__(self, steps: Sequence[Step], clips: bool = False):
        self.steps, self.clips = tuple(steps), clips
        self.is_random = any(step.random for step in self.steps)

    @classmethod
    def from_spec(cls, raw: Any, clips: bool = False) -> Compose:
        return cls(parse_steps(raw), clips)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None and self.is_random:
            raise ValueError("these transforms are random and need a generator (sample_generator(seed, epoch, row)).")
        for index, step in enumerate(self.steps):
            try:
                x = _on_clip(step, x, lambda flat: step(flat, generator)) if self.clips else step(x, generator)
            except TransformApplyError as exc:
                raise exc.at(index, step.name) from None
        return x

    def __repr__(self) -> str:
        return f"Compose({list(self.steps)!r}{', clips=True' if self.clips else ''})"


def output_shape(steps: Sequence[Step], input_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape the steps make of ``input_shape`` (random steps too: their shapes are fixed), or TransformApplyError."""
    shape = tuple(input_shape)
    clips = getattr(steps, "clips", False)
    for index, step in enumerate(steps):
        try:
            shape = tuple(_on_clip(step, shape, step.output_shape, shape_only=True)) if clips else step.output_shape(shape)
        except TransformApplyError as exc:
            raise exc.at(index, step.name) from None
    return shape


def _on_clip(step: Step, x, apply, shape_only: bool = False):
    """``apply`` to a clip (C, T, H, W) seen as one image of C*T channels (spatial steps) or as (C, T*H, W) (value steps)."""
    shape = tuple(x) if shape_only else tuple(x.shape)
    if len(shape) != 4:
        raise TransformApplyError(f"needs a (C, T, H, W) clip; got shape {shape}.")
    c, t, h, w = shape
    flat = (c * t, h, w) if step.spatial else (c, t * h, w)
    try:
        out = apply(flat if shape_only else x.reshape(flat))
    except TransformApplyError as exc:
        raise TransformApplyError(exc.message, hint="on clips (C, T, H, W), spatial steps act on H and W of every frame: sizes have 2 values, flip axes are 0 (H) and 1 (W).") from None
    out_shape = tuple(out) if shape_only else tuple(out.shape)
    new = (c, t, *out_shape[1:]) if step.spatial else shape
    return new if shape_only else out.reshape(new)


def needs_float(steps: Sequence[Step]) -> bool:
    """False when uint8/uint16 samples can be stored as read and transformed later, exactly.

    That holds when every step only moves, selects or zero-pads values (center/random crop,
    pad_or_crop, flip, nearest resize), or there are none: such steps commute with
    ``readers.to_float`` (0 stays 0), so transforming the integers and then scaling equals
    scaling and then transforming. Interpolating resizes and intensity steps need float.
    """
    return not all(step.keeps_values for step in steps)


def sample_generator(seed: int, epoch: int, row: int) -> torch.Generator:
    """A generator that depends only on (seed, epoch, row): not on workers, loading order or earlier draws.

    Seeded with a 64-bit BLAKE2 hash of the three integers (a few microseconds a sample; numpy's
    SeedSequence would do as well at three times the cost).
    """
    digest = hashlib.blake2b(b"%d,%d,%d" % (seed, epoch, row), digest_size=8, person=b"mdn-augment").digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little"))
