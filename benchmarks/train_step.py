"""Time per training step of the paper's CNN (batch 200): MDN vs no normalisation vs BatchNorm.

The network is the paper's MDN-Conv (conv1 16x5x5, conv2 32x5x5, fc1 84, fc2 1, on 1x32x32
inputs); the normalisation sits after conv1, conv2 and fc1, before each ReLU. A step is forward,
loss, backward and an Adam step, as in `mdn train` (with its malloc setting; MDN_MALLOC=system
turns it off); a second table times eval-mode forward passes, as in its per-epoch evaluation.
All configurations are measured in the same process, interleaved (one block of steps of each
per round, in a rotating order), and the median of the per-round ratios to no normalisation is
reported, so machine load drifts hit them alike.

    .venv/bin/python benchmarks/train_step.py [--rounds 15] [--steps 10] [--batch 200]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
from torch import nn

from mdn_cli.cli import reuse_freed_memory
from mdn_cli.nn import MetadataNorm, PenaltyMetadataNorm, RecursiveMetadataNorm, metadata, penalty_parameters
from mdn_cli.train.loop import fit_penalty_betas

DESIGN = 3  # label (preserved), confounder, intercept
WIDTHS = {"conv1": (16, 28, 28), "conv2": (32, 24, 24), "fc1": (84,)}


class _Copy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.clone()


class Copy(nn.Module):
    """The floor for any layer that is not in place: one new tensor forward, one backward."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _Copy.apply(x)


def network(norm: Callable[[str], nn.Module]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 5), norm("conv1"), nn.ReLU(),
        nn.Conv2d(16, 32, 5), norm("conv2"), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 24 * 24, 84), norm("fc1"), nn.ReLU(),
        nn.Linear(84, 1),
    )


def features(name: str) -> int:
    size = 1
    for d in WIDTHS[name]:
        size *= d
    return size


def make(kind: str, n_train: int) -> nn.Sequential:
    if kind == "none":
        return network(lambda _name: nn.Identity())
    if kind == "copy":
        return network(lambda _name: Copy())
    if kind == "batchnorm":
        return network(lambda name: nn.BatchNorm1d(84) if name == "fc1" else nn.BatchNorm2d(WIDTHS[name][0]))
    if kind == "mdn":
        def mdn(name: str) -> MetadataNorm:
            layer = MetadataNorm(features(name), DESIGN, num_preserved=1)
            layer.gram_inverse.copy_(torch.eye(DESIGN, dtype=torch.float64) / n_train)
            layer.n_train.fill_(n_train)
            return layer
        return network(mdn)
    if kind == "r-mdn":
        return network(lambda name: RecursiveMetadataNorm(features(name), DESIGN, num_preserved=1))
    if kind == "pmdn":
        return network(lambda name: PenaltyMetadataNorm(features(name), DESIGN, num_preserved=1))
    raise ValueError(kind)


def batch(size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, binary labels and the design [label, confounder, intercept] of one batch."""
    torch.manual_seed(0)
    x = torch.randn(size, 1, 32, 32)
    y = torch.randint(0, 2, (size,)).float()
    design = torch.cat([y[:, None], torch.randn(size, 1), torch.ones(size, 1)], 1)
    return x, y, design


def timed_steps(model: nn.Module, size: int) -> Callable[[int], float]:
    """A function that runs `count` training steps of `model` and returns seconds per step.

    A step is what `mdn train` does: for PMDN its two passes (the betas on the penalty, then the
    network on the task loss; `train.fit_penalty_betas`), else one forward and backward.
    """
    x, y, design = batch(size)
    betas = penalty_parameters(model)
    beta_ids = {id(p) for p in betas}
    optimizer = torch.optim.Adam([p for p in model.parameters() if id(p) not in beta_ids], lr=1e-4)
    beta_optimizer = torch.optim.Adam(betas, lr=0.045) if betas else None

    def run(count: int) -> float:
        started = time.perf_counter()
        for _ in range(count):
            if beta_optimizer is not None:
                fit_penalty_betas(model, x, design, beta_optimizer)
            with metadata(model, design):
                loss = nn.functional.binary_cross_entropy_with_logits(model(x)[:, 0], y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - started) / count

    return run


def timed_eval(model: nn.Module, size: int) -> Callable[[int], float]:
    """A function that runs `count` eval-mode forward passes (no gradient) and returns seconds per pass."""
    x, _, design = batch(size)
    model.eval()

    def run(count: int) -> float:
        started = time.perf_counter()
        with torch.no_grad():
            for _ in range(count):
                with metadata(model, design):
                    model(x)
        return (time.perf_counter() - started) / count

    return run


def compare(configurations: dict[str, Callable[[int], float]], rounds: int, steps: int, header: str) -> None:
    """Time the configurations interleaved and print each one's ratio to the first.

    One block of `steps` steps of each per round, in a rotating order; the ratio is taken within
    each round (the configurations ran back to back), so a load that comes and goes between
    rounds cancels; the median and quartiles are over rounds.
    """
    kinds = list(configurations)
    for kind in kinds:  # warm-up
        configurations[kind](3)
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(rounds):
        for kind in kinds[r % len(kinds):] + kinds[: r % len(kinds)]:
            times[kind].append(configurations[kind](steps))
    print(f"{rounds} rounds x {steps} steps, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"| {header} | median ms/step | vs {kinds[0]} (median of rounds) | quartiles |")
    print("|---|---:|---:|---:|")
    for kind in kinds:
        ratios = [t / base for t, base in zip(times[kind], times[kinds[0]])]
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        print(f"| {kind} | {statistics.median(times[kind]) * 1000:.1f} | {statistics.median(ratios):.3f}x | {q1:.3f}-{q3:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--steps", type=int, default=10, help="steps per configuration per round")
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    print("malloc:", "freed memory reused, as in `mdn`" if reuse_freed_memory() else "glibc defaults")
    kinds = ["none", "copy", "mdn", "batchnorm", "r-mdn", "pmdn"]
    configurations = {k: timed_steps(make(k, 600).train(), args.batch) for k in kinds}
    print(f"training steps, batch {args.batch}, ", end="")
    compare(configurations, args.rounds, args.steps, "normalisation at conv1, conv2, fc1")
    passes = {k: timed_eval(make(k, 600), args.batch) for k in kinds}
    print(f"\neval forward passes (no gradient, running statistics), batch {args.batch}, ", end="")
    compare(passes, args.rounds, args.steps, "normalisation at conv1, conv2, fc1")


if __name__ == "__main__":
    main()
