"""`mdn audit`."""

from __future__ import annotations

import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from mdn_cli.cli.app import (
    EXIT_THRESHOLD,
    Device,
    OutputFormat,
    app,
    err_console,
    names,
    row_progress,
    show,
)
from mdn_cli.utils.errors import MdnError


class AuditTest(str, Enum):
    permutation = "permutation"
    t = "t"


@app.command(
    epilog=(
        "Exit codes: 0 done (and, with --fail-above, every dcor² at most X); 1 some dcor² above "
        "--fail-above; 2 usage or input error.\n\n"
        "Examples: mdn audit features.h5 meta.csv --by label --test t; "
        "mdn audit features.h5 meta.csv --format json | jq '.results[] | select(.dcor2 > 0.1)'; "
        "cut -d, -f1,3 meta.csv | mdn audit features.h5 - --fail-above 0.05; "
        "mdn audit features.h5 meta.csv --columns cf --given age --ci 0.95 --test permutation --permute-within site"
    )
)
def audit(
    features: Path = typer.Argument(..., help="HDF5 file with the features (samples on axis 0).", metavar="FEATURES.h5"),
    table: str = typer.Argument(..., help="Metadata table (.csv, .tsv or .parquet), or - for CSV on stdin.", metavar="TABLE|-"),
    dataset: str = typer.Option("features", "--dataset", help="Dataset inside FEATURES.h5 (any rank)."),
    id_column: Optional[str] = typer.Option(
        None, "--id-column", help="Table column matching the 'ids' dataset [default: id, when both sides have ids]."
    ),
    columns: Optional[str] = typer.Option(None, "--columns", help="Columns to audit, comma-separated [default: all but id and --by]."),
    categorical: Optional[str] = typer.Option(None, "--categorical", help="Columns to treat as categories (strings always are)."),
    by: Optional[str] = typer.Option(None, "--by", help="Also report each stratum of this column (e.g. the label)."),
    test: Optional[AuditTest] = typer.Option(None, "--test", help="Test of independence for p-values [default: none]."),
    permutations: int = typer.Option(999, "--permutations", min=1, help="Permutations for --test permutation."),
    seed: int = typer.Option(0, "--seed", help="Seed for permutations and --sample."),
    sample: Optional[int] = typer.Option(None, "--sample", min=4, help="Audit a seeded random subset of N rows (flagged)."),
    fail_above: Optional[float] = typer.Option(None, "--fail-above", help="Exit 1 when any dcor² exceeds X: per stratum with --by, else pooled."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write to FILE instead of stdout."),
    float64: bool = typer.Option(False, "--float64", help="Distance tiles in float64 (slower; float32 is exact to ~1e-6)."),
    device: Device = typer.Option(Device.cpu, "--device", help="Where the tiles and their sums are computed (auto: a GPU when there is one)."),
    given: list[str] = typer.Option([], "--given", help="Also report partial dcor² of each column given COL (repeatable)."),
    ci: Optional[float] = typer.Option(None, "--ci", help="Jackknife normal intervals at this level, e.g. 0.95 (two passes)."),
    cluster: Optional[str] = typer.Option(None, "--cluster", help="With --ci: leave out whole groups of COL (e.g. subjects) instead of rows."),
    permute_within: Optional[str] = typer.Option(None, "--permute-within", help="Permutation shuffles only within blocks of COL (e.g. site)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Share the tiles over N processes (runs torchrun; gloo on CPU, nccl on GPU); the same results as one."),
) -> None:
    """Measure how much each metadata column still shapes a set of features: dcor² per column.

    Reports the bias-corrected squared distance correlation (U-statistic, as in the MDN paper;
    about 0 when independent, can be slightly negative) of the features with each metadata
    column, pooled and per --by stratum, computed exactly in memory-bounded tiles. Rows join by
    id (every feature id needs a table row; extra table rows are left out and counted), or by
    row order when there are no ids. Missing metadata values leave out that row for that column
    only. Progress goes to stderr, results to stdout.
    """
    from mdn_cli.analysis.audit import run_audit
    from mdn_cli.cli.render_audit import render_csv, render_json, render_markdown, render_table, verdict
    from mdn_cli.utils.distributed import device_for, launch, resolve_device, session
    from mdn_cli.utils.fileio import check_outputs

    check_outputs({"-o": output}, {"FEATURES.h5": features, "TABLE": table})

    if table == "-" and sys.stdin.isatty():
        raise MdnError("TABLE is - but nothing is piped to stdin.", where="TABLE", hint="pipe a CSV in, or pass its path.")
    options = dict(
        by=by,
        categorical=names(categorical) or (),
        test=test.value if test else None,
        permutations=permutations,
        seed=seed,
        sample=sample,
        dtype="float64" if float64 else "float32",
        given=given,
        ci=ci,
        cluster=cluster,
        permute_within=permute_within,
    )
    if cluster is not None and ci is None:
        raise MdnError("--cluster only says which rows the jackknife leaves out together.", where="--cluster", hint="add --ci LEVEL.")
    if permute_within is not None and (test is None or test.value != "permutation"):
        raise MdnError("--permute-within only says how the permutation test shuffles.", where="--permute-within",
                       hint="add --test permutation.")  # fmt: skip
    chosen = None if device is Device.cpu else resolve_device(device.value, where="--device")  # torch only off the CPU
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        if table == "-":
            raise MdnError("--nproc cannot share a table read from stdin between processes.", where="--nproc", hint="write the table to a file and pass its path.")
        code = launch(nproc, _without_nproc(sys.argv[1:]))
        if code:
            raise typer.Exit(code)
        return
    with session(device.value) as world, row_progress(not world.is_main, "auditing") as advance:
        options["device"] = "cpu" if chosen is None else device_for(chosen)  # one GPU per process under torchrun
        options["share_over_processes"] = world.size > 1
        result = run_audit(features, table, dataset=dataset, id_column=id_column, columns=names(columns), progress=advance, **options)
    if not world.is_main:  # every process computed the same sums; rank 0 reports
        if fail_above is not None and result.above(fail_above):
            raise typer.Exit(EXIT_THRESHOLD)
        return

    if fmt == OutputFormat.json:
        show(render_json(result), output)
    elif fmt == OutputFormat.csv:
        show(render_csv(result), output)
    elif fmt == OutputFormat.markdown:
        show(render_markdown(result, fail_above), output)
    else:
        show(render_table(result, fail_above), output)
    if fmt in (OutputFormat.json, OutputFormat.csv) and fail_above is not None:
        err_console().print(verdict(result, fail_above), markup=False)
    if fail_above is not None and result.above(fail_above):
        raise typer.Exit(EXIT_THRESHOLD)


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line for each process: the same, without --nproc N."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out
