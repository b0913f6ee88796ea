"""Spec -> ``nn.Module``: a sequential layer list or a user factory, with MDN where the spec says.

Shapes are inferred (lazy layers) from one dry run on a sample input.
"""

from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from typing import Sequence

import torch
from torch import nn

from mdn_cli.nn import LazyMetadataNorm, LazyPenaltyMetadataNorm, LazyRecursiveMetadataNorm, MetadataNormBase, attach_key, attach_metadata_norm, metadata
from mdn_cli.nn.layer_types import LAYER_TYPES
from mdn_cli.stats.validation import listing
from mdn_cli.utils.errors import MdnError, did_you_mean

_MDN_FIXED_ARGS = ("num_design", "num_preserved")  # set from the design matrix, not the spec


class Network(nn.Module):
    """A model plus the MDN layers attached to it by name (kept here so they are saved and moved)."""

    def __init__(self, body: nn.Module, attached: nn.ModuleDict | None = None):
        super().__init__()
        self.body = body
        self.attached_mdn = attached if attached is not None else nn.ModuleDict()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def layer_names(self) -> list[str]:
        """The names users give: ``named_modules()`` of the model itself."""
        return [name for name, _ in self.body.named_modules() if name]

    def feature_module(self, name: str, where: str = "layer", target: str = "SPEC") -> nn.Module:
        """The module whose output is 'the features of layer ``name``': after its MDN if it has one.

        An unknown name is an ``MdnError`` at ``where``, whose hint lists the layers of ``target``.
        """
        modules = dict(self.body.named_modules())
        if name not in modules:
            raise unknown_layer(name, self.layer_names(), where=where, target=target)
        if attach_key(name) in self.attached_mdn:
            return self.attached_mdn[attach_key(name)]
        parent_name, _, child = name.rpartition(".")
        parent = modules[parent_name]
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            index = [n for n, _ in children].index(child)
            if index + 1 < len(children) and isinstance(children[index + 1][1], MetadataNormBase):
                return children[index + 1][1]
        return modules[name]

    def mdn_placement(self) -> dict[str, str]:
        """Layer name -> name (in this network) of the MDN layer that normalises its output."""
        body_modules = dict(self.body.named_modules())
        names = {module: name for name, module in self.named_modules()}
        features = {name: self.feature_module(name) for name in self.layer_names()}
        return {name: names[module].removeprefix("body.") for name, module in features.items() if module is not body_modules[name]}


def make_variant(mdn, num_design: int, num_preserved: int, momentum: float | None | object = ...) -> MetadataNormBase:
    """A lazy MDN layer of the spec's variant (``mdn`` is the spec's MdnSpec); a layer may set its momentum."""
    if momentum is not ... and mdn.variant != "batch":
        raise ValueError(f"momentum is a setting of the batch variant, not of {mdn.variant}")
    if mdn.variant == "recursive":
        return LazyRecursiveMetadataNorm(num_design, num_preserved, mdn.forgetting, mdn.regularizer, mdn.process_noise)
    if mdn.variant == "penalty":
        return LazyPenaltyMetadataNorm(num_design, num_preserved)
    return LazyMetadataNorm(num_design, num_preserved, mdn.momentum if momentum is ... else momentum)


def layer_issue(name: str, names: Sequence[str], target: str = "SPEC") -> tuple[str, str]:
    """Message and hint for a layer name the model does not have: the closest names, else the names themselves.

    ``target`` is what the user gave (a spec file or a run directory), so the hint's
    `mdn layers` command can be run as it is.
    """
    listed = f"the model's layers are: {listing(list(names), 12)}; `mdn layers {target}` shows them with their shapes."
    return f"the model has no layer {name!r}.", did_you_mean(name, names, listed)


def unknown_layer(name: str, names: Sequence[str], where: str, target: str = "SPEC") -> MdnError:
    message, hint = layer_issue(name, names, target)
    return MdnError(message, where=where, hint=hint)


