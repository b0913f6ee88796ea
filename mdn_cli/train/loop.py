"""The epoch loop: MDN-aware batches (PMDN's two passes, DDP), per-epoch validation, atomic checkpoints, resume.

Nothing here prints: progress goes to an optional callback, so the CLI decides how to show it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from mdn_cli.config import Spec, dump_spec, same_training, spec_hash
from mdn_cli.config.loading import RESUMABLE_CHANGES
from mdn_cli.config.run_files import STAGES_FILE
from mdn_cli.data.training import TrainingData
from mdn_cli.model.checkpoint import CHECKPOINT_FORMAT, check_run_dir, load_checkpoint, save_checkpoint
from mdn_cli.model.finetune import init_message, keep_frozen_norms_in_eval
from mdn_cli.model.task import task_loss
from mdn_cli.nn import mdn_penalty, metadata, metadata_norm_layers, penalty_parameters, penalty_pass, set_sync
from mdn_cli.train.monitor import validate
from mdn_cli.train.options import EarlyStopping, EpochSchedule, autocast, balanced_class_weights, grad_scaler
from mdn_cli.train.run import Run, build_run, fit_training_gram
from mdn_cli.train.stages import plan, score_stages, stage_report
from mdn_cli.train.tracking import Trackers, open_trackers
from mdn_cli.utils import distributed
from mdn_cli.utils.errors import MdnError
from mdn_cli.utils.fileio import atomic_write_text, directory_lock, discard_spare
from mdn_cli.utils.interrupts import interrupts_deferred

Progress = Callable[..., None]


def _train_loss_fn(run: Run) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss: the task's, weighted by ``train.class_weights`` when set (validation stays unweighted)."""
    if run.spec.train.class_weights is None:
        return task_loss(run.spec.train.task)
    train_targets = run.data.targets[run.data.splits["train"]]
    return task_loss(run.spec.train.task, balanced_class_weights(train_targets, run.data.classes, where=str(run.spec.data.table)))


def _optimizer(spec: Spec, params) -> torch.optim.Optimizer:
    t = spec.train
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=t.lr, weight_decay=t.weight_decay)


def _train_batches(data: TrainingData, batch_size: int, seed: int, world: distributed.World, epoch: int | None = None):
    """(global batch size, inputs, design, targets) of this rank: ``batch_size`` rows per rank.

    The shuffled global batches of ``batch_size * world size`` rows (``TrainingData.batch_rows``),
    each rank loading only its share (all of it in one process). ``epoch`` draws the
    augmentation (per row, so any sharding gives the same samples).
    """
    batches = data.batch_rows("train", batch_size * world.size, seed)
    mine = [distributed.shard(batch, world) for batch in batches]
    for batch, part, x in zip(batches, mine, data.inputs.batches(mine, epoch)):
        yield len(batch), x, data.design_rows[part], data.targets[part]


