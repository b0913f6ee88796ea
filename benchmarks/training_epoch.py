"""Training epochs of the shipped MDN spec on a PNG study: files at 0, 1, 2 loader workers vs the same study packed.

Writes the paper's synthetic set as 32x32 PNGs (`mdn synth --format png`), the shipped
`sample_data/synthetic_png/mdn.yaml` model and input steps (normalize; random_crop with
padding 2 as augment) pointed at it, packs it (`mdn pack`), and trains each way through the
normal `train` for a few epochs. An epoch's time is the difference of `metrics.jsonl`'s
cumulative `seconds` (training, validation and its dcor², checkpoints), median over the epochs
after the first (the first includes worker start-up). The ways alternate round by round.

    .venv/bin/python benchmarks/training_epoch.py [--per-group 1000] [--epochs 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

from mdn_cli.config import load_spec
from mdn_cli.data.readers import write_image_study
from mdn_cli.data.synthetic import make_synthetic
from mdn_cli.analysis.pack import pack
from mdn_cli.train.loop import train

SHIPPED = Path(__file__).resolve().parents[1] / "sample_data" / "synthetic_png" / "mdn.yaml"
WAYS = ("files, 0 workers", "files, 1 worker", "files, 2 workers", "packed HDF5")


def epoch_seconds(spec_path: Path, run_dir: Path, epochs: int, workers: int | None) -> list[float]:
    overrides = [f"train.epochs={epochs}"] + ([f"train.num_workers={workers}"] if workers is not None else [])
    train(load_spec(spec_path, overrides), run_dir)
    seconds = [json.loads(line)["seconds"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [b - a for a, b in zip(seconds, seconds[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-group", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        dataset = make_synthetic(args.per_group, 0)
        write_image_study(folder / "study", dataset.images, dataset.table, "png").to_csv(folder / "study" / "meta.csv", index=False)
        spec = yaml.safe_load(SHIPPED.read_text())
        (folder / "study" / "mdn.yaml").write_text(yaml.safe_dump(spec))
        pack(load_spec(folder / "study" / "mdn.yaml"), folder / "packed")
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        for r in range(args.rounds):
            for i, way in enumerate(WAYS if r % 2 == 0 else reversed(WAYS)):
                spec_path = folder / ("packed/spec.yaml" if way == "packed HDF5" else "study/mdn.yaml")
                workers = None if way == "packed HDF5" else int(way.split(", ")[1][0])
                times[way] += epoch_seconds(spec_path, folder / f"run-{r}-{i}", args.epochs, workers)
                print(f"round {r}: {way} done", file=sys.stderr)
    n_train = int((dataset.table["split"] == "train").sum())
    print(f"seconds per training epoch ({n_train:,} training rows of 32x32, batch {spec['train']['batch_size']}, with validation), median of {len(times[WAYS[0]])} epochs\n")
    print("| input | s / epoch | vs packed |")
    print("|---|---:|---:|")
    packed = statistics.median(times["packed HDF5"])
    for way in WAYS:
        median = statistics.median(times[way])
        print(f"| {way} | {median:.2f} | {median / packed:.2f} |")


if __name__ == "__main__":
    main()
