"""Staged training (data.stage_column): the plan, the state carried across stages, the matrix on
the right rows (against predictions recomputed here and scikit-learn), resume mid-stage, the
continual-learning summaries, and `mdn synth --stages`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import accuracy_score

from mdn_cli.config import load_spec
from mdn_cli.nn import metadata
from mdn_cli.train.loop import train
from mdn_cli.train.run import build_run
from mdn_cli.train.stages import continual_summary, plan
from tests.helpers import Stop, mdn, stop_after, write_spec

STAGES, PER_GROUP, EPOCHS = 3, 30, 2


@pytest.fixture(scope="module")
def staged_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("staged")
    result = mdn("synth", str(folder), "--stages", str(STAGES), "--per-group", str(PER_GROUP), "--seed", "2")
    assert result.returncode == 0, result.stderr
    return folder


def staged_spec(folder: Path, name: str, mdn_section: dict | None = None, **train) -> Path:
    return write_spec(folder, name, epochs=EPOCHS, data={"stage_column": "stage"}, mdn=mdn_section or {},
                      train={"batch_size": 16, "device": "cpu", **train})


def test_plan_visits_each_stage_for_its_epochs_and_resumes_where_it_stopped():
    assert list(plan(2, 3, (0, 0), 1)) == [(1, 0, 1), (2, 0, 2), (3, 1, 1), (4, 1, 2), (5, 2, 1), (6, 2, 2)]
    assert list(plan(2, 3, (1, 1), 4)) == [(4, 1, 2), (5, 2, 1), (6, 2, 2)]  # mid-stage
    assert list(plan(2, 3, (1, 2), 5)) == [(5, 2, 1), (6, 2, 2)]  # a finished stage: the next one
    assert list(plan(2, 3, (2, 2), 7)) == []
    assert list(plan(3, 3, (1, 2), 5)) == [(5, 1, 3), (6, 2, 1), (7, 2, 2), (8, 2, 3)]  # more epochs on resume: the stage goes on


def test_continual_summary_is_the_average_and_backward_transfer_of_the_matrix():
    names = ["a", "b", "c"]
    r = np.array([[0.9, 0.5, 0.4], [0.7, 0.8, 0.5], [0.6, 0.7, 0.9]])
    results = [{"stage": s, "scores": {n: {"val": {"acc": r[i, j]}} for j, n in enumerate(names)}} for i, s in enumerate(names)]
    summary = continual_summary(names, results, "acc")["val"]
    assert summary["matrix"] == r.tolist()
    assert summary["average"] == pytest.approx(r[2].mean())
    assert summary["backward_transfer"] == pytest.approx(((0.6 - 0.9) + (0.7 - 0.8)) / 2)
    assert summary["backward_transfer_by_stage"] == [None, pytest.approx(0.7 - 0.9), pytest.approx(-0.2)]


def test_synth_stages_shift_the_confounder_and_the_main_factor(staged_data):
    table = pd.read_csv(staged_data / "meta.csv")
    assert sorted(table["stage"].unique()) == list(range(STAGES)) and table["id"].is_unique
    assert (table.groupby("stage").size() == 2 * PER_GROUP).all()
    means = table.groupby(["stage", "label"])[["cf", "mf"]].mean().unstack("label")
    cf_gap = (means[("cf", 1)] - means[("cf", 0)]).to_numpy()
    mf_gap = (means[("mf", 1)] - means[("mf", 0)]).to_numpy()
    assert np.all(np.diff(cf_gap) > 0) and np.all(np.diff(mf_gap) < 0)  # the confounder's tie grows, the main factor's fades
    last = table[table["stage"] == STAGES - 1]
    assert last.groupby("label")["cf"].min()[1] > last.groupby("label")["cf"].max()[0]  # cf alone separates the groups
    assert abs(mf_gap[-1]) < 0.5  # mf hardly does


def test_state_carries_over_and_batch_mdn_refits_the_gram_per_stage(staged_data, tmp_path):
    spec = load_spec(staged_spec(staged_data, "rmdn.yaml", {"variant": "recursive"}))
    summary = train(spec, tmp_path / "rmdn")
    assert summary["epochs"] == STAGES * EPOCHS and summary["stages"]["finished"] == ["0", "1", "2"]
    state = torch.load(tmp_path / "rmdn" / "checkpoints" / "last.pt", weights_only=True)
    table = pd.read_csv(staged_data / "meta.csv")
    batches_per_stage = [int(np.ceil(((table["stage"] == s) & (table["split"] == "train")).sum() / 16)) for s in range(STAGES)]
    counts = [v for k, v in state["model"].items() if k.endswith("num_batches_tracked")]
    assert counts and all(int(c) == EPOCHS * sum(batches_per_stage) for c in counts)  # one R-MDN stream over all stages

    spec = load_spec(staged_spec(staged_data, "batch.yaml"))
    train(spec, tmp_path / "batch")
    state = torch.load(tmp_path / "batch" / "checkpoints" / "last.pt", weights_only=True)
    last = table[(table["stage"] == STAGES - 1) & (table["split"] == "train")]
    run = build_run(spec)  # the design as training encodes it (fitted on all stages' training rows)
    design = run.data.design_rows[np.array(last.index)].double().numpy()
    grams = [v for k, v in state["model"].items() if k.endswith("gram_inverse")]
    assert grams
    for gram in grams:
        np.testing.assert_allclose(gram.numpy(), np.linalg.inv(design.T @ design), rtol=1e-6)
    n_train = [int(v) for k, v in state["model"].items() if k.endswith("n_train")]
    assert n_train == [len(last)] * len(grams)
    history = [json.loads(line) for line in (tmp_path / "batch" / "metrics.jsonl").read_text().splitlines()]
    assert [(m["stage"], m["stage_epoch"]) for m in history] == [(str(s), e) for s in range(STAGES) for e in range(1, EPOCHS + 1)]


def test_matrix_scores_each_stage_on_its_own_rows(staged_data, tmp_path):
    """Each stage's val accuracy after the last stage, recomputed here from the final model on that
    stage's val rows (scikit-learn's accuracy), is the matrix's last row."""
    spec = load_spec(staged_spec(staged_data, "matrix.yaml"))
    summary = train(spec, tmp_path / "run")
    run = build_run(spec)
    run.network.load_state_dict(torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"])
    run.network.eval()
    table = run.data.table
    row = []
    for stage in range(STAGES):
        rows = np.flatnonzero(((table["stage"] == stage) & (table["split"] == "val")).to_numpy())
        x = next(iter(run.data.inputs.batches([rows])))
        with torch.no_grad(), metadata(run.network, run.data.design_rows[rows]):
            predicted = (run.network(x).squeeze(1) > 0).long().numpy()
        row.append(accuracy_score(table["label"].to_numpy()[rows], predicted))
    val = summary["stages"]["summary"]["val"]
    np.testing.assert_allclose(val["matrix"][-1], row, rtol=1e-12)
    assert val["average"] == pytest.approx(np.mean(row))
    assert set(summary["stages"]["summary"]) == {"val", "test"}
    cell = summary["stages"]["results"][0]["scores"]["1"]["val"]
    assert set(cell["dcor2"]["cf"]) == {"all", "label=0", "label=1"}
    assert json.loads((tmp_path / "run" / "stages.json").read_text()) == summary["stages"]


@pytest.mark.parametrize("stop_epoch", [3, 4])  # mid-stage, and at a stage's end
def test_resume_gives_the_same_matrix(staged_data, tmp_path, stop_epoch):
    spec = load_spec(staged_spec(staged_data, "resume.yaml", {"variant": "recursive"}))
    straight = train(spec, tmp_path / "straight")
    with pytest.raises(Stop):
        train(spec, tmp_path / "split", progress=stop_after(stop_epoch))
    stages = json.loads((tmp_path / "split" / "stages.json").read_text())
    assert len(stages["finished"]) == stop_epoch // EPOCHS
    resumed = train(spec, tmp_path / "split", resume=True)
    assert resumed["stages"] == straight["stages"]


def test_report_renders_the_matrices(staged_data, tmp_path):
    spec = staged_spec(staged_data, "report.yaml", epochs=1)
    assert mdn("train", str(spec), "-o", str(tmp_path / "run"), "--quiet").returncode == 0
    result = mdn("report", str(tmp_path / "run"), "--format", "markdown")
    assert result.returncode == 0, result.stderr
    assert "### stages: val acc" in result.stdout and "### stages: test dcor² with cf (label=0 / label=1)" in result.stdout
    detail = json.loads(mdn("report", str(tmp_path / "run"), "--format", "json").stdout)
    assert detail["stages"]["names"] == ["0", "1", "2"] and len(detail["stages"]["summary"]["val"]["matrix"]) == STAGES


def test_staged_spec_errors(staged_data, tmp_path):
    with_stopping = staged_spec(staged_data, "stopping.yaml", early_stopping={"patience": 2})
    result = mdn("validate", str(with_stopping))
    assert result.returncode == 2 and "train.early_stopping" in result.stderr
    folds = mdn("train", str(staged_spec(staged_data, "folds.yaml")), "-o", str(tmp_path / "cv"), "--folds", "2")
    assert folds.returncode == 2 and "--folds" in folds.stderr and "stage" in folds.stderr
    table = pd.read_csv(staged_data / "meta.csv")
    table.loc[(table["stage"] == 1) & (table["split"] == "val"), "split"] = "test"
    table.to_csv(tmp_path / "meta.csv", index=False)
    (tmp_path / "images.h5").symlink_to(staged_data / "images.h5")
    result = mdn("train", str(staged_spec(tmp_path, "noval.yaml")), "-o", str(tmp_path / "run"))
    assert result.returncode == 2 and "stage '1'" in result.stderr and "'val'" in result.stderr


def test_synth_stages_are_2d(tmp_path):
    result = mdn("synth", str(tmp_path / "v"), "--stages", "2", "--format", "nifti", "--per-group", "4")
    assert result.returncode == 2 and "--stages" in result.stderr and not (tmp_path / "v").exists()
