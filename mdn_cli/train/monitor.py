"""What training measures on a split after each epoch: loss, accuracy, balanced accuracy, AUC, and the
dcor² of ``train.monitor``'s features with each metadata column, pooled and per label class.

The metrics are ``stats.metrics``' (scikit-learn's definitions, the ones `mdn evaluate` reports),
the dcor² is ``data.audit``'s, and the model runs through ``model.inference``: one definition each.
"""

from __future__ import annotations

import numpy as np
import torch

from mdn_cli.data.audit import audit_features
from mdn_cli.model.inference import eval_batches, flat, per_row
from mdn_cli.model.task import scores, task_loss
from mdn_cli.stats.metrics import overall_metrics
from mdn_cli.train.run import Run


def split_metrics(run: Run, split: str, capture: str | None = None, batch_size: int | None = None) -> tuple[dict, np.ndarray | None]:
    """Loss (and accuracy, balanced accuracy, AUC) on a split in eval mode; the features of layer ``capture`` if given.

    For videos with several evaluation clips the loss is the mean over clips (what training
    minimises); the metrics and features are per video, from the mean of its clips' scores and features.
    """
    network, task = run.network, run.spec.train.task
    loss_fn = task_loss(task)
    watched = {capture: network.feature_module(capture)} if capture is not None else {}
    views = run.data.inputs.views
    total_loss, n = 0.0, 0
    outputs: list[torch.Tensor] = []
    features: list[torch.Tensor] = []
    batches = run.data.batches(split, batch_size or run.spec.train.batch_size)
    for (_rows, _x, _design, y), out, captured in eval_batches(network, batches, run.device, watched, views):
        total_loss += float(loss_fn(out, y.repeat_interleave(views).to(run.device))) * len(out)
        n += len(out)
        outputs.append(per_row(scores(task, out.detach().double().cpu()), views))
        features += [per_row(flat(captured[capture]), views)] if capture is not None else []
    metrics = {f"{split}_loss": total_loss / n}
    if task != "regression":
        values = overall_metrics(task, run.data.targets[run.data.splits[split]].long().numpy(), torch.cat(outputs).numpy()).values
        metrics[f"{split}_acc"] = values["accuracy"]
        metrics[f"{split}_balanced_acc"] = values["balanced_accuracy"]
        if task == "binary":
            metrics[f"{split}_auc"] = values["roc_auc"]
    return metrics, torch.cat(features).numpy() if capture is not None else None


def dcor_by_class(run: Run, features: np.ndarray, split: str = "val") -> dict:
    """dcor² of the features with each metadata column, pooled and per label class (as the paper)."""
    spec = run.spec
    rows = run.data.splits[split]
    table = run.data.table.iloc[rows].reset_index(drop=True)
    limit = spec.train.dcor_max_samples
    if limit is not None and len(rows) > limit:
        keep = np.sort(np.random.default_rng(spec.train.seed).choice(len(rows), limit, replace=False))
        features, table = features[keep], table.iloc[keep].reset_index(drop=True)
    by = spec.data.label if spec.train.task != "regression" else None
    result = audit_features(features, table, spec.data.metadata, by=by, categorical=spec.data.categorical)
    return result.nested()


def validate(run: Run) -> dict:
    """The per-epoch validation metrics: loss, accuracy, and dcor² of ``train.monitor``'s features."""
    metrics, features = split_metrics(run, "val", capture=run.spec.train.monitor)
    if features is not None:
        metrics["dcor2"] = dcor_by_class(run, features)
    return metrics
