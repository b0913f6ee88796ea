"""The audit: features + table -> dcor² per column and stratum, its inputs, outputs and exit codes."""

from __future__ import annotations

import csv
import io
import json

import dcor
import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from mdn_cli.data.audit import audit_features
from mdn_cli.utils.errors import MdnError
from tests.helpers import mdn, run_cli

N = 120


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Features with ids, confounded by cf, and a study table with two extra rows and a gap."""
    rng = np.random.default_rng(0)
    folder = tmp_path_factory.mktemp("audit")
    label = rng.integers(0, 2, N)
    cf = rng.normal(size=N)
    features = rng.normal(size=(N, 2, 4)).astype(np.float32)
    features[:, 0, 0] += 2 * cf
    ids = np.arange(N) + 1000
    with h5py.File(folder / "features.h5", "w") as handle:
        handle["features"] = features
        handle["ids"] = ids
    table = pd.DataFrame(
        {
            "id": np.r_[ids[::-1], [1, 2]],  # other order than the features, plus unused rows
            "cf": np.r_[cf[::-1], [0.0, 0.0]],
            "label": np.r_[label[::-1], [0, 1]],
            "site": np.r_[rng.choice(["a", "b", "c"], N), ["a", "b"]],
            "age": np.r_[rng.normal(size=N), [1.0, 2.0]],
        }
    )
    table.loc[5, "age"] = np.nan
    table.to_csv(folder / "meta.csv", index=False)
    return folder, features.reshape(N, -1), table.iloc[:N][::-1].reset_index(drop=True)


def _invoke(*args, input=None):
    return mdn("audit", *args, stdin=input)


# ---------------------------------------------------------------------------------------------
# The pure audit
# ---------------------------------------------------------------------------------------------


def test_pooled_and_per_stratum_values_match_dcor(study):
    _, features, table = study
    result = audit_features(features, table, ["cf", "site"], by="label", dtype=torch.float64)
    assert [(row.column, row.stratum) for row in result.rows] == [
        ("cf", None), ("cf", "label=0"), ("cf", "label=1"),
        ("site", None), ("site", "label=0"), ("site", "label=1"),
    ]  # fmt: skip
    x, cf, label = features.astype(np.float64), table["cf"].to_numpy(), table["label"].to_numpy()
    assert result.rows[0].dcor2 == pytest.approx(dcor.u_distance_correlation_sqr(x, cf), rel=1e-8)
    rows = label == 1
    assert result.rows[2].dcor2 == pytest.approx(dcor.u_distance_correlation_sqr(x[rows], cf[rows]), rel=1e-8)
    one_hot = pd.get_dummies(table["site"]).to_numpy(dtype=float)
    assert result.rows[3].kind == "categorical"
    assert result.rows[3].dcor2 == pytest.approx(dcor.u_distance_correlation_sqr(x, one_hot), rel=1e-8)
    assert all(row.pvalue is None for row in result.rows)


def test_nested_shape_for_training_metrics_uses_label_values_as_written(study):
    _, features, table = study
    table = table.assign(label=table["label"].astype(float))  # e.g. read with gaps elsewhere
    nested = audit_features(torch.from_numpy(features), table, ["cf"], by="label").nested()
    assert list(nested) == ["cf"] and list(nested["cf"]) == ["all", "label=0", "label=1"]
    assert nested["cf"]["all"] > 0.3


def test_missing_values_constant_columns_and_tiny_strata_are_notes(study):
    _, features, table = study
    table = table.assign(constant=1.0, group=["x"] * 3 + ["y"] * (N - 3))
    result = audit_features(features, table, ["age", "constant"], by="group")
    by_key = {(row.column, row.stratum): row for row in result.rows}
    assert by_key["age", None].n == N - 1 and by_key["age", None].n_missing == 1
    assert by_key["constant", None].dcor2 is None and "constant" in by_key["constant", None].note
    assert by_key["age", "group=x"].dcor2 is None and "at least 4" in by_key["age", "group=x"].note


def test_declared_categorical_numeric_column_uses_the_discrete_metric(study):
    _, features, table = study
    result = audit_features(features, table, ["label"], categorical=["label"], dtype=torch.float64)
    one_hot = np.eye(2)[table["label"].to_numpy()]
    assert result.rows[0].kind == "categorical"
    assert result.rows[0].dcor2 == pytest.approx(dcor.u_distance_correlation_sqr(features.astype(float), one_hot), rel=1e-8)


def test_bad_inputs_raise_errors_that_name_the_problem(study):
    _, features, table = study
    with pytest.raises(MdnError, match="no column 'nope'|no column nope"):
        audit_features(features, table, ["cf", "nope"])
    broken = features.copy()
    broken[[3, 7]] = np.nan
    with pytest.raises(MdnError, match="2 rows: 3, 7"):
        audit_features(broken, table, ["cf"])
    with pytest.raises(MdnError, match="119 feature rows but 120 table rows"):
        audit_features(features[:-1], table, ["cf"])


def test_permutation_and_t_tests_give_p_values_with_their_settings(study):
    _, features, table = study
    permuted = audit_features(features, table, ["cf", "age"], test="permutation", permutations=99, seed=1)
    assert permuted.settings["permutations"] == 99 and permuted.settings["test"] == "permutation"
    assert permuted.rows[0].pvalue == pytest.approx(0.01)
    assert 0.01 < permuted.rows[1].pvalue <= 1
    t_test = audit_features(features, table, ["cf"], test="t")
    assert t_test.rows[0].pvalue < 1e-10 and t_test.settings["permutations"] is None


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def test_json_output_has_the_documented_shape(study):
    folder, features, table = study
    result = _invoke(folder / "features.h5", folder / "meta.csv", "--by", "label", "--format", "json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == N
    assert report["features"] == {"path": str(folder / "features.h5"), "dataset": "features", "shape": [N, 2, 4]}
    assert report["settings"]["test"] is None and report["settings"]["permutations"] is None
    assert report["table"]["unused_rows"] == 2
    columns = {row["column"] for row in report["results"]}
    assert columns == {"cf", "site", "age"}  # not the id, not the --by column
    first = report["results"][0]
    assert set(first) >= {"column", "kind", "stratum", "n", "n_missing", "dcor2", "pvalue", "note"}
    assert first["stratum"] is None and report["results"][1]["stratum"] == "label=0"
    expected = audit_features(features, table, ["cf"], by="label").rows[0].dcor2
    assert first["dcor2"] == pytest.approx(expected, rel=1e-6)


def test_table_from_stdin_csv_and_markdown_and_output_file(study, tmp_path):
    folder, _, _ = study
    text = (folder / "meta.csv").read_text()
    result = _invoke(folder / "features.h5", "-", "--columns", "cf,site", "--format", "csv", input=text)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["column"] for row in rows] == ["cf", "site"] and rows[0]["pvalue"] == ""
    out = tmp_path / "audit.md"
    result = _invoke(folder / "features.h5", folder / "meta.csv", "--columns", "cf", "--sample", "50",
                     "--format", "markdown", "-o", out)  # fmt: skip
    assert result.returncode == 0 and result.stdout == ""
    assert "| cf | numeric | all | 50 |" in out.read_text() and "SAMPLE of 50 rows" in out.read_text()


def test_table_format_and_any_rank_dataset(study, tmp_path):
    folder, features, table = study
    path = tmp_path / "maps.h5"
    with h5py.File(path, "w") as handle:
        handle["layer/act"] = features.reshape(N, 2, 2, 2)
    table.drop(columns="id").to_csv(tmp_path / "ordered.csv", index=False)
    result = _invoke(path, tmp_path / "ordered.csv", "--dataset", "layer/act", "--columns", "cf", "--test", "t")
    assert result.returncode == 0, result.stderr
    assert "cf" in result.stdout and "numeric" in result.stdout and "Largest dcor²: cf (all)" in result.stdout


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t[t["id"] != 1003], "are not in column 'id': 1003"),
        (lambda t: pd.concat([t, t[t["id"] == 1004]]), "has duplicate ids: 1004"),
        (lambda t: t.drop(columns="id").iloc[:10], "the table has 10 rows but"),
    ],
    ids=["missing id", "duplicate id", "no ids and wrong length"],
)
def test_join_problems_are_named(study, tmp_path, change, message):
    folder, _, _ = study
    change(pd.read_csv(folder / "meta.csv")).to_csv(tmp_path / "meta.csv", index=False)
    result = _invoke(folder / "features.h5", tmp_path / "meta.csv")
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_non_finite_features_are_named_by_id(study, tmp_path):
    folder, features, _ = study
    broken = features.copy()
    broken[4, 2] = np.inf
    with h5py.File(tmp_path / "f.h5", "w") as handle:
        handle["features"] = broken
        handle["ids"] = np.arange(N) + 1000
    result = _invoke(tmp_path / "f.h5", folder / "meta.csv")
    assert result.returncode == 2 and "1 ids: 1004" in result.stderr


@pytest.mark.slow
def test_exit_codes_end_to_end(study):
    """In a fresh process, as a shell pipeline sees them."""
    folder, _, _ = study
    command = ["audit", folder / "features.h5", folder / "meta.csv"]
    above = run_cli(*command, "--columns", "cf", "--fail-above", "0.1", "--format", "json")
    assert above.returncode == 1 and "FAIL" in above.stderr and json.loads(above.stdout)["results"]
    below = mdn(*command, "--columns", "site", "--fail-above", "0.5")
    assert below.returncode == 0 and "PASS" in below.stdout
    wrong = mdn(*command, "--columns", "nope", "--dataset", "features")
    assert wrong.returncode == 2 and "nope" in wrong.stderr and "available columns" in wrong.stderr


def test_help_documents_exit_codes_and_an_example():
    result = mdn("audit", "--help")
    assert result.returncode == 0
    assert "Exit codes" in result.stdout and "--fail-above" in result.stdout and "mdn audit" in result.stdout


def test_gate_judges_the_strata_when_there_are_some():
    """cf follows the label, the features follow the label only: pooled dependence, none within a class."""
    rng = np.random.default_rng(3)
    label = np.repeat([0, 1], 100)
    table = pd.DataFrame({"label": label, "cf": label * 3.0 + rng.normal(size=200)})
    features = label[:, None] * 5.0 + rng.normal(size=(200, 4))
    pooled_only = audit_features(features, table, ["cf"])
    by_label = audit_features(features, table, ["cf"], by="label")
    assert [row.stratum for row in pooled_only.above(0.1)] == [None]
    assert by_label.above(0.1) == []  # the pooled row is reported, but not gated
    assert by_label.rows[0].stratum is None and by_label.rows[0].dcor2 > 0.1
    dependent = table.assign(cf=table["cf"] + features[:, 0])  # now cf also varies with the features within each class
    assert {row.stratum for row in audit_features(features, dependent, ["cf"], by="label").above(0.1)} == {"label=0", "label=1"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_tiles_on_the_gpu_give_the_cpu_numbers():
    rng = np.random.default_rng(5)
    features = rng.normal(size=(300, 8))
    table = pd.DataFrame({"cf": features[:, 0] + rng.normal(size=300)})
    on_cpu = audit_features(features, table, ["cf"], device="cpu").rows[0].dcor2
    assert audit_features(features, table, ["cf"], device="cuda").rows[0].dcor2 == pytest.approx(on_cpu, rel=1e-5)


def test_cuda_without_a_gpu_is_an_input_error(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["features"] = np.random.default_rng(0).normal(size=(20, 3))
    pd.DataFrame({"cf": np.arange(20.0)}).to_csv(tmp_path / "m.csv", index=False)
    result = mdn("audit", tmp_path / "f.h5", tmp_path / "m.csv", "--device", "cuda")
    assert result.returncode == 2 and "--device: CUDA is not available" in result.stderr


def test_pandas_nullable_dtypes_audit_like_their_numpy_twins(rng):
    """Tables built in Python may carry Float64/Int64/string/boolean columns with pd.NA."""
    features = rng.normal(size=(60, 4))
    nullable = pd.DataFrame({
        "age": pd.array([*rng.normal(size=59), None], dtype="Float64"),
        "site": pd.array(["a", "b", "c"] * 19 + ["a", None, "b"], dtype="string"),
        "group": pd.array([1, 2] * 30, dtype="Int64"),
        "flag": pd.array([True, False, False] * 19 + [None, True, True], dtype="boolean"),
    })
    plain = pd.DataFrame({
        "age": nullable["age"].astype(float),
        "site": nullable["site"].astype(object).where(nullable["site"].notna(), None),
        "group": nullable["group"].astype(int),
        "flag": nullable["flag"].astype(object).where(nullable["flag"].notna(), None),
    })
    columns = ["age", "site", "flag"]
    got = audit_features(features, nullable, columns, by="group", test=None).rows
    want = audit_features(features, plain, columns, by="group", test=None).rows
    assert [(r.column, r.stratum, r.kind, r.n, r.n_missing) for r in got] == [(r.column, r.stratum, r.kind, r.n, r.n_missing) for r in want]
    np.testing.assert_allclose([r.dcor2 for r in got], [r.dcor2 for r in want], rtol=1e-12)
    assert sum(r.n_missing for r in got if r.stratum is None) == 3