def fit_penalty_betas(network: nn.Module, x: torch.Tensor, design: torch.Tensor, beta_optimizer: torch.optim.Optimizer,
                      forward_context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> float:
    """PMDN's first pass over a batch (vento99/PMDN): one step of the betas' optimiser on the penalty alone.

    As in the reference, every PMDN layer passes the residual of the whole design ``Y - X beta``
    on in this pass (``penalty_pass``), and the penalty is the mean over the layers of
    ``||Y - X beta||²`` (a sum of squares each). It is differentiated with respect to the betas
    only (``torch.autograd.grad``: the network's weight gradients are not even computed), so a
    layer's beta gets gradient from its own penalty and, through the features, from the later
    layers' penalties; only the betas step. The caller's second pass then runs the network with
    the updated betas and steps the network on the task loss alone (whose gradients on the betas
    are discarded in turn). So the penalty never moves the network's weights and the task loss
    never moves beta. Under DDP the pass runs on the unwrapped network and the betas' gradients
    are summed over the processes, so every rank takes the step of the global batch.
    ``forward_context`` is the mixed-precision context of the forward pass. Returns this
    process's penalty.
    """
    with forward_context(), metadata(network, design), penalty_pass(network):
        network(x)
    penalty = mdn_penalty(network)
    betas = [beta for group in beta_optimizer.param_groups for beta in group["params"]]
    for beta, grad in zip(betas, torch.autograd.grad(penalty, betas, allow_unused=True)):
        beta.grad = torch.zeros_like(beta) if grad is None else grad
        if distributed.world().size > 1:
            torch.distributed.all_reduce(beta.grad)
    beta_optimizer.step()
    return float(penalty.detach())


class Trainer:
    """Runs epochs of a ``Run`` into a run directory, checkpointing after each one.

    Under torchrun the network is wrapped in DistributedDataParallel with synchronised MDN
    statistics; only rank 0 evaluates and writes.
    """

    def __init__(self, run: Run, run_dir: Path, progress: Progress | None = None, parent_run: str | None = None):
        self.run, self.run_dir = run, Path(run_dir)
        self.config = dump_spec(run.spec)  # the resolved spec's text: config.yaml, and in every checkpoint
        self.parent_run = parent_run  # the MLflow run of a cross-validation, whose child this run is
        self.world = distributed.world()
        self.progress = (progress if self.world.is_main else None) or (lambda *_a, **_k: None)
        self._new_optimizers()
        self.loss_fn = _train_loss_fn(run)
        self.forward_context = autocast(run.spec.train.precision, run.device)
        self.stopping = EarlyStopping.from_spec(run.spec.train)
        self.scaler = grad_scaler(run.spec.train.precision, run.device)
        # a staged run (data.stage_column): the whole data, the stages' names, (stage, epochs done) and each finished stage's scores
        self.full_data = run.data
        self.stage_names = list(run.data.stages) if run.data.stages else None
        self.stage_position = (0, 0)
        self.stage_results: list[dict] = []
        self.history: list[dict] = []
        self.start_epoch = 1
        self.best: dict | None = None
        self.elapsed = 0.0
        self.saved_epoch = 0  # the epoch checkpoints/last.pt holds
        self.unsaved: list[dict] = []  # metrics of the epochs since then, logged to the trackers when they are saved
        self.unsaved_best: dict | None = None  # the state of an unsaved best epoch, for best.pt at the next checkpoint

    def _new_optimizers(self) -> None:
        """The network's optimiser and schedule and, for PMDN, the betas' own optimiser (its paper's
        learning rate); frozen parameters (train.freeze) are not optimised."""
        run = self.run
        betas = penalty_parameters(run.network)
        beta_ids = {id(p) for p in betas}
        self.optimizer = _optimizer(run.spec, [p for p in run.network.parameters() if id(p) not in beta_ids and p.requires_grad])
        self.clipped = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.schedule = EpochSchedule(self.optimizer, run.spec.train)
        self.beta_optimizer = torch.optim.Adam(betas, lr=run.spec.mdn.beta_lr) if betas else None

    def _enter_stage(self, index: int, first_epoch: bool) -> None:
        """Train on stage ``index``'s rows. Its first epoch starts fresh optimisers and schedule (as
        R-MDN's reference does per stage) and refits batch MDN's Gram inverse on the stage's training
        rows; the MDN state (betas, P) carries over."""
        name = self.stage_names[index]
        self.run.data = self.full_data.stage(name)
        if first_epoch:
            self.progress("message", text=f"stage {name} ({index + 1} of {len(self.stage_names)}): {len(self.run.data.splits['train'])} training rows")
            self._new_optimizers()
            fit_training_gram(self.run.spec, self.run.network, self.run.data, what=f"stage {name!r}: ")

    # -- checkpoints -------------------------------------------------------------------------
    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def _state(self, epoch: int) -> dict:
        data = self.run.data
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": epoch,
            "model": self.run.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "beta_optimizer": self.beta_optimizer.state_dict() if self.beta_optimizer else None,
            "scheduler": self.schedule.state_dict() if self.schedule.active else None,
            "early_stopping": self.stopping.state_dict() if self.stopping else None,
            "stages": {"position": list(self.stage_position), "results": self.stage_results} if self.stage_names else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": torch.get_rng_state(),
            "history": self.history,
            "best": self.best,
            "elapsed": self.elapsed,
            "spec_hash": spec_hash(self.run.spec),
            "config": self.config,
            "design": data.design.to_dict(),
            "classes": data.classes,
            "sample_shape": list(data.sample_shape),
        }

    def _checkpoint(self, epoch: int, improved: bool, due: bool, trackers: Trackers) -> None:
        """After an epoch: save it when ``due`` (every ``train.checkpoint_every`` epochs, and at the
        end of a run or stage), with the records that land together with it.

        ``last.pt`` is serialised once; when the epoch is also the best, ``best.pt`` is the same
        file (``save_checkpoint``'s ``also``). A best epoch between checkpoints is kept in memory
        and written as ``best.pt`` with the next checkpoint.
        """
        if not due:
            if improved:
                self.unsaved_best = copy.deepcopy(self._state(epoch))
            return
        state, best = self._state(epoch), self.checkpoint_dir / "best.pt"
        with interrupts_deferred():  # an epoch's checkpoint and metrics land together
            if self.unsaved_best is not None and not improved:
                save_checkpoint(self.unsaved_best, best)
            save_checkpoint(state, self.checkpoint_dir / "last.pt", also=[best] if improved else [], recycle=True)
            atomic_write_text(self.run_dir / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in self.history))
            if self.stage_names:
                atomic_write_text(self.run_dir / STAGES_FILE, json.dumps(self._stage_report(), indent=2) + "\n")
        self.saved_epoch, self.unsaved_best = epoch, None
        for metrics in self.unsaved:  # after the checkpoint: a tracker that missed an epoch is given it when the run resumes
            trackers.log_epoch(metrics)
        self.unsaved = []

    def resume(self) -> None:
        path = self.checkpoint_dir / "last.pt"
        if not path.exists():
            raise MdnError("nothing to resume: no checkpoints/last.pt.", where=str(self.run_dir), hint="start the run without --resume.")
        state = load_checkpoint(path)
        if not same_training(state["config"], self.config):
            raise MdnError(
                f"the spec differs from the one this run was started with (only {', '.join('train.' + key for key in RESUMABLE_CHANGES)} may change on resume).",
                where=str(path),
                hint=f"compare with {self.run_dir / 'config.yaml'}, or train into a new run directory.",
            )
        self.run.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.beta_optimizer is not None:
            self.beta_optimizer.load_state_dict(state["beta_optimizer"])
        if self.schedule.active:
            self.schedule.load_state_dict(state["scheduler"])
        if self.stopping is not None:
            self.stopping.load_state_dict(state["early_stopping"])
        if self.stage_names:
            self.stage_position = tuple(state["stages"]["position"])
            self.stage_results = state["stages"]["results"]
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        self.history, self.best, self.elapsed = state["history"], state["best"], state["elapsed"]
        self.start_epoch = state["epoch"] + 1
        self.saved_epoch = state["epoch"]

    # -- loop --------------------------------------------------------------------------------
    def fit(self) -> dict:
        spec, network, world = self.run.spec, self.run.network, self.world
        if world.is_main:
            atomic_write_text(self.run_dir / "config.yaml", self.config)
        if self.run.init_report is not None and self.start_epoch == 1:
            self.progress("message", text=init_message(self.run.init_report))
        if self.stopped is not None:
            self.progress("message", text=f"this run stopped early at epoch {self.stopped['epoch']} ({self.stopped['reason']}); nothing to resume.")
        model = network
        if world.size > 1:
            set_sync(network)
            if self.run.device.type == "cuda":  # SyncBatchNorm runs on GPUs only: on CPU each process keeps its own BatchNorm statistics
                torch.nn.SyncBatchNorm.convert_sync_batchnorm(network)  # replaces the BatchNorm children in place
            device_ids = [self.run.device] if self.run.device.type == "cuda" else None
            model = torch.nn.parallel.DistributedDataParallel(network, device_ids=device_ids)
        trackers = (open_trackers(spec.train.loggers, self.run_dir, self.config, spec.train.select, self.history, self.parent_run)
                    if world.is_main else Trackers([]))  # fmt: skip
        try:
            if self.stage_names is None:
                for epoch in range(self.start_epoch, spec.train.epochs + 1):
                    if self.stopped is not None:
                        break
                    self._epoch(model, epoch, trackers)
            else:
                for epoch, index, stage_epoch in plan(spec.train.epochs, len(self.stage_names), self.stage_position, self.start_epoch):
                    self._enter_stage(index, first_epoch=stage_epoch == 1)
                    self._epoch(model, epoch, trackers, (index, stage_epoch))
            summary = self.summary() if world.is_main else {}
            if world.is_main:
                atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        except BaseException as exc:
            for failure in trackers.abandon(exc):
                self.progress("message", text=failure)
            raise
        finally:
            if world.is_main:
                discard_spare(self.checkpoint_dir / "last.pt")  # the file recycled for the next epoch's checkpoint
        trackers.close("FINISHED")
        return summary

    def _epoch(self, model: nn.Module, epoch: int, trackers: Trackers, stage: tuple[int, int] | None = None) -> None:
        """One epoch: train on every batch, validate, step the schedule, checkpoint, log; may stop the run early.

        ``stage``: (stage index, epoch within it) of a staged run; after a stage's last epoch every
        stage is scored and ``best.pt`` is that model.
        """
        spec, data, network, world = self.run.spec, self.run.data, self.run.network, self.world
        t = spec.train
        loss_fn, forward_context = self.loss_fn, self.forward_context
        started = time.perf_counter()
        epochs = t.epochs * (len(self.stage_names) if self.stage_names else 1)
        self.progress("epoch", epoch=epoch, epochs=epochs, batches=math.ceil(len(data.splits["train"]) / (t.batch_size * world.size)))
        network.train()
        keep_frozen_norms_in_eval(network, t.freeze)
        lr = self.optimizer.param_groups[0]["lr"]
        total, total_penalty, seen = 0.0, 0.0, 0
        for n_global, x, design, y in _train_batches(data, t.batch_size, t.seed * 100_003 + epoch, world, epoch):
            x, design, y = x.to(self.run.device), design.to(self.run.device), y.to(self.run.device)
            penalty = None
            if self.beta_optimizer is not None:  # PMDN, pass 1: the betas on the penalty alone
                penalty = fit_penalty_betas(network, x, design, self.beta_optimizer, forward_context)
            with forward_context(), metadata(network, design):
                out = model(x)
            out = out.float()  # the loss in float32 under mixed precision
            loss = loss_fn(out, y) if len(y) else out.sum() * 0.0
            objective = loss
            if world.size > 1:  # DDP averages gradients over ranks: weight each by its share of the global batch
                objective = objective * (len(y) * world.size / n_global)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(objective).backward()  # loss scaling only for 16-mixed
            if t.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.clipped, t.grad_clip)
            self.scaler.step(self.optimizer)  # PMDN, pass 2: the network on the task loss alone (its betas are not in this optimiser)
            self.scaler.update()
            loss_value = loss.item()  # one device sync per batch
            total += loss_value * len(y)
            total_penalty += 0.0 if penalty is None else penalty
            seen += len(y)
            self.progress("batch", loss=loss_value)
        total, total_penalty, seen = distributed.all_sum([total, total_penalty, seen], self.run.device)
        weights_finite = all(bool(torch.isfinite(p).all()) for p in network.parameters())
        if not (math.isfinite(total) and weights_finite):  # every rank sees the same sum and weights: all stop together, before this epoch writes anything
            kept = f"{self.checkpoint_dir / 'last.pt'} keeps epoch {self.saved_epoch}" if self.saved_epoch else "no epoch was kept"
            what = f"the training loss became {total}" if not math.isfinite(total) else "the weights became NaN or Inf"
            raise MdnError(f"{what} in epoch {epoch}: the run diverged ({kept}).", where=str(self.run_dir),
                           hint="lower train.lr (or set train.grad_clip), check the inputs' scale (data.transform: zscore), then train anew.")
        metrics = {"epoch": epoch, "train_loss": total / seen}
        if stage is not None:
            metrics.update(stage=self.stage_names[stage[0]], stage_epoch=stage[1])
        if self.schedule.active:
            metrics["lr"] = lr
        if self.beta_optimizer is not None:
            metrics["train_penalty"] = total_penalty / seen
        if world.is_main:  # rank 0 evaluates and writes; the others take its monitored value
            metrics.update(validate(self.run))
        monitored = self._monitored(metrics)
        self.schedule.step(monitored)
        stop = self.stopping is not None and self.stopping.update(epoch, monitored, t.select)
        if world.is_main:
            self.elapsed += time.perf_counter() - started
            metrics["seconds"] = round(self.elapsed, 3)
            self.history.append(metrics)
            self.unsaved.append(metrics)
            improved = self._is_better(metrics)
            stage_end = stage is not None and stage[1] == t.epochs
            if stage is not None:
                self.stage_position = stage
                improved = stage_end  # the model after each stage, which the matrix row scores
                if improved:
                    self.stage_results.append({"stage": self.stage_names[stage[0]], "epoch": epoch, "scores": score_stages(self.run, self.full_data)})
            if improved:
                self.best = {"epoch": epoch, t.select: metrics[t.select]}
            writing = time.perf_counter()
            self._checkpoint(epoch, improved, due=epoch % t.checkpoint_every == 0 or epoch == epochs or stop or stage_end, trackers=trackers)
            self.elapsed += time.perf_counter() - writing  # counted in the next epoch's seconds
            self.progress("epoch_end", metrics=metrics)
            if stop:
                self.progress("message", text=f"early stopping after epoch {epoch}: {self.stopping.reason}; best.pt is epoch {self.best['epoch']}.")
        distributed.barrier()

    def _monitored(self, metrics: dict) -> float | None:
        """The epoch's ``train.select`` value, which rank 0 measured, on every rank (None when undefined)."""
        value = metrics.get(self.run.spec.train.select) if self.world.is_main else None
        total, defined = distributed.all_sum([0.0 if value is None else value, float(value is not None)], self.run.device)
        return total if defined else None

    @property
    def stopped(self) -> dict | None:
        """``{epoch, reason}`` once early stopping has ended the run, else None."""
        if self.stopping is None or self.stopping.stopped_epoch is None:
            return None
        return {"epoch": self.stopping.stopped_epoch, "reason": self.stopping.reason}

    def _is_better(self, metrics: dict) -> bool:
        key = self.run.spec.train.select
        if key not in metrics:
            raise MdnError(f"train.select is {key!r}, which this task does not report.", where="train.select", hint="use val_loss for regression.")
        if self.best is None:
            return True
        if metrics[key] is None or self.best[key] is None:  # undefined (val AUC with one class): a defined value wins
            return self.best[key] is None and metrics[key] is not None
        return metrics[key] < self.best[key] if key.endswith("loss") else metrics[key] > self.best[key]

    def _stage_report(self) -> dict:
        return stage_report(self.stage_names, self.stage_results, self.run.spec.train.task, self.run.spec.train.epochs)

    def summary(self) -> dict:
        spec, data = self.run.spec, self.full_data
        best_epoch = self.best["epoch"] if self.best else None
        return {
            "run_dir": str(self.run_dir),
            "spec_hash": spec_hash(spec),
            "task": spec.train.task,
            "epochs": len(self.history),
            "seconds": round(self.elapsed, 3),
            "n": {name: int(len(rows)) for name, rows in data.splits.items()},
            "design_columns": data.design.column_names,
            "mdn_layers": len(metadata_norm_layers(self.run.network)),
            "monitor": spec.train.monitor,
            "select": spec.train.select,
            "best": next((m for m in self.history if m["epoch"] == best_epoch), None),
            "last": self.history[-1] if self.history else None,
            **({"init": self.run.init_report} if self.run.init_report is not None else {}),
            **({"early_stopping": self.stopping.state_dict()} if self.stopping is not None else {}),
            **({"stages": self._stage_report()} if self.stage_names else {}),
        }


def train(spec: Spec, run_dir: str | Path, *, resume: bool = False, progress: Progress | None = None, parent_run: str | None = None) -> dict:
    """Train ``spec`` into ``run_dir`` (or continue it with ``resume``); return the summary.

    The directory is locked while training: a second process on it stops with an MdnError.

    ``parent_run``: the MLflow run id this run is logged under (a cross-validation's).
    """
    run_dir = Path(run_dir)
    with directory_lock(run_dir, "training") if distributed.rank() == 0 else contextlib.nullcontext():  # under DDP rank 0 writes, and holds the lock
        check_run_dir(run_dir, resume)
        with distributed.session(spec.train.device):
            run = build_run(spec)
            trainer = Trainer(run, run_dir, progress, parent_run)
            if resume:
                trainer.resume()
            return trainer.fit()
