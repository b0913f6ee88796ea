"""R-MDN's own setting: the synthetic set as stages whose confounding shifts (continual learning).

Writes `mdn synth --stages K` data (the MDN paper's set at stage 0; from stage to stage the
groups' cf ranges move apart and their mf ranges together, until cf alone tells the groups
apart), then trains the shipped baseline and MDN-Conv specs (`sample_data/synthetic/`) over the
stages in order (`data.stage_column: stage`, `train.epochs` per stage) with `mdn.variant` batch,
recursive and penalty. After each stage every stage's val rows are scored. Reports, per variant,
mean ± sd over seeds of: the average val accuracy over all stages after the last stage, backward
transfer, the last stage's own accuracy, and the mean over stages of fc1's per-class dcor² with cf
after the last stage.

    .venv/bin/python benchmarks/stages.py [--stages 5] [--per-group 500] [--epochs 10] [--batch-size 32]
        [--seeds 0,1,2] [--variants baseline,batch,recursive,penalty] [--jobs 2] [--out runs/stages] [--set KEY=VALUE ...]

Prints a markdown table and writes OUT/results.json. Each run uses one OpenMP thread; --jobs
runs that many at once.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

from variants import VARIANTS, variant_spec  # noqa: E402  (benchmarks/variants.py, beside this script)

ROOT = Path(__file__).resolve().parents[1]


def run_one(variant: str, data: Path, epochs: int, batch_size: int, seed: int, out: Path, extra: tuple[str, ...]) -> dict:
    from mdn_cli.config import load_spec
    from mdn_cli.train.loop import train

    spec_file, settings = variant_spec(variant)
    overrides = [*staged_overrides(data, epochs, batch_size, seed), *settings, *extra]
    run_dir = out / f"{variant.replace(':', '_')}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    stages = train(load_spec(spec_file, overrides), run_dir)["stages"]
    val = stages["summary"]["val"]
    last = stages["results"][-1]["scores"]
    dcor = {cls: statistics.mean(last[name]["val"]["dcor2"]["cf"][f"label={cls}"] for name in stages["names"]) for cls in (0, 1)}
    return {
        "variant": variant, "seed": seed, "epochs_per_stage": epochs, "batch_size": batch_size,
        "matrix": val["matrix"], "average": val["average"], "backward_transfer": val["backward_transfer"],
        "last_stage": val["matrix"][-1][-1], "first_stage_after_all": val["matrix"][-1][0],
        "dcor2_label0": dcor[0], "dcor2_label1": dcor[1],
        "seconds": round(time.perf_counter() - started, 1),
    }


def staged_overrides(data: Path, epochs: int, batch_size: int, seed: int) -> list[str]:
    """The shipped specs on the staged data in ``data``, ``epochs`` per stage."""
    return [f"data.inputs={data / 'images.h5'}", f"data.table={data / 'meta.csv'}", "data.stage_column=stage",
            f"train.epochs={epochs}", f"train.batch_size={batch_size}", f"train.seed={seed}", "train.device=cpu"]


def _mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def table(results: list[dict], variants: list[str]) -> str:
    keys = ["average", "backward_transfer", "first_stage_after_all", "last_stage", "dcor2_label0", "dcor2_label1"]
    lines = ["| variant | avg val acc, all stages | backward transfer | stage 0 acc at the end | last stage acc | dcor² cf, label 0 | dcor² cf, label 1 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        if rows:
            lines.append(f"| {variant} | " + " | ".join(_mean_sd([r[k] for r in rows]) for k in keys) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, default=5)
    parser.add_argument("--per-group", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=10, help="epochs per stage")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "stages")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="a spec override for every run")
    args = parser.parse_args()

    from mdn_cli.data.synthetic import make_staged_synthetic, write_dataset

    data = args.out / "data"
    dataset = make_staged_synthetic(args.per_group, args.stages, seed=0)
    write_dataset(data, dataset.images, dataset.table)
    variants = args.variants.split(",")
    jobs = [(v, data, args.epochs, args.batch_size, int(s), args.out, tuple(args.extra)) for s in args.seeds.split(",") for v in variants]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_one, *zip(*jobs)))
    for r in results:
        print(f"{r['variant']} seed {r['seed']}: avg {r['average']:.3f} BWT {r['backward_transfer']:+.3f} "
              f"dcor² {r['dcor2_label0']:.3f}/{r['dcor2_label1']:.3f} ({r['seconds']} s)", flush=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table(results, variants))


if __name__ == "__main__":
    main()
