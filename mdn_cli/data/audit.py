"""A table's columns against a feature matrix: how much does each metadata column still shape the features?

``audit_features`` turns the columns, strata (``by``), conditioning columns and options into the
jobs of one tiled ``stats.distance_correlation`` pass, applying the project's one categorical
policy (``design.is_categorical``). The training loop calls it every epoch, `mdn evaluate` on a
run's rows and `mdn audit` (``analysis.audit``) on stored features, so the three agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import pandas as pd

from mdn_cli.data.design import is_categorical
from mdn_cli.stats import DcorResult, IndependenceTest, Interval, Tiles, distance_correlation
from mdn_cli.stats.validation import NonFiniteError, as_matrix, check_finite, float_dtype, level_text, listing
from mdn_cli.utils.errors import MdnError

STATISTIC = "dcor2_u: bias-corrected squared distance correlation (U-statistic)"


# An audit row's keys, in order; all but the first three and ``given`` are its DcorResult's fields
ROW_KEYS = ("column", "kind", "stratum", "n", "n_missing", "dcor2", "dcor2_v", "dcor_v", "pvalue", "note", "given", "ci_low", "ci_high", "ci_method")
_RESULT_NAMES = {"dcor2": "dcor2_u"}  # the audit calls the U-statistic dcor2, as the paper does


@dataclass(frozen=True)
class AuditRow:
    """One (column, stratum[, given]) result; ``dcor2`` is the U-statistic, None when not computable.

    The statistic's own fields (``n``, ``dcor2``, ``pvalue``, ``ci_low``...) are read from its
    ``DcorResult``, so a field added there reaches the audit by adding its key to ``ROW_KEYS``.
    """

    column: str
    kind: str
    stratum: Optional[str]
    given: Optional[str]
    result: DcorResult

    def __getattr__(self, name: str):
        if name in ROW_KEYS:
            return getattr(self.result, _RESULT_NAMES.get(name, name))
        raise AttributeError(name)

    def to_dict(self) -> dict:
        return {key: getattr(self, key) for key in ROW_KEYS}


# Row keys that appear only in audits that asked for them (--given, --ci).
_OPTIONAL_KEYS = {"given": ("given",), "ci": ("ci_low", "ci_high", "ci_method")}


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
            key = row.column if row.given is None else f"{row.column} | {row.given}"
            out.setdefault(key, {})[row.stratum or "all"] = row.dcor2
        return out

    def row_dicts(self) -> list[dict]:
        """The rows as dicts, without the keys of options this audit did not use."""
        unused = [key for option, keys in _OPTIONAL_KEYS.items() if not self.settings.get(option) for key in keys]
        return [{key: value for key, value in row.to_dict().items() if key not in unused} for row in self.rows]

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
            "results": self.row_dicts(),
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
    dtype="float32",
    tile_size: int = 1024,
    progress: Optional[Callable[[int, int], None]] = None,
    device="cpu",
    given: Sequence[str] = (),
    ci: Optional[float] = None,
    cluster: Optional[str] = None,
    permute_within: Optional[str] = None,
    share_over_processes: bool = False,
) -> AuditResult:
    """dcor² of ``features`` (n, ...) with each of ``columns`` of ``table`` (n rows, same order).

    Pooled, and with ``by`` also per stratum of that column. ``categorical`` forces the
    discrete metric (strings and booleans always use it). ``sample`` audits a seeded random
    subset of rows for a quick look. All columns, strata and permutations share one tiled pass.
    Each ``given`` column adds, per column and stratum, the partial dcor² given it (rows with
    ``given`` set). ``ci`` adds jackknife intervals at that level (leaving out whole ``cluster``
    groups when named); ``permute_within`` keeps permutation shuffles inside its blocks.
    ``share_over_processes``: every process of a torch.distributed group runs this audit and
    takes a share of the tiles (``distance_correlation``).
    """
    matrix = as_matrix(features)
    if matrix.shape[0] != len(table):
        raise MdnError(
            f"{matrix.shape[0]} feature rows but {len(table)} table rows.",
            hint="pass the table rows of exactly these samples, in the same order (or join by id).",
        )
    given = list(given)
    label_options = {"--cluster": cluster, "--permute-within": permute_within}
    wanted = (list(columns) + ([by] if by is not None else []) + list(categorical) + given
              + [name for name in label_options.values() if name is not None])  # fmt: skip
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
    _check_science_options(table, columns, by, given, ci, label_options, test)

    table = table.reset_index(drop=True)
    sampled = sample is not None and sample < len(table)
    if sampled:
        keep = np.sort(np.random.default_rng(seed).choice(len(table), sample, replace=False))
        matrix, table = matrix[keep], table.iloc[keep].reset_index(drop=True)

    strata: list[tuple[Optional[str], Optional[np.ndarray]]] = [(None, None)]
    if by is not None:
        labels = table[by]
        for value in sorted(labels.dropna().unique(), key=lambda v: (str(type(v)), v)):
            strata.append((f"{by}={level_text(value)}", (labels == value).to_numpy()))

    def column(name: str) -> tuple[np.ndarray, bool]:
        series = table[name]
        categorical_column = is_categorical(series, name in categorical)
        values = series.to_numpy(dtype=object) if categorical_column else series.to_numpy(dtype=np.float64)
        if not categorical_column and np.isinf(values).any():
            bad = np.flatnonzero(np.isinf(values))
            raise MdnError(
                f"column {name!r} has infinite values in rows {listing(bad.tolist())}.",
                hint="leave the cell empty to mark a missing value.",
            )
        return values, categorical_column

    job_columns, job_kinds, job_subsets, job_given, job_given_kinds, job_labels = [], [], [], [], [], []
    for name in columns:
        values, categorical_column = column(name)
        for given_name in [None, *given]:
            z_values, z_categorical = column(given_name) if given_name is not None else (None, False)
            for stratum, subset in strata:
                job_columns.append(values)
                job_kinds.append(categorical_column)
                job_subsets.append(subset)
                job_given.append(z_values)
                job_given_kinds.append(z_categorical)
                job_labels.append((name, "categorical" if categorical_column else "numeric", stratum, given_name))

    try:
        results = distance_correlation(
            matrix, job_columns, job_kinds, subsets=job_subsets, given=job_given, given_categorical=job_given_kinds,
            test=None if test is None else IndependenceTest(
                test, permutations=permutations, seed=seed,
                permute_within=None if permute_within is None else table[permute_within].to_numpy(dtype=object)),
            interval=None if ci is None else Interval(
                ci, cluster=None if cluster is None else table[cluster].to_numpy(dtype=object)),
            tiles=Tiles(dtype=dtype, tile_size=tile_size, progress=progress, device=device,
                        share_over_processes=share_over_processes),
        )  # fmt: skip
    except ValueError as error:  # what only the pass can see, e.g. strata whose blocks all have one row
        option = "--permute-within" if "permute_within" in str(error) else "--cluster" if "cluster" in str(error) else None
        raise MdnError(str(error).replace("permute_within: ", "") + ".", where=option) from error
    rows = [AuditRow(name, kind, stratum, given_name, r) for (name, kind, stratum, given_name), r in zip(job_labels, results)]
    settings = {
        "statistic": STATISTIC,
        "test": test,
        "permutations": permutations if test == "permutation" else None,
        "seed": seed,
        "by": by,
        "sample": sample if sampled else None,
        "dtype": float_dtype(dtype).name,
        "given": given,
        "ci": ci,
        "ci_method": None if ci is None else ("jackknife" if cluster is None else f"cluster jackknife over {cluster}"),
        "cluster": cluster,
        "permute_within": permute_within,
    }
    return AuditResult(rows=rows, n=matrix.shape[0], settings=settings)


def _check_science_options(table: pd.DataFrame, columns: Sequence[str], by: Optional[str], given: Sequence[str],
                           ci: Optional[float], labels: dict, test: Optional[str]) -> None:  # fmt: skip
    """--given, --ci, --cluster and --permute-within problems, named before any work is done."""
    for name in given:
        if name in columns or name == by:
            role = "the --by column" if name == by else "an audited column"
            raise MdnError(
                f"--given {name} is {role}: partial dcor² given a column is about the other columns.",
                where="--given",
                hint=f"leave {name} out of --columns (or --by), or give another column.",
            )
        if table[name].dropna().nunique() < 2:
            raise MdnError(f"--given {name} is constant: there is nothing to condition on.", where="--given",
                           hint="give a column that varies.")  # fmt: skip
    if given and test == "t":
        raise MdnError("--test t has no partial version.", where="--given", hint="use --test permutation with --given.")
    if ci is not None and not 0.0 < ci < 1.0:
        raise MdnError(f"--ci {ci:g} is not a confidence level.", where="--ci", hint="give a level in (0, 1), e.g. --ci 0.95.")
    for option, name in labels.items():
        if name is None:
            continue
        missing = int(table[name].isna().sum())
        if missing:
            raise MdnError(f"{option} {name} is empty in {missing} rows: every row needs a label.", where=option,
                           hint="fill in the labels, or leave those rows out of the table.")  # fmt: skip
    blocks = labels["--permute-within"]
    if blocks is not None and test == "permutation" and table[blocks].value_counts().max() < 2:
        raise MdnError(
            f"--permute-within {blocks}: all {len(table)} blocks have a single row, so no shuffle can move a row.",
            where="--permute-within",
            hint="give a column whose blocks (e.g. sites, families) hold several rows each.",
        )
