"""Why a staged R-MDN or PMDN run can score below chance: the eval-mode beta against a refitted one.

Trains one run of `benchmarks/stages.py`'s setting (its data in OUT/data must exist: run that
benchmark first) up to the end of stage S, then scores every stage's val rows with the model as
trained (eval mode, the stored beta, as the stage matrix does) and again after `refit_beta` sets
every MDN layer's beta to the least-squares fit on stage S's training rows (what `mdn refit`
does). If the refitted model is at chance where the trained one is far below it, the network
has learned no usable signal and the stored beta's error decides the side of the threshold.

    .venv/bin/python benchmarks/below_chance.py recursive --seed 0 --stage 3 [--out runs/stages]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class _Stop(Exception):
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", help="batch, recursive or penalty, with mdn settings after a colon (recursive:process_noise=0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=20, help="epochs per stage")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "stages")
    args = parser.parse_args()

    from sklearn.metrics import accuracy_score
    from stages import staged_overrides  # benchmarks/, beside this script
    from variants import variant_spec

    from mdn_cli.config import load_spec
    from mdn_cli.nn import metadata, refit_beta
    from mdn_cli.train.loop import train
    from mdn_cli.train.run import build_run

    data = args.out / "data"
    spec_file, settings = variant_spec(args.variant)
    spec = load_spec(spec_file, [*staged_overrides(data, args.epochs, args.batch_size, args.seed), *settings])
    run_dir = args.out / f"below-chance-{args.variant}-s{args.seed}"
    shutil.rmtree(run_dir, ignore_errors=True)

    def stop(event, **info):
        if event == "epoch_end" and info["metrics"]["epoch"] == args.epochs * (args.stage + 1):
            raise _Stop

    try:
        train(spec, run_dir, progress=stop)
    except _Stop:
        pass
    run = build_run(spec)
    run.network.load_state_dict(torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["model"])
    table = run.data.table
    stages = sorted(int(s) for s in table["stage"].unique())

    def accuracies() -> list[float]:
        run.network.eval()
        out = []
        for stage in stages:
            rows = np.flatnonzero(((table["stage"] == stage) & (table["split"] == "val")).to_numpy())
            x = next(iter(run.data.inputs.batches([rows])))
            with torch.no_grad(), metadata(run.network, run.data.design_rows[rows]):
                predicted = (run.network(x).squeeze(1) > 0).long().numpy()
            out.append(round(accuracy_score(table["label"].to_numpy()[rows], predicted), 3))
        return out

    print(f"{args.variant}, seed {args.seed}, after stage {args.stage}: val accuracy on stages {stages}")
    print(f"  as trained (stored beta):     {accuracies()}")
    train_rows = np.flatnonzero(((table["stage"] == stages[args.stage]) & (table["split"] == "train")).to_numpy())
    batches = np.array_split(train_rows, max(1, len(train_rows) // 64))
    refit_beta(run.network, lambda: ((next(iter(run.data.inputs.batches([b]))), run.data.design_rows[b]) for b in batches))
    print(f"  beta refitted on stage {args.stage}'s training rows: {accuracies()}")


if __name__ == "__main__":
    main()
