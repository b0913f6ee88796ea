"""`mdn layers` and `mdn extract`: names and shapes, features equal to the training loop's, files, errors."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from mdn_cli.analysis.extract import extract
from mdn_cli.model.checkpoint import load_run
from mdn_cli.model.rows import split_source
from mdn_cli.train.monitor import split_metrics
from mdn_cli.train.run import build_run
from mdn_cli.utils.errors import MdnError
from tests.helpers import mdn, no_leftovers, ok


@pytest.fixture(scope="module")
def trained(trained_runs, synth_data) -> Path:
    """The session's MDN run (3 epochs) and baseline run (1 epoch), with their data as ``data/``."""
    if not (trained_runs / "data").exists():
        (trained_runs / "data").symlink_to(synth_data)
    return trained_runs


def test_layers_lists_names_types_shapes_and_mdn(trained):
    rows = {r["name"]: r for r in json.loads(ok("layers", trained / "mdn", "--format", "json").stdout)}
    assert list(rows)[:2] == ["conv1", "mdn_1"]
    assert rows["conv1"] == {"name": "conv1", "type": "Conv2d", "output_shape": [4, 14, 14], "mdn": "mdn_1"}
    assert rows["fc1"]["output_shape"] == [16] and rows["fc1"]["mdn"] == "mdn_5"
    assert rows["mdn_5"]["mdn"] == "is MDN" and rows["out"]["mdn"] is None
    # a spec file works too, and the table names every layer
    table = ok("layers", trained / "data" / "session-baseline.yaml").stdout
    assert "fc1" in table and "Linear" in table and "4x14x14" in table


def test_extracted_features_are_the_training_loops(trained, tmp_path):
    """The features written equal the monitored features `evaluate` gives during training (eval mode, running beta)."""
    out = tmp_path / "fc1.h5"
    summary = json.loads(ok("extract", trained / "mdn", "--layer", "fc1", "-o", out, "--checkpoint", "last", "--format", "json").stdout)
    assert summary["datasets"] == {"features": [24, 16]}
    loaded = load_run(trained / "mdn", "last")
    run = build_run(loaded.spec)  # the training code's own rebuild, with the checkpoint's weights
    run.network.load_state_dict(loaded.state["model"])
    _, expected = split_metrics(run, "val", capture="fc1")
    with h5py.File(out) as f:
        np.testing.assert_allclose(f["features"][:], expected, rtol=1e-5, atol=1e-6)
        val_ids = run.data.table.iloc[run.data.splits["val"]]["id"].to_numpy()
        assert [str(i) for i in f["ids"][:]] == [str(i) for i in val_ids]  # the table reads ids as text


def test_file_is_self_describing_chunked_and_paired_with_meta(trained, tmp_path):
    out, meta = tmp_path / "f.h5", tmp_path / "meta.csv"
    ok("extract", trained / "mdn", "-l", "fc1", "-l", "conv1", "--split", "train", "-o", out, "--meta-out", meta, "--batch-size", 7)
    with h5py.File(out) as f:
        fc1, conv1 = f["features/fc1"], f["features/conv1"]
        assert fc1.shape == (72, 16) and conv1.shape == (72, 4 * 14 * 14) and fc1.dtype == np.float32
        assert fc1.compression == "gzip" and fc1.chunks is not None
        assert list(conv1.attrs["sample_shape"]) == [4, 14, 14] and bool(conv1.attrs["after_mdn"])
        attrs = dict(f.attrs)
        ids = f["ids"][:]
    assert list(attrs["layers"]) == ["fc1", "conv1"] and attrs["source"] == "split=train"
    assert attrs["checkpoint"].endswith("best.pt") and attrs["spec_hash"] and attrs["tool"].startswith("mdn ")
    table = pd.read_csv(meta)
    assert list(table.columns) == ["id", "label", "cf"] and list(table["id"]) == list(ids)
    original = pd.read_csv(trained / "data" / "meta.csv").set_index("id").loc[ids]
    np.testing.assert_allclose(table["cf"], original["cf"])
    assert not no_leftovers(tmp_path)


