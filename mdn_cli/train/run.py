"""A run built from a spec: its data checked and split, the network with MDN, pretrained weights and
frozen modules applied, the Gram inverse fitted on the training rows; what the loop trains and
what `layers` and `refit` rebuild."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mdn_cli.config import Spec
from mdn_cli.data.training import TrainingData, load_training_data
from mdn_cli.model.finetune import prepare_network
from mdn_cli.model.network import Network, build_network
from mdn_cli.nn import CollinearDesignError, fit_gram
from mdn_cli.train.options import check_precision
from mdn_cli.train.tracking import check_loggers
from mdn_cli.utils import distributed
from mdn_cli.utils.distributed import resolve_device
from mdn_cli.utils.errors import MdnError


@dataclass
class Run:
    """A built, ready-to-train model with its data (also what `extract` and `layers` rebuild)."""

    spec: Spec
    data: TrainingData
    network: Network
    device: torch.device
    init_report: dict | None = None  # what `model.init` loaded and left (None without it)


def build_run(spec: Spec, *, fine_tune: bool = True) -> Run:
    """Load and check the data, build the model with MDN, fit the Gram inverse on the train rows.

    ``fine_tune=False`` skips ``model.init`` and ``train.freeze``, for `mdn layers`, which lists the
    names those two need.
    """
    device = distributed.device_for(resolve_device(spec.train.device))
    data = load_training_data(spec, spec.train.seed, pin_memory=device.type == "cuda")
    torch.manual_seed(spec.train.seed)
    network = build_network(spec, data.design.num_columns, data.design.num_preserved, data.sample_shape, data.num_outputs)
    init_report = prepare_network(spec, network) if fine_tune else None  # pretrained weights and frozen modules, before the Gram fit
    fit_training_gram(spec, network, data)
    check_precision(spec, device)
    check_loggers(spec.train.loggers)
    return Run(spec, data, network.to(device), device, init_report)


def fit_training_gram(spec: Spec, network: torch.nn.Module, data: TrainingData, what: str = "") -> None:
    """Fit the MDN layers' Gram inverse on ``data``'s training rows (``what`` names a stage in errors)."""
    try:
        fit_gram(network, data.design_rows[data.splits["train"]].double(), data.design.column_names, spec.mdn.ridge)
    except CollinearDesignError as exc:
        raise MdnError(f"{what}{exc}", where=str(spec.data.table),
                       hint="drop one of those columns from data.metadata or mdn.preserve, merge rare categories, or set mdn.ridge (e.g. 1e-3).") from None
