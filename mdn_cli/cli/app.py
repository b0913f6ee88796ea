"""The `mdn` typer app and what every command shares: consoles, output, formats, the entry point.

Exit codes: 0 success (or audit below threshold), 1 a `--fail-above` threshold exceeded,
2 usage or input error, 130 interrupted by Ctrl-C, 128 + N ended by signal N (143: SIGTERM).
"""

from __future__ import annotations

import ctypes
import io
import os
import sys
import warnings
from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from mdn_cli import __version__
from mdn_cli.utils.errors import MdnError

EXIT_OK, EXIT_THRESHOLD, EXIT_INPUT = 0, 1, 2  # interrupted: utils.interrupts.exit_code

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
    return Console(stderr=True, no_color=not _color_enabled(sys.stderr), highlight=False, soft_wrap=True, emoji=False)


def out_console() -> Console:
    """Console for data on stdout (tables), colour only on a TTY without NO_COLOR."""
    return Console(no_color=not _color_enabled(sys.stdout), highlight=False, soft_wrap=True, emoji=False)


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
    from mdn_cli.utils.fileio import atomic_write_text

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
    """Entry point: input errors become one paragraph on stderr and exit code 2, interrupts 130 or 128 + the signal (tracebacks with MDN_DEBUG=1)."""
    from mdn_cli.utils.interrupts import exit_code, signals_handled

    reuse_freed_memory()
    # The sample readers refuse a file over their own size limit (readers.MAX_SAMPLE_VALUES), naming its row; Pillow's
    # bomb warning for images between its limit and theirs would only add a line of noise. (Muting it per read costs
    # more than the read's own Python: catch_warnings invalidates every warning cache twice a sample.)
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit")
    try:
        with signals_handled():
            app()
    except MdnError as exc:
        if os.environ.get("MDN_DEBUG") == "1":
            raise
        err_console().print(f"error: {exc.render()}", markup=False)
        sys.exit(EXIT_INPUT)
    except RuntimeError as exc:  # under --nproc: a process whose peer failed (and said why) stops without a traceback of its own
        if "WORLD_SIZE" not in os.environ or os.environ.get("MDN_DEBUG") == "1":
            raise
        from mdn_cli.utils.distributed import peer_failed

        if not peer_failed(exc):
            raise
        sys.exit(1)
    except SystemExit as exc:
        interrupt = _interrupt_of(exc)
        if interrupt is None:
            raise
        err_console().print("interrupted: no partly written output was left.", markup=False)
        sys.exit(exit_code(interrupt))


def _interrupt_of(exc: SystemExit) -> KeyboardInterrupt | None:
    """The Ctrl-C or SIGTERM that typer turned into a silent exit 130 (a command that handles it itself, as train does, exits on its own)."""
    cause = getattr(exc.__context__, "__cause__", None)  # typer: `raise Exit(130) from KeyboardInterrupt`, then sys.exit
    return cause if isinstance(cause, KeyboardInterrupt) else None


def show(rendered, output: Optional[Path]) -> None:
    """Print a rich renderable (table format) or emit text (json, csv, markdown)."""
    if isinstance(rendered, str):
        emit(rendered, output)
    elif output is not None:
        buffer = io.StringIO()
        Console(file=buffer, no_color=True, width=160, emoji=False).print(rendered)
        emit(buffer.getvalue(), output)
    else:
        out_console().print(rendered)


def names(text: Optional[str]) -> Optional[list[str]]:
    return None if text is None else [name.strip() for name in text.split(",") if name.strip()]


class row_progress:
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


def show_summary(result: dict, fmt: OutputFormat, title: str) -> None:
    """A command's result: JSON on stdout with --format json, else a short key/value table."""
    import json

    from mdn_cli.cli.render import render_records

    flat = {k: (json.dumps(v) if isinstance(v, (dict, list)) else ("" if v is None else str(v))) for k, v in result.items()}
    show(render_records(["key", "value"], [[k, v] for k, v in flat.items()], result, fmt, title), None)


def load_spec(spec_path: Path, overrides: list[str]):
    from mdn_cli.config import load_spec as load

    return load(spec_path, overrides)


SPEC_ARG = typer.Argument(..., help="YAML spec describing data, model, MDN and training.", metavar="SPEC")
SET_OPT = typer.Option([], "--set", help="Override a spec key, e.g. --set train.epochs=5 (repeatable).")
