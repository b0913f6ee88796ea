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

from tests.helpers import epoch_metrics, first_of, mdn, no_leftovers, ok, run_cli, write_spec


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
        (["refit", run, "-o", run / "checkpoints" / "last.pt"], run / "checkpoints" / "last.pt", "files of run directory"),
        (["refit", run, "--checkpoint", "last", "-o", run / "checkpoints" / "last.pt"], run / "checkpoints" / "last.pt", "is also --checkpoint"),
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


# -- interrupts -------------------------------------------------------------------------------
class SignalInDestructor:
    """Sends ``signum`` to this process from ``__del__``: Python swallows an exception raised there
    ("Exception ignored in ..."), as it did when Ctrl-C landed in h5py's or a DataLoader's cleanup."""

    def __init__(self, signum: int):
        self.signum = signum

    def __del__(self):
        os.kill(os.getpid(), self.signum)
        time.sleep(0.05)  # the handler runs here, inside the destructor


@pytest.fixture
def python_signals():
    """Python's default handlers in this process for the test (pytest may run with SIGINT ignored)."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, handler in before.items():
        signal.signal(s, handler)


def interrupt_on_second_call(monkeypatch, target, name: str, signum: int) -> None:
    original, calls = getattr(target, name), []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            SignalInDestructor(signum)  # dropped at once: the signal arrives inside __del__
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapped)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_during_the_writes_ends_the_command_and_leaves_nothing(study, tmp_path, monkeypatch, python_signals, signum, code):
    import mdn_cli.analysis.extract as extract_module
    import mdn_cli.analysis.pack as pack_module
    import mdn_cli.analysis.residualize as residualize_module
    from mdn_cli.data.features import FeatureFile

    commands = [
        (extract_module, "per_row", ["extract", study / "run", "-l", "fc1", "--split", "all", "--batch-size", "8", "-o", tmp_path / "x.h5", "--meta-out", tmp_path / "x.csv"]),
        (FeatureFile, "chunks", ["residualize", study / "fc1.h5", study / "fc1.csv", "--columns", "cf", "-o", tmp_path / "r.h5", "--save-model", tmp_path / "r.json"]),
    ]
    for target, name, args in commands:
        with monkeypatch.context() as patch:
            interrupt_on_second_call(patch, target, name, signum)
            result = mdn(*args)
        assert result.returncode == code and "interrupted" in result.stderr and "Exception ignored" not in result.stderr, (args[0], result)
    png = copy_png_study(tmp_path)
    with monkeypatch.context() as patch:
        interrupt_on_second_call(patch, pack_module, "_packed_sample", signum)
        result = mdn("pack", png / "mdn.yaml", "-o", tmp_path / "packed")
    assert result.returncode == code, result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["png"], "outputs or temporaries left behind"
    assert residualize_module  # imported so that the patched FeatureFile is the one residualize uses


def test_sigterm_during_training_exits_143_and_the_run_resumes_to_the_same_numbers(study, tmp_path, monkeypatch, python_signals):
    import mdn_cli.train.loop as loop

    spec = write_spec(study, "sigterm.yaml", epochs=3)
    ok("train", spec, "-o", tmp_path / "whole", "-q")
    original, calls = loop.validate, []

    def terminated_in_epoch_two(run):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a scheduler's time limit, during epoch 2's validation
            time.sleep(0.05)
        return original(run)

    with monkeypatch.context() as patch:
        patch.setattr(loop, "validate", terminated_in_epoch_two)
        result = mdn("train", spec, "-o", tmp_path / "run", "-q")
    assert result.returncode == 143 and "--resume" in result.stderr and "Traceback" not in result.stderr, result
    assert [m["epoch"] for m in epoch_metrics(tmp_path / "run")] == [1] and not no_leftovers(tmp_path / "run")
    ok("train", spec, "-o", tmp_path / "run", "-q", "--resume")
    assert epoch_metrics(tmp_path / "run") == epoch_metrics(tmp_path / "whole")


def copy_png_study(tmp_path: Path) -> Path:
    return Path(shutil.copytree(Path(__file__).resolve().parents[2] / "sample_data" / "synthetic_png", tmp_path / "png"))


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write(study, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid with no process: the writer was killed (kill -9 leaves its temporary file)
    stale = tmp_path / f".x.h5.{gone.pid}-abcd.tmp"
    stale.write_bytes(b"half a file")
    alive = tmp_path / f".x.h5.{os.getpid()}-efgh.tmp"  # a writer that is still running keeps its file
    alive.write_bytes(b"being written")
    ok("extract", study / "run", "-l", "fc1", "-o", tmp_path / "x.h5", "-q")
    assert not stale.exists() and alive.exists()
    assert no_leftovers(tmp_path) == [alive]
    alive.unlink()
    stale_folder = tmp_path / f".packed.{gone.pid}-ijkl.tmp"  # `pack` writes a folder
    (stale_folder / "inputs.h5").parent.mkdir()
    (stale_folder / "inputs.h5").write_bytes(b"half a file")
    ok("pack", copy_png_study(tmp_path) / "mdn.yaml", "-o", tmp_path / "packed", "-q")
    assert not stale_folder.exists() and not no_leftovers(tmp_path)


# -- code from configuration ------------------------------------------------------------------
def test_a_factory_outside_the_model_libraries_is_not_imported_unless_trusted(study, tmp_path, monkeypatch):
    pwned = tmp_path / "PWNED"
    spec = write_spec(study, "factory.yaml")
    config = yaml.safe_load(spec.read_text())
    for factory, kwargs in (("os:system", {"command": f"touch {pwned}"}), ("subprocess:run", {"args": ["touch", str(pwned)]}),
                            ("tests.factory_models:tiny_cnn", {}), ("torchvision.io:write_file", {"filename": str(pwned), "data": [1]})):
        config["model"] = {"factory": factory, "kwargs": kwargs}
        spec.write_text(yaml.safe_dump(config))
        refused(mdn("validate", spec), "model.factory", "not trusted", "MDN_TRUST_FACTORY=")
    assert not pwned.exists()
    config["model"] = {"factory": "tests.factory_models:tiny_cnn", "mdn_after": ["head.fc"]}
    config["train"]["monitor"] = "head.fc"
    spec.write_text(yaml.safe_dump(config))
    assert mdn("validate", spec, env={"MDN_TRUST_FACTORY": "tests.factory_models"}).returncode == 0


def test_a_copied_run_directory_never_opts_in(study, tmp_path):
    """A run whose config.yaml and checkpoint (pickle-free, hashes matching) name `os:system`: nothing runs."""
    pwned = tmp_path / "PWNED"
    run = Path(shutil.copytree(study / "run", tmp_path / "run"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["model"] = {"factory": "os:system", "kwargs": {"command": f"touch {pwned}"}}
    text = yaml.safe_dump(config)
    (run / "config.yaml").write_text(text)
    for name in ("best.pt", "last.pt"):
        state = torch.load(run / "checkpoints" / name, weights_only=True)
        state["config"] = text
        torch.save(state, run / "checkpoints" / name)
    for args in (["layers", run], ["extract", run, "-l", "fc1", "-o", tmp_path / "f.h5"], ["evaluate", run]):
        refused(mdn(*args), "model.factory", "not trusted")
    assert not pwned.exists()


# -- non-finite values and settings -------------------------------------------------------------
def test_a_nan_voxel_names_the_file_and_row_id(tmp_path):
    import nibabel as nib

    ok("synth", tmp_path, "--format", "nifti", "--per-group", "6")
    table = pd.read_csv(tmp_path / "meta.csv")
    row = first_of(table, "val")  # a file validate decodes
    path = tmp_path / table["path"][row]
    image = nib.load(path)
    volume = np.asanyarray(image.dataobj).copy()
    volume[3, 4, 5] = np.nan
    nib.save(nib.Nifti1Image(volume, image.affine), path)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "data": {"table": "meta.csv", "path_column": "path", "id_column": "id", "label": "label", "metadata": ["cf"], "split_column": "split"},
        "model": {"layers": [{"type": "flatten"}, {"type": "linear", "out_features": 4, "name": "fc1"}, {"type": "linear", "out_features": 1}]},
        "train": {"task": "binary", "epochs": 1, "batch_size": 4, "monitor": "fc1"}}))
    refused(mdn("validate", spec), f"row id {table['id'][row]}", str(path), "NaN or Inf")


@pytest.mark.parametrize("setting", ["train.lr=.inf", "train.lr=.nan", "mdn.momentum=-.inf", "train.grad_clip=.inf"])
def test_a_non_finite_setting_is_a_spec_error(study, setting):
    refused(mdn("validate", write_spec(study), "--set", setting), setting.split("=")[0], "finite number")


def test_a_diverging_loss_stops_training_and_keeps_the_last_good_epoch(study, tmp_path, monkeypatch):
    spec = write_spec(study, "diverge.yaml", epochs=3)
    refused(mdn("train", spec, "-o", tmp_path / "at_once", "--set", "train.lr=1e20"), "in epoch 1", "diverged", "train.lr")
    assert not (tmp_path / "at_once" / "checkpoints").exists()
    import mdn_cli.train.loop as loop

    original, calls = loop.task_loss, []

    def nan_from_epoch_two(*args, **kwargs):
        fn = original(*args, **kwargs)

        def loss(out, y):
            calls.append(1)
            value = fn(out, y)
            return value * float("nan") if len(calls) > 3 else value  # 72 train rows in batches of 32: epoch 1 is 3 batches
        return loss

    monkeypatch.setattr(loop, "task_loss", nan_from_epoch_two)
    refused(mdn("train", spec, "-o", tmp_path / "later", "-q"), "in epoch 2", "keeps epoch 1")
    assert torch.load(tmp_path / "later" / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1
    assert [m["epoch"] for m in map(json.loads, (tmp_path / "later" / "metrics.jsonl").read_text().splitlines())] == [1]


# -- damaged files --------------------------------------------------------------------------------
def test_damaged_checkpoints_and_models_are_input_errors(study, tmp_path):
    import pickle

    state = torch.load(study / "run" / "checkpoints" / "best.pt", weights_only=True)
    cases = {
        "opcodes.pt": (pickle.dumps({"a": 1}, protocol=0) + b"junk", "can read safely"),
        "shape.pt": ({**state, "sample_shape": ["a", -1]}, "sample_shape is ['a', -1]"),
        "weights.pt": ({**state, "model": {**state["model"], next(k for k in state["model"] if k.endswith("weight")): torch.zeros(3, 3)}}, "size mismatch"),
        "design.pt": ({**state, "design": {"metadata": 3}}, "design matrix is malformed"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content) if isinstance(content, bytes) else torch.save(content, path)
        result = mdn("extract", study / "run", "-l", "fc1", "--checkpoint", path, "-o", tmp_path / "f.h5")
        refused(result, str(path), message)
        assert "weights_only" not in result.stderr and "Re-running" not in result.stderr
    ok("residualize", study / "fc1.h5", study / "fc1.csv", "--columns", "cf", "-o", tmp_path / "r.h5", "--save-model", tmp_path / "m.json")
    model = json.loads((tmp_path / "m.json").read_text())
    for key, value in (("beta", "abc"), ("beta", [[1, "x"]]), ("beta", [[float("nan")]]), ("design", 5), ("design", {"metadata": 3})):
        (tmp_path / "bad.json").write_text(json.dumps({**model, key: value}))
        refused(mdn("residualize", study / "fc1.h5", study / "fc1.csv", "--model", tmp_path / "bad.json", "-o", tmp_path / "r2.h5"), "bad.json")


# -- resources ------------------------------------------------------------------------------------
def test_an_alias_bomb_is_refused_before_the_spec_is_walked(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    spec = tmp_path / "bomb.yaml"
    spec.write_text("\n".join(lines) + "\ndata: *a8\n")
    started = time.perf_counter()
    refused(mdn("validate", spec), "aliases")
    refused(mdn("train", spec, "-o", tmp_path / "run"), "aliases")
    assert time.perf_counter() - started < 30  # unguarded, 8 levels took 200 s and 8.9 GB


def test_a_header_declaring_a_huge_image_is_refused_before_decoding(tmp_path):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = copy_png_study(tmp_path)
    table = pd.read_csv(png / "meta.csv")
    row = first_of(table, "train")
    header = struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0)  # 12000 x 12000 RGB: over Pillow's warning limit, under its error
    (png / table["path"][row]).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    result = run_cli("validate", png / "mdn.yaml")  # a process of its own: what the terminal shows, warnings included
    refused(result, f"row id {table['id'][row]}", "declares a size of 12000x12000")
    assert "decompression bomb" not in result.stderr and "Warning" not in result.stderr


def test_a_directory_named_like_an_image_is_not_called_missing(tmp_path):
    png = copy_png_study(tmp_path)
    table = pd.read_csv(png / "meta.csv")
    target = png / table["path"][5]
    target.unlink()
    target.mkdir()
    result = mdn("validate", png / "mdn.yaml")
    refused(result, "are directories, not files", f"row id {table['id'][5]}")
    assert "missing" not in result.stderr and "not found" not in result.stderr


# -- where nothing but the outputs can be written -------------------------------------------------
def test_evaluate_on_a_run_it_cannot_write_still_scores(study, tmp_path):
    run = Path(shutil.copytree(study / "run", tmp_path / "run"))
    shutil.rmtree(run / "eval", ignore_errors=True)  # (other tests may have evaluated the session run)
    (run / "eval").write_text("not a folder")  # as a read-only run: the kept copy cannot be written (root ignores chmod)
    result = mdn("evaluate", run, "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "not kept in the run" in result.stderr and json.loads(result.stdout)["overall"]
    refused(mdn("pack", copy_png_study(tmp_path) / "mdn.yaml", "-o", run / "eval" / "packed"), "cannot write here")


def test_numbas_cache_goes_where_it_can_be_written(tmp_path):
    from mdn_cli.stats._jit import choose_cache

    blocked = tmp_path / "file"
    blocked.write_text("a file, so nothing can be made under it")
    assert choose_cache(tmp_path / "package", blocked / "user", tmp_path / "tmp") == (True, None)  # numba's own places work
    assert choose_cache(blocked / "package", blocked / "user", tmp_path / "tmp") == (True, tmp_path / "tmp")
    assert choose_cache(blocked / "package", blocked / "user", blocked / "tmp") == (False, None)
    home = tmp_path / "home"
    home.write_text("")
    result = subprocess.run([sys.executable, "-m", "mdn_cli", "audit", tmp_path / "none.h5", "-", "--columns", "cf"], capture_output=True, text=True,
                            env={**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache")})
    assert result.returncode == 2 and "no locator" not in result.stderr and "Traceback" not in result.stderr, result.stderr


# -- several processes -------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_file_that_fails_inside_the_training_processes_is_reported_once(tmp_path):
    png = copy_png_study(tmp_path)
    table = pd.read_csv(png / "meta.csv")
    train_rows = np.flatnonzero(table["split"] == "train")
    row = int(train_rows[len(train_rows) // 2])  # not the first of its split: only the processes read it
    (png / table["path"][row]).write_text("not an image")
    result = subprocess.run([sys.executable, "-m", "mdn_cli", "train", png / "mdn.yaml", "-o", tmp_path / "run", "--nproc", "2", "-q",
                             "--set", "train.epochs=1"], capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, timeout=300)
    refused(result, f"row id {table['id'][row]}")
    assert result.stderr.count("error:") == 1 and "[rank" not in result.stderr, result.stderr


def test_a_step_with_one_required_option_takes_it_bare():
    from mdn_cli.data.transforms import Compose

    for bare, full in (({"resize": 64}, {"resize": {"size": 64}}), ({"center_crop": [24, 20]}, {"center_crop": {"size": [24, 20]}})):
        assert repr(Compose.from_spec([bare])) == repr(Compose.from_spec([full]))
        x = torch.rand(1, 32, 30)
        assert torch.equal(Compose.from_spec([bare])(x), Compose.from_spec([full])(x))
