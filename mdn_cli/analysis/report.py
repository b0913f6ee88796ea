"""What run directories say about themselves, as data: records, comparison rows, one run in detail.

Rendering (tables, markdown, csv) lives in ``cli.render``, figures in ``cli.plots``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mdn_cli.config.run_files import STAGES_FILE
from mdn_cli.train.history import flat_metrics
from mdn_cli.utils.errors import MdnError
from mdn_cli.utils.fileio import read_json


@dataclass
class RunRecord:
    """What a run directory says about itself: its summary and its per-epoch metrics."""

    name: str
    summary: dict
    history: list[dict] = field(default_factory=list)

    @classmethod
    def from_summary(cls, summary: dict) -> "RunRecord":
        history = [m for m in (summary.get("best"), summary.get("last")) if m]
        return cls(Path(summary["run_dir"]).name, summary, history)

    @classmethod
    def from_dir(cls, run_dir: str | Path) -> "RunRecord":
        run_dir = Path(run_dir)
        metrics_path = run_dir / "metrics.jsonl"
        if not metrics_path.exists():
            raise MdnError("not a run directory (no metrics.jsonl).", where=str(run_dir), hint="pass the -o folder of `mdn train`.")
        try:
            history = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        except json.JSONDecodeError as exc:
            raise MdnError(f"metrics.jsonl is not valid JSON lines ({exc}).", where=str(metrics_path), hint=None) from None
        summary_path = run_dir / "summary.json"
        summary = read_json(summary_path, hint="rerun or --resume the training to rewrite it.") if summary_path.exists() else {"finished": False}
        summary["run_dir"] = str(run_dir)
        return cls(run_dir.name, summary, history)

    @property
    def config(self) -> dict:
        """The run's resolved spec (config.yaml) as plain data; {} when absent."""
        path = Path(self.summary.get("run_dir", "")) / "config.yaml"
        if not path.is_file():
            return {}
        import yaml

        try:
            return yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError:
            return {}

    def dcor_history(self) -> dict[str, dict[str, list]]:
        """column -> stratum -> dcor² per epoch (None where an epoch lacks it)."""
        keys = {(c, s): None for m in self.history for c, values in (m.get("dcor2") or {}).items() for s in values}
        history: dict[str, dict[str, list]] = {}
        for column, stratum in keys:
            history.setdefault(column, {})[stratum] = [((m.get("dcor2") or {}).get(column) or {}).get(stratum) for m in self.history]
        return history

    def epoch(self, which: str) -> dict | None:
        if not self.history:
            return None
        if which == "last":
            return self.history[-1]
        best = (self.summary.get("best") or {}).get("epoch")
        return next((m for m in self.history if m["epoch"] == best), self.history[-1])


# the metrics a comparison shows, in this order (then dcor² per column and stratum)
REPORTED = ("val_acc", "val_balanced_acc", "val_auc", "val_loss", "train_loss")


def comparison_rows(records: list[RunRecord], which: str = "last") -> list[dict]:
    """One flat row per run: accuracy, losses, and dcor² per metadata column and stratum."""
    rows = []
    for record in records:
        m = record.epoch(which) or {}
        row = {"run": record.name, "epoch": m.get("epoch"), "epochs": record.summary.get("epochs", len(record.history))}
        row.update(flat_metrics(m, REPORTED))
        row["seconds"] = m.get("seconds")
        rows.append(row)
    return rows


# -- one run in detail -------------------------------------------------------------------------
def spec_summary(record: RunRecord) -> dict:
    """What was trained, in a few keys: data roles, model and MDN placement, training settings."""
    config, summary = record.config, record.summary
    data, model, mdn, train = (config.get(k) or {} for k in ("data", "model", "mdn", "train"))
    layers = model.get("layers") or []
    named = [layer.get("name") or layer.get("type") for layer in layers]
    inline = [named[i - 1] for i, layer in enumerate(layers) if layer.get("type") == "mdn" and i > 0]
    mdn_after = inline + list(model.get("mdn_after") or [])  # MDN layers in the list, and attached by name
    model_text = f"{len(layers)} layers" if layers else str(model.get("factory"))
    return {
        "run": record.name,
        "task": train.get("task", summary.get("task")),
        "label": data.get("label"),
        "metadata": data.get("metadata"),
        "preserve": mdn.get("preserve"),
        "model": model_text,
        "mdn_placed_after": mdn_after,
        "mdn_variant": mdn.get("variant", "batch") if mdn_after else None,
        "momentum": mdn.get("momentum") if mdn_after and mdn.get("variant", "batch") == "batch" else None,
        "epochs": len(record.history),
        "batch_size": train.get("batch_size"),
        "optimizer": train.get("optimizer"),
        "lr": train.get("lr"),
        "seed": train.get("seed"),
        "monitor": train.get("monitor", summary.get("monitor")),
        "n": summary.get("n"),
        "seconds": (record.history[-1].get("seconds") if record.history else None),
    }


