"""A trained run's MDN betas refitted on its whole training set (``nn.refit_beta``), as a new checkpoint.

Eval mode uses each MDN layer's running estimate of beta; with small training batches that
average of noisy batch betas removes visibly less than the exact whole-set fit. This refits it
from the checkpoint's network and the run's training rows, evaluates the validation split before
and after (the training loop's metrics), and writes ``checkpoints/<name>-refit.pt``; the original
checkpoint is kept.
"""

from __future__ import annotations

from pathlib import Path

from mdn_cli.analysis.report import REPORTED
from mdn_cli.model.checkpoint import load_run, save_checkpoint
from mdn_cli.model.inference import flatten_views
from mdn_cli.nn import metadata_norm_layers, refit_beta
from mdn_cli.train.history import flat_metrics
from mdn_cli.train.monitor import validate
from mdn_cli.train.run import Run
from mdn_cli.utils.errors import MdnError


def refit_run(run_dir: str | Path, checkpoint: str = "best", device: str | None = None, output: Path | None = None) -> dict:
    """Refit the betas of a run's checkpoint; returns the new checkpoint, the rows used and the metrics before and after."""
    loaded = load_run(run_dir, checkpoint, device)
    if not metadata_norm_layers(loaded.network):
        raise MdnError("this run has no MDN layers: there is no beta to refit.", where=str(loaded.checkpoint), hint="refit a run trained with MDN layers.")
    data = loaded.training_data()
    run = Run(loaded.spec, data, loaded.network, loaded.device)
    before = flat_metrics(validate(run), REPORTED)
    size = loaded.spec.train.batch_size

    def training_rows():  # every evaluation clip of a video, with its video's design row
        for _rows, x, design, _y in data.batches("train", size):
            x, design = flatten_views(x, design, data.inputs.views)
            yield x.to(run.device), design.to(run.device)

    rows = refit_beta(run.network, training_rows)
    after = flat_metrics(validate(run), REPORTED)
    target = output or loaded.checkpoint.with_name(f"{loaded.checkpoint.stem}-refit.pt")
    state = dict(loaded.state, model=run.network.state_dict(), refit={"from": str(loaded.checkpoint), "rows": rows})
    save_checkpoint(state, target)
    return {"checkpoint": str(target), "from": str(loaded.checkpoint), "rows": rows, "before": before, "after": after}
