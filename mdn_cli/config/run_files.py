"""The files of a run directory that no command may write over."""

from __future__ import annotations

from pathlib import Path

from mdn_cli.config.loading import load_spec
from mdn_cli.utils.errors import MdnError

RUN_RECORDS = ("config.yaml", "metrics.jsonl", "summary.json", "cv.json", "folds.csv")


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
            spec = load_spec(config, check_files=False)
        except MdnError:
            continue
        files += [Path(p) for p in (spec.data.table, spec.data.inputs, spec.data.split_file, spec.model.init.path if spec.model.init else None) if p]
    return files
