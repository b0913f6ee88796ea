"""Model-level helpers: the metadata context, MDN after named modules, the Gram fit and beta refit.

Metadata reach the layers per batch without becoming model state::

    fit_gram(model, X_train)                  # once, from the whole training set
    with metadata(model, X_batch):            # every forward pass
        out = model(x)
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mdn_cli.nn.kernels import transposed_product
from mdn_cli.nn.modules import MetadataNorm, MetadataNormBase, PenaltyMetadataNorm


def metadata_norm_layers(model: nn.Module) -> list[MetadataNormBase]:
    return [m for m in model.modules() if isinstance(m, MetadataNormBase)]


def set_sync(model: nn.Module, sync: bool = True) -> None:
    """Synchronise the batch statistics of every MDN layer over the process group (for DDP)."""
    for layer in metadata_norm_layers(model):
        layer.sync = sync


def penalty_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learned betas of the PMDN layers (to give them their own optimiser)."""
    return [m.beta for m in metadata_norm_layers(model) if isinstance(m, PenaltyMetadataNorm)]


def mdn_penalty(model: nn.Module) -> torch.Tensor | None:
    """Mean over the PMDN layers of their penalties in the last training forward (the reference
    averages its layers' terms), or None without PMDN layers."""
    terms = [m.penalty for m in metadata_norm_layers(model) if isinstance(m, PenaltyMetadataNorm) and m.penalty is not None]
    return torch.stack(terms).mean() if terms else None


@contextlib.contextmanager
def penalty_pass(model: nn.Module) -> Iterator[None]:
    """PMDN's first pass: every PMDN layer outputs the residual of the whole design (``Y - X beta``)."""
    layers = [m for m in metadata_norm_layers(model) if isinstance(m, PenaltyMetadataNorm)]
    for layer in layers:
        layer.fitting = True
    try:
        yield
    finally:
        for layer in layers:
            layer.fitting = False


def fit_gram(model: nn.Module, design: torch.Tensor | np.ndarray, column_names: Sequence[str] | None = None, ridge: float = 0.0) -> None:
    """Fit the Gram inverse of every ``MetadataNorm`` in ``model`` from the whole training design."""
    layers = [m for m in metadata_norm_layers(model) if isinstance(m, MetadataNorm)]
    if not layers:
        return
    layers[0].fit_gram(design, column_names, ridge)
    for layer in layers[1:]:
        layer.gram_inverse.copy_(layers[0].gram_inverse)
        layer.n_train.copy_(layers[0].n_train)


def refit_beta(model: nn.Module, batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]) -> int:
    """Set every MDN layer's eval-mode beta to the whole-set least-squares fit of its input, in eval mode.

    Like ``torch.optim.swa_utils.update_bn`` for BatchNorm: ``batches()`` yields ``(inputs, design)``
    of a data set (the training set, normally) and the running estimate is replaced by the exact
    fit ``(X'X)^+ X'Y`` over all of it (float64 sums). Layers are fitted in the order the model
    runs them, one pass over the data each, so that a layer is fitted to the inputs its upstream
    layers give with their fitted betas. Returns the number of rows. With small training batches
    the running average of noisy batch betas removes visibly less than this fit
    (benchmarks/README.md).
    """
    remaining = metadata_norm_layers(model)
    was_training = model.training
    model.eval()
    rows = 0
    try:
        while remaining:
            sums: dict[MetadataNormBase, torch.Tensor] = {}
            order: list[MetadataNormBase] = []

            def accumulate(layer: MetadataNormBase, args: tuple, kwargs: dict) -> None:
                y = args[0].detach().reshape(args[0].shape[0], -1)
                given = kwargs.get("design", args[1] if len(args) > 1 else None)
                x = layer._checked_design(args[0], layer._design if given is None else given).to(torch.float64)
                block = torch.cat([x.T @ x, transposed_product(x, y.to(torch.float64))], 1)
                sums[layer] = sums[layer] + block if layer in sums else block
                if layer not in order:
                    order.append(layer)

            hooks = [layer.register_forward_pre_hook(accumulate, with_kwargs=True) for layer in remaining]
            rows = 0
            try:
                with torch.no_grad():
                    for inputs, design in batches():
                        with metadata(model, design):
                            model(inputs)
                        rows += len(design)
            finally:
                for hook in hooks:
                    hook.remove()
            if not order:
                raise ValueError("no MDN layer ran: check that `batches()` yields (inputs, design) pairs of the model's data.")
            first = order[0]  # its inputs no longer change: every layer before it is fitted
            k = first.num_design
            beta = torch.linalg.lstsq(sums[first][:, :k], sums[first][:, k:]).solution
            first.load_beta(beta)
            remaining = [layer for layer in remaining if layer is not first]
    finally:
        model.train(was_training)
    return rows


@contextlib.contextmanager
def metadata(model: nn.Module, design: torch.Tensor) -> Iterator[None]:
    """Make ``design`` (rows = the batch) visible to every MDN layer of ``model`` for one pass."""
    layers = metadata_norm_layers(model)
    previous = [layer._design for layer in layers]
    for layer in layers:
        layer._design = design
    try:
        yield
    finally:
        for layer, old in zip(layers, previous):
            layer._design = old


def attach_metadata_norm(
    model: nn.Module, names: Sequence[str], make_layer: Callable[[str], MetadataNormBase]
) -> nn.ModuleDict:
    """Apply a new MDN layer to the output of each named module (``named_modules()`` names).

    Works on any model through forward hooks; the model's own structure and names are unchanged.
    The returned ``ModuleDict`` (keys: names with '.' -> '__') holds the layers' state: keep it
    with the model (e.g. as a sibling submodule) so it is saved and moved with it.
    """
    modules = dict(model.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown:  # checked before any hook is registered, so a typo leaves the model untouched
        raise KeyError(f"no module named {', '.join(map(repr, unknown))} in the model.")
    attached = nn.ModuleDict()
    for name in names:
        layer = make_layer(name)
        attached[attach_key(name)] = layer

        def hook(_module, _inputs, output, layer=layer, name=name):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"MDN after {name!r}: the module returns {type(output).__name__}, not a tensor.")
            return layer(output)

        modules[name].register_forward_hook(hook)
    return attached


def attach_key(name: str) -> str:
    """ModuleDict key for an attachment point (dots are not allowed in module names)."""
    return name.replace(".", "__")


@contextlib.contextmanager
def layer_outputs(modules: Mapping[str, nn.Module], keep: Callable[[torch.Tensor], torch.Tensor] = torch.Tensor.detach) -> Iterator[dict[str, list[torch.Tensor]]]:
    """What ``modules`` (name -> module) output during the block: name -> one ``keep(output)`` per forward pass.

    The one way the workflows read a layer's features (training's monitor, extract, evaluate);
    a caller that streams them pops each batch once it has used it.
    """
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = [module.register_forward_hook(lambda _m, _i, out, name=name: outputs[name].append(keep(out))) for name, module in modules.items()]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()
