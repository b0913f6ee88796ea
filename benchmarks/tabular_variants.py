"""The MDN variants on a held-out tabular study: does PMDN fall below chance, and why?

A study of 1,800 rows (balanced binary label) with a 3-level site and age, both tied to the label,
and 20 features: a weak label signal, a site and an age effect, noise. An MLP (MDN after each of
its two hidden layers, or after one) is trained with each variant; val accuracy and fc1's per-class
dcor² with age are reported (mean ± sd over seeds). For PMDN, `--penalty-pass` chooses how its
first pass runs: `reference` (as vento99/PMDN: every PMDN layer outputs `Y - X beta` over the whole
design, the penalty is the layers' mean) or `kept` (each layer outputs `Y - X_m beta_m`, the label
part kept, and the penalties are summed: what mdn did before), so the two can be told apart.
`--detach-batch-beta` trains batch MDN without the gradient through beta, as the other two train.

    .venv/bin/python benchmarks/tabular_variants.py [--seeds 0,1,2] [--epochs 40] [--batch-size 64]
        [--variants baseline,batch,recursive,penalty] [--mdn-layers 2] [--penalty-pass reference|kept] [--detach-batch-beta]
        [--set KEY=VALUE ...]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402


def make_study(folder: Path, n: int = 1800, features: int = 20, seed: int = 0) -> None:
    """Rows with a balanced label; site and age depend on the label; the features on all three."""
    from mdn_cli.data.synthetic import write_dataset

    rng = np.random.default_rng(seed)
    label = np.repeat([0, 1], n // 2)
    site = np.where(rng.random(n) < np.where(label == 1, 0.6, 0.2), 2, rng.integers(0, 2, n))  # label 1 mostly at site 2
    age = rng.normal(50 + 8 * label, 10)
    site_effect = rng.normal(size=(3, features))
    x = (0.35 * label[:, None] * rng.normal(size=features) + site_effect[site]
         + ((age - 50) / 10)[:, None] * rng.normal(size=features) + rng.normal(size=(n, features)))
    split = rng.permutation(np.array(["train"] * int(0.6 * n) + ["val"] * int(0.2 * n) + ["test"] * (n - int(0.6 * n) - int(0.2 * n))))
    table = pd.DataFrame({"id": np.arange(n), "label": label, "site": np.array(["a", "b", "c"])[site], "age": age.round(2), "split": split})
    write_dataset(folder, x.astype(np.float32), table)


def spec(folder: Path, variant: str, mdn_layers: int, epochs: int, batch_size: int, seed: int) -> Path:
    mdn = [{"type": "mdn"}] if variant != "baseline" else []
    layers = [{"type": "linear", "out_features": 32, "name": "fc0"}, *(mdn if mdn_layers >= 2 else []), {"type": "relu"},
              {"type": "linear", "out_features": 16, "name": "fc1"}, *mdn, {"type": "relu"}, {"type": "linear", "out_features": 1, "name": "out"}]
    body = {
        "data": {"inputs": "images.h5", "table": "meta.csv", "id_column": "id", "label": "label", "metadata": ["site", "age"], "split_column": "split"},
        "model": {"layers": layers},
        "mdn": {"preserve": ["label"], **({"variant": variant} if variant != "baseline" else {})},
        "train": {"task": "binary", "epochs": epochs, "batch_size": batch_size, "lr": 1e-3, "seed": seed, "monitor": "fc1", "device": "cpu"},
    }
    path = folder / f"{variant}-{seed}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


@contextlib.contextmanager
def kept_penalty_pass():
    """PMDN's first pass as mdn ran it before: the label part kept in the layers' outputs, penalties summed."""
    import torch

    from mdn_cli.nn import helpers
    from mdn_cli.nn.modules import PenaltyMetadataNorm
    from mdn_cli.train import loop

    saved = loop.penalty_pass, loop.mdn_penalty
    loop.penalty_pass = lambda _model: contextlib.nullcontext()
    loop.mdn_penalty = lambda model: torch.stack([m.penalty for m in helpers.metadata_norm_layers(model) if isinstance(m, PenaltyMetadataNorm)]).sum()
    try:
        yield
    finally:
        loop.penalty_pass, loop.mdn_penalty = saved


@contextlib.contextmanager
def detached_batch_beta():
    """Batch MDN without the gradient through beta_b (as R-MDN and PMDN have none): the same
    forward, but the backward pass no longer projects the features' gradient off the design."""
    import torch

    from mdn_cli.nn import functional, modules

    saved = modules.batch_metadata_norm

    def batch_metadata_norm(features, design, gram_inv, n_train, num_preserved=0, sync=False):
        with torch.no_grad():
            _, beta = saved(features.detach(), design, gram_inv, n_train, num_preserved, sync)
        return functional.metadata_norm(features, design, beta, num_preserved), beta

    modules.batch_metadata_norm = batch_metadata_norm
    try:
        yield
    finally:
        modules.batch_metadata_norm = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--variants", default="baseline,batch,recursive,penalty")
    parser.add_argument("--mdn-layers", type=int, default=2, choices=[1, 2])
    parser.add_argument("--penalty-pass", default="reference", choices=["reference", "kept"])
    parser.add_argument("--detach-batch-beta", action="store_true", help="batch MDN without the gradient through beta")
    parser.add_argument("--set", dest="extra", action="append", default=[])
    args = parser.parse_args()

    from mdn_cli.config import load_spec
    from mdn_cli.train.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_study(folder)
        results: dict[str, list[dict]] = {}
        for variant in args.variants.split(","):
            for seed in map(int, args.seeds.split(",")):
                context = contextlib.nullcontext()
                if variant == "penalty" and args.penalty_pass == "kept":
                    context = kept_penalty_pass()
                elif variant == "batch" and args.detach_batch_beta:
                    context = detached_batch_beta()
                with context:
                    summary = train(load_spec(spec(folder, variant, args.mdn_layers, args.epochs, args.batch_size, seed), args.extra), folder / f"run-{variant}-{seed}")
                last = summary["last"]
                results.setdefault(variant, []).append(last)
                print(f"{variant} seed {seed}: val acc {last['val_acc']:.3f} train loss {last['train_loss']:.3f} "
                      f"dcor² age {last['dcor2']['age']['label=0']:.3f}/{last['dcor2']['age']['label=1']:.3f}", flush=True)
    print(f"\n{args.mdn_layers} MDN layer(s), PMDN first pass: {args.penalty_pass}, batch beta detached: {args.detach_batch_beta}\n")
    print("| variant | val acc | train loss | dcor² age, label 0 | dcor² age, label 1 | dcor² site, label 0 | dcor² site, label 1 |\n|---|---:|---:|---:|---:|---:|---:|")
    for variant, runs in results.items():
        cells = [[r["val_acc"] for r in runs], [r["train_loss"] for r in runs]]
        cells += [[r["dcor2"][c][f"label={k}"] for r in runs] for c in ("age", "site") for k in (0, 1)]
        text = [f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}" for v in cells]
        print(f"| {variant} | " + " | ".join(text) + " |")


if __name__ == "__main__":
    main()
