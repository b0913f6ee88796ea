"""Rendering of `mdn evaluate` results: json, csv (one row per group, overall first), markdown, rich tables."""

from __future__ import annotations

import json
from typing import Optional

from rich.console import Group
from rich.text import Text

from mdn_cli.cli.render import csv_table, evaluation_rows, markdown_table, rich_table
from mdn_cli.stats.metrics import METRICS_BY_TASK

_UNGAPPED = ("confusion_matrix",)


def _number(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.3f}"


def _sd(value: Optional[float]) -> str:
    """`` ± 0.012`` after a mean over folds, nothing otherwise."""
    return "" if value is None else f" ± {value:.3f}"


def _with_interval(value: Optional[float], interval: Optional[list]) -> str:
    """``0.842 [0.811, 0.870]``, or the value alone without an interval."""
    return _number(value) if not interval else f"{_number(value)} [{interval[0]:.3f}, {interval[1]:.3f}]"


def _metrics(result: dict) -> list[str]:
    return [name for name in METRICS_BY_TASK[result["task"]] if name not in _UNGAPPED]


def _title(result: dict) -> str:
    if result.get("folds"):
        how = "mean ± sd over the folds" if result.get("overall_sd") else "each fold's model on its own held-out rows"
        return f"{result['run']} ({len(result['folds'])} folds, {result['checkpoint']}: {how}), split {result['split']}, n = {result['n']}"
    return f"{result['run']} ({result['checkpoint']}, epoch {result['epoch']}), split {result['split']}, n = {result['n']}"


def _sections(result: dict) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each table: overall, per group, gaps, dcor²."""
    metrics = _metrics(result)
    intervals = result.get("intervals") or {}
    sd = result.get("overall_sd") or {}
    sections = [("overall", ["metric", "value"], [[name, _with_interval(result["overall"][name], intervals.get(name)) + _sd(sd.get(name))] for name in metrics])]
    if result["by_group"]:
        sections.append((
            "per group", ["column", "group", "n", *metrics],
            [[row["column"], row["group"], str(row["n"]),
              *(_with_interval(row[name], (row.get("intervals") or {}).get(name)) + _sd((row.get("sd") or {}).get(name)) for name in metrics)]
             for row in result["by_group"]],
        ))  # fmt: skip
        sections.append((
            "largest gap between groups (max - min)", ["column", "metric", "difference", "worst group"],
            [[gap["column"], gap["metric"], _with_interval(gap["difference"], gap.get("interval")), gap["worst_group"] or "—"] for gap in result["gaps"]],
        ))  # fmt: skip
    if result["dcor"]:
        by_fold = any("fold" in row for row in result["dcor"])
        sections.append((
            f"dcor² of {result['layer']} with the metadata", ["column", "stratum", *["fold"] * by_fold, "n", "dcor²", "note"],
            [[row["column"], row["stratum"] or "all", *[str(row.get("fold"))] * by_fold, str(row["n"]), _number(row["dcor2"]), row["note"] or ""]
             for row in result["dcor"]],
        ))  # fmt: skip
    matrix = result["overall"].get("confusion_matrix")
    if matrix is not None:
        classes = list(map(str, result.get("classes") or range(len(matrix))))
        sections.append(("confusion matrix (rows: true class, columns: predicted)", ["", *classes],
                         [[name, *map(str, row)] for name, row in zip(classes, matrix)]))  # fmt: skip
    return sections


def _csv(result: dict) -> str:
    metrics = _metrics(result)
    rows = [["", "all", result["n"], *(result["overall"][name] for name in metrics)]]
    rows += [[row["column"], row["group"], row["n"], *(row[name] for name in metrics)] for row in result["by_group"]]
    return csv_table(["column", "group", "n", *metrics], rows)


def _markdown(result: dict) -> str:
    lines = [f"**{_title(result)}**", ""]
    for title, header, rows in _sections(result):
        lines += [f"*{title}*", "", markdown_table(header, rows), ""]
    return "\n".join(lines)


def render_evaluation(result: dict, fmt: str):
    """The result as json / csv / markdown text, or rich tables."""
    if fmt == "json":
        return json.dumps(result, indent=2)
    if fmt == "csv":
        return _csv(result)
    if fmt == "markdown":
        return _markdown(result)
    tables = [rich_table(title, header, rows, ["left" if i < 2 else "right" for i in range(len(header))]) for title, header, rows in _sections(result)]
    caption = _title(result)
    if result.get("bootstrap"):
        b = result["bootstrap"]
        caption += f"; {b['level']:.0%} {b['method']} bootstrap intervals, {b['n_boot']} resamples of {b['resampling']}, seed {b['seed']}"
    return Group(Text(caption), *tables)


def _mean_sd(stats: dict) -> str:
    if stats["mean"] is None:
        return "—"
    return f"{stats['mean']:.3f}" + ("" if stats["sd"] is None else f" ± {stats['sd']:.3f}")


def _cv_rows(result: dict) -> tuple[list[str], list[list[str]]]:
    names = [name for name in result["summary"] if name != "val_loss"] + ["val_loss"] * ("val_loss" in result["summary"])
    header = ["fold", "n train", "n val", *names]
    rows = [[str(fold["fold"]), str(fold["n_train"]), str(fold["n_val"]), *(_number(fold["metrics"].get(name)) for name in names)]
            for fold in result["runs"]]  # fmt: skip
    rows.append(["mean ± sd", "", "", *(_mean_sd(result["summary"][name]) for name in names)])
    return header, rows


def _display(name: str) -> str:
    """``dcor2[cf|label=0]`` -> ``dcor² cf, label=0`` (``|`` would split a markdown cell; csv keeps the key)."""
    if not name.startswith("dcor2["):
        return name
    column, stratum = name[len("dcor2["):-1].split("|", 1)
    return f"dcor² {column}, {'pooled' if stratum == 'all' else stratum}"


def render_cv(result: dict, fmt: str):
    """A cross-validation: one row per fold (last epoch's val metrics, dcor²) and the mean ± sd over the folds."""
    if fmt == "json":
        return json.dumps(result, indent=2)
    header, rows = _cv_rows(result)
    title = f"{result['folds']}-fold cross-validation" + (f" x {result['repeats']}" if result["repeats"] > 1 else "") + (
        f", grouped by {result['group_column']}" if result["group_column"] else "") + ", last epoch"
    if fmt == "csv":  # numbers as they are: a row per fold, then the mean and the sd
        names = header[3:]
        raw = [[fold["fold"], fold["n_train"], fold["n_val"], *(fold["metrics"].get(name) for name in names)] for fold in result["runs"]]
        raw += [[stat, None, None, *(result["summary"][name][stat] for name in names)] for stat in ("mean", "sd")]
        return csv_table(header, raw)
    kept = evaluation_rows(result["evaluations"]) if result.get("evaluations") else None
    header = [_display(name) for name in header]
    if fmt == "markdown":
        text = f"*{title}*\n\n" + markdown_table(header, rows)
        return text + ("\n\n*evaluations (mdn evaluate)*\n\n" + markdown_table(kept[0], kept[1:]) if kept else "")
    table = rich_table(title, header, rows, ["left"] + ["right"] * (len(header) - 1))
    return Group(table, rich_table("evaluations (mdn evaluate)", kept[0], kept[1:])) if kept else table
