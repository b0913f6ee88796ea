"""Pictures of runs and audits with matplotlib's Agg backend (no display needed), saved atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mdn_cli.analysis.report import RunRecord, evaluations  # noqa: E402
from mdn_cli.utils.errors import MdnError  # noqa: E402
from mdn_cli.utils.fileio import atomic_path  # noqa: E402

FORMATS = (".png", ".pdf", ".svg")
STRATUM_STYLES = ("-", "--", ":", "-.")


def check_plot_path(path: str | Path) -> Path:
    """The plot's format comes from its suffix: check it before any work is done."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise MdnError(f"cannot tell the picture format from {path.name!r}.", where="--plot", hint=f"end the file name in {', '.join(FORMATS)}.")
    return path


def _pvalue_text(result: dict) -> str:
    if result.get("dcor2") is None:
        return "n/a"
    p = result.get("pvalue")
    return "no test" if p is None else ("p<0.001" if p < 0.001 else f"p={p:.3f}")


def plot_report(records: Sequence[RunRecord], path: str | Path, audits: Sequence[dict] = ()) -> Path:
    """Val accuracy and dcor² per epoch (one panel per metadata column) for every run, and a bar
    chart of dcor² per column and stratum with p-values for every audit given."""
    path = check_plot_path(path)
    columns = list(dict.fromkeys(c for r in records for c in r.dcor_history()))
    has_acc = any("val_acc" in m for r in records for m in r.history)
    kept = [("eval", record.name, e) for record in records for e in evaluations(record.summary.get("run_dir", "")) if e["by_group"]]
    panels = ((["acc"] if has_acc else ["loss"]) if records else []) + [("dcor", c) for c in columns] + [("audit", a) for a in audits] + kept
    ncols = len(panels) if len(panels) <= 3 else -(-len(panels) // 2)  # more than three: two rows
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(4.8 * ncols, 5.5), 4.2 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, panel in zip(axes.flat, panels):
        if panel in ("acc", "loss"):
            key = "val_acc" if panel == "acc" else "val_loss"
            for i, record in enumerate(records):
                epochs = [m["epoch"] for m in record.history if key in m]
                ax.plot(epochs, [m[key] for m in record.history if key in m], color=colours[i % len(colours)], label=record.name, lw=2)
            ax.set(xlabel="epoch", ylabel="validation accuracy" if panel == "acc" else "validation loss", title="validation " + ("accuracy" if panel == "acc" else "loss"))
        elif panel[0] == "dcor":
            column = panel[1]
            for i, record in enumerate(records):
                strata = record.dcor_history().get(column, {})
                epochs = [m["epoch"] for m in record.history]
                for j, (stratum, values) in enumerate(strata.items()):
                    points = [(e, v) for e, v in zip(epochs, values) if v is not None]
                    if points:
                        ax.plot(*zip(*points), color=colours[i % len(colours)], ls=STRATUM_STYLES[j % len(STRATUM_STYLES)],
                                lw=2 if stratum == "all" else 1.4, label=f"{record.name} {stratum}")
            ax.axhline(0, color="grey", lw=0.6)
            monitor = next((r.summary.get("monitor") for r in records if r.summary.get("monitor")), None)
            ax.set(xlabel="epoch", ylabel="dcor² (bias-corrected)", title=f"dcor² of {monitor or 'features'} with {column}")
        elif panel[0] == "eval":
            _evaluation_bars(ax, panel[1], panel[2], colours)
        else:
            _audit_bars(ax, panel[1], colours)
        if panel == "acc" or panel == "loss" or panel[0] == "dcor":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    names = " vs ".join(r.name for r in records) or "audit"
    fig.suptitle(f"mdn report: {names}")
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp, plt.rc_context({"svg.fonttype": "none"}):  # SVG text stays text
            fig.savefig(tmp, format=path.suffix.lower().lstrip("."), dpi=120)
    finally:
        plt.close(fig)
    return path


def _audit_bars(ax, audit: dict, colours: list[str]) -> None:
    results = audit["results"]
    columns = list(dict.fromkeys(r["column"] for r in results))
    strata = list(dict.fromkeys(r.get("stratum") or "all" for r in results))
    width = 0.8 / max(len(strata), 1)
    for j, stratum in enumerate(strata):
        label = stratum  # on the stratum's first bar, whichever column has it
        for i, column in enumerate(columns):
            result = next((r for r in results if r["column"] == column and (r.get("stratum") or "all") == stratum), None)
            if result is None:
                continue
            value = result.get("dcor2") or 0.0
            x = i - 0.4 + width * (j + 0.5)
            ax.bar(x, value, width, color=colours[j % len(colours)], label=label)
            label = None
            ax.annotate(_pvalue_text(result), (x, value), ha="center", va="bottom", fontsize=7, rotation=90 if len(strata) * len(columns) > 6 else 0)
    ax.set_xticks(range(len(columns)), columns)
    ax.axhline(0, color="grey", lw=0.6)
    n = audit.get("n")
    ax.set(xlabel="metadata column", ylabel="dcor² (bias-corrected)", title=f"audit: {audit.get('name', '')}" + (f" (n={n})" if n else ""))
    ax.margins(y=0.2)


def _evaluation_bars(ax, run: str, evaluation: dict, colours: list[str]) -> None:
    """A kept `mdn evaluate` result: the headline metric per group, one colour per --by column,
    with its bootstrap interval (or ± sd over folds) as an error bar."""
    metric = "mae" if evaluation["task"] == "regression" else "balanced_accuracy"
    rows = evaluation["by_group"]
    columns = list(dict.fromkeys(row["column"] for row in rows))
    for x, row in enumerate(rows):
        value = row.get(metric)
        if value is None:
            continue
        interval, sd = (row.get("intervals") or {}).get(metric), (row.get("sd") or {}).get(metric)
        error = [[value - interval[0]], [interval[1] - value]] if interval else ([[sd], [sd]] if sd is not None else None)
        ax.bar(x, value, 0.8, yerr=error, capsize=3, color=colours[columns.index(row["column"]) % len(colours)])
    ax.set_xticks(range(len(rows)), [f"{row['column']} {row['group']}" for row in rows], rotation=45, ha="right", fontsize=7)
    if metric in evaluation["overall"] and evaluation["overall"][metric] is not None:
        ax.axhline(evaluation["overall"][metric], color="grey", lw=0.8, ls="--", label="overall")
    ax.set(ylabel=metric.replace("_", " "), title=f"{run}: {evaluation['split']} ({Path(str(evaluation['checkpoint'])).stem}), per group")
