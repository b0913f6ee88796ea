"""Cross-validation folds: each row's validation fold, stratified by label, groups kept whole.

Pure (numpy, pandas, scikit-learn's splitters) so the CLI and training decide what a fold
trains on; fold j validates on ``folds == j`` and trains on the rest.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

# Regression labels are stratified on this many quantile bins (fewer when rows are few).
REGRESSION_BINS = 10


class FoldError(ValueError):
    """Folds that cannot be made from these labels or groups: what is wrong and what to do."""


def _regression_strata(labels: pd.Series, k: int) -> np.ndarray:
    """Quantile bins of a continuous label by rank, each holding at least ``k`` rows.

    Binning by rank (ties broken by row order) gives bins of equal size whatever the ties, so
    StratifiedKFold can always put a share of every bin in every fold.
    """
    values = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise FoldError(f"regression labels must be finite numbers, and {int(bad.sum())} of {len(values)} rows are not; fix or drop them.")
    n = len(values)
    bins = min(REGRESSION_BINS, n // k)
    strata = np.empty(n, dtype=np.int64)
    strata[np.argsort(values, kind="stable")] = np.arange(n) * bins // n
    return strata


def assign_folds(
    labels,
    k: int,
    groups=None,
    repeats: int = 1,
    seed: int = 0,
    regression: bool = False,
) -> list[np.ndarray]:
    """Per repeat, an int array with each row's validation fold 0..k-1 (every row in exactly one).

    Classification labels are stratified with scikit-learn's ``StratifiedKFold(shuffle=True)``
    (each fold holds floor or ceil of a class's rows / k), or ``StratifiedGroupKFold`` when
    ``groups`` is given: rows of one group (subject, site...) never straddle folds, and class
    balance is then as close as whole groups allow. ``regression=True`` stratifies on
    ``REGRESSION_BINS`` rank-quantile bins of the label instead, so every fold spans its range
    (plain KFold can leave the tails to one fold). Repeat r shuffles with a seed drawn from
    ``(seed, r)``: deterministic, and repeats differ. Train / validation rows of fold j:
    ``np.flatnonzero(folds[r] != j)``, ``np.flatnonzero(folds[r] == j)``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2:
        raise FoldError(f"k must be a whole number of at least 2 (got {k!r}): cross-validation needs a held-out fold.")
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise FoldError(f"repeats must be a whole number of at least 1 (got {repeats!r}).")
    labels = pd.Series(np.asarray(labels, dtype=object))
    n = len(labels)
    missing = int(labels.isna().sum())
    if missing:
        raise FoldError(f"the label is missing in {missing} of {n} rows; drop those rows before making folds.")
    if n < k:
        raise FoldError(f"{k} folds but only {n} rows; use k <= {n}.")
    if regression:
        strata = _regression_strata(labels, k)
    else:
        counts = labels.value_counts(sort=True, ascending=True)
        if counts.iloc[0] < k:
            raise FoldError(
                f"{k} folds but class {counts.index[0]!r} has only {counts.iloc[0]} rows, and every fold "
                f"needs one of each class; use k <= {counts.iloc[0]} or merge that class with another."
            )
        strata = pd.factorize(labels)[0]

    group_codes = None
    if groups is not None:
        groups = pd.Series(np.asarray(groups, dtype=object))
        if len(groups) != n:
            raise FoldError(f"groups has {len(groups)} values for {n} rows.")
        missing = int(groups.isna().sum())
        if missing:
            raise FoldError(
                f"groups is missing in {missing} of {n} rows; fill them (a group of its own for each "
                "row that belongs to none) or drop those rows."
            )
        group_codes = pd.factorize(groups)[0]
        n_groups = int(group_codes.max()) + 1
        if n_groups < k:
            raise FoldError(f"{k} folds but only {n_groups} groups, and a group never straddles folds; use k <= {n_groups}.")

    folds = []
    for repeat in range(repeats):
        state = int(np.random.SeedSequence([seed, repeat]).generate_state(1)[0])
        splitter = (StratifiedKFold if groups is None else StratifiedGroupKFold)(k, shuffle=True, random_state=state)
        fold = np.empty(n, dtype=np.int64)
        for j, (_, validation) in enumerate(splitter.split(np.zeros(n), strata, group_codes)):
            fold[validation] = j
        folds.append(fold)
    return folds
