"""Training progress on stderr: a live bar on a terminal, one line per epoch otherwise."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def dcor_text(dcor2: dict | None) -> str:
    """'cf 0.012/0.015' : the per-class dcor² of each column (pooled when there are no classes)."""
    if not dcor2:
        return ""
    parts = []
    for column, values in dcor2.items():
        per_class = [v for k, v in values.items() if k != "all"] or [values.get("all")]
        parts.append(f"{column} " + "/".join("n/a" if v is None else f"{v:.3f}" for v in per_class))
    return "dcor² " + " ".join(parts)


class TrainingProgress:
    """Callable given to the training loop; renders its events."""

    def __init__(self, console: Console, enabled: bool = True):
        self.console, self.enabled = console, enabled
        self.live = enabled and console.is_terminal
        self.bar: Progress | None = None
        self.task = None

    def __enter__(self) -> "TrainingProgress":
        if self.live:
            self.bar = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  {task.fields[last]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, event: str, **info) -> None:
        if not self.enabled:
            return
        if event == "epoch" and self.bar is not None:
            if self.task is None:
                self.task = self.bar.add_task("train", total=info["batches"], epoch=info["epoch"], epochs=info["epochs"], loss=float("nan"), last="")
            self.bar.reset(self.task, total=info["batches"], epoch=info["epoch"], epochs=info["epochs"])
        elif event == "batch" and self.bar is not None:
            self.bar.update(self.task, advance=1, loss=info["loss"])
        elif event == "message":
            self.console.print(info["text"], markup=False, highlight=False)
        elif event == "epoch_end":
            m = info["metrics"]
            line = f"epoch {m['epoch']}: train_loss {m['train_loss']:.4f} val_loss {m['val_loss']:.4f}"
            if "val_acc" in m:
                line += f" val_acc {m['val_acc']:.3f}"
            line += f" {dcor_text(m.get('dcor2'))}".rstrip()
            if self.bar is not None:
                self.bar.update(self.task, last=line.split(": ", 1)[1])
            else:
                self.console.print(line, markup=False, highlight=False)
