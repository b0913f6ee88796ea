"""What bootstrap intervals add to `mdn evaluate`, measured side by side in one run.

Trains the shipped `sample_data/synthetic/mdn.yaml` for a few epochs, then times whole
`mdn evaluate RUN --split all` processes (start-up, the forward pass over the 1,000 rows, the
metrics, the dcor² audit), in turns round by round:

- plain: `--by cf --bins 4`, no intervals;
- B = 1000: the same with `--bootstrap 1000` (one `--by` column of 4 groups);
- B = 10,000: `--by cf --by mf --by split --bootstrap 10000` (three columns, 11 groups).

The ratio to plain is taken within each round; the median over the rounds is reported. Then
``bootstrap_intervals`` alone, in this process, on the run's own predictions.

    .venv/bin/python benchmarks/bootstrap.py [--rounds 5] [--epochs 3]
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

import pandas as pd

SPEC = Path(__file__).resolve().parents[1] / "sample_data" / "synthetic" / "mdn.yaml"
WAYS = {
    "plain (--by cf)": ["--by", "cf"],
    "--bootstrap 1000, --by cf": ["--by", "cf", "--bootstrap", "1000"],
    "--bootstrap 10000, --by cf --by mf --by split": ["--by", "cf", "--by", "mf", "--by", "split", "--bootstrap", "10000"],
}


def mdn(*args: str) -> int:
    """Run `mdn ARGS`; its peak resident memory in KiB (this child's own, from wait4)."""
    child = subprocess.Popen([sys.executable, "-m", "mdn_cli", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    stderr = child.stderr.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        sys.exit(f"mdn {' '.join(args)} failed:\n{stderr}")
    return usage.ru_maxrss


def seconds(run: Path, options: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    peak = mdn("evaluate", str(run), "--split", "all", "--bins", "4", "--format", "json", *options)
    return time.perf_counter() - start, peak


def in_process(run: Path, predictions: Path) -> None:
    """``bootstrap_intervals`` alone on the run's predictions: B = 1000 and 10,000."""
    from mdn_cli.stats.metrics import bootstrap_intervals, quantile_groups

    mdn("evaluate", str(run), "--split", "all", "--predictions", str(predictions), "--format", "json")
    rows = pd.read_csv(predictions).merge(pd.read_csv(SPEC.parent / "meta.csv")[["id", "mf"]], on="id")
    y, score = rows["label"].to_numpy(), rows["score"].to_numpy()
    for n_boot, columns in ((1000, ["cf"]), (10_000, ["cf", "mf", "split"])):
        groups = {column: quantile_groups(rows[column], bins=4) for column in columns}
        start = time.perf_counter()
        bootstrap_intervals("binary", y, score, groups, n_boot=n_boot, seed=0)
        print(f"bootstrap_intervals alone, n={len(y)}, B={n_boot}, --by {' '.join(columns)}: {time.perf_counter() - start:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        run = Path(folder) / "run"
        mdn("train", str(SPEC), "-o", str(run), "-q", "--set", f"train.epochs={args.epochs}")  # (its memory is not reported)
        times: dict[str, list[float]] = {way: [] for way in WAYS}
        peaks: dict[str, list[int]] = {way: [] for way in WAYS}
        for _ in range(args.rounds):
            for way, options in WAYS.items():
                elapsed, peak = seconds(run, options)
                times[way].append(elapsed)
                peaks[way].append(peak)
        plain = times["plain (--by cf)"]
        print(f"`mdn evaluate RUN --split all` (1,000 rows), {args.rounds} rounds, median; ratio per round, median:")
        print("| evaluate | s | vs plain | peak memory |\n|---|---:|---:|---:|")
        for way, values in times.items():
            ratio = statistics.median(value / base for value, base in zip(values, plain))
            print(f"| {way} | {statistics.median(values):.2f} | {ratio:.2f}x | {max(peaks[way]) / 1024:.0f} MiB |")
        in_process(run, Path(folder) / "predictions.csv")
        print(json.dumps({"load average": os.getloadavg()}))


if __name__ == "__main__":
    main()
