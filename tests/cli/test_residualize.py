"""`mdn residualize`: the whole-set MDN regression against numpy lstsq, its properties, saved models, errors."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from mdn_cli.data.features import open_features
from mdn_cli.analysis.residualize import Residualizer, fit
from tests.helpers import mdn, ok


def make_set(folder: Path, rng, n: int = 300, d: int = 6, name: str = "f") -> tuple[Path, Path, np.ndarray]:
    """Features with a label effect, a numeric confounder, a 3-level site and noise; ids shuffled vs the table."""
    label = rng.integers(0, 2, n)
    age = rng.normal(50, 10, n)
    site = rng.choice(["a", "b", "c"], n)
    y = (
        np.outer(label, rng.normal(size=d)) * 2
        + np.outer(age, rng.normal(size=d)) * 0.1
        + np.outer(site == "b", rng.normal(size=d))
        + rng.normal(size=(n, d))
        + 3.0
    ).astype(np.float32)
    ids = np.arange(1000, 1000 + n)
    with h5py.File(folder / f"{name}.h5", "w") as f:
        f["features"] = y
        f["ids"] = ids
    table = pd.DataFrame({"id": ids, "label": label, "age": age, "site": site, "split": np.where(np.arange(n) % 4 == 0, "val", "train")})
    table.sample(frac=1, random_state=0).to_csv(folder / f"{name}.csv", index=False)
    return folder / f"{name}.h5", folder / f"{name}.csv", y


def design_of(table: pd.DataFrame) -> np.ndarray:
    """An independent encoding: [label, age standardised | site=b, site=c one-hot | 1]."""
    label, age = ((table[c] - table[c].mean()) / table[c].std(ddof=0) for c in ("label", "age"))
    return np.column_stack([label, age, table["site"] == "b", table["site"] == "c", np.ones(len(table))]).astype(float)


def read(path: Path) -> np.ndarray:
    with h5py.File(path) as f:
        return f["features"][:].astype(np.float64)


def test_whole_set_matches_lstsq_and_leaves_no_metadata_effect(tmp_path, rng):
    h5, csv, y = make_set(tmp_path, rng)
    ok("residualize", h5, csv, "--columns", "age,site", "--preserve", "label", "-o", tmp_path / "clean.h5", "--save-model", tmp_path / "m.json")
    table = pd.read_csv(csv).set_index("id").loc[np.arange(1000, 1300)].reset_index()
    x = design_of(table)
    beta, *_ = np.linalg.lstsq(x, y.astype(np.float64), rcond=None)
    model = Residualizer.load(tmp_path / "m.json")
    assert model.design.column_names == ["label", "age", "site=b", "site=c", "intercept"]
    np.testing.assert_allclose(model.beta, beta, rtol=1e-9, atol=1e-9)
    clean = read(tmp_path / "clean.h5")
    np.testing.assert_allclose(clean, y - x[:, 1:] @ beta[1:], atol=1e-5)
    # the property: regressing the clean features on the design again gives ~0 for metadata and
    # intercept, and the label's coefficient is untouched
    again, *_ = np.linalg.lstsq(x, clean, rcond=None)
    assert np.abs(again[1:]).max() < 1e-5
    np.testing.assert_allclose(again[0], beta[0], atol=1e-5)


def test_fit_on_train_rows_applies_to_all(tmp_path, rng):
    h5, csv, y = make_set(tmp_path, rng)
    ok("residualize", h5, csv, "--columns", "age,site", "--preserve", "label", "--fit-on", "split=train", "-o", tmp_path / "clean.h5", "--save-model", tmp_path / "m.json")
    table = pd.read_csv(csv).set_index("id").loc[np.arange(1000, 1300)].reset_index()
    train = (table["split"] == "train").to_numpy()
    # standardised with the train rows' statistics, as the MDN layer does
    label, age = ((table[c] - table[c][train].mean()) / table[c][train].std(ddof=0) for c in ("label", "age"))
    x = np.column_stack([label, age, table["site"] == "b", table["site"] == "c", np.ones(len(table))]).astype(float)
    beta, *_ = np.linalg.lstsq(x[train], y[train].astype(np.float64), rcond=None)
    np.testing.assert_allclose(read(tmp_path / "clean.h5"), y - x[:, 1:] @ beta[1:], atol=1e-5)
    model = json.loads((tmp_path / "m.json").read_text())
    assert model["info"]["n_fit"] == int(train.sum()) and model["info"]["fit_on"] == "split=train"


def test_saved_model_applies_to_new_files_and_rejects_unseen_levels(tmp_path, rng):
    h5, csv, _ = make_set(tmp_path, rng)
    ok("residualize", h5, csv, "--columns", "age,site", "--preserve", "label", "-o", tmp_path / "a.h5", "--save-model", tmp_path / "m.json")
    ok("residualize", h5, csv, "--model", tmp_path / "m.json", "-o", tmp_path / "b.h5")
    np.testing.assert_array_equal(read(tmp_path / "a.h5"), read(tmp_path / "b.h5"))
    # new data without the preserved column (its part is kept anyway)
    new_h5, new_csv, y_new = make_set(tmp_path, np.random.default_rng(7), n=50, name="new")
    pd.read_csv(new_csv).drop(columns=["label"]).to_csv(new_csv, index=False)
    ok("residualize", new_h5, new_csv, "--model", tmp_path / "m.json", "-o", tmp_path / "new_clean.h5")
    model = Residualizer.load(tmp_path / "m.json")
    table = pd.read_csv(new_csv).set_index("id").loc[np.arange(1000, 1050)].reset_index()
    x = model.design.transform(table.assign(label=0))
    np.testing.assert_allclose(read(tmp_path / "new_clean.h5"), y_new - x[:, 1:] @ model.beta[1:], atol=1e-5)
    # an unseen site at apply time
    bad = pd.read_csv(new_csv)
    bad.loc[3, "site"] = "z"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    result = mdn("residualize", new_h5, tmp_path / "bad.csv", "--model", tmp_path / "m.json", "-o", tmp_path / "out.h5")
    assert result.returncode == 2 and "'z' not seen" in result.stderr and "bad.csv" in result.stderr
    assert not (tmp_path / "out.h5").exists()


def test_streaming_fit_equals_one_block(tmp_path, rng, monkeypatch):
    h5, csv, _ = make_set(tmp_path, rng)
    features = open_features(h5)
    table = pd.read_csv(csv).set_index("id").loc[features.ids].reset_index()
    whole = fit(features, table, ["age", "site"], ["label"])
    monkeypatch.setattr("mdn_cli.data.features.CHUNK_VALUES", 7 * features.num_features)  # chunks of 7 rows
    chunked = fit(features, table, ["age", "site"], ["label"])
    np.testing.assert_allclose(chunked.beta, whole.beta, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda t: [t / "f.h5", t / "short.csv", "--columns", "age"], "are not in column 'id'"),
        (lambda t: [t / "f.h5", t / "f.csv", "--columns", "weight"], "no column 'weight'"),
        (lambda t: [t / "f.h5", t / "f.csv", "--columns", "age", "--fit-on", "fold=1"], "no column 'fold'"),
        (lambda t: [t / "f.h5", t / "f.csv", "--columns", "age", "--fit-on", "train"], "not of the form COLUMN=VALUE"),
        (lambda t: [t / "f.h5", t / "f.csv", "--columns", "age", "--dataset", "x"], "no dataset 'x'"),
        (lambda t: [t / "f.h5", t / "f.csv"], "no metadata columns given"),
        (lambda t: [t / "f.h5", t / "f.csv", "--model", t / "f.csv"], "not valid JSON"),
        (lambda t: [t / "missing.h5", t / "f.csv", "--columns", "age"], "file not found"),
        (lambda t: [t / "f.h5", t / "f.csv", "--columns", "age", "--save-model", t / "f.h5" / "m.json"], "cannot write here"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(tmp_path, rng, make_args, message):
    make_set(tmp_path, rng)
    pd.read_csv(tmp_path / "f.csv").iloc[:-3].to_csv(tmp_path / "short.csv", index=False)
    before = set(tmp_path.iterdir())
    result = mdn("residualize", *make_args(tmp_path), "-o", tmp_path / "out.h5")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert set(tmp_path.iterdir()) == before


def test_several_layers_need_a_dataset(tmp_path, rng):
    with h5py.File(tmp_path / "two.h5", "w") as f:
        f["features/fc1"] = rng.normal(size=(10, 3))
        f["features/conv1"] = rng.normal(size=(10, 2, 2))
    result = mdn("residualize", tmp_path / "two.h5", "-", "--columns", "age", "-o", tmp_path / "o.h5", stdin="age\n" + "\n".join(map(str, range(10))))
    assert result.returncode == 2 and "--dataset features/conv1" in result.stderr
    # any rank: the shape is kept, the table comes from stdin, rows by order
    table = "age\n" + "\n".join(str(v) for v in rng.normal(size=10))
    ok("residualize", tmp_path / "two.h5", "-", "--columns", "age", "--dataset", "features/conv1", "-o", tmp_path / "o.h5", stdin=table)
    with h5py.File(tmp_path / "o.h5") as f:
        assert f["features/conv1"].shape == (10, 2, 2)
        assert abs(f["features/conv1"][:].reshape(10, -1).mean(0)).max() < 1e-5  # the intercept is removed


def test_zero_padded_text_ids_join(tmp_path, rng):
    """Ids such as '007' are text on both sides: the table's id column must not be read as numbers."""
    ids = np.array([f"{i:03d}" for i in range(40)], dtype=object)
    with h5py.File(tmp_path / "z.h5", "w") as f:
        f["features"] = rng.normal(size=(40, 3)).astype(np.float32)
        f.create_dataset("ids", data=ids, dtype=h5py.string_dtype())
    pd.DataFrame({"id": ids, "age": rng.normal(size=40)}).iloc[::-1].to_csv(tmp_path / "z.csv", index=False)
    ok("residualize", tmp_path / "z.h5", tmp_path / "z.csv", "--columns", "age", "-o", tmp_path / "o.h5")
    with h5py.File(tmp_path / "o.h5") as f:
        assert [v.decode() for v in f["ids"][:]] == list(ids)
