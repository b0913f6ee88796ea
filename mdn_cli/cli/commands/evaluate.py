"""`mdn evaluate`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mdn_cli.cli.app import Device, OutputFormat, app, err_console, show
from mdn_cli.utils.errors import MdnError


@app.command()
def evaluate(
    run_dir: Path = typer.Argument(..., help="Run directory of `mdn train`.", metavar="RUNDIR"),
    split: str = typer.Option("test", "--split", help="Rows of the run's data: test, val, train or all."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, a NAME in the run's checkpoints/ (e.g. best-refit), or a PATH."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="New data instead of a split: HDF5 inputs (same dataset names as the spec)."),
    table: Optional[str] = typer.Option(None, "--table", help="The table of --inputs, or alone for a run that reads files (.csv, .tsv or .parquet, with the spec's label and metadata columns)."),
    by: list[str] = typer.Option([], "--by", help="Column to group the metrics by (repeatable; default: the spec's metadata columns)."),
    bins: int = typer.Option(4, "--bins", min=2, help="Quantile groups for a numeric --by column."),
    layer: Optional[str] = typer.Option(None, "--layer", help="Layer whose dcor² with the metadata to report (default: train.monitor)."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", help="Percentile bootstrap intervals from B resamples (rows within label classes)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    level: float = typer.Option(0.95, "--level", help="Confidence level of the intervals."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Also write one row per sample (id, split, label, scores, predicted class, metadata) as CSV."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Rows per forward pass (default: the spec's)."),
    device: Optional[Device] = typer.Option(None, "--device", help="Where the model runs (default: the spec's train.device)."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to FILE instead of stdout."),
    log: bool = typer.Option(False, "--log", help="Also log the result to the run's TensorBoard and MLflow records (its train.loggers)."),
) -> None:
    """Score a trained run: metrics overall and per metadata group, the gaps between groups,
    bootstrap intervals, and the monitored layer's dcor² with the metadata per class.

    The result is also kept in the run as RUNDIR/eval/<split>-<checkpoint>.json (`mdn report`
    shows it). Numeric --by columns are cut into --bins quantile groups. -o and --predictions
    are replaced when they exist (as a shell's `>` would), but never an input or a file of the run.

    Example: mdn evaluate runs/mdn --split test --by cf --bootstrap 1000 --predictions preds.csv
    """
    from mdn_cli.analysis.evaluate import evaluate_run, log_result, save_result
    from mdn_cli.cli.render_evaluate import render_evaluation
    from mdn_cli.config.run_files import run_files
    from mdn_cli.utils.fileio import atomic_path, check_outputs

    check_outputs({"-o": output, "--predictions": predictions}, {"--inputs": inputs, "--table": table}, owned={f"run directory {run_dir}": run_files(run_dir)})
    evaluation = evaluate_run(run_dir, split=split, checkpoint=checkpoint, inputs=inputs, table=table, device=device.value if device else None,
                              by=by or None, bins=bins, layer=layer, n_boot=bootstrap, seed=seed, level=level, batch_size=batch_size)  # fmt: skip
    if predictions is not None:
        with atomic_path(predictions) as tmp:
            evaluation.predictions.to_csv(tmp, index=False)
    try:
        saved = save_result(run_dir, evaluation)
    except MdnError as exc:  # a read-only run (a shared or archived one) is still scored; only the copy is not kept
        if log:
            raise
        kept = f"not kept in the run ({exc.message})"
    else:
        kept = f"kept in {saved}"
        if log:
            log_result(run_dir, evaluation, saved)
    show(render_evaluation(evaluation.result, fmt.value), output)
    err_console().print(kept + (f"; predictions in {predictions}" if predictions else "") + ("; logged to the run's records" if log else ""), markup=False)
