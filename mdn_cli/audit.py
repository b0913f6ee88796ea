"""Audit features against metadata: how much does each metadata column still shape them?

The pure part (``audit_features``) takes arrays and a table and is what the training loop calls
every epoch; the rest reads ``features.h5`` and the CSV table, joins them by id, and renders
results as json / csv / markdown text or a rich Table. Nothing here prints.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from mdn_cli.data.design import is_categorical
from mdn_cli.data.features import open_features
from mdn_cli.data.tables import align_table, read_table
from mdn_cli.errors import MdnError, listing
from mdn_cli.stats import distance_correlation
from mdn_cli.validation import NonFiniteError, check_finite

STATISTIC = "dcor2_u: bias-corrected squared distance correlation (U-statistic)"


def _value_text(value) -> str:
    """Stratum values as the labels read: 0 rather than 0.0, strings unchanged."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, (np.integer, np.bool_)):
        return str(value.item())
    return str(value)


@dataclass(frozen=True)
class AuditRow:
    """One (column, stratum) result; ``dcor2`` is the U-statistic, None when not computable."""

    column: str
    kind: str
    stratum: Optional[str]
    n: int
    n_missing: int
    dcor2: Optional[float]
    dcor2_v: Optional[float]
    dcor_v: Optional[float]
    pvalue: Optional[float]
    note: Optional[str]


@dataclass
class AuditResult:
    """Every row of an audit, with the settings needed to reproduce it."""

    rows: list[AuditRow]
    n: int
    settings: dict
    features: dict = field(default_factory=dict)
    table: dict = field(default_factory=dict)

    def nested(self) -> dict[str, dict[str, Optional[float]]]:
        """{"cf": {"all": 0.31, "label=0": 0.12, ...}}: the shape training metrics log."""
        out: dict[str, dict[str, Optional[float]]] = {}
        for row in self.rows:
            out.setdefault(row.column, {})[row.stratum or "all"] = row.dcor2
        return out

    def above(self, threshold: float) -> list[AuditRow]:
        """Gated rows whose dcor² exceeds ``threshold``: the strata when there are any, else the pooled rows.

        With ``--by label`` the pooled value also carries the dependence that runs through the
        label itself (which MDN preserves on purpose), so the per-stratum values are the ones
        that measure confounding and the ones a gate should judge.
        """
        stratified = any(row.stratum is not None for row in self.rows)
        gated = [row for row in self.rows if (row.stratum is not None) == stratified]
        return [row for row in gated if row.dcor2 is not None and row.dcor2 > threshold]

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "features": self.features,
            "table": self.table,
            "settings": self.settings,
            "results": [asdict(row) for row in self.rows],
        }


# ----------------------------------------------------------------------------------------------
# The pure audit
# ----------------------------------------------------------------------------------------------


