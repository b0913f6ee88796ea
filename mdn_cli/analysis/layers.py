"""`mdn layers`: every named module of a run's or a spec's model, its output shape and its MDN."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from mdn_cli.model.checkpoint import load_run, run_spec
from mdn_cli.model.network import Network
from mdn_cli.nn import MetadataNormBase, metadata
from mdn_cli.train.run import build_run


def layers_of(target: str | Path) -> list[dict]:
    """``describe_layers`` of a run directory or a spec file.

    A run that has a checkpoint is described from it (weights, design, input shape), so its
    training data need not be there; a spec, or a run not yet checkpointed, is built from its data.
    """
    target = Path(target)
    saved = [c for c in ("last", "best") if (target / "checkpoints" / f"{c}.pt").is_file()] if target.is_dir() else []
    if saved:
        loaded = load_run(target, saved[0])
        return describe_layers(loaded.network, loaded.sample_shape, loaded.design.num_columns, loaded.device)
    run = build_run(run_spec(target), fine_tune=False)  # the names a wrong model.init or train.freeze needs
    return describe_layers(run.network, run.data.sample_shape, run.data.design.num_columns, run.device)


def describe_layers(network: Network, sample_shape: Sequence[int], num_design: int, device: torch.device) -> list[dict]:
    """Every named module: dotted name, type, output shape for one sample, and its MDN.

    Shapes come from one eval pass on a two-row zero batch, the way the model builder infers them.
    """
    body_modules = dict(network.body.named_modules())
    placement = network.mdn_placement()
    shapes: dict[str, tuple] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])) if isinstance(out, torch.Tensor) else None)
        for name, module in body_modules.items()
        if name
    ]
    x = torch.zeros(2, *sample_shape, device=device)
    network.eval()
    try:
        with torch.no_grad(), metadata(network, torch.zeros(2, num_design, device=device)):
            network(x)
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for name in network.layer_names():
        module = body_modules[name]
        mdn = "is MDN" if isinstance(module, MetadataNormBase) else placement.get(name)
        rows.append({"name": name, "type": type(module).__name__, "output_shape": list(shapes[name]) if name in shapes else None, "mdn": mdn})
    return rows

