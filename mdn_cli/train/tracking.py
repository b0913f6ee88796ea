"""Experiment tracking (``train.loggers``): every number of ``metrics.jsonl`` as TensorBoard scalars
and MLflow metrics, with the spec as hyperparameters and the run's files as artifacts.

A tracker opens with the run's history and logs the epochs it does not hold yet, then each epoch
after its checkpoint has landed. So a run interrupted anywhere, and resumed, ends with every epoch
of ``metrics.jsonl`` logged exactly once, in the same logged run: TensorBoard's writer purges what
an earlier attempt wrote and the history is written again; the MLflow run's id is kept in
``RUNDIR/tracking.json`` and only the epochs it lacks are logged. MLflow honours
``MLFLOW_TRACKING_URI`` and ``MLFLOW_EXPERIMENT_NAME`` (default experiment ``mdn``); without them it
uses its own default local store (``./mlflow.db`` and ``./mlruns``): no server is needed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Any, Iterable, Protocol

from mdn_cli.utils.errors import MdnError
from mdn_cli.utils.fileio import atomic_write_text, read_json
from mdn_cli.utils.interrupts import interrupts_deferred

TRACKING_FILE = "tracking.json"
DEFAULT_EXPERIMENT = "mdn"
_PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}
_SPLITS = ("train", "val", "test")
_RENAMED = {"lr": "train/lr", "seconds": "time/seconds"}


# -- what is logged -----------------------------------------------------------------------------
def scalar_tags(metrics: dict) -> dict[str, float]:
    """An epoch's numbers under tracker tags: ``train/loss``, ``val/balanced_acc``, ``train/lr``,
    ``time/seconds``, ``dcor2/<column>/<class>`` (``all`` for pooled; ``label=1`` written ``label_1``,
    as MLflow's names allow). Undefined values are left out; the tags are the same in both trackers."""
    tags: dict[str, float] = {}
    for key, value in metrics.items():
        if key == "dcor2":
            for column, strata in (value or {}).items():
                tags.update({safe_name(f"dcor2/{column}/{stratum}"): float(v) for stratum, v in strata.items() if v is not None})
        elif key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
            split, _, name = key.partition("_")
            tags[f"{split}/{name}" if split in _SPLITS and name else _RENAMED.get(key, key)] = float(value)
    return tags


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """The resolved spec as dotted keys (``train.lr``, ``model.layers.0.type``), values as text."""
    params: dict[str, str] = {}
    items = config.items() if isinstance(config, dict) else enumerate(config)
    for key, value in items:
        name = f"{prefix}{key}"
        if isinstance(value, dict) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)):
            params.update(flat_params(value, f"{name}."))
        else:
            params[name] = json.dumps(value) if isinstance(value, (list, type(None), bool)) else str(value)
    return params


def check_loggers(names: Iterable[str]) -> None:
    """Every named logger's package is installed (before any training starts)."""
    for i, name in enumerate(names):
        if importlib.util.find_spec(_PACKAGES[name]) is None:
            raise MdnError(f"train.loggers[{i}] is {name}, but the {_PACKAGES[name]} package is not installed.", where="train.loggers",
                           hint="pip install 'mdn-cli[tracking]' (TensorBoard and MLflow), or remove it from train.loggers.")


# -- trackers -----------------------------------------------------------------------------------
class Tracker(Protocol):
    def log_epoch(self, metrics: dict) -> None: ...

    def close(self, status: str) -> None: ...


class TensorBoardTracker:
    """Event files in ``RUNDIR/tensorboard/``: scalars per epoch (step = epoch), the spec as hyperparameters and text."""

    def __init__(self, run_dir: Path, config_text: str, params: dict[str, str], select: str, history: list[dict]):
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        # purge_step=0: readers hide whatever an earlier attempt wrote; the history is written again below
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=0)
        self.writer.add_text("config", "\n".join("    " + line for line in config_text.splitlines()), 0)
        for summary in hparams(params, {tag: math.nan for tag in ("val/loss", scalar_tag(select))}):
            self.writer.file_writer.add_summary(summary)
        for metrics in history:
            self.log_epoch(metrics)

    def log_epoch(self, metrics: dict) -> None:
        for tag, value in scalar_tags(metrics).items():
            self.writer.add_scalar(tag, value, metrics["epoch"])
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


def scalar_tag(key: str) -> str:
    """The tag of one metric name (``val_auc`` -> ``val/auc``)."""
    return next(iter(scalar_tags({key: 0.0})))


