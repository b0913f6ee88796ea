"""Readable reports of training runs: one run in detail, or several side by side, as table/json/markdown/csv.

Pure rendering: records in, rich renderables or text out. Plots live in ``plots``.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.table import Table
from rich.text import Text

from mdn_cli.errors import MdnError
from mdn_cli.fileio import read_json


@dataclass
class RunRecord:
    """What a run directory says about itself: its summary and its per-epoch metrics."""

    name: str
    summary: dict
    history: list[dict] = field(default_factory=list)

    @classmethod
    def from_summary(cls, summary: dict) -> "RunRecord":
        history = [m for m in (summary.get("best"), summary.get("last")) if m]
        return cls(Path(summary["run_dir"]).name, summary, history)

    @classmethod
    def from_dir(cls, run_dir: str | Path) -> "RunRecord":
        run_dir = Path(run_dir)
        metrics_path = run_dir / "metrics.jsonl"
        if not metrics_path.exists():
            raise MdnError("not a run directory (no metrics.jsonl).", where=str(run_dir), hint="pass the -o folder of `mdn train`.")
        try:
            history = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise MdnError(f"metrics.jsonl is not valid JSON lines ({exc}).", where=str(metrics_path), hint=None) from None
        summary_path = run_dir / "summary.json"
        summary = read_json(summary_path, hint="rerun or --resume the training to rewrite it.") if summary_path.exists() else {"finished": False}
        summary["run_dir"] = str(run_dir)
        return cls(run_dir.name, summary, history)

    @property
    def config(self) -> dict:
        """The run's resolved spec (config.yaml) as plain data; {} when absent."""
        path = Path(self.summary.get("run_dir", "")) / "config.yaml"
        if not path.is_file():
            return {}
        import yaml

        try:
            return yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            return {}

    def dcor_history(self) -> dict[str, dict[str, list]]:
        """column -> stratum -> dcor² per epoch (None where an epoch lacks it)."""
        keys = {(c, s): None for m in self.history for c, values in (m.get("dcor2") or {}).items() for s in values}
        history: dict[str, dict[str, list]] = {}
        for column, stratum in keys:
            history.setdefault(column, {})[stratum] = [((m.get("dcor2") or {}).get(column) or {}).get(stratum) for m in self.history]
        return history

    def epoch(self, which: str) -> dict | None:
        if not self.history:
            return None
        if which == "last":
            return self.history[-1]
        best = (self.summary.get("best") or {}).get("epoch")
        return next((m for m in self.history if m["epoch"] == best), self.history[-1])


def metric_row(metrics: dict) -> dict:
    """An epoch's metrics flat: accuracy, losses, and ``dcor2[column|stratum]``."""
    row = {key: metrics[key] for key in ("val_acc", "val_loss", "train_loss") if key in metrics}
    for column, values in (metrics.get("dcor2") or {}).items():
        for stratum, value in values.items():
            row[f"dcor2[{column}|{stratum}]"] = value
    return row


def comparison_rows(records: list[RunRecord], which: str = "last") -> list[dict]:
    """One flat row per run: accuracy, losses, and dcor² per metadata column and stratum."""
    rows = []
    for record in records:
        m = record.epoch(which) or {}
        row = {"run": record.name, "epoch": m.get("epoch"), "epochs": record.summary.get("epochs", len(record.history))}
        row.update(metric_row(m))
        row["seconds"] = m.get("seconds")
        rows.append(row)
    return rows


def render_runs(records: list[RunRecord], fmt: str = "table", which: str = "last"):
    """The side-by-side comparison: a rich Table for 'table', else a string."""
    rows = comparison_rows(records, which)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    if fmt == "json":
        return json.dumps({"epoch": which, "runs": rows}, indent=2)
    if fmt == "csv":
        return _csv_text(rows)
    # for reading, runs are columns and metrics rows: baseline and MDN sit next to each other
    header = ["", *(str(row["run"]) for row in rows)]
    cells = [[c, *(_cell(row.get(c)) for row in rows)] for c in columns if c != "run"]
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


def _csv_text(rows: list[dict]) -> str:
    """Rows as CSV, with the union of their keys (in first-seen order) as the header."""
    header = list(dict.fromkeys(k for row in rows for k in row))
    return csv_table(header, [[row.get(k) for k in header] for row in rows])


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


# -- one run in detail -------------------------------------------------------------------------
SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list) -> str:
    """One character per value, scaled between the series' min and max (' ' where missing)."""
    present = [v for v in values if v is not None]
    if not present:
        return ""
    low, high = min(present), max(present)
    span = high - low
    return "".join(" " if v is None else SPARK[0 if span == 0 else min(len(SPARK) - 1, int((v - low) / span * len(SPARK)))] for v in values)


