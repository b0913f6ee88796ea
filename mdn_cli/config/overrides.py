"""`--set KEY=VALUE` overrides applied to the raw spec, with the same key paths as its errors."""

from __future__ import annotations

import re
import typing
from typing import Any

import yaml

from mdn_cli.config.issues import Loc, Problem, suggest
from mdn_cli.config.schema import is_model, known_keys, schema_at, unwrap
from mdn_cli.config.yamlio import Loader
from mdn_cli.utils.errors import path_text

_OVERRIDE_KEY = re.compile(r"^[^.\[\]=\s]+(\.[^.\[\]=\s]+|\[\d+\])*$")


def apply_override(raw: dict[str, Any], text: str) -> tuple[str | None, list[Problem]]:
    """Apply one `KEY=VALUE` to the raw spec; return the canonical key path it set, or its problems."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not _OVERRIDE_KEY.match(key):
        return None, [((key or text,), "is not KEY=VALUE", "e.g. `--set train.epochs=5` or `--set model.layers[0].out_channels=8`.")]
    loc: Loc = ()
    for index, name in re.findall(r"\[(\d+)\]|([^.\[\]]+)", key):
        part, schema = index or name, unwrap(schema_at(loc))
        if typing.get_origin(schema) is list:
            if not part.isdigit():
                return None, [(loc + (part,), f"{path_text(loc)} is a list: expected an index", f"e.g. `{path_text(loc + (0,))}`.")]
            loc += (int(part),)
        elif index:
            return None, [(loc + (int(index),), f"{path_text(loc)} is not a list", f"use `{path_text(loc)}.KEY`.")]
        elif is_model(schema) and name not in schema.model_fields and schema.model_config.get("extra") != "allow":
            known = [path_text(loc + (k,)) for k in known_keys(loc)]
            return None, [(loc + (name,), "unknown key", suggest(path_text(loc + (name,)), known, "keys"))]
        elif is_model(schema) or typing.get_origin(schema) is dict or schema is Any:
            loc += (name,)
        else:
            return None, [(loc + (name,), f"unknown key: {path_text(loc)} holds a single value", f"set `{path_text(loc)}` itself.")]
    try:
        value = yaml.load(value_text, Loader=Loader)
    except yaml.YAMLError as exc:
        return None, [(loc, f"value {value_text!r} is not valid YAML ({getattr(exc, 'problem', exc)})", f"to pass it as text, quote it: `--set '{key}=\"{value_text}\"'`.")]
    node: Any = raw
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                return None, [(loc[: depth + 1], f"index {part} is out of range ({path_text(loc[:depth])} has {size} items)",
                               "index from 0, and only entries the spec file has.")]
        elif not isinstance(node, dict):
            return None, [(loc[:depth], f"cannot set {key}: {path_text(loc[:depth])} is not a mapping in the spec", "fix the spec file first.")]
        elif not last and node.get(part) is None:
            node[part] = {}
        if last:
            node[part] = value
        else:
            node = node[part]
    return path_text(loc), []
