"""`mdn report`: one run in detail, several side by side, formats, pictures and audit charts, errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
import yaml

from mdn_cli.cli.render import sparkline
from tests.helpers import mdn, ok

CONFIG = {
    "data": {"inputs": "/d/images.h5", "table": "/d/meta.csv", "label": "label", "metadata": ["cf"]},
    "model": {"layers": [{"type": "linear", "out_features": 8, "name": "fc1"}, {"type": "mdn"}, {"type": "relu"}, {"type": "linear", "out_features": 1}]},
    "mdn": {"momentum": 0.1, "preserve": ["label"]},
    "train": {"task": "binary", "epochs": 4, "batch_size": 32, "optimizer": "adam", "lr": 1e-4, "seed": 0, "monitor": "fc1"},
}


def fake_run(folder: Path, name: str, dcor: list[float], acc: list[float], best: int) -> Path:
    """A run directory as `mdn train` leaves it, with chosen numbers."""
    run = folder / name
    run.mkdir()
    history = [
        {"epoch": e + 1, "train_loss": 0.7 - 0.05 * e, "val_loss": 0.69 - 0.04 * e, "val_acc": a,
         "dcor2": {"cf": {"all": d, "label=0": d / 2, "label=1": d / 3}}, "seconds": 1.5 * (e + 1)}
        for e, (d, a) in enumerate(zip(dcor, acc))
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in history))
    summary = {"run_dir": str(run), "task": "binary", "epochs": len(history), "monitor": "fc1", "n": {"train": 600, "val": 200, "test": 200},
               "best": history[best - 1], "last": history[-1]}
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    return run


@pytest.fixture
def runs(tmp_path) -> tuple[Path, Path]:
    return (fake_run(tmp_path, "baseline", [0.2, 0.25, 0.3, 0.32], [0.8, 0.85, 0.9, 0.91], best=4),
            fake_run(tmp_path, "mdn", [0.2, 0.05, 0.01, 0.008], [0.7, 0.76, 0.8, 0.79], best=3))


def test_sparkline():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([0.3, 0.3]) == "▁▁" and sparkline([1, None, 0]) == "█ ▁" and sparkline([]) == ""


def test_one_run_in_detail(runs):
    text = ok("report", runs[1]).stdout
    for expected in ("mdn: spec", "metadata", "cf", "mdn_placed_after", "fc1", "best", "last", "label=0", "█", "0.0080"):
        assert expected in text, expected
    detail = json.loads(ok("report", runs[1], "--format", "json").stdout)
    assert detail["best"]["epoch"] == 3 and detail["last"]["epoch"] == 4
    assert detail["spec"]["mdn_placed_after"] == ["fc1"] and detail["spec"]["mdn_variant"] == "batch" and detail["spec"]["metadata"] == ["cf"] and detail["spec"]["lr"] == 1e-4
    assert detail["dcor2_per_epoch"]["cf"]["label=0"] == [0.1, 0.025, 0.005, 0.004]
    markdown = ok("report", runs[1], "--format", "markdown").stdout
    assert "| cf | label=1 |" in markdown and "### metrics" in markdown
    rows = list(csv.DictReader(io.StringIO(ok("report", runs[1], "--format", "csv").stdout)))
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"] and float(rows[-1]["dcor2[cf|all]"]) == 0.008


def test_runs_side_by_side(runs):
    table = ok("report", *runs).stdout
    assert "baseline" in table and "mdn" in table and "dcor2[cf|label=0]" in table
    data = json.loads(ok("report", *runs, "--format", "json", "--epoch", "best").stdout)
    assert [r["run"] for r in data["runs"]] == ["baseline", "mdn"] and data["runs"][1]["epoch"] == 3
    assert data["runs"][1]["dcor2[cf|all]"] == 0.01 and data["runs"][0]["val_acc"] == 0.91
    markdown = ok("report", *runs, "--format", "markdown").stdout
    assert markdown.splitlines()[0] == "|  | baseline | mdn |"


def audit_json(path: Path) -> Path:
    results = [
        {"column": "cf", "kind": "numeric", "stratum": None, "n": 200, "n_missing": 0, "dcor2": 0.3, "pvalue": 0.001, "note": None},
        {"column": "cf", "kind": "numeric", "stratum": "label=0", "n": 100, "n_missing": 0, "dcor2": 0.02, "pvalue": 0.2, "note": None},
        {"column": "site", "kind": "categorical", "stratum": None, "n": 200, "n_missing": 0, "dcor2": None, "pvalue": None, "note": "constant"},
    ]
    path.write_text(json.dumps({"n": 200, "features": {}, "settings": {}, "results": results}))
    return path


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_plot_files(runs, tmp_path, suffix, magic):
    picture = tmp_path / f"cmp{suffix}"
    result = ok("report", *runs, "--plot", picture, "--audit", audit_json(tmp_path / "audit.json"))
    assert picture.read_bytes().startswith(magic) and f"wrote {picture}" in result.stderr
    assert not list(tmp_path.glob("*.tmp"))


def test_plot_text_is_readable(runs, tmp_path):
    picture = tmp_path / "cmp.svg"
    ok("report", *runs, "--plot", picture, "--audit", audit_json(tmp_path / "audit.json"))
    svg = picture.read_text()
    for text in ("validation accuracy", "epoch", "dcor² of fc1 with cf", "mdn label=0", "p=0.200", "p=0.001", "n/a", "mdn report: baseline vs mdn", "audit: audit"):
        assert text in svg, text


def test_audit_chart_alone(tmp_path):
    ok("report", "--plot", tmp_path / "a.png", "--audit", audit_json(tmp_path / "audit.json"))
    assert (tmp_path / "a.png").stat().st_size > 1000


@pytest.mark.parametrize(
    "args, message",
    [
        (["{t}/nowhere"], "not a run directory"),
        (["{t}/mdn", "--plot", "{t}/c.jpeg"], "cannot tell the picture format"),
        (["{t}/mdn", "--plot", "{t}/c.png", "--audit", "{t}/mdn/metrics.jsonl"], "not valid JSON"),
        (["{t}/mdn", "--plot", "{t}/c.png", "--audit", "{t}/mdn/summary.json"], "not an audit result"),
        (["{t}/mdn", "--epoch", "first"], "--epoch must be last or best"),
        ([], "nothing to report"),
        (["{t}/mdn", "--plot", "{t}/mdn/config.yaml/c.png"], "cannot write here"),
    ],
)
def test_bad_inputs_exit_2_and_write_nothing(runs, tmp_path, args, message):
    before = set(tmp_path.rglob("*"))
    result = mdn("report", *[a.format(t=tmp_path) for a in args])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert set(tmp_path.rglob("*")) == before


def test_audit_chart_legend_names_strata_the_first_column_lacks(tmp_path):
    results = [
        {"column": "age", "kind": "numeric", "stratum": None, "n": 200, "n_missing": 0, "dcor2": 0.1, "pvalue": 0.01, "note": None},
        {"column": "site", "kind": "categorical", "stratum": None, "n": 200, "n_missing": 0, "dcor2": 0.2, "pvalue": 0.01, "note": None},
        {"column": "site", "kind": "categorical", "stratum": "scanner=B", "n": 90, "n_missing": 0, "dcor2": 0.3, "pvalue": 0.02, "note": None},
    ]
    audit = tmp_path / "audit.json"
    audit.write_text(json.dumps({"n": 200, "features": {}, "settings": {}, "results": results}))
    ok("report", "--plot", tmp_path / "a.svg", "--audit", audit)
    assert "scanner=B" in (tmp_path / "a.svg").read_text()
