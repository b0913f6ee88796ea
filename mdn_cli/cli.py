"""The `mdn` command line: parse arguments, call the library, render the result. No logic lives here.

Exit codes: 0 success (or audit below threshold), 1 a `--fail-above` threshold exceeded,
2 usage or input error, 130 interrupted.
"""

from __future__ import annotations

import ctypes
import io
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mdn_cli import __version__
from mdn_cli.errors import MdnError

EXIT_OK, EXIT_THRESHOLD, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    name="mdn",
    help=(
        "Feature debiasing with Metadata Normalization (MDN).\n\n"
        "Train networks with MDN layers that regress metadata (site, age, scanner...) out of their "
        "features, extract features, audit them with distance correlation, and report.\n\n"
        "Example: mdn synth data/ && mdn train sample_data/synthetic/mdn.yaml -o runs/mdn"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _color_enabled(stream) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def err_console() -> Console:
    """Console for progress and messages: stderr, colour only on a TTY without NO_COLOR."""
    return Console(stderr=True, no_color=not _color_enabled(sys.stderr), highlight=False, soft_wrap=True)


def out_console() -> Console:
    """Console for data on stdout (tables), colour only on a TTY without NO_COLOR."""
    return Console(no_color=not _color_enabled(sys.stdout), highlight=False, soft_wrap=True)


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class OutputFormat(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"
    markdown = "markdown"


def emit(text: str, output: Optional[Path]) -> None:
    """Write machine output to stdout, or atomically to ``output``."""
    if output is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
        return
    from mdn_cli.fileio import atomic_write_text

    atomic_write_text(output, text if text.endswith("\n") else text + "\n")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"mdn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version_callback, is_eager=True
    ),
) -> None:
    """Feature debiasing with Metadata Normalization (MDN)."""


