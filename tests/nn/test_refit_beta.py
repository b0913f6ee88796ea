"""refit_beta: each MDN layer's eval beta becomes the whole-set least-squares fit of its inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mdn_cli.nn import MetadataNorm, PenaltyMetadataNorm, RecursiveMetadataNorm, fit_gram, metadata, refit_beta
from tests.helpers import make_design, ols, t

VARIANTS = {
    "batch": lambda d, k: MetadataNorm(d, k, num_preserved=1),
    "recursive": lambda d, k: RecursiveMetadataNorm(d, k, num_preserved=1),
    "penalty": lambda d, k: PenaltyMetadataNorm(d, k, num_preserved=1),
}


def chunks(inputs: torch.Tensor, design: torch.Tensor, size: int):
    return lambda: ((inputs[i : i + size], design[i : i + size]) for i in range(0, len(design), size))


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_layer_gets_the_closed_form_ols_beta(rng, variant):
    x = make_design(rng, 150)
    features = rng.normal(size=(150, 3, 4)) + (x @ rng.normal(size=(x.shape[1], 12))).reshape(150, 3, 4)
    layer = VARIANTS[variant](12, x.shape[1]).double()
    rows = refit_beta(layer, chunks(t(features), t(x), 32))  # uneven batches: 32 x 4 + 22
    assert rows == 150
    np.testing.assert_allclose(layer.inference_beta().detach().numpy(), ols(x, features.reshape(150, -1)), rtol=1e-9, atol=1e-9)
    assert layer.training  # the mode it was in


@pytest.mark.parametrize("variant", VARIANTS)
def test_stacked_layers_each_leave_no_metadata_in_their_output(rng, variant, torch_seed):
    """Fitted in the order they run: regressing each layer's output on the design gives zero metadata/intercept coefficients."""
    x = make_design(rng, 200, num_meta=1)
    inputs = torch.randn(200, 6, dtype=torch.float64) + t(x[:, 1:2]) * 2.0
    model = nn.Sequential(nn.Linear(6, 8), VARIANTS[variant](8, 3), nn.Tanh(), nn.Linear(8, 5), VARIANTS[variant](5, 3)).double()
    fit_gram(model, t(x))
    refit_beta(model, chunks(inputs, t(x), 64))
    outputs = {}
    for name in ("1", "4"):
        dict(model.named_modules())[name].register_forward_hook(lambda _m, _i, out, name=name: outputs.__setitem__(name, out.detach().numpy()))
    model.eval()
    with torch.no_grad(), metadata(model, t(x)):
        model(inputs)
    for name, out in outputs.items():
        coefficients = ols(x, out)
        np.testing.assert_allclose(coefficients[1:], 0.0, atol=1e-8, err_msg=f"layer {name}")
        assert np.abs(coefficients[0]).max() > 1e-3  # the preserved column's part stays


def test_design_passed_to_the_layer_directly_is_used(rng):
    x = make_design(rng, 80)
    y = rng.normal(size=(80, 5)) + x @ rng.normal(size=(x.shape[1], 5))
    layer = MetadataNorm(5, x.shape[1], num_preserved=1).double()

    class Explicit(nn.Module):  # passes design= itself instead of using the metadata context
        def __init__(self):
            super().__init__()
            self.mdn = layer

        def forward(self, pair):
            features, design = pair
            return self.mdn(features, design=design)

    model = Explicit()
    refit_beta(model, lambda: (((t(y[i : i + 20]), t(x[i : i + 20])), t(x[i : i + 20])) for i in range(0, 80, 20)))
    np.testing.assert_allclose(layer.running_beta.numpy(), ols(x, y), rtol=1e-9, atol=1e-9)


def test_no_mdn_layer_running_is_a_clear_error(rng):
    model = nn.Sequential(nn.Linear(3, 3), MetadataNorm(3, 2))
    with pytest.raises(ValueError, match="no MDN layer ran"):
        refit_beta(model, lambda: iter(()))


def test_load_beta_checks_the_shape():
    with pytest.raises(ValueError, match="does not fit"):
        MetadataNorm(4, 3).load_beta(torch.zeros(3, 5))
