"""`mdn report`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mdn_cli.cli.app import (
    OutputFormat,
    app,
    err_console,
    show,
)
from mdn_cli.utils.errors import MdnError


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(None, help="Run directories of `mdn train` (one: in detail; several: side by side).", metavar="RUNDIR..."),
    epoch: str = typer.Option("last", "--epoch", help="Which epoch to compare side by side: last or best."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to FILE instead of stdout."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Also draw val accuracy and dcor² per epoch (and audits) into FILE.png|.pdf|.svg."),
    audits: list[Path] = typer.Option([], "--audit", help="An `mdn audit --format json` result to draw as a bar chart with p-values (repeatable)."),
) -> None:
    """Report training runs: one in detail, several side by side; optionally as a picture.

    One run: the spec in brief, the best and last epoch's metrics, and dcor² per metadata
    column and class over the epochs (sparkline). Several runs: val accuracy, dcor² per column
    and class, epochs and time, side by side.

    Example: mdn report runs/baseline runs/mdn --plot comparison.png --audit audit.json
    """
    from mdn_cli.analysis.report import RunRecord, load_audit
    from mdn_cli.cli.render import render_report
    from mdn_cli.config.run_files import CV_FILE, is_cv_run, run_files
    from mdn_cli.utils.fileio import check_outputs

    check_outputs({"-o": output, "--plot": plot}, {f"--audit {a}": a for a in audits}, owned={f"run directory {d}": run_files(d) for d in run_dirs or []})
    if epoch not in ("last", "best"):
        raise MdnError(f"--epoch must be last or best, not {epoch!r}.", where="--epoch", hint=None)
    if not run_dirs and not audits:
        raise MdnError("nothing to report.", where="RUNDIR", hint="give run directories of `mdn train` (and/or --audit FILE with --plot).")
    cv_dirs = [d for d in run_dirs or [] if is_cv_run(d)]
    if cv_dirs:  # a cross-validation: per fold and mean ± sd (its folds are ordinary runs to report one by one)
        from mdn_cli.cli.render_evaluate import render_cv
        from mdn_cli.utils.fileio import read_json

        if len(cv_dirs) != len(run_dirs) or plot is not None:
            raise MdnError("a cross-validation is reported on its own.", where=str(cv_dirs[0]),
                           hint="give only cross-validation directories (or its fold-<i>/ runs), without --plot.")  # fmt: skip
        from mdn_cli.analysis.report import evaluations

        results = [{**read_json(Path(d) / CV_FILE, hint="rerun `mdn train --folds` with --resume."), "evaluations": evaluations(d)} for d in cv_dirs]
        if fmt == OutputFormat.json:
            import json

            show(json.dumps(results[0] if len(results) == 1 else results, indent=2), output)
        elif fmt == OutputFormat.table:
            from rich.console import Group

            show(Group(*(render_cv(r, "table") for r in results)), output)
        else:
            show("\n\n".join(render_cv(r, fmt.value) for r in results), output)
        return
    records = [RunRecord.from_dir(d) for d in run_dirs or []]
    audit_results = [load_audit(a) for a in audits]
    if plot is not None:
        from mdn_cli.cli.plots import check_plot_path, plot_report

        check_plot_path(plot)
    if records:
        show(render_report(records, fmt.value, epoch), output)
    if plot is not None:
        plot_report(records, plot, audit_results)
        err_console().print(f"wrote {plot}", markup=False)
