"""`mdn train --folds`: folds over the non-test rows, no leak into MDN, cv.json, resume, out-of-fold evaluation, bad input."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from tests.helpers import mdn, ok, write_spec

K = 3  # the folds of the session's crossval_runs (tests/conftest.py)


@pytest.fixture(scope="module")
def cv(crossval_runs):
    """The session's 3-fold, 1-epoch cross-validation of the small MDN spec; its folder (data, spec, cv/)."""
    return crossval_runs


def fold_rows(cv, i: int) -> pd.DataFrame:
    return pd.read_csv(cv / "cv" / f"fold-{i}" / "folds.csv", dtype={"id": str})


def test_every_non_test_row_is_held_out_once_stratified(cv):
    table = pd.read_csv(cv / "meta.csv", dtype={"id": str})
    held_out = pd.concat([fold_rows(cv, i).query("split == 'val'") for i in range(K)])
    non_test = table.loc[table["split"] != "test", "id"]
    assert sorted(held_out["id"]) == sorted(non_test)  # each exactly once
    labels = table.set_index("id")["label"]
    for i in range(K):
        rows = fold_rows(cv, i)
        assert set(rows.loc[rows["split"] == "test", "id"]) == set(table.loc[table["split"] == "test", "id"])
        counts = labels[rows.loc[rows["split"] == "val", "id"]].value_counts()
        expected = labels[non_test].value_counts() / K
        assert ((counts - expected).abs() < 1).all()


def test_each_fold_fits_design_and_gram_on_its_own_training_rows(cv):
    table = pd.read_csv(cv / "meta.csv", dtype={"id": str}).set_index("id")
    for i in range(K):
        train_ids = fold_rows(cv, i).query("split == 'train'")["id"]
        state = torch.load(cv / "cv" / f"fold-{i}" / "checkpoints" / "last.pt", weights_only=True)
        train = table.loc[train_ids]
        columns = []
        for encoding in state["design"]["encodings"]:
            assert encoding["mean"] == pytest.approx(train[encoding["name"]].mean(), rel=1e-9)
            assert encoding["std"] == pytest.approx(train[encoding["name"]].std(ddof=0), rel=1e-9)
            columns.append((train[encoding["name"]] - encoding["mean"]) / encoding["std"])
        x = np.column_stack([*columns, np.ones(len(train))])
        grams = [value for key, value in state["model"].items() if key.endswith("gram_inverse")]
        assert grams and all(np.allclose(gram.numpy(), np.linalg.inv(x.T @ x), rtol=1e-5, atol=1e-7) for gram in grams)  # design rows are float32


def test_cv_json_is_the_mean_and_sd_of_the_folds_last_epochs(cv):
    result = json.loads((cv / "cv" / "cv.json").read_text())
    last = [json.loads((cv / "cv" / f"fold-{i}" / "metrics.jsonl").read_text().splitlines()[-1]) for i in range(K)]
    for name, key in (("val_acc", None), ("val_balanced_acc", None), ("dcor2[cf|label=0]", ("cf", "label=0"))):
        values = [m[name] if key is None else m["dcor2"][key[0]][key[1]] for m in last]
        assert result["summary"][name]["mean"] == pytest.approx(np.mean(values))
        assert result["summary"][name]["sd"] == pytest.approx(np.std(values, ddof=1))
    assert [run["run_dir"] for run in result["runs"]] == [f"fold-{i}" for i in range(K)]
    report = ok("report", cv / "cv", "--format", "csv").stdout
    assert report.splitlines()[0].startswith("fold,n train,n val,") and "mean" in report and "sd" in report


def test_out_of_fold_evaluation_scores_each_row_once_with_its_folds_model(cv):
    result = json.loads(ok("evaluate", cv / "cv", "--split", "val", "--format", "json", "--predictions", cv / "oof.csv").stdout)
    preds = pd.read_csv(cv / "oof.csv", dtype={"id": str})
    table = pd.read_csv(cv / "meta.csv", dtype={"id": str})
    assert sorted(preds["id"]) == sorted(table.loc[table["split"] != "test", "id"]) and result["n"] == len(preds)
    for i in range(K):
        assert set(preds.loc[preds["fold"] == i, "id"]) == set(fold_rows(cv, i).query("split == 'val'")["id"])
    assert result["overall"]["roc_auc"] == pytest.approx(skm.roc_auc_score(preds["label"], preds["score"]))
    assert result["overall"]["accuracy"] == pytest.approx(skm.accuracy_score(preds["label"], preds["score"] > 0.5))
    assert sorted({row["fold"] for row in result["dcor"]}) == list(range(K))


