"""Autograd Functions of the MDN layers: the forward products and hand-written backward passes.

Each is checked against ``torch.autograd.gradcheck`` and against autograd through the plain
functional form (tests/nn).
"""

from __future__ import annotations

import torch

from mdn_cli.nn.kernels import subtract_product, transposed_product


def distributed() -> bool:
    """Whether a process group of more than one process is running (DDP)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


class SubtractProduct(torch.autograd.Function):
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


class PenaltyMetadataNormFunction(torch.autograd.Function):
    """``out = Y - X_m beta_m`` and ``P = ||R||²`` (a sum of squares) with ``R = Y - X beta``."""

    @staticmethod
    def forward(ctx, y, x, beta, num_preserved):
        q = num_preserved
        out = subtract_product(y, x[:, q:], beta[q:])
        residual = subtract_product(out, x[:, :q], beta[:q]) if q else out.clone()  # its own tensor: `out` may be changed in place later
        flat = residual.reshape(-1)
        ctx.save_for_backward(x, residual)
        ctx.num_preserved = q
        return out, torch.dot(flat, flat)

    @staticmethod
    def backward(ctx, grad, grad_penalty):
        x, residual = ctx.saved_tensors
        q = ctx.num_preserved
        grad_y = torch.addcmul(grad, residual, grad_penalty * 2)  # G + 2 g_P R
        grad_beta = None
        if ctx.needs_input_grad[2]:  # removed rows: -X_m'(G + 2 g_P R); preserved rows: -2 g_P X_p'R
            removed = -transposed_product(x[:, q:], grad_y)
            kept = transposed_product(x[:, :q], residual) * (grad_penalty * -2)
            grad_beta = torch.cat([kept, removed])
        return grad_y, None, grad_beta, None


class BatchMetadataNormFunction(torch.autograd.Function):
    """``out = Y - X_m s K_m X'Y`` (K_m: the removed rows of K, s = n_train / batch count)."""

    @staticmethod
    def forward(ctx, y, x, gram_inv, n_train, num_preserved, sync):
        xty = transposed_product(x, y)
        count = float(y.shape[0])
        if sync and distributed():  # one collective for the sums and the count
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
        if ctx.sync and distributed():
            torch.distributed.all_reduce(removed)  # every rank's loss depends on the shared beta
        # G - X (s K_m' X_m'G), grouped as (X K_m') (s X_m'G): q_m columns rather than all of X
        return subtract_product(grad, x @ gram_inv[q:].T, removed * ctx.scale), None, None, None, None, None