def test_new_data_gives_the_same_features_as_the_split(trained, tmp_path):
    data = trained / "data"
    ok("extract", trained / "mdn", "-l", "fc1", "--split", "all", "-o", tmp_path / "all.h5")
    # new data: the same images in another order, the table without label (MDN needs only the metadata)
    table = pd.read_csv(data / "meta.csv").drop(columns=["label", "split"]).iloc[::-1]
    table.to_csv(tmp_path / "new.csv", index=False)
    ok("extract", trained / "mdn", "-l", "fc1", "--inputs", data / "images.h5", "--table", tmp_path / "new.csv", "-o", tmp_path / "new.h5")
    with h5py.File(tmp_path / "all.h5") as a, h5py.File(tmp_path / "new.h5") as b:
        np.testing.assert_allclose(a["features"][:], b["features"][:], rtol=1e-5, atol=1e-6)
        assert b.attrs["source"] == str(data / "images.h5")


def test_new_data_needs_no_training_data(trained, tmp_path):
    """A run copied elsewhere, its training data gone: new data is still extracted, identically, and its layers listed."""
    import shutil

    data = (trained / "data").resolve()
    moved = tmp_path / "moved"
    shutil.copytree(data, moved)
    shutil.copytree(trained / "mdn", tmp_path / "run")
    ok("extract", tmp_path / "run", "-l", "fc1", "--inputs", moved / "images.h5", "--table", moved / "meta.csv", "-o", tmp_path / "before.h5")
    layers_before = ok("layers", tmp_path / "run", "--format", "json").stdout
    config = (tmp_path / "run" / "config.yaml").read_text()
    assert str(data / "images.h5") in config  # the run still names the original data ...
    (moved / "images.h5").rename(moved / "new.h5")
    shutil.copy(moved / "meta.csv", moved / "new.csv")
    hidden = trained.parent / (trained.name + "-hidden")
    data.rename(hidden)  # ... which is gone now
    try:
        ok("extract", tmp_path / "run", "-l", "fc1", "--inputs", moved / "new.h5", "--table", moved / "new.csv", "-o", tmp_path / "after.h5")
        missing = mdn("extract", tmp_path / "run", "-l", "fc1", "--split", "val", "-o", tmp_path / "val.h5")
        layers_after = ok("layers", tmp_path / "run", "--format", "json").stdout
    finally:
        hidden.rename(data)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr  # a split does need the run's own data
    assert layers_after == layers_before and '"conv1"' in layers_after
    with h5py.File(tmp_path / "before.h5") as a, h5py.File(tmp_path / "after.h5") as b:
        np.testing.assert_array_equal(a["features"][:], b["features"][:])


