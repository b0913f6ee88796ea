"""Audits shared over processes (torch.distributed, gloo): the tiles are split, the sums all-reduced,
and every statistic equals the one-process result."""

from __future__ import annotations

import os
import json

import numpy as np
import pytest
import torch
import torch.distributed as dist

from mdn_cli.stats import IndependenceTest, Interval, Tiles, distance_correlation

pytestmark = [
    pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"),
    pytest.mark.slow,
]


def problem():
    rng = np.random.default_rng(4)
    n = 300
    label = rng.integers(0, 2, n)
    site = rng.choice(["a", "b", "c"], n)
    cf = rng.normal(size=n) + label
    x = np.c_[cf + rng.normal(size=n), rng.normal(size=(n, 5))] + label[:, None]
    columns = [cf, site, cf, cf]
    subsets = [None, None, label == 0, label == 1]
    return x, columns, [False, True, False, False], subsets


def audit(shared: bool = False):
    x, columns, categorical, subsets = problem()
    options = dict(subsets=subsets, test=IndependenceTest("permutation", permutations=49, seed=3), interval=Interval(0.9),
                   tiles=Tiles(dtype=torch.float64, tile_size=64, share_over_processes=shared))
    return [r.__dict__ for r in distance_correlation(x, columns, categorical, **options)]


def _worker(rank: int, world_size: int, rendezvous: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        results = audit(shared=True)
        with open(f"{out}.{rank}", "w") as f:
            json.dump(results, f)
        dist.barrier()  # both done before the group goes (rank 0 may still be writing)
    finally:
        dist.destroy_process_group()
    # The work is done and written. Leave without the interpreter's teardown: in the full suite a
    # spawned rank sometimes aborted there ("terminate called without an active exception"),
    # after finishing, which spawn reports as a failure.
    os._exit(0)


def test_two_processes_equal_one(tmp_path):
    torch.multiprocessing.start_processes(_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path / "result")), nprocs=2, start_method="spawn")
    alone = audit()
    for rank in (0, 1):
        shared = json.loads((tmp_path / f"result.{rank}").read_text())
        assert len(shared) == len(alone)
        for mine, single in zip(shared, alone):
            for key, value in single.items():
                if isinstance(value, float):
                    assert mine[key] == pytest.approx(value, rel=1e-12, abs=1e-14), key
                else:
                    assert mine[key] == value, key


def test_mdn_audit_nproc_2_prints_what_one_process_prints(tmp_path):
    import h5py
    import pandas as pd

    from tests.helpers import mdn, run_cli

    x, columns, _, _ = problem()
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["features"] = x
    pd.DataFrame({"cf": columns[0], "site": columns[1]}).to_csv(tmp_path / "m.csv", index=False)
    args = ["audit", tmp_path / "f.h5", tmp_path / "m.csv", "--float64", "--test", "permutation", "--permutations", 49, "--format", "json"]
    shared = run_cli(*args, "--nproc", 2, env={"OMP_NUM_THREADS": "1"})
    assert shared.returncode == 0, shared.stderr[-2000:]
    single = json.loads(mdn(*args).stdout)["results"]
    results = json.loads(shared.stdout)["results"]  # printed once, by rank 0
    assert [(r["column"], r["pvalue"]) for r in results] == [(r["column"], r["pvalue"]) for r in single]
    for mine, alone in zip(results, single):
        assert mine["dcor2"] == pytest.approx(alone["dcor2"], rel=1e-12)
    assert mdn("audit", tmp_path / "f.h5", "-", "--nproc", 2, stdin="cf\n1\n").returncode == 2
