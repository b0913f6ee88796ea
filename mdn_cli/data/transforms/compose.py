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
    """

    def __init__(self, steps: Sequence[Step]):
        self.steps = tuple(steps)

    @classmethod
    def from_spec(cls, raw: Any) -> Compose:
        return cls(parse_steps(raw))

    @property
    def is_random(self) -> bool:
        return any(step.random for step in self.steps)

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None and self.is_random:
            raise ValueError("these transforms are random and need a generator (sample_generator(seed, epoch, row)).")
        for index, step in enumerate(self.steps):
            try:
                x = step(x, generator)
            except TransformApplyError as exc:
                raise exc.at(index, step.name) from None
        return x

    def __repr__(self) -> str:
        return f"Compose({list(self.steps)!r})"


def output_shape(steps: Sequence[Step], input_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape the steps make of ``input_shape`` (random steps too: their shapes are fixed), or TransformApplyError."""
    shape = tuple(input_shape)
    for index, step in enumerate(steps):
        try:
            shape = step.output_shape(shape)
        except TransformApplyError as exc:
            raise exc.at(index, step.name) from None
    return shape


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
