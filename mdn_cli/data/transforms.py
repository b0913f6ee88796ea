"""Transforms of one channels-first sample, (C, H, W) or (C, X, Y, Z), built from a spec's list of one-key steps.

    [{"resize": {"size": [64, 64]}}, {"center_crop": {"size": 56}}, {"zscore": {"nonzero": true}}]

Names and meanings follow torchvision.transforms.v2 and MONAI (each step says which). Random
steps draw from a generator seeded by (seed, epoch, row), so a sample's augmentation does not
depend on the number of workers or the loading order, and a resumed run continues identically.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch
import torch.nn.functional as F

from mdn_cli.utils.errors import did_you_mean, path_text

Problem = tuple[tuple, str, "str | None"]  # (key path relative to the list, message, hint)
REQUIRED = object()


class TransformSpecError(ValueError):
    """Every problem of a transform list at once; key paths are relative to the list (``(2, "resize", "size")``)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(f"{path_text(path) or 'transforms'}: {message}" + (f" Hint: {hint}" if hint else "") for path, message, hint in problems))


class TransformApplyError(ValueError):
    """A step that cannot apply to a sample of this shape or dtype; ``step`` is its index in the list."""

    def __init__(self, message: str, *, hint: str | None = None, step: int | None = None, name: str | None = None):
        self.message, self.hint, self.step, self.name = message, hint, step, name
        where = f"step {step} ({name})" if step is not None else name
        super().__init__((f"{where}: {message}" if where else message) + (f" Hint: {hint}" if hint else ""))

    def at(self, step: int, name: str) -> TransformApplyError:
        return TransformApplyError(self.message, hint=self.hint, step=step, name=name)


class _Invalid(Exception):
    def __init__(self, message: str, hint: str | None = None):
        self.message, self.hint = message, hint


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _spatial_size(key: str) -> Callable[[Any], int | tuple[int, ...]]:
    def parse(value: Any) -> int | tuple[int, ...]:
        if _is_int(value) and value > 0:
            return value
        if isinstance(value, list) and len(value) in (2, 3) and all(_is_int(v) and v > 0 for v in value):
            return tuple(value)
        raise _Invalid("must be a positive integer (every spatial dim) or a list of 2 or 3 positive integers.", f"e.g. {key}: [64, 64] for (H, W), {key}: [48, 48, 48] for (X, Y, Z), or {key}: 64.")

    return parse


def _non_negative_int(value: Any) -> int:
    if _is_int(value) and value >= 0:
        return value
    raise _Invalid("must be a non-negative integer.", "e.g. padding: 4.")


def _probability(value: Any) -> float:
    if _is_number(value) and 0 <= value <= 1:
        return float(value)
    raise _Invalid("must be a probability between 0 and 1.", "e.g. p: 0.5.")


def _axes(value: Any) -> tuple[int, ...]:
    if isinstance(value, list) and 1 <= len(value) <= 3 and all(_is_int(v) and 0 <= v <= 2 for v in value) and len(set(value)) == len(value):
        return tuple(value)
    raise _Invalid("must be a list of distinct spatial axes 0, 1 or 2 (0 = the first axis after the channels).", "e.g. axes: [1] flips a (C, H, W) image left-right.")


def _number(value: Any) -> float:
    if _is_number(value):
        return float(value)
    raise _Invalid("must be a number.", None)


def _numbers(value: Any) -> float | tuple[float, ...]:
    if _is_number(value):
        return float(value)
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        return tuple(float(v) for v in value)
    raise _Invalid("must be a number or a list of numbers (one per channel).", "e.g. mean: [0.485, 0.456, 0.406] or mean: 0.5.")


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise _Invalid("must be true or false.", None)


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value in choices:
            return value
        raise _Invalid(f"must be one of {', '.join(choices)}.", None)

    return parse


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
    OPTIONS: ClassVar = {"size": (_spatial_size("size"), REQUIRED), "mode": (_one_of("bilinear", "trilinear", "nearest"), None)}
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
    OPTIONS: ClassVar = {"size": (_spatial_size("size"), REQUIRED)}
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
    OPTIONS: ClassVar = {"size": (_spatial_size("size"), REQUIRED), "padding": (_non_negative_int, 0)}
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
    OPTIONS: ClassVar = {"shape": (_spatial_size("shape"), REQUIRED)}
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
    OPTIONS: ClassVar = {"axes": (_axes, REQUIRED), "p": (_probability, 0.5)}
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
    OPTIONS: ClassVar = {"min": (_number, 0.0), "max": (_number, 1.0)}

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
    OPTIONS: ClassVar = {"mean": (_numbers, REQUIRED), "std": (_numbers, REQUIRED)}

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
    OPTIONS: ClassVar = {"nonzero": (_flag, False), "channel_wise": (_flag, False)}

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
EXAMPLE = 'e.g. [{resize: {size: [64, 64]}}, {center_crop: {size: 56}}, {zscore: {nonzero: true}}].'


