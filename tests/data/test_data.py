"""Tables, HDF5 rows, joins, splits and targets: every mismatch is an MdnError that names it."""

from __future__ import annotations

import io
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

import mdn_cli.data.h5 as h5
from mdn_cli.data.h5 import H5Rows, read_ids
from mdn_cli.data.synthetic import write_dataset
from mdn_cli.data.tables import align_table, read_table
from mdn_cli.data.training import _splits, _targets, load_training_data
from mdn_cli.config import load_spec
from mdn_cli.utils.errors import MdnError


# -- read_table --------------------------------------------------------------------------------
def test_read_table_from_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("id,label,cf\n1,0,2.5\n2,1,3.5\n"))
    table = read_table("-")
    assert list(table.columns) == ["id", "label", "cf"]
    assert table["cf"].tolist() == [2.5, 3.5]


def test_read_table_from_path(tmp_path):
    path = tmp_path / "meta.csv"
    path.write_text("id,site\na,x\nb,y\n")
    assert read_table(path)["site"].tolist() == ["x", "y"]


def test_read_table_errors(tmp_path, monkeypatch):
    with pytest.raises(MdnError, match="file not found") as info:
        read_table(tmp_path / "nope.csv")
    assert str(tmp_path / "nope.csv") in str(info.value)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(MdnError, match="not a readable CSV table") as info:
        read_table("-")
    assert info.value.where == "stdin"


# -- H5Rows ------------------------------------------------------------------------------------
@pytest.mark.parametrize("in_memory", [True, False])
def test_take_unsorted_rows(make_h5, monkeypatch, in_memory):
    values = np.arange(10 * 2 * 3, dtype=np.float64).reshape(10, 2, 3)
    path = make_h5(x=values)
    if not in_memory:
        monkeypatch.setattr(h5, "IN_MEMORY_LIMIT", 0)
    rows = H5Rows(path, "x")
    assert (rows._memory is not None) == in_memory
    assert len(rows) == 10 and rows.shape == (10, 2, 3)
    for order in ([7, 2, 9, 0], [5], [3, 3, 1], list(range(9, -1, -1)), []):
        got = rows.take(np.array(order, dtype=np.int64))
        assert got.dtype == np.float32
        assert got.shape == (len(order), 2, 3)
        np.testing.assert_array_equal(got, values[order].astype(np.float32))
    np.testing.assert_array_equal(rows.take([4, 1]), values[[4, 1]].astype(np.float32))  # a plain list


def test_h5rows_errors(make_h5, tmp_path):
    path = make_h5(x=np.zeros((4, 2)), other=np.zeros(3))
    with pytest.raises(MdnError, match=r"no dataset 'images' \(has: other, x\)"):
        H5Rows(path, "images")
    with pytest.raises(MdnError, match=r"inputs.h5:other: has shape \(3,\)"):
        H5Rows(path, "other")
    not_h5 = tmp_path / "table.csv"
    not_h5.write_text("a,b\n1,2\n")
    with pytest.raises(MdnError, match="cannot open as HDF5"):
        H5Rows(not_h5, "x")


def test_read_ids_decodes_strings(make_h5):
    path = make_h5(x=np.zeros((2, 1)), ids=np.array([b"s1", b"s2"]))
    assert read_ids(path, "ids", 2).tolist() == ["s1", "s2"]
    assert read_ids(path, "missing", 2) is None


# -- align_table -------------------------------------------------------------------------------
@pytest.fixture
def table() -> pd.DataFrame:
    return pd.DataFrame({"id": [10, 11, 12, 13, 14], "label": [0, 1, 0, 1, 1], "cf": [1.0, 2.0, 3.0, 4.0, 5.0]})


def test_join_by_id_in_any_order(table):
    ids = np.array([13, 10, 14, 12, 11])
    aligned = align_table(table.sample(frac=1, random_state=3), ids, "id", 5, "meta.csv", "images.h5")
    assert aligned["id"].tolist() == ids.tolist()
    assert aligned["cf"].tolist() == [4.0, 1.0, 5.0, 3.0, 2.0]
    assert aligned.index.tolist() == [0, 1, 2, 3, 4]


def test_join_string_ids_against_numeric_column(table):
    aligned = align_table(table, np.array(["12", "10"]), "id", 2, "meta.csv", "images.h5")
    assert aligned["cf"].tolist() == [3.0, 1.0]  # extra table rows are allowed


def test_join_missing_ids_named(table):
    with pytest.raises(MdnError) as info:
        align_table(table, np.array([10, 99, 11, 98]), "id", 4, "meta.csv", "images.h5:x")
    message = str(info.value)
    assert message.startswith("meta.csv: 2 id(s) of images.h5:x are not in column 'id': 99, 98.")


