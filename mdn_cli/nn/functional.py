"""The MDN computations as functions (like ``torch.nn.functional``); the modules call these.

For features ``Y`` (flattened per sample), a design ``X = [preserved | metadata | intercept]`` and
the whole training set's Gram inverse ``K = (X'X)^-1``, the paper's training step is::

    beta_b = K X_b' Y_b * (n_train / n_b)            # estimates the full-data coefficients
    out    = Y_b - X_b[:, q:] beta_b[q:]              # q = number of preserved columns

Autograd nodes with hand-written backward passes live in ``_functions``.
"""

from __future__ import annotations

import torch

from mdn_cli.nn._functions import BatchMetadataNormFunction, PenaltyMetadataNormFunction, SubtractProduct
from mdn_cli.nn.kernels import transposed_product


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
    return SubtractProduct.apply(y, x, beta[num_preserved:].to(y.dtype)).reshape(features.shape)


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
    out, beta = BatchMetadataNormFunction.apply(y, x, gram_inv.to(y.dtype), float(n_train), num_preserved, sync)
    return out.reshape(features.shape), beta


def penalty_metadata_norm(features: torch.Tensor, design: torch.Tensor, beta: torch.Tensor, num_preserved: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """PMDN's layer in one autograd node: ``(Y - X_m beta_m, ||Y - X beta||²)``.

    The penalty is the sum of squares over the batch and the features of the whole design's
    residual (preserved columns included), as in the PMDN reference code. Differentiable in the
    features and in ``beta`` through both outputs; the backward pass folds the two gradient
    paths into one update of the features' gradient. Which loss reaches which parameters is the
    training loop's choice (``mdn_cli.train.loop.fit_penalty_betas``).
    """
    y = features.reshape(features.shape[0], -1)
    out, penalty = PenaltyMetadataNormFunction.apply(y, design.to(y.dtype), beta.to(y.dtype), num_preserved)
    return out.reshape(features.shape), penalty


def rls_update(
    beta: torch.Tensor, cov: torch.Tensor, xtx: torch.Tensor, xty: torch.Tensor, forgetting: float, process_noise: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """One block step of exponentially weighted recursive least squares, with process noise.

    The R-MDN reference's step, ``P <- P/λ; K = P X'(I + X P X')^-1; P <- P - K X P + q I;
    beta <- beta + K (Y - X beta)``, in information form: with the updated ``P_t = (λ P^-1 +
    X'X)^-1 = (λ I + P X'X)^-1 P`` the gain is ``K = P_t X'``, so
    ``beta_t = beta + P_t (X'Y - X'X beta)`` needs only X'X, X'Y and a (num_design x num_design)
    solve, whatever the batch size (1 included), and sums over DDP processes. The process noise
    ``q I`` (a Kalman random walk on beta) is added to P after the gain is used, as in the
    reference: it keeps P from collapsing, so beta keeps following features that change while
    the network trains.
    """
    eye = torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    cov = torch.linalg.solve(forgetting * eye + cov @ xtx, cov)
    cov = (cov + cov.T) / 2  # keep it symmetric against round-off
    return beta + cov @ (xty - xtx @ beta), cov + process_noise * eye