def test_table_without_metadata_is_an_error(trained, tmp_path):
    data = trained / "data"
    pd.read_csv(data / "meta.csv").drop(columns=["cf"]).to_csv(tmp_path / "nocf.csv", index=False)
    out = tmp_path / "x.h5"
    result = mdn("extract", trained / "mdn", "-l", "fc1", "--inputs", data / "images.h5", "--table", tmp_path / "nocf.csv", "-o", out, "--meta-out", tmp_path / "m.csv")
    assert result.returncode == 2
    assert "no metadata column(s) 'cf'" in result.stderr and "nocf.csv" in result.stderr
    assert not out.exists() and not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["{t}/nowhere", "-l", "fc1"], "no such run directory"),
        (["{t}/mdn", "-l", "fc2"], "has no layer 'fc2'. Hint: did you mean `fc1`"),
        (["{t}/mdn", "-l", "fc1", "--checkpoint", "{t}/baseline/checkpoints/best.pt"], "trained from another spec"),
        (["{t}/mdn", "-l", "fc1", "--checkpoint", "middle"], "checkpoint not found"),
        (["{t}/mdn", "-l", "fc1", "--split", "holdout"], "unknown split 'holdout'"),
        (["{t}/mdn", "-l", "fc1", "--inputs", "{t}/data/images.h5"], "--inputs and --table go together"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(trained, tmp_path, args, message):
    out = tmp_path / "out.h5"
    result = mdn("extract", *[a.format(t=trained) for a in args], "-o", out, "--meta-out", tmp_path / "m.csv")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output(trained, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = mdn("extract", trained / "mdn", "-l", "fc1", "-o", blocker / "f.h5")
    assert result.returncode == 2 and "cannot write here" in result.stderr


def test_interrupted_extract_leaves_no_file(trained, tmp_path):
    loaded = load_run(trained / "mdn")
    source = split_source(loaded, "all")
    batches = source.batches

    def interrupted(size):
        for i, batch in enumerate(batches(size)):
            if i == 2:
                raise KeyboardInterrupt
            yield batch

    source.batches = interrupted
    with pytest.raises(KeyboardInterrupt):
        extract(loaded, ["fc1"], source, tmp_path / "f.h5", meta_out=tmp_path / "m.csv", batch_size=10)
    assert list(tmp_path.iterdir()) == []


def test_batches_are_streamed_in_order(trained, tmp_path):
    """Each batch is written as it comes (progress after every batch) at its place: the rows come out
    in the source's order, each with its own features; and the grad mode is restored."""
    loaded = load_run(trained / "mdn")
    source = split_source(loaded, "all")
    seen = []
    out = tmp_path / "f.h5"
    extract(loaded, ["fc1"], source, out, batch_size=16, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(min(k, 120), 120) for k in range(16, 121 + 15, 16)]  # 8 batches, the last one of 8 rows
    # the reference, computed apart: the training code's rebuild scores each split in one pass, and
    # each split's rows go back to their places in the file
    run = build_run(loaded.spec)
    run.network.load_state_dict(loaded.state["model"])
    expected = np.full((120, 16), np.nan)
    for split in ("train", "val", "test"):
        rows = run.data.splits[split]
        expected[rows] = split_metrics(run, split, capture="fc1", batch_size=len(rows))[1]
    assert not np.isnan(expected).any()
    with h5py.File(trained / "data" / "images.h5") as f:
        file_ids = [str(i) for i in f["ids"][:]]
    with h5py.File(out) as f:
        assert [str(i) for i in f["ids"][:]] == file_ids == [str(i) for i in run.data.table["id"]]
        features = f["features"][:]
    for row in range(120):  # row by row: a batch written at another place, or rows shuffled inside one, fail here
        np.testing.assert_allclose(features[row], expected[row], rtol=1e-5, atol=1e-6, err_msg=f"row {row} (id {file_ids[row]})")
    assert len({features[row].tobytes() for row in range(120)}) == 120  # distinct rows: the order is visible
    with pytest.raises(MdnError, match="no layer given"):
        extract(loaded, [], source, tmp_path / "g.h5")
    assert torch.is_grad_enabled()


def test_memory_does_not_hold_features(trained, tmp_path, monkeypatch):
    """Every batch of features is freed once it is written: at most one batch is alive at any time.

    Each array handed to HDF5 is tracked by a weak reference; when the next batch is written,
    every earlier one must be gone (nothing keeps features of past batches), so memory does not
    grow with n x d. (benchmarks/extract.py measures the process's peak memory at 100,000 rows.)
    """
    import weakref

    written, alive_at_write = [], []
    original = h5py.Dataset.__setitem__

    def tracking(self, key, value):
        if self.name.startswith("/features"):
            alive_at_write.append(sum(ref() is not None for ref in written))
            array = np.asarray(value)
            written.append(weakref.ref(array.base if array.base is not None else array))
        return original(self, key, value)

    monkeypatch.setattr(h5py.Dataset, "__setitem__", tracking)
    loaded = load_run(trained / "mdn")
    extract(loaded, ["conv1"], split_source(loaded, "all"), tmp_path / "f.h5", batch_size=8)
    assert len(written) == 15  # 120 rows in batches of 8
    assert max(alive_at_write) <= 1  # only the batch just written before, if the writer still holds it
    assert all(ref() is None for ref in written[:-1])


def test_an_unknown_layer_lists_the_layers_and_names_what_the_user_gave(trained, tmp_path):
    result = mdn("extract", trained / "mdn", "--layer", "nosuchlayer", "-o", tmp_path / "f.h5")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--layer: the model has no layer 'nosuchlayer'" in result.stderr
    assert "the model's layers are: conv1, mdn_1, relu_2, flatten_3, fc1" in result.stderr  # no name is close: the names themselves
    assert f"`mdn layers {trained / 'mdn'}`" in result.stderr and "SPEC" not in result.stderr
    near = mdn("extract", trained / "mdn", "--layer", "fc2", "-o", tmp_path / "f.h5")
    assert near.returncode == 2 and "did you mean `fc1`" in near.stderr
    assert not (tmp_path / "f.h5").exists()
