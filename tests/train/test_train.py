"""End to end: `mdn synth`, `mdn validate`, `mdn train` (resume, interrupt, errors) on small synthetic sets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from mdn_cli.config import load_spec
from mdn_cli.train.monitor import split_metrics
from mdn_cli.train.run import build_run
from tests.helpers import SMALL_BASELINE, SMALL_MDN, mdn, read_metrics, write_spec

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "sample_data" / "synthetic"


@pytest.fixture(scope="module")
def small_data(synth_data) -> Path:
    return synth_data


def test_synth_writes_the_papers_design(small_data):
    import h5py
    import pandas as pd

    table = pd.read_csv(small_data / "meta.csv")
    assert list(table.columns) == ["id", "label", "cf", "mf", "split"]
    assert table.groupby("label").size().tolist() == [60, 60]
    for label, (low, high) in {0: (1, 4), 1: (3, 6)}.items():
        rows = table[table.label == label]
        assert rows.cf.between(low, high).all() and rows.mf.between(low, high).all()
    with h5py.File(small_data / "images.h5") as f:
        x, ids = f["x"][:], f["ids"][:]
    assert x.shape == (120, 1, 32, 32) and list(ids) == table.id.tolist()
    # one bump shape everywhere: each quadrant's peak is the same multiple (just under 1: the
    # centre falls between pixels) of mf (top-left, bottom-right) and cf (bottom-left)
    peak = lambda q: q.reshape(len(q), -1).max(1)  # noqa: E731
    for quadrant, factor in ((x[:, 0, :16, :16], "mf"), (x[:, 0, 16:, 16:], "mf"), (x[:, 0, 16:, :16], "cf")):
        ratio = peak(quadrant) / table[factor].to_numpy()
        assert 0.9 < ratio.mean() <= 1.0 and ratio.std() < 0.02
    assert np_abs_max(x[:, 0, :16, 16:]) < 0.1  # top-right: noise only


def np_abs_max(a) -> float:
    return float(abs(a).max())


@pytest.mark.slow
def test_train_writes_run_directory(small_data, tmp_path):
    spec = write_spec(small_data)
    run = tmp_path / "run"
    result = mdn("train", spec, "-o", run, "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["epochs"] == 3 and summary["best"]["epoch"] in (1, 2, 3)
    for name in ("config.yaml", "metrics.jsonl", "summary.json", "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (run / name).is_file(), name
    metrics = read_metrics(run)
    assert [m["epoch"] for m in metrics] == [1, 2, 3]
    assert {"train_loss", "val_loss", "val_acc", "dcor2", "seconds"} <= set(metrics[0])
    assert set(metrics[0]["dcor2"]["cf"]) == {"all", "label=0", "label=1"}
    # the saved config is the resolved spec and loads again
    assert load_spec(run / "config.yaml").train.epochs == 3
    assert not list(run.rglob("*.tmp")), "temporary files left behind"


@pytest.mark.slow
def test_same_seed_same_numbers(small_data, tmp_path):
    spec = write_spec(small_data)
    for name in ("a", "b"):
        assert mdn("train", spec, "-o", tmp_path / name, "-q").returncode == 0
    assert read_metrics(tmp_path / "a") == [m | {"seconds": m2["seconds"]} for m, m2 in zip(read_metrics(tmp_path / "b"), read_metrics(tmp_path / "a"))]


def strip_time(metrics: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if k != "seconds"} for m in metrics]


@pytest.mark.slow
def test_resume_ends_with_the_same_metrics(small_data, tmp_path):
    spec = write_spec(small_data, layers=SMALL_MDN[:4] + [{"type": "dropout", "p": 0.3}] + SMALL_MDN[4:])
    assert mdn("train", spec, "-o", tmp_path / "straight", "-q").returncode == 0
    assert mdn("train", spec, "-o", tmp_path / "split", "-q", "--set", "train.epochs=2").returncode == 0
    again = mdn("train", spec, "-o", tmp_path / "split", "-q")
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = mdn("train", spec, "-o", tmp_path / "split", "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert strip_time(read_metrics(tmp_path / "split")) == strip_time(read_metrics(tmp_path / "straight"))


@pytest.mark.slow
def test_resume_refuses_a_changed_spec(small_data, tmp_path):
    spec = write_spec(small_data)
    assert mdn("train", spec, "-o", tmp_path / "run", "-q", "--set", "train.epochs=1").returncode == 0
    result = mdn("train", spec, "-o", tmp_path / "run", "-q", "--resume", "--set", "train.lr=0.5")
    assert result.returncode == 2
    assert "differs" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_ctrl_c_keeps_last_checkpoint_and_resumes(small_data, tmp_path):
    spec = write_spec(small_data, epochs=400)
    run = tmp_path / "run"
    env = {**os.environ, "NO_COLOR": "1"}
    # SIGINT back to its default in the child: pytest itself may run with it ignored (a background job)
    proc = subprocess.Popen([sys.executable, "-m", "mdn_cli", "train", str(spec), "-o", str(run), "-q"], stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (run / "metrics.jsonl").exists() or len(read_metrics(run)) < 2:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "--resume" in stderr and "Traceback" not in stderr
    done = len(read_metrics(run))
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == done
    resumed = mdn("train", spec, "-o", run, "-q", "--resume", "--set", f"train.epochs={done + 1}")
    assert resumed.returncode == 0, resumed.stderr  # only train.epochs may change on resume
    assert [m["epoch"] for m in read_metrics(run)] == list(range(1, done + 2))


@pytest.mark.slow
def test_baseline_spec_trains_without_mdn(small_data, tmp_path):
    spec = write_spec(small_data, layers=SMALL_BASELINE, mdn={"preserve": []})
    run = build_run(load_spec(spec))
    assert not any("MetadataNorm" in type(m).__name__ for m in run.network.modules())
    assert mdn("train", spec, "-o", tmp_path / "run", "-q").returncode == 0


@pytest.mark.slow
def test_mdn_after_attaches_to_a_factory_model(small_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MDN_TRUST_FACTORY", "tests.factory_models")
    spec = write_spec(small_data)
    config = yaml.safe_load(spec.read_text())
    config["model"] = {"factory": "tests.factory_models:tiny_cnn", "kwargs": {"width": 4}, "mdn_after": ["features.0", "head.fc"]}
    config["train"]["monitor"] = "head.fc"
    spec.write_text(yaml.safe_dump(config))
    run = build_run(load_spec(spec))
    assert set(run.network.attached_mdn.keys()) == {"features__0", "head__fc"}
    metrics, features = split_metrics(run, "val", capture="head.fc")
    assert features.shape == (len(run.data.splits["val"]), 8)
    result = mdn("train", spec, "-o", tmp_path / "run", "-q")
    assert result.returncode == 0, result.stderr


def test_unknown_mdn_after_name_suggests_nearest(small_data, tmp_path, monkeypatch):
    monkeypatch.setenv("MDN_TRUST_FACTORY", "tests.factory_models")
    spec = write_spec(small_data)
    config = yaml.safe_load(spec.read_text())
    config["model"] = {"factory": "tests.factory_models:tiny_cnn", "mdn_after": ["head.fx"]}
    spec.write_text(yaml.safe_dump(config))
    result = mdn("validate", spec)
    assert result.returncode == 2
    assert "model.mdn_after[0]" in result.stderr and "head.fc" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"data": {"metadata": ["cff"]}}, "did you mean `cf`"),
        ({"data": {"label": "split"}}, "3 classes"),
        ({"train": {"monitor": "fc2"}}, "fc1"),
        ({"data": {"id_column": "nope"}}, "no id column 'nope'"),
    ],
)
def test_input_errors_exit_2_with_a_clear_message(small_data, tmp_path, change, expected):
    spec = write_spec(small_data, name=f"bad_{len(list(small_data.glob('bad_*')))}.yaml", **change)
    result = mdn("train", spec, "-o", tmp_path / "run")
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_missing_ids_are_named(small_data, tmp_path):
    import pandas as pd

    table = pd.read_csv(small_data / "meta.csv")
    table[table.id != 7].to_csv(tmp_path / "meta.csv", index=False)
    (tmp_path / "images.h5").symlink_to(small_data / "images.h5")
    spec = write_spec(tmp_path)
    result = mdn("validate", spec)
    assert result.returncode == 2 and "are not in column 'id': 7" in result.stderr
