"""Careless and hostile input, one test per cause: nothing lost, nothing run, no traceback, the culprit named.

Each cause is checked where it applies, through the commands as a user runs them; an input error
exits 2 with one paragraph naming the file, key, column or row id.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.helpers import first_of, mdn, no_leftovers, ok, write_spec


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def refused(result, *fragments: str) -> None:
    """An input error: exit 2, one paragraph naming ``fragments``, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)


@pytest.fixture(scope="module")
def study(tmp_path_factory, synth_data, trained_runs) -> Path:
    """A folder with the session run's copy (``run/``, its spec's data copied beside it) and its fc1 features and table."""
    folder = tmp_path_factory.mktemp("hostile")
    for name in ("images.h5", "meta.csv"):
        shutil.copy(synth_data / name, folder / name)
    shutil.copytree(trained_runs / "mdn", folder / "run")
    config = yaml.safe_load((folder / "run" / "config.yaml").read_text())
    assert Path(config["data"]["table"]).parent == synth_data  # the run's own data is the session's: its table is protected below
    ok("extract", folder / "run", "--layer", "fc1", "--split", "all", "-o", folder / "fc1.h5", "--meta-out", folder / "fc1.csv", "-q")
    return folder


# -- tables -----------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_a_repeated_header_is_an_input_error_wherever_a_table_is_read(study, tmp_path, suffix, sep):
    table = pd.read_csv(study / "fc1.csv")
    swapped = table.assign(cf=table["mf"] if "mf" in table else table["label"])  # the second 'cf' holds another variable, as found
    text = sep.join(["id", "label", "cf", "cf"]) + "\n" + "\n".join(sep.join(map(str, row)) for row in zip(table["id"], table["label"], table["cf"], swapped["cf"]))
    bad = tmp_path / f"dup{suffix}"
    bad.write_text(text + "\n")
    refused(mdn("audit", study / "fc1.h5", bad, "--columns", "cf"), str(bad), "cf more than once")
    refused(mdn("residualize", study / "fc1.h5", bad, "--columns", "cf", "-o", tmp_path / "r.h5"), "cf more than once")
    spec = write_spec(study, "dup_spec.yaml", data={"table": str(bad)})
    for command in ("validate", "train"):
        args = ("-o", tmp_path / "never") if command == "train" else ()
        refused(mdn(command, spec, *args), "cf more than once")
    assert not (tmp_path / "never").exists() and not (tmp_path / "r.h5").exists()


@pytest.mark.parametrize("cell", ["inf", "-inf", "Infinity"])
def test_an_infinite_metadata_cell_is_named_by_row_id(study, tmp_path, cell):
    table = pd.read_csv(study / "meta.csv", dtype={"id": str})
    victim = table["id"].iloc[7]
    text = (study / "meta.csv").read_text().splitlines()
    header = text[0].split(",")
    cells = text[8].split(",")
    cells[header.index("cf")] = cell
    text[8] = ",".join(cells)
    bad = tmp_path / "inf.csv"
    bad.write_text("\n".join(text) + "\n")
    expected = ("column 'cf' holds an infinite value", f"ids/rows {victim}")
    refused(mdn("audit", study / "fc1.h5", bad, "--columns", "cf"), *expected)
    refused(mdn("validate", write_spec(study, "inf_spec.yaml", data={"table": str(bad)})), *expected)
    refused(mdn("evaluate", study / "run", "--inputs", study / "images.h5", "--table", bad), *expected)


def test_a_directory_where_a_table_or_file_is_expected(study, tmp_path):
    refused(mdn("audit", study / "fc1.h5", tmp_path), "is a directory; expected a table file")
    refused(mdn("audit", tmp_path, study / "fc1.csv"), "is a directory; expected an HDF5 file")
    refused(mdn("validate", write_spec(study, "dir_table.yaml", data={"table": str(tmp_path)})), "is a directory")


# -- outputs ----------------------------------------------------------------------------------
def output_cases(study: Path, tmp: Path) -> list[tuple[list, Path, str]]:
    """(command, the file it must not destroy, what the message names) for every output that could land on an input."""
    run, table = study / "run", study / "fc1.csv"
    spec_table = Path(yaml.safe_load((run / "config.yaml").read_text())["data"]["table"])
    return [
        (["audit", study / "fc1.h5", table, "-o", table], table, "is also TABLE"),
        (["audit", study / "fc1.h5", table, "-o", study / "fc1.h5"], study / "fc1.h5", "is also FEATURES.h5"),
        (["evaluate", run, "--predictions", spec_table], spec_table, f"files of run directory {run}"),
        (["evaluate", run, "-o", run / "checkpoints" / "last.pt"], run / "checkpoints" / "last.pt", "files of run directory"),
        (["extract", run, "-l", "fc1", "-o", run / "checkpoints" / "best.pt"], run / "checkpoints" / "best.pt", "is also --checkpoint"),
        (["extract", run, "-l", "fc1", "-o", run / "config.yaml"], run / "config.yaml", "files of run directory"),
        (["extract", run, "-l", "fc1", "--inputs", study / "images.h5", "--table", study / "meta.csv", "-o", study / "images.h5"], study / "images.h5", "is also --inputs"),
        (["extract", run, "-l", "fc1", "-o", tmp / "a.h5", "--meta-out", tmp / "a.h5"], None, "is also -o"),
        (["residualize", study / "fc1.h5", table, "--columns", "cf", "-o", study / "fc1.h5", "--force"], study / "fc1.h5", "is also FEATURES.h5"),
        (["residualize", study / "fc1.h5", table, "--columns", "cf", "-o", tmp / "r.h5", "--save-model", table], table, "is also TABLE"),
        (["report", run, "-o", run / "metrics.jsonl"], run / "metrics.jsonl", "files of run directory"),
    ]


