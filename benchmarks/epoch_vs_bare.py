"""`mdn train`'s epoch against a bare PyTorch loop with the same layers and data, side by side in one run.

The shipped `sample_data/synthetic/mdn.yaml` (the paper's MDN-Conv, 600 training rows, batch
200). Each way runs in a fresh process with `mdn`'s malloc setting (``reuse_freed_memory``) and
``OMP_NUM_THREADS`` set, the two alternating round by round:

- mdn train: the library's ``train`` (what `mdn train` runs after start-up), an epoch timed from
  one epoch's start to the next: training, validation with its metrics and dcor², the checkpoint,
  ``metrics.jsonl``;
- mdn train, checkpoint_every 5: the same with ``train.checkpoint_every: 5``;
- bare: the same network (``build_run``: the same layers, MDN included, the same tensors), Adam,
  the same batches, a loss and a step per batch; no validation, no checkpoint, no bookkeeping.

An epoch is the mean from the start of epoch 2 to the start of the last (warm-up and the last
epoch, which always checkpoints, left out: with ``--epochs 12``, ten epochs of which every fifth
saves). The ratio to bare is taken within each round, and the median over the rounds is reported.

    .venv/bin/python benchmarks/epoch_vs_bare.py [--rounds 5] [--epochs 12] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = Path(__file__).resolve().parents[1] / "sample_data" / "synthetic" / "mdn.yaml"
WAYS = ("mdn train", "mdn train, checkpoint_every 5", "bare")


def epochs_of_mdn_train(epochs: int, every: int) -> list[float]:
    from mdn_cli.config import load_spec
    from mdn_cli.train.loop import train

    spec = load_spec(SPEC, overrides=[f"train.epochs={epochs}", f"train.checkpoint_every={every}"])
    starts: list[float] = []

    def progress(event: str, **_) -> None:
        if event == "epoch":
            starts.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as folder:
        train(spec, Path(folder) / "run", progress=progress)
        starts.append(time.perf_counter())
    return [b - a for a, b in zip(starts, starts[1:])]


def epochs_of_bare_loop(epochs: int) -> list[float]:
    import torch

    from mdn_cli.config import load_spec
    from mdn_cli.nn import metadata
    from mdn_cli.train.run import build_run

    spec = load_spec(SPEC)
    run = build_run(spec)
    network, data, t = run.network, run.data, spec.train
    optimizer = torch.optim.Adam(network.parameters(), lr=t.lr)
    rows = torch.as_tensor(data.splits["train"])
    inputs, design, targets = data.inputs.take(rows.numpy()), data.design_rows[rows], data.targets[rows]
    generator = torch.Generator().manual_seed(t.seed)
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        network.train()
        for batch in torch.randperm(len(rows), generator=generator).split(t.batch_size):
            with metadata(network, design[batch]):
                out = network(inputs[batch])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss.item()
        times.append(time.perf_counter() - started)
    return times


def child(way: str, epochs: int) -> None:
    from mdn_cli.cli import reuse_freed_memory

    reuse_freed_memory()
    times = epochs_of_bare_loop(epochs) if way == "bare" else epochs_of_mdn_train(epochs, 5 if "every" in way else 1)
    print(json.dumps(times))


def mean_epoch(way: str, epochs: int, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "NO_COLOR": "1"}
    done = subprocess.run([sys.executable, __file__, "--child", way, "--epochs", str(epochs)], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{way} failed:\n{done.stderr}")
    return statistics.mean(json.loads(done.stdout.splitlines()[-1])[1:-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--child", choices=WAYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.epochs)
    print(f"s / epoch, mean of epochs 2..{args.epochs - 1} per process; ratio to bare per round, median of {args.rounds} rounds")
    print("| threads | way | s / epoch | ratio to bare (min-max) |\n|---:|---|---:|---:|")
    for threads in (int(value) for value in args.threads.split(",")):
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        for r in range(args.rounds):
            for way in WAYS if r % 2 == 0 else reversed(WAYS):
                times[way].append(mean_epoch(way, args.epochs, threads))
        for way in WAYS:
            ratios = [a / b for a, b in zip(times[way], times["bare"])]
            print(f"| {threads} | {way} | {statistics.median(times[way]):.3f} | {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |")
    print(json.dumps({"load average": os.getloadavg()}))


if __name__ == "__main__":
    main()