def test_join_duplicate_table_ids_named(table):
    dup = pd.concat([table, table.iloc[[2]]], ignore_index=True)
    with pytest.raises(MdnError, match=r"id column 'id' has duplicate ids: 12\."):
        align_table(dup, np.array([10, 11, 12]), "id", 3, "meta.csv", "images.h5")


def test_join_duplicate_input_ids_named(table):
    with pytest.raises(MdnError, match=r"images.h5 has duplicate ids: 11\."):
        align_table(table, np.array([10, 11, 11]), "id", 3, "meta.csv", "images.h5")


def test_join_without_ids_dataset_or_column(table):
    with pytest.raises(MdnError, match="images.h5 has no ids dataset to join on 'id'"):
        align_table(table, None, "id", 5, "meta.csv", "images.h5")
    with pytest.raises(MdnError, match="no id column 'subject'") as info:
        align_table(table, np.arange(5), "subject", 5, "meta.csv", "images.h5")
    assert "id, label, cf" in str(info.value)


def test_row_order_needs_equal_counts(table):
    aligned = align_table(table.iloc[::-1], None, None, 5, "meta.csv", "images.h5")
    assert aligned["id"].tolist() == [14, 13, 12, 11, 10]
    with pytest.raises(MdnError) as info:
        align_table(table, None, None, 7, "meta.csv", "images.h5")
    message = str(info.value)
    assert "the table has 5 rows but images.h5 has 7" in message
    assert message.startswith("meta.csv:") and "id column" in message


# -- splits and targets ------------------------------------------------------------------------
def test_splits_from_column():
    table = pd.DataFrame({"split": ["train", "val", "train", "test", "val", "train"]})
    splits = _splits(table, "split", 0.2, 0, "meta.csv")
    assert splits["train"].tolist() == [0, 2, 5]
    assert splits["val"].tolist() == [1, 4]
    assert splits["test"].tolist() == [3]


def test_split_column_errors():
    with pytest.raises(MdnError, match=r"split column 'split' has value\(s\) training, valid"):
        _splits(pd.DataFrame({"split": ["train", "training", "valid"]}), "split", 0.2, 0, "m.csv")
    with pytest.raises(MdnError, match="split column 'split' leaves no 'val' rows"):
        _splits(pd.DataFrame({"split": ["train", "test"]}), "split", 0.2, 0, "m.csv")


def test_seeded_val_fraction_split():
    table = pd.DataFrame({"a": range(50)})
    first = _splits(table, None, 0.2, 7, "m.csv")
    again = _splits(table, None, 0.2, 7, "m.csv")
    other = _splits(table, None, 0.2, 8, "m.csv")
    assert len(first["val"]) == 10 and len(first["train"]) == 40 and len(first["test"]) == 0
    assert sorted(np.concatenate([first["train"], first["val"]]).tolist()) == list(range(50))
    np.testing.assert_array_equal(first["val"], again["val"])
    assert first["val"].tolist() != other["val"].tolist()
    assert len(_splits(pd.DataFrame({"a": range(3)}), None, 0.01, 0, "m.csv")["val"]) == 1


def test_targets_by_task():
    binary, classes = _targets(pd.Series(["yes", "no", "yes"]), "binary", "y", "m.csv")
    assert classes == ["no", "yes"] and binary.dtype == torch.float32 and binary.tolist() == [1.0, 0.0, 1.0]
    multi, classes = _targets(pd.Series([2, 0, 1, 2]), "multiclass", "y", "m.csv")
    assert classes == [0, 1, 2] and multi.dtype == torch.long and multi.tolist() == [2, 0, 1, 2]
    reg, classes = _targets(pd.Series([0.5, 1.5]), "regression", "y", "m.csv")
    assert classes == [] and reg.tolist() == [0.5, 1.5]


def test_target_errors():
    with pytest.raises(MdnError, match=r"label column 'y' has a single class \(1\)"):
        _targets(pd.Series([1, 1, 1]), "binary", "y", "m.csv")
    with pytest.raises(MdnError, match="has 3 classes, but train.task is binary") as info:
        _targets(pd.Series([0, 1, 2]), "binary", "y", "m.csv")
    assert "multiclass" in str(info.value)
    with pytest.raises(MdnError, match="not numeric, but train.task is regression"):
        _targets(pd.Series(["a", "b"]), "regression", "y", "m.csv")