def parse_steps(raw: Any) -> list[Step]:
    """The steps of a spec's transform list (None = none), or one TransformSpecError with every problem.

    Each item is ``{name: {option: value}}``; ``{name: null}`` and a bare ``name`` take the defaults.
    """
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TransformSpecError([((), "must be a list of transforms.", EXAMPLE)])
    problems: list[Problem] = []
    steps = [(index, step) for index, item in enumerate(raw) if (step := _parse_step(index, item, problems)) is not None]
    problems += _dims_problems(steps)
    if problems:
        raise TransformSpecError(sorted(problems, key=lambda problem: problem[0][:1]))  # stable: by step, then as found
    return [step for _, step in steps]


def _parse_step(index: int, item: Any, problems: list[Problem]) -> Step | None:
    if isinstance(item, str):
        item = {item: None}
    if not isinstance(item, dict) or len(item) != 1:
        found = f"found {len(item)} keys ({', '.join(map(str, item))})" if isinstance(item, dict) else f"found {type(item).__name__}"
        problems.append(((index,), f"must be one transform: a mapping with one key, its name ({found}).", "write each transform as its own list item, " + EXAMPLE))
        return None
    [(name, options)] = item.items()
    if name not in STEPS:
        problems.append(((index, name), "unknown transform.", did_you_mean(name, STEPS, "transforms are: " + ", ".join(STEPS) + ".")))
        return None
    cls = STEPS[name]
    if options is None:
        options = {}
    if not isinstance(options, dict):
        problems.append(((index, name), "must be a mapping of options.", f"options are: {', '.join(cls.OPTIONS)}."))
        return None
    before = len(problems)
    values = {}
    for key, value in options.items():
        if key not in cls.OPTIONS:
            problems.append(((index, name, key), "unknown option.", did_you_mean(key, cls.OPTIONS, f"options are: {', '.join(cls.OPTIONS)}.")))
            continue
        try:
            values[key] = cls.OPTIONS[key][0](value)
        except _Invalid as invalid:
            problems.append(((index, name, key), invalid.message, invalid.hint))
    for key, (_, default) in cls.OPTIONS.items():
        if key not in options and default is REQUIRED:
            problems.append(((index, name, key), "is required.", f"options are: {', '.join(cls.OPTIONS)}."))
    if len(problems) > before:
        return None
    step = cls(**values)
    problems += [((index, name, key), message, hint) for key, message, hint in step.problems()]
    return step if len(problems) == before else None


def _dims_problems(steps: list[tuple[int, Step]]) -> list[Problem]:
    """Steps whose sizes or axes disagree on the number of spatial dims (the first explicit size decides)."""
    sized = [(index, step, len(value)) for index, step in steps if step.size_key and isinstance(value := getattr(step, step.size_key), tuple)]
    if not sized:
        return []
    first_index, first, dims = sized[0]
    problems: list[Problem] = []
    for index, step, n in sized[1:]:
        if n != dims:
            problems.append(((index, step.name, step.size_key), f"has {n} values but step {first_index} ({first.name}) has {dims}: the steps disagree on the number of spatial dims.", None))
    for index, step in steps:
        if isinstance(step, Flip) and max(step.axes) >= dims:
            problems.append(((index, step.name, "axes"), f"axis {max(step.axes)} does not exist in {dims} spatial dims (set by step {first_index}, {first.name}).", f"spatial axes are 0 to {dims - 1}."))
    return problems


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
