"""The training loop's options: learning-rate schedule, class weights, mixed precision.

Kept apart from the loop so that each is a small function with its own test.
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch

from mdn_cli.utils.errors import MdnError


# -- learning-rate schedule ---------------------------------------------------------------------
def lr_factor(epoch_index: int, train) -> float:
    """The multiplier of ``train.lr`` in the epoch of 0-based index ``epoch_index``.

    Warm-up ramps linearly, ``(e + 1) / (W + 1)`` for e < W, so no epoch trains at zero; then
    with s = e - W epochs since warm-up: cosine ``(1 + cos(pi s / (epochs - W))) / 2`` (as
    CosineAnnealingLR with T_max = epochs - W), step ``gamma ** (s // step_size)`` (as StepLR,
    the R-MDN reference's schedule), none 1.
    """
    warmup = train.warmup_epochs
    if epoch_index < warmup:
        return (epoch_index + 1) / (warmup + 1)
    since = epoch_index - warmup
    if train.scheduler == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * since / (train.epochs - warmup)))
    if train.scheduler == "step":
        return train.gamma ** (since // train.step_size)
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, train) -> torch.optim.lr_scheduler.LambdaLR | None:
    """A per-epoch scheduler for the spec's schedule (None when the rate is constant).

    The factor is recomputed from the spec, so its state dict holds numbers only (checkpoints
    stay plain) and a resumed run continues the same schedule.
    """
    if train.scheduler == "none" and not train.warmup_epochs:
        return None
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch_index: lr_factor(epoch_index, train))


# -- class weights ------------------------------------------------------------------------------
def balanced_class_weights(targets: torch.Tensor, classes: list, where: str) -> torch.Tensor:
    """scikit-learn's ``class_weight='balanced'``: ``n / (k * count_c)`` over the training rows' class indices."""
    counts = torch.bincount(targets.long(), minlength=len(classes))
    if (counts == 0).any():
        absent = [repr(classes[c]) for c in torch.nonzero(counts == 0).flatten().tolist()]
        raise MdnError(f"class(es) {', '.join(absent)} have no training rows, so train.class_weights: balanced cannot weight them.",
                       where=where, hint="put rows of every class in the training split, or remove train.class_weights.")
    return (len(targets) / (len(classes) * counts.double())).float()


# -- mixed precision ----------------------------------------------------------------------------
_AUTOCAST_DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def check_precision(spec, device: torch.device) -> None:
    """16-mixed needs CUDA (float16 with a GradScaler); on the CPU bfloat16 is the mixed precision."""
    if spec.train.precision == "16-mixed" and device.type != "cuda":
        raise spec.error([("train.precision", f"16-mixed needs a CUDA device, and this run trains on {device.type}",
                           "use `precision: bf16-mixed` on the CPU, or train.device: cuda on a machine with a GPU.")])


def autocast(precision: str, device: torch.device) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of the context the training forward passes run in (MDN layers compute in float32 inside)."""
    if precision == "32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=_AUTOCAST_DTYPES[precision])


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """Loss scaling for float16 (a pass-through otherwise): float16 gradients underflow without it."""
    enabled = precision == "16-mixed"
    if not hasattr(torch.amp, "GradScaler"):  # torch < 2.3: the CUDA one (16-mixed runs on CUDA only)
        return torch.cuda.amp.GradScaler(enabled=enabled)
    return torch.amp.GradScaler(device.type, enabled=enabled)
