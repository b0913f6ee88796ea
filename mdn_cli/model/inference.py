"""Eval-mode passes over batches of rows: the one way training's validation, `evaluate` and `extract` run a model.

Each row's design rows reach the MDN layers (which use their eval beta), no gradients are kept,
and the outputs of watched layers are captured per batch (``nn.layer_outputs``).
"""

from __future__ import annotations

from typing import Iterable, Iterator, Mapping

import torch
from torch import nn

from mdn_cli.nn import layer_outputs, metadata
from mdn_cli.utils.interrupts import raise_pending


def eval_batches(network: nn.Module, batches: Iterable[tuple], device: torch.device,
                 watched: Mapping[str, nn.Module] | None = None, views: int = 1) -> Iterator[tuple[tuple, torch.Tensor, dict[str, torch.Tensor]]]:  # fmt: skip
    """Per batch of ``(rows, x, design, ...)``: the batch, the network's output, each watched module's output.

    The network runs in eval mode and is put back in the mode it was in afterwards (as
    ``torch.optim.swa_utils.update_bn`` does). Nothing of past batches is kept here. With
    ``views`` > 1, x is (n, views, ...) (a video's clips): every view runs with its row's design
    row, and the outputs are per view, (n * views, ...), a row's views together (``per_row``).
    """
    watched = dict(watched or {})
    was_training = network.training
    network.eval()
    try:
        with torch.inference_mode(), layer_outputs(watched) as captured:
            for batch in batches:
                raise_pending()  # a Ctrl-C that a destructor swallowed still ends the pass
                x, design = batch[1], batch[2]
                x, design = flatten_views(x, design, views)
                with metadata(network, design.to(device)):
                    out = network(x.to(device))
                yield batch, out, {name: captured[name].pop() for name in watched}
    finally:
        network.train(was_training)


def flat(out: torch.Tensor) -> torch.Tensor:
    """A layer's output as float32 rows on the CPU, one per sample: what the audit and the feature files take."""
    return out.detach().reshape(out.shape[0], -1).float().cpu()


def flatten_views(x: torch.Tensor, design: torch.Tensor, views: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (n, views, ...) as (n * views, ...), each view with its row's design row."""
    return (x, design) if views == 1 else (x.flatten(0, 1), design.repeat_interleave(views, 0))


def per_row(values: torch.Tensor, views: int) -> torch.Tensor:
    """Per-view values (n * views, ...) as the mean of each row's views (n, ...): a video's score or features from its clips'."""
    return values if views == 1 else values.reshape(-1, views, *values.shape[1:]).mean(1)
