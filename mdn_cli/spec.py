"""The YAML spec of `mdn train`: schema, loading, `--set` overrides and error messages.

Every problem in a spec is reported at once, each with its key path, its line in the file (or
"from --set") and a hint, so a spec is fixed in one round instead of one error per run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from mdn_cli.errors import MdnError, did_you_mean

Loc = tuple  # a key path as parts: ("model", "layers", 2, "type")
Problem = tuple  # (loc, message, hint) before lines are attached

# --- YAML dialect -------------------------------------------------------------------------------

# YAML 1.1 reads `1e-4` as a string (it wants `1.0e-4`); users write it, so read it as a float.
_EXP_FLOAT = re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads `1e-4` as a float."""


class _Dumper(yaml.SafeDumper):
    """SafeDumper that quotes strings `_Loader` would read as floats and writes layers on one line."""


class _Flow(dict):
    """A mapping dumped in flow style, as layers are written by hand: `- {type: relu}`."""


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))
_Dumper.add_representer(_Flow, lambda dumper, data: dumper.represent_mapping("tag:yaml.org,2002:map", data, flow_style=True))

# --- Issues and the error users see -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SpecIssue:
    """One problem: where (key path and line, or `--set`), what, and what to do about it."""

    key_path: str
    line: int | None
    message: str
    hint: str | None = None
    from_override: bool = False

    def render(self) -> str:
        place = self.key_path or "spec"
        if self.from_override:
            place += " (from --set)"
        elif self.line is not None:
            place += f" (line {self.line})"
        text = f"{place}: {self.message.rstrip('.')}."
        return f"{text} Hint: {self.hint}" if self.hint else text


class SpecError(MdnError):
    """All the problems of a spec at once, one per line, so they can be fixed in one go."""

    def __init__(self, issues: Sequence[SpecIssue], *, where: str | None = None):
        self.issues = list(issues)
        count = len(self.issues)
        lines = "\n".join(f"  {issue.render()}" for issue in self.issues)
        super().__init__(f"{count} problem{'s' if count != 1 else ''} in the spec:\n{lines}", where=where)


