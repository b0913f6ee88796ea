"""What a step's options accept: one parser per kind of value, raising ``OptionError`` with a hint."""

from __future__ import annotations

import math
from typing import Any, Callable

REQUIRED = object()  # an option's default when it has none


class OptionError(Exception):
    def __init__(self, message: str, hint: str | None = None):
        self.message, self.hint = message, hint


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def spatial_size(key: str) -> Callable[[Any], int | tuple[int, ...]]:
    def parse(value: Any) -> int | tuple[int, ...]:
        if _is_int(value) and value > 0:
            return value
        if isinstance(value, list) and len(value) in (2, 3) and all(_is_int(v) and v > 0 for v in value):
            return tuple(value)
        raise OptionError("must be a positive integer (every spatial dim) or a list of 2 or 3 positive integers.", f"e.g. {key}: [64, 64] for (H, W), {key}: [48, 48, 48] for (X, Y, Z), or {key}: 64.")

    return parse


def non_negative_int(value: Any) -> int:
    if _is_int(value) and value >= 0:
        return value
    raise OptionError("must be a non-negative integer.", "e.g. padding: 4.")


def probability(value: Any) -> float:
    if _is_number(value) and 0 <= value <= 1:
        return float(value)
    raise OptionError("must be a probability between 0 and 1.", "e.g. p: 0.5.")


def axes(value: Any) -> tuple[int, ...]:
    if isinstance(value, list) and 1 <= len(value) <= 3 and all(_is_int(v) and 0 <= v <= 2 for v in value) and len(set(value)) == len(value):
        return tuple(value)
    raise OptionError("must be a list of distinct spatial axes 0, 1 or 2 (0 = the first axis after the channels).", "e.g. axes: [1] flips a (C, H, W) image left-right.")


def number(value: Any) -> float:
    if _is_number(value):
        return float(value)
    raise OptionError("must be a number.", None)


def numbers(value: Any) -> float | tuple[float, ...]:
    if _is_number(value):
        return float(value)
    if isinstance(value, list) and value and all(_is_number(v) for v in value):
        return tuple(float(v) for v in value)
    raise OptionError("must be a number or a list of numbers (one per channel).", "e.g. mean: [0.485, 0.456, 0.406] or mean: 0.5.")


def flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise OptionError("must be true or false.", None)


def one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value in choices:
            return value
        raise OptionError(f"must be one of {', '.join(choices)}.", None)

    return parse
