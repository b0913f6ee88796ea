"""The spec's YAML dialect: `1e-4` read as a float, layers dumped one per line, the line of every key."""

from __future__ import annotations

import re
from typing import Any

import yaml

from mdn_cli.config.issues import Loc, Problem, SpecIssue
from mdn_cli.utils.errors import path_text

# YAML 1.1 reads `1e-4` as a string (it wants `1.0e-4`); users write it, so read it as a float.
_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float."""


class Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings `Loader` would read as floats and writes layers on one line."""


class Flow(dict):
    """A mapping dumped in flow style, as layers are written by hand: `- {type: relu}`."""


for _cls in (Loader, Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))
Dumper.add_representer(Flow, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True))


def show_value(value: Any) -> str:
    """A value as the user would have written it in YAML, kept short."""
    if value is None:
        return "nothing"
    text = yaml.dump(value, Dumper=Dumper, default_flow_style=True, width=1000).strip()
    text = text.removesuffix("\n...")
    return text if len(text) <= 40 else text[:37] + "..."


MAX_NODES = 100_000  # values in a spec once its aliases are expanded; real specs have a few hundred


def expanded_size(node: yaml.Node, sizes: dict[int, int] | None = None) -> int:
    """How many values ``node`` stands for once every alias (``*name``) is expanded, counted without expanding.

    A few nested aliases can stand for billions of values (a "billion laughs" file); everything
    that walks the spec would then hang, so such a spec is refused first.
    """
    sizes = {} if sizes is None else sizes
    if id(node) not in sizes:
        sizes[id(node)] = 1  # a node that contains itself counts once (PyYAML builds such cycles)
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value if isinstance(node, yaml.SequenceNode) else []
        sizes[id(node)] = min(1 + sum(expanded_size(child, sizes) for child in children), MAX_NODES + 1)
    return sizes[id(node)]


def node_lines(node: yaml.Node, prefix: Loc, lines: dict[str, int], problems: list[Problem]) -> None:
    """Record the line of every key and list item; report duplicate keys, which YAML silently drops."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            loc = prefix + (key_node.value,)
            path, line = path_text(loc), key_node.start_mark.line + 1
            if path in lines:
                problems.append((loc, f"duplicate key (also on line {lines[path]})", "YAML keeps only the last one; remove the other."))
            lines[path] = line
            node_lines(value_node, loc, lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path_text(prefix + (i,))] = item.start_mark.line + 1
            node_lines(item, prefix + (i,), lines, problems)


def yaml_issue(exc: yaml.YAMLError) -> SpecIssue:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if "\\t" in problem or "\t" in problem:
        hint = "indent with spaces: YAML does not allow tabs."
    elif "mapping values are not allowed" in problem:
        hint = "put a space after each `key:`, and quote values that contain ': '."
    else:
        hint = "check the indentation and quoting on this line and the one before."
    return SpecIssue("", mark.line + 1 if mark else None, f"invalid YAML: {problem}", hint)
