"""`mdn train` with glibc's default malloc against `mdn`'s setting that keeps freed memory for reuse.

`mdn` sets glibc's mmap and trim thresholds at start-up (`cli.reuse_freed_memory`) so that the
feature maps freed at every step are reused instead of being unmapped and page-faulted in again;
`MDN_MALLOC=system` turns that off. The setting lasts for the process, so each run is a fresh
`mdn train` process: the shipped baseline and MDN specs, alternately with and without the setting,
timed whole (start-up, data, training, evaluation, checkpoints) with each child's peak memory.

    .venv/bin/python benchmarks/memory_reuse.py [--rounds 4] [--epochs 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "sample_data" / "synthetic"
MODES = {"glibc defaults (MDN_MALLOC=system)": "system", "mdn: freed memory reused": ""}


def run(spec: str, malloc: str, epochs: int, out: Path) -> tuple[float, float]:
    """Seconds and peak resident MiB of one `mdn train` process."""
    env = {**os.environ, "MDN_MALLOC": malloc}
    command = [sys.executable, "-m", "mdn_cli", "train", str(SAMPLE / f"{spec}.yaml"), "-o", str(out), "-q", "--set", f"train.epochs={epochs}"]
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        sys.exit(f"{' '.join(command)} failed (status {status})")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for spec in ("baseline", "mdn"):
                modes = list(MODES) if r % 2 == 0 else list(reversed(MODES))
                for mode in modes:
                    out = Path(tmp) / f"{spec}-{MODES[mode] or 'reuse'}-{r}"
                    results.setdefault((spec, mode), []).append(run(spec, MODES[mode], args.epochs, out))
    print(f"`mdn train` on the shipped data, {args.epochs} epochs, {args.rounds} runs each, alternating")
    print("| spec | malloc | median s | vs glibc defaults | peak MiB |")
    print("|---|---|---:|---:|---:|")
    for spec in ("baseline", "mdn"):
        base = statistics.median(s for s, _ in results[(spec, list(MODES)[0])])
        for mode in MODES:
            seconds = statistics.median(s for s, _ in results[(spec, mode)])
            peak = max(m for _, m in results[(spec, mode)])
            print(f"| {spec} | {mode} | {seconds:.2f} | {seconds / base:.3f}x | {peak:.0f} |")


if __name__ == "__main__":
    main()
