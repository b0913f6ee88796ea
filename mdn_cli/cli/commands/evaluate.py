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
    table: Optional[str] = typer.Option(None, "--table", help="The table of --inputs, or alone for a run that reads files (CSV with the spec's label and metadata columns)."),
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
) -> None:
    """Score a trained run: metrics overall and per metadata group, the gaps between groups,
    bootstrap intervals, and the monitored layer's dcor² with the metadata per class.

    The result is also kept in the run as RUNDIR/eval/<split>-<checkpoint>.json (`mdn report`
    shows it). Numeric --by columns are cut into --bins quantile groups.

    Example: mdn evaluate runs/mdn --split test --by cf --bootstrap 1000 --predictions preds.csv
    """
    from mdn_cli.cli.render_evaluate import render_evaluation
    from mdn_cli.train.crossval import fold_dirs, is_cv_run
    from mdn_cli.analysis.evaluate import Part, across_folds, row_splits, save_result
    from mdn_cli.analysis.evaluate import evaluate as run_evaluation
    from mdn_cli.analysis.extract import new_source, split_source
    from mdn_cli.utils.fileio import atomic_path
    from mdn_cli.model.checkpoint import load_run

    options = dict(by=by or None, bins=bins, layer=layer, n_boot=bootstrap, seed=seed, level=level, batch_size=batch_size)
    runs = fold_dirs(run_dir) if is_cv_run(run_dir) else [run_dir]
    new_data = inputs is not None or table is not None
    if len(runs) > 1 and split == "train" and not new_data:
        raise MdnError("each fold of a cross-validation has its own training rows.", where="--split",
                       hint=f"use val (out of fold), test or all, or evaluate one fold's run ({run_dir}/fold-0).")  # fmt: skip
    loaded_runs = [load_run(path, checkpoint, device.value if device else None) for path in runs]
    rows = Path(inputs or table).stem if new_data else split
    folds = list(range(len(runs))) if len(runs) > 1 else [None]

    def part(loaded, fold):
        source = new_source(loaded, inputs, table)
        if source is not None:
            return Part(loaded, source, rows, fold)
        return Part(loaded, split_source(loaded, split), row_splits(loaded, split), fold)

    if len(runs) > 1 and split == "val" and not new_data:  # out of fold: each model on its own held-out rows
        result, predictions_out = run_evaluation([part(loaded, fold) for loaded, fold in zip(loaded_runs, folds)], **options)
    elif len(runs) > 1:  # every fold's model on the same rows
        if bootstrap is not None:
            raise MdnError("--bootstrap on a cross-validation's shared rows is not supported: the folds' spread is the interval.", where="--bootstrap",
                           hint="leave out --bootstrap (the result is mean ± sd over the folds), or use --split val for out-of-fold predictions.")  # fmt: skip
        each = [run_evaluation([part(loaded, fold)], **options) for loaded, fold in zip(loaded_runs, folds)]
        result, predictions_out = across_folds([r for r, _ in each], [p for _, p in each], folds)
    else:
        result, predictions_out = run_evaluation([part(loaded_runs[0], None)], **options)
    if predictions is not None:
        with atomic_path(predictions) as tmp:
            predictions_out.to_csv(tmp, index=False)
    saved = save_result(run_dir, result, rows, loaded_runs[0].checkpoint.stem)
    show(render_evaluation(result, fmt.value), output)
    err_console().print(f"kept in {saved}" + (f"; predictions in {predictions}" if predictions else ""), markup=False)