def spec_summary(record: RunRecord) -> dict:
    """What was trained, in a few keys: data roles, model and MDN placement, training settings."""
    config, summary = record.config, record.summary
    data, model, mdn, train = (config.get(k) or {} for k in ("data", "model", "mdn", "train"))
    layers = model.get("layers") or []
    named = [layer.get("name") or layer.get("type") for layer in layers]
    inline = [named[i - 1] for i, layer in enumerate(layers) if layer.get("type") == "mdn" and i > 0]
    mdn_after = inline + list(model.get("mdn_after") or [])  # MDN layers in the list, and attached by name
    model_text = f"{len(layers)} layers" if layers else str(model.get("factory"))
    return {
        "run": record.name,
        "task": train.get("task", summary.get("task")),
        "label": data.get("label"),
        "metadata": data.get("metadata"),
        "preserve": mdn.get("preserve"),
        "model": model_text,
        "mdn_placed_after": mdn_after,
        "mdn_variant": mdn.get("variant", "batch") if mdn_after else None,
        "momentum": mdn.get("momentum") if mdn_after and mdn.get("variant", "batch") == "batch" else None,
        "epochs": len(record.history),
        "batch_size": train.get("batch_size"),
        "optimizer": train.get("optimizer"),
        "lr": train.get("lr"),
        "seed": train.get("seed"),
        "monitor": train.get("monitor", summary.get("monitor")),
        "n": summary.get("n"),
        "seconds": (record.history[-1].get("seconds") if record.history else None),
    }


def run_detail(record: RunRecord) -> dict:
    """The single-run report as data: spec summary, best and last epoch, dcor² per epoch."""
    return {
        "spec": spec_summary(record),
        "best": record.epoch("best"),
        "last": record.epoch("last"),
        "epochs": [m.get("epoch") for m in record.history],
        "dcor2_per_epoch": record.dcor_history(),
    }


def _metric_rows(detail: dict) -> list[list[str]]:
    keys = [k for k in ("epoch", "train_loss", "val_loss", "val_acc", "seconds") if any(k in (detail[w] or {}) for w in ("best", "last"))]
    return [["", *keys]] + [[which, *(_cell((detail[which] or {}).get(k)) for k in keys)] for which in ("best", "last")]


def _dcor_rows(detail: dict) -> list[list[str]]:
    rows = [["column", "stratum", "first", "best epoch", "last", "per epoch"]]
    epochs = detail["epochs"]
    best_epoch = (detail["best"] or {}).get("epoch")
    at_best = epochs.index(best_epoch) if best_epoch in epochs else None
    for column, strata in detail["dcor2_per_epoch"].items():
        for stratum, values in strata.items():
            rows.append([column, stratum, _cell(values[0]), _cell(values[at_best] if at_best is not None else None), _cell(values[-1]), sparkline(values)])
    return rows


def _spec_rows(spec: dict) -> list[list[str]]:
    def text(value):
        if isinstance(value, list):
            return ", ".join(map(str, value)) or "none"
        if isinstance(value, dict):
            return " / ".join(f"{k} {v}" for k, v in value.items())
        return f"{value:g}" if isinstance(value, float) else _cell(value)

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
        return _csv_text(rows)
    sections = [("spec", [["key", "value"], *_spec_rows(detail["spec"])]), ("metrics", _metric_rows(detail)), ("dcor² of the monitored layer", _dcor_rows(detail))]
    if fmt == "markdown":
        parts = [f"## Run {record.name}"]
        for title, rows in sections:
            parts += [f"### {title}", "", markdown_table(rows[0], rows[1:]), ""]
        return "\n".join(parts)
    from rich.console import Group

    tables = []
    for title, rows in sections:
        justify = ["left" if i == 0 or name in ("stratum", "value", "per epoch") else "right" for i, name in enumerate(rows[0])]
        tables.append(rich_table(f"{record.name}: {title}", rows[0], rows[1:], justify))
    return Group(*tables)


def render_refit(result: dict, fmt: str = "table"):
    """`mdn refit`'s result: the validation metrics with the running and with the refitted betas."""
    names = list(dict.fromkeys([*result["before"], *result["after"]]))
    cells = [[name, _cell(result["before"].get(name)), _cell(result["after"].get(name))] for name in names]
    return render_records(["validation", "before (running beta)", "after (refitted beta)"], cells, result, fmt, f"refit of {result['from']}")


def render_report(records: list[RunRecord], fmt: str = "table", which: str = "last"):
    """One run in detail, several side by side."""
    return render_detail(records[0], fmt) if len(records) == 1 else render_runs(records, fmt, which)


def load_audit(path: str | Path) -> dict:
    """An `mdn audit --format json` result, checked for the keys the report uses."""
    path = Path(path)
    audit = read_json(path, hint="give the JSON written by `mdn audit --format json`.")
    results = audit.get("results") if isinstance(audit, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) and "column" in r and "dcor2" in r for r in results):
        raise MdnError("not an audit result (no results with column and dcor2).", where=str(path), hint="give the JSON written by `mdn audit --format json`.")
    audit["name"] = path.stem
    return audit
