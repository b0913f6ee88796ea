"""Loading a spec (read, override, resolve paths, validate: every problem at once), dumping and hashing it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import BaseModel, ValidationError

from mdn_cli.config.issues import Problem, SpecError, SpecIssue, make_issue, suggest
from mdn_cli.config.overrides import apply_override
from mdn_cli.config.schema import SECTIONS, VARIANT_KEYS, Spec, cross_section_problems, staging_problems
from mdn_cli.config.translate import translate
from mdn_cli.config.yamlio import MAX_NODES, Dumper, Flow, Loader, expanded_size, node_lines, show_value, yaml_issue
from mdn_cli.utils.errors import path_text


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


def _resolved(base: Path, value: str) -> Path:
    """A path of the spec made absolute: ``~`` expanded, relative to the spec file's folder ``base``."""
    return Path(os.path.normpath(base / Path(value).expanduser()))


def _resolve_paths(raw: dict[str, Any], base: Path, check_files: bool = True) -> list[Problem]:
    """Make `data.inputs`, `data.table`, `data.split_file` and `data.root` absolute (relative to the spec's folder) and check they exist."""
    data = raw.get("data")
    problems = []
    if isinstance(data, dict) and isinstance(data.get("root"), str):
        root = _resolved(base, data["root"])
        data["root"] = str(root)
        if check_files and not root.is_dir():
            problems.append((("data", "root"), f"folder not found: {root}", f"paths are relative to the spec file's folder ({base})."))
    for key in ("inputs", "table", "split_file"):
        if not isinstance(data, dict) or not isinstance(data.get(key), str):
            continue
        resolved = _resolved(base, data[key])
        data[key] = str(resolved)
        if resolved.is_dir():
            problems.append((("data", key), f"{resolved} is a directory, not a file", "name the file inside it."))
        elif check_files and not resolved.exists():
            problems.append((("data", key), f"file not found: {resolved}", f"paths are relative to the spec file's folder ({base})."))
    return problems


def _resolve_init_path(raw: dict[str, Any], base: Path, check_files: bool = True) -> list[Problem]:
    """Make `model.init.path` absolute (relative to the spec's folder) and check it is a file."""
    init = raw.get("model", {}).get("init") if isinstance(raw.get("model"), dict) else None
    if not isinstance(init, dict) or not isinstance(init.get("path"), str):
        return []
    resolved = _resolved(base, init["path"])
    init["path"] = str(resolved)
    if resolved.is_dir():
        return [(("model", "init", "path"), f"{resolved} is a directory, not a file", "name the weights file (.pt, .pth or .safetensors) inside it.")]
    if check_files and not resolved.exists():
        return [(("model", "init", "path"), f"file not found: {resolved}", f"paths are relative to the spec file's folder ({base}).")]
    return []


def _raw_list(raw: dict[str, Any], section: str, key: str) -> list:
    """``raw[section][key]`` if it is a list of hashable items, else [] (its own errors are reported elsewhere)."""
    value = raw.get(section, {}).get(key) if isinstance(raw.get(section), dict) else None
    return value if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value) else []


