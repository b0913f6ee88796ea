"""Metadata Normalization layers (Lu et al., CVPR 2021) for any PyTorch model.

``MetadataNorm`` removes the part of a layer's features that a linear model of the metadata
explains. Per training batch, with the design ``X = [preserved | metadata | intercept]`` and the
whole training set's Gram inverse ``K = (X'X)^-1``::

    beta_b = K X_b' Y_b * (n_train / n_b)            # estimates the full-data coefficients
    out    = Y_b - X_b[:, q:] beta_b[q:]              # q = number of preserved columns

so the preserved columns' effect (e.g. the label) stays. Gradients flow through ``beta_b`` as
in the paper. A running average of ``beta`` (``momentum``; ``None`` = cumulative average, as in
BatchNorm) is used in eval mode, which still needs the evaluated rows' metadata.

Two variants differ only in how beta is obtained: ``RecursiveMetadataNorm`` (R-MDN, recursive
least squares over the stream of batches, no whole-set Gram matrix) and ``PenaltyMetadataNorm``
(PMDN, beta learned through a penalty added to the loss). Under DDP (``set_sync``) the batch
statistics are summed over the processes, so every rank uses the global batch's beta.
The computations are in ``functional``; this module holds the state (buffers, parameters).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy

from mdn_cli.nn._functions import distributed
from mdn_cli.nn.functional import batch_metadata_norm, metadata_norm, penalty_metadata_norm, rls_update
from mdn_cli.nn.gram import gram_inverse
from mdn_cli.nn.kernels import transposed_product


def _autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (torch < 2.4 has one query per device type)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class MetadataNormBase(nn.Module):
    """Shared plumbing of the MDN variants: design checks, residual output, synchronisation.

    Subclasses differ only in ``_train_forward`` (a training batch's output, from that batch's
    beta, updating any state) and ``inference_beta`` (the beta used in eval mode; ``running_beta``
    unless overridden). ``sync = True`` (set by ``set_sync``) sums the batch statistics over the
    process group, so each DDP rank computes the beta of the global batch.
    """

    _design: torch.Tensor | None

    def __init__(self, num_features: int, num_design: int, num_preserved: int = 0):
        super().__init__()
        if not 0 <= num_preserved < num_design:
            raise ValueError(f"num_preserved={num_preserved} must be in [0, num_design={num_design}).")
        self.num_features = num_features
        self.num_design = num_design
        self.num_preserved = num_preserved
        self.sync = False
        self._design = None

    def _train_forward(self, input: torch.Tensor, design: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def inference_beta(self) -> torch.Tensor:
        return self.running_beta

    def load_beta(self, beta: torch.Tensor) -> None:
        """Set the beta used in eval mode (``refit_beta`` uses it); training goes on from there."""
        target = self.inference_beta()
        if beta.shape != target.shape:
            raise ValueError(f"beta of shape {tuple(beta.shape)} does not fit {tuple(target.shape)}.")
        with torch.no_grad():
            target.copy_(beta)

    def forward(self, input: torch.Tensor, design: torch.Tensor | None = None) -> torch.Tensor:
        if _autocast_enabled(input.device.type):
            # under mixed precision the statistics (X'Y, beta, the Gram inverse, running beta) stay float32
            with torch.autocast(input.device.type, enabled=False):
                return self._forward(input.float() if input.dtype in (torch.float16, torch.bfloat16) else input, design)
        return self._forward(input, design)

    def _forward(self, input: torch.Tensor, design: torch.Tensor | None) -> torch.Tensor:
        design = self._checked_design(input, self._design if design is None else design)
        if self.training:
            return self._train_forward(input, design)
        return metadata_norm(input, design, self.inference_beta(), self.num_preserved)

    def _synced(self) -> bool:
        return self.sync and distributed()

    def _checked_design(self, input: torch.Tensor, design: torch.Tensor | None) -> torch.Tensor:
        if design is None:
            raise RuntimeError(
                f"{type(self).__name__} needs the batch's metadata: run the model inside "
                "`with mdn_cli.nn.metadata(model, design):` or pass `design=` to the layer."
            )
        if design.ndim != 2 or design.shape != (input.shape[0], self.num_design):
            raise ValueError(
                f"design matrix of shape {tuple(design.shape)} does not fit a batch of {input.shape[0]} "
                f"rows and {self.num_design} design columns."
            )
        features = int(np.prod(input.shape[1:]))
        width = self.inference_beta().shape[1]
        if features != width:
            raise ValueError(
                f"{type(self).__name__} has {width} features but the input has "
                f"{features} per sample (shape {tuple(input.shape)})."
            )
        return design.to(device=input.device, dtype=input.dtype)

    def extra_repr(self) -> str:
        return f"num_features={self.num_features}, num_design={self.num_design}, num_preserved={self.num_preserved}"


class MetadataNorm(MetadataNormBase):
    """The paper's MDN: beta from each training batch with the whole training set's Gram inverse.

    Call ``fit_gram(X_train)`` (or the model-level ``fit_gram``) once before training. Eval mode
    uses a running average of the batch betas (``momentum``; ``None`` = cumulative average).
    """

    def __init__(self, num_features: int, num_design: int, num_preserved: int = 0, momentum: float | None = 0.1):
        super().__init__(num_features, num_design, num_preserved)
        if momentum is not None and not 0 < momentum <= 1:
            raise ValueError(f"momentum={momentum} must be in (0, 1], or None for a cumulative average.")
        self.momentum = momentum
        self.register_buffer("running_beta", torch.zeros(num_design, num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.register_buffer("gram_inverse", torch.zeros(num_design, num_design, dtype=torch.float64))
        self.register_buffer("n_train", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self) -> None:
        self.running_beta.zero_()
        self.num_batches_tracked.zero_()

    def fit_gram(self, design: torch.Tensor | np.ndarray, column_names: Sequence[str] | None = None, ridge: float = 0.0) -> "MetadataNorm":
        """Store ``(X'X)^-1`` and ``n`` of the whole training set's design matrix."""
        x = np.asarray(design.detach().cpu() if isinstance(design, torch.Tensor) else design, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.num_design:
            raise ValueError(f"training design of shape {x.shape} does not have {self.num_design} columns.")
        self.gram_inverse.copy_(torch.from_numpy(gram_inverse(x, column_names, ridge)))
        self.n_train.fill_(x.shape[0])
        return self

    def _train_forward(self, input: torch.Tensor, design: torch.Tensor) -> torch.Tensor:
        n_train = int(self.n_train)
        if n_train == 0:
            raise RuntimeError("MetadataNorm has no Gram inverse: call fit_gram(X_train) before training.")
        out, beta = batch_metadata_norm(input, design, self.gram_inverse, n_train, self.num_preserved, self._synced())
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            self.running_beta.lerp_(beta.to(self.running_beta.dtype), factor)
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum}"


class RecursiveMetadataNorm(MetadataNormBase):
    """R-MDN (Shah et al.): beta by recursive least squares over the stream of training batches.

    Each training batch updates beta as a Kalman filter with a random-walk state would
    (``rls_update``): ``forgetting`` λ, initial ``P = I / regularizer`` (δ) and
    ``process_noise`` q added to P after every update, the reference code's defaults (0.999, 0.01,
    1e-4). With q = 0, after t batches beta minimises ``Σ_s λ^(t-s) ||Y_s - X_s beta||² + λ^t δ
    ||beta||²``. No whole-set Gram matrix is needed: it works on streams, in continual learning
    and with batch size 1. As in the reference, a training batch's output uses the beta already
    updated with that batch, no gradient flows through beta, and eval mode uses the stored beta
    without updating it. The state (``running_beta`` = beta, ``covariance`` = P, float64) is in
    buffers, so a resumed run continues exactly (the reference keeps P outside the state dict).
    """

    def __init__(self, num_features: int, num_design: int, num_preserved: int = 0, forgetting: float = 0.999, regularizer: float = 1e-2,
                 process_noise: float = 1e-4):
        super().__init__(num_features, num_design, num_preserved)
        if not 0 < forgetting <= 1:
            raise ValueError(f"forgetting={forgetting} must be in (0, 1].")
        if not regularizer > 0:
            raise ValueError(f"regularizer={regularizer} must be > 0 (the initial P is I / regularizer).")
        if not process_noise >= 0:
            raise ValueError(f"process_noise={process_noise} must be >= 0.")
        self.forgetting = forgetting
        self.regularizer = regularizer
        self.process_noise = process_noise
        self.register_buffer("running_beta", torch.zeros(num_design, num_features, dtype=torch.float64))
        self.register_buffer("covariance", torch.eye(num_design, dtype=torch.float64) / regularizer)
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self) -> None:
        self.running_beta.zero_()
        self.covariance.copy_(torch.eye(self.num_design, dtype=self.covariance.dtype) / self.regularizer)
        self.num_batches_tracked.zero_()

    def _train_forward(self, input: torch.Tensor, design: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            x = design.to(self.covariance.dtype)
            # X'Y in the features' dtype (no float64 copy of them), then the (small) rest in float64
            sums = torch.cat([x.T @ x, transposed_product(design, input.reshape(input.shape[0], -1)).to(x.dtype)], 1)
            if self._synced():
                torch.distributed.all_reduce(sums)
            xtx, xty = sums[:, : self.num_design], sums[:, self.num_design :]
            beta, cov = rls_update(self.running_beta, self.covariance, xtx, xty, self.forgetting, self.process_noise)
            self.running_beta.copy_(beta)
            self.covariance.copy_(cov)
            self.num_batches_tracked.add_(1)
        return metadata_norm(input, design, beta, self.num_preserved)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, forgetting={self.forgetting}, regularizer={self.regularizer}, process_noise={self.process_noise}"


class PenaltyMetadataNorm(MetadataNormBase):
    """PMDN (Vento et al.): beta is a learned parameter, fitted by a penalty ``||Y - X beta||²``.

    As in the PMDN reference code the whole design is fitted (preserved columns included, as in the
    other variants), the penalty is a sum of squares and beta starts at zero. The reference trains
    beta on the penalty alone and the network on the task loss alone, in two passes per batch
    (``mdn_cli.train.loop.fit_penalty_betas``). In the penalty pass (``fitting``, set by
    ``penalty_pass``) the layer outputs the residual of the whole design, ``Y - X beta``: later
    layers see features without the preserved part, and the preserved rows of beta get gradient
    from the later layers' penalties, as in the reference. Otherwise, and in eval mode, only the
    metadata and intercept part is removed. After each training forward ``penalty`` holds the term.
    """

    def __init__(self, num_features: int, num_design: int, num_preserved: int = 0):
        super().__init__(num_features, num_design, num_preserved)
        self.beta = nn.Parameter(torch.zeros(num_design, num_features))
        self.penalty: torch.Tensor | None = None
        self.fitting = False

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.beta.zero_()

    def inference_beta(self) -> torch.Tensor:
        return self.beta

    def _train_forward(self, input: torch.Tensor, design: torch.Tensor) -> torch.Tensor:
        out, self.penalty = penalty_metadata_norm(input, design, self.beta, 0 if self.fitting else self.num_preserved)
        return out


# -- lazy twins (num_features from the first input, like LazyLinear) --------------------------
class _LazyWidth(LazyModuleMixin):
    """Materialises the uninitialised (num_design, num_features) tensors from the first input."""

    _state_dtype: torch.dtype | None = None  # None: the input's dtype

    def reset_running_stats(self) -> None:
        if not self.has_uninitialized_params():
            super().reset_running_stats()

    def reset_parameters(self) -> None:
        self.reset_running_stats()

    def initialize_parameters(self, input: torch.Tensor, *args, **kwargs) -> None:
        if self.has_uninitialized_params():
            self.num_features = int(np.prod(input.shape[1:]))
            with torch.no_grad():
                for tensor in [*self.parameters(recurse=False), *self.buffers(recurse=False)]:
                    if is_lazy(tensor):
                        tensor.materialize((self.num_design, self.num_features), dtype=self._state_dtype or input.dtype)
                self.reset_parameters()

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        # the lazy load hook materialises the tensors from the checkpoint: take their width too
        super()._load_from_state_dict(*args, **kwargs)
        if not self.has_uninitialized_params():
            self.num_features = int(self.inference_beta().shape[1])


class LazyMetadataNorm(_LazyWidth, MetadataNorm):
    """``MetadataNorm`` whose ``num_features`` is inferred from the first input (like LazyLinear)."""

    cls_to_become = MetadataNorm
    running_beta: UninitializedBuffer

    def __init__(self, num_design: int, num_preserved: int = 0, momentum: float | None = 0.1):
        super().__init__(0, num_design, num_preserved, momentum)
        self.running_beta = UninitializedBuffer()


class LazyRecursiveMetadataNorm(_LazyWidth, RecursiveMetadataNorm):
    """``RecursiveMetadataNorm`` whose ``num_features`` is inferred from the first input."""

    cls_to_become = RecursiveMetadataNorm
    running_beta: UninitializedBuffer
    _state_dtype = torch.float64

    def __init__(self, num_design: int, num_preserved: int = 0, forgetting: float = 0.999, regularizer: float = 1e-2, process_noise: float = 1e-4):
        super().__init__(0, num_design, num_preserved, forgetting, regularizer, process_noise)
        self.running_beta = UninitializedBuffer(dtype=self._state_dtype)  # float64, also when loaded from a checkpoint


class LazyPenaltyMetadataNorm(_LazyWidth, PenaltyMetadataNorm):
    """``PenaltyMetadataNorm`` whose ``num_features`` is inferred from the first input."""

    cls_to_become = PenaltyMetadataNorm
    beta: UninitializedParameter

    def __init__(self, num_design: int, num_preserved: int = 0):
        super().__init__(0, num_design, num_preserved)
        self.beta = UninitializedParameter()

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params():
            PenaltyMetadataNorm.reset_parameters(self)

