"""A trained run scored the way papers report it: metrics overall and per metadata group, their
gaps, bootstrap intervals, the monitored layer's dcor², and one prediction row per sample.

The model and rows come from ``runs.load_run`` and ``extract``'s sources, the metrics from
``stats.metrics`` (scikit-learn), the dcor² from ``audit.audit_features``: nothing is computed a
second way here. Nothing prints; the CLI renders the result.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from mdn_cli.audit import audit_features
from mdn_cli.errors import MdnError, did_you_mean
from mdn_cli.extract import Source
from mdn_cli.fileio import atomic_write_text
from mdn_cli.nn import metadata
from mdn_cli.runs import LoadedRun
from mdn_cli.stats.metrics import MetricsInputError, bootstrap_intervals, gaps, group_table, overall_metrics, quantile_groups


def predict(loaded: LoadedRun, source: Source, layer: Optional[str], batch_size: Optional[int] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The model's scores for every row of ``source`` (eval mode, each row's metadata) and ``layer``'s features.

    Scores: the probability of the second class (binary), one probability per class
    (multiclass), the prediction (regression).
    """
    network, device, task = loaded.network, loaded.device, loaded.spec.train.task
    captured: list[torch.Tensor] = []
    handle = None
    if layer is not None:
        handle = network.feature_module(layer, where="--layer", target=str(loaded.run_dir)).register_forward_hook(
            lambda _m, _i, out: captured.append(out.detach().reshape(out.shape[0], -1).float().cpu())
        )
    outputs = []
    network.eval()
    try:
        with torch.no_grad():
            for _part, x, design in source.batches(batch_size or loaded.spec.train.batch_size):
                with metadata(network, design.to(device)):
                    outputs.append(network(x.to(device)).double().cpu())
    finally:
        if handle is not None:
            handle.remove()
    out = torch.cat(outputs)
    if task == "multiclass":
        score = torch.softmax(out, dim=1)
    elif task == "binary":
        score = torch.sigmoid(out[:, 0])
    else:
        score = out[:, 0]
    return score.numpy(), (torch.cat(captured).numpy() if captured else None)


def _check_by(by: Sequence[str], table: pd.DataFrame) -> list[str]:
    by = list(dict.fromkeys(by))
    for name in by:
        if name not in table.columns:
            raise MdnError(f"no column {name!r} in the evaluated rows' table.", where="--by",
                           hint=did_you_mean(name, table.columns, f"columns: {', '.join(map(str, table.columns))}."))
    return by


def _group_labels(table: pd.DataFrame, by: Sequence[str], bins: int, categorical: Sequence[str]) -> dict[str, pd.Series]:
    """Each ``--by`` column's group per row: quantile bins of numeric columns, levels of the others."""
    try:
        return {name: quantile_groups(table[name].reset_index(drop=True), bins=bins, categorical=name in categorical) for name in by}
    except MetricsInputError as error:
        raise MdnError(str(error), where="--by") from None


def predictions_table(loaded: LoadedRun, source: Source, split: Sequence[str], score: np.ndarray, groups: dict[str, pd.Series]) -> pd.DataFrame:
    """One row per sample: id, split, label, score(s), predicted class, metadata and group columns."""
    spec, task = loaded.spec, loaded.spec.train.task
    classes = list(loaded.state["classes"])
    table = source.table.reset_index(drop=True)
    out = pd.DataFrame({spec.data.id_column or "id": source.ids, "split": list(split), "label": table[spec.data.label].to_numpy()})
    if task == "binary":
        out["score"] = score
        out["predicted"] = np.asarray(classes, dtype=object)[(score > 0.5).astype(int)]
    elif task == "multiclass":
        for k, name in enumerate(classes):
            out[f"p_{name}"] = score[:, k]
        out["predicted"] = np.asarray(classes, dtype=object)[score.argmax(axis=1)]
    else:
        out["prediction"] = score
    for name in dict.fromkeys([*loaded.design.preserve, *loaded.design.metadata, *groups]):
        if name in table.columns and name not in out.columns:
            out[name] = table[name].to_numpy()
    for name, labels in groups.items():
        out[f"{name}_group"] = labels.astype(object).to_numpy()
    return out


