"""`mdn audit`'s workflow: stored features and a table read, joined by id, and audited (``data.audit``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from mdn_cli.data.audit import AuditResult, audit_features
from mdn_cli.data.features import open_features
from mdn_cli.data.tables import align_table, read_table
from mdn_cli.stats.validation import float_dtype


def run_audit(features_path: str | Path, table_source: str, *, dataset: str = "features",
              id_column: Optional[str] = None, columns: Optional[Sequence[str]] = None,
              **options) -> AuditResult:  # fmt: skip
    """Read, join and audit; ``options`` go to ``audit_features``.

    Default columns: all but the id and the columns with another role (by, given, cluster, permute_within).
    """
    stored = open_features(features_path, dataset)
    matrix = stored.read(float_dtype(options.get("dtype", "float32")))
    ids, shape = stored.ids, stored.shape
    where = "stdin" if table_source == "-" else str(table_source)
    table = read_table(table_source, id_column or "id")
    join_column = id_column or ("id" if ids is not None and "id" in table.columns else None)
    aligned = align_table(table, None if ids is None else np.asarray(ids), join_column, matrix.shape[0], where, f"{features_path}:{dataset}", stored.clips)
    unused = len(table) - len(aligned)
    if columns is None:
        roles = {options.get("by"), options.get("cluster"), options.get("permute_within"), id_column or "id", *options.get("given", ())}
        roles |= {"clip"} if stored.clips is not None else set()
        columns = [name for name in aligned.columns if name not in roles]
    result = audit_features(matrix, aligned, columns, **options)
    result.features = {"path": str(features_path), "dataset": dataset, "shape": list(shape)}
    result.table = {"path": where, "rows": len(table), "unused_rows": unused,
                    "joined_on": (join_column + (" and clip" if stored.clips is not None and "clip" in table.columns else "")) if join_column else "row order"}  # fmt: skip
    return result