def test_an_output_is_never_an_input_nor_a_file_of_the_run(study, tmp_path):
    for args, kept, message in output_cases(study, tmp_path):
        before = digest(kept) if kept is not None else None
        refused(mdn(*args), message)
        if kept is not None:
            assert digest(kept) == before, args
    assert not (tmp_path / "a.h5").exists()


def test_an_output_that_exists_is_replaced_only_with_force(study, tmp_path):
    out = tmp_path / "f.h5"
    out.write_text("someone's file")
    refused(mdn("extract", study / "run", "-l", "fc1", "-o", out), "exists", "--force")
    refused(mdn("residualize", study / "fc1.h5", study / "fc1.csv", "--columns", "cf", "-o", out), "exists", "--force")
    assert out.read_text() == "someone's file"
    ok("extract", study / "run", "-l", "fc1", "-o", out, "--force", "-q")
    with h5py.File(out) as f:
        assert "features" in f
    ok("audit", study / "fc1.h5", study / "fc1.csv", "--columns", "cf", "-o", tmp_path / "audit.txt")
    ok("audit", study / "fc1.h5", study / "fc1.csv", "--columns", "cf", "-o", tmp_path / "audit.txt")  # reports replace, as `>` does (documented)


# -- the run directory lock -------------------------------------------------------------------
HOLD = """
import sys, time
from mdn_cli.utils.fileio import directory_lock
with directory_lock(sys.argv[1], "training"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_training_on_a_locked_run_directory_stops_and_a_killed_holder_releases_it(study, tmp_path):
    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        spec = write_spec(study, "lock.yaml", epochs=1)
        for args in ((), ("--resume",), ("--folds", "2")):
            refused(mdn("train", spec, "-o", run, "-q", *args), str(run), f"another process (pid {holder.pid})")
    finally:
        holder.kill()  # kill -9: the kernel drops the lock with the process
        holder.wait()
    ok("train", spec, "-o", run, "-q")
    assert (run / "checkpoints" / "last.pt").is_file()


# -- stored arrays ----------------------------------------------------------------------------
def bad_inputs(x: np.ndarray, ids: np.ndarray) -> dict[str, tuple[dict, str]]:
    nan = x.copy()
    nan[5, 0, 3, 3] = np.nan
    return {
        "short ids": ({"x": x, "ids": ids[:-4]}, f"has {len(ids) - 4} ids for {len(ids)} samples"),
        "2-D ids": ({"x": x, "ids": ids.reshape(-1, 2)}, "expected one id per sample"),
        "text x": ({"x": np.array([b"a"] * len(x)), "ids": ids}, "expected numbers"),
        "no rows": ({"x": x[:0], "ids": ids[:0]}, "has no samples"),
        "NaN pixel": ({"x": nan, "ids": ids}, f"holds NaN or Inf in 1 sample(s) (ids {ids[5]})"),
    }


def test_inputs_that_do_not_fit_are_named_by_file_and_dataset(study, tmp_path):
    with h5py.File(study / "images.h5") as f:
        x, ids = f["x"][:], f["ids"][:]
    for name, (datasets, message) in bad_inputs(x, ids).items():
        path = tmp_path / f"{name.replace(' ', '_')}.h5"
        with h5py.File(path, "w") as f:
            for key, value in datasets.items():
                f[key] = value
        spec = write_spec(study, "bad_inputs.yaml", data={"inputs": str(path)})
        refused(mdn("validate", spec), str(path), message)
        refused(mdn("train", spec, "-o", tmp_path / "never"), message)
        refused(mdn("extract", study / "run", "-l", "fc1", "--inputs", path, "--table", study / "meta.csv", "-o", tmp_path / "f.h5"), message)
    assert not (tmp_path / "never").exists() and not (tmp_path / "f.h5").exists()


def test_features_that_do_not_fit_are_named_by_file_and_dataset(study, tmp_path):
    with h5py.File(study / "fc1.h5") as f:
        x, ids = f["features"][:], f["ids"][:]
    cases = {
        "short ids": ({"features": x, "ids": ids[:-3]}, f"has {len(ids) - 3} ids for {len(ids)} samples"),
        "2-D ids": ({"features": x[:100], "ids": ids[:100].reshape(50, 2)}, "expected one id per sample"),
        "text features": ({"features": np.array([b"x"] * len(x)), "ids": ids}, "expected numbers"),
        "no rows": ({"features": x[:0], "ids": ids[:0]}, "has no samples"),
    }
    for name, (datasets, message) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.h5"
        with h5py.File(path, "w") as f:
            for key, value in datasets.items():
                f[key] = value
        refused(mdn("audit", path, study / "fc1.csv", "--columns", "cf"), str(path), message)
        refused(mdn("residualize", path, study / "fc1.csv", "--columns", "cf", "-o", tmp_path / "r.h5"), message)
