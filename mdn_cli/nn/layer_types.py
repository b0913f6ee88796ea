"""The layer types a sequential model spec may name (``model.layers[i].type``).

The spec's keyword arguments go straight to these callables, so the spec checker validates them
against their signatures.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from mdn_cli.nn.modules import LazyMetadataNorm

LAYER_TYPES: dict[str, Callable[..., nn.Module]] = {
    "linear": nn.LazyLinear,
    "conv1d": nn.LazyConv1d,
    "conv2d": nn.LazyConv2d,
    "conv3d": nn.LazyConv3d,
    "batchnorm1d": nn.LazyBatchNorm1d,
    "batchnorm2d": nn.LazyBatchNorm2d,
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "flatten": nn.Flatten,
    "dropout": nn.Dropout,
    "dropout2d": nn.Dropout2d,
    "maxpool1d": nn.MaxPool1d,
    "maxpool2d": nn.MaxPool2d,
    "avgpool2d": nn.AvgPool2d,
    "adaptive_avgpool2d": nn.AdaptiveAvgPool2d,
    "mdn": LazyMetadataNorm,
}
