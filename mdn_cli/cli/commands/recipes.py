"""`mdn recipes` and `mdn recipes copy`."""

from __future__ import annotations

from pathlib import Path

import typer

from mdn_cli.cli.app import OutputFormat, app, err_console, show

recipes_app = typer.Typer(invoke_without_command=True, no_args_is_help=False, help="List the recipes of the paper's settings, or copy one to edit.")
app.add_typer(recipes_app, name="recipes")


@recipes_app.callback()
def recipes(ctx: typer.Context, fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Output format.")) -> None:
    """List the shipped specs of the MDN paper's settings: name, what it is, the command that runs it.

    Example: mdn recipes && mdn recipes copy faces study/
    """
    if ctx.invoked_subcommand is not None:
        return
    from mdn_cli.cli.render import render_records
    from mdn_cli.recipes import recipe, recipe_names

    rows = [{"name": r.name, "about": r.about, "command": r.command} for r in map(recipe, recipe_names())]
    show(render_records(["name", "about", "command"], [list(row.values()) for row in rows], rows, fmt, title="recipes"), None)


@recipes_app.command("copy")
def copy(
    name: str = typer.Argument(..., help="A recipe (`mdn recipes` lists them)."),
    dest: Path = typer.Argument(..., help="A file to write, or a folder (then FOLDER/NAME.yaml).", metavar="DEST"),
    force: bool = typer.Option(False, "--force", help="Overwrite DEST if it exists."),
) -> None:
    """Copy a recipe's spec to DEST, to edit: its header says which data it expects and how to run it.

    Example: mdn recipes copy mri study/mri.yaml
    """
    from mdn_cli.recipes import recipe
    from mdn_cli.utils.errors import MdnError
    from mdn_cli.utils.fileio import atomic_write_text

    chosen = recipe(name)
    path = dest / f"{name}.yaml" if dest.is_dir() else dest
    if path.exists() and not force:
        raise MdnError("already exists.", where=str(path), hint="add --force to overwrite it, or choose another DEST.")
    atomic_write_text(path, chosen.text)
    err_console().print(f"wrote {path}; put the data its header describes beside it, then: {chosen.command.replace(f'{name}.yaml', str(path))}", markup=False)
