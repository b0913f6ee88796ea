"""TensorBoard and MLflow records of runs, read back with TensorBoard's event reader and the MLflow
client and compared with metrics.jsonl: single runs, resumed runs, cross-validations interrupted with
Ctrl-C, `mdn evaluate --log`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from mdn_cli.config import load_spec
from mdn_cli.train import tracking
from mdn_cli.train.loop import train
from mdn_cli.train.tracking import flat_params, scalar_tags
from tests.helpers import make_small_data, mdn, read_metrics, write_spec

LOGGERS = {"loggers": ["tensorboard", "mlflow"]}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tracking")
    make_small_data(folder, per_group=20)
    return folder


@pytest.fixture(scope="module")
def store_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


@pytest.fixture(scope="module")
def store(store_folder) -> str:
    """One local MLflow store for the module (creating its database takes a second)."""
    return f"sqlite:///{store_folder / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def mlflow_store(store, store_folder, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "tests")
    monkeypatch.chdir(store_folder)  # MLflow's default artifact root is ./mlruns


def expected_records(run: Path) -> dict[str, list[tuple[int, float]]]:
    """What the trackers must hold: every number of metrics.jsonl, by tag, as (epoch, value)."""
    records: dict[str, list[tuple[int, float]]] = {}
    for metrics in read_metrics(run):
        for key, value in metrics.items():
            if key == "epoch" or value is None:
                continue
            if key == "dcor2":
                for column, strata in value.items():
                    for stratum, v in strata.items():
                        if v is not None:
                            records.setdefault(f"dcor2/{column}/{stratum.replace('=', '_')}", []).append((metrics["epoch"], v))
                continue
            tag = {"lr": "train/lr", "seconds": "time/seconds"}.get(key, key.replace("_", "/", 1))
            records.setdefault(tag, []).append((metrics["epoch"], value))
    return records


def tensorboard_records(run: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def mlflow_run_id(run: Path) -> str:
    return json.loads((run / "tracking.json").read_text())["mlflow"]["run_id"]


def mlflow_records(run: Path, tags) -> dict[str, list[tuple[int, float]]]:
    client, run_id = MlflowClient(), mlflow_run_id(run)
    return {tag: sorted((m.step, m.value) for m in client.get_metric_history(run_id, tag)) for tag in tags}


def assert_records_equal_metrics(run: Path) -> None:
    """Both trackers hold every number of metrics.jsonl, each epoch once (TensorBoard keeps float32)."""
    expected = expected_records(run)
    board = tensorboard_records(run)
    assert set(board) == set(expected)
    for tag, points in expected.items():
        assert [step for step, _ in board[tag]] == [step for step, _ in points], tag
        assert [value for _, value in board[tag]] == pytest.approx([value for _, value in points], rel=1e-6), tag
    logged = MlflowClient().get_run(mlflow_run_id(run)).data.metrics
    assert {tag for tag in logged if not tag.startswith("eval/")} == set(expected)
    for tag, points in mlflow_records(run, expected).items():
        assert [step for step, _ in points] == [step for step, _ in expected[tag]], tag
        assert [value for _, value in points] == pytest.approx([value for _, value in expected[tag]], rel=1e-12), tag


# -- what is logged ---------------------------------------------------------------------------------
def test_scalar_tags_hold_every_number_of_an_epoch():
    metrics = {"epoch": 3, "train_loss": 0.5, "lr": 0.1, "train_penalty": 2.0, "val_loss": 0.4, "val_acc": 0.75, "val_auc": None,
               "dcor2": {"site": {"all": 0.1, "label=0": None, "label=1": 0.2}}, "seconds": 1.5}
    assert scalar_tags(metrics) == {"train/loss": 0.5, "train/lr": 0.1, "train/penalty": 2.0, "val/loss": 0.4, "val/acc": 0.75,
                                    "dcor2/site/all": 0.1, "dcor2/site/label_1": 0.2, "time/seconds": 1.5}


def test_params_are_the_spec_flattened_with_dots():
    config = {"train": {"lr": 0.001, "loggers": ["mlflow"], "plateau": None}, "model": {"layers": [{"type": "linear", "out_features": 1}]}}
    assert flat_params(config) == {"train.lr": "0.001", "train.loggers": '["mlflow"]', "train.plateau": "null",
                                   "model.layers.0.type": "linear", "model.layers.0.out_features": "1"}


# -- runs -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_run_is_recorded_in_tensorboard_and_mlflow(folder, tmp_path):
    spec_path = write_spec(folder, "logged.yaml", epochs=3, train={**LOGGERS, "scheduler": "cosine"})
    assert mdn("train", spec_path, "-o", tmp_path / "run", "-q").returncode == 0
    run = tmp_path / "run"
    assert_records_equal_metrics(run)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert "config/text_summary" in events.Tags()["tensors"]
    assert "train:" in events.Tensors("config/text_summary")[0].tensor_proto.string_val[0].decode()
    client = MlflowClient()
    logged = client.get_run(mlflow_run_id(run))
    assert logged.info.status == "FINISHED" and logged.info.run_name == "run"
    assert logged.data.params == flat_params(yaml.safe_load((run / "config.yaml").read_text()))
    assert logged.data.params["train.lr"] == "0.001" and logged.data.params["model.layers.0.type"] == "conv2d"
    artifacts = {a.path for a in client.list_artifacts(mlflow_run_id(run))}
    assert {"config.yaml", "summary.json", "metrics.jsonl", "curves.png"} <= artifacts
    assert client.get_experiment(logged.info.experiment_id).name == "tests"


@pytest.mark.slow
def test_a_tracker_that_missed_an_epoch_is_given_it_on_resume(folder, tmp_path, monkeypatch):
    """Killed after epoch 2's checkpoint and before it was logged: the resumed run logs it, once."""
    spec = load_spec(write_spec(folder, "missed.yaml", epochs=4, train=LOGGERS))
    log_epoch = tracking.Trackers.log_epoch

    def dies_at_epoch_2(self, metrics):
        if metrics["epoch"] == 2:
            raise KeyboardInterrupt
        log_epoch(self, metrics)

    monkeypatch.setattr(tracking.Trackers, "log_epoch", dies_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(spec, tmp_path / "run")
    assert MlflowClient().get_run(mlflow_run_id(tmp_path / "run")).info.status == "KILLED"
    monkeypatch.setattr(tracking.Trackers, "log_epoch", log_epoch)
    train(spec, tmp_path / "run", resume=True)
    assert [m["epoch"] for m in read_metrics(tmp_path / "run")] == [1, 2, 3, 4]
    assert_records_equal_metrics(tmp_path / "run")
    assert len(MlflowClient().search_runs([json.loads((tmp_path / "run" / "tracking.json").read_text())["mlflow"]["experiment_id"]],
                                          f"tags.`mdn.run_dir` = '{(tmp_path / 'run').resolve()}'")) == 1


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handling in this process (pytest may run as a background job with SIGINT ignored)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.mark.slow
def test_ctrl_c_in_the_middle_of_a_trackers_write_waits_for_the_write(folder, tmp_path, monkeypatch, python_ctrl_c):
    """A SIGINT that arrives while MLflow writes epoch 2 (inside its SQLite transaction, as a real
    Ctrl-C may) ends the run after that write: the store is not left locked, the run is KILLED with
    exit 130, and epoch 2 is held whole."""
    spec_path = write_spec(folder, "mid_write.yaml", epochs=4, train=LOGGERS)
    log_batch = MlflowClient.log_batch

    def signalled_while_writing(self, run_id, metrics=(), **kwargs):
        if metrics and metrics[0].step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # delivered now: Python would raise at the next line without the hold
        return log_batch(self, run_id, metrics=metrics, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", signalled_while_writing)
    interrupted = mdn("train", spec_path, "-o", tmp_path / "run", "-q")
    assert interrupted.returncode == 130 and "--resume" in interrupted.stderr and "Traceback" not in interrupted.stderr, interrupted.stderr
    run_id = mlflow_run_id(tmp_path / "run")
    assert MlflowClient().get_run(run_id).info.status == "KILLED"
    assert sorted(m.step for m in MlflowClient().get_metric_history(run_id, "train/loss")) == [1, 2]
    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)
    assert mdn("train", spec_path, "-o", tmp_path / "run", "-q", "--resume").returncode == 0
    assert_records_equal_metrics(tmp_path / "run")


def test_a_tracker_that_cannot_record_the_end_does_not_hide_the_interrupt(folder, tmp_path, monkeypatch, python_ctrl_c):
    from mlflow.exceptions import MlflowException

    def store_gone(self, status):
        raise MlflowException("the tracking server went away")

    def ctrl_c(self, metrics):
        raise KeyboardInterrupt

    monkeypatch.setattr(tracking.MlflowRun, "close", store_gone)
    monkeypatch.setattr(tracking.Trackers, "log_epoch", ctrl_c)
    result = mdn("train", write_spec(folder, "gone.yaml", epochs=2, train={"loggers": ["mlflow"]}), "-o", tmp_path / "run")
    assert result.returncode == 130 and "Traceback" not in result.stderr, result.stderr
    assert "could not record the run as KILLED: the tracking server went away" in result.stderr


@pytest.mark.slow
def test_loggers_added_on_resume_are_given_the_whole_history(folder, tmp_path):
    spec_path = write_spec(folder, "later.yaml", epochs=2)
    assert mdn("train", spec_path, "-o", tmp_path / "run", "-q").returncode == 0
    resumed = mdn("train", spec_path, "-o", tmp_path / "run", "-q", "--resume", "--set", "train.epochs=3", "--set", "train.loggers=[tensorboard,mlflow]")
    assert resumed.returncode == 0, resumed.stderr
    assert_records_equal_metrics(tmp_path / "run")


@pytest.mark.slow
def test_evaluate_logs_its_result_to_the_runs_records(folder, tmp_path):
    spec_path = write_spec(folder, "evaluated.yaml", epochs=2, train=LOGGERS)
    assert mdn("train", spec_path, "-o", tmp_path / "run", "-q").returncode == 0
    result = mdn("evaluate", tmp_path / "run", "--split", "val", "--log", "--format", "json")
    assert result.returncode == 0, result.stderr
    kept = json.loads((tmp_path / "run" / "eval" / "val-best.json").read_text())
    logged = MlflowClient().get_run(mlflow_run_id(tmp_path / "run")).data.metrics
    assert logged["eval/val-best/balanced_accuracy"] == pytest.approx(kept["overall"]["balanced_accuracy"])
    assert logged["eval/val-best/roc_auc"] == pytest.approx(kept["overall"]["roc_auc"])
    board = tensorboard_records(tmp_path / "run")
    assert board["eval/val-best/accuracy"] == [(kept["epoch"], pytest.approx(kept["overall"]["accuracy"]))]
    assert "val-best.json" in {a.path for a in MlflowClient().list_artifacts(mlflow_run_id(tmp_path / "run"))}
    plain = write_spec(folder, "plain.yaml", epochs=1)
    assert mdn("train", plain, "-o", tmp_path / "plain", "-q").returncode == 0
    refused = mdn("evaluate", tmp_path / "plain", "--split", "val", "--log")
    assert refused.returncode == 2 and "train.loggers" in refused.stderr and "Traceback" not in refused.stderr


def test_a_logger_whose_package_is_missing_is_an_input_error(folder, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else find_spec(name, *a))
    result = mdn("validate", write_spec(folder, "missing.yaml", train=LOGGERS))
    assert result.returncode == 2 and "mdn-cli[tracking]" in result.stderr and "Traceback" not in result.stderr


# -- the evidence: a cross-validation with early stopping and both loggers, resumed after Ctrl-C ------
@pytest.mark.slow
def test_a_cv_run_interrupted_by_ctrl_c_and_resumed_logs_each_fold_once(folder, tmp_path, store):
    spec_path = write_spec(folder, "cv.yaml", epochs=40, train={**LOGGERS, "early_stopping": {"patience": 3, "min_delta": 0.002}, "lr": 0.003})
    run = tmp_path / "cv"
    env = {**os.environ, "NO_COLOR": "1", "MLFLOW_TRACKING_URI": store, "MLFLOW_EXPERIMENT_NAME": "tests-cv"}
    # SIGINT back to its default in the child: pytest itself may run with it ignored (a background job)
    proc = subprocess.Popen([sys.executable, "-m", "mdn_cli", "train", str(spec_path), "-o", str(run), "--folds", "2", "-q"],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=Path.cwd(), preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while not (run / "fold-1" / "metrics.jsonl").exists():  # fold 0 done, fold 1 under way
        assert time.time() < deadline and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "timeout"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    client = MlflowClient()
    parent_id = json.loads((run / "tracking.json").read_text())["mlflow"]["run_id"]
    assert client.get_run(parent_id).info.status == "KILLED"

    resumed = mdn("train", spec_path, "-o", run, "--folds", "2", "-q", "--resume", env={"MLFLOW_EXPERIMENT_NAME": "tests-cv"})
    assert resumed.returncode == 0, resumed.stderr
    experiment = client.get_experiment_by_name("tests-cv")
    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(child.info.run_name for child in children) == ["fold-0", "fold-1"]  # one logged run per fold
    assert len(client.search_runs([experiment.experiment_id])) == 3  # and one parent
    for fold in ("fold-0", "fold-1"):
        summary = json.loads((run / fold / "summary.json").read_text())
        assert summary["early_stopping"]["stopped_epoch"] == summary["epochs"] < 40
        assert_records_equal_metrics(run / fold)
        assert client.get_run(mlflow_run_id(run / fold)).info.status == "FINISHED"
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    cv = json.loads((run / "cv.json").read_text())
    assert parent.data.metrics["cv/val_loss/mean"] == pytest.approx(cv["summary"]["val_loss"]["mean"])
    assert "cv.json" in {a.path for a in client.list_artifacts(parent_id)}
    evaluated = mdn("evaluate", run, "--split", "val", "--log", env={"MLFLOW_EXPERIMENT_NAME": "tests-cv"})  # out of fold, to the parent
    assert evaluated.returncode == 0, evaluated.stderr
    kept = json.loads((run / "eval" / "val-best.json").read_text())
    assert client.get_run(parent_id).data.metrics["eval/val-best/balanced_accuracy"] == pytest.approx(kept["overall"]["balanced_accuracy"])
