"""Early stopping and the plateau schedule: the rules against torch's scheduler and Lightning's, runs that
stop, say why, keep best.pt, resume their patience count, and folds that stop on their own metric."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from mdn_cli.config import SpecError, TrainSpec, load_spec
from mdn_cli.train.loop import train
from mdn_cli.train.options import EarlyStopping, EpochSchedule
import yaml

from tests.helpers import Stop, make_small_data, mdn, read_metrics, readme_block, stop_after, write_spec


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stopping")
    make_small_data(folder, per_group=20)
    return folder


def without_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in history]


def lightning_stop_epoch(values: list, patience: int, min_delta: float, mode: str) -> int | None:
    """Lightning's EarlyStopping rule, written out: improvement means beating the best by more than
    min_delta; the wait count resets on improvement; stop when it reaches patience; stop at once on a
    non-finite value."""
    best, wait = (math.inf if mode == "min" else -math.inf), 0
    for epoch, value in enumerate(values, start=1):
        if not math.isfinite(value):
            return epoch
        improved = value < best - min_delta if mode == "min" else value > best + min_delta
        if improved:
            best, wait = value, 0
        else:
            wait += 1
            if wait >= patience:
                return epoch
    return None


# -- the rules ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("patience,min_delta", [(1, 0.0), (2, 0.0), (3, 0.05), (2, 0.2)])
def test_early_stopping_follows_lightnings_rule(mode, patience, min_delta):
    generator = torch.Generator().manual_seed(patience * 10 + int(min_delta * 100))
    for _ in range(20):
        values = (torch.rand(15, generator=generator) + torch.linspace(0.5, 0, 15)).tolist()
        values = values if mode == "min" else [-v for v in values]
        stopping = EarlyStopping(patience, min_delta, mode)
        ours = next((epoch for epoch, value in enumerate(values, start=1) if stopping.update(epoch, value, "m")), None)
        assert ours == lightning_stop_epoch(values, patience, min_delta, mode)


def test_early_stopping_stops_on_a_non_finite_value_and_counts_an_undefined_one():
    stopping = EarlyStopping(patience=2, min_delta=0.0, mode="max")
    assert not stopping.update(1, 0.7, "val_auc")
    assert not stopping.update(2, None, "val_auc")  # undefined (one class): no improvement
    assert stopping.update(3, None, "val_auc") and stopping.best_epoch == 1
    diverged = EarlyStopping(patience=5, min_delta=0.0, mode="min")
    assert not diverged.update(1, 0.5, "val_loss")
    assert diverged.update(2, math.nan, "val_loss") and "nan" in diverged.reason


@pytest.mark.parametrize("warmup", [0, 2])
def test_plateau_is_torchs_reduce_lr_on_plateau_after_the_warmup(warmup):
    values = [1.0, 0.9, 0.95, 0.97, 0.96, 0.8, 0.85, 0.86, 0.87, 0.88, 0.9, 0.91]
    spec = TrainSpec(task="binary", epochs=len(values), scheduler="plateau", warmup_epochs=warmup,
                     plateau={"factor": 0.5, "patience": 1, "min_lr": 0.02, "threshold": 0.0})
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    schedule = EpochSchedule(optimizer, spec)
    ours = []
    for value in values:
        ours.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step(value)
    reference_optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(reference_optimizer, mode="min", factor=0.5, patience=1, min_lr=0.02, threshold=0.0)
    theirs = []
    for value in values[warmup:]:
        theirs.append(reference_optimizer.param_groups[0]["lr"])
        reference.step(value)
    assert ours[:warmup] == pytest.approx([0.1 * (e + 1) / (warmup + 1) for e in range(warmup)])
    assert ours[warmup:] == pytest.approx(theirs)
    assert min(ours) == pytest.approx(0.02)  # min_lr reached and held


def test_plateau_settings_need_the_plateau_schedule(folder):
    with pytest.raises(SpecError) as error:
        load_spec(write_spec(folder, "bad.yaml", train={"plateau": {"patience": 2}}))
    assert "train.plateau" in str(error.value) and "scheduler: plateau" in str(error.value)
    with pytest.raises(SpecError) as error:
        load_spec(write_spec(folder, "bad.yaml", train={"early_stopping": {"min_delta": 0.1}}))
    assert "train.early_stopping.patience" in str(error.value)


# -- runs -----------------------------------------------------------------------------------------
STOPPING = {"early_stopping": {"patience": 2, "min_delta": 0.005}, "lr": 0.01}


@pytest.mark.slow
def test_a_run_stops_says_why_keeps_best_and_resumes_its_patience(folder, tmp_path):
    spec_path = write_spec(folder, "stop.yaml", epochs=30, train=STOPPING)
    result = mdn("train", spec_path, "-o", tmp_path / "straight", "--format", "json")
    assert result.returncode == 0, result.stderr
    history = read_metrics(tmp_path / "straight")
    expected = lightning_stop_epoch([m["val_loss"] for m in history], 2, 0.005, "min")
    assert expected is not None and len(history) == expected < 30  # it stopped, where the rule says
    summary = json.loads(result.stdout)
    assert summary["early_stopping"]["stopped_epoch"] == expected
    assert "did not improve by more than 0.005 for 2 epoch(s)" in summary["early_stopping"]["reason"]
    assert f"early stopping after epoch {expected}" in result.stderr
    best_epoch = min(history, key=lambda m: m["val_loss"])["epoch"]
    assert torch.load(tmp_path / "straight" / "checkpoints" / "best.pt", weights_only=True)["epoch"] == best_epoch == summary["best"]["epoch"]

    again = mdn("train", spec_path, "-o", tmp_path / "straight", "--resume", "--set", "train.epochs=40")
    assert again.returncode == 0 and "stopped early" in again.stderr
    assert read_metrics(tmp_path / "straight") == history  # a stopped run trains no more

    spec = load_spec(spec_path)  # interrupted one epoch before it stops: the resumed run continues the count
    with pytest.raises(Stop):
        train(spec, tmp_path / "split", progress=stop_after(expected - 1))
    train(spec, tmp_path / "split", resume=True)
    assert without_time(read_metrics(tmp_path / "split")) == without_time(history)


@pytest.mark.slow
def test_plateau_rates_are_in_the_metrics_and_resume(folder, tmp_path):
    spec = load_spec(write_spec(folder, "plateau.yaml", epochs=8, train={
        "scheduler": "plateau", "plateau": {"factor": 0.5, "patience": 0}, "select": "val_acc", "lr": 0.01}))
    train(spec, tmp_path / "straight")
    history = read_metrics(tmp_path / "straight")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    reference = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=0)
    expected = []
    for metrics in history:
        expected.append(optimizer.param_groups[0]["lr"])
        reference.step(metrics["val_acc"])
    assert [m["lr"] for m in history] == pytest.approx(expected) and len(set(expected)) > 2  # the rate did fall
    with pytest.raises(Stop):
        train(spec, tmp_path / "split", progress=stop_after(4))
    train(spec, tmp_path / "split", resume=True)
    assert without_time(read_metrics(tmp_path / "split")) == without_time(history)


@pytest.mark.slow
def test_each_fold_stops_on_its_own_held_out_metric(folder, tmp_path):
    spec_path = write_spec(folder, "cvstop.yaml", epochs=25, train=STOPPING)
    assert mdn("train", spec_path, "-o", tmp_path / "cv", "--folds", "2", "-q").returncode == 0
    for fold in ("fold-0", "fold-1"):
        history = read_metrics(tmp_path / "cv" / fold)
        summary = json.loads((tmp_path / "cv" / fold / "summary.json").read_text())
        stop = lightning_stop_epoch([m["val_loss"] for m in history], 2, 0.005, "min")
        assert summary["early_stopping"]["stopped_epoch"] == stop == len(history)
    again = mdn("train", spec_path, "-o", tmp_path / "cv", "--folds", "2", "-q", "--resume")
    assert again.returncode == 0, again.stderr  # stopped folds count as finished


@pytest.mark.slow
def test_the_readmes_plateau_and_early_stopping_example_trains(folder, tmp_path):
    example = yaml.safe_load(readme_block("scheduler: plateau"))["train"]
    spec_path = write_spec(folder, "readme.yaml", epochs=12, train=example)
    result = mdn("train", spec_path, "-o", tmp_path / "run", "--format", "json")
    assert result.returncode == 0, result.stderr
    history = read_metrics(tmp_path / "run")
    stop = lightning_stop_epoch([m["val_balanced_acc"] for m in history], 8, 0.001, "max")
    assert json.loads(result.stdout)["early_stopping"]["stopped_epoch"] == stop
    assert all("lr" in m for m in history)
