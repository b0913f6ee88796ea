"""Training options: learning-rate schedules (and their resume), gradient clipping, class weights, mixed precision."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch

from mdn_cli.config import SpecError, TrainSpec, dump_spec, load_spec, same_training
from mdn_cli.model.task import task_loss
from mdn_cli.nn import MetadataNorm, fit_gram, metadata
from mdn_cli.train.loop import Trainer, _train_loss_fn, train
from mdn_cli.train.options import EpochSchedule, balanced_class_weights
from mdn_cli.train.run import build_run
from mdn_cli.utils.errors import MdnError
from tests.helpers import SMALL_BASELINE, SMALL_MDN, Stop, make_small_data, mdn, stop_after, write_spec


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("options")
    make_small_data(folder, per_group=20)
    return folder


def read_metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (run / "metrics.jsonl").read_text().splitlines()]


# -- schedules ----------------------------------------------------------------------------------
def lrs(scheduler, optimizer, epochs: int) -> list[float]:
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)


@pytest.mark.parametrize("warmup", [0, 3])
def test_cosine_and_step_follow_torchs_own_schedulers_after_a_linear_warmup(warmup):
    epochs = 12
    cases = {
        "cosine": ({}, lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs - warmup)),
        "step": ({"step_size": 4, "gamma": 0.5}, lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)),
    }
    for name, (settings, reference) in cases.items():
        spec = TrainSpec(task="binary", epochs=epochs, scheduler=name, warmup_epochs=warmup, **settings)
        opt = optimizer()
        ours = lrs(EpochSchedule(opt, spec), opt, epochs)
        ref_opt = optimizer()
        theirs = lrs(reference(ref_opt), ref_opt, epochs - warmup)
        assert ours[:warmup] == pytest.approx([0.1 * (e + 1) / (warmup + 1) for e in range(warmup)])
        assert ours[warmup:] == pytest.approx(theirs, rel=1e-12, abs=1e-15)


def test_no_schedule_leaves_the_rate_alone():
    opt = optimizer()
    schedule = EpochSchedule(opt, TrainSpec(task="binary"))
    assert not schedule.active and lrs(schedule, opt, 5) == [0.1] * 5


@pytest.mark.slow
def test_the_epochs_learning_rate_is_in_the_metrics(folder, tmp_path):
    spec = write_spec(folder, "step.yaml", epochs=3, train={"scheduler": "step", "warmup_epochs": 1, "step_size": 1, "gamma": 0.5})
    assert mdn("train", spec, "-o", tmp_path / "run", "-q").returncode == 0
    # lr 1e-3: warm-up epoch at half of it, then 1e-3 and 1e-3 * 0.5
    assert [m["lr"] for m in read_metrics(tmp_path / "run")] == pytest.approx([5e-4, 1e-3, 5e-4])


@pytest.mark.slow
def test_resume_mid_schedule_gives_the_uninterrupted_numbers(folder, tmp_path):
    """Cosine with warm-up, clipping, class weights and bf16: stopped after epoch 2 of 3 and resumed."""
    layers = SMALL_MDN[:4] + [{"type": "dropout", "p": 0.3}] + SMALL_MDN[4:]
    spec = load_spec(write_spec(folder, "cosine.yaml", layers=layers, epochs=3, train={
        "scheduler": "cosine", "warmup_epochs": 1, "grad_clip": 0.5, "class_weights": "balanced", "precision": "bf16-mixed"}))
    train(spec, tmp_path / "straight")
    with pytest.raises(Stop):
        train(spec, tmp_path / "split", progress=stop_after(2))
    assert len(read_metrics(tmp_path / "split")) == 2
    train(spec, tmp_path / "split", resume=True)
    assert read_metrics(tmp_path / "split") == read_metrics(tmp_path / "straight")
    last = [torch.load(tmp_path / run / "checkpoints" / "last.pt", weights_only=True) for run in ("straight", "split")]
    assert all(torch.equal(a, b) for a, b in zip(last[0]["model"].values(), last[1]["model"].values()))
    assert last[0]["scheduler"]["factor"]["last_epoch"] == 3


# -- gradient clipping --------------------------------------------------------------------------
def first_step_norm(folder: Path, tmp_path: Path, **train_options) -> float:
    """Norm of the parameter change of one SGD step on the whole training set (lr 1)."""
    spec = load_spec(write_spec(folder, "clip.yaml", layers=SMALL_BASELINE, epochs=1,
                                train={"optimizer": "sgd", "lr": 1.0, "batch_size": 1000, **train_options}))
    run = build_run(spec)
    before = [p.detach().clone() for p in run.network.parameters()]
    Trainer(run, tmp_path / f"run{len(list(tmp_path.iterdir()))}").fit()
    return float(torch.cat([(p.detach() - b).flatten() for p, b in zip(run.network.parameters(), before)]).norm())


@pytest.mark.slow
def test_grad_clip_bounds_the_global_gradient_norm(folder, tmp_path):
    # SGD's first step (momentum buffer = gradient) moves the weights by lr * the gradient: its norm is the clip
    unclipped = first_step_norm(folder, tmp_path)
    assert unclipped > 1e-2
    assert first_step_norm(folder, tmp_path, grad_clip=1e-3) == pytest.approx(1e-3, rel=1e-4)


# -- class weights ------------------------------------------------------------------------------
def test_balanced_weights_are_sklearns_formula():
    targets = torch.tensor([0, 0, 0, 1, 2, 2, 0, 2])
    n, k, counts = 8, 3, [4, 1, 3]
    assert balanced_class_weights(targets, ["a", "b", "c"], "t").tolist() == pytest.approx([n / (k * c) for c in counts])
    with pytest.raises(MdnError, match="class\\(es\\) 'b' have no training rows"):
        balanced_class_weights(torch.tensor([0, 0, 2]), ["a", "b", "c"], "t")


def test_weighted_losses_against_the_formulas_written_out():
    torch.manual_seed(0)
    z, y = torch.randn(10, 1), torch.tensor([1, 0, 0, 0, 1, 0, 0, 0, 0, 0.0])
    w = torch.tensor([0.625, 2.5])
    sig = torch.sigmoid(z[:, 0])
    expected = -(w[1] / w[0] * y * sig.log() + (1 - y) * (1 - sig).log()).mean()
    assert float(task_loss("binary", w)(z, y)) == pytest.approx(float(expected), rel=1e-5)
    logits, labels = torch.randn(9, 3), torch.tensor([0, 1, 2, 2, 2, 0, 2, 2, 1])
    wc = torch.tensor([1.5, 1.5, 0.6])
    nll = -logits.log_softmax(1)[torch.arange(9), labels]
    expected = (wc[labels] * nll).sum() / wc[labels].sum()
    assert float(task_loss("multiclass", wc)(logits, labels)) == pytest.approx(float(expected), rel=1e-5)


def test_the_runs_weights_come_from_its_training_rows(folder, tmp_path):
    for name in ("images.h5", "meta.csv"):
        shutil.copy(folder / name, tmp_path / name)
    table = pd.read_csv(tmp_path / "meta.csv")
    ones = table.index[(table.split == "train") & (table.label == 1)]
    table.loc[ones[: len(ones) * 2 // 3], "split"] = "test"  # fewer positives in training
    table.to_csv(tmp_path / "meta.csv", index=False)
    run = build_run(load_spec(write_spec(tmp_path, train={"class_weights": "balanced"})))
    counts = table[table.split == "train"].label.value_counts()
    n = counts.sum()
    w0, w1 = n / (2 * counts[0]), n / (2 * counts[1])
    z, y = torch.randn(6, 1), torch.tensor([1, 0, 1, 0, 0, 1.0])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(z[:, 0], y, pos_weight=torch.tensor([w1 / w0]))
    assert w1 / w0 > 2 and float(_train_loss_fn(run)(z, y)) == pytest.approx(float(expected), rel=1e-6)


# -- mixed precision ----------------------------------------------------------------------------
def test_mdn_computes_in_float32_under_autocast():
    torch.manual_seed(0)
    design = torch.cat([torch.randint(0, 2, (16, 1)).float(), torch.randn(16, 1), torch.ones(16, 1)], 1)
    layer = MetadataNorm(8, 3, 1)
    fit_gram(layer, design)
    twin = copy.deepcopy(layer)
    x = torch.randn(16, 8).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16), metadata(layer, design):
        out = layer(x)
    with metadata(twin, design):
        reference = twin(x.float())
    assert out.dtype == torch.float32 and layer.running_beta.dtype == torch.float32
    assert torch.equal(out, reference) and torch.equal(layer.running_beta, twin.running_beta)


@pytest.mark.slow
def test_bf16_mixed_keeps_mdns_effect(tmp_path):
    data = make_small_data(tmp_path / "data", per_group=150, seed=0)
    results = {}
    for name, layers, precision in (("baseline", SMALL_BASELINE, "32"), ("mdn", SMALL_MDN, "bf16-mixed")):
        spec = load_spec(write_spec(data, f"{name}.yaml", layers=layers, epochs=3, train={"precision": precision, "batch_size": 64}))
        results[name] = train(spec, tmp_path / name)["last"]["dcor2"]["cf"]
    for group in ("label=0", "label=1"):
        assert results["mdn"][group] * 4 <= results["baseline"][group], results
    state = torch.load(tmp_path / "mdn" / "checkpoints" / "last.pt", weights_only=True)["model"]
    betas = [v for k, v in state.items() if k.endswith("running_beta")]
    assert len(betas) == 2 and all(b.dtype == torch.float32 and b.any() for b in betas)


def test_16_mixed_on_the_cpu_is_refused(folder, tmp_path):
    result = mdn("train", write_spec(folder, "half.yaml", train={"precision": "16-mixed", "device": "cpu"}), "-o", tmp_path / "run", "-q")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train.precision" in result.stderr and "16-mixed needs a CUDA device" in result.stderr and "bf16-mixed" in result.stderr
    assert not (tmp_path / "run").exists()


# -- spec checks --------------------------------------------------------------------------------
@pytest.mark.parametrize("train, message", [
    ({"scheduler": "cosine", "step_size": 5}, "train.step_size.*is a setting of scheduler step"),
    ({"scheduler": "cosine", "warmup_epochs": 3}, "train.warmup_epochs.*leave none of the 3 epochs"),
    ({"task": "regression", "class_weights": "balanced"}, "train.class_weights.*train.task is regression"),
    ({"precision": "16"}, "train.precision"),
])
def test_options_that_would_be_ignored_or_cannot_work_are_spec_errors(folder, train, message):
    with pytest.raises(SpecError, match=message):
        load_spec(write_spec(folder, "bad.yaml", train=train))


def test_precision_32_may_be_written_as_a_number(folder):
    assert load_spec(write_spec(folder, "p32.yaml", train={"precision": 32})).train.precision == "32"
    assert math.isclose(load_spec(write_spec(folder, "g.yaml", train={"scheduler": "step", "gamma": 0.5})).train.gamma, 0.5)


def test_a_run_saved_before_these_keys_existed_still_resumes(folder):
    import yaml

    new = dump_spec(load_spec(write_spec(folder, "plain.yaml")))
    old = yaml.safe_load(new)
    for key in ("freeze", "scheduler", "warmup_epochs", "step_size", "gamma", "grad_clip", "class_weights", "precision"):
        del old["train"][key]
    assert same_training(yaml.safe_dump(old), new)
    assert not same_training(yaml.safe_dump(old), dump_spec(load_spec(write_spec(folder, "cos.yaml", train={"scheduler": "cosine"}))))
