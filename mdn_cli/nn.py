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

Metadata reach the layers per batch without becoming model state::

    fit_gram(model, X_train)                  # once, from the whole training set
    with metadata(model, X_batch):            # every forward pass
        out = model(x)
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy

from mdn_cli.design import gram_inverse
from mdn_cli.kernels import subtract_product, transposed_product


# -- functional form -------------------------------------------------------------------------
def batch_beta(features: torch.Tensor, design: torch.Tensor, gram_inv: torch.Tensor, n_train: int) -> torch.Tensor:
    """The batch estimate ``K X_b' Y_b · n_train / n_b`` of shape (num_design, num_features)."""
    y = features.reshape(features.shape[0], -1)
    return gram_inv @ transposed_product(design, y) * (n_train / y.shape[0])


def metadata_norm(features: torch.Tensor, design: torch.Tensor, beta: torch.Tensor, num_preserved: int = 0) -> torch.Tensor:
    """Subtract the metadata and intercept part ``X[:, q:] beta[q:]``; keep the preserved part.

    Differentiable in ``features`` (the gradient passes unchanged) and in ``beta`` (``-X_m' G``).
    """
    y = features.reshape(features.shape[0], -1)
    x = design[:, num_preserved:].to(y.dtype)
    return _SubtractProduct.apply(y, x, beta[num_preserved:].to(y.dtype)).reshape(features.shape)