def build_network(spec, num_design: int, num_preserved: int, sample_shape: Sequence[int], num_outputs: int) -> Network:
    """Build the spec's model, attach MDN, infer shapes with a dry run, check the output width."""
    model_spec = spec.model
    make_mdn = lambda **kwargs: make_variant(spec.mdn, num_design, num_preserved, **kwargs)  # noqa: E731
    if model_spec.layers:
        body = _sequential(spec, make_mdn)
    else:
        body = _from_factory(spec)
    names = [name for name, _ in body.named_modules() if name]
    wanted = [(f"model.mdn_after[{i}]", n) for i, n in enumerate(model_spec.mdn_after)]
    if spec.train.monitor is not None:
        wanted.append(("train.monitor", spec.train.monitor))
    issues = [(where, *layer_issue(n, names, str(spec.source or "SPEC"))) for where, n in wanted if n not in names]
    if issues:
        raise spec.error(issues)
    attached = attach_metadata_norm(body, model_spec.mdn_after, lambda _name: make_mdn())
    network = Network(body, attached)
    _dry_run(spec, network, num_design, sample_shape, num_outputs)
    return network


def _sequential(spec, make_mdn) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    issues = []
    for i, layer in enumerate(spec.model.layers):
        kwargs = dict(layer.model_extra or {})
        name = layer.name or f"{layer.type}_{i}"
        try:
            if layer.type == "mdn":
                fixed = [k for k in _MDN_FIXED_ARGS if k in kwargs]
                if fixed:
                    issues.append((f"model.layers[{i}]", f"{', '.join(fixed)} cannot be set.", "they follow from the design matrix."))
                    continue
                layers[name] = make_mdn(**kwargs)
            else:
                layers[name] = LAYER_TYPES[layer.type](**kwargs)
        except (TypeError, ValueError) as exc:
            issues.append((f"model.layers[{i}]", f"cannot build a {layer.type} layer: {exc}.", "check its arguments against torch.nn."))
    if issues:
        raise spec.error(issues)
    return nn.Sequential(layers)


MODEL_LIBRARIES = ("torchvision.models", "timm", "monai.networks", "mdn_cli.model")  # callables a spec may name without opting in
TRUST_ENV = "MDN_TRUST_FACTORY"


def trusted_factory(target: str) -> bool:
    """Whether ``model.factory`` may be imported and called: a model library's, or a module the user trusts.

    Importing a module runs it, and a factory runs with the kwargs a file gives it: a spec or a
    copied run directory must not be able to name ``os:system``. The user opts in per command,
    in the environment, never in a file: ``MDN_TRUST_FACTORY=mylab.models,other.pkg``.
    """
    module_name, _, attr = target.partition(":")
    trusted = [*MODEL_LIBRARIES, *(name.strip() for name in os.environ.get(TRUST_ENV, "").split(",") if name.strip())]
    return not attr.startswith("_") and any(module_name == name or module_name.startswith(name + ".") for name in trusted)


def _from_factory(spec) -> nn.Module:
    target = spec.model.factory
    module_name, _, attr = target.partition(":")
    if not trusted_factory(target):
        raise spec.error([("model.factory", f"{target!r} is outside the model libraries (torchvision.models, timm, monai.networks) and is not trusted: "
                           "importing and calling it could run any code.",
                           f"if you wrote or trust {module_name!r}, allow it for this command: {TRUST_ENV}={module_name} mdn ... "
                           "(comma-separated modules; a spec or run directory cannot set it).")])
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise spec.error([("model.factory", f"cannot import {target!r}: {exc}.", "make sure the module is importable (PYTHONPATH) and the callable exists.")]) from None
    try:
        body = factory(**spec.model.kwargs)
    except Exception as exc:  # user code: report whatever it raises as an input problem
        raise spec.error([("model.kwargs", f"{target}(**kwargs) failed: {type(exc).__name__}: {exc}.", "check the factory's arguments.")]) from None
    if not isinstance(body, nn.Module):
        raise spec.error([("model.factory", f"{target} returned {type(body).__name__}, not a torch.nn.Module.", None)])
    return body


def _dry_run(spec, network: Network, num_design: int, sample_shape: Sequence[int], num_outputs: int) -> None:
    """Materialise lazy layers with a two-row zero batch; check the model's output width."""
    x = torch.zeros(2, *sample_shape)
    network.eval()
    try:
        with torch.no_grad(), metadata(network, torch.zeros(2, num_design)):
            out = network(x)
    except (RuntimeError, ValueError, TypeError) as exc:
        raise spec.error([("model", f"the model fails on inputs of shape {tuple(sample_shape)}: {exc}", "check layer sizes against the input shape (`mdn layers SPEC`).")]) from None
    finally:
        network.train()
    if out.ndim != 2 or out.shape[1] != num_outputs:
        raise spec.error([(
            "model",
            f"the model outputs shape {tuple(out.shape[1:])} per sample, but train.task={spec.train.task} needs {num_outputs}.",
            "make the last layer a linear layer with that many out_features.",
        )])
