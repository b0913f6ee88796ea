"""Side-by-side benchmark of the tiled distance correlation (mdn_cli.stats) against `dcor`.

Every target of issue 3, measured in one run on this machine. Each case runs in a fresh child
process so that its peak memory (ru_maxrss above the child's baseline after imports and data
creation) is its own. Usage: .venv/bin/python benchmarks/audit_vs_dcor.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys

import numpy as np
from timing import best_time  # benchmarks/timing.py


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child(case: str, n: int, d: int, columns: int, permutations: int, repeats: int) -> dict:
    """One measurement: time (best of ``repeats``) and peak memory above the baseline."""
    import dcor
    import torch

    from mdn_cli.stats import IndependenceTest, distance_correlation

    rng = np.random.default_rng(0)
    x = rng.standard_normal(size=(n, d), dtype=np.float32)
    ys = [x[:, k % d] * 0.5 + rng.normal(size=n) for k in range(columns)]
    x64 = x.astype(np.float64) if case.startswith("dcor") else None
    # Warm up outside the measurement: load the cached JIT kernel and start the thread pools.
    distance_correlation(x[:64], [ys[0][:64]], [False])
    baseline = _peak_mb()
    if case == "ours":
        run = lambda: distance_correlation(x, ys, [False] * columns)  # noqa: E731
    elif case == "ours_permutation":
        run = lambda: distance_correlation(x, ys, [False] * columns, test=IndependenceTest("permutation", permutations=permutations))  # noqa: E731
    elif case == "dcor":
        run = lambda: dcor.u_distance_correlation_sqr(x64, ys[0])  # noqa: E731
    elif case == "dcor_permutation":
        run = lambda: dcor.independence.distance_covariance_test(x64, ys[0], num_resamples=permutations)  # noqa: E731
    else:
        raise ValueError(case)
    single = None
    if case == "ours_permutation" or (case == "ours" and columns > 1):
        # Alternate with the one-column statistic so that both see the same load on a shared
        # machine; best of ``repeats`` each.
        alone = lambda: distance_correlation(x, ys[:1], [False])  # noqa: E731
        pairs = [(best_time(alone, 1), best_time(run, 1)) for _ in range(repeats)]
        single, seconds = min(p[0] for p in pairs), min(p[1] for p in pairs)
    else:
        seconds = best_time(run, repeats)
    # The machine's dense speed, measured in the same process just after, under the same load.
    rate = _matmul_rate() if case == "ours" and n >= 20_000 else None
    return {
        "matmul_flops": rate,
        "seconds": seconds,
        "single_column_seconds": single,
        "peak_mb": _peak_mb() - baseline,
        "total_peak_mb": _peak_mb(),
        "threads": torch.get_num_threads(),
    }


def _measure(case: str, n: int, d: int = 128, columns: int = 1, permutations: int = 0, repeats: int = 1) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--child", case, str(n), str(d), str(columns), str(permutations), str(repeats)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads(output.stdout.strip().splitlines()[-1])


def _matmul_rate() -> float:
    """float32 flop/s of a 4096^3 product: the machine's dense-matrix speed."""
    import torch

    a = torch.randn(4096, 4096)
    torch.mm(a, a)
    return 2 * 4096**3 / best_time(lambda: torch.mm(a, a), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="n=20,000 instead of 100,000 for the bound.")
    args = parser.parse_args()
    big_n = 20_000 if args.quick else 100_000
    rows = []

    ours = _measure("ours", 2_000, repeats=5)
    theirs = _measure("dcor", 2_000)
    rows.append(("n=2,000 d=128, 1 column: time, dcor / ours", theirs["seconds"] / ours["seconds"], ">= 50x",
                 f"dcor {theirs['seconds']:.3f} s, ours {ours['seconds']:.4f} s"))  # fmt: skip
    rows.append(("n=2,000 d=128, 1 column: peak memory, dcor / ours", theirs["peak_mb"] / max(ours["peak_mb"], 1.0),
                 ">= 10x", f"dcor {theirs['peak_mb']:.0f} MB, ours {ours['peak_mb']:.0f} MB (floor 1 MB)"))  # fmt: skip

    big = _measure("ours", big_n)
    rate = big["matmul_flops"]
    bound = 2 * big_n**2 * 128 / rate
    rows.append((f"n={big_n:,} d=128 float32: time / full-matrix bound", big["seconds"] / bound, "<= 1.5x",
                 f"ours {big['seconds']:.1f} s, bound {bound:.1f} s at {rate / 1e9:.0f} GFLOP/s"))  # fmt: skip
    rows.append((f"n={big_n:,} d=128 float32: peak memory (MB)", big["peak_mb"], "< 1024",
                 f"whole process {big['total_peak_mb']:.0f} MB incl. torch/numba"))  # fmt: skip

    ten = _measure("ours", 20_000, columns=10, repeats=3)
    one_seconds = ten["single_column_seconds"]
    rows.append(("n=20,000: 10 columns / 1 column", ten["seconds"] / one_seconds, "<= 1.5x",
                 f"{ten['seconds']:.2f} s vs {one_seconds:.2f} s"))  # fmt: skip

    permuted = _measure("ours_permutation", 10_000, permutations=999, repeats=2)
    alone = permuted["single_column_seconds"]
    per_permutation = (permuted["seconds"] - alone) / 999 / alone
    rows.append(("n=10,000 d=128: each permutation / statistic", per_permutation, "<= 0.15",
                 f"999 permutations {permuted['seconds']:.2f} s = {permuted['seconds'] / alone:.0f}x "
                 f"the statistic ({alone:.3f} s); target < 150x"))  # fmt: skip

    ours_test = _measure("ours_permutation", 2_000, permutations=200, repeats=5)
    dcor_test = _measure("dcor_permutation", 2_000, permutations=200)
    rows.append(("n=2,000, 200 permutations: dcor test / ours", dcor_test["seconds"] / ours_test["seconds"], ">= 20x",
                 f"dcor {dcor_test['seconds']:.2f} s, ours {ours_test['seconds']:.3f} s"))  # fmt: skip

    print(f"machine: {os.cpu_count()} cores, torch threads {ours['threads']}, "
          f"load average at the end {os.getloadavg()[0]:.1f}")
    print("| measurement | value | target | details |\n|---|---:|---|---|")
    for name, value, target, details in rows:
        print(f"| {name} | {value:.3g} | {target} | {details} |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        case, *numbers = sys.argv[2:]
        print(json.dumps(_child(case, *map(int, numbers))))
    else:
        main()
