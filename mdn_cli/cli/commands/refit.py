"""`mdn refit`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mdn_cli.cli.app import (
    Device,
    OutputFormat,
    app,
    err_console,
    show,
)


@app.command()
def refit(
    run_dir: Path = typer.Argument(..., help="Run directory of `mdn train`.", metavar="RUNDIR"),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, a NAME in the run's checkpoints/, or a PATH."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Checkpoint to write (default: checkpoints/<name>-refit.pt)."),
    device: Optional[Device] = typer.Option(None, "--device", help="Where the model runs (default: the spec's train.device)."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
) -> None:
    """Refit every MDN layer's eval-mode beta on the run's whole training set, as a new checkpoint.

    Eval mode uses a running average of the training batches' betas; with small batches that
    estimate is noisy. This replaces it with the exact least-squares fit over all training rows,
    layer by layer in the order the model runs them (as update_bn does for BatchNorm), and shows
    the validation metrics before and after. The original checkpoint is kept; use the new one with
    `mdn extract --checkpoint best-refit`. Needs the run's training data.

    Example: mdn refit runs/mdn-b32 && mdn extract runs/mdn-b32 --checkpoint best-refit -l fc1 -o fc1.h5
    """
    from mdn_cli.analysis.refit import refit_run
    from mdn_cli.cli.render import render_refit
    from mdn_cli.config.run_files import run_files
    from mdn_cli.model.checkpoint import checkpoint_path
    from mdn_cli.utils.fileio import check_outputs

    if output is not None:  # the default, <name>-refit.pt, is refit's own to replace
        check_outputs({"-o": output}, {"--checkpoint": checkpoint_path(run_dir, checkpoint)},
                      owned={f"run directory {run_dir}": [f for f in run_files(run_dir) if not f.name.endswith("-refit.pt")]})
    result = refit_run(run_dir, checkpoint, device.value if device else None, output)
    err_console().print(f"wrote {result['checkpoint']} (betas fitted on {result['rows']} training rows)", markup=False)
    show(render_refit(result, fmt.value), None)
