"""DDP: 2 CPU processes (gloo) with batch b each equal 1 process with batch 2b, for every variant."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from mdn_cli.config import load_spec
from mdn_cli.train.loop import train
from mdn_cli.train.run import build_run
from tests.helpers import SMALL_MDN, run_cli, write_spec

pytestmark = [
    pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available"),
    pytest.mark.slow,  # every test trains or launches processes (torchrun, spawn)
]

VARIANTS = {"batch": {}, "recursive": {"forgetting": 0.99}, "penalty": {"beta_lr": 0.01}}


@pytest.fixture(scope="module")
def data(synth_data) -> Path:
    return synth_data  # 72 training rows


def ddp_spec(folder: Path, variant: str, batch_size: int) -> Path:
    train = {"batch_size": batch_size, "optimizer": "sgd", "lr": 0.05, "device": "cpu"}
    return write_spec(folder, f"{variant}-{batch_size}.yaml", epochs=1, mdn={"variant": variant, **VARIANTS[variant]}, train=train)


def mdn(*args) -> subprocess.CompletedProcess:
    return run_cli(*args, env={"OMP_NUM_THREADS": "1"}, timeout=300)


def model_state(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]


def _worker(rank: int, world_size: int, rendezvous: str, runs: list[tuple[str, str]]) -> None:
    """One DDP process: joins the group, then trains each (spec, run dir) through the normal `train`."""
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world_size)
    try:
        for spec_path, run_dir in runs:
            train(load_spec(spec_path), run_dir)
        dist.barrier()  # both done before the group goes (rank 0 may still be writing)
    finally:
        dist.destroy_process_group()
    # The work is done and written. Leave without the interpreter's teardown: in the full suite a
    # spawned rank sometimes aborted there ("terminate called without an active exception"),
    # after finishing, which spawn reports as a failure.
    os._exit(0)


def test_two_processes_with_batch_b_equal_one_with_batch_2b(data, tmp_path):
    b = 12  # 72 training rows: three optimiser steps of 24 rows, 12 per process
    runs = [(str(ddp_spec(data, variant, b)), str(tmp_path / f"ddp-{variant}")) for variant in VARIANTS]
    torch.multiprocessing.start_processes(_worker, args=(2, str(tmp_path / "rendezvous"), runs), nprocs=2, start_method="spawn")
    for variant in VARIANTS:
        before = {k: v.clone() for k, v in build_run(load_spec(ddp_spec(data, variant, 2 * b))).network.state_dict().items()}
        train(load_spec(ddp_spec(data, variant, 2 * b)), tmp_path / f"single-{variant}")
        ddp, single = model_state(tmp_path / f"ddp-{variant}"), model_state(tmp_path / f"single-{variant}")
        assert set(ddp) == set(single)
        for key, value in single.items():
            if value.is_floating_point():
                torch.testing.assert_close(ddp[key], value, atol=1e-5, rtol=0, msg=f"{variant}: {key}")
        moved = [k for k, v in single.items() if k.endswith("weight") and not torch.equal(before[k], v)]
        assert moved, "the comparison is not between two untouched models"
        assert sorted(p.name for p in (tmp_path / f"ddp-{variant}").iterdir()) == ["checkpoints", "config.yaml", "metrics.jsonl", "summary.json"]


def test_nproc_resume_continues_the_run(data, tmp_path):
    spec = ddp_spec(data, "batch", 12)
    first = mdn("train", spec, "-o", tmp_path / "run", "--nproc", 2, "--format", "json")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count('"run_dir"') == 1 and first.stderr.count("epoch 1:") == 1  # only rank 0 reports
    again = mdn("train", spec, "-o", tmp_path / "run", "--nproc", 2, "-q")
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = mdn("train", spec, "-o", tmp_path / "run", "--nproc", 2, "-q", "--resume", "--set", "train.epochs=2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_trains_on_cuda(data, tmp_path):
    """On a GPU, training runs there and gives the CPU's numbers (to GPU rounding) for the same spec."""
    spec = ddp_spec(data, "recursive", 12)
    for device in ("cuda", "cpu"):
        result = mdn("train", spec, "-o", tmp_path / device, "--device", device, "-q")
        assert result.returncode == 0, result.stderr[-3000:]
    gpu, cpu = model_state(tmp_path / "cuda"), model_state(tmp_path / "cpu")
    assert all(value.device.type == "cuda" for value in gpu.values())
    for key, value in cpu.items():  # cuDNN's TF32 convolutions (Ampere and newer) round to about 1e-3
        torch.testing.assert_close(gpu[key].cpu(), value, rtol=1e-2, atol=1e-3)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_train_with_synchronised_batchnorm(data, tmp_path):
    layers = [{"type": "conv2d", "out_channels": 4, "kernel_size": 5, "stride": 2}, {"type": "batchnorm2d"}, *SMALL_MDN[1:]]
    spec = write_spec(data, "gpu-bn.yaml", layers=layers, epochs=1, train={"batch_size": 12, "device": "cuda"})
    result = mdn("train", spec, "-o", tmp_path / "run", "--nproc", 2, "-q")
    assert result.returncode == 0, result.stderr[-3000:]
    state = model_state(tmp_path / "run")
    assert any(key.endswith("running_mean") for key in state)


def test_cuda_on_a_machine_without_it_is_an_input_error(data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = mdn("train", ddp_spec(data, "batch", 12), "-o", tmp_path / "run", "--device", "cuda", "-q")
    assert result.returncode == 2 and "CUDA is not available" in result.stderr
