"""Metadata tables: CSV, TSV or Parquet from a path (CSV from stdin), the join to data rows by id, row selections.

Every mismatch is an ``MdnError`` that names the table, the column and the ids involved.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mdn_cli.data.design import level_strings
from mdn_cli.stats.validation import listing
from mdn_cli.utils.errors import MdnError


def read_table(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """A table from a path, or from stdin (CSV) when ``path`` is '-'; the format from the extension:
    ``.tsv``/``.tab`` tab-separated (BIDS ``participants.tsv``), ``.parquet``/``.pq`` Parquet, else CSV
    (also gzipped: ``.csv.gz``, ``.tsv.gz``).

    The id column is read as text (ids are matched as text, and '007' must stay '007'); ``n/a``
    (BIDS' missing value) and empty cells are missing.
    """
    source = str(path)
    where = "stdin" if source == "-" else source
    kind = table_format(source)
    if source != "-" and Path(source).is_dir():
        raise MdnError("is a directory; expected a table file.", where=where, hint="give the CSV, TSV or Parquet file itself.")
    try:
        if kind == "parquet":
            table = _read_parquet(source, where)
            if id_column in table.columns:
                table[id_column] = table[id_column].map(lambda v: v if pd.isna(v) else str(v))
            return checked_table(table, table.columns, id_column, where)
        text = io.StringIO(sys.stdin.read()) if source == "-" else source
        sep = "\t" if kind == "tsv" else ","
        header = pd.read_csv(text, sep=sep, header=None, nrows=1, dtype=str).iloc[0].tolist()  # as written: pandas renames a repeated name 'cf.1'
        if isinstance(text, io.StringIO):
            text.seek(0)
        table = pd.read_csv(text, sep=sep, dtype={id_column: str} if id_column else None)
    except FileNotFoundError:
        raise MdnError("file not found.", where=where, hint="check the path (relative paths in a spec are relative to the spec file).") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise MdnError(f"not a readable {kind.upper()} table ({str(exc).strip()}).", where=where,
                       hint="expected a header row and one row per sample (CSV: comma-separated; .tsv: tab-separated), or - for CSV on stdin.") from None
    if kind == "tsv" and len(table.columns) == 1 and "," in str(table.columns[0]):
        raise MdnError("this looks comma-separated, but the name says tab-separated (.tsv).", where=where, hint="rename it to .csv, or separate the columns with tabs.")
    return checked_table(table, header, id_column, where)


def checked_table(table: pd.DataFrame, header: Sequence, id_column: str | None, where: str) -> pd.DataFrame:
    """The one check of a table's contents: every column named once, no infinite number (NaN is a missing value)."""
    names = pd.Series([str(name) for name in header])
    repeated = names[names.duplicated()].unique().tolist()
    if repeated:
        raise MdnError(f"the header names {listing(repeated)} more than once.", where=where,
                       hint="rename or remove the repeated columns: which of them is meant cannot be told.")
    for column in table.columns:
        values = table[column]
        if values.dtype.kind == "f":
            rows = np.flatnonzero(np.isinf(values.to_numpy(dtype=float, na_value=np.nan)))
            if len(rows):
                raise MdnError(f"column {column!r} holds an infinite value in {len(rows)} row(s) (ids/rows {listing(row_names(table, rows, id_column if id_column in table.columns else None))}).",
                               where=where, hint="fix those cells, or leave them empty (missing).")
    return table


def table_format(source: str) -> str:
    """'tsv', 'parquet' or 'csv', from the file name (compression suffixes aside)."""
    name = source.lower().removesuffix(".gz").removesuffix(".bz2").removesuffix(".zip").removesuffix(".xz")
    if name.endswith((".tsv", ".tab")):
        return "tsv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return "csv"


def _read_parquet(source: str, where: str) -> pd.DataFrame:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise MdnError("reading Parquet tables needs pyarrow, which is not installed.", where=where,
                       hint="pip install 'mdn-cli[parquet]', or save the table as CSV or TSV.") from None
    import pyarrow.lib

    try:
        return pd.read_parquet(source)
    except pyarrow.lib.ArrowException as exc:
        raise MdnError(f"not a readable Parquet table ({str(exc).strip()[:200]}).", where=where, hint="check that the file was written completely.") from None


CLIP_KEY = "__id/clip"


def align_table(table: pd.DataFrame, ids: np.ndarray | None, id_column: str | None, n_rows: int, table_name: str, rows_name: str,
                clips: np.ndarray | None = None) -> pd.DataFrame:
    """The table's rows in the order of the data rows (by id, or by row order with a length check).

    With ``clips`` (each row's clip of its video) and a ``clip`` column, rows join on (id, clip).
    """
    if clips is not None and id_column is not None and ids is not None and "clip" in table.columns and id_column in table.columns:
        keys = table[id_column].astype(str) + "/" + level_strings(table["clip"])
        ids = np.array([f"{i}/{c}" for i, c in zip(ids, clips)])
        return align_table(table.assign(**{CLIP_KEY: keys}), ids, CLIP_KEY, n_rows, table_name, f"{rows_name} (id/clip)").drop(columns=CLIP_KEY)
    if id_column is None:
        if len(table) != n_rows:
            raise MdnError(
                f"the table has {len(table)} rows but {rows_name} has {n_rows}; without an id column they are matched by row order.",
                where=table_name,
                hint="set an id column (data.id_column / --id-column) or make the row counts equal.",
            )
        return table.reset_index(drop=True)
    if id_column not in table.columns:
        raise MdnError(f"no id column {id_column!r}.", where=table_name, hint=f"columns are: {listing(list(table.columns), 12)}.")
    if ids is None:
        raise MdnError(f"{rows_name} has no ids dataset to join on {id_column!r}.", where=table_name, hint="store sample ids beside the inputs, or drop the id column setting to match by row order.")
    key = table[id_column]
    duplicated = key[key.duplicated()].unique()
    if len(duplicated):
        raise MdnError(f"id column {id_column!r} has duplicate ids: {listing(duplicated)}.", where=table_name, hint="each sample must appear once.")
    if len(np.unique(ids)) != len(ids):
        values, counts = np.unique(ids, return_counts=True)
        raise MdnError(f"{rows_name} has duplicate ids: {listing(values[counts > 1])}.", where=table_name, hint="each sample must appear once.")
    lookup = pd.Index(level_strings(key))
    positions = lookup.get_indexer(level_strings(pd.Series(ids)))
    missing = ids[positions < 0]
    if len(missing):
        raise MdnError(f"{len(missing)} id(s) of {rows_name} are not in column {id_column!r}: {listing(missing)}.", where=table_name, hint="the table needs one row per sample.")
    return table.iloc[positions].reset_index(drop=True)



def row_names(table: pd.DataFrame, rows: np.ndarray, id_column: str | None) -> list:
    """How rows are named in messages: their ids when there is an id column, else their numbers."""
    return list(table[id_column].iloc[rows]) if id_column else [int(r) for r in rows]
