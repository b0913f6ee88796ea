"""Coverage of the jackknife interval of dcor² (`mdn audit --ci`) by simulation, and its cost.

Data: a bivariate normal with correlation rho, whose population dcor² has a closed form
(Székely, Rizzo & Bakirov 2007, Theorem 7), checked first against a large-n estimate. For each
n, REPS replicates at nominal 0.95: how often the interval holds the population value, and its
mean width. Then the time of an audit with and without intervals, side by side.
Usage: .venv/bin/python benchmarks/ci_coverage.py [--reps 1000] [--rho 0.5]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import torch

from mdn_cli.data.audit import audit_features
from mdn_cli.stats import Interval, Tiles, distance_correlation
from timing import best_time  # benchmarks/timing.py


def population_dcor2(rho: float) -> float:
    """R²(rho) of a bivariate normal (Székely, Rizzo & Bakirov 2007, Theorem 7)."""
    r = abs(rho)
    top = r * math.asin(r) + math.sqrt(1 - r * r) - r * math.asin(r / 2) - math.sqrt(4 - r * r) + 1
    return top / (1 + math.pi / 3 - math.sqrt(3))


def sample(rng: np.random.Generator, n: int, rho: float) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=n)
    return x[:, None], rho * x + math.sqrt(1 - rho * rho) * rng.normal(size=n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=1000)
    parser.add_argument("--rho", type=float, default=0.5)
    parser.add_argument("--level", type=float, default=0.95)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    truth = population_dcor2(args.rho)

    # The closed form, checked against large-n estimates (and R²(0) = 0, R²(1) = 1) before use.
    assert abs(population_dcor2(0.0)) < 1e-12 and abs(population_dcor2(1.0) - 1.0) < 1e-12
    for rho in sorted({args.rho, 0.2, 0.8}):
        x, y = sample(rng, 20_000, rho)
        (big,) = distance_correlation(x, [y], [False], interval=Interval(0.999), tiles=Tiles(dtype=torch.float64))
        inside = big.ci_low <= population_dcor2(rho) <= big.ci_high
        print(f"rho = {rho}: closed form R² = {population_dcor2(rho):.5f}; n = 20,000 estimate {big.dcor2_u:.5f} "
              f"[{big.ci_low:.5f}, {big.ci_high:.5f}] (0.999 interval) {'holds it' if inside else 'MISSES IT'}")  # fmt: skip
        if not inside:
            raise SystemExit("the closed form does not match the large-n estimate")
    print(f"\n| n | replicates | coverage (nominal {args.level}) | mean width | mean dcor² |")
    print("|---:|---:|---:|---:|---:|")
    for n in (200, 500, 2000):
        hits, widths, estimates = 0, [], []
        for _ in range(args.reps):
            x, y = sample(rng, n, args.rho)
            (result,) = distance_correlation(x, [y], [False], interval=Interval(args.level))
            hits += result.ci_low <= truth <= result.ci_high
            widths.append(result.ci_high - result.ci_low)
            estimates.append(result.dcor2_u)
        print(f"| {n} | {args.reps} | {hits / args.reps:.3f} | {np.mean(widths):.4f} | {np.mean(estimates):.4f} |")

    print("\nAn audit (float32, one numeric column, pooled and 2 strata), best of 3:")
    print("\n| n x d | without --ci | with --ci | ratio |")
    print("|---|---:|---:|---:|")
    for n, d in ((2_000, 128), (10_000, 128)):
        features = rng.normal(size=(n, d)).astype(np.float32)
        table = pd.DataFrame({"cf": features[:, 0] + rng.normal(size=n), "label": rng.integers(0, 2, n)})
        plain = best_time(lambda: audit_features(features, table, ["cf"], by="label"))
        with_ci = best_time(lambda: audit_features(features, table, ["cf"], by="label", ci=args.level))
        print(f"| {n:,} x {d} | {plain:.2f} s | {with_ci:.2f} s | {with_ci / plain:.2f} |")


if __name__ == "__main__":
    main()