def _key_path(loc: Loc) -> str:
    """("model", "layers", 2, "type") -> "model.layers[2].type"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _parent_path(key_path: str) -> str:
    if key_path.endswith("]"):
        return key_path[: key_path.rindex("[")]
    return key_path[: max(key_path.rfind("."), 0)]


def _make_issue(key_path: str, message: str, hint: str | None, lines: dict[str, int], overridden: frozenset[str]) -> SpecIssue:
    """Attach the line of the key (or of its nearest ancestor in the file) or mark it as from --set."""
    from_override = any(key_path == o or key_path.startswith((o + ".", o + "[")) for o in overridden)
    line, probe = None, key_path
    while probe and line is None:
        line, probe = lines.get(probe), _parent_path(probe)
    return SpecIssue(key_path, None if from_override else line, message, hint, from_override)


def _did_you_mean(word: Any, options: Sequence[str], what: str) -> str:
    return did_you_mean(word, options, f"known {what}: {', '.join(options)}." if options else f"there are no {what}; remove it.")


def _show(value: Any) -> str:
    """A value as the user would have written it in YAML, kept short."""
    if value is None:
        return "nothing"
    text = yaml.dump(value, Dumper=_Dumper, default_flow_style=True, width=1000).strip()
    text = text.removesuffix("\n...")
    return text if len(text) <= 40 else text[:37] + "..."


def _fail(*problems: Problem) -> PydanticCustomError:
    """A validation error carrying our own (sub-loc, message, hint) problems for the translator."""
    return PydanticCustomError("spec", "{message}", {"message": "; ".join(p[1] for p in problems), "problems": list(problems)})


# --- Schema -------------------------------------------------------------------------------------

_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"  # a module name inside nn.Sequential
_DOTTED = r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$"  # a named_modules() path
_FACTORY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
_PATTERN_MESSAGES = {
    _NAME: ("must be a plain name (letters, digits and _, not starting with a digit)", "e.g. `name: fc1`."),
    _DOTTED: ("must be a layer name from named_modules()", "e.g. `fc1` or `layer4.1.conv2`."),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataSpec(_Section):
    """Where samples come from and which table columns play which role."""

    inputs: Path = Field(examples=["images.h5"])
    dataset: str = Field("x", min_length=1, examples=["x"])
    ids_dataset: str = Field("ids", min_length=1, examples=["ids"])
    table: Path = Field(examples=["meta.csv"])
    id_column: str | None = Field(None, examples=["id"])
    split_column: str | None = Field(None, examples=["split"])
    val_fraction: float = Field(0.2, gt=0, lt=1, strict=True, examples=[0.2])
    label: str = Field(examples=["label"])
    metadata: list[str] = Field(min_length=1, examples=[["cf"]])
    categorical: list[str] = Field(default_factory=list, examples=[["site"]])

    @field_validator("metadata")
    @classmethod
    def _column_roles(cls, metadata: list[str], info: ValidationInfo) -> list[str]:
        """A field validator (not a model one) so that it runs even when other data keys are wrong."""
        roles = {info.data.get(key): role for key, role in
                 (("split_column", "the split column"), ("id_column", "the id column"), ("label", "the label"))}
        problems = []
        for i, column in enumerate(metadata):
            if column in metadata[:i]:
                problems.append(((i,), f"{column!r} is listed twice", "list each column once."))
            elif column == info.data.get("label"):
                problems.append(((i,), f"the label {column!r} cannot be metadata",
                                 "MDN would remove the target from the features; to keep its effect list it in mdn.preserve."))
            elif column in roles:
                problems.append(((i,), f"{column!r} is {roles[column]}, not metadata", "remove it from data.metadata."))
        if problems:
            raise _fail(*problems)
        return metadata


class LayerSpec(BaseModel):
    """One entry of `model.layers`: a `type` from `LAYER_TYPES`, an optional `name`, its keyword arguments."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["conv2d"])
    name: Annotated[str, Field(pattern=_NAME)] | None = Field(None, examples=["fc1"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _known_type_and_arguments(self) -> LayerSpec:
        from mdn_cli.models import LAYER_TYPES  # lazy: it imports torch

        if self.type not in LAYER_TYPES:
            raise _fail((("type",), f"unknown layer type {self.type!r}", _did_you_mean(self.type, sorted(LAYER_TYPES), "layer types")))
        accepted = _keyword_parameters(LAYER_TYPES[self.type])
        if accepted is not None:
            unknown = [key for key in self.kwargs if key not in accepted]
            if unknown:
                raise _fail(*[((key,), f"a {self.type} layer takes no argument {key!r}", _did_you_mean(key, accepted, "arguments"))
                              for key in unknown])
        return self


def _keyword_parameters(factory: Any) -> list[str] | None:
    """The keyword arguments ``factory`` accepts, or None when it accepts any (or cannot be inspected)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


class ModelSpec(_Section):
    """The network: a sequential layer list, or a factory returning any nn.Module."""

    layers: Annotated[list[LayerSpec], Field(min_length=1)] | None = Field(None, examples=[[{"type": "linear", "out_features": 1}]])
    factory: str | None = Field(None, examples=["torchvision.models:resnet18"])
    kwargs: dict[str, Any] = Field(default_factory=dict, examples=[{"num_classes": 2}])
    mdn_after: list[Annotated[str, Field(pattern=_DOTTED)]] = Field(default_factory=list, examples=[["layer4", "fc1"]])

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, value: str | None) -> str | None:
        if value is not None and not _FACTORY.match(value):
            raise _fail(((), f"{value!r} is not of the form module.path:callable", "e.g. `factory: torchvision.models:resnet18`."))
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        problems = []
        if self.layers is not None and self.factory is not None:
            problems.append((("factory",), "cannot be used together with model.layers", "keep either `layers` or `factory`."))
        if self.layers is None and self.factory is None:
            problems.append(((), "needs either `layers` or `factory`",
                             "list the layers (`layers: [{type: linear, out_features: 1}]`) or name a callable (`factory: pkg.module:make_net`)."))
        if self.kwargs and self.factory is None:
            problems.append((("kwargs",), "is only used with model.factory", "remove it, or give layer arguments on the layers themselves."))
        seen: dict[str, int] = {}
        for i, layer in enumerate(self.layers or ()):
            if layer.name is not None and layer.name in seen:
                problems.append((("layers", i, "name"), f"{layer.name!r} is already the name of model.layers[{seen[layer.name]}]",
                                 "give each layer a unique name."))
            seen.setdefault(layer.name, i)
        if problems:
            raise _fail(*problems)
        return self


MdnVariant = Literal["batch", "recursive", "penalty"]

# the settings that belong to one variant only (setting them for another is an error)
_VARIANT_KEYS = {"momentum": "batch", "ridge": "batch", "forgetting": "recursive", "regularizer": "recursive",
                 "penalty_weight": "penalty", "beta_lr": "penalty"}


class MdnSpec(_Section):
    """How MDN layers estimate the metadata effect: batch (the paper), recursive (R-MDN) or penalty (PMDN)."""

    variant: MdnVariant = Field("batch", examples=["batch"])
    momentum: Annotated[float, Field(gt=0, le=1, strict=True)] | None = Field(0.1, examples=[0.1])
    preserve: list[str] = Field(default_factory=list, examples=[["label"]])
    ridge: float = Field(0.0, ge=0, strict=True, examples=[0.0])
    forgetting: float = Field(0.999, gt=0, le=1, strict=True, examples=[0.999])
    regularizer: float = Field(1e-2, gt=0, strict=True, examples=[1e-2])
    penalty_weight: float = Field(1.0, gt=0, strict=True, examples=[1.0])
    beta_lr: float = Field(1e-2, gt=0, strict=True, examples=[1e-2])

    @field_validator("preserve")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        twice = [((i,), f"{c!r} is listed twice", "list each column once.") for i, c in enumerate(value) if c in value[:i]]
        if twice:
            raise _fail(*twice)
        return value

    @model_validator(mode="after")
    def _settings_fit_variant(self) -> MdnSpec:
        """A changed setting of another variant would be silently ignored: say so (defaults are fine)."""
        problems = [((key,), f"is a setting of variant {owner}, not of {self.variant}",
                     f"remove it, or set `variant: {owner}`.")
                    for key, owner in _VARIANT_KEYS.items()
                    if owner != self.variant and getattr(self, key) != type(self).model_fields[key].default]
        if problems:
            raise _fail(*problems)
        return self


class TrainSpec(_Section):
    """The training loop and what it monitors."""

    task: Literal["binary", "multiclass", "regression"] = Field(examples=["binary"])
    epochs: int = Field(30, ge=1, strict=True, examples=[30])
    batch_size: int = Field(200, ge=1, strict=True, examples=[200])
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", examples=["adam"])
    lr: float = Field(1e-4, gt=0, strict=True, examples=[1e-4])
    weight_decay: float = Field(0.0, ge=0, strict=True, examples=[0.0])
    seed: int = Field(0, ge=0, strict=True, examples=[0])
    monitor: Annotated[str, Field(pattern=_DOTTED)] | None = Field(None, examples=["fc1"])
    select: Literal["val_loss", "val_acc"] = Field("val_loss", examples=["val_loss"])
    dcor_max_samples: Annotated[int, Field(ge=4, strict=True)] | None = Field(None, examples=[2000])
    device: Literal["auto", "cpu", "cuda"] = Field("auto", examples=["auto"])

    @model_validator(mode="after")
    def _select_fits_task(self) -> TrainSpec:
        if self.select == "val_acc" and self.task == "regression":
            raise _fail((("select",), "val_acc needs a classification task", "use `select: val_loss` for regression."))
        return self


def _cross_section_problems(metadata: list, preserve: list, categorical: list) -> list[Problem]:
    """Checks that span `data` and `mdn`; plain lists, so they run even when other keys have errors."""
    problems = []
    for i, column in enumerate(preserve):
        if column in metadata:
            problems.append((("mdn", "preserve", i), f"{column!r} is also in data.metadata",
                             "a column is either removed (data.metadata) or kept (mdn.preserve), not both."))
    for i, column in enumerate(categorical):
        if column not in metadata and column not in preserve:
            problems.append((("data", "categorical", i), f"{column!r} is neither in data.metadata nor in mdn.preserve",
                             "only those columns are encoded; add it to one of them or remove it here."))
    return problems


_SECTIONS: dict[str, type[BaseModel]] = {"data": DataSpec, "model": ModelSpec, "mdn": MdnSpec, "train": TrainSpec}


class Spec(BaseModel):
    """A validated spec. Remembers its file and the line of each key, to point errors found later at them."""

    model_config = ConfigDict(extra="forbid")

    data: DataSpec
    model: ModelSpec
    mdn: MdnSpec = Field(default_factory=MdnSpec)
    train: TrainSpec

    _source: Path | None = PrivateAttr(None)
    _lines: dict[str, int] = PrivateAttr(default_factory=dict)
    _overridden: frozenset[str] = PrivateAttr(frozenset())

    @model_validator(mode="after")
    def _cross_sections(self) -> Spec:
        problems = _cross_section_problems(self.data.metadata, self.mdn.preserve, self.data.categorical)
        if problems:
            raise _fail(*problems)
        return self

    def __eq__(self, other: object) -> bool:
        """Equal when they describe the same run, wherever and however they were written."""
        if not isinstance(other, Spec):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    @property
    def source(self) -> Path | None:
        return self._source

    def line_of(self, key_path: str) -> int | None:
        """Line of ``key_path`` ("train.lr", "model.layers[2].type") in the spec file, if it is written there."""
        return self._lines.get(key_path)

    def error(self, issues: list[tuple[str, str, str | None]]) -> SpecError:
        """A SpecError for problems found after loading (e.g. by the model builder), located like load errors."""
        located = [_make_issue(path, message, hint, self._lines, self._overridden) for path, message, hint in issues]
        return SpecError(located, where=str(self._source) if self._source else None)


# --- Schema walking (for `--set` paths and "did you mean") --------------------------------------


def _unwrap(annotation: Any) -> Any:
    """The type under Annotated[...] and Optional[...]."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        else:
            return annotation


def _is_model(schema: Any) -> bool:
    return inspect.isclass(schema) and issubclass(schema, BaseModel)


def _schema_at(loc: Loc) -> Any:
    """The type found at ``loc`` below Spec, or None when the schema has nothing there."""
    schema: Any = Spec
    for part in loc:
        schema = _unwrap(schema)
        origin = typing.get_origin(schema)
        if _is_model(schema):
            if part in schema.model_fields:
                schema = schema.model_fields[part].annotation
            elif schema.model_config.get("extra") == "allow":
                schema = Any
            else:
                return None
        elif origin is list and isinstance(part, int):
            schema = typing.get_args(schema)[0]
        elif origin is dict or schema is Any:
            schema = Any
        else:
            return None
    return schema


def _known_keys(loc: Loc) -> list[str]:
    schema = _unwrap(_schema_at(loc))
    return list(schema.model_fields) if _is_model(schema) else []


def _example_hint(loc: Loc) -> str | None:
    """`e.g. lr: 0.0001`, from the field's documented example."""
    parent = _unwrap(_schema_at(loc[:-1])) if loc else None
    if not _is_model(parent) or loc[-1] not in parent.model_fields:
        return None
    examples = parent.model_fields[loc[-1]].examples
    return f"e.g. `{loc[-1]}: {_show(examples[0])}`." if examples else None


# --- Translating pydantic errors ----------------------------------------------------------------

_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_TYPE_NAMES = {"int": "an integer", "float": "a number", "string": "a string", "bool": "true or false", "path": "a file path"}


def _translate(error: dict[str, Any], prefix: Loc) -> list[Problem]:
    """One pydantic error -> our problems (key path, one readable line, a concrete hint)."""
    loc = prefix + tuple(error["loc"])
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    key = next((part for part in reversed(loc) if isinstance(part, str)), "")
    if kind == "spec":
        return [(loc + tuple(sub), message, hint) for sub, message, hint in ctx["problems"]]
    if kind == "missing":
        return [(loc, "required key is missing", _example_hint(loc) or f"add `{key}:`.")]
    if kind == "extra_forbidden":
        return [(loc, "unknown key", _did_you_mean(loc[-1], _known_keys(loc[:-1]), f"keys of {_key_path(loc[:-1]) or 'the spec'}"))]
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return [(loc, f"must be a mapping of keys (got {_show(value)})", f"write its keys indented below `{key}:`.")]
    if kind == "list_type":
        return [(loc, f"must be a list (got {_show(value)})", f"e.g. `{key}: [{_show(value)}]`.")]
    if kind in ("too_short", "string_too_short"):
        return [(loc, "must not be empty", _example_hint(loc))]
    if kind == "literal_error":
        options = re.findall(r"'([^']*)'", ctx.get("expected", ""))
        return [(loc, f"must be one of {', '.join(options)} (got {_show(value)})", did_you_mean(value, options, _example_hint(loc)))]
    if kind in _BOUNDS:
        bound = next(iter(ctx.values()))
        return [(loc, f"must be {_BOUNDS[kind]} {bound:g} (got {_show(value)})", _example_hint(loc))]
    if kind == "string_pattern_mismatch":
        message, hint = _PATTERN_MESSAGES.get(ctx.get("pattern"), (f"does not match {ctx.get('pattern')}", None))
        return [(loc, f"{message} (got {_show(value)})", hint)]
    base = kind.split("_")[0]
    if base in _TYPE_NAMES:
        hint = f'quote it: `{key}: "{value}"`.' if base == "string" and not isinstance(value, (list, dict)) else _example_hint(loc)
        return [(loc, f"must be {_TYPE_NAMES[base]} (got {_show(value)})", hint)]
    return [(loc, error["msg"][:1].lower() + error["msg"][1:], _example_hint(loc))]


# --- YAML nodes -> lines ------------------------------------------------------------------------


def _node_lines(node: yaml.Node, prefix: Loc, lines: dict[str, int], problems: list[Problem]) -> None:
    """Record the line of every key and list item; report duplicate keys, which YAML silently drops."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            loc = prefix + (key_node.value,)
            path, line = _key_path(loc), key_node.start_mark.line + 1
            if path in lines:
                problems.append((loc, f"duplicate key (also on line {lines[path]})", "YAML keeps only the last one; remove the other."))
            lines[path] = line
            _node_lines(value_node, loc, lines, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[_key_path(prefix + (i,))] = item.start_mark.line + 1
            _node_lines(item, prefix + (i,), lines, problems)


def _yaml_issue(exc: yaml.YAMLError) -> SpecIssue:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if "\\t" in problem or "\t" in problem:
        hint = "indent with spaces: YAML does not allow tabs."
    elif "mapping values are not allowed" in problem:
        hint = "put a space after each `key:`, and quote values that contain ': '."
    else:
        hint = "check the indentation and quoting on this line and the one before."
    return SpecIssue("", mark.line + 1 if mark else None, f"invalid YAML: {problem}", hint)


# --- Overrides ----------------------------------------------------------------------------------

_OVERRIDE_KEY = re.compile(r"^[^.\[\]=\s]+(\.[^.\[\]=\s]+|\[\d+\])*$")


def _apply_override(raw: dict[str, Any], text: str) -> tuple[str | None, list[Problem]]:
    """Apply one `KEY=VALUE` to the raw spec; return the canonical key path it set, or its problems."""
    key, sep, value_text = text.partition("=")
    key = key.strip()
    if not sep or not _OVERRIDE_KEY.match(key):
        return None, [((key or text,), "is not KEY=VALUE", "e.g. `--set train.epochs=5` or `--set model.layers[0].out_channels=8`.")]
    loc: Loc = ()
    for index, name in re.findall(r"\[(\d+)\]|([^.\[\]]+)", key):
        part, schema = index or name, _unwrap(_schema_at(loc))
        if typing.get_origin(schema) is list:
            if not part.isdigit():
                return None, [(loc + (part,), f"{_key_path(loc)} is a list: expected an index", f"e.g. `{_key_path(loc + (0,))}`.")]
            loc += (int(part),)
        elif index:
            return None, [(loc + (int(index),), f"{_key_path(loc)} is not a list", f"use `{_key_path(loc)}.KEY`.")]
        elif _is_model(schema) and name not in schema.model_fields and schema.model_config.get("extra") != "allow":
            known = [_key_path(loc + (k,)) for k in _known_keys(loc)]
            return None, [(loc + (name,), "unknown key", _did_you_mean(_key_path(loc + (name,)), known, "keys"))]
        elif _is_model(schema) or typing.get_origin(schema) is dict or schema is Any:
            loc += (name,)
        else:
            return None, [(loc + (name,), f"unknown key: {_key_path(loc)} holds a single value", f"set `{_key_path(loc)}` itself.")]
    try:
        value = yaml.load(value_text, Loader=_Loader)
    except yaml.YAMLError as exc:
        return None, [(loc, f"value {value_text!r} is not valid YAML ({getattr(exc, 'problem', exc)})", f"to pass it as text, quote it: `--set '{key}=\"{value_text}\"'`.")]
    node: Any = raw
    for depth, part in enumerate(loc):
        last = depth == len(loc) - 1
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                size = len(node) if isinstance(node, list) else 0
                return None, [(loc[: depth + 1], f"index {part} is out of range ({_key_path(loc[:depth])} has {size} items)",
                               "index from 0, and only entries the spec file has.")]
        elif not isinstance(node, dict):
            return None, [(loc[:depth], f"cannot set {key}: {_key_path(loc[:depth])} is not a mapping in the spec", "fix the spec file first.")]
        elif not last and node.get(part) is None:
            node[part] = {}
        if last:
            node[part] = value
        else:
            node = node[part]
    return _key_path(loc), []


# --- Loading ------------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    def fail(message: str, hint: str) -> SpecError:
        return SpecError([SpecIssue("", None, message, hint)], where=str(path))

    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.y*ml"))
        raise fail("is a directory, not a spec file",
                   f"pass one of its YAML files: {', '.join(found)}." if found else "pass the YAML spec file itself.")
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise fail("spec file not found", "check the path; `sample_data/synthetic/mdn.yaml` is an example spec.") from None
    except UnicodeDecodeError:
        raise fail("is not UTF-8 text", "a spec is a YAML text file.") from None
    except OSError as exc:
        raise fail(f"cannot read it ({exc.strerror})", "check the file's permissions.") from None


def _resolve_paths(raw: dict[str, Any], base: Path, check_files: bool = True) -> list[Problem]:
    """Make `data.inputs` and `data.table` absolute (relative to the spec's folder) and check they exist."""
    data = raw.get("data")
    problems = []
    for key in ("inputs", "table"):
        if not isinstance(data, dict) or not isinstance(data.get(key), str):
            continue
        resolved = Path(os.path.normpath(base / Path(data[key]).expanduser()))
        data[key] = str(resolved)
        if resolved.is_dir():
            problems.append((("data", key), f"{resolved} is a directory, not a file", "name the file inside it."))
        elif check_files and not resolved.exists():
            problems.append((("data", key), f"file not found: {resolved}", f"paths are relative to the spec file's folder ({base})."))
    return problems


def _raw_list(raw: dict[str, Any], section: str, key: str) -> list:
    """``raw[section][key]`` if it is a list of hashable items, else [] (its own errors are reported elsewhere)."""
    value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
    return value if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value) else []


def load_spec(path: str | os.PathLike, overrides: Sequence[str] = (), check_files: bool = True) -> Spec:
    """Read, override, validate. Raises one SpecError listing every problem found.

    ``check_files=False`` accepts data files that do not exist (a trained run applied to new data).
    """
    path = Path(os.path.normpath(Path(path).expanduser().absolute()))
    where = str(path)
    text = _read_text(path)
    try:
        root = yaml.compose(text, Loader=_Loader)
        raw = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_issue(exc)], where=where) from None
    if not isinstance(raw, dict):
        message = "the spec is empty" if raw is None else f"the top level must be a mapping (got {_show(raw)})"
        hint = "a spec has the sections data, model, mdn and train; see sample_data/synthetic/mdn.yaml."
        raise SpecError([SpecIssue("", 1 if raw is not None else None, message, hint)], where=where)

    lines: dict[str, int] = {}
    problems: list[Problem] = []
    _node_lines(root, (), lines, problems)
    issues, overridden = [], set()
    for override in overrides:
        key_path, found = _apply_override(raw, override)
        issues += [SpecIssue(_key_path(loc), None, message, hint, from_override=True) for loc, message, hint in found]
        overridden |= {key_path} if key_path else set()
    problems += _resolve_paths(raw, path.parent, check_files)

    sections: dict[str, BaseModel] = {}
    for key in raw:
        if key not in _SECTIONS:
            problems.append(((key,), "unknown section", _did_you_mean(key, list(_SECTIONS), "sections")))
    for name, section in _SECTIONS.items():
        if name not in raw and name != "mdn":
            problems.append(((name,), "required section is missing", f"add a `{name}:` section; see sample_data/synthetic/mdn.yaml."))
            continue
        try:
            sections[name] = section.model_validate({} if raw.get(name) is None else raw[name])
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                problems += _translate(error, (name,))
    problems += _cross_section_problems(*(_raw_list(raw, *key) for key in (("data", "metadata"), ("mdn", "preserve"), ("data", "categorical"))))

    overridden_paths = frozenset(overridden)
    issues += [_make_issue(_key_path(loc), message, hint, lines, overridden_paths) for loc, message, hint in problems]
    if issues:
        issues.sort(key=lambda i: (not i.from_override, i.line is None, i.line or 0))
        raise SpecError(issues, where=where)
    spec = Spec(**sections)
    spec._source, spec._lines, spec._overridden = path, lines, overridden_paths
    return spec


def _plain(spec: Spec) -> dict[str, Any]:
    """The spec as plain YAML/JSON data, without the keys a reader would not have written."""
    data = spec.model_dump(mode="json")
    for key, owner in _VARIANT_KEYS.items():
        if owner != spec.mdn.variant:
            del data["mdn"][key]
    model = data["model"]
    for key in ("layers", "factory"):
        if model[key] is None:
            del model[key]
    if not model["kwargs"]:
        del model["kwargs"]
    if "layers" in model:
        model["layers"] = [_Flow((k, v) for k, v in layer.items() if not (k == "name" and v is None)) for layer in model["layers"]]
    return data


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML (absolute paths): what `--print-config` shows and runs save."""
    return yaml.dump(_plain(spec), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None)


def spec_hash(spec: Spec) -> str:
    """Short stable id of what the spec asks for (not of how it was written): sha256 prefix."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
