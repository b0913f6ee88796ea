"""A trained run scored the way papers report it: metrics overall and per metadata group, their
gaps, bootstrap intervals, the monitored layer's dcor², and one prediction row per sample.

``evaluate_run`` is the workflow, cross-validation runs included (out of fold, or every fold's
model on shared rows as mean ± sd). The model and rows come from ``model.checkpoint.load_run`` and
``model.rows``, the scores from ``model.task``, the metrics from ``stats.metrics`` (scikit-learn),
the dcor² from ``data.audit``: nothing is computed a second way here. Nothing prints; the CLI
renders the result.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pandas as pd
import torch

from mdn_cli.config.run_files import fold_dirs, is_cv_run
from mdn_cli.data.audit import audit_features
from mdn_cli.model.checkpoint import LoadedRun, load_run, run_spec
from mdn_cli.model.inference import eval_batches, flat, per_row
from mdn_cli.model.rows import Source, new_source, row_splits, split_source
from mdn_cli.model.task import predicted, scores
from mdn_cli.stats.metrics import (
    MetricsInputError,
    bootstrap_intervals,
    gaps,
    group_table,
    mean_sd,
    overall_metrics,
    quantile_groups,
)
from mdn_cli.train.tracking import log_evaluation
from mdn_cli.utils.errors import MdnError, did_you_mean
from mdn_cli.utils.fileio import atomic_write_text


def predict(loaded: LoadedRun, source: Source, layer: Optional[str], batch_size: Optional[int] = None) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """The model's scores for every row of ``source`` (eval mode, each row's metadata) and ``layer``'s features.

    Scores: the probability of the second class (binary), one probability per class
    (multiclass), the prediction (regression). A video's are the mean of its evaluation clips'.
    """
    network, task = loaded.network, loaded.spec.train.task
    watched = {layer: network.feature_module(layer, where="--layer", target=str(loaded.run_dir))} if layer is not None else {}
    outputs, features = [], []
    for _batch, out, captured in eval_batches(network, source.batches(batch_size or loaded.spec.train.batch_size), loaded.device, watched, source.views):
        outputs.append(per_row(scores(task, out.double().cpu()), source.views))
        features += [per_row(flat(captured[layer]), source.views)] if layer is not None else []
    return torch.cat(outputs).numpy(), torch.cat(features).numpy() if layer is not None else None


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


def predictions_table(loaded: LoadedRun, source: Source, split: Sequence[str], score: np.ndarray) -> pd.DataFrame:
    """One row per sample: id, split, label, score(s), predicted class, preserved and metadata columns."""
    spec, task = loaded.spec, loaded.spec.train.task
    classes = list(loaded.state["classes"])
    table = source.table.reset_index(drop=True)
    out = pd.DataFrame({spec.data.id_column or "id": source.ids, "split": list(split), "label": table[spec.data.label].to_numpy()})
    if task == "binary":
        out["score"] = score
    elif task == "multiclass":
        for k, name in enumerate(classes):
            out[f"p_{name}"] = score[:, k]
    if task != "regression":
        out["predicted"] = predicted(task, classes, score)
    else:
        out["prediction"] = score
    for name in dict.fromkeys([*loaded.design.preserve, *loaded.design.metadata]):
        if name in table.columns and name not in out.columns:
            out[name] = table[name].to_numpy()
    return out


@dataclass
class Part:
    """Rows scored by one model: a run (or one fold's run), its rows, their split names, the fold."""

    loaded: LoadedRun
    source: Source
    split: str | Sequence[str]
    fold: Optional[int] = None


def evaluate_parts(
    parts: Sequence[Part],
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

    One part: a run on its rows. Several: the folds of a cross-validation, each model on its own
    held-out rows, pooled (out-of-fold predictions, with a ``fold`` column); the dcor² is per
    fold, since the folds' features live in different spaces. ``split`` names the rows (one
    name, or one per row for ``all``); ``by`` defaults to the spec's metadata columns; ``layer``
    to ``train.monitor`` (no dcor² when neither is set).
    """
    first = parts[0].loaded
    spec, task = first.spec, first.spec.train.task
    if n_boot is not None and n_boot < 1:
        raise MdnError(f"--bootstrap must be at least 1 (got {n_boot}).", where="--bootstrap", hint="give the number of resamples, e.g. 1000, or leave it out.")
    if not 0 < level < 1:
        raise MdnError(f"--level must be between 0 and 1 (got {level}).", where="--level", hint="e.g. 0.95.")
    tables = [part.source.table.reset_index(drop=True) for part in parts]
    table = pd.concat(tables, ignore_index=True)
    if spec.data.label not in table.columns:
        raise MdnError(f"the evaluated rows have no label column {spec.data.label!r}.", where=parts[0].source.description, hint="evaluation compares predictions with labels: add the column.")
    by = _check_by(spec.data.metadata if by is None else by, table)
    groups = _group_labels(table, by, bins, spec.data.categorical)
    layer = layer if layer is not None else spec.train.monitor
    part_scores, predictions, dcor = [], [], []
    for part, part_table in zip(parts, tables):
        score, features = predict(part.loaded, part.source, layer, batch_size)
        names = [part.split] * len(part_table) if isinstance(part.split, str) else list(part.split)
        rows = predictions_table(part.loaded, part.source, names, score)
        if part.fold is not None:
            rows.insert(1, "fold", part.fold)
        part_scores.append(score)
        predictions.append(rows)
        if features is not None:
            strata = spec.data.label if task != "regression" else None
            audit = audit_features(features, part_table, spec.data.metadata, by=strata, categorical=spec.data.categorical)
            dcor += [{**({"fold": part.fold} if part.fold is not None else {}), **row.to_dict()} for row in audit.rows]
    score = np.concatenate(part_scores)
    predictions = pd.concat(predictions, ignore_index=True)
    for name, labels in groups.items():
        if name not in predictions.columns:
            predictions[name] = table[name].to_numpy()
        predictions[f"{name}_group"] = labels.astype(object).to_numpy()
    classes = list(first.state["classes"]) or None
    y_true = table[spec.data.label].to_numpy()
    try:
        overall = overall_metrics(task, y_true, score, classes)
        by_group = group_table(task, y_true, score, groups, classes)
        intervals = bootstrap_intervals(task, y_true, score, groups, n_boot=n_boot, seed=seed, level=level, classes=classes) if n_boot else None
    except MetricsInputError as error:
        raise MdnError(str(error), where=parts[0].source.description) from None
    gap_rows = gaps(by_group)
    if intervals is not None:
        by_key = {(gap["column"], gap["metric"]): gap for gap in intervals["gaps"]}
        gap_rows = [{**gap, "interval": _pair(by_key[gap["column"], gap["metric"]])} for gap in gap_rows]
        for row in by_group:
            row["intervals"] = {g["metric"]: _pair(g) for g in intervals["groups"] if (g["column"], g["group"]) == (row["column"], row["group"])}
    result = {
        "run": str(first.run_dir if len(parts) == 1 else first.run_dir.parent),
        "checkpoint": str(first.checkpoint) if len(parts) == 1 else first.checkpoint.stem,
        "epoch": int(first.state.get("epoch", -1)) if len(parts) == 1 else None,
        "split": parts[0].split if isinstance(parts[0].split, str) else "all",
        "task": task,
        "classes": list(first.state["classes"]),
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
    if len(parts) > 1:
        result["folds"] = [part.fold for part in parts]
    return result, predictions


def across_folds(results: Sequence[dict], predictions: Sequence[pd.DataFrame], folds: Sequence[int]) -> tuple[dict, pd.DataFrame]:
    """Every fold's model on the same rows (the test split): each metric as mean ± sd over the folds.

    ``results`` and ``predictions`` are ``evaluate_parts``', one fold each (its rows carry the fold).
    ``overall`` and each ``by_group`` row hold the means and ``sd`` the sample standard
    deviations; the gaps are those of the mean per-group values; the folds' own results are kept.
    """
    first = results[0]
    names = [name for name in first["overall"] if name != "confusion_matrix"]

    def summary(values: list) -> tuple[Optional[float], Optional[float]]:
        stats = mean_sd(values)
        return stats["mean"], stats["sd"]

    overall = {name: summary([r["overall"][name] for r in results]) for name in names}
    by_group = []
    for i, row in enumerate(first["by_group"]):
        stats = {name: summary([r["by_group"][i][name] for r in results]) for name in names}
        by_group.append({"column": row["column"], "group": row["group"], "n": row["n"],
                         **{name: mean for name, (mean, _) in stats.items()}, "sd": {name: sd for name, (_, sd) in stats.items()}})  # fmt: skip
    result = {
        **{key: first[key] for key in ("run", "split", "task", "classes", "n", "by", "layer")},
        "run": str(Path(first["run"]).parent),
        "checkpoint": Path(first["checkpoint"]).stem,
        "epoch": None,
        "folds": list(folds),
        "overall": {name: mean for name, (mean, _) in overall.items()},
        "overall_sd": {name: sd for name, (_, sd) in overall.items()},
        "undefined": {},
        "intervals": {},
        "bootstrap": None,
        "by_group": by_group,
        "gaps": gaps(by_group),
        "dcor": [row for r in results for row in r["dcor"]],
        "per_fold": [{"fold": fold, "overall": r["overall"]} for fold, r in zip(folds, results)],
    }
    return result, pd.concat(predictions, ignore_index=True)


def _pair(interval: dict) -> Optional[list]:
    return None if interval["low"] is None else [interval["low"], interval["high"]]


@dataclass
class Evaluation:
    """An evaluation: the result (the JSON of `mdn evaluate`), its predictions table, and what was scored."""

    result: dict
    predictions: pd.DataFrame
    rows: str  # the split, or the new data's file stem
    checkpoint: str  # the checkpoint's name (``best``, ``last``, ``best-refit``...)


def evaluate_run(run_dir: str | Path, *, split: str = "test", checkpoint: str = "best", inputs: str | Path | None = None,
                 table: str | Path | None = None, device: Optional[str] = None, **options) -> Evaluation:  # fmt: skip
    """Score a run (or every fold of a cross-validation run) on a split of its data or on new data.

    ``options`` are ``evaluate_parts``' (by, bins, layer, n_boot, seed, level, batch_size). A
    cross-validation run: ``split="val"`` scores each fold's model on its own held-out rows and
    pools them (out of fold); any other rows are scored by every fold's model and reported as
    mean ± sd over the folds (``across_folds``; no bootstrap there: the folds' spread is the
    interval).
    """
    runs = fold_dirs(run_dir) if is_cv_run(run_dir) else [Path(run_dir)]
    new_data = inputs is not None or table is not None
    if len(runs) > 1 and split == "train" and not new_data:
        raise MdnError("each fold of a cross-validation has its own training rows.", where="--split",
                       hint=f"use val (out of fold), test or all, or evaluate one fold's run ({run_dir}/fold-0).")  # fmt: skip
    loaded_runs = [load_run(path, checkpoint, device) for path in runs]
    rows = Path(inputs or table).stem if new_data else split
    folds = list(range(len(runs)))

    def part(loaded: LoadedRun, fold: Optional[int]) -> Part:
        source = new_source(loaded, inputs, table)
        if source is not None:
            return Part(loaded, source, rows, fold)
        return Part(loaded, split_source(loaded, split), row_splits(loaded, split), fold)

    if len(runs) == 1:
        result, predictions = evaluate_parts([part(loaded_runs[0], None)], **options)
    elif split == "val" and not new_data:  # out of fold: each model on its own held-out rows
        result, predictions = evaluate_parts([part(loaded, fold) for loaded, fold in zip(loaded_runs, folds)], **options)
    else:  # every fold's model on the same rows
        if options.get("n_boot") is not None:
            raise MdnError("--bootstrap on a cross-validation's shared rows is not supported: the folds' spread is the interval.", where="--bootstrap",
                           hint="leave out --bootstrap (the result is mean ± sd over the folds), or use --split val for out-of-fold predictions.")  # fmt: skip
        each = [evaluate_parts([part(loaded, fold)], **options) for loaded, fold in zip(loaded_runs, folds)]
        result, predictions = across_folds([r for r, _ in each], [p for _, p in each], folds)
    return Evaluation(result, predictions, rows, loaded_runs[0].checkpoint.stem)


def save_result(run_dir: str | Path, evaluation: Evaluation) -> Path:
    """Keep the result in the run, ``RUNDIR/eval/<rows>-<checkpoint>.json``, for `mdn report`."""
    path = Path(run_dir) / "eval" / f"{evaluation.rows}-{evaluation.checkpoint}.json"
    atomic_write_text(path, json.dumps(evaluation.result, indent=2) + "\n")
    return path


def log_result(run_dir: str | Path, evaluation: Evaluation, saved: Path) -> None:
    """Log an evaluation to the run's TensorBoard and MLflow records (``train.loggers``), at the checkpoint's epoch.

    Tags ``eval/<rows>-<checkpoint>/<metric>`` overall (and ``.../sd/<metric>`` over folds) and
    ``eval/<rows>-<checkpoint>/<column>=<group>/<metric>`` per group: the numbers of the kept result.
    """
    result = evaluation.result
    head = f"eval/{evaluation.rows}-{evaluation.checkpoint}"
    values = {f"{head}/{name}": value for name, value in result["overall"].items() if _is_number(value)}
    values |= {f"{head}/sd/{name}": value for name, value in (result.get("overall_sd") or {}).items() if _is_number(value)}
    for row in result["by_group"]:
        values |= {f"{head}/{row['column']}={row['group']}/{name}": value for name, value in row.items()
                   if name not in ("column", "group") and _is_number(value)}  # fmt: skip
    loggers = run_spec(Path(run_dir) if not is_cv_run(run_dir) else fold_dirs(run_dir)[0], check_files=False).train.loggers
    log_evaluation(Path(run_dir), loggers, values, result["epoch"] or 0, saved)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