def audit_features(
    features,
    table: pd.DataFrame,
    columns: Sequence[str],
    *,
    by: Optional[str] = None,
    categorical: Sequence[str] = (),
    test: Optional[str] = None,
    permutations: int = 999,
    seed: int = 0,
    sample: Optional[int] = None,
    dtype: torch.dtype = torch.float32,
    tile_size: int = 1024,
    progress: Optional[Callable[[int, int], None]] = None,
    device: torch.device | str = "cpu",
) -> AuditResult:
    """dcor² of ``features`` (n, ...) with each of ``columns`` of ``table`` (n rows, same order).

    Pooled, and with ``by`` also per stratum of that column. ``categorical`` forces the
    discrete metric (strings and booleans always use it). ``sample`` audits a seeded random
    subset of rows for a quick look. All columns, strata and permutations share one tiled pass.
    """
    matrix = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    matrix = matrix.reshape(matrix.shape[0], -1) if matrix.ndim != 2 else matrix
    if matrix.shape[0] != len(table):
        raise MdnError(
            f"{matrix.shape[0]} feature rows but {len(table)} table rows.",
            hint="pass the table rows of exactly these samples, in the same order (or join by id).",
        )
    wanted = list(columns) + ([by] if by is not None else []) + list(categorical)
    unknown = [name for name in dict.fromkeys(wanted) if name not in table.columns]
    if unknown:
        raise MdnError(
            f"no column {listing(unknown)} in the table.",
            hint=f"available columns: {listing(list(table.columns), 20)}.",
        )
    if not columns:
        raise MdnError("no metadata column to audit.", hint="name some with --columns.")
    try:
        check_finite(matrix)
    except NonFiniteError as exc:
        raise MdnError(str(exc), hint="fix or drop those samples before auditing.") from None

    table = table.reset_index(drop=True)
    sampled = sample is not None and sample < len(table)
    if sampled:
        keep = np.sort(np.random.default_rng(seed).choice(len(table), sample, replace=False))
        matrix, table = matrix[keep], table.iloc[keep].reset_index(drop=True)

    strata: list[tuple[Optional[str], Optional[np.ndarray]]] = [(None, None)]
    if by is not None:
        labels = table[by]
        for value in sorted(labels.dropna().unique(), key=lambda v: (str(type(v)), v)):
            strata.append((f"{by}={_value_text(value)}", (labels == value).to_numpy()))

    job_columns, job_kinds, job_subsets, job_labels = [], [], [], []
    for name in columns:
        series = table[name]
        categorical_column = is_categorical(series, name in categorical)
        values = series.to_numpy(dtype=object) if categorical_column else series.to_numpy(dtype=np.float64)
        if not categorical_column and np.isinf(values).any():
            bad = np.flatnonzero(np.isinf(values))
            raise MdnError(
                f"column {name!r} has infinite values in rows {listing(bad.tolist())}.",
                hint="leave the cell empty to mark a missing value.",
            )
        for stratum, subset in strata:
            job_columns.append(values)
            job_kinds.append(categorical_column)
            job_subsets.append(subset)
            job_labels.append((name, "categorical" if categorical_column else "numeric", stratum))

    results = distance_correlation(
        matrix, job_columns, job_kinds, subsets=job_subsets, test=test,
        permutations=permutations, seed=seed, dtype=dtype, tile_size=tile_size, progress=progress, device=device,
    )  # fmt: skip
    rows = [
        AuditRow(column=name, kind=kind, stratum=stratum, n=r.n, n_missing=r.n_missing,
                 dcor2=r.dcor2_u, dcor2_v=r.dcor2_v, dcor_v=r.dcor_v, pvalue=r.pvalue, note=r.note)  # fmt: skip
        for (name, kind, stratum), r in zip(job_labels, results)
    ]
    settings = {
        "statistic": STATISTIC,
        "test": test,
        "permutations": permutations if test == "permutation" else None,
        "seed": seed,
        "by": by,
        "sample": sample if sampled else None,
        "dtype": "float64" if dtype == torch.float64 else "float32",
    }
    return AuditResult(rows=rows, n=matrix.shape[0], settings=settings)


# ----------------------------------------------------------------------------------------------
# Inputs: features.h5, the table, the join
# ----------------------------------------------------------------------------------------------


def run_audit(features_path: str | Path, table_source: str, *, dataset: str = "features",
              id_column: Optional[str] = None, columns: Optional[Sequence[str]] = None,
              **options) -> AuditResult:  # fmt: skip
    """Read, join and audit; ``options`` go to ``audit_features``. Default columns: all but id and by."""
    stored = open_features(features_path, dataset)
    matrix = stored.read(np.float64 if options.get("dtype") == torch.float64 else np.float32)
    ids, shape = stored.ids, stored.shape
    where = "stdin" if table_source == "-" else str(table_source)
    table = read_table(table_source, id_column or "id")
    join_column = id_column or ("id" if ids is not None and "id" in table.columns else None)
    aligned = align_table(table, None if ids is None else np.asarray(ids), join_column, matrix.shape[0], where, f"{features_path}:{dataset}")
    unused = len(table) - len(aligned)
    if columns is None:
        columns = [name for name in aligned.columns if name not in {options.get("by"), id_column or "id"}]
    result = audit_features(matrix, aligned, columns, **options)
    result.features = {"path": str(features_path), "dataset": dataset, "shape": list(shape)}
    result.table = {"path": where, "rows": len(table), "unused_rows": unused,
                    "joined_on": join_column or "row order"}  # fmt: skip
    return result
