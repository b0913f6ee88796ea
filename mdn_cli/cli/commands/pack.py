"""`mdn pack`."""

from __future__ import annotations

from pathlib import Path

import typer

from mdn_cli.cli.app import (
    SET_OPT,
    SPEC_ARG,
    OutputFormat,
    app,
    load_spec,
    row_progress,
    show_summary,
)


@app.command()
def pack(
    spec_path: Path = SPEC_ARG,
    output: Path = typer.Option(..., "--output", "-o", help="New folder for inputs.h5 and spec.yaml."),
    overrides: list[str] = SET_OPT,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Format of the summary on stdout."),
) -> None:
    """Decode a file-based study once into DIR/inputs.h5, with DIR/spec.yaml that trains on it.

    Every file named in data.path_column is read and data.transform applied; data.augment stays
    in the new spec (it is drawn per epoch). 8- and 16-bit samples stay integers when the
    transforms only move or select values. Training on DIR/spec.yaml gives the same numbers as
    training on the files. The folder is written under a temporary name and renamed.

    Example: mdn pack sample_data/synthetic_png/mdn.yaml -o packed/ && mdn train packed/spec.yaml -o runs/packed
    """
    from mdn_cli.analysis.pack import pack as run_pack

    spec = load_spec(spec_path, overrides)
    with row_progress(quiet, "pack") as advance:
        result = run_pack(spec, output, progress=advance)
    show_summary(result, fmt, f"wrote {output}")
