"""Rendering of every command's results: rich tables for the terminal, JSON, CSV and markdown text.

Records in, renderables or text out; nothing here reads files or prints.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.table import Table
from rich.text import Text

from mdn_cli.analysis.report import RunRecord, comparison_rows, run_detail, stage_tables


def render_runs(records: list[RunRecord], fmt: str = "table", which: str = "last"):
    """The side-by-side comparison: a rich Table for 'table', else a string."""
    rows = comparison_rows(records, which)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if fmt == "json":
        return json.dumps({"epoch": which, "runs": rows}, indent=2)
    if fmt == "csv":
        return records_csv(rows)
    # for reading, runs are columns and metrics rows: baseline and MDN sit next to each other
    header = ["", *(str(row["run"]) for row in rows)]
    cells = [[c, *(cell(row.get(c)) for row in rows)] for c in columns if c != "run"]
    if fmt == "markdown":
        return markdown_table(header, cells)
    return rich_table(f"runs ({which} epoch)", header, cells, ["left"] + ["right"] * (len(header) - 1))


def render_records(header: list[str], cells: list[list[str]], records: list[dict], fmt: str, title: str):
    """Records as JSON (from ``records``), or as CSV, markdown or a rich table (from ``cells``)."""
    if fmt == "json":
        return json.dumps(records, indent=2)
    if fmt == "csv":
        return csv_table(header, cells)
    if fmt == "markdown":
        return markdown_table(header, cells)
    return rich_table(title, header, cells)


def rich_table(title: str, header: list[str], cells: list[list[str]], justify: list[str] | None = None) -> Table:
    """Text cells as a rich Table; cells are plain text, never markup (``dcor2[cf|all]``)."""
    table = Table(title=title, title_justify="left")
    for name, side in zip(header, justify or ["left"] * len(header)):
        table.add_column(name, justify=side)
    for row in cells:
        table.add_row(*map(Text, row))
    return table


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured markdown table."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows])


def csv_table(header: list[str], rows: list[list]) -> str:
    """A CSV text with a header line (None is written as an empty cell)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def records_csv(rows: list[dict]) -> str:
    """Rows as CSV, with the union of their keys (in first-seen order) as the header."""
    header = list(dict.fromkeys(k for row in rows for k in row))
    return csv_table(header, [[row.get(k) for k in header] for row in rows])


def cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list) -> str:
    """One character per value, scaled between the series' min and max (' ' where missing)."""
    present = [v for v in values if v is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    span = high - low
    return "".join(" " if v is None else SPARK[0 if span == 0 else min(len(SPARK) - 1, int((v - low) / span * len(SPARK)))] for v in values)


def _metric_rows(detail: dict) -> list[list[str]]:
    keys = [k for k in ("epoch", "train_loss", "val_loss", "val_acc", "val_balanced_acc", "val_auc", "seconds") if any(k in (detail[w] or {}) for w in ("best", "last"))]
    return [["", *keys]] + [[which, *(cell((detail[which] or {}).get(k)) for k in keys)] for which in ("best", "last")]


def evaluation_rows(evaluations: list[dict]) -> list[list[str]]:
    """One row per kept evaluation: its rows, checkpoint, n and overall metrics (with interval or ± sd)."""
    names = list(dict.fromkeys(name for e in evaluations for name in e["overall"]))
    rows = [["file", "split", "checkpoint", "n", *names]]
    for e in evaluations:
        cells = []
        for name in names:
            value, interval, sd = e["overall"].get(name), e["intervals"].get(name), e["sd"].get(name)
            text = "n/a" if value is None else f"{value:.3f}"
            cells.append(text + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "") + (f" ± {sd:.3f}" if sd is not None else ""))
        rows.append([e["file"], e["split"], Path(str(e["checkpoint"])).stem, str(e["n"]), *cells])
    return rows


def _dcor_rows(detail: dict) -> list[list[str]]:
    rows = [["column", "stratum", "first", "best epoch", "last", "per epoch"]]
    epochs = detail["epochs"]
    best_epoch = (detail["best"] or {}).get("epoch")
    at_best = epochs.index(best_epoch) if best_epoch in epochs else None
    for column, strata in detail["dcor2_per_epoch"].items():
        for stratum, values in strata.items():
            rows.append([column, stratum, cell(values[0]), cell(values[at_best] if at_best is not None else None), cell(values[-1]), sparkline(values)])
    return rows


def _spec_rows(spec: dict) -> list[list[str]]:
    def text(value):
        if isinstance(value, list):
            return ", ".join(map(str, value)) or "none"
        if isinstance(value, dict):
            return " / ".join(f"{k} {v}" for k, v in value.items())
        return f"{value:g}" if isinstance(value, float) else cell(value)

    return [[key, text(value)] for key, value in spec.items() if key != "run"]


def render_detail(record: RunRecord, fmt: str = "table"):
    """One run: spec summary, best/last metrics, dcor² per column and class with a sparkline."""
    detail = run_detail(record)
    if fmt == "json":
        return json.dumps({"run": record.name, **detail}, indent=2)
    if fmt == "csv":  # the per-epoch history, flat: one row per epoch
        rows = comparison_rows([RunRecord(record.name, record.summary, [m]) for m in record.history], "last")
        for row in rows:
            row.pop("epochs", None)
        return records_csv(rows)
    sections = [("spec", [["key", "value"], *_spec_rows(detail["spec"])]), ("metrics", _metric_rows(detail)), ("dcor² of the monitored layer", _dcor_rows(detail))]
    if detail["evaluations"]:
        sections.append(("evaluations (mdn evaluate)", evaluation_rows(detail["evaluations"])))
    if detail["stages"]:
        sections += stage_sections(detail["stages"])
    if fmt == "markdown":
        return f"## Run {record.name}\n" + render_sections(record.name, sections, fmt)
    return render_sections(record.name, sections, fmt)


def render_sections(name: str, sections: list[tuple[str, list[list[str]]]], fmt: str = "table"):
    """Titled tables of text cells (header row first) as markdown, or as rich tables titled ``name: title``."""
    if fmt == "markdown":
        return "\n".join(part for title, rows in sections for part in (f"### {title}", "", markdown_table(rows[0], rows[1:]), ""))
    from rich.console import Group

    tables = []
    for title, rows in sections:
        justify = ["left" if i == 0 or column in ("stratum", "value", "per epoch") else "right" for i, column in enumerate(rows[0])]
        tables.append(rich_table(f"{name}: {title}", rows[0], rows[1:], justify))
    return Group(*tables)


def stage_sections(stages: dict) -> list[tuple[str, list[list[str]]]]:
    """A staged run's matrices as text cells (a list of values, one per class, joined by ' / ')."""
    text = lambda value: " / ".join(cell(v) for v in value) if isinstance(value, list) else cell(value)  # noqa: E731
    return [(f"stages: {title}", [header, *[[text(value) for value in row] for row in rows]]) for title, (header, *rows) in stage_tables(stages)]


def render_refit(result: dict, fmt: str = "table"):
    """`mdn refit`'s result: the validation metrics with the running and with the refitted betas."""
    names = list(dict.fromkeys([*result["before"], *result["after"]]))
    cells = [[name, cell(result["before"].get(name)), cell(result["after"].get(name))] for name in names]
    return render_records(["validation", "before (running beta)", "after (refitted beta)"], cells, result, fmt, f"refit of {result['from']}")


def render_report(records: list[RunRecord], fmt: str = "table", which: str = "last"):
    """One run in detail, several side by side."""
    return render_detail(records[0], fmt) if len(records) == 1 else render_runs(records, fmt, which)
