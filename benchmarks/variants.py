"""MDN variants on the shipped synthetic data at batch sizes 8, 32 and 200.

Trains the shipped baseline and MDN specs (`sample_data/synthetic/{baseline,mdn}.yaml`: the
paper's MDN-Conv, MDN after conv1, conv2 and fc1) with `mdn.variant` batch, recursive and penalty,
at each batch size, for the same fixed number of epochs (so smaller batches take more optimizer
steps: the experiment is "the same data, the same epochs", not "the same number of updates"), and
reports the last epoch's validation accuracy and per-class dcor² of fc1's features with the
confounder cf (the paper's metric; 0 = no confounder information left in that class), then the
same after `mdn refit` of the last checkpoint (every MDN layer's eval beta refitted on the whole
training set).

    .venv/bin/python benchmarks/variants.py [--epochs 40] [--batch-sizes 8,32,200] [--seeds 0] [--out runs/variants]
        [--variants baseline,batch,recursive,penalty,recursive:forgetting=0.99] [--set train.weight_decay=1e-3 ...]

A variant may carry `mdn.` settings after a colon (`penalty:beta_lr=0.1`, `recursive:process_noise=0`).

Prints a markdown table (mean ± standard deviation over seeds) and writes OUT/results.json.
Runs with one OpenMP thread (set before torch is imported): on a shared 2-core machine two
spinning OpenMP threads made a batch-8 epoch 17x slower.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_data" / "synthetic"
VARIANTS = ["baseline", "batch", "recursive", "penalty"]


def variant_spec(variant: str) -> tuple[Path, list[str]]:
    """The shipped spec of a variant (`baseline`, `batch`, `penalty:beta_lr=0.1`...) and its `mdn.` overrides."""
    name, *settings = variant.split(":")
    if name == "baseline":
        return SAMPLE / "baseline.yaml", []
    return SAMPLE / "mdn.yaml", [f"mdn.variant={name}", *(f"mdn.{setting}" for setting in settings)]


def run_one(variant: str, batch_size: int, epochs: int, seed: int, out: Path, extra: list[str] = ()) -> dict:
    from mdn_cli.config import load_spec
    from mdn_cli.train.loop import train

    spec_file, settings = variant_spec(variant)
    overrides = [f"train.batch_size={batch_size}", f"train.epochs={epochs}", f"train.seed={seed}", "train.device=cpu", *settings, *extra]
    run_dir = out / f"{variant.replace(':', '_')}-b{batch_size}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    summary = train(load_spec(spec_file, overrides), run_dir)
    last = summary["last"]
    result = {
        "variant": variant, "batch_size": batch_size, "seed": seed, "epochs": epochs,
        "val_acc": last["val_acc"],
        "dcor2_label0": last["dcor2"]["cf"]["label=0"], "dcor2_label1": last["dcor2"]["cf"]["label=1"],
        "train_penalty": last.get("train_penalty"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if settings:  # an MDN variant: its betas refitted too
        from mdn_cli.analysis.refit import refit_run

        after = refit_run(run_dir, "last")["after"]
        result.update(refit_val_acc=after["val_acc"], refit_dcor2_label0=after["dcor2[cf|label=0]"], refit_dcor2_label1=after["dcor2[cf|label=1]"])
    return result


def _mean_sd(values: list[float]) -> str:
    """``mean`` for one seed, ``mean ± sd`` (sample standard deviation over seeds) for several."""
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(results: list[dict], batch_sizes: list[int]) -> str:
    lines = [
        "| variant | batch | val acc | dcor² cf, label 0 | dcor² cf, label 1 | refit: val acc | refit: dcor² label 0 | refit: dcor² label 1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("val_acc", "dcor2_label0", "dcor2_label1", "refit_val_acc", "refit_dcor2_label0", "refit_dcor2_label1")
    for variant in dict.fromkeys(r["variant"] for r in results):
        for b in batch_sizes:
            rows = [r for r in results if r["variant"] == variant and r["batch_size"] == b]
            if not rows:
                continue
            cells = [_mean_sd([r[k] for r in rows]) if k in rows[0] else "" for k in keys]
            lines.append(f"| {variant} | {b} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-sizes", default="8,32,200")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "variants")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a spec override for every run (e.g. train.weight_decay=1e-3)")
    args = parser.parse_args()
    from mdn_cli.cli import reuse_freed_memory

    reuse_freed_memory()  # as the `mdn` command does
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    results = []
    for seed in seeds:
        for b in batch_sizes:
            for variant in args.variants.split(","):
                result = run_one(variant, b, args.epochs, seed, args.out, args.set)
                results.append(result)
                print(json.dumps(result), file=sys.stderr, flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"{args.epochs} epochs at every batch size, seeds {args.seeds}; last epoch, validation set (200 images)")
    print(table(results, batch_sizes))


if __name__ == "__main__":
    main()
