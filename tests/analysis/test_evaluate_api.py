"""`evaluate_run`, the Python API of `mdn evaluate`: the JSON the command prints, for a run and for a cross-validation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mdn_cli.analysis.evaluate import evaluate_run
from tests.helpers import ok


def as_written(result: dict):
    """The result as the CLI writes it and a reader gets it back: tuples as lists, None as null, NaN as NaN."""
    return json.loads(json.dumps(result))


def has_nan(value) -> bool:
    if isinstance(value, dict):
        return any(has_nan(v) for v in value.values())
    if isinstance(value, list):
        return any(has_nan(v) for v in value)
    return isinstance(value, float) and math.isnan(value)


def assert_same_json(api: dict, cli: dict) -> None:
    # the text, keys sorted: NaN (which never equals itself) compares as the CLI writes it
    assert json.dumps(api, sort_keys=True) == json.dumps(cli, sort_keys=True)
    if not has_nan(cli):
        assert api == cli


def cli_result(run: Path, *args) -> dict:
    return json.loads(ok("evaluate", run, *args, "--format", "json").stdout)


@pytest.fixture(scope="module")
def runs(trained_runs, crossval_runs) -> dict[str, Path]:
    """The session's MDN run (3 epochs) and 3-fold cross-validation (1 epoch each)."""
    return {"single": trained_runs / "mdn", "crossval": crossval_runs / "cv"}


@pytest.mark.parametrize("split", ["val", "test"])
@pytest.mark.parametrize("kind", ["single", "crossval"])
def test_the_api_gives_the_clis_json(runs, kind, split):
    """A cross-validation: val pools each fold's model on its held-out rows (out of fold); test is the mean ± sd over the folds."""
    api = as_written(evaluate_run(runs[kind], split=split).result)
    cli = cli_result(runs[kind], "--split", split)
    assert_same_json(api, cli)
    if kind == "crossval" and split == "test":  # the rows every fold's model scores: mean ± sd over the folds
        assert api["folds"] == [0, 1, 2] and set(api["overall_sd"]) == set(api["overall"])
    elif kind == "crossval":  # out of fold: each fold's model on its own held-out rows, pooled
        assert "overall_sd" not in api and sorted({row["fold"] for row in api["dcor"]}) == [0, 1, 2]


def test_the_options_are_the_clis(runs):
    """The CLI's options reach the API under evaluate_parts' names (--by, --bins, --bootstrap, --seed, --level, --batch-size)."""
    api = evaluate_run(runs["single"], split="all", by=["cf", "split"], bins=3, n_boot=5, seed=1, level=0.9, batch_size=7).result
    cli = cli_result(runs["single"], "--split", "all", "--by", "cf", "--by", "split", "--bins", 3, "--bootstrap", 5, "--seed", 1,
                     "--level", 0.9, "--batch-size", 7)  # fmt: skip
    assert_same_json(as_written(api), cli)
    assert cli["bootstrap"]["n_boot"] == 5 and {row["column"] for row in cli["by_group"]} == {"cf", "split"}
