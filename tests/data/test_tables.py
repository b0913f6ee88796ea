"""Tables by extension: CSV, TSV (a BIDS participants.tsv), Parquet, gzipped; the same numbers through
`mdn audit`, `mdn residualize` and a training spec as from the CSV copy; errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from mdn_cli.data.tables import read_table
from mdn_cli.utils.errors import MdnError
from tests.helpers import make_small_data, mdn, ok, write_spec


@pytest.fixture(scope="module")
def bids(tmp_path_factory) -> Path:
    """A BIDS-style participants.tsv (participant_id, age, sex, site; `n/a` for a missing age), its CSV
    and Parquet copies, and features whose ids are the participant ids."""
    folder = tmp_path_factory.mktemp("bids")
    rng = np.random.default_rng(0)
    n = 120
    ids = [f"sub-{i:03d}" for i in range(n)]
    age = rng.normal(40, 12, n).round(1)
    sex = rng.choice(["F", "M"], n)
    site = rng.choice(["A", "B", "C"], n)
    features = (np.outer(age, rng.normal(size=4)) * 0.05 + np.outer(site == "B", rng.normal(size=4)) + rng.normal(size=(n, 4))).astype(np.float32)
    lines = ["participant_id\tage\tsex\tsite"] + [f"{i}\t{'n/a' if k == 5 else a}\t{s}\t{t}" for k, (i, a, s, t) in enumerate(zip(ids, age, sex, site))]
    (folder / "participants.tsv").write_text("\n".join(lines) + "\n")
    table = pd.read_csv(folder / "participants.tsv", sep="\t", dtype={"participant_id": str})
    table.to_csv(folder / "participants.csv", index=False)
    table.to_csv(folder / "participants.csv.gz", index=False)
    table.to_parquet(folder / "participants.parquet", index=False)
    complete = table.dropna()
    complete.to_csv(folder / "complete.csv", index=False)
    complete.to_csv(folder / "complete.tsv", sep="\t", index=False)
    complete.to_parquet(folder / "complete.parquet", index=False)
    keep = complete.index.to_numpy()
    with h5py.File(folder / "features.h5", "w") as handle:
        handle["features"] = features[keep]
        handle["ids"] = np.array(ids, dtype=object)[keep].astype("S")
    return folder


@pytest.mark.parametrize("name", ["participants.tsv", "participants.parquet", "participants.csv.gz"])
def test_every_format_reads_as_the_csv_with_text_ids_and_bids_missing_values(bids, name):
    expected = pd.read_csv(bids / "participants.csv", dtype={"participant_id": str})
    table = read_table(bids / name, "participant_id")
    pd.testing.assert_frame_equal(table, expected, check_dtype=False)
    assert table["participant_id"].iloc[7] == "sub-007" and pd.isna(table["age"].iloc[5])


def test_numeric_ids_stay_text_in_parquet(tmp_path):
    pd.DataFrame({"id": [7, 8], "x": [1.0, 2.0]}).to_parquet(tmp_path / "t.parquet")
    assert read_table(tmp_path / "t.parquet", "id")["id"].tolist() == ["7", "8"]


def test_unreadable_tables_are_errors_that_name_the_file(tmp_path):
    (tmp_path / "commas.tsv").write_text("id,age\n1,30\n")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    cases = {"commas.tsv": "comma-separated", "broken.parquet": "Parquet", "missing.tsv": "not found"}
    for name, message in cases.items():
        with pytest.raises(MdnError) as error:
            read_table(tmp_path / name)
        assert message in error.value.message and str(tmp_path / name) == error.value.where


def test_audit_reads_the_participants_tsv_as_its_csv(bids):
    args = ["--id-column", "participant_id", "--columns", "age,site", "--format", "json"]
    from_csv = json.loads(ok("audit", bids / "features.h5", bids / "complete.csv", *args).stdout)
    for name in ("complete.tsv", "complete.parquet"):
        assert json.loads(ok("audit", bids / "features.h5", bids / name, *args).stdout)["results"] == from_csv["results"]


def test_residualize_reads_parquet_as_its_csv(bids, tmp_path):
    outputs = {}
    for name in ("complete.csv", "complete.parquet"):
        out = tmp_path / f"{name}.h5"
        ok("residualize", bids / "features.h5", bids / name, "--id-column", "participant_id", "--columns", "age,site", "-o", out)
        with h5py.File(out) as handle:
            outputs[name] = handle["features"][()]
    np.testing.assert_array_equal(outputs["complete.csv"], outputs["complete.parquet"])


@pytest.mark.slow
def test_a_spec_whose_table_is_tsv_trains_as_with_csv(tmp_path):
    make_small_data(tmp_path, per_group=15)
    pd.read_csv(tmp_path / "meta.csv", dtype={"id": str}).to_csv(tmp_path / "meta.tsv", sep="\t", index=False)
    runs = {}
    for table in ("meta.csv", "meta.tsv"):
        spec = write_spec(tmp_path, f"{table}.yaml", epochs=1, data={"table": table})
        assert mdn("validate", spec).returncode == 0
        assert mdn("train", spec, "-o", tmp_path / f"run-{table}", "-q").returncode == 0
        runs[table] = json.loads((tmp_path / f"run-{table}" / "metrics.jsonl").read_text().splitlines()[0])
    assert runs["meta.tsv"]["val_loss"] == runs["meta.csv"]["val_loss"] and runs["meta.tsv"]["dcor2"] == runs["meta.csv"]["dcor2"]