def load_spec(path: str | os.PathLike, overrides: Sequence[str] = (), check_files: bool = True, check_with_torch: bool = True) -> Spec:
    """Read, override, validate. Raises one SpecError listing every problem found.

    ``check_files=False`` accepts data files that do not exist (a trained run applied to new data).
    ``check_with_torch=False`` skips the checks that import torch (layer types and their arguments,
    transform steps): for a run's config.yaml, checked when `mdn train` wrote it, read back by a
    command that needs no torch (`mdn report`).
    """
    path = Path(os.path.normpath(Path(path).expanduser().absolute()))
    where = str(path)
    text = _read_text(path)
    try:
        root = yaml.compose(text, Loader=Loader)
        if root is not None and expanded_size(root) > MAX_NODES:
            raise SpecError([SpecIssue("", None, f"the spec expands to more than {MAX_NODES:,} values through its aliases (*name)",
                                       "a spec needs a few hundred; write the values out, or use fewer nested aliases.")], where=where)
        raw = yaml.load(text, Loader=Loader)
    except yaml.YAMLError as exc:
        raise SpecError([yaml_issue(exc)], where=where) from None
    if not isinstance(raw, dict):
        message = "the spec is empty" if raw is None else f"the top level must be a mapping (got {show_value(raw)})"
        hint = "a spec has the sections data, model, mdn and train; see sample_data/synthetic/mdn.yaml."
        raise SpecError([SpecIssue("", 1 if raw is not None else None, message, hint)], where=where)

    lines: dict[str, int] = {}
    problems: list[Problem] = []
    node_lines(root, (), lines, problems)
    issues, overridden = [], set()
    for override in overrides:
        key_path, found = apply_override(raw, override)
        issues += [SpecIssue(path_text(loc), None, message, hint, from_override=True) for loc, message, hint in found]
        overridden |= {key_path} if key_path else set()
    problems += _resolve_paths(raw, path.parent, check_files)
    problems += _resolve_init_path(raw, path.parent, check_files)

    sections: dict[str, BaseModel] = {}
    for key in raw:
        if key not in SECTIONS:
            problems.append(((key,), "unknown section", suggest(key, list(SECTIONS), "sections")))
    for name, section in SECTIONS.items():
        if name not in raw and name != "mdn":
            problems.append(((name,), "required section is missing", f"add a `{name}:` section; see sample_data/synthetic/mdn.yaml."))
            continue
        try:
            sections[name] = section.model_validate({} if raw.get(name) is None else raw[name], context={"check_with_torch": check_with_torch})
        except ValidationError as exc:
            for error in exc.errors(include_url=False):
                problems += translate(error, (name,))
    problems += cross_section_problems(*(_raw_list(raw, *key) for key in (("data", "metadata"), ("mdn", "preserve"), ("data", "categorical"))))
    if "data" in sections and "train" in sections:
        problems += staging_problems(sections["data"], sections["train"])

    overridden_paths = frozenset(overridden)
    issues += [make_issue(path_text(loc), message, hint, lines, overridden_paths) for loc, message, hint in problems]
    if issues:
        issues.sort(key=lambda i: (not i.from_override, i.line is None, i.line or 0))
        raise SpecError(issues, where=where)
    spec = Spec(**sections)
    spec._source, spec._lines, spec._overridden = path, lines, overridden_paths
    return spec


def _plain(spec: Spec) -> dict[str, Any]:
    """The spec as plain YAML/JSON data, without the keys a reader would not have written."""
    data = spec.model_dump(mode="json")
    for key, owner in VARIANT_KEYS.items():
        if owner != spec.mdn.variant:
            del data["mdn"][key]
    for key in ("inputs", "path_column", "root", "channels", "transform", "augment", "clip"):  # the other input source's keys, unset steps
        if data["data"][key] in (None, []):
            del data["data"][key]
    if data["train"]["num_workers"] is None:
        del data["train"]["num_workers"]
    model = data["model"]
    for key in ("layers", "factory"):
        if model[key] is None:
            del model[key]
    if not model["kwargs"]:
        del model["kwargs"]
    if model["init"] is None:
        del model["init"]
    if "layers" in model:
        model["layers"] = [Flow((k, v) for k, v in layer.items() if not (k == "name" and v is None)) for layer in model["layers"]]
    return data


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML (absolute paths): what `--print-config` shows and runs save."""
    return yaml.dump(_plain(spec), Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100, default_flow_style=None)


def spec_hash(spec: Spec) -> str:
    """Short stable id of what the spec asks for (not of how it was written): sha256 prefix."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


RESUMABLE_CHANGES = ("epochs", "num_workers", "loggers", "checkpoint_every")  # train.* keys that --resume may change


def same_training(config_a: str, config_b: str) -> bool:
    """Whether two resolved specs (YAML text) describe the same training, up to train.epochs, train.num_workers, train.loggers
    and train.checkpoint_every.

    Keys at their default count as absent, so a run saved before a key existed still matches; the
    number of loader workers changes no number (augmentation is seeded per row), nor do the
    loggers (a logger added on resume is given the run's history) or how often checkpoints are written.
    """
    def without_epochs(text: str) -> str:
        config = yaml.safe_load(text)
        for key in RESUMABLE_CHANGES:
            config.get("train", {}).pop(key, None)
        for name, section in SECTIONS.items():
            values = config.get(name)
            for key, field in section.model_fields.items():
                if isinstance(values, dict) and key in values and not field.is_required() and values[key] == _plain_default(field):
                    del values[key]
        return json.dumps(config, sort_keys=True)

    return without_epochs(config_a) == without_epochs(config_b)


def _plain_default(field) -> Any:
    """A field's default as YAML would load it back."""
    return json.loads(json.dumps(field.get_default(call_default_factory=True), default=str))
