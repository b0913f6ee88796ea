"""Metadata tables: CSV from a path or stdin, the join to data rows by id, row selections.

Every mismatch is an ``MdnError`` that names the table, the column and the ids involved.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mdn_cli.data.design import level_strings
from mdn_cli.stats.validation import listing
from mdn_cli.utils.errors import MdnError


def read_table(path: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """A CSV table from a path, or from stdin when ``path`` is '-'.

    The id column is read as text (ids are matched as text, and '007' must stay '007').
    """
    source = str(path)
    where = "stdin" if source == "-" else source
    dtype = {id_column: str} if id_column else None
    try:
        return pd.read_csv(io.StringIO(sys.stdin.read()) if source == "-" else source, dtype=dtype)
    except FileNotFoundError:
        raise MdnError("file not found.", where=where, hint="check the path (relative paths in a spec are relative to the spec file).") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise MdnError(f"not a readable CSV table ({str(exc).strip()}).", where=where, hint="expected a comma-separated file with a header row, or - for stdin.") from None



def align_table(table: pd.DataFrame, ids: np.ndarray | None, id_column: str | None, n_rows: int, table_name: str, rows_name: str) -> pd.DataFrame:
    """The table's rows in the order of the data rows (by id, or by row order with a length check)."""
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