def evaluate(
    loaded: LoadedRun,
    source: Source,
    split: str | Sequence[str],
    *,
    by: Optional[Sequence[str]] = None,
    bins: int = 4,
    layer: Optional[str] = None,
    n_boot: Optional[int] = None,
    seed: int = 0,
    level: float = 0.95,
    batch_size: Optional[int] = None,
) -> tuple[dict, pd.DataFrame]:
    """The evaluation result (the JSON of `mdn evaluate`) and the predictions table it was computed from.

    ``split`` names the rows (one name, or one per row for ``all``); ``by`` defaults to the
    spec's metadata columns; ``layer`` to ``train.monitor`` (no dcor² when neither is set).
    """
    spec, task = loaded.spec, loaded.spec.train.task
    if n_boot is not None and n_boot < 1:
        raise MdnError(f"--bootstrap must be at least 1 (got {n_boot}).", where="--bootstrap", hint="give the number of resamples, e.g. 1000, or leave it out.")
    if not 0 < level < 1:
        raise MdnError(f"--level must be between 0 and 1 (got {level}).", where="--level", hint="e.g. 0.95.")
    table = source.table.reset_index(drop=True)
    if spec.data.label not in table.columns:
        raise MdnError(f"the evaluated rows have no label column {spec.data.label!r}.", where=source.description, hint="evaluation compares predictions with labels: add the column.")
    by = _check_by(spec.data.metadata if by is None else by, table)
    groups = _group_labels(table, by, bins, spec.data.categorical)
    layer = layer if layer is not None else spec.train.monitor
    score, features = predict(loaded, source, layer, batch_size)
    split_names = [split] * len(table) if isinstance(split, str) else list(split)
    predictions = predictions_table(loaded, source, split_names, score, groups)
    classes = list(loaded.state["classes"]) or None
    y_true = table[spec.data.label].to_numpy()
    try:
        overall = overall_metrics(task, y_true, score, classes)
        by_group = group_table(task, y_true, score, groups, classes)
        intervals = bootstrap_intervals(task, y_true, score, groups, n_boot=n_boot, seed=seed, level=level, classes=classes) if n_boot else None
    except MetricsInputError as error:
        raise MdnError(str(error), where=source.description) from None
    gap_rows = gaps(by_group)
    if intervals is not None:
        by_key = {(gap["column"], gap["metric"]): gap for gap in intervals["gaps"]}
        gap_rows = [{**gap, "interval": _pair(by_key[gap["column"], gap["metric"]])} for gap in gap_rows]
    dcor = []
    if features is not None:
        strata = spec.data.label if task != "regression" else None
        dcor = [asdict(row) for row in audit_features(features, table, spec.data.metadata, by=strata, categorical=spec.data.categorical).rows]
    result = {
        "run": str(loaded.run_dir),
        "checkpoint": str(loaded.checkpoint),
        "epoch": int(loaded.state.get("epoch", -1)),
        "split": split if isinstance(split, str) else "all",
        "task": task,
        "n": len(table),
        "overall": overall.values,
        "undefined": overall.undefined,
        "intervals": {name: _pair(interval) for name, interval in intervals["overall"].items()} if intervals else {},
        "bootstrap": {key: intervals[key] for key in ("n_boot", "seed", "level", "method", "resampling")} if intervals else None,
        "by": by,
        "by_group": by_group,
        "gaps": gap_rows,
        "layer": layer,
        "dcor": dcor,
    }
    return result, predictions


def _pair(interval: dict) -> Optional[list]:
    return None if interval["low"] is None else [interval["low"], interval["high"]]


def checkpoint_name(loaded: LoadedRun) -> str:
    """``best``, ``last``, ``best-refit``...: the checkpoint file's stem."""
    return loaded.checkpoint.stem


def save_result(loaded: LoadedRun, result: dict, rows: str) -> Path:
    """Keep the result in the run, ``RUNDIR/eval/<rows>-<checkpoint>.json``, for `mdn report`."""
    path = loaded.run_dir / "eval" / f"{rows}-{checkpoint_name(loaded)}.json"
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    return path


def saved_results(run_dir: str | Path) -> list[dict]:
    """The evaluations kept in a run (``RUNDIR/eval/*.json``), in name order."""
    folder = Path(run_dir) / "eval"
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))] if folder.is_dir() else []


def row_splits(loaded: LoadedRun, split: str) -> str | list[str]:
    """The split of each row: ``split`` itself, or per row for ``all`` (rows in no split: ``none``)."""
    if split != "all":
        return split
    data = loaded.training_data()
    names = np.full(len(data.table), "none", dtype=object)
    for name, rows in data.splits.items():
        names[rows] = name
    return names.tolist()
