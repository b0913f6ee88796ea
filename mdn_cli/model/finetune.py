"""Fine-tuning: pretrained weights into the built model (`model.init`) and frozen modules (`train.freeze`).

Both act on the model body, whose names are the ``named_modules()`` names `mdn layers` lists.
MDN layers are never loaded from another file: their Gram inverse and betas belong to the
training data, so they are fitted on this run's data (``build_run``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from mdn_cli.model.checkpoint import CHECKPOINT_KEYS, load_weights
from mdn_cli.model.network import Network, layer_issue
from mdn_cli.nn import MetadataNormBase
from mdn_cli.stats.validation import listing
from mdn_cli.utils.errors import MdnError, did_you_mean

_WHERE = "model.init.path"
_SHOWN = 8  # names shown per kind of mismatch


def prepare_network(spec, network: Network) -> dict | None:
    """Load ``model.init`` into ``network`` and freeze ``train.freeze``; return the load's report (None without init)."""
    report = load_init(spec, network) if spec.model.init is not None else None
    freeze(spec, network)
    return report


# -- model.init ---------------------------------------------------------------------------------
def load_init(spec, network: Network) -> dict:
    """Copy the weights of ``model.init`` into the model body, checking names and shapes.

    The file's state dict (see ``_state_dict_of``) keeps only the keys that start with
    ``prefix``, with the prefix removed. With ``strict`` every parameter and buffer of the body
    (MDN layers aside) must be there with its shape and nothing else may be: otherwise a spec
    error lists what differs. Without ``strict`` the keys that match are loaded and the report
    says what was left. Returns ``{path, loaded, missing, unexpected, shape_mismatch}``.
    """
    init = spec.model.init
    try:
        top = load_weights(init.path, hint="give a file saved with torch.save(model.state_dict(), path), a .safetensors file, or an `mdn train` checkpoint.")
    except MdnError as exc:
        raise spec.error([(_WHERE, f"{init.path}: {exc.message}", exc.hint)]) from None
    state = _state_dict_of(spec, top)
    selected = {key[len(init.prefix):]: value for key, value in state.items() if key.startswith(init.prefix)}
    if not selected:
        raise spec.error([("model.init.prefix", f"no key of {init.path} starts with {init.prefix!r} (its keys: {listing(list(state), _SHOWN)})",
                           "set model.init.prefix to the part to remove from the file's keys, or \"\" to take them as they are.")])
    target = _loadable(network.body)
    common = [key for key in selected if key in target]
    mismatched = [key for key in common if selected[key].shape != target[key].shape]
    report = {
        "path": str(init.path),
        "loaded": len(common) - len(mismatched),
        "missing": [key for key in target if key not in selected],
        "unexpected": [key for key in selected if key not in target and not key.startswith(_mdn_prefixes(network.body))],
        "shape_mismatch": [f"{key}: file {tuple(selected[key].shape)}, model {tuple(target[key].shape)}" for key in mismatched],
    }
    if init.strict and (report["missing"] or report["unexpected"] or mismatched):
        raise spec.error([(_WHERE, f"the weights of {init.path} do not fit the model: {describe_mismatch(report)}", _mismatch_hint(selected, set(network.body.state_dict()), spec))])
    matching = {key: selected[key] for key in common if key not in mismatched}
    with torch.no_grad():
        network.body.load_state_dict(matching, strict=False)
    return report


def describe_mismatch(report: dict) -> str:
    """What did not load, one clause per kind, each a capped listing."""
    parts = [f"{len(report[kind])} {what} ({listing(report[kind], _SHOWN)})"
             for kind, what in (("missing", "missing from the file"), ("unexpected", "not in the model"), ("shape_mismatch", "of another shape"))
             if report[kind]]
    return "; ".join(parts) or "nothing"


def init_message(report: dict) -> str:
    """One line for stderr: how much was loaded and what was left at its initial value."""
    text = f"model.init: loaded {report['loaded']} tensors from {report['path']}"
    left = {k: report[k] for k in ("missing", "unexpected", "shape_mismatch")}
    return text + (f"; left out: {describe_mismatch(report)}." if any(left.values()) else ".")


