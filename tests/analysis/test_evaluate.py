"""`mdn evaluate`: every number recomputed from its own predictions with scikit-learn; training's val metrics; bad input."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from tests.helpers import SMALL_MDN, make_small_data, mdn, ok, write_spec


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 2-epoch binary MDN run on small synthetic data, selecting its best epoch by val AUC."""
    folder = make_small_data(tmp_path_factory.mktemp("evaluate"))
    spec = write_spec(folder, epochs=2)
    ok("train", spec, "-o", folder / "run", "-q", "--set", "train.select=val_auc")
    return folder


@pytest.fixture(scope="module")
def evaluated(run):
    """The JSON of `mdn evaluate --split all` with bootstrap intervals, and its predictions CSV."""
    result = ok("evaluate", run / "run", "--split", "all", "--by", "cf", "--by", "split", "--bins", "3",
                "--bootstrap", "40", "--seed", "1", "--format", "json", "--predictions", run / "preds.csv")  # fmt: skip
    return json.loads(result.stdout), pd.read_csv(run / "preds.csv")


def binary_reference(label, score):
    predicted = (score > 0.5).astype(int)
    both = len(set(label)) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn's own note on a group with one class (balanced accuracy)
        return {
            "accuracy": skm.accuracy_score(label, predicted),
            "balanced_accuracy": skm.balanced_accuracy_score(label, predicted),
            "roc_auc": skm.roc_auc_score(label, score) if both else None,
            "average_precision": skm.average_precision_score(label, score) if both else None,
            "f1": skm.f1_score(label, predicted),
            "log_loss": skm.log_loss(label, score, labels=[0, 1]),
            "brier": skm.brier_score_loss(label, score, labels=[0, 1]),
        }


def assert_metrics(got: dict, expected: dict):
    for name, value in expected.items():
        assert got[name] == (None if value is None else pytest.approx(value, rel=1e-9, abs=1e-12)), name


def test_every_number_recomputes_from_the_predictions_csv(evaluated):
    result, preds = evaluated
    assert result["task"] == "binary" and result["split"] == "all" and result["n"] == len(preds) == 120
    assert sorted(preds["split"].unique()) == ["test", "train", "val"]
    assert (preds["predicted"] == (preds["score"] > 0.5).astype(int)).all()
    assert_metrics(result["overall"], binary_reference(preds["label"], preds["score"]))
    rows = {(row["column"], row["group"]): row for row in result["by_group"]}
    assert {column for column, _ in rows} == {"cf", "split"}
    for column, group_column in (("cf", "cf_group"), ("split", "split_group")):
        groups = preds[group_column].astype(str)
        assert sorted(group for c, group in rows if c == column) == sorted(groups.unique())
        for group in groups.unique():
            mask = groups == group
            row = rows[column, group]
            assert row["n"] == mask.sum()
            assert_metrics(row, binary_reference(preds["label"][mask], preds["score"][mask]))
    for gap in result["gaps"]:
        values = {group: row[gap["metric"]] for (c, group), row in rows.items() if c == gap["column"] and row[gap["metric"]] is not None}
        if len(values) < 2:
            assert gap["difference"] is None and gap["worst_group"] is None
            continue
        assert gap["difference"] == pytest.approx(max(values.values()) - min(values.values()))
        worst = (max if gap["metric"] in ("log_loss", "brier") else min)(values.values())
        assert values[gap["worst_group"]] == worst


def test_cf_is_cut_into_quantile_groups_with_their_ranges(evaluated):
    _, preds = evaluated
    counts = preds["cf_group"].value_counts()
    assert len(counts) == 3 and counts.max() - counts.min() <= 1
    for group in counts.index:
        low, high = (float(edge) for edge in group.strip("[]()").split(", "))
        inside = preds.loc[preds["cf_group"] == group, "cf"]
        assert inside.min() >= low - 0.005 and inside.max() <= high + 0.005


def test_intervals_bracket_the_estimates(evaluated):
    result, _ = evaluated
    assert set(result["intervals"]) == set(result["overall"]) and result["bootstrap"]["n_boot"] == 40
    for name, (low, high) in result["intervals"].items():
        assert low <= result["overall"][name] <= high, name
    assert all(gap["interval"][0] <= gap["interval"][1] for gap in result["gaps"])
    for row in result["by_group"]:
        assert set(row["intervals"]) == set(result["intervals"])
        assert all(low <= high for low, high in filter(None, row["intervals"].values()))


def test_dcor_is_the_audits_result_on_the_same_features(run, evaluated):
    result, _ = evaluated
    ok("extract", run / "run", "--layer", "fc1", "--split", "all", "-o", run / "fc1.h5", "--meta-out", run / "fc1.csv", "-q")
    audit = json.loads(ok("audit", run / "fc1.h5", run / "fc1.csv", "--columns", "cf", "--by", "label", "--format", "json").stdout)
    expected = {(row["column"], row["stratum"]): row["dcor2"] for row in audit["results"]}
    assert {(row["column"], row["stratum"]): row["dcor2"] for row in result["dcor"]} == pytest.approx(expected, rel=1e-6)
    assert {stratum for _, stratum in expected} == {None, "label=0", "label=1"}


def test_result_is_kept_in_the_run(run, evaluated):
    result, _ = evaluated
    assert json.loads((run / "run" / "eval" / "all-best.json").read_text()) == result


