"""Rendering of `mdn audit` results: json, csv, markdown and a rich table, with the verdict line."""

from __future__ import annotations

import csv
import io
import json
from typing import Optional

from mdn_cli.data.audit import ROW_KEYS, AuditResult, AuditRow

# The human-readable views (markdown, rich): header and alignment of each column, then the cells.
_DISPLAY_COLUMNS = [("column", "left"), ("kind", "left"), ("stratum", "left"), ("n", "right"),
                    ("missing", "right"), ("dcor²", "right"), ("p-value", "right"), ("note", "left")]  # fmt: skip


def _number(value: Optional[float], digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def _pvalue(value: Optional[float]) -> str:
    """Small p-values in scientific notation: 0.0000 would hide 1e-3 vs 1e-30."""
    return "—" if value is None else f"{value:.3g}"


def _display_columns(result: AuditResult) -> list[tuple[str, str]]:
    """The display columns, with "given" and "interval" only when the audit asked for them."""
    columns = list(_DISPLAY_COLUMNS)
    if result.settings.get("given"):
        columns.insert(1, ("given", "left"))
    if result.settings.get("ci"):
        columns.insert(columns.index(("dcor²", "right")) + 1, (f"{result.settings['ci']:g} interval", "right"))
    return columns


def _display_cells(row: AuditRow, result: AuditResult) -> list[str]:
    cells = [row.column, row.kind, row.stratum or "all", str(row.n), str(row.n_missing),
             _number(row.dcor2), _pvalue(row.pvalue), row.note or ""]  # fmt: skip
    if result.settings.get("ci"):
        interval = "—" if row.ci_low is None else f"[{_number(row.ci_low)}, {_number(row.ci_high)}]"
        cells.insert(6, interval)
    if result.settings.get("given"):
        cells.insert(1, row.given or "")
    return cells


def verdict(result: AuditResult, fail_above: Optional[float] = None) -> str:
    """One line a reader can act on: the threshold's verdict, or the largest dcor²."""
    computed = [row for row in result.rows if row.dcor2 is not None]
    if fail_above is not None:
        above = result.above(fail_above)
        if not above:
            scope = "per-stratum dcor²" if any(row.stratum is not None for row in result.rows) else "dcor²"
            return f"PASS: every {scope} is at most {fail_above:g}."
        worst = ", ".join(f"{_label(row)} {row.dcor2:.4f}" for row in above[:5])
        return f"FAIL: {len(above)} result(s) above {fail_above:g}: {worst}."
    if not computed:
        return "No dcor² could be computed (see the notes)."
    top = max(computed, key=lambda row: row.dcor2)
    return f"Largest dcor²: {_label(top)} = {top.dcor2:.4f}."


def _label(row: AuditRow) -> str:
    return f"{row.column}{'' if row.given is None else ' | ' + row.given} ({row.stratum or 'all'})"


def _caption(result: AuditResult) -> str:
    settings = result.settings
    test = {"permutation": f"permutation test, {settings['permutations']} permutations, seed {settings['seed']}",
            "t": "distance-correlation t-test"}.get(settings["test"], "no test (no p-values)")  # fmt: skip
    parts = [f"n = {result.n}", "dcor² = bias-corrected (U) squared distance correlation", test]
    if settings.get("given"):
        parts.append("rows with a given column: partial dcor² given it (Székely & Rizzo 2014)")
    if settings.get("ci"):
        parts.append(f"{settings['ci']:g} intervals: {settings['ci_method']}, normal (estimate ± z·se)")
    if settings.get("permute_within"):
        parts.append(f"shuffles within blocks of {settings['permute_within']}")
    if settings.get("sample"):
        parts.append(f"SAMPLE of {settings['sample']} rows (seed {settings['seed']})")
    if result.table.get("unused_rows"):
        parts.append(f"{result.table['unused_rows']} table rows without features left out")
    return "; ".join(parts)


def render_json(result: AuditResult) -> str:
    return json.dumps(result.to_dict(), indent=2)


def render_csv(result: AuditResult) -> str:
    buffer = io.StringIO()
    rows = result.row_dicts()
    names = [key for key in ROW_KEYS if not rows or key in rows[0]]
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: ("" if value is None else value) for key, value in row.items()})
    return buffer.getvalue()


def render_markdown(result: AuditResult, fail_above: Optional[float] = None) -> str:
    columns = _display_columns(result)
    lines = [
        "| " + " | ".join(name for name, _ in columns) + " |",
        "|" + "|".join("---:" if justify == "right" else "---" for _, justify in columns) + "|",
    ]
    lines += ["| " + " | ".join(_display_cells(row, result)) + " |" for row in result.rows]
    return "\n".join(lines) + f"\n\n{_caption(result)}\n\n{verdict(result, fail_above)}\n"


def render_table(result: AuditResult, fail_above: Optional[float] = None):
    """A rich Table for the terminal; the caption carries the settings and the verdict."""
    from rich.table import Table

    table = Table(title="dcor² audit", caption=f"{_caption(result)}\n{verdict(result, fail_above)}",
                  caption_justify="left")  # fmt: skip
    for name, justify in _display_columns(result):
        table.add_column(name, justify=justify, no_wrap=name != "note")
    for row in result.rows:
        above = fail_above is not None and row.dcor2 is not None and row.dcor2 > fail_above
        table.add_row(*_display_cells(row, result), style="bold red" if above else None)
    return table
