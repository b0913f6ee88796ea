"""Metadata table -> design matrix ``X = [preserved | metadata | intercept]``, and its Gram inverse.

Fit on the training rows, transform any rows (scikit-learn style), so that validation, test and
new data are encoded with the training set's statistics and levels. Pure: pandas and numpy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

from mdn_cli.stats.validation import listing
from mdn_cli.utils.errors import MdnError, did_you_mean

INTERCEPT = "intercept"


@dataclass
class ColumnEncoding:
    """How one table column becomes design columns: standardised number or one-hot levels."""

    name: str
    kind: str  # "numeric" | "categorical"
    mean: float = 0.0
    std: float = 1.0
    levels: list[str] = field(default_factory=list)  # levels[0] is the dropped reference

    @property
    def design_names(self) -> list[str]:
        if self.kind == "numeric":
            return [self.name]
        return [f"{self.name}={level}" for level in self.levels[1:]]


def is_categorical(series: pd.Series, declared: bool = False) -> bool:
    """The project's one categorical policy (design matrix and audit alike).

    Numbers are numeric; strings, objects, booleans and pandas categoricals are categorical, and
    so is any column the user declares categorical (``declared``).
    """
    return declared or not (pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)) or isinstance(
        series.dtype, pd.CategoricalDtype
    )


def level_strings(series: pd.Series) -> pd.Series:
    """Category values as strings, integers without a trailing '.0' (1.0 -> '1')."""
    if pd.api.types.is_float_dtype(series) and np.all(np.mod(series.dropna(), 1) == 0):
        series = series.astype("Int64")
    return series.astype(str)


def sorted_levels(series: pd.Series) -> list[str]:
    """The distinct values as level strings, in the column's natural order: numbers by value
    (``2`` before ``10``), text alphabetically. The first is the dropped reference level."""
    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        return level_strings(pd.Series(np.sort(series.dropna().unique()), dtype=series.dtype)).tolist()
    return sorted(level_strings(series).unique())


class DesignMatrix:
    """Encodes preserved and metadata columns of a table into ``[preserved | metadata | intercept]``.

    Numeric columns are standardised with the fitted rows' mean and standard deviation, or kept in
    their units with ``standardize=False`` (the MDN, R-MDN and PMDN references' raw design);
    categorical columns are one-hot encoded with their first level (``sorted_levels``) dropped as reference.
    """

    def __init__(self, metadata: Sequence[str], preserve: Sequence[str] = (), categorical: Sequence[str] = (), standardize: bool = True):
        if not metadata:
            raise MdnError("no metadata columns given.", hint="name at least one column to regress out.")
        overlap = sorted(set(metadata) & set(preserve))
        if overlap:
            raise MdnError(
                f"column(s) {', '.join(overlap)} are both preserved and metadata.",
                hint="a column is either kept (preserve) or removed (metadata), not both.",
            )
        self.metadata = list(metadata)
        self.preserve = list(preserve)
        self.categorical = set(categorical)
        self.standardize = standardize
        self.encodings: list[ColumnEncoding] | None = None

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, table: pd.DataFrame) -> "DesignMatrix":
        encodings = []
        for name in self.preserve + self.metadata:
            series = _column(table, name)
            if is_categorical(series, name in self.categorical):
                levels = sorted_levels(series)
                if len(levels) < 2:
                    raise _constant_column(name, f"has a single level ({levels[0]!r})")
                encodings.append(ColumnEncoding(name, "categorical", levels=levels))
            else:
                values = series.to_numpy(dtype=np.float64)
                std = float(values.std())
                if not std > 1e-12 * abs(float(values.mean())):  # 0, or rounding noise of a constant
                    raise _constant_column(name, f"is constant ({values[0]:g})")
                mean, std = (float(values.mean()), std) if self.standardize else (0.0, 1.0)
                encodings.append(ColumnEncoding(name, "numeric", mean=mean, std=std))
        self.encodings = encodings
        return self

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        """The (n, num_columns) float64 design matrix of ``table``'s rows."""
        blocks = []
        for enc in self._fitted():
            series = _column(table, enc.name)
            if enc.kind == "numeric":
                blocks.append(((series.to_numpy(dtype=np.float64) - enc.mean) / enc.std)[:, None])
            else:
                values = level_strings(series)
                unseen = sorted(set(values) - set(enc.levels))
                if unseen:
                    raise MdnError(
                        f"column {enc.name!r} has level(s) {', '.join(map(repr, unseen[:5]))} not seen "
                        f"when the design was fitted (known: {', '.join(map(repr, enc.levels[:10]))}).",
                        hint="fit on rows that include every level, or map new levels to known ones.",
                    )
                blocks.append((values.to_numpy()[:, None] == np.asarray(enc.levels[1:])[None, :]).astype(np.float64))
        blocks.append(np.ones((len(table), 1)))
        return np.concatenate(blocks, axis=1)

    def fit_transform(self, table: pd.DataFrame) -> np.ndarray:
        return self.fit(table).transform(table)

    # -- layout ------------------------------------------------------------------------------
    @property
    def column_names(self) -> list[str]:
        return [n for enc in self._fitted() for n in enc.design_names] + [INTERCEPT]

    @property
    def num_columns(self) -> int:
        return len(self.column_names)

    @property
    def num_preserved(self) -> int:
        """Design columns that come from preserved table columns: they lead the matrix and stay."""
        return sum(len(enc.design_names) for enc in self._fitted() if enc.name in self.preserve)

    # -- persistence -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "metadata": self.metadata,
            "preserve": self.preserve,
            "categorical": sorted(self.categorical),
            "standardize": self.standardize,
            "encodings": [asdict(enc) for enc in self._fitted()],
        }

    @classmethod
    def from_dict(cls, state: dict) -> "DesignMatrix":
        design = cls(state["metadata"], state["preserve"], state["categorical"], state.get("standardize", True))
        design.encodings = [ColumnEncoding(**enc) for enc in state["encodings"]]
        return design

    def _fitted(self) -> list[ColumnEncoding]:
        if self.encodings is None:
            raise RuntimeError("DesignMatrix is not fitted: call fit(table) first.")
        return self.encodings

    def __repr__(self) -> str:
        cols = self.column_names if self.encodings is not None else "unfitted"
        return f"DesignMatrix(preserve={self.preserve}, metadata={self.metadata}, columns={cols})"