def _state_dict_of(spec, top: Any) -> dict[str, torch.Tensor]:
    """The state dict in a loaded file: the file itself, its entry ``key``, or an `mdn` run's model body."""
    init = spec.model.init
    state = top
    if init.key is not None:
        entries = list(top) if isinstance(top, dict) else []
        if init.key not in entries:
            otherwise = f"its entries are: {listing(entries, _SHOWN)}." if entries else "the file is not a dict of entries; remove model.init.key."
            raise spec.error([("model.init.key", f"{init.path} has no entry {init.key!r}", did_you_mean(init.key, entries, otherwise))])
        state = top[init.key]
    if _is_run_checkpoint(top) and init.key in (None, "model"):  # an `mdn train` checkpoint: its Network's body
        state = _without_mdn_state({key.removeprefix("body."): value for key, value in top["model"].items() if key.startswith("body.")})
    if not _is_state_dict(state):
        holders = [key for key, value in top.items() if _is_state_dict(value)] if isinstance(top, dict) else []
        hint = (f"set model.init.key to the entry holding the weights: {listing(holders, _SHOWN)}." if holders
                else "give a file saved with torch.save(model.state_dict(), path) (a dict of parameter names to tensors).")
        where = f"entry {init.key!r} of {init.path}" if init.key is not None else str(init.path)
        raise spec.error([(_WHERE, f"{where} is not a state dict (a dict of names to tensors): it is {_describe(state)}", hint)])
    return state


def _without_mdn_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An `mdn` run's weights without its MDN layers' state (modules holding `running_beta`, or only `beta` for PMDN)."""
    keys_of: dict[str, set[str]] = {}
    for key in state:
        module, _, name = key.rpartition(".")
        keys_of.setdefault(module, set()).add(name)
    mdn = {module for module, names in keys_of.items() if "running_beta" in names or names == {"beta"}}
    return {key: value for key, value in state.items() if key.rpartition(".")[0] not in mdn}


def _is_run_checkpoint(value: Any) -> bool:
    return isinstance(value, dict) and set(CHECKPOINT_KEYS) <= set(value) and isinstance(value["model"], dict)


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"a dict with entries {listing([str(k) for k in value], _SHOWN)}" if value else "an empty dict"
    return f"a {type(value).__name__}"


def _mdn_prefixes(body: nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the MDN layers inside the body (their state is fitted here, not loaded)."""
    return tuple(f"{name}." for name, module in body.named_modules() if name and isinstance(module, MetadataNormBase))


def _loadable(body: nn.Module) -> dict[str, torch.Tensor]:
    """The body's parameters and buffers that ``model.init`` fills: all but the MDN layers' state."""
    skip = _mdn_prefixes(body)
    return {key: value for key, value in body.state_dict().items() if not key.startswith(skip)} if skip else body.state_dict()


def _mismatch_hint(selected: dict, known: set[str], spec) -> str:
    """A prefix that would make most names fit the body's (``known``), if there is one; else the ways out."""
    general = f"`mdn layers {spec.source or 'SPEC'}` lists the model's names; model.init.strict: false loads what fits and reports the rest."
    firsts = {key.split(".", 1)[0] for key in selected}
    if len(firsts) == 1 and all("." in key for key in selected):
        head = f"{next(iter(firsts))}."
        if sum(key[len(head):] in known for key in selected) > len(selected) // 2:
            return f"the file's keys start with {head!r}: set model.init.prefix: {spec.model.init.prefix + head!r}. {general}"
    return general


# -- train.freeze -------------------------------------------------------------------------------
def freeze(spec, network: Network) -> None:
    """Turn off the gradients of ``train.freeze``'s modules; an unknown name is a spec error."""
    names = network.layer_names()
    target = str(spec.source or "SPEC")
    issues = [(f"train.freeze[{i}]", *layer_issue(name, names, target)) for i, name in enumerate(spec.train.freeze) if name not in names]
    if issues:
        raise spec.error(issues)
    modules = dict(network.body.named_modules())
    for name in spec.train.freeze:
        for parameter in modules[name].parameters():
            parameter.requires_grad_(False)


def keep_frozen_norms_in_eval(network: Network, names: list[str]) -> None:
    """After ``network.train()``: the normalisation layers of frozen modules keep their running statistics."""
    modules = dict(network.body.named_modules())
    for name in names:
        for module in modules[name].modules():
            if isinstance(module, _NormBase):
                module.eval()
