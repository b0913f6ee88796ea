"""The training loop's options: learning-rate schedules, early stopping, class weights, mixed precision.

Kept apart from the loop so that each is a small function with its own test.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from mdn_cli.config import PlateauSpec
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


def mode_of(select: str) -> str:
    """'min' for a loss, 'max' for accuracy and AUC: which way ``train.select`` improves."""
    return "min" if select.endswith("loss") else "max"


class EpochSchedule:
    """The learning rate per epoch: warm-up, then cosine or step (``LambdaLR`` with ``lr_factor``) or
    plateau (``ReduceLROnPlateau`` on ``train.select``, stepped after each epoch's validation).

    With plateau and warm-up, the warm-up factor applies for the first epochs and the plateau
    counts only the epochs after it. The states are plain numbers (checkpoints stay plain), so a
    resumed run continues the same schedule.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, train):
        self.train = train
        self.factor = None
        if train.scheduler in ("cosine", "step") or train.warmup_epochs:
            self.factor = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch_index: lr_factor(epoch_index, train))
        self.plateau = None
        if train.scheduler == "plateau":
            options = train.plateau or PlateauSpec()
            self.plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode=mode_of(train.select), factor=options.factor, patience=options.patience,
                threshold=options.threshold, min_lr=options.min_lr)  # fmt: skip

    @property
    def active(self) -> bool:
        """Whether the rate may change (then each epoch's rate is recorded)."""
        return self.factor is not None or self.plateau is not None

    def step(self, monitored: float | None = None) -> None:
        """After an epoch: the next epoch's rate (``monitored``: the epoch's ``train.select`` value, None if undefined)."""
        in_warmup = self.factor is not None and self.factor.last_epoch < self.train.warmup_epochs
        if self.factor is not None and (self.plateau is None or in_warmup):
            self.factor.step()
        elif self.plateau is not None:
            self.plateau.step(math.nan if monitored is None else monitored)

    def state_dict(self) -> dict:
        return {"factor": self.factor.state_dict() if self.factor else None, "plateau": self.plateau.state_dict() if self.plateau else None}

    def load_state_dict(self, state: dict) -> None:
        if "factor" not in state:  # checkpoints before plateau schedules held the LambdaLR's state alone
            state = {"factor": state, "plateau": None}
        if self.factor is not None:
            self.factor.load_state_dict(state["factor"])
        if self.plateau is not None:
            self.plateau.load_state_dict(state["plateau"])


# -- early stopping -----------------------------------------------------------------------------
@dataclass
class EarlyStopping:
    """Lightning's ``EarlyStopping`` on ``train.select``: stop after ``patience`` epochs without an
    improvement of more than ``min_delta``, or at once when the metric is not finite.

    An undefined value (val AUC with one class) is an epoch without improvement. The state is
    plain numbers, kept in the checkpoint, so a resumed run continues the count.
    """

    patience: int
    min_delta: float
    mode: str
    best: float | None = None
    best_epoch: int | None = None
    wait: int = 0
    stopped_epoch: int | None = None
    reason: str | None = None

    @classmethod
    def from_spec(cls, train) -> EarlyStopping | None:
        options = train.early_stopping
        return None if options is None else cls(options.patience, options.min_delta, mode_of(train.select))

    def update(self, epoch: int, value: float | None, name: str) -> bool:
        """Record the epoch's value; True when training should stop after this epoch."""
        if value is not None and not math.isfinite(value):
            self.stopped_epoch, self.reason = epoch, f"{name} is {value} at epoch {epoch}"
            return True
        sign = 1.0 if self.mode == "min" else -1.0
        if value is not None and (self.best is None or sign * (value - self.best) < -self.min_delta):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            return False
        self.wait += 1
        if self.wait < self.patience:
            return False
        best = "no defined value" if self.best is None else f"best {self.best:.6g} at epoch {self.best_epoch}"
        self.stopped_epoch = epoch
        self.reason = f"{name} did not improve by more than {self.min_delta:g} for {self.patience} epoch(s) ({best})"
        return True

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


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
