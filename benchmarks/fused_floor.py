"""How fast could MDN's training step be? The library's MDN against the same MDN with a compiled update.

MDN's forward and backward are each one reduction (``X'Y``, ``X_m'G``) and one rank-k update
(``Y - X C``, in `mdn_cli.kernels.subtract_product`). In PyTorch the update takes one pass over the
features per design column; a hand-written C++ loop does it in a single pass whatever k is, which
is the fastest form the update can take. This script compiles such a loop (`torch.utils.cpp_extension`,
needs g++, about 30 s the first time), checks that MDN with it gives the library's outputs and
gradients, and times the paper's CNN (batch 200) with nothing, a bare copy, the library's MDN and
the compiled-update MDN at conv1, conv2 and fc1, interleaved as in `train_step.py`.

It is a measurement of the floor, not a code path of `mdn`: the package stays pure Python.

    .venv/bin/python benchmarks/fused_floor.py [--rounds 40] [--steps 5]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from typing import Iterator

import torch

import mdn_cli.nn as mdn_nn
import mdn_cli.nn._functions as mdn_functions
from mdn_cli.cli import reuse_freed_memory
from mdn_cli.nn.kernels import subtract_product
from train_step import compare, make, timed_steps

_SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>

// out = y - x c for y (n, d), x (n, k), c (k, d), float32, contiguous: one pass over y.
torch::Tensor subtract_product(torch::Tensor y, torch::Tensor x, torch::Tensor c) {
  auto out = torch::empty_like(y);
  const int64_t d = y.size(1), k = x.size(1);
  const float* yp = y.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  const float* cp = c.data_ptr<float>();
  float* op = out.data_ptr<float>();
  at::parallel_for(0, y.size(0), 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      // A row (d floats) stays in cache across the k column updates: one pass over memory.
      const float* row = yp + i * d;
      float* dst = op + i * d;
      const float a = xp[i * k];
      #pragma omp simd
      for (int64_t j = 0; j < d; ++j) dst[j] = row[j] - a * cp[j];
      for (int64_t q = 1; q < k; ++q) {
        const float b = xp[i * k + q];
        const float* cq = cp + q * d;
        #pragma omp simd
        for (int64_t j = 0; j < d; ++j) dst[j] -= b * cq[j];
      }
    }
  });
  return out;
}
"""


def compiled_subtract_product():
    if shutil.which("g++") is None:
        sys.exit("fused_floor.py needs g++ to compile its kernel.")
    from torch.utils.cpp_extension import load_inline

    module = load_inline(
        "mdn_fused_floor_v2", cpp_sources=_SOURCE, functions=["subtract_product"],
        extra_cflags=["-O3", "-march=native", "-fopenmp"],
    )

    def fused(y: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if y.dtype != torch.float32:
            return subtract_product(y, x, c)
        return module.subtract_product(y.contiguous(), x.contiguous(), c.contiguous())

    return fused


@contextlib.contextmanager
def update_replaced_by(kernel) -> Iterator[None]:
    """MDN with its rank-k update replaced by `kernel`, everything else unchanged.

    The autograd nodes look the kernel up in `mdn_cli.nn._functions` (a private module: this
    experiment swaps an implementation detail on purpose).
    """
    saved = mdn_functions.subtract_product
    mdn_functions.subtract_product = kernel
    try:
        yield
    finally:
        mdn_functions.subtract_product = saved


def check(kernel) -> None:
    """The compiled update gives the library's MDN outputs and gradients."""
    torch.manual_seed(1)
    y = torch.randn(50, 16, 7, 7, requires_grad=True)
    design = torch.cat([torch.randint(0, 2, (50, 1)).float(), torch.randn(50, 1), torch.ones(50, 1)], 1)
    gram_inv = torch.linalg.inv(design.double().T @ design.double())
    upstream = torch.randn(50, 16, 7, 7)
    results = []
    for replace in (False, True):
        with update_replaced_by(kernel) if replace else contextlib.nullcontext():
            out, beta = mdn_nn.batch_metadata_norm(y, design, gram_inv, 50, num_preserved=1)
            (grad,) = torch.autograd.grad(out, y, upstream)
        results.append((out, beta, grad))
    for ours, compiled in zip(*results):
        torch.testing.assert_close(compiled, ours, rtol=1e-5, atol=1e-5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--steps", type=int, default=5, help="steps per configuration per round")
    args = parser.parse_args()
    print("malloc:", "freed memory reused, as in `mdn`" if reuse_freed_memory() else "glibc defaults")
    kernel = compiled_subtract_product()
    check(kernel)
    library = timed_steps(make("mdn", 600).train(), 200)
    compiled = timed_steps(make("mdn", 600).train(), 200)

    def with_compiled_update(count: int) -> float:
        with update_replaced_by(kernel):
            return compiled(count)

    configurations = {
        "none": timed_steps(make("none", 600).train(), 200),
        "copy": timed_steps(make("copy", 600).train(), 200),
        "mdn": library,
        "mdn, compiled one-pass update": with_compiled_update,
    }
    print("batch 200, ", end="")
    compare(configurations, args.rounds, args.steps, "at conv1, conv2, fc1")


if __name__ == "__main__":
    main()
