"""The transform steps: each a small frozen dataclass that maps one channels-first sample to another.

Names and meanings follow torchvision.transforms.v2 and MONAI (each step says which). Random steps
draw from the generator they are given (``compose.sample_generator``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
import torch.nn.functional as F

from mdn_cli.data.transforms import options


class TransformApplyError(ValueError):
    """A step that cannot apply to a sample of this shape or dtype; ``step`` is its index in the list."""

    def __init__(self, message: str, *, hint: str | None = None, step: int | None = None, name: str | None = None):
        self.message, self.hint, self.step, self.name = message, hint, step, name
        where = f"step {step} ({name})" if step is not None else name
        super().__init__((f"{where}: {message}" if where else message) + (f" Hint: {hint}" if hint else ""))

    def at(self, step: int, name: str) -> TransformApplyError:
        return TransformApplyError(self.message, hint=self.hint, step=step, name=name)


def _spatial_dims(shape: tuple[int, ...]) -> int:
    if len(shape) not in (3, 4):
        raise TransformApplyError(f"needs a (C, H, W) image or a (C, X, Y, Z) volume; got shape {shape}.")
    return len(shape) - 1


def _sizes(size: int | tuple[int, ...], shape: tuple[int, ...], key: str) -> tuple[int, ...]:
    dims = _spatial_dims(shape)
    if isinstance(size, int):
        return (size,) * dims
    if len(size) != dims:
        raise TransformApplyError(f"{key} {list(size)} has {len(size)} values but the input {shape} has {dims} spatial dims.", hint=f"give {dims} values, or one integer for every dim.")
    return size


def _needs_float(x: torch.Tensor, what: str) -> None:
    if not x.is_floating_point():
        raise TransformApplyError(f"{what} needs a float tensor; got {x.dtype}.", hint="read samples with readers.read_sample (float32).")


class Step:
    """One transform. ``OPTIONS`` maps each option to (parser, default or REQUIRED)."""

    name: ClassVar[str]
    OPTIONS: ClassVar[dict[str, tuple[Callable[[Any], Any], Any]]]
    random: ClassVar[bool] = False
    size_key: ClassVar[str | None] = None  # the option that fixes the number of spatial dims, if any
    spatial: ClassVar[bool] = False  # moves or resamples positions (on a clip: H and W of every frame alike); else maps values

    @property
    def keeps_values(self) -> bool:
        """True when the step only moves, selects or zero-pads values (it then commutes with ``to_float``)."""
        return False

    def problems(self) -> list[tuple[str, str, str | None]]:
        """Problems between options: (option, message, hint)."""
        return []

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Resize(Step):
    """Resample to ``size`` by interpolation, antialias off (torchvision v2 ``Resize``, MONAI ``Resize``).

    An integer is every spatial dim, as MONAI's ``spatial_size`` (torchvision would match the shorter
    edge). ``mode`` defaults to bilinear for images and trilinear for volumes, align_corners False;
    ``nearest`` is torch's (and torchvision's) nearest, which keeps integer dtypes.
    """

    size: int | tuple[int, ...]
    mode: str | None = None
    name: ClassVar[str] = "resize"
    OPTIONS: ClassVar = {"size": (options.spatial_size("size"), options.REQUIRED), "mode": (options.one_of("bilinear", "trilinear", "nearest"), None)}
    spatial: ClassVar[bool] = True
    size_key: ClassVar[str] = "size"

    @property
    def keeps_values(self) -> bool:
        return self.mode == "nearest"

    def _mode(self, dims: int) -> str:
        linear = "bilinear" if dims == 2 else "trilinear"
        if self.mode not in (None, "nearest", linear):
            raise TransformApplyError(f"mode {self.mode} does not apply to {dims} spatial dims.", hint=f"use {linear} (or leave mode out).")
        return self.mode or linear

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        size = _sizes(self.size, shape, "size")
        self._mode(len(size))
        return (shape[0], *size)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        size = self.output_shape(tuple(x.shape))[1:]
        mode = self._mode(len(size))
        if mode != "nearest":
            _needs_float(x, f"{mode} resize")
        return F.interpolate(x[None], size=size, mode=mode, align_corners=None if mode == "nearest" else False)[0]


def _window(x: torch.Tensor, starts, size) -> torch.Tensor:
    """The spatial window of ``size`` from ``starts`` (every channel)."""
    return x[(slice(None), *(slice(a, a + s) for a, s in zip(starts, size)))]


@dataclass(frozen=True)
class CenterCrop(Step):
    """The centre window of ``size`` (torchvision v2 ``CenterCrop``: offset round((dim - size) / 2)).

    A crop larger than the input is refused (torchvision would pad): use pad_or_crop for that.
    """

    size: int | tuple[int, ...]
    name: ClassVar[str] = "center_crop"
    OPTIONS: ClassVar = {"size": (options.spatial_size("size"), options.REQUIRED)}
    spatial: ClassVar[bool] = True
    size_key: ClassVar[str] = "size"

    keeps_values: ClassVar[bool] = True

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        size = _sizes(self.size, shape, "size")
        if any(s > d for s, d in zip(size, shape[1:])):
            raise TransformApplyError(f"crop size {list(size)} is larger than the input {shape}.", hint=f"use pad_or_crop: {{shape: {list(size)}}} to pad where the input is smaller.")
        return (shape[0], *size)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        size = self.output_shape(tuple(x.shape))[1:]
        starts = [round((d - s) / 2) for d, s in zip(x.shape[1:], size)]  # round half to even, as torchvision
        return _window(x, starts, size)


@dataclass(frozen=True)
class RandomCrop(Step):
    """A window of ``size`` at a random offset, after zero ``padding`` on every side (torchvision v2 ``RandomCrop``, fill 0).

    Offsets are drawn per spatial axis in order, uniformly over the positions that fit.
    """

    size: int | tuple[int, ...]
    padding: int = 0
    name: ClassVar[str] = "random_crop"
    OPTIONS: ClassVar = {"size": (options.spatial_size("size"), options.REQUIRED), "padding": (options.non_negative_int, 0)}
    spatial: ClassVar[bool] = True
    random: ClassVar[bool] = True
    size_key: ClassVar[str] = "size"

    keeps_values: ClassVar[bool] = True

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        size = _sizes(self.size, shape, "size")
        padded = [d + 2 * self.padding for d in shape[1:]]
        if any(s > d for s, d in zip(size, padded)):
            raise TransformApplyError(f"crop size {list(size)} is larger than the input {shape} with padding {self.padding}.", hint="pad_or_crop before it, or a larger padding.")
        return (shape[0], *size)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        size = self.output_shape(tuple(x.shape))[1:]
        if self.padding:
            x = F.pad(x, (self.padding,) * (2 * len(size)))
        starts = [int(torch.randint(0, d - s + 1, (1,), generator=generator)) for d, s in zip(x.shape[1:], size)]
        return _window(x, starts, size)


@dataclass(frozen=True)
class PadOrCrop(Step):
    """Exactly ``shape``, per axis: symmetric zero padding where smaller, a centre crop where larger (MONAI ``ResizeWithPadOrCrop``).

    As MONAI: padding (d // 2) before and the rest after; the crop starts at dim // 2 - shape // 2.
    """

    shape: int | tuple[int, ...]
    name: ClassVar[str] = "pad_or_crop"
    OPTIONS: ClassVar = {"shape": (options.spatial_size("shape"), options.REQUIRED)}
    spatial: ClassVar[bool] = True
    size_key: ClassVar[str] = "shape"

    keeps_values: ClassVar[bool] = True

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0], *_sizes(self.shape, shape, "shape"))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        size = self.output_shape(tuple(x.shape))[1:]
        dims = x.shape[1:]
        x = x[(slice(None), *(slice(d // 2 - s // 2, d // 2 - s // 2 + s) if d > s else slice(None) for d, s in zip(dims, size)))]
        pads = [(max(s - d, 0) // 2, max(s - d, 0) - max(s - d, 0) // 2) for d, s in zip(dims, size)]
        if any(before or after for before, after in pads):
            x = F.pad(x, [amount for pair in reversed(pads) for amount in pair])  # F.pad lists the last axis first
        return x


@dataclass(frozen=True)
class Flip(Step):
    """Each of ``axes`` flipped on its own with probability ``p`` (one MONAI ``RandFlip(prob=p, spatial_axis=a)`` per axis).

    Axes count from the first spatial axis: on a (C, H, W) image ``axes: [1]`` is torchvision's
    ``RandomHorizontalFlip`` and ``[0]`` its ``RandomVerticalFlip``. One number is drawn per axis
    whatever ``p``, so changing ``p`` does not shift the other steps' random numbers.
    """

    axes: tuple[int, ...]
    p: float = 0.5
    name: ClassVar[str] = "flip"
    OPTIONS: ClassVar = {"axes": (options.axes, options.REQUIRED), "p": (options.probability, 0.5)}
    spatial: ClassVar[bool] = True
    random: ClassVar[bool] = True

    keeps_values: ClassVar[bool] = True

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        dims = _spatial_dims(shape)
        if max(self.axes) >= dims:
            raise TransformApplyError(f"axes {list(self.axes)} include an axis beyond the input's {dims} spatial dims {shape[1:]}.", hint=f"spatial axes are 0 to {dims - 1}.")
        return shape

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        self.output_shape(tuple(x.shape))
        draws = torch.rand(len(self.axes), generator=generator).tolist()
        flipped = [axis + 1 for axis, draw in zip(self.axes, draws) if draw < self.p]
        return torch.flip(x, flipped) if flipped else x


@dataclass(frozen=True)
class ScaleIntensity(Step):
    """Min-max to [min, max] per sample, over all channels (MONAI ``ScaleIntensity``); a constant sample becomes ``min``.

    (MONAI would return the constant times ``min``.)
    """

    min: float = 0.0
    max: float = 1.0
    name: ClassVar[str] = "scale_intensity"
    OPTIONS: ClassVar = {"min": (options.number, 0.0), "max": (options.number, 1.0)}

    def problems(self) -> list[tuple[str, str, str | None]]:
        return [] if self.max > self.min else [("max", f"must be larger than min ({self.min:g}).", "e.g. min: 0, max: 1.")]

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _needs_float(x, self.name)
        low, high = x.min(), x.max()
        if high == low:
            return torch.full_like(x, self.min)
        return (x - low) / (high - low) * (self.max - self.min) + self.min


@dataclass(frozen=True)
class Normalize(Step):
    """(x - mean[c]) / std[c] per channel, with fixed numbers (torchvision v2 ``Normalize``); a scalar applies to every channel."""

    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]
    name: ClassVar[str] = "normalize"
    OPTIONS: ClassVar = {"mean": (options.numbers, options.REQUIRED), "std": (options.numbers, options.REQUIRED)}

    def problems(self) -> list[tuple[str, str, str | None]]:
        out = []
        if any(s <= 0 for s in _as_tuple(self.std)):
            out.append(("std", "must be larger than 0.", "e.g. std: [0.229, 0.224, 0.225]."))
        lengths = {len(v) for v in (self.mean, self.std) if isinstance(v, tuple) and len(v) > 1}
        if len(lengths) > 1:
            out.append(("std", f"has {len(_as_tuple(self.std))} values but mean has {len(_as_tuple(self.mean))}.", "give one value per channel in both, or a single number."))
        return out

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        for key in ("mean", "std"):
            values = _as_tuple(getattr(self, key))
            if len(values) > 1 and len(values) != shape[0]:
                raise TransformApplyError(f"{key} has {len(values)} values but the input {shape} has {shape[0]} channels.", hint="one value per channel, or a single number.")
        return shape

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _needs_float(x, self.name)
        self.output_shape(tuple(x.shape))
        view = (-1,) + (1,) * (x.dim() - 1)
        mean = torch.tensor(_as_tuple(self.mean), dtype=x.dtype).view(view)
        std = torch.tensor(_as_tuple(self.std), dtype=x.dtype).view(view)
        return (x - mean) / std


@dataclass(frozen=True)
class ZScore(Step):
    """(x - mean) / std with the sample's own statistics (MONAI ``NormalizeIntensity`` without fixed numbers).

    As MONAI: population std; over all channels unless ``channel_wise`` (MONAI's default is False);
    with ``nonzero`` the statistics are over the nonzero voxels, zeros stay zero (and an all-zero
    sample is unchanged); a std of 0 subtracts the mean only.
    """

    nonzero: bool = False
    channel_wise: bool = False
    name: ClassVar[str] = "zscore"
    OPTIONS: ClassVar = {"nonzero": (options.flag, False), "channel_wise": (options.flag, False)}

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _needs_float(x, self.name)
        if self.channel_wise:
            return torch.stack([self._normalize(channel) for channel in x])
        return self._normalize(x)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.nonzero:
            return _standardize(x)
        mask = x != 0
        out = x.clone()
        if mask.any():
            out[mask] = _standardize(x[mask])
        return out


def _standardize(values: torch.Tensor) -> torch.Tensor:
    mean, std = values.mean(), values.std(correction=0)  # (torch.std_mean is slower on CPU)
    return values - mean if std.item() == 0 else (values - mean) / std


def _as_tuple(value: float | tuple[float, ...]) -> tuple[float, ...]:
    return value if isinstance(value, tuple) else (value,)


STEPS: dict[str, type[Step]] = {step.name: step for step in (Resize, CenterCrop, RandomCrop, PadOrCrop, Flip, ScaleIntensity, Normalize, ZScore)}