def reuse_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse instead of unmapping it; True if it could.

    A training step frees and reallocates feature maps of the same sizes; by default glibc returns
    blocks above its mmap threshold to the system on free, so every new map is page-faulted in
    again. Keeping them is what jemalloc or tcmalloc would do (PyTorch's CPU tuning advice): the
    shipped MDN spec trains 18% faster on the CPU, an eval pass a third faster (benchmarks/README.md),
    for memory that is given back at exit rather than between steps. ``MDN_MALLOC=system`` leaves glibc's
    defaults; other C libraries are left alone.
    """
    if os.environ.get("MDN_MALLOC") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 30) and mallopt(m_trim_threshold, 1 << 30))


def main() -> None:
    """Entry point: input errors become one paragraph on stderr and exit code 2 (traceback with MDN_DEBUG=1)."""
    reuse_freed_memory()
    try:
        app()
    except MdnError as exc:
        if os.environ.get("MDN_DEBUG") == "1":
            raise
        err_console().print(f"error: {exc.render()}", markup=False)
        sys.exit(EXIT_INPUT)


# ----------------------------------------------------------------------------------------------
# Commands are registered below, one section per command.
# ----------------------------------------------------------------------------------------------


# -- synth -------------------------------------------------------------------------------------
@app.command()
def synth(
    out_dir: Path = typer.Argument(..., help="Folder to write images.h5 and meta.csv into."),
    per_group: int = typer.Option(500, "--per-group", min=4, help="Images per group (label)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Write the MDN paper's synthetic data set (images with a main factor and a confounder).

    Two groups of 32x32 images; a Gaussian bump scaled by the main factor mf (top-left,
    bottom-right) and by the confounder cf (bottom-left). Splits 60/20/20 train/val/test.

    Example: mdn synth data/synthetic --per-group 500 --seed 0
    """
    from mdn_cli.data import write_dataset
    from mdn_cli.synth import make_synthetic

    dataset = make_synthetic(per_group, seed)
    h5_path, csv_path = write_dataset(out_dir, dataset.images, dataset.table)
    err_console().print(f"wrote {h5_path} ({len(dataset.table)} images) and {csv_path}", markup=False)


# -- validate / train --------------------------------------------------------------------------
def _load_spec(spec_path: Path, overrides: list[str]):
    from mdn_cli.spec import load_spec

    return load_spec(spec_path, overrides)


SPEC_ARG = typer.Argument(..., help="YAML spec describing data, model, MDN and training.", metavar="SPEC")
SET_OPT = typer.Option([], "--set", help="Override a spec key, e.g. --set train.epochs=5 (repeatable).")


@app.command()
def validate(spec_path: Path = SPEC_ARG, overrides: list[str] = SET_OPT) -> None:
    """Check a spec and report every problem at once, with key paths and line numbers.

    Checks the schema, the data files, the table's columns and the model (built with a dry run).

    Example: mdn validate sample_data/synthetic/mdn.yaml --set train.lr=1e-3
    """
    from mdn_cli.nn import metadata_norm_layers
    from mdn_cli.train import build_run

    run = build_run(_load_spec(spec_path, overrides))
    splits = run.data.splits
    err_console().print(
        f"{spec_path}: valid ({len(splits['train'])} train / {len(splits['val'])} val rows; design columns "
        f"{', '.join(run.data.design.column_names)}; {len(metadata_norm_layers(run.network))} MDN layer(s))",
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
) -> None:
    """Train a model with MDN where the spec says (or a baseline without), into RUNDIR.

    Writes RUNDIR/config.yaml, metrics.jsonl (loss, accuracy and dcor² of the monitored layer
    per epoch), checkpoints/last.pt and best.pt, and summary.json. Ctrl-C keeps the last
    epoch's checkpoint; --resume continues from it with the same results. The MDN variant
    (batch, recursive, penalty) is `mdn.variant` in the spec. Under torchrun (or --nproc N) the
    MDN statistics are synchronised over the processes and only rank 0 writes.

    Example: mdn train sample_data/synthetic/mdn.yaml -o runs/mdn --set train.epochs=5
    Example: mdn train sample_data/synthetic/mdn.yaml -o runs/ddp --nproc 2 --set train.batch_size=100
    """
    from mdn_cli.spec import dump_spec
    from mdn_cli.train import train as run_training

    if device is not None:
        overrides = [*overrides, f"train.device={device.value}"]
    spec = _load_spec(spec_path, overrides)
    if print_config:
        emit(dump_spec(spec), None)
        return
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from mdn_cli.distributed import launch
        from mdn_cli.train import check_run_dir

        check_run_dir(output, resume)

        argv = ["train", str(spec_path), "-o", str(output), "--format", fmt.value, *[a for o in overrides for a in ("--set", o)]]
        argv += ["--resume"] * resume + ["--quiet"] * quiet
        code = launch(nproc, argv)
        if code:
            raise typer.Exit(code)
        return
    from mdn_cli.progress import TrainingProgress

    try:
        with TrainingProgress(err_console(), enabled=not quiet) as progress:
            summary = run_training(spec, output, resume=resume, progress=progress)
    except KeyboardInterrupt:
        err_console().print(f"interrupted: {output}/checkpoints/last.pt holds the last finished epoch; continue with --resume.", markup=False)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    if not summary:  # a DDP rank other than 0: rank 0 reports
        return
    if fmt == OutputFormat.json:
        emit(json.dumps(summary, indent=2), None)
        return
    from mdn_cli.report import RunRecord, render_runs

    show(render_runs([RunRecord.from_summary(summary)], fmt.value), None)


def show(rendered, output: Optional[Path]) -> None:
    """Print a rich renderable (table format) or emit text (json, csv, markdown)."""
    if isinstance(rendered, str):
        emit(rendered, output)
    elif output is not None:
        buffer = io.StringIO()
        Console(file=buffer, no_color=True, width=160).print(rendered)
        emit(buffer.getvalue(), output)
    else:
        out_console().print(rendered)


# -- report ------------------------------------------------------------------------------------
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
    from mdn_cli.report import RunRecord, load_audit, render_report

    if epoch not in ("last", "best"):
        raise MdnError(f"--epoch must be last or best, not {epoch!r}.", where="--epoch", hint=None)
    if not run_dirs and not audits:
        raise MdnError("nothing to report.", where="RUNDIR", hint="give run directories of `mdn train` (and/or --audit FILE with --plot).")
    records = [RunRecord.from_dir(d) for d in run_dirs or []]
    audit_results = [load_audit(a) for a in audits]
    if plot is not None:
        from mdn_cli.plots import check_plot_path, plot_report

        check_plot_path(plot)
    if records:
        show(render_report(records, fmt.value, epoch), output)
    if plot is not None:
        plot_report(records, plot, audit_results)
        err_console().print(f"wrote {plot}", markup=False)


# -- audit -------------------------------------------------------------------------------------
class AuditTest(str, Enum):
    permutation = "permutation"
    t = "t"


def _names(text: Optional[str]) -> Optional[list[str]]:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


@app.command(
    epilog=(
        "Exit codes: 0 done (and, with --fail-above, every dcor² at most X); 1 some dcor² above "
        "--fail-above; 2 usage or input error.\n\n"
        "Examples: mdn audit features.h5 meta.csv --by label --test t; "
        "mdn audit features.h5 meta.csv --format json | jq '.results[] | select(.dcor2 > 0.1)'; "
        "cut -d, -f1,3 meta.csv | mdn audit features.h5 - --fail-above 0.05"
    )
)
def audit(
    features: Path = typer.Argument(..., help="HDF5 file with the features (samples on axis 0).", metavar="FEATURES.h5"),
    table: str = typer.Argument(..., help="Metadata CSV, or - to read it from stdin.", metavar="TABLE.csv|-"),
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
    device: Device = typer.Option(Device.cpu, "--device", help="Where the feature-distance tiles are computed (the sums stay on the CPU)."),
) -> None:
    """Measure how much each metadata column still shapes a set of features: dcor² per column.

    Reports the bias-corrected squared distance correlation (U-statistic, as in the MDN paper;
    about 0 when independent, can be slightly negative) of the features with each metadata
    column, pooled and per --by stratum, computed exactly in memory-bounded tiles. Rows join by
    id (every feature id needs a table row; extra table rows are left out and counted), or by
    row order when there are no ids. Missing metadata values leave out that row for that column
    only. Progress goes to stderr, results to stdout.
    """
    import torch

    from mdn_cli.audit import render_csv, render_json, render_markdown, render_table, run_audit, verdict
    from mdn_cli.train import resolve_device

    if table == "-" and sys.stdin.isatty():
        raise MdnError("TABLE is - but nothing is piped to stdin.", where="TABLE", hint="pipe a CSV in, or pass its path.")
    options = dict(
        by=by,
        categorical=_names(categorical) or (),
        test=test.value if test else None,
        permutations=permutations,
        seed=seed,
        sample=sample,
        dtype=torch.float64 if float64 else torch.float32,
        device=resolve_device(device.value, where="--device"),
    )
    with _row_progress(False, "auditing") as advance:
        result = run_audit(features, table, dataset=dataset, id_column=id_column, columns=_names(columns), progress=advance, **options)

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


# -- layers ------------------------------------------------------------------------------------
@app.command()
def layers(
    target: Path = typer.Argument(..., help="A run directory of `mdn train`, or a spec file.", metavar="RUNDIR|SPEC"),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format."),
) -> None:
    """List the model's named layers: dotted name, type, output shape per sample, and its MDN.

    These names are what mdn_after, train.monitor and `extract --layer` accept.

    Example: mdn layers runs/mdn --format json
    """
    from mdn_cli.extract import layers_of
    from mdn_cli.report import render_records

    rows = layers_of(target)
    columns = ["name", "type", "output_shape", "mdn"]
    cells = [[r["name"], r["type"], "x".join(map(str, r["output_shape"])) if r["output_shape"] is not None else "n/a", r["mdn"] or ""] for r in rows]
    show(render_records(columns, cells, rows, fmt, title=f"layers of {target}"), None)


# -- extract -----------------------------------------------------------------------------------
@app.command()
def extract(
    run_dir: Path = typer.Argument(..., help="Run directory of `mdn train`.", metavar="RUNDIR"),
    layer: list[str] = typer.Option(..., "--layer", "-l", help="Layer whose features to write (repeatable; `mdn layers RUNDIR` lists them)."),
    output: Path = typer.Option(..., "--output", "-o", help="HDF5 file to write: `features` (n, d), or `features/<layer>` for several layers, and `ids`."),
    checkpoint: str = typer.Option("best", "--checkpoint", help="best, last, a NAME in the run's checkpoints/ (e.g. best-refit), or a PATH."),
    split: str = typer.Option("val", "--split", help="Rows of the run's data: train, val, test or all."),
    inputs: Optional[Path] = typer.Option(None, "--inputs", help="New data instead of a split: HDF5 inputs (same dataset names as the spec)."),
    table: Optional[str] = typer.Option(None, "--table", help="The table of --inputs (CSV with the spec's metadata columns; - for stdin)."),
    meta_out: Optional[Path] = typer.Option(None, "--meta-out", help="Also write the matching table rows (id, label, metadata) as CSV."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Rows per forward pass (default: the spec's)."),
    device: Optional[Device] = typer.Option(None, "--device", help="Where the model runs (default: the spec's train.device)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress output."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Format of the summary on stdout."),
) -> None:
    """Write a trained model's features of one or more layers to HDF5, batch by batch.

    MDN layers run in eval mode with their running beta and each row's metadata, as in the
    paper. The file is self-describing (layer, run, checkpoint, spec hash, split, tool version)
    and written under a temporary name, then renamed. With --meta-out, `mdn audit` takes the pair.

    Example: mdn extract runs/mdn --layer fc1 --split val -o fc1.h5 --meta-out fc1.csv
    """
    from mdn_cli.extract import extract as run_extract
    from mdn_cli.extract import file_source, load_run, split_source

    if (inputs is None) != (table is None):
        raise MdnError("--inputs and --table go together.", where="--inputs" if inputs is None else "--table", hint="give both for new data, or neither to use --split.")
    loaded = load_run(run_dir, checkpoint, device.value if device else None)
    for name in layer:
        loaded.network.feature_module(name)  # unknown names fail here, before any output exists
    source = file_source(loaded, inputs, table) if inputs is not None else split_source(loaded, split)
    progress = _row_progress(quiet, "extract")
    with progress as advance:
        result = run_extract(loaded, layer, source, output, meta_out=meta_out, batch_size=batch_size, progress=advance)
    _summary(result, fmt, f"wrote {output}")


# -- refit -------------------------------------------------------------------------------------
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
    from mdn_cli.refit import refit_run
    from mdn_cli.report import render_refit

    result = refit_run(run_dir, checkpoint, device.value if device else None, output)
    err_console().print(f"wrote {result['checkpoint']} (betas fitted on {result['rows']} training rows)", markup=False)
    show(render_refit(result, fmt.value), None)


class _row_progress:
    """A progress bar of rows on stderr (a terminal only), yielding the callback to advance it."""

    def __init__(self, quiet: bool, label: str):
        self.enabled, self.label, self.bar = not quiet and err_console().is_terminal, label, None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import Progress

        self.bar = Progress(console=err_console(), transient=True)
        self.bar.start()
        task = self.bar.add_task(self.label, total=None)
        return lambda done, total: self.bar.update(task, completed=done, total=total)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def _summary(result: dict, fmt: OutputFormat, title: str) -> None:
    """A command's result: JSON on stdout with --format json, else a short key/value table."""
    import json

    from mdn_cli.report import render_records

    flat = {k: (json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else str(v))) for k, v in result.items()}
    show(render_records(["key", "value"], [[k, v] for k, v in flat.items()], result, fmt, title), None)


# -- residualize -------------------------------------------------------------------------------
@app.command()
def residualize(
    features_path: Path = typer.Argument(..., help="HDF5 features (e.g. from `mdn extract`).", metavar="FEATURES.h5"),
    table: str = typer.Argument(..., help="CSV table with the metadata (and preserved) columns; - for stdin.", metavar="META.csv"),
    output: Path = typer.Option(..., "--output", "-o", help="HDF5 file for the residualized features (same dataset path, with ids)."),
    columns: Optional[str] = typer.Option(None, "--columns", help="Metadata columns to remove, comma-separated (needed unless --model)."),
    preserve: Optional[str] = typer.Option(None, "--preserve", help="Columns fitted jointly and kept (e.g. label), comma-separated."),
    categorical: Optional[str] = typer.Option(None, "--categorical", help="Columns to treat as categorical even if numeric."),
    fit_on: Optional[str] = typer.Option(None, "--fit-on", help="Fit beta on the rows where COLUMN=VALUE (e.g. split=train); apply to all."),
    dataset: str = typer.Option("features", "--dataset", help="Dataset of the features inside the file (e.g. features/fc1)."),
    id_column: Optional[str] = typer.Option(None, "--id-column", help="Table column matching the file's ids (default: id when both sides have ids)."),
    ridge: float = typer.Option(0.0, "--ridge", min=0.0, help="Ridge for near-collinear designs (as mdn.ridge)."),
    save_model: Optional[Path] = typer.Option(None, "--save-model", help="Save the fitted model as JSON, to apply to other files with --model."),
    model: Optional[Path] = typer.Option(None, "--model", help="Apply a saved model instead of fitting one."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Format of the summary on stdout."),
) -> None:
    """Remove metadata's linear effect from stored features: MDN's regression, whole-set, after the fact.

    Fits beta = (X'X)^-1 X'Y with the MDN layer's design matrix X = [preserve | columns |
    intercept] and writes Y - X[columns, intercept] beta: the preserved columns' part stays.

    Example: mdn residualize fc1.h5 sample_data/synthetic/meta.csv --columns cf --preserve label --fit-on split=train -o clean.h5
    """
    from mdn_cli import residualize as rz

    if model is not None and (columns or preserve or categorical or fit_on):
        raise MdnError("--model applies a fitted model; --columns, --preserve, --categorical and --fit-on belong to fitting.", where="--model", hint="drop them, or drop --model to fit anew.")
    if model is None and not columns:
        raise MdnError("no metadata columns given.", where="--columns", hint="e.g. --columns cf --preserve label, or --model m.json.")
    features = rz.open_features(features_path, dataset)
    rows = rz.aligned_table(features, table, id_column)
    if model is not None:
        fitted = rz.Residualizer.load(model)
    else:
        fit_rows = rz.rows_where(rows, fit_on, table) if fit_on else None
        fitted = rz.fit(features, rows, _names(columns), _names(preserve) or (), _names(categorical) or (), fit_rows, ridge)
        fitted.info["fit_on"] = fit_on or "all rows"
    result = rz.apply(fitted, features, rows, table, output, save_model)
    _summary(result, fmt, f"wrote {output}")
