"""Staged training (continual learning, R-MDN's setting): the plan of stages and the stage-by-stage scores.

With ``data.stage_column`` a run trains the stages in order, ``train.epochs`` each, and the MDN
state (running beta, R-MDN's beta and P, PMDN's beta) carries from stage to stage. After each
stage every stage's val (and test) rows are scored. Row i of the matrix is the model after stage
i, column j the stage it is tested on; the summaries are the continual-learning papers' (Lopez-Paz
& Ranzato, 2017): the average over all stages after the latest stage, and backward transfer,
the mean change on the earlier stages since each was learned.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterator

import numpy as np

from mdn_cli.data.training import TrainingData
from mdn_cli.train.monitor import dcor_by_class, split_metrics
from mdn_cli.train.run import Run


def plan(epochs: int, num_stages: int, position: tuple[int, int], first_epoch: int) -> Iterator[tuple[int, int, int]]:
    """(run epoch, stage index, epoch within the stage) of each epoch still to train.

    ``position`` is (stage index, epochs done in it) after the last finished epoch; a stage with
    ``epochs`` done is complete, so a run resumed there starts the next one.
    """
    index, done = position
    epoch = first_epoch
    while True:
        if done >= epochs:
            index, done = index + 1, 0
        if index >= num_stages:
            return
        done += 1
        yield epoch, index, done
        epoch += 1


def score_stages(run: Run, data: TrainingData) -> dict[str, dict[str, dict]]:
    """stage -> split (val, test if it has rows) -> loss, accuracy... and dcor² of ``train.monitor``, in eval mode."""
    scores: dict[str, dict[str, dict]] = {}
    for name in data.stages:
        staged = replace(run, data=data.stage(name))
        for split in ("val", "test"):
            if len(staged.data.splits[split]) == 0:
                continue
            metrics, features = split_metrics(staged, split, capture=run.spec.train.monitor)
            cell = {key.removeprefix(f"{split}_"): value for key, value in metrics.items()}
            if features is not None:
                cell["dcor2"] = dcor_by_class(staged, features, split)
            scores.setdefault(name, {})[split] = cell
    return scores


def stage_metric(task: str) -> str:
    """The score the matrix summaries use: accuracy, or the loss for regression."""
    return "loss" if task == "regression" else "acc"


def continual_summary(names: list[str], results: list[dict], metric: str) -> dict:
    """Per split: the matrix of ``metric`` (row t: after stage t; column j: tested on stage j) and,
    after each finished stage t, the average over all stages and backward transfer
    ``mean_{j<t} (R[t, j] - R[j, j])`` (None after the first stage); ``average`` and
    ``backward_transfer`` are the latest stage's."""
    summary: dict[str, dict] = {}
    splits = dict.fromkeys(split for result in results for cells in result["scores"].values() for split in cells)
    for split in splits:
        matrix = [[((result["scores"].get(name) or {}).get(split) or {}).get(metric) for name in names] for result in results]
        averages, transfers = [], []
        for t, row in enumerate(matrix):
            defined = [v for v in row if v is not None]
            changes = [row[j] - matrix[j][j] for j in range(t) if row[j] is not None and matrix[j][j] is not None]
            averages.append(float(np.mean(defined)) if defined else None)
            transfers.append(float(np.mean(changes)) if changes else None)
        summary[split] = {"metric": metric, "matrix": matrix, "average": averages[-1], "backward_transfer": transfers[-1],
                          "average_by_stage": averages, "backward_transfer_by_stage": transfers}
    return summary


def stage_report(names: list[str], results: list[dict], task: str, epochs: int) -> dict:
    """What ``summary.json`` and ``stages.json`` keep of a staged run."""
    return {
        "names": names,
        "epochs_per_stage": epochs,
        "finished": [result["stage"] for result in results],
        "results": results,
        "summary": continual_summary(names, results, stage_metric(task)),
    }
