"""The files of a run directory: their names, and those that no command may write over."""

from __future__ import annotations

from pathlib import Path

from mdn_cli.config.loading import load_spec
from mdn_cli.utils.errors import MdnError
from mdn_cli.utils.fileio import read_json

CV_FILE = "cv.json"  # a cross-validation's summary, beside its fold-<i>/ runs
STAGES_FILE = "stages.json"  # a staged run's stage-by-stage scores, rewritten after each epoch
RUN_RECORDS = ("config.yaml", "metrics.jsonl", "summary.json", CV_FILE, STAGES_FILE, "folds.csv")


def is_cv_run(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CV_FILE).is_file()


def fold_dirs(run_dir: str | Path) -> list[Path]:
    """The fold run directories of a CV run, in fold order (from its cv.json)."""
    run_dir = Path(run_dir)
    cv = read_json(run_dir / CV_FILE, hint="pass the -o folder of `mdn train --folds`.")
    return [run_dir / fold["run_dir"] for fold in cv["runs"]]


def run_files(run_dir: str | Path) -> list[Path]:
    """The files a run directory holds or depends on, which no command may write over.

    What `mdn train` wrote (records, checkpoints, TensorBoard logs; a cross-validation's folds too)
    and the data each of its specs reads (table, inputs, split file, init weights).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    files = [p for name in RUN_RECORDS for pattern in (name, f"fold-*/{name}") for p in run_dir.glob(pattern)]
    files += [p for folder in ("checkpoints", "tensorboard") for pattern in (folder, f"fold-*/{folder}")
              for root in run_dir.glob(pattern) for p in root.rglob("*") if p.is_file()]
    for config in [p for p in files if p.name == "config.yaml"]:
        try:
            spec = load_spec(config, check_files=False, check_with_torch=False)
        except MdnError:
            continue
        files += [Path(p) for p in (spec.data.table, spec.data.inputs, spec.data.split_file, spec.model.init.path if spec.model.init else None) if p]
    return files
