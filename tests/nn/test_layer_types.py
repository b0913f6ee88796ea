"""The lazy LayerNorm of the spec's layer types against torch's own layer_norm."""

from __future__ import annotations

import torch
from torch import nn

from mdn_cli.nn.layer_types import LAYER_TYPES, LazyLayerNorm


def test_lazy_layernorm_normalises_over_every_sample_dimension():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 6) * 3 + 2
    layer = LAYER_TYPES["layernorm"]()
    out = layer(x)
    assert type(layer) is nn.LayerNorm and layer.normalized_shape == (3, 5, 6) and layer.weight.shape == (3, 5, 6)
    torch.testing.assert_close(out, nn.functional.layer_norm(x, (3, 5, 6)), rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        layer.weight.fill_(2.0)
        layer.bias.fill_(-1.0)
    torch.testing.assert_close(layer(x), 2.0 * nn.functional.layer_norm(x, (3, 5, 6)) - 1.0, rtol=1e-6, atol=1e-6)


def test_lazy_layernorm_loads_its_state_into_a_fresh_twin():
    trained = nn.Sequential(LazyLayerNorm())
    trained(torch.randn(2, 7))
    with torch.no_grad():
        trained[0].weight.uniform_()
    fresh = nn.Sequential(LazyLayerNorm())
    fresh.load_state_dict(trained.state_dict())
    x = torch.randn(3, 7)
    torch.testing.assert_close(fresh(x), trained(x))
    assert type(fresh[0]) is nn.LayerNorm and fresh[0].normalized_shape == (7,)
