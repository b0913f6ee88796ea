"""An epoch's record, as ``metrics.jsonl`` holds it, made flat for tables and summaries (no torch: `mdn report` reads it)."""

from __future__ import annotations


def flat_metrics(metrics: dict, keys: tuple[str, ...] | None = None) -> dict:
    """An epoch's metrics flat, with ``dcor2[column|stratum]``: ``keys`` in order (those present), or every ``val_`` metric."""
    chosen = [key for key in metrics if key.startswith("val_")] if keys is None else [key for key in keys if key in metrics]
    row = {key: metrics[key] for key in chosen}
    for column, values in (metrics.get("dcor2") or {}).items():
        for stratum, value in values.items():
            row[f"dcor2[{column}|{stratum}]"] = value
    return row