def batch_metadata_norm(
    features: torch.Tensor, design: torch.Tensor, gram_inv: torch.Tensor, n_train: int, num_preserved: int = 0, sync: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Training-mode MDN in one autograd node: ``(Y - X_m beta_b[q:], beta_b)`` (beta detached).

    The same as ``metadata_norm(Y, X, batch_beta(Y, X, K, n), q)`` with the gradient through
    beta_b, but its backward pass is one reduction and one update, ``G - (X K_m') (s X_m'G)``:
    three passes over the features where autograd makes five (a separate expansion, then the sum
    of the two gradient paths). With ``sync`` the batch sums are added over the process group
    (DDP), in both directions.
    """
    y = features.reshape(features.shape[0], -1)
    x = design.to(y.dtype)
    out, beta = _BatchMetadataNorm.apply(y, x, gram_inv.to(y.dtype), float(n_train), num_preserved, sync)
    return out.reshape(features.shape), beta


def penalty_metadata_norm(
    features: torch.Tensor, design: torch.Tensor, beta: torch.Tensor, num_preserved: int = 0, weight: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """PMDN's training step in one autograd node: ``(Y - X_m beta_m, weight · mean((Y - X beta)²))``.

    Differentiable in the features and in ``beta`` through both outputs. The penalty's residual
    is the output minus the preserved part, and the backward pass folds the two gradient paths
    into one update of the features' gradient.
    """
    y = features.reshape(features.shape[0], -1)
    out, penalty = _PenaltyMetadataNorm.apply(y, design.to(y.dtype), beta.to(y.dtype), num_preserved, weight)
    return out.reshape(features.shape), penalty


class _SubtractProduct(torch.autograd.Function):
    """``Y - X C`` for features ``Y`` (n, d), a constant design ``X`` (n, k) and ``C`` (k, d)."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return subtract_product(y, x, c)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad_c = -transposed_product(x, grad) if ctx.needs_input_grad[2] else None
        return grad, None, grad_c


class _PenaltyMetadataNorm(torch.autograd.Function):
    """``out = Y - X_m beta_m`` and ``P = c ||R||²`` with ``R = Y - X beta``, ``c = weight / Y.numel()``."""

    @staticmethod
    def forward(ctx, y, x, beta, num_preserved, weight):
        q = num_preserved
        out = subtract_product(y, x[:, q:], beta[q:])
        residual = subtract_product(out, x[:, :q], beta[:q]) if q else out.clone()  # its own tensor: `out` may be changed in place later
        scale = weight / max(residual.numel(), 1)  # an empty DDP share adds 0
        flat = residual.reshape(-1)
        ctx.save_for_backward(x, residual)
        ctx.num_preserved, ctx.scale = q, scale
        return out, torch.dot(flat, flat) * scale

    @staticmethod
    def backward(ctx, grad, grad_penalty):
        x, residual = ctx.saved_tensors
        q = ctx.num_preserved
        grad_y = torch.addcmul(grad, residual, grad_penalty * (2 * ctx.scale))  # G + 2c g_P R
        grad_beta = None
        if ctx.needs_input_grad[2]:  # removed rows: -X_m'(G + 2c g_P R); preserved rows: -2c g_P X_p'R
            removed = -transposed_product(x[:, q:], grad_y)
            kept = transposed_product(x[:, :q], residual) * (grad_penalty * (-2 * ctx.scale))
            grad_beta = torch.cat([kept, removed])
        return grad_y, None, grad_beta, None, None


class _BatchMetadataNorm(torch.autograd.Function):
    """``out = Y - X_m s K_m X'Y`` (K_m: the removed rows of K, s = n_train / batch count)."""

    @staticmethod
    def forward(ctx, y, x, gram_inv, n_train, num_preserved, sync):
        xty = transposed_product(x, y)
        count = float(y.shape[0])
        if sync and _distributed():  # one collective for the sums and the count
            packed = torch.cat([xty.reshape(-1), xty.new_full((1,), count)])
            torch.distributed.all_reduce(packed)
            xty, count = packed[:-1].view_as(xty), float(packed[-1])
        scale = n_train / count
        beta = gram_inv @ xty * scale
        ctx.save_for_backward(x, gram_inv)
        ctx.scale, ctx.num_preserved, ctx.sync = scale, num_preserved, sync
        ctx.mark_non_differentiable(beta)
        return subtract_product(y, x[:, num_preserved:], beta[num_preserved:]), beta

    @staticmethod
    def backward(ctx, grad, _grad_beta):
        x, gram_inv = ctx.saved_tensors
        q = ctx.num_preserved
        removed = transposed_product(x[:, q:], grad)  # X_m' G, the gradient reaching beta_m (negated)
        if ctx.sync and _distributed():
            torch.distributed.all_reduce(removed)  # every rank's loss depends on the shared beta
        # G - X (s K_m' X_m'G), grouped as (X K_m') (s X_m'G): q_m columns rather than all of X
        return subtract_product(grad, x @ gram_inv[q:].T, removed * ctx.scale), None, None, None, None, None


def rls_update(
    beta: torch.Tensor, cov: torch.Tensor, xtx: torch.Tensor, xty: torch.Tensor, forgetting: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One block step of exponentially weighted recursive least squares.

    With information ``R = P^-1``: ``R_t = λ R_{t-1} + X'X`` and
    ``beta_t = beta_{t-1} + P_t (X'Y - X'X beta_{t-1})``. ``P_t = (λ I + P X'X)^-1 P`` needs only a
    (num_design x num_design) solve, whatever the batch size (1 included).
    """
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    cov = torch.linalg.solve(forgetting * eye + cov @ xtx, cov)
    cov = (cov + cov.T) / 2  # keep it symmetric against round-off
    return beta + cov @ (xty - xtx @ beta), cov


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


# -- modules ---------------------------------------------------------------------------------
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
        design = self._checked_design(input, self._design if design is None else design)
        if self.training:
            return self._train_forward(input, design)
        return metadata_norm(input, design, self.inference_beta(), self.num_preserved)

    def _synced(self) -> bool:
        return self.sync and _distributed()

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
    """R-MDN: beta by recursive least squares over the stream of training batches.

    After t batches ``beta`` minimises ``Σ_s λ^(t-s) ||Y_s - X_s beta||² + λ^t δ ||beta||²``
    (λ = ``forgetting``, δ = ``regularizer``), so no whole-set Gram matrix is needed: it works on
    streams, in continual learning and with batch size 1. The state (``running_beta`` = beta,
    ``covariance`` = P, float64) is in buffers; gradients do not flow through beta.
    """

    def __init__(self, num_features: int, num_design: int, num_preserved: int = 0, forgetting: float = 0.999, regularizer: float = 1e-2):
        super().__init__(num_features, num_design, num_preserved)
        if not 0 < forgetting <= 1:
            raise ValueError(f"forgetting={forgetting} must be in (0, 1].")
        if not regularizer > 0:
            raise ValueError(f"regularizer={regularizer} must be > 0 (the initial P is I / regularizer).")
        self.forgetting = forgetting
        self.regularizer = regularizer
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
            beta, cov = rls_update(self.running_beta, self.covariance, xtx, xty, self.forgetting)
            self.running_beta.copy_(beta)
            self.covariance.copy_(cov)
            self.num_batches_tracked.add_(1)
        return metadata_norm(input, design, beta, self.num_preserved)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, forgetting={self.forgetting}, regularizer={self.regularizer}"


class PenaltyMetadataNorm(MetadataNormBase):
    """PMDN: beta is a learned parameter; the loss gains ``penalty_weight · mean((Y - X beta)²)``.

    As in the PMDN paper the whole design is fitted (so preserved columns are fitted jointly, as in
    the other variants) and only the metadata and intercept part is removed. The mean over the
    batch's elements, not the paper's plain sum, keeps the weight independent of batch size and
    layer width. After each training forward ``penalty`` holds that term (``mdn_penalty`` sums them);
    give ``beta`` its own optimiser and learning rate (``penalty_parameters``), as the paper does.
    """

    def __init__(self, num_features: int, num_design: int, num_preserved: int = 0, penalty_weight: float = 1.0):
        super().__init__(num_features, num_design, num_preserved)
        if not penalty_weight > 0:
            raise ValueError(f"penalty_weight={penalty_weight} must be > 0.")
        self.penalty_weight = penalty_weight
        self.beta = nn.Parameter(torch.zeros(num_design, num_features))
        self.penalty: torch.Tensor | None = None

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.beta.zero_()

    def inference_beta(self) -> torch.Tensor:
        return self.beta

    def _train_forward(self, input: torch.Tensor, design: torch.Tensor) -> torch.Tensor:
        out, self.penalty = penalty_metadata_norm(input, design, self.beta, self.num_preserved, self.penalty_weight)
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, penalty_weight={self.penalty_weight}"


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

    def __init__(self, num_design: int, num_preserved: int = 0, forgetting: float = 0.999, regularizer: float = 1e-2):
        super().__init__(0, num_design, num_preserved, forgetting, regularizer)
        self.running_beta = UninitializedBuffer(dtype=self._state_dtype)  # float64, also when loaded from a checkpoint


class LazyPenaltyMetadataNorm(_LazyWidth, PenaltyMetadataNorm):
    """``PenaltyMetadataNorm`` whose ``num_features`` is inferred from the first input."""

    cls_to_become = PenaltyMetadataNorm
    beta: UninitializedParameter

    def __init__(self, num_design: int, num_preserved: int = 0, penalty_weight: float = 1.0):
        super().__init__(0, num_design, num_preserved, penalty_weight)
        self.beta = UninitializedParameter()

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params():
            PenaltyMetadataNorm.reset_parameters(self)


# -- model-level helpers ---------------------------------------------------------------------
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
    """Sum of the PMDN penalties of the last training forward, or None without PMDN layers."""
    terms = [m.penalty for m in metadata_norm_layers(model) if isinstance(m, PenaltyMetadataNorm) and m.penalty is not None]
    return torch.stack(terms).sum() if terms else None


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
