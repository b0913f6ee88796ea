"""`mdn audit --given / --ci / --cluster / --permute-within` end to end, and their input errors."""

from __future__ import annotations

import json

import dcor
import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import mdn, ok


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Features with ids that follow cf and age; cf follows age; subjects of 4 rows, 3 sites."""
    rng = np.random.default_rng(31)
    n = 96
    folder = tmp_path_factory.mktemp("science")
    age = rng.normal(size=n)
    cf = age + rng.normal(size=n)
    features = np.c_[cf + age, rng.normal(size=(n, 3))]
    ids = np.arange(n) + 500
    with h5py.File(folder / "features.h5", "w") as handle:
        handle["features"] = features
        handle["ids"] = ids
    table = pd.DataFrame({"id": ids, "cf": cf, "age": age, "label": rng.integers(0, 2, n),
                          "site": rng.choice(["a", "b", "c"], n), "subject": np.repeat(np.arange(n // 4), 4),
                          "unique": np.arange(n), "constant": np.ones(n)})  # fmt: skip
    table.to_csv(folder / "meta.csv", index=False)
    return folder, features, table


def _audit_json(study, *args):
    folder, _, _ = study
    return json.loads(ok("audit", folder / "features.h5", folder / "meta.csv", "--float64", "--format", "json", *args).stdout)


def test_cli_given_adds_partial_rows_that_match_dcor(study):
    _, features, table = study
    report = _audit_json(study, "--columns", "cf", "--given", "age", "--by", "label")
    rows = {(row["given"], row["stratum"]): row for row in report["results"]}
    assert set(rows) == {(None, None), (None, "label=0"), (None, "label=1"), ("age", None), ("age", "label=0"), ("age", "label=1")}
    cf, age = table["cf"].to_numpy(), table["age"].to_numpy()
    assert rows["age", None]["dcor2"] == pytest.approx(dcor.partial_distance_correlation(features, cf, age), rel=1e-8)
    one = table["label"].to_numpy() == 1
    assert rows["age", "label=1"]["dcor2"] == pytest.approx(dcor.partial_distance_correlation(features[one], cf[one], age[one]), rel=1e-8)
    assert report["settings"]["given"] == ["age"] and "ci_low" not in report["results"][0]


def test_cli_intervals_by_rows_and_by_clusters(study):
    report = _audit_json(study, "--columns", "cf", "--given", "age", "--ci", "0.9")
    assert report["settings"]["ci"] == 0.9 and report["settings"]["ci_method"] == "jackknife"
    for row in report["results"]:
        assert row["ci_method"] == "jackknife" and row["ci_low"] < row["dcor2"] < row["ci_high"]
    clustered = _audit_json(study, "--columns", "cf", "--ci", "0.9", "--cluster", "subject")
    (row,) = clustered["results"]
    assert row["ci_method"] == "cluster jackknife (24 clusters)" and "given" not in row
    assert row["dcor2"] == pytest.approx(report["results"][0]["dcor2"], rel=1e-12)


def test_cli_markdown_shows_given_and_interval_and_the_method(study):
    folder, _, _ = study
    text = ok("audit", folder / "features.h5", folder / "meta.csv", "--columns", "cf", "--given", "site", "--ci", "0.95",
              "--format", "markdown").stdout  # fmt: skip
    assert "| column | given | kind |" in text and "0.95 interval" in text
    assert "| cf | site | numeric | all |" in text and "jackknife" in text and "partial dcor²" in text


def test_cli_permutations_within_blocks(study):
    report = _audit_json(study, "--columns", "cf", "--test", "permutation", "--permutations", "49", "--permute-within", "site")
    # cf shapes the features within every site: no within-site shuffle reaches the observed dcor²
    assert report["settings"]["permute_within"] == "site" and report["results"][0]["pvalue"] == pytest.approx(1 / 50)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--columns", "cf,age", "--given", "age"], "--given age is an audited column"),
        (["--columns", "cf", "--by", "label", "--given", "label"], "--given label is the --by column"),
        (["--columns", "cf", "--given", "constant"], "--given constant is constant"),
        (["--columns", "cf", "--given", "nope"], "no column nope"),
        (["--columns", "cf", "--test", "permutation", "--permute-within", "unique"], "all 96 blocks have a single row"),
        (["--columns", "cf", "--ci", "1.5"], "--ci 1.5 is not a confidence level"),
        (["--columns", "cf", "--ci", "0"], "--ci 0 is not a confidence level"),
        (["--columns", "cf", "--cluster", "subject"], "add --ci LEVEL"),
        (["--columns", "cf", "--permute-within", "site"], "add --test permutation"),
        (["--columns", "cf", "--given", "age", "--test", "t"], "--test t has no partial version"),
    ],
    ids=["given audited", "given by", "given constant", "given unknown", "blocks of one", "ci above 1", "ci 0",
         "cluster without ci", "blocks without a permutation test", "t-test with given"],
)
def test_cli_bad_science_options_exit_2_with_the_problem_named(study, args, message):
    folder, _, _ = study
    result = mdn("audit", folder / "features.h5", folder / "meta.csv", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr


def test_cli_cuda_without_a_gpu_is_named_and_auto_falls_back(study):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    folder, _, _ = study
    result = mdn("audit", folder / "features.h5", folder / "meta.csv", "--columns", "cf", "--device", "cuda")
    assert result.returncode == 2 and "CUDA is not available" in result.stderr
    ok("audit", folder / "features.h5", folder / "meta.csv", "--columns", "cf", "--device", "auto", "--ci", "0.9")
