"""R-MDN on data like its reference's: does a weaker confounder keep the network learning?

The R-MDN reference (ynshah3/Recursive-MDN, `dataset.py`, `train.py`) draws mf and cf from
U(3, 5) in group 0 and U(4, 6) in group 1 (the MDN paper: U(1, 4) and U(3, 6)), with 1,024 images
a group, batch 128, Adam with weight decay 1e-3 and StepLR 20 / 0.8. This makes that set with
`mdn_cli.data.synthetic.make_synthetic(per_group, seed, lows=(3, 4), width=2)`, trains the shipped
`mdn.yaml` on it with R-MDN (process noise 1e-4 and 0) and the reference's optimiser settings, and
prints the last epoch's val accuracy and fc1's per-class dcor² with cf.

    .venv/bin/python benchmarks/rmdn_reference_data.py [--epochs 40] [--per-group 1024] [--out runs/rmdn-reference-data]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--per-group", type=int, default=1024)
    parser.add_argument("--process-noise", default="1e-4,0")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "rmdn-reference-data")
    args = parser.parse_args()
    from mdn_cli.cli import reuse_freed_memory
    from mdn_cli.config import load_spec
    from mdn_cli.data.synthetic import make_synthetic, write_dataset
    from mdn_cli.train.loop import train

    reuse_freed_memory()
    data = args.out / "data"
    dataset = make_synthetic(args.per_group, seed=0, lows=(3.0, 4.0), width=2.0)
    write_dataset(data, dataset.images, dataset.table)
    shutil.copy(ROOT / "sample_data" / "synthetic" / "mdn.yaml", data / "mdn.yaml")
    for noise in args.process_noise.split(","):
        run = args.out / f"recursive-q{noise}"
        shutil.rmtree(run, ignore_errors=True)
        overrides = ["mdn.variant=recursive", f"mdn.process_noise={float(noise)}", "train.batch_size=128", f"train.epochs={args.epochs}",
                     "train.weight_decay=0.001", "train.scheduler=step", "train.device=cpu"]
        last = train(load_spec(data / "mdn.yaml", overrides), run)["last"]
        print(json.dumps({"process_noise": float(noise), "epochs": args.epochs, "val_acc": last["val_acc"],
                          "dcor2_label0": last["dcor2"]["cf"]["label=0"], "dcor2_label1": last["dcor2"]["cf"]["label=1"]}), flush=True)


if __name__ == "__main__":
    main()
