"""The two products every MDN layer is made of, for features ``Y`` (n, d) and a design ``X`` (n, k).

``transposed_product(X, Y) = X'Y`` (a reduction over the batch) and
``subtract_product(Y, X, C) = Y - X C`` (a rank-k update). Forward and backward of all MDN variants
are these two, so they are the only place where speed is won or lost: k is a handful of design
columns, d the flattened feature map, and both are single passes over memory.
"""

from __future__ import annotations

import torch


def transposed_product(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``x.T @ y`` of shape (k, d).

    With k a handful of rows a CPU gemm runs on one core; with several threads the columns of
    ``y`` are cut into blocks multiplied as a batch, which runs the blocks in parallel (2x on 2
    cores here; see benchmarks/README.md).
    """
    blocks = 2 * torch.get_num_threads() if y.device.type == "cpu" else 1
    width = y.shape[1] // blocks
    if blocks == 1 or width < _MIN_BLOCK_WIDTH:
        return torch.mm(x.T, y)
    split = width * blocks
    batched = torch.bmm(x.T.unsqueeze(0).expand(blocks, -1, -1), y[:, :split].reshape(-1, blocks, width).transpose(0, 1))
    out = batched.transpose(0, 1).reshape(x.shape[1], split)
    if split == y.shape[1]:
        return out
    return torch.cat([out, torch.mm(x.T, y[:, split:])], 1)


_MIN_BLOCK_WIDTH = 1024


def subtract_product(y: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``y - x @ c`` of shape (n, d).

    For a few columns, as one broadcast multiply-subtract per column: the elementwise kernels
    stream ``y`` once per column, which is faster on the CPU than a gemm whose inner dimension is
    k (``baddbmm`` first copies ``y`` into the output, then updates it). See benchmarks/README.md.
    """
    if x.shape[1] == 0:
        return y.clone()
    if x.shape[1] > _ELEMENTWISE_COLUMNS:
        return torch.baddbmm(y.unsqueeze(0), x.unsqueeze(0), c.unsqueeze(0), alpha=-1).squeeze(0)
    out = torch.addcmul(y, x[:, :1], c[:1], value=-1)
    for k in range(1, x.shape[1]):
        out.addcmul_(x[:, k : k + 1], c[k : k + 1], value=-1)
    return out


_ELEMENTWISE_COLUMNS = 4