def run_detail(record: RunRecord) -> dict:
    """The single-run report as data: spec summary, best and last epoch, dcor² per epoch."""
    return {
        "spec": spec_summary(record),
        "best": record.epoch("best"),
        "last": record.epoch("last"),
        "epochs": [m.get("epoch") for m in record.history],
        "dcor2_per_epoch": record.dcor_history(),
        "evaluations": evaluations(record.summary.get("run_dir", "")),
        "stages": stage_scores(record.summary.get("run_dir", "")),
    }


def stage_scores(run_dir: str | Path) -> dict | None:
    """A staged run's stage-by-stage scores (``stages.json``), None for other runs."""
    path = Path(run_dir) / STAGES_FILE
    return read_json(path, hint="--resume the training to rewrite it.") if path.is_file() else None


def stage_tables(stages: dict) -> list[tuple[str, list[list]]]:
    """The stage matrices as (title, rows of cells): per split, the score with the average and backward
    transfer after each stage, then per metadata column dcor² per class (row: after stage; column: tested on)."""
    names, tables = stages["names"], []
    for split, summary in stages["summary"].items():
        header = ["after stage", *names, "average", "backward transfer"]
        rows = [[name, *values, average, transfer] for name, values, average, transfer
                in zip(stages["finished"], summary["matrix"], summary["average_by_stage"], summary["backward_transfer_by_stage"])]
        tables.append((f"{split} {summary['metric']} (row: after stage; column: tested on stage)", [header, *rows]))
        columns = dict.fromkeys(c for result in stages["results"] for cells in result["scores"].values() for c in (cells.get(split) or {}).get("dcor2") or {})
        for column in columns:
            rows, shown = [], {}
            for result in stages["results"]:
                row = [result["stage"]]
                for name in names:
                    strata = (((result["scores"].get(name) or {}).get(split) or {}).get("dcor2") or {}).get(column) or {}
                    per_class = {stratum: value for stratum, value in strata.items() if stratum != "all"} or strata
                    shown.update(dict.fromkeys(per_class))
                    row.append(list(per_class.values()))
                rows.append(row)
            tables.append((f"{split} dcor² with {column} ({' / '.join(shown)})", [["after stage", *names], *rows]))
    return tables


def evaluations(run_dir: str | Path) -> list[dict]:
    """The `mdn evaluate` results kept in a run (``RUNDIR/eval/*.json``): rows, checkpoint, overall and per-group metrics."""
    folder = Path(run_dir) / "eval"
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        result = read_json(path, hint="rerun `mdn evaluate` to rewrite it.")
        overall = {name: value for name, value in result["overall"].items() if not isinstance(value, list)}
        out.append({"file": path.name, "split": result["split"], "checkpoint": result["checkpoint"], "n": result["n"], "task": result["task"],
                    "overall": overall, "intervals": result.get("intervals") or {}, "sd": result.get("overall_sd") or {},
                    "by_group": result.get("by_group") or []})  # fmt: skip
    return out


def load_audit(path: str | Path) -> dict:
    """An `mdn audit --format json` result, checked for the keys the report uses."""
    path = Path(path)
    audit = read_json(path, hint="give the JSON written by `mdn audit --format json`.")
    results = audit.get("results") if isinstance(audit, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) and "column" in r and "dcor2" in r for r in results):
        raise MdnError("not an audit result (no results with column and dcor2).", where=str(path), hint="give the JSON written by `mdn audit --format json`.")
    audit["name"] = path.stem
    return audit
