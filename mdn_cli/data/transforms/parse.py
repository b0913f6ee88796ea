"""A spec's transform list parsed into steps, every problem reported at once with its key path.

Each item is a one-key mapping ``{name: {option: value}}``; ``{name: null}`` and a bare ``name``
take the defaults, and a step with one required option takes it bare (``{resize: 64}``).
"""

from __future__ import annotations

from typing import Any

from mdn_cli.data.transforms.options import REQUIRED, OptionError
from mdn_cli.data.transforms.steps import STEPS, Flip, Step
from mdn_cli.utils.errors import did_you_mean, path_text

Problem = tuple[tuple, str, "str | None"]  # (key path relative to the list, message, hint)
EXAMPLE = 'e.g. [{resize: {size: [64, 64]}}, {center_crop: {size: 56}}, {zscore: {nonzero: true}}].'


class TransformSpecError(ValueError):
    """Every problem of a transform list at once; key paths are relative to the list (``(2, "resize", "size")``)."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(f"{path_text(path) or 'transforms'}: {message}" + (f" Hint: {hint}" if hint else "") for path, message, hint in problems))


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
    required = [key for key, (_, default) in cls.OPTIONS.items() if default is REQUIRED]
    if not isinstance(options, dict) and len(required) == 1:  # the bare form, as torchvision's Resize(64): {resize: 64}
        options = {required[0]: options}
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
        except OptionError as invalid:
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
