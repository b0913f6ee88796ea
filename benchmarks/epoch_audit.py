"""What the per-epoch dcor² audit costs inside `mdn train`, measured side by side in one run.

Times, on the shipped `mdn.yaml`, one training epoch plus validation (what every epoch does
anyway) and the audit of the monitored layer's val features (pooled and per class), then the
audit alone on the same features tiled to larger validation sets, to show how it scales and
what `train.dcor_max_samples` buys.

    .venv/bin/python benchmarks/epoch_audit.py
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mdn_cli.data.audit import audit_features
from mdn_cli.nn import metadata
from mdn_cli.config import load_spec
from mdn_cli.train.loop import Trainer
from mdn_cli.train.monitor import dcor_by_class, split_metrics
from mdn_cli.train.run import build_run

SPEC = Path(__file__).resolve().parents[1] / "sample_data" / "synthetic" / "mdn.yaml"


def timed(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    spec = load_spec(SPEC)
    run = build_run(spec)
    trainer = Trainer(run, Path("/tmp/mdn-epoch-audit-unused"))

    def epoch_without_audit() -> None:
        run.network.train()
        for _rows, x, design, y in run.data.batches("train", spec.train.batch_size, shuffle_seed=0):
            with metadata(run.network, design):
                out = run.network(x)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], y)
            trainer.optimizer.zero_grad()
            loss.backward()
            trainer.optimizer.step()
        split_metrics(run, "val", capture=spec.train.monitor)

    _, features = split_metrics(run, "val", capture=spec.train.monitor)
    dcor_by_class(run, features)  # warm-up (numba compilation happens once per process)
    epoch = timed(epoch_without_audit)
    audit = timed(lambda: dcor_by_class(run, features))
    print(f"shipped data: val n={features.shape[0]}, fc1 d={features.shape[1]}, torch threads {torch.get_num_threads()}")
    print("| measurement | seconds | share of an epoch |\n|---|---:|---:|")
    print(f"| epoch: train {len(run.data.splits['train'])} rows + validate | {epoch:.3f} | 1.00 |")
    print(f"| per-epoch audit (pooled + 2 classes) | {audit:.4f} | {audit / epoch:.3f} |")

    table = run.data.table.iloc[run.data.splits["val"]].reset_index(drop=True)
    print("\naudit alone on the val features tiled to n rows (jittered copies), pooled + per class:")
    print("| val n | seconds |\n|---:|---:|")
    rng = np.random.default_rng(0)
    for factor in (10, 50, 100):
        big = np.tile(features, (factor, 1)) + rng.normal(0, 1e-3, (factor * len(features), features.shape[1])).astype(np.float32)
        big_table = table.loc[np.tile(np.arange(len(table)), factor)].reset_index(drop=True)
        seconds = timed(lambda: audit_features(big, big_table, ["cf"], by="label"), repeats=1)
        print(f"| {len(big):,} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
