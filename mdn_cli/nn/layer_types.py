"""The layer types a sequential model spec may name (``model.layers[i].type``).

The spec's keyword arguments go straight to these callables, so the spec checker validates them
against their signatures.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from mdn_cli.nn.modules import LazyMetadataNorm


class LazyLayerNorm(LazyModuleMixin, nn.LayerNorm):
    """``nn.LayerNorm`` over all of a sample's dimensions, their shape taken from the first input.

    What the PMDN reference puts before each PMDN layer (``LayerNorm([C, H, W])``), without
    writing the shape into the spec.
    """

    cls_to_become = nn.LayerNorm
    weight: UninitializedParameter
    bias: UninitializedParameter

    def __init__(self, eps: float = 1e-5):
        super().__init__(0, eps, elementwise_affine=False)
        self.elementwise_affine = True  # per-element weight and bias, as nn.LayerNorm's default
        self.weight = UninitializedParameter()
        self.bias = UninitializedParameter()

    def reset_parameters(self) -> None:
        if not self.has_uninitialized_params():
            super().reset_parameters()

    def initialize_parameters(self, input: torch.Tensor) -> None:
        if self.has_uninitialized_params():
            with torch.no_grad():
                self.weight.materialize(tuple(input.shape[1:]), dtype=input.dtype)
                self.bias.materialize(tuple(input.shape[1:]), dtype=input.dtype)
                self.reset_parameters()
        self.normalized_shape = tuple(self.weight.shape)  # also when the weights came from a state dict


LAYER_TYPES: dict[str, Callable[..., nn.Module]] = {
    "linear": nn.LazyLinear,
    "conv1d": nn.LazyConv1d,
    "conv2d": nn.LazyConv2d,
    "conv3d": nn.LazyConv3d,
    "batchnorm1d": nn.LazyBatchNorm1d,
    "batchnorm2d": nn.LazyBatchNorm2d,
    "batchnorm3d": nn.LazyBatchNorm3d,
    "layernorm": LazyLayerNorm,
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
    "maxpool3d": nn.MaxPool3d,
    "avgpool2d": nn.AvgPool2d,
    "adaptive_avgpool2d": nn.AdaptiveAvgPool2d,
    "avgpool3d": nn.AvgPool3d,
    "adaptive_avgpool3d": nn.AdaptiveAvgPool3d,
    "dropout3d": nn.Dropout3d,
    "mdn": LazyMetadataNorm,
}