def test_val_metrics_per_epoch_and_select_by_auc(run):
    history = [json.loads(line) for line in (run / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all({"val_acc", "val_balanced_acc", "val_auc"} <= set(m) for m in history)
    out = ok("evaluate", run / "run", "--split", "val", "--checkpoint", "last", "--format", "json", "--predictions", run / "val.csv")
    preds = pd.read_csv(run / "val.csv")
    last = history[-1]
    assert last["val_acc"] == pytest.approx(skm.accuracy_score(preds["label"], preds["score"] > 0.5))
    assert last["val_balanced_acc"] == pytest.approx(skm.balanced_accuracy_score(preds["label"], preds["score"] > 0.5))
    assert last["val_auc"] == pytest.approx(skm.roc_auc_score(preds["label"], preds["score"]), abs=1e-6)
    assert json.loads(out.stdout)["epoch"] == len(history)
    best = max(history, key=lambda m: m["val_auc"])
    assert json.loads(ok("evaluate", run / "run", "--split", "val", "--format", "json").stdout)["epoch"] == best["epoch"]


@pytest.mark.parametrize("fmt", ["csv", "markdown", "table"])
def test_other_formats(run, fmt):
    out = ok("evaluate", run / "run", "--format", fmt, "--by", "cf").stdout
    if fmt == "csv":
        table = pd.read_csv(pd.io.common.StringIO(out))
        assert table["group"].iloc[0] == "all" and len(table) == 1 + 4
    else:
        assert "balanced_accuracy" in out and "dcor²" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "cff"], "did you mean `cf`?"),
        (["--bootstrap", "0", "--predictions", "{p}"], "--bootstrap must be at least 1"),
        (["--split", "nope"], "unknown split"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(run, args, message, tmp_path):
    args = [arg.replace("{p}", str(tmp_path / "p.csv")) for arg in args]
    before = sorted((run / "run" / "eval").glob("*"))
    result = mdn("evaluate", run / "run", *args)
    assert result.returncode == 2 and message in result.stderr
    assert not (tmp_path / "p.csv").exists() and sorted((run / "run" / "eval").glob("*")) == before


@pytest.mark.slow
def test_a_column_with_one_group_and_a_split_with_no_rows(run, tmp_path):
    one_group = mdn("evaluate", run / "run", "--by", "split")  # the test split: one group
    assert one_group.returncode == 2 and "'split' has 1 group (test)" in one_group.stderr
    spec = write_spec(run, "nosplit.yaml", epochs=1, data={"split_column": None, "val_fraction": 0.25})
    ok("train", spec, "-o", tmp_path / "nosplit", "-q")
    empty = mdn("evaluate", tmp_path / "nosplit", "--split", "test")
    assert empty.returncode == 2 and "no 'test' rows" in empty.stderr
    assert not (tmp_path / "nosplit" / "eval").exists()


@pytest.mark.parametrize("task", ["multiclass", "regression"])
@pytest.mark.slow
def test_multiclass_and_regression_recompute_from_the_predictions(run, task):
    table = pd.read_csv(run / "meta.csv")
    table["k3"] = pd.qcut(table["mf"], 3, labels=["a", "b", "c"]).astype(str)
    table.to_csv(run / "meta3.csv", index=False)
    layers = [dict(layer) for layer in SMALL_MDN]
    if task == "multiclass":
        layers[-1] = {"type": "linear", "out_features": 3, "name": "out"}
        spec = write_spec(run, "multi.yaml", layers=layers, epochs=1, data={"table": "meta3.csv", "label": "k3"},
                          mdn={"preserve": ["k3"]}, train={"task": "multiclass"})  # fmt: skip
    else:
        spec = write_spec(run, "reg.yaml", epochs=1, data={"label": "mf"}, mdn={"preserve": []}, train={"task": "regression"})
    ok("train", spec, "-o", run / task, "-q")
    result = json.loads(ok("evaluate", run / task, "--format", "json", "--predictions", run / f"{task}.csv").stdout)
    preds = pd.read_csv(run / f"{task}.csv")
    if task == "multiclass":
        probabilities = preds[["p_a", "p_b", "p_c"]].to_numpy()
        predicted = np.array(["a", "b", "c"])[probabilities.argmax(axis=1)]
        assert (preds["predicted"] == predicted).all() and result["classes"] == ["a", "b", "c"]
        expected = {
            "accuracy": skm.accuracy_score(preds["label"], predicted),
            "balanced_accuracy": skm.balanced_accuracy_score(preds["label"], predicted),
            "macro_f1": skm.f1_score(preds["label"], predicted, average="macro"),
            "log_loss": skm.log_loss(preds["label"], probabilities, labels=["a", "b", "c"]),
        }
        assert result["overall"]["confusion_matrix"] == skm.confusion_matrix(preds["label"], predicted, labels=["a", "b", "c"]).tolist()
    else:
        expected = {
            "mae": skm.mean_absolute_error(preds["label"], preds["prediction"]),
            "rmse": np.sqrt(skm.mean_squared_error(preds["label"], preds["prediction"])),
            "r2": skm.r2_score(preds["label"], preds["prediction"]),
            "pearson_r": np.corrcoef(preds["label"], preds["prediction"])[0, 1],
        }
        assert {row["stratum"] for row in result["dcor"]} == {None}  # no classes to stratify by
    assert_metrics(result["overall"], expected)


def test_report_shows_kept_evaluations_and_draws_their_groups(run, evaluated, tmp_path):
    result, _ = evaluated
    detail = json.loads(ok("report", run / "run", "--format", "json").stdout)
    kept = {e["file"]: e for e in detail["evaluations"]}
    assert kept["all-best.json"]["overall"] == result["overall"]
    assert "val_balanced_acc" in ok("report", run / "run", "--format", "markdown").stdout
    ok("report", run / "run", "--plot", tmp_path / "groups.png", "-o", tmp_path / "report.txt")
    assert (tmp_path / "groups.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
