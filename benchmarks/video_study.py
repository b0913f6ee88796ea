"""The shipped video study (`sample_data/synthetic_video/`): baseline against MDN, and what each model looks at.

For each seed, trains `baseline.yaml` and `mdn.yaml` (`--set train.seed=S`) and evaluates the
best checkpoint on the test videos (`mdn evaluate --split test`, three clips per video averaged):
video-level accuracy and fc1's per-class dcor² with the confounder (scene lighting). Then it
writes every video played backwards (the same synthetic draws, frames reversed: the direction of
motion flips, the lighting does not) and evaluates both models on them: the share of test videos
whose predicted class flips says how much a model uses motion rather than one frame's light. As
a control, the baseline is also trained on the same videos without the confounding (both groups'
lighting drawn from U(1, 6)) and played backwards the same way.

    .venv/bin/python benchmarks/video_study.py [--seeds 0,1,2] [--jobs 2] [--out runs/video_study]

Prints a markdown table (mean ± sd over seeds) and writes OUT/results.json. Each run uses one
OpenMP thread; --jobs runs that many at once.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "sample_data" / "synthetic_video"


def mdn(*args) -> str:
    result = subprocess.run([sys.executable, "-m", "mdn_cli", *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"mdn {' '.join(map(str, args))}:\n{result.stderr}")
    return result.stdout


def write_study(out: Path, name: str, confounded: bool, backwards: bool) -> Path:
    """The shipped study's videos (or the unconfounded control's), forwards or played backwards, with the same table."""
    from mdn_cli.data.synthetic import make_synthetic_video
    from mdn_cli.data.video import write_video_study

    folder = out / name
    shutil.rmtree(folder, ignore_errors=True)
    study = make_synthetic_video(150, seed=0, confounded=confounded)
    shipped = pd.read_csv(STUDY / "meta.csv")
    assert study.table[["id", "label", "split"]].equals(shipped[["id", "label", "split"]]), "the shipped study is not `mdn synth --per-group 150 --seed 0`"
    write_video_study(folder, study.images[:, :, ::-1] if backwards else study.images, study.table).to_csv(folder / "meta.csv", index=False)
    return folder


def run_one(kind: str, seed: int, out: Path, studies: dict[str, Path]) -> dict:
    run = out / f"{kind}-s{seed}"
    shutil.rmtree(run, ignore_errors=True)
    spec = STUDY / f"{kind.removesuffix('-control')}.yaml"
    table = ["--set", f"data.table={studies['control'] / 'meta.csv'}"] if kind.endswith("-control") else []
    backwards = studies["control-reversed" if kind.endswith("-control") else "reversed"]
    mdn("train", spec, "-o", run, "--set", f"train.seed={seed}", *table, "--quiet", "--format", "json")
    forward = json.loads(mdn("evaluate", run, "--split", "test", "--predictions", run / "test.csv", "--format", "json"))
    mdn("evaluate", run, "--table", backwards / "meta.csv", "--predictions", run / "reversed.csv", "--format", "json")
    test = pd.read_csv(run / "test.csv")
    played_back = pd.read_csv(run / "reversed.csv").set_index("id").loc[test["id"]]
    dcor = {row["stratum"]: row["dcor2"] for row in forward["dcor"] if row["column"] == "cf"}
    return {
        "kind": kind, "seed": seed,
        "test_acc": forward["overall"]["accuracy"],
        "dcor2_label0": dcor["label=0"], "dcor2_label1": dcor["label=1"],
        "reversed_acc": float((played_back["predicted"].to_numpy() == test["label"].to_numpy()).mean()),
        "flipped": float((played_back["predicted"].to_numpy() != test["predicted"].to_numpy()).mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "video_study")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    studies = {"reversed": write_study(args.out, "reversed", True, True), "control": write_study(args.out, "control", False, False),
               "control-reversed": write_study(args.out, "control-reversed", False, True)}
    seeds = [int(s) for s in args.seeds.split(",")]
    kinds = ("baseline", "mdn", "baseline-control")
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(run_one, *zip(*[(kind, seed, args.out, studies) for kind in kinds for seed in seeds])))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))

    def cell(kind: str, key: str) -> str:
        values = [r[key] for r in results if r["kind"] == kind]
        return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    print(f"seeds {seeds}; test videos, three clips each; dcor² of fc1 with cf per class (test split)\n")
    print("| spec | test acc | dcor² cf, label=0 | dcor² cf, label=1 | acc played backwards | predictions flipped |")
    print("|---|---:|---:|---:|---:|---:|")
    for kind in kinds:
        name = f"{kind}.yaml" if not kind.endswith("-control") else "baseline.yaml, lighting unconfounded"
        print(f"| {name} | {cell(kind, 'test_acc')} | {cell(kind, 'dcor2_label0')} | {cell(kind, 'dcor2_label1')} | {cell(kind, 'reversed_acc')} | {cell(kind, 'flipped')} |")


if __name__ == "__main__":
    main()
