"""k-fold cross-validation: every fold a complete run in ``RUNDIR/fold-<i>/``, summarised in ``cv.json``.

The folds are made over the rows outside the test split (``data.folds``: stratified by label,
grouped by a subject column when given). Each fold's run directory holds its rows as
``folds.csv`` (id, split) and a spec whose ``data.split_file`` points there, so its design-matrix
standardisation and Gram inverse are fitted on its own training rows (nothing of its held-out
rows reaches MDN), and every later command (extract, refit, evaluate) sees the fold's splits.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import yaml

from mdn_cli.config import Spec, dump_spec
from mdn_cli.config.run_files import CV_FILE, is_cv_run
from mdn_cli.data.folds import FoldError, assign_folds
from mdn_cli.data.training import load_training_data
from mdn_cli.stats.metrics import mean_sd
from mdn_cli.train.history import flat_metrics
from mdn_cli.train.loop import Progress, train
from mdn_cli.train.tracking import MlflowRun, check_loggers, close_quietly, flat_params
from mdn_cli.utils.errors import MdnError, did_you_mean
from mdn_cli.utils.fileio import atomic_path, atomic_write_text, directory_lock, read_json


def _assignments(spec: Spec, k: int, group_column: Optional[str], repeats: int) -> tuple[pd.DataFrame, list[np.ndarray], np.ndarray, np.ndarray]:
    """The table, each repeat's folds over the non-test rows, those rows and the test rows."""
    data = load_training_data(spec, spec.train.seed)
    table, d = data.table, spec.data
    test = data.splits["test"]
    pool = np.sort(np.concatenate([data.splits["train"], data.splits["val"]]))
    groups = None
    if group_column is not None:
        if group_column not in table.columns:
            raise MdnError(f"no column {group_column!r}.", where="--group-column", hint=did_you_mean(group_column, table.columns, "name a column of the table."))
        groups = table[group_column].iloc[pool].to_numpy()
    try:
        folds = assign_folds(table[d.label].iloc[pool].to_numpy(), k, groups=groups, repeats=repeats,
                             seed=spec.train.seed, regression=spec.train.task == "regression")  # fmt: skip
    except FoldError as error:
        where = "--group-column" if "groups" in str(error) else "--folds"
        raise MdnError(str(error), where=where, hint=f"the folds are made over the {len(pool)} rows outside the test split.") from None
    return table, folds, pool, test


def _fold_table(table: pd.DataFrame, id_column: Optional[str], pool: np.ndarray, test: np.ndarray, held_out: np.ndarray) -> pd.DataFrame:
    """(id or row, split): test rows stay test, the held-out fold is val, the other rows train."""
    split = np.full(len(table), "none", dtype=object)
    split[pool] = "train"
    split[pool[held_out]] = "val"
    split[test] = "test"
    keep = split != "none"
    key = table[id_column].to_numpy() if id_column else np.arange(len(table))
    return pd.DataFrame({id_column or "row": key[keep], "split": split[keep]})


def summarise(run_dir: Path, runs: list[dict]) -> dict:
    """Per fold (last epoch) and mean ± sd (sample sd over the folds) of the val metrics and dcor²."""
    for fold in runs:
        summary = read_json(run_dir / fold["run_dir"] / "summary.json", hint="finish the fold with --resume.")
        fold["metrics"] = flat_metrics(summary["last"] or {})
        fold["epochs"] = summary["epochs"]
    names = list(dict.fromkeys(name for fold in runs for name in fold["metrics"]))
    return {name: mean_sd([fold["metrics"].get(name) for fold in runs]) for name in names}


