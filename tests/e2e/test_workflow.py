"""Issue 4's acceptance, end to end: synth -> train (baseline, MDN) -> layers -> extract --meta-out ->
audit --by label -> report --plot -> residualize -> audit again; each output fed to the next."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest

from tests.helpers import SMALL_BASELINE, no_leftovers, ok, write_spec


def by_stratum(audit: dict) -> dict:
    return {r["stratum"] or "all": r["dcor2"] for r in audit["results"] if r["column"] == "cf"}


@pytest.mark.slow
def test_the_whole_workflow(tmp_path: Path):
    data = tmp_path / "data"
    ok("synth", data, "--per-group", 60, "--seed", 3)
    ok("train", write_spec(data, "baseline.yaml", layers=SMALL_BASELINE, epochs=4), "-o", tmp_path / "baseline", "-q")
    ok("train", write_spec(data, "mdn.yaml", epochs=4), "-o", tmp_path / "mdn", "-q")

    # the names `layers` lists are the names `extract` takes
    names = [row["name"] for row in json.loads(ok("layers", tmp_path / "baseline", "--format", "json").stdout)]
    assert "fc1" in names
    features, meta = tmp_path / "fc1.h5", tmp_path / "fc1.csv"
    ok("extract", tmp_path / "baseline", "--layer", "fc1", "--split", "all", "-o", features, "--meta-out", meta)

    # the pair goes straight into the audit
    audit = json.loads(ok("audit", features, meta, "--by", "label", "--format", "json").stdout)
    assert audit["n"] == 120 and set(by_stratum(audit)) == {"all", "label=0", "label=1"}
    (tmp_path / "audit.json").write_text(json.dumps(audit))

    # the comparison, as a table and as a picture with the audit
    table = ok("report", tmp_path / "baseline", tmp_path / "mdn", "--plot", tmp_path / "cmp.png", "--audit", tmp_path / "audit.json").stdout
    assert "baseline" in table and "mdn" in table
    assert (tmp_path / "cmp.png").read_bytes().startswith(b"\x89PNG")

    # clean the baseline's features after the fact (fit on the training rows), audit again
    clean = tmp_path / "clean.h5"
    ok("residualize", features, data / "meta.csv", "--columns", "cf", "--preserve", "label", "--fit-on", "split=train", "-o", clean)
    after = json.loads(ok("audit", clean, meta, "--by", "label", "--format", "json").stdout)
    before, cleaned = by_stratum(audit), by_stratum(after)
    for stratum in ("label=0", "label=1"):  # the per-class drop that MDN is about
        assert cleaned[stratum] < before[stratum], (stratum, before, cleaned)
    with h5py.File(clean) as f:
        assert f["features"].shape == (120, 16) and list(f.attrs["residualized"]) == ["cf"]
    assert not no_leftovers(tmp_path)
