"""Start-up: whole `mdn` processes that need no network against bare imports, side by side in one run.

On a 200-row feature file (16 features, ids) and its table, and a run of the shipped spec trained
for one epoch, each round runs every way once as a fresh process (the order reversed every other
round), timing it from start to exit with its peak resident memory (wait4):

- the floor, `python -c "import numpy, pandas, h5py"` (what reading the inputs takes);
- the yardstick, `python -c "import torch"` (issue 23's goal: `mdn audit` at most 1.0x it);
- `mdn audit f.h5 t.csv --columns age`, and with `--test t` (which loads `scipy.stats`);
- `mdn residualize` of the file, `mdn report RUN`, `mdn --help`.

Ratios are taken within each round; the median over the rounds is reported. This process imports
nothing heavy itself (the data are written by a child): a child's peak memory on Linux starts
from its parent's at the fork.

    .venv/bin/python benchmarks/startup.py [--rounds 7]
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
FLOOR, YARDSTICK = "import numpy, pandas, h5py", "import torch"


def ways(folder: Path) -> dict[str, list[str]]:
    f, t, mdn = str(folder / "f.h5"), str(folder / "t.csv"), [sys.executable, "-m", "mdn_cli"]
    return {
        FLOOR: [sys.executable, "-c", FLOOR],
        YARDSTICK: [sys.executable, "-c", YARDSTICK],
        "mdn audit": [*mdn, "audit", f, t, "--columns", "age"],
        "mdn audit --test t": [*mdn, "audit", f, t, "--columns", "age", "--test", "t"],
        "mdn residualize": [*mdn, "residualize", f, t, "--columns", "age", "-o", str(folder / "clean.h5"), "--force"],
        "mdn report": [*mdn, "report", str(folder / "run")],
        "mdn --help": [*mdn, "--help"],
    }


def timed(command: list[str]) -> tuple[float, float]:
    """(wall seconds, peak resident MiB) of one process."""
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "NO_COLOR": "1"})
    stderr = child.stderr.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"{' '.join(command)} failed:\n{stderr}")
    return wall, usage.ru_maxrss / 1024


DATA = """
import sys, h5py, numpy as np, pandas as pd
rng, ids = np.random.default_rng(0), [f"s{i:03d}" for i in range(200)]
with h5py.File(sys.argv[1] + "/f.h5", "w") as f:
    f["features"] = rng.normal(size=(200, 16)).astype(np.float32)
    f["ids"] = np.array(ids, dtype="S")
pd.DataFrame({"id": ids, "age": rng.normal(size=200)}).to_csv(sys.argv[1] + "/t.csv", index=False)
"""


def prepare(folder: Path) -> None:
    subprocess.run([sys.executable, "-c", DATA, str(folder)], check=True)
    subprocess.run([sys.executable, "-m", "mdn_cli", "train", str(SPEC), "-o", str(folder / "run"), "--set", "train.epochs=1", "-q",
                    "--format", "json"], check=True, stdout=subprocess.DEVNULL)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        prepare(folder)
        commands = ways(folder)
        for command in commands.values():  # warm the file cache and numba's kernel cache
            timed(command)
        results: dict[str, list[tuple[float, float]]] = {way: [] for way in commands}
        for r in range(args.rounds):
            for way in commands if r % 2 == 0 else reversed(list(commands)):
                results[way].append(timed(commands[way]))
    print(f"whole processes, median of {args.rounds} rounds; ratios within each round, then their median")
    print("| command | wall (s) | peak (MiB) | / numpy+pandas+h5py | / import torch |\n|---|---:|---:|---:|---:|")
    for way, runs in results.items():
        ratio = {base: statistics.median(a[0] / b[0] for a, b in zip(runs, results[base])) for base in (FLOOR, YARDSTICK)}
        print(f"| {way} | {statistics.median(w for w, _ in runs):.2f} | {statistics.median(m for _, m in runs):.0f} | "
              f"{ratio[FLOOR]:.2f}x | {ratio[YARDSTICK]:.2f}x |")
    print(json.dumps({"load average": os.getloadavg()}))


if __name__ == "__main__":
    main()
