"""Audit features against metadata: how much does each metadata column still shape them?

The pure part (``audit_features``) takes arrays and a table and is what the training loop calls
every epoch; the rest reads ``features.h5`` and the CSV table, joins them by id, and renders
results as json / csv / markdown text or a rich Table. Nothing here prints.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd
import torch

from mdn_cli.data import align_table, open_h5_dataset, read_table
from mdn_cli.errors import MdnError, listing
from mdn_cli.stats import distance_correlation

STATISTIC = "dcor2_u: bias-corrected squared distance correlation (U-statistic)"
_READ_CHUNK_VALUES = 1 << 24  # values per chunk read from HDF5 (64 MB in float32)


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


def _is_categorical(series: pd.Series, declared: bool) -> bool:
    return declared or not (
        pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    )


def _check_finite(matrix: np.ndarray, row_names: Optional[Sequence] = None, where: Optional[str] = None) -> None:
    """NaN or Inf in features is an input error: name the samples (by id when there are ids)."""
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if bad.size:
        names = [row_names[i] for i in bad] if row_names is not None else bad.tolist()
        label = "ids" if row_names is not None else "rows"
        raise MdnError(
            f"features contain NaN or Inf in {bad.size} {label}: {listing(names)}.",
            where=where,
            hint="fix or drop those samples before auditing.",
        )


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
    _check_finite(matrix)

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
        is_categorical = _is_categorical(series, name in categorical)
        values = series.to_numpy(dtype=object) if is_categorical else series.to_numpy(dtype=np.float64)
        if not is_categorical and np.isinf(values).any():
            bad = np.flatnonzero(np.isinf(values))
            raise MdnError(
                f"column {name!r} has infinite values in rows {listing(bad.tolist())}.",
                hint="leave the cell empty to mark a missing value.",
            )
        for stratum, subset in strata:
            job_columns.append(values)
            job_kinds.append(is_categorical)
            job_subsets.append(subset)
            job_labels.append((name, "categorical" if is_categorical else "numeric", stratum))

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


def _decode_ids(raw: np.ndarray) -> list[str]:
    return [item.decode() if isinstance(item, bytes) else str(item) for item in raw.tolist()]


def read_features(path: str | Path, dataset: str = "features", *, float64: bool = False):
    """(matrix (n, d), ids or None, original shape) from an HDF5 file, read in row chunks.

    Samples are on axis 0; the other axes are flattened. ``ids`` is the dataset beside
    ``dataset`` (or at the root) called ``ids``. Non-finite values are reported by id or row.
    """
    path = Path(path)
    with open_h5_dataset(path, dataset, option="--dataset") as source:
        handle = source.file
        if source.ndim < 1 or source.shape[0] == 0:
            raise MdnError(f"dataset {dataset!r} has no samples (shape {source.shape}).", where=str(path))
        shape = tuple(int(size) for size in source.shape)
        n, width = shape[0], int(np.prod(shape[1:], dtype=np.int64))
        ids = None
        parent = source.parent.name.rstrip("/")
        for candidate in (f"{parent}/ids", "ids"):
            if candidate.lstrip("/") in handle and candidate.lstrip("/") != dataset:
                ids = _decode_ids(handle[candidate.lstrip("/")][()])
                break
        if ids is not None and len(ids) != n:
            raise MdnError(f"'ids' has {len(ids)} entries for {n} samples.", where=str(path))
        matrix = np.empty((n, width), dtype=np.float64 if float64 else np.float32)
        step = max(1, _READ_CHUNK_VALUES // max(width, 1))
        for start in range(0, n, step):
            block = np.asarray(source[start : start + step]).reshape(-1, width)
            matrix[start : start + block.shape[0]] = block
        _check_finite(matrix, ids, where=str(path))
    return matrix, ids, shape


def run_audit(features_path: str | Path, table_source: str, *, dataset: str = "features",
              id_column: Optional[str] = None, columns: Optional[Sequence[str]] = None,
              **options) -> AuditResult:  # fmt: skip
    """Read, join and audit; ``options`` go to ``audit_features``. Default columns: all but id and by."""
    float64 = options.get("dtype") == torch.float64
    matrix, ids, shape = read_features(features_path, dataset, float64=float64)
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


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------

# The human-readable views (markdown, rich): header and alignment of each column, then the cells.
_DISPLAY_COLUMNS = [("column", "left"), ("kind", "left"), ("stratum", "left"), ("n", "right"),
                    ("missing", "right"), ("dcor²", "right"), ("p-value", "right"), ("note", "left")]  # fmt: skip


def _number(value: Optional[float], digits: int = 4) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def _pvalue(value: Optional[float]) -> str:
    """Small p-values in scientific notation: 0.0000 would hide 1e-3 vs 1e-30."""
    return "—" if value is None else f"{value:.3g}"


def _display_cells(row: AuditRow) -> list[str]:
    return [row.column, row.kind, row.stratum or "all", str(row.n), str(row.n_missing),
            _number(row.dcor2), _pvalue(row.pvalue), row.note or ""]  # fmt: skip


def verdict(result: AuditResult, fail_above: Optional[float] = None) -> str:
    """One line a reader can act on: the threshold's verdict, or the largest dcor²."""
    computed = [row for row in result.rows if row.dcor2 is not None]
    if fail_above is not None:
        above = result.above(fail_above)
        if not above:
            scope = "per-stratum dcor²" if any(row.stratum is not None for row in result.rows) else "dcor²"
            return f"PASS: every {scope} is at most {fail_above:g}."
        worst = ", ".join(f"{row.column} ({row.stratum or 'all'}) {row.dcor2:.4f}" for row in above[:5])
        return f"FAIL: {len(above)} result(s) above {fail_above:g}: {worst}."
    if not computed:
        return "No dcor² could be computed (see the notes)."
    top = max(computed, key=lambda row: row.dcor2)
    return f"Largest dcor²: {top.column} ({top.stratum or 'all'}) = {top.dcor2:.4f}."