# -- write_dataset and the whole loading path --------------------------------------------------
def small_set(rng, n: int = 24) -> tuple[np.ndarray, pd.DataFrame]:
    inputs = rng.normal(size=(n, 1, 4, 4)).astype(np.float32)
    table = pd.DataFrame(
        {
            "id": [f"s{i:02d}" for i in range(n)],
            "label": np.tile([0, 1], n // 2),
            "cf": rng.normal(size=n),
            "site": rng.choice(["a", "b"], n),
            "split": ["train"] * (n - 8) + ["val"] * 6 + ["test"] * 2,
        }
    )
    return inputs, table


def test_write_dataset_round_trip(tmp_path, rng):
    inputs, table = small_set(rng)
    h5_path, csv_path = write_dataset(tmp_path / "out", inputs, table)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["images.h5", "meta.csv"]  # no temp files left
    rows = H5Rows(h5_path, "x")
    np.testing.assert_array_equal(rows.take(np.arange(len(inputs))), inputs)
    ids = read_ids(h5_path, "ids", len(inputs))
    assert ids.tolist() == table["id"].tolist()
    back = read_table(csv_path)
    aligned = align_table(back.iloc[::-1], ids, "id", len(rows), str(csv_path), str(h5_path))
    pd.testing.assert_frame_equal(aligned, table)


def write_spec(directory, text: str):
    path = directory / "spec.yaml"
    path.write_text(textwrap.dedent(text))
    return path


SPEC = """\
    data:
      inputs: out/images.h5
      table: out/meta.csv
      id_column: id
      label: label
      metadata: [cf, site]
      split_column: split
    model:
      layers:
        - {type: flatten}
        - {type: linear, out_features: 1}
    mdn:
      preserve: [label]
    train:
      task: binary
      batch_size: 5
"""


def test_load_training_data_end_to_end(tmp_path, rng):
    inputs, table = small_set(rng)
    order = rng.permutation(len(table))
    write_dataset(tmp_path / "out", inputs[order], table.iloc[order].reset_index(drop=True))
    table.sample(frac=1, random_state=1).to_csv(tmp_path / "out" / "meta.csv", index=False)  # table in another order
    spec = load_spec(write_spec(tmp_path, SPEC))

    loaded = load_training_data(spec, seed=0)

    assert loaded.table["id"].tolist() == table["id"].iloc[order].tolist()  # aligned to the input rows
    assert loaded.sample_shape == (1, 4, 4) and loaded.num_outputs == 1
    assert loaded.classes == [0, 1]
    assert loaded.design.column_names == ["label", "cf", "site=b", "intercept"]
    train = loaded.splits["train"]
    assert len(train) == 16 and len(loaded.splits["val"]) == 6 and len(loaded.splits["test"]) == 2
    assert set(loaded.table["split"].iloc[train]) == {"train"}
    cf_train = loaded.table["cf"].iloc[train]
    np.testing.assert_allclose(loaded.design_rows[:, 1].numpy(), (loaded.table["cf"] - cf_train.mean()) / cf_train.std(ddof=0), atol=1e-6)
    batches = list(loaded.batches("train", 5, shuffle_seed=3))
    assert [len(b[0]) for b in batches] == [5, 5, 5, 1]  # the last partial batch is kept
    rows, x, design, y = batches[-1]
    np.testing.assert_array_equal(x.numpy(), inputs[order][rows])
    np.testing.assert_array_equal(y.numpy(), loaded.table["label"].iloc[rows].to_numpy(np.float32))
    assert design.shape == (1, 4)
    assert sorted(np.concatenate([b[0] for b in batches]).tolist()) == sorted(train.tolist())


def test_load_training_data_reports_nan_in_used_column(tmp_path, rng):
    inputs, table = small_set(rng)
    table.loc[[3, 5], "cf"] = np.nan
    write_dataset(tmp_path / "out", inputs, table)
    spec = load_spec(write_spec(tmp_path, SPEC))
    with pytest.raises(MdnError, match=r"column 'cf' is empty in 2 row\(s\) \(ids/rows s03, s05\)"):
        load_training_data(spec, seed=0)


def test_load_training_data_reports_missing_ids(tmp_path, rng):
    inputs, table = small_set(rng)
    write_dataset(tmp_path / "out", inputs, table)
    table.drop(index=[4]).to_csv(tmp_path / "out" / "meta.csv", index=False)
    spec = load_spec(write_spec(tmp_path, SPEC))
    with pytest.raises(MdnError, match=r"1 id\(s\) of .*images.h5:x are not in column 'id': s04\."):
        load_training_data(spec, seed=0)


def test_val_fraction_that_leaves_no_train_rows_is_an_error():
    with pytest.raises(MdnError, match="leaves no 'train' rows"):
        _splits(pd.DataFrame({"a": [1]}), None, 0.5, 0, "meta.csv")