class MlflowRun:
    """One MLflow run, created or continued from ``RUNDIR/tracking.json``, through ``MlflowClient``.

    Ctrl-C is held while it writes: interrupted inside a transaction, MLflow's SQLite store stays
    locked, and the run could then not even be marked KILLED.
    """

    def __init__(self, run_dir: Path, params: dict[str, str], parent_id: str | None = None, tags: dict[str, str] | None = None):
        from mlflow.exceptions import MlflowException

        try:
            with interrupts_deferred():
                self._open(run_dir, params, parent_id, tags)
        except MlflowException as exc:
            raise MdnError(f"MLflow cannot open a run ({str(exc).splitlines()[0][:300]}).", where=os.environ.get("MLFLOW_TRACKING_URI", "MLflow's default store"),
                           hint="check MLFLOW_TRACKING_URI (e.g. sqlite:///mlflow.db, or unset it for MLflow's local default), or remove mlflow from train.loggers.") from None

    def _open(self, run_dir: Path, params: dict[str, str], parent_id: str | None, tags: dict[str, str] | None) -> None:
        from mlflow.tracking import MlflowClient

        self.run_dir = run_dir
        logging.getLogger("mlflow").setLevel(logging.WARNING)  # not its INFO lines (database set-up) among the progress
        self.client = MlflowClient()
        self.uri = self.client.tracking_uri
        known = _read_tracking(run_dir).get("mlflow", {})
        if known.get("tracking_uri") == self.uri and self._exists(known.get("run_id")):
            self.run_id = known["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else self.client.create_experiment(experiment)
        run_tags = {"mdn.run_dir": str(run_dir.resolve()), **(tags or {})}
        if parent_id is not None:
            run_tags["mlflow.parentRunId"] = parent_id
        self.run_id = self.client.create_run(experiment_id, run_name=run_dir.name, tags=run_tags).info.run_id
        self.log_params(params)
        _write_tracking(run_dir, {"mlflow": {"tracking_uri": self.uri, "experiment_id": experiment_id, "run_id": self.run_id}})

    def _exists(self, run_id: str | None) -> bool:
        if run_id is None:
            return False
        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except Exception:  # a run of another store, or deleted: start a new one
            return False

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(safe_name(k), v[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(safe_name(tag), value, stamp, step) for tag, value in values.items()]
        with interrupts_deferred():  # an epoch's metrics land whole
            for start in range(0, len(items), 1000):  # at most 1000 metrics per batch
                self.client.log_batch(self.run_id, metrics=items[start:start + 1000])

    def logged_steps(self, key: str) -> set[int]:
        return {metric.step for metric in self.client.get_metric_history(self.run_id, safe_name(key))}

    def log_files(self, paths: Iterable[Path]) -> None:
        with interrupts_deferred():
            for path in paths:
                if path.is_file():
                    self.client.log_artifact(self.run_id, str(path))

    def close(self, status: str) -> None:
        with interrupts_deferred():
            self.client.set_terminated(self.run_id, status)


class MlflowTracker:
    """An `mdn train` run as an MLflow run: params, per-epoch metrics, and its files as artifacts at the end."""

    def __init__(self, run_dir: Path, params: dict[str, str], history: list[dict], parent_id: str | None = None):
        self.run_dir = run_dir
        self.run = MlflowRun(run_dir, params, parent_id)
        logged = self.run.logged_steps("train/loss")
        for metrics in history:
            if metrics["epoch"] not in logged:
                self.log_epoch(metrics)

    def log_epoch(self, metrics: dict) -> None:
        self.run.log_metrics(scalar_tags(metrics), metrics["epoch"])

    def close(self, status: str) -> None:
        if status == "FINISHED":
            curves = plot_curves(self.run_dir)
            self.run.log_files([self.run_dir / name for name in ("config.yaml", "summary.json", "metrics.jsonl")] + [curves])
        self.run.close(status)


class Trackers:
    """The run's trackers as one: each epoch to all of them; closed with the run's end status."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log_epoch(self, metrics: dict) -> None:
        for tracker in self.trackers:
            tracker.log_epoch(metrics)

    def close(self, status: str) -> None:
        for tracker in self.trackers:
            tracker.close(status)

    def abandon(self, exc: BaseException) -> list[str]:
        """Close after a failure (KILLED for Ctrl-C, else FAILED). A tracker that cannot record the end
        is returned as a message rather than raised, so the run's own exception is the one that surfaces."""
        return close_quietly(self.trackers, exc)


def close_quietly(trackers: Iterable[Tracker | MlflowRun], exc: BaseException) -> list[str]:
    """Close each tracker with the end status of ``exc``; what fails is returned as one line each."""
    status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
    failures = []
    for tracker in trackers:
        try:
            tracker.close(status)
        except Exception as error:  # the tracker's store is unreachable or broken: the run's own error matters more
            failures.append(f"{type(tracker).__name__} could not record the run as {status}: {str(error).splitlines()[0][:200]}")
    return failures


def open_trackers(names: list[str], run_dir: Path, config_text: str, select: str, history: list[dict], parent_id: str | None = None) -> Trackers:
    """The trackers of ``train.loggers`` for a run directory, holding ``history`` already."""
    import yaml

    params = flat_params(yaml.safe_load(config_text))
    trackers: list[Tracker] = []
    for name in names:
        if name == "tensorboard":
            trackers.append(TensorBoardTracker(run_dir, config_text, params, select, history))
        elif name == "mlflow":
            trackers.append(MlflowTracker(run_dir, params, history, parent_id))
    return Trackers(trackers)


# -- after training -----------------------------------------------------------------------------
def log_evaluation(run_dir: Path, loggers: list[str], values: dict[str, float], step: int, artifact: Path | None = None) -> None:
    """Log `mdn evaluate`'s numbers to the records of the run that was evaluated (its ``train.loggers``).

    TensorBoard: scalars in ``RUNDIR/tensorboard/`` at ``step``; MLflow: metrics of the run kept in
    ``RUNDIR/tracking.json`` (a cross-validation's parent run) at ``step``, the kept result as an artifact.
    """
    run_dir = Path(run_dir)
    if not loggers:
        raise MdnError("this run was trained without train.loggers, so it has no records to log to.", where=str(run_dir),
                       hint="leave out --log, or train with `train.loggers: [tensorboard, mlflow]`.")
    check_loggers(loggers)
    if "mlflow" in loggers:
        if not _read_tracking(run_dir).get("mlflow"):
            raise MdnError(f"no MLflow run is recorded in {TRACKING_FILE}.", where=str(run_dir), hint="finish the training (--resume) first, or leave out --log.")
        run = MlflowRun(run_dir, {})
        run.log_metrics(values, step)
        run.log_files([artifact] if artifact is not None else [])
        run.close("FINISHED")
    if "tensorboard" in loggers:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(log_dir=str(run_dir / "tensorboard")) as writer:
            for tag, value in values.items():
                writer.add_scalar(safe_name(tag), value, step)


def plot_curves(run_dir: Path) -> Path:
    """``RUNDIR/curves.png``: losses, accuracies, the rate and every dcor² per epoch, one panel each kind."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    from mdn_cli.utils.fileio import atomic_path

    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    panels: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for metrics in history:
        for tag, value in scalar_tags(metrics).items():
            if _panel(tag) is not None:
                panels.setdefault(_panel(tag), {}).setdefault(tag, []).append((metrics["epoch"], value))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (title, curves) in zip(axes.flat, panels.items()):
        for tag, points in curves.items():
            ax.plot(*zip(*points), marker=".", label=tag)
        ax.set(title=title, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = run_dir / "curves.png"
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=100)
    finally:
        plt.close(fig)
    return path


def _panel(tag: str) -> str | None:
    """The panel of ``curves.png`` a tag is drawn in (None: not drawn)."""
    if tag.startswith("dcor2/"):
        return f"dcor² with {tag.split('/')[1]}"
    name = tag.rpartition("/")[2]
    return {"loss": "loss", "lr": "learning rate", "penalty": "PMDN penalty", "seconds": None}.get(name, "validation")


# -- tracking.json ------------------------------------------------------------------------------
def _read_tracking(run_dir: Path) -> dict:
    path = run_dir / TRACKING_FILE
    return read_json(path, hint=f"delete {path} to start a new logged run.") if path.is_file() else {}


def _write_tracking(run_dir: Path, entries: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / TRACKING_FILE, json.dumps({**_read_tracking(run_dir), **entries}, indent=2) + "\n")


def safe_name(tag: str) -> str:
    """A name MLflow takes (letters, digits and ``_ - . / space``; anything else becomes ``_``)."""
    return re.sub(r"[^\w\-. /]", "_", tag)
