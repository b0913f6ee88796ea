"""Pydantic's validation errors translated into spec problems: one readable line and a concrete hint."""

from __future__ import annotations

import re
from typing import Any

from mdn_cli.config.issues import Loc, Problem, suggest
from mdn_cli.config.schema import PATTERN_MESSAGES, example_hint, known_keys
from mdn_cli.config.yamlio import show_value
from mdn_cli.utils.errors import did_you_mean, path_text

_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_TYPE_NAMES = {"int": "an integer", "float": "a number", "string": "a string", "bool": "true or false", "path": "a file path"}


def translate(error: dict[str, Any], prefix: Loc) -> list[Problem]:
    """One pydantic error -> our problems (key path, one readable line, a concrete hint)."""
    loc = prefix + tuple(error["loc"])
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    key = next((part for part in reversed(loc) if isinstance(part, str)), "")
    if kind == "spec":
        return [(loc + tuple(sub), message, hint) for sub, message, hint in ctx["problems"]]
    if kind == "missing":
        return [(loc, "required key is missing", example_hint(loc) or f"add `{key}:`.")]
    if kind == "extra_forbidden":
        return [(loc, "unknown key", suggest(loc[-1], known_keys(loc[:-1]), f"keys of {path_text(loc[:-1]) or 'the spec'}"))]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return [(loc, f"must be a mapping of keys (got {show_value(value)})", f"write its keys indented below `{key}:`.")]
    if kind == "list_type":
        return [(loc, f"must be a list (got {show_value(value)})", f"e.g. `{key}: [{show_value(value)}]`.")]
    if kind in ("too_short", "string_too_short"):
        return [(loc, "must not be empty", example_hint(loc))]
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        return [(loc, f"must be one of {', '.join(options)} (got {show_value(value)})", did_you_mean(value, options, example_hint(loc)))]
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return [(loc, f"must be {_BOUNDS[kind]} {bound:g} (got {show_value(value)})", example_hint(loc))]
    if kind == "string_pattern_mismatch":
        message, hint = PATTERN_MESSAGES.get(ctx.get("pattern"), (f"does not match {ctx.get('pattern')}", None))
        return [(loc, f"{message} (got {show_value(value)})", hint)]
    base = kind.split("_")[0]
    if base in _TYPE_NAMES:
        hint = f'quote it: `{key}: "{value}"`.' if base == "string" and not isinstance(value, (list, dict)) else example_hint(loc)
        return [(loc, f"must be {_TYPE_NAMES[base]} (got {show_value(value)})", hint)]
    return [(loc, error["msg"][:1].lower() + error["msg"][1:], example_hint(loc))]
