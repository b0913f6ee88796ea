"""`mdn layers`."""

from __future__ import annotations

from pathlib import Path

import typer

from mdn_cli.cli.app import (
    OutputFormat,
    app,
    show,
)


@app.command()
def layers(
    target: Path = typer.Argument(..., help="A run directory of `mdn train`, or a spec file.", metavar="RUNDIR|SPEC"),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
) -> None:
    """List the model's named layers: dotted name, type, output shape per sample, and its MDN.

    These names are what mdn_after, train.monitor and `extract --layer` accept.

    Example: mdn layers runs/mdn --format json
    """
    from mdn_cli.analysis.layers import layers_of
    from mdn_cli.cli.render import render_records

    rows = layers_of(target)
    columns = ["name", "type", "output_shape", "mdn"]
    cells = [[r["name"], r["type"], "x".join(map(str, r["output_shape"])) if r["output_shape"] is not None else "n/a", r["mdn"] or ""] for r in rows]
    show(render_records(columns, cells, rows, fmt, title=f"layers of {target}"), None)