def _column(table: pd.DataFrame, name: str) -> pd.Series:
    if name not in table.columns:
        hint = did_you_mean(name, table.columns, f"columns are: {', '.join(map(str, table.columns))}.")
        raise MdnError(f"the table has no column {name!r}.", where=name, hint=hint)
    series = table[name]
    missing = series.isna().to_numpy()
    if missing.any():
        rows = np.flatnonzero(missing)
        raise MdnError(
            f"column {name!r} has {len(rows)} missing value(s) (rows {listing(table.index[rows])}).",
            hint="fill or drop those rows before training; the design matrix needs every value.",
        )
    return series


def _constant_column(name: str, what: str) -> MdnError:
    return MdnError(
        f"column {name!r} {what} in the fitted rows, so it carries no information to regress out.",
        hint="remove it from the metadata/preserve list.",
    )


def apply_design(design: DesignMatrix, table: pd.DataFrame, where: str) -> np.ndarray:
    """Design rows of ``table`` for applying a fitted MDN (float64).

    Preserved columns are optional here: the output never uses their part, so an absent one is
    filled with a neutral value (its mean or reference level). Metadata columns are required.
    """
    missing = [c for c in design.metadata if c not in table.columns]
    if missing:
        raise MdnError(
            f"the table has no metadata column(s) {', '.join(map(repr, missing))}, which are needed to remove their effect from each row.",
            where=where,
            hint=f"give a table with {', '.join(design.metadata)} (columns are: {', '.join(map(str, table.columns))}).",
        )
    neutral = {enc.name: enc.mean if enc.kind == "numeric" else enc.levels[0] for enc in design.encodings or [] if enc.name in design.preserve and enc.name not in table.columns}
    try:
        return design.transform(table.assign(**neutral) if neutral else table)
    except MdnError as exc:
        raise MdnError(exc.message, where=f"{where}, column {exc.where}" if exc.where else where, hint=exc.hint) from None
