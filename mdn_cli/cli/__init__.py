"""The `mdn` command line: thin commands that parse arguments, call the workflows and render results.

The only package that imports typer or rich; data goes to stdout, progress and messages to stderr.
"""

from mdn_cli.cli.app import app, main, reuse_freed_memory
from mdn_cli.cli.commands import synth, train, pack, report, audit, layers, extract, evaluate, refit, residualize, recipes  # noqa: F401,E401 (registers the commands, in --help order)

__all__ = ["app", "main", "reuse_freed_memory"]
