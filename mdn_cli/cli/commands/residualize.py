"""`mdn residualize`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from mdn_cli.cli.app import (
    OutputFormat,
    app,
    names,
    show_summary,
)
from mdn_cli.utils.errors import MdnError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd


@app.command()
def residualize(
    features_path: Path = typer.Argument(..., help="HDF5 features (e.g. from `mdn extract`).", metavar="FEATURES.h5"),
    table: str = typer.Argument(..., help="Table (.csv, .tsv or .parquet) with the metadata (and preserved) columns; - for CSV on stdin.", metavar="TABLE"),
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
    force: bool = typer.Option(False, "--force", help="Replace -o and --save-model when they exist."),
    fmt: OutputFormat = typer.Option(OutputFormat.table, "--format", help="Format of the summary on stdout."),
) -> None:
    """Remove metadata's linear effect from stored features: MDN's regression, whole-set, after the fact.

    Fits beta = (X'X)^-1 X'Y with the MDN layer's design matrix X = [preserve | columns |
    intercept] and writes Y - X[columns, intercept] beta: the preserved columns' part stays.

    Example: mdn residualize fc1.h5 sample_data/synthetic/meta.csv --columns cf --preserve label --fit-on split=train -o clean.h5
    """
    from mdn_cli.analysis import residualize as rz
    from mdn_cli.data.features import open_features
    from mdn_cli.utils.fileio import check_outputs

    check_outputs({"-o": output, "--save-model": save_model}, {"FEATURES.h5": features_path, "TABLE": table, "--model": model}, replace=force)

    if model is not None and (columns or preserve or categorical or fit_on):
        raise MdnError("--model applies a fitted model; --columns, --preserve, --categorical and --fit-on belong to fitting.", where="--model", hint="drop them, or drop --model to fit anew.")
    if model is None and not columns:
        raise MdnError("no metadata columns given.", where="--columns", hint="e.g. --columns cf --preserve label, or --model m.json.")
    features = open_features(features_path, dataset)
    rows = rz.aligned_table(features, table, id_column)
    if model is not None:
        fitted = rz.Residualizer.load(model)
    else:
        fit_rows = _rows_where(rows, fit_on, table) if fit_on else None
        fitted = rz.fit(features, rows, names(columns), names(preserve) or (), names(categorical) or (), fit_rows, ridge)
        fitted.info["fit_on"] = fit_on or "all rows"
    result = rz.apply(fitted, features, rows, table, output, save_model)
    show_summary(result, fmt, f"wrote {output}")


def _rows_where(table: pd.DataFrame, condition: str, table_name: str) -> np.ndarray:
    """The rows of ``--fit-on COLUMN=VALUE`` (e.g. ``split=train``) as a boolean mask, compared as text."""
    column, sep, value = condition.partition("=")
    if not sep or not column:
        raise MdnError(f"{condition!r} is not of the form COLUMN=VALUE.", where="--fit-on", hint="e.g. --fit-on split=train.")
    if column not in table.columns:
        raise MdnError(f"the table has no column {column!r}.", where=table_name, hint=f"columns are: {', '.join(map(str, table.columns))}.")
    mask = (table[column].astype(str) == value).to_numpy()
    if not mask.any():
        found = ", ".join(sorted(table[column].astype(str).unique())[:10])
        raise MdnError(f"no feature row has {column}={value} (values: {found}).", where="--fit-on", hint="fit on rows that exist in the features.")
    return mask