def _caption(result: AuditResult) -> str:
    settings = result.settings
    test = {"permutation": f"permutation test, {settings['permutations']} permutations, seed {settings['seed']}",
            "t": "distance-correlation t-test"}.get(settings["test"], "no test (no p-values)")  # fmt: skip
    parts = [f"n = {result.n}", "dcor² = bias-corrected (U) squared distance correlation", test]
    if settings.get("sample"):
        parts.append(f"SAMPLE of {settings['sample']} rows (seed {settings['seed']})")
    if result.table.get("unused_rows"):
        parts.append(f"{result.table['unused_rows']} table rows without features left out")
    return "; ".join(parts)


def render_json(result: AuditResult) -> str:
    return json.dumps(result.to_dict(), indent=2)


def render_csv(result: AuditResult) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[item.name for item in fields(AuditRow)], lineterminator="\n")
    writer.writeheader()
    for row in result.rows:
        writer.writerow({key: ("" if value is None else value) for key, value in asdict(row).items()})
    return buffer.getvalue()


def render_markdown(result: AuditResult, fail_above: Optional[float] = None) -> str:
    lines = [
        "| " + " | ".join(name for name, _ in _DISPLAY_COLUMNS) + " |",
        "|" + "|".join("---:" if justify == "right" else "---" for _, justify in _DISPLAY_COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(_display_cells(row)) + " |" for row in result.rows]
    return "\n".join(lines) + f"\n\n{_caption(result)}\n\n{verdict(result, fail_above)}\n"


def render_table(result: AuditResult, fail_above: Optional[float] = None):
    """A rich Table for the terminal; the caption carries the settings and the verdict."""
    from rich.table import Table

    table = Table(title="dcor² audit", caption=f"{_caption(result)}\n{verdict(result, fail_above)}",
                  caption_justify="left")  # fmt: skip
    for name, justify in _DISPLAY_COLUMNS:
        table.add_column(name, justify=justify, no_wrap=name != "note")
    for row in result.rows:
        above = fail_above is not None and row.dcor2 is not None and row.dcor2 > fail_above
        table.add_row(*_display_cells(row), style="bold red" if above else None)
    return table
