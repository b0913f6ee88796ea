"""`mdn extract`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mdn_cli.cli.app import (
    Device,
    OutputFormat,
    app,
    row_progress,
    show_summary,
)


@app.command()
def extract(
    run_dir: Path = typer.Argument(..., help="Run directory of `mdn train`.", metavar="RUNDIR"),
    layer: list[str] = typer.Option(..., "--layer", "-l", help="Layer whose features to write (repeatable; `mdn layers RUNDIR` lists them)."),
    output: Path = typer.Option(..., "--output", "-o", help="HDF5 file to write: `features` (n, d), or `features/<layer>` for several layers, and `ids`."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, a NAME in the run's checkpoints/ (e.g. best-refit), or a PATH."),
    split: str = typer.Option("val", "--split", help="Rows of the run's data: train, val, test or all."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="New data instead of a split: HDF5 inputs (same dataset names as the spec). Not for runs that read files (give --table alone)."),
    table: Optional[str] = typer.Option(None, "--table", help="The table of --inputs (.csv, .tsv or .parquet with the spec's metadata columns; - for CSV on stdin). Alone for a run that reads files: the table names them in the spec's path column."),
    meta_out: Optional[Path] = typer.Option(None, "--meta-out", help="Also write the matching table rows (id, label, metadata) as CSV."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Rows per forward pass (default: the spec's)."),
    force: bool = typer.Option(False, "--force", help="Replace -o and --meta-out when they exist."),
    per_clip: bool = typer.Option(False, "--per-clip", help="Videos: one row per evaluation clip (with a `clip` column), not the mean of a video's clips."),
    device: Optional[Device] = typer.Option(None, "--device", help="Where the model runs (default: the spec's train.device)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Format of the summary on stdout."),
) -> None:
    """Write a trained model's features of one or more layers to HDF5, batch by batch.

    MDN layers run in eval mode with their running beta and each row's metadata, as in the
    paper. The file is self-describing (layer, run, checkpoint, spec hash, split, tool version)
    and written under a temporary name, then renamed; an existing file is replaced only with
    --force, and never an input or a file of the run. With --meta-out, `mdn audit` takes the pair.
    A video's row is the mean of its evaluation clips' features (data.clip.eval_clips); --per-clip
    writes every clip.

    Example: mdn extract runs/mdn --layer fc1 --split val -o fc1.h5 --meta-out fc1.csv
    Example: mdn extract runs/png --layer fc1 --table new.csv -o new_fc1.h5   (a run that reads files)
    """
    from mdn_cli.analysis.extract import extract as run_extract
    from mdn_cli.config.run_files import run_files
    from mdn_cli.model.checkpoint import load_run
    from mdn_cli.model.rows import new_source, split_source
    from mdn_cli.utils.fileio import check_outputs

    loaded = load_run(run_dir, checkpoint, device.value if device else None)
    check_outputs({"-o": output, "--meta-out": meta_out}, {"--inputs": inputs, "--table": table, "--checkpoint": loaded.checkpoint},
                  replace=force, owned={f"run directory {run_dir}": run_files(run_dir)})
    for name in layer:
        loaded.network.feature_module(name, where="--layer", target=str(run_dir))  # unknown names fail here, before any output exists
    source = new_source(loaded, inputs, table) or split_source(loaded, split)
    progress = row_progress(quiet, "extract")
    with progress as advance:
        result = run_extract(loaded, layer, source, output, meta_out=meta_out, batch_size=batch_size, per_clip=per_clip, progress=advance)
    show_summary(result, fmt, f"wrote {output}")