def cross_validate(
    spec: Spec,
    run_dir: str | Path,
    k: int,
    *,
    group_column: Optional[str] = None,
    repeats: int = 1,
    resume: bool = False,
    progress: Optional[Progress] = None,
    on_fold=None,
) -> dict:
    """Train ``spec`` once per fold into ``run_dir/fold-<i>/`` and write ``run_dir/cv.json``.

    With ``resume``, finished folds are kept and an interrupted one continues from its last
    checkpoint. ``on_fold(i, total)`` is told when fold i starts.
    """
    run_dir = Path(run_dir)
    if spec.data.stage_column is not None:
        raise MdnError("a staged run (data.stage_column) is not cross-validated: its stages are trained in order, each on its own rows.",
                       where="--folds", hint="leave out --folds, or remove data.stage_column.")
    with directory_lock(run_dir, "cross-validating"):
        if not resume and (is_cv_run(run_dir) or any(run_dir.glob("fold-*/checkpoints/last.pt"))):
            raise MdnError("this run directory already holds a cross-validation.", where=str(run_dir), hint="add --resume to continue it, or choose another -o.")
        table, folds, pool, test = _assignments(spec, k, group_column, repeats)
        check_loggers(spec.train.loggers)
        runs, parent = [], None
        for repeat, assignment in enumerate(folds):
            for j in range(k):
                index = repeat * k + j
                fold_dir = run_dir / f"fold-{index}"
                rows = _fold_table(table, spec.data.id_column, pool, test, np.flatnonzero(assignment == j))
                split_file = fold_dir / "folds.csv"
                fold_dir.mkdir(parents=True, exist_ok=True)
                if split_file.exists() and not pd.read_csv(split_file, dtype=str).equals(rows.astype(str)):
                    raise MdnError("the fold's rows differ from the ones this cross-validation was started with.", where=str(split_file),
                                   hint="resume with the same spec, --folds, --repeats and --group-column, or choose another -o.")  # fmt: skip
                with atomic_path(split_file) as tmp:
                    rows.to_csv(tmp, index=False)
                runs.append({"fold": index, "repeat": repeat, "run_dir": fold_dir.name,
                             "n_train": int((rows["split"] == "train").sum()), "n_val": int((rows["split"] == "val").sum())})  # fmt: skip
                if _finished(fold_dir, spec.train.epochs):
                    continue
                if on_fold is not None:
                    on_fold(index, k * repeats)
                fold_spec = spec.model_copy(update={"data": spec.data.model_copy(update={"split_file": split_file.resolve()})})
                if parent is None and "mlflow" in spec.train.loggers:  # one MLflow run for the cross-validation, a child run per fold
                    parent = MlflowRun(run_dir, flat_params(yaml.safe_load(dump_spec(spec))), tags={"mdn.folds": str(k), "mdn.repeats": str(repeats)})
                try:
                    train(fold_spec, fold_dir, resume=(fold_dir / "checkpoints" / "last.pt").exists(), progress=progress,
                          parent_run=parent.run_id if parent else None)  # fmt: skip
                except BaseException as exc:
                    for failure in close_quietly([parent] if parent is not None else [], exc):
                        if progress is not None:
                            progress("message", text=failure)
                    raise
        result = {
            "folds": k,
            "repeats": repeats,
            "group_column": group_column,
            "seed": spec.train.seed,
            "n_test": int(len(test)),
            "epoch": "last",
            "runs": runs,
        }
        result["summary"] = summarise(run_dir, runs)
        atomic_write_text(run_dir / CV_FILE, json.dumps(result, indent=2) + "\n")
        if "mlflow" in spec.train.loggers:
            parent = parent or MlflowRun(run_dir, flat_params(yaml.safe_load(dump_spec(spec))))
            parent.log_metrics({f"cv/{name}/{stat}": value for name, stats in result["summary"].items()
                                for stat, value in stats.items() if stat in ("mean", "sd") and value is not None}, 0)  # fmt: skip
            parent.log_files([run_dir / CV_FILE])
            parent.close("FINISHED")
        return result


def _finished(fold_dir: Path, epochs: int) -> bool:
    """A fold that ran all its epochs, or stopped early."""
    if not (fold_dir / "summary.json").is_file():
        return False
    summary = read_json(fold_dir / "summary.json", hint="")
    return summary.get("epochs") == epochs or (summary.get("early_stopping") or {}).get("stopped_epoch") is not None
