"""`mdn train`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

from mdn_cli.cli.app import (
    SET_OPT,
    SPEC_ARG,
    Device,
    OutputFormat,
    app,
    emit,
    err_console,
    load_spec,
    show,
)
from mdn_cli.utils.errors import MdnError
from mdn_cli.utils.interrupts import exit_code


@app.command()
def validate(spec_path: Path = SPEC_ARG, overrides: list[str] = SET_OPT) -> None:
    """Check a spec and report every problem at once, with key paths and line numbers.

    Checks the schema, the data files, the table's columns and the model (built with a dry run).
    For a table of sample files: every file exists, and the first of each split decodes to one
    shape after data.transform. For videos (data.clip), every video's header is read too: the
    frame counts, how many videos are shorter than a clip (played in a loop), one frame size
    after data.transform.

    Example: mdn validate sample_data/synthetic/mdn.yaml --set train.lr=1e-3
    """
    from mdn_cli.data.file_dataset import VideoSamples
    from mdn_cli.data.rows import video_survey
    from mdn_cli.nn import metadata_norm_layers
    from mdn_cli.train.run import build_run

    run = build_run(load_spec(spec_path, overrides))
    splits = run.data.splits
    videos = ""
    if isinstance(getattr(run.data.inputs, "samples", None), VideoSamples):
        survey = video_survey(run.data.inputs.samples)
        videos = (f"; {survey['videos']} videos of {survey['frames'][0]}-{survey['frames'][2]} frames (median {survey['frames'][1]}), "
                  f"{survey['looped']} shorter than a clip's {survey['clip_span']} frames and played in a loop")
    err_console().print(
        f"{spec_path}: valid ({len(splits['train'])} train / {len(splits['val'])} val rows of shape {list(run.data.sample_shape)}; design columns "
        f"{', '.join(run.data.design.column_names)}; {len(metadata_norm_layers(run.network))} MDN layer(s){videos})",
        markup=False,
    )


@app.command()
def train(
    spec_path: Path = SPEC_ARG,
    output: Path = typer.Option(..., "--output", "-o", help="Run directory for config, metrics and checkpoints."),
    overrides: list[str] = SET_OPT,
    resume: bool = typer.Option(False, "--resume", help="Continue from RUNDIR/checkpoints/last.pt."),
    print_config: bool = typer.Option(False, "--print-config", help="Print the resolved spec and exit."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Format of the summary on stdout."),
    device: Optional[Device] = typer.Option(None, "--device", help="Where to train (overrides train.device)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Train in N processes with DistributedDataParallel (runs torchrun; train.batch_size is per process)."),
    folds: Optional[int] = typer.Option(None, "--folds", help="k-fold cross-validation over the non-test rows: fold i trains into RUNDIR/fold-<i>/, summary in RUNDIR/cv.json."),
    group_column: Optional[str] = typer.Option(None, "--group-column", help="With --folds: a column (subject, site...) whose rows never straddle folds."),
    repeats: int = typer.Option(1, "--repeats", min=1, help="With --folds: repeat the k folds R times with different shuffles."),
) -> None:
    """Train a model with MDN where the spec says (or a baseline without), into RUNDIR.

    Writes RUNDIR/config.yaml, metrics.jsonl (loss, accuracy and dcor² of the monitored layer
    per epoch), checkpoints/last.pt and best.pt, and summary.json. Ctrl-C keeps the last
    epoch's checkpoint; --resume continues from it with the same results. train.early_stopping
    stops a run that no longer improves, train.scheduler: plateau lowers the rate when it stalls,
    and train.loggers records every epoch in TensorBoard and MLflow. The MDN variant
    (batch, recursive, penalty) is `mdn.variant` in the spec. Under torchrun (or --nproc N) the
    MDN statistics are synchronised over the processes and only rank 0 writes.

    Example: mdn train sample_data/synthetic/mdn.yaml -o runs/mdn --set train.epochs=5
    Example: mdn train sample_data/synthetic/mdn.yaml -o runs/ddp --nproc 2 --set train.batch_size=100
    """
    from mdn_cli.config import dump_spec
    from mdn_cli.train.loop import train as run_training

    if device is not None:
        overrides = [*overrides, f"train.device={device.value}"]
    spec = load_spec(spec_path, overrides)
    if print_config:
        emit(dump_spec(spec), None)
        return
    if folds is not None:
        _cross_validate(spec, output, folds, group_column, repeats, resume, quiet, nproc, fmt)
        return
    if group_column is not None or repeats != 1:
        raise MdnError("--group-column and --repeats go with --folds.", where="--group-column" if group_column else "--repeats", hint="add --folds K.")
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from mdn_cli.model.checkpoint import check_run_dir
        from mdn_cli.train.run import build_run
        from mdn_cli.utils.distributed import launch

        check_run_dir(output, resume)
        build_run(spec)  # data and model checked here, before the processes start (each would report the same error)

        argv = ["train", str(spec_path), "-o", str(output), "--format", fmt.value, *[a for o in overrides for a in ("--set", o)]]
        argv += ["--resume"] * resume + ["--quiet"] * quiet
        code = launch(nproc, argv)
        if code:
            raise typer.Exit(code)
        return
    from mdn_cli.cli.progress import TrainingProgress

    try:
        with TrainingProgress(err_console(), enabled=not quiet) as progress:
            summary = run_training(spec, output, resume=resume, progress=progress)
    except KeyboardInterrupt as exc:
        err_console().print(f"interrupted: {output}/checkpoints/last.pt holds the last saved epoch; continue with --resume.", markup=False)
        raise typer.Exit(exit_code(exc)) from None
    if not summary:  # a DDP rank other than 0: rank 0 reports
        return
    if fmt == OutputFormat.json:
        emit(json.dumps(summary, indent=2), None)
        return
    from mdn_cli.analysis.report import RunRecord
    from mdn_cli.cli.render import render_runs, render_sections, stage_sections

    record = RunRecord.from_summary(summary)
    if "stages" in summary and fmt != OutputFormat.csv:
        show(render_sections(record.name, stage_sections(summary["stages"]), fmt.value), None)
    show(render_runs([record], fmt.value), None)


def _cross_validate(spec, output: Path, folds: int, group_column, repeats: int, resume: bool, quiet: bool, nproc: int, fmt: OutputFormat) -> None:
    """`mdn train --folds K`: one run per fold, then the per-fold and mean ± sd table."""
    from mdn_cli.cli.progress import TrainingProgress
    from mdn_cli.cli.render_evaluate import render_cv
    from mdn_cli.train.crossval import cross_validate

    if nproc > 1 or int(os.environ.get("WORLD_SIZE", "1")) > 1:  # --nproc, or started by torchrun
        raise MdnError("--folds trains in one process.", where="--nproc", hint="leave out --nproc (and torchrun), or train the folds' specs one by one with --nproc.")
    console = err_console()
    try:
        with TrainingProgress(console, enabled=not quiet) as progress:
            result = cross_validate(spec, output, folds, group_column=group_column, repeats=repeats, resume=resume, progress=progress,
                                    on_fold=None if quiet else lambda i, n: console.print(f"fold {i + 1}/{n}", markup=False))  # fmt: skip
    except KeyboardInterrupt as exc:
        console.print(f"interrupted: finished folds are kept in {output}; continue the others with --resume.", markup=False)
        raise typer.Exit(exit_code(exc)) from None
    show(render_cv(result, fmt.value), None)