def test_test_split_is_the_mean_and_sd_over_the_folds_models(cv):
    result = json.loads(ok("evaluate", cv / "cv", "--split", "test", "--format", "json", "--predictions", cv / "test.csv").stdout)
    preds = pd.read_csv(cv / "test.csv")
    per_fold = [skm.log_loss(part["label"], part["score"], labels=[0, 1]) for _, part in preds.groupby("fold")]
    assert len(per_fold) == K and len(preds) == K * result["n"]
    assert result["overall"]["log_loss"] == pytest.approx(np.mean(per_fold))
    assert result["overall_sd"]["log_loss"] == pytest.approx(np.std(per_fold, ddof=1))
    assert (cv / "cv" / "eval" / "test-best.json").is_file()


@pytest.mark.slow
def test_resume_trains_only_the_unfinished_folds(cv, tmp_path):
    copy = tmp_path / "cv"
    shutil.copytree(cv / "cv", copy)
    shutil.rmtree(copy / "fold-2")
    (copy / "cv.json").unlink()
    kept = (copy / "fold-0" / "checkpoints" / "last.pt").stat().st_mtime_ns
    again = mdn("train", cv / "spec.yaml", "-o", copy, "--folds", K, "-q")
    assert again.returncode == 2 and "--resume" in again.stderr
    ok("train", cv / "spec.yaml", "-o", copy, "--folds", K, "-q", "--resume")
    assert (copy / "fold-0" / "checkpoints" / "last.pt").stat().st_mtime_ns == kept
    assert json.loads((copy / "cv.json").read_text())["summary"] == json.loads((cv / "cv" / "cv.json").read_text())["summary"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--folds", "1"], "k must be a whole number of at least 2"),
        (["--folds", "60"], "has only"),
        (["--folds", "3", "--group-column", "subject"], "groups is missing in"),
        (["--folds", "3", "--group-column", "subjct"], "did you mean `subject`?"),
        (["--group-column", "subject"], "go with --folds"),
    ],
)
def test_bad_folds_exit_2_and_write_nothing(cv, tmp_path, args, message):
    table = pd.read_csv(cv / "meta.csv")
    table["subject"] = (np.arange(len(table)) // 2).astype(float)
    table.loc[table.index[table["split"] == "train"][0], "subject"] = np.nan  # a row the folds are made of
    table.to_csv(tmp_path / "meta.csv", index=False)
    shutil.copy(cv / "images.h5", tmp_path / "images.h5")
    spec = write_spec(tmp_path, epochs=1)
    result = mdn("train", spec, "-o", tmp_path / "out", *args)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_group_column_keeps_each_subject_in_one_fold(cv, tmp_path):
    table = pd.read_csv(cv / "meta.csv")
    table["subject"] = "s" + (np.arange(len(table)) // 3).astype(str)  # 3 rows per subject
    table.to_csv(tmp_path / "meta.csv", index=False)
    shutil.copy(cv / "images.h5", tmp_path / "images.h5")
    spec = write_spec(tmp_path, epochs=1)
    ok("train", spec, "-o", tmp_path / "cv", "--folds", 2, "--group-column", "subject", "-q")
    subject = table.assign(id=table["id"].astype(str)).set_index("id")["subject"]
    for i in range(2):
        rows = pd.read_csv(tmp_path / "cv" / f"fold-{i}" / "folds.csv", dtype={"id": str})
        by_split = rows.assign(subject=subject[rows["id"]].to_numpy()).query("split != 'test'").groupby("subject")["split"].nunique()
        assert (by_split == 1).all()
    assert json.loads((tmp_path / "cv" / "cv.json").read_text())["group_column"] == "subject"


@pytest.mark.parametrize("launch", [("--nproc", "2"), ()])
def test_folds_train_in_one_process(cv, tmp_path, launch):
    """With --nproc, or started by torchrun (WORLD_SIZE set), --folds is refused before anything is written."""
    spec = write_spec(cv, "folds-one-process.yaml", epochs=1)
    env = {} if launch else {"WORLD_SIZE": "2"}
    result = mdn("train", spec, "-o", tmp_path / "out", "--folds", "3", *launch, env=env)
    assert result.returncode == 2 and "--folds trains in one process" in result.stderr
    assert not (tmp_path / "out").exists()
