"""What a task's output means: its loss, the scores the metrics take, the predicted class.

One definition each, shared by training, `mdn evaluate` and cross-validation: the network's output
is logits (binary: one column, multiclass: one per class) or the prediction (regression).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from mdn_cli.stats.metrics import predicted_classes


def task_loss(task: str, weights: torch.Tensor | None = None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The task's loss, optionally with class weights: binary through ``pos_weight = w1 / w0``, multiclass through ``weight``."""
    if task == "regression":
        return lambda out, y: nn.functional.mse_loss(out[:, 0], y)
    if task == "binary":
        pos_weight = None if weights is None else (weights[1] / weights[0]).reshape(1)
        return lambda out, y: nn.functional.binary_cross_entropy_with_logits(out[:, 0], y, pos_weight=None if pos_weight is None else pos_weight.to(out.device))
    return lambda out, y: nn.functional.cross_entropy(out, y, weight=None if weights is None else weights.to(out.device))


def scores(task: str, out: torch.Tensor) -> torch.Tensor:
    """What the metrics take from the network's output: P(class 1) (binary), per-class probabilities (multiclass), the prediction (regression)."""
    if task == "multiclass":
        return torch.softmax(out, dim=1)
    return torch.sigmoid(out[:, 0]) if task == "binary" else out[:, 0]


def predicted(task: str, classes: list, score: np.ndarray) -> np.ndarray:
    """The predicted label per row (a value of ``classes``) from ``scores``: the metrics' one threshold (binary) or argmax."""
    return np.asarray(classes, dtype=object)[predicted_classes(task, score)]
