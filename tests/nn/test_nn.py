"""MetadataNorm against closed-form OLS (numpy), and its module/state/hook behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mdn_cli.nn import (
    CollinearDesignError,
    LazyMetadataNorm,
    MetadataNorm,
    attach_metadata_norm,
    batch_beta,
    fit_gram,
    metadata,
    metadata_norm,
)

from tests.helpers import make_design, make_features, ols, t

TOL = 1e-10


def reference_batch_beta(x_train: np.ndarray, x_b: np.ndarray, y_b: np.ndarray) -> np.ndarray:
    """``(X'X)^-1 X_b' Y_b · N / n_b`` written out in numpy."""
    k = np.linalg.inv(x_train.T @ x_train)
    return k @ x_b.T @ y_b * (x_train.shape[0] / x_b.shape[0])


def make_layer(x_train: np.ndarray, num_features: int, num_preserved: int = 1, momentum=0.1) -> MetadataNorm:
    layer = MetadataNorm(num_features, x_train.shape[1], num_preserved=num_preserved, momentum=momentum).double()
    return layer.fit_gram(x_train)


# -- one batch = the whole training set --------------------------------------------------------
@pytest.mark.parametrize("num_preserved", [0, 1, 2])
def test_full_batch_equals_ols_residual_plus_preserved_part(rng, num_preserved):
    n, f = 120, 6
    x = make_design(rng, n, num_preserved=max(num_preserved, 1), num_meta=3)
    if num_preserved == 0:
        x = x[:, 1:]
    y = make_features(rng, x, f)
    q = num_preserved
    layer = make_layer(x, f, num_preserved=q).train()

    out = layer(t(y), design=t(x)).numpy()

    beta = ols(x, y)
    np.testing.assert_allclose(out, y - x[:, q:] @ beta[q:], atol=TOL, rtol=0)
    # equivalently: the OLS residual plus the preserved columns' fitted part
    np.testing.assert_allclose(out, (y - x @ beta) + x[:, :q] @ beta[:q], atol=TOL, rtol=0)

    again = ols(x, out)
    np.testing.assert_allclose(again[q:], 0.0, atol=TOL)  # metadata and intercept: gone
    np.testing.assert_allclose(again[:q], beta[:q], atol=TOL, rtol=0)  # preserved: unchanged
    # and the features really did depend on the metadata before
    assert np.abs(beta[q:-1]).max() > 0.5


def test_full_batch_removes_correlation_with_metadata(rng):
    n = 200
    x = make_design(rng, n, num_meta=2)
    y = make_features(rng, x, 4)
    out = make_layer(x, 4)(t(y), design=t(x)).numpy()
    # the residual is orthogonal to every metadata column and has the preserved-only mean structure
    preserved_part = x[:, :1] @ ols(x, y)[:1]
    np.testing.assert_allclose(x[:, 1:].T @ (out - preserved_part), 0.0, atol=1e-8)
    assert np.abs(x[:, 1:].T @ (y - preserved_part)).max() > 10.0  # it was not so before


def test_full_batch_with_categorical_metadata_from_design_matrix(rng):
    import pandas as pd

    from mdn_cli.data.design import DesignMatrix

    n = 90
    table = pd.DataFrame({
        "label": rng.choice(["ad", "cn"], n),
        "site": rng.choice(["s1", "s2", "s3"], n),
        "age": rng.normal(60, 8, n),
    })
    design = DesignMatrix(["site", "age"], preserve=["label"])
    x = design.fit_transform(table)
    assert design.column_names == ["label=cn", "site=s2", "site=s3", "age", "intercept"]
    site_effect = table["site"].map({"s1": 0.0, "s2": 3.0, "s3": -2.0}).to_numpy()[:, None]
    y = site_effect * np.ones((1, 3)) + x @ rng.normal(size=(5, 3)) + rng.normal(size=(n, 3))
    q = design.num_preserved
    layer = MetadataNorm(3, design.num_columns, q).double().fit_gram(x, design.column_names)
    out = layer(t(y), design=t(x)).numpy()
    beta = ols(x, y)
    np.testing.assert_allclose(out, y - x[:, q:] @ beta[q:], atol=TOL, rtol=0)
    again = ols(x, out)
    np.testing.assert_allclose(again[q:], 0.0, atol=TOL)
    np.testing.assert_allclose(again[:q], beta[:q], atol=TOL, rtol=0)
    # per-site means of the output no longer differ beyond what the label explains
    resid = out - x[:, :q] @ beta[:q]
    means = [resid[table["site"] == s].mean() for s in ("s1", "s2", "s3")]
    np.testing.assert_allclose(means, 0.0, atol=1e-9)


def test_functional_form_matches_module(rng):
    x = make_design(rng, 50)
    y = make_features(rng, x, 3)
    k = t(np.linalg.inv(x.T @ x))
    beta = batch_beta(t(y[:10]), t(x[:10]), k, 50)
    np.testing.assert_allclose(beta.numpy(), reference_batch_beta(x, x[:10], y[:10]), atol=TOL, rtol=0)
    out = metadata_norm(t(y[:10]), t(x[:10]), beta, num_preserved=1)
    layer = make_layer(x, 3)
    np.testing.assert_allclose(layer(t(y[:10]), design=t(x[:10])).numpy(), out.numpy(), atol=TOL, rtol=0)


# -- partial batches ---------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size", [1, 7, 32])
def test_partial_batches_follow_the_formula(rng, batch_size):
    n, f, q = 45, 5, 1
    x = make_design(rng, n)
    y = make_features(rng, x, f)
    layer = make_layer(x, f, momentum=None).train()
    betas = []
    for start in range(0, n, batch_size):  # the last batch is partial unless batch_size divides n
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        out = layer(t(yb), design=t(xb)).numpy()
        beta_b = reference_batch_beta(x, xb, yb)
        betas.append(beta_b)
        assert out.shape == yb.shape
        np.testing.assert_allclose(out, yb - xb[:, q:] @ beta_b[q:], atol=1e-9, rtol=0)
    assert len(betas) == -(-n // batch_size)
    np.testing.assert_allclose(layer.running_beta.numpy(), np.mean(betas, axis=0), atol=1e-9, rtol=0)


def test_batch_betas_average_to_full_data_ols(rng):
    # with equal-size batches partitioning the set, the mean of the rescaled batch betas is the OLS beta
    n = 60
    x = make_design(rng, n)
    y = make_features(rng, x, 3)
    layer = make_layer(x, 3, momentum=None)
    for start in range(0, n, 15):
        layer(t(y[start : start + 15]), design=t(x[start : start + 15]))
    np.testing.assert_allclose(layer.running_beta.numpy(), ols(x, y), atol=1e-9, rtol=0)


# -- feature shapes ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(6,), (3, 4, 5), (7, 4)])
def test_any_feature_shape_is_the_flattened_computation(rng, shape):
    n, nb = 40, 9
    x = make_design(rng, n)
    f = int(np.prod(shape))
    y = make_features(rng, x, f)
    layer = make_layer(x, f).train()
    flat = make_layer(x, f).train()
    yb = t(y[:nb].reshape(nb, *shape))
    out = layer(yb, design=t(x[:nb]))
    assert out.shape == yb.shape
    expected = flat(t(y[:nb]), design=t(x[:nb]))
    np.testing.assert_allclose(out.reshape(nb, -1).numpy(), expected.numpy(), atol=TOL, rtol=0)
    beta_b = reference_batch_beta(x, x[:nb], y[:nb])
    np.testing.assert_allclose(out.reshape(nb, -1).numpy(), y[:nb] - x[:nb, 1:] @ beta_b[1:], atol=1e-9, rtol=0)
    # eval on the same shape too
    layer.eval()
    assert layer(yb, design=t(x[:nb])).shape == yb.shape


def test_non_contiguous_input(rng):
    x = make_design(rng, 30)
    y = make_features(rng, x, 12)
    layer = make_layer(x, 12)
    yb = t(y[:8].reshape(8, 4, 3)).transpose(1, 2)  # (8, 3, 4), not contiguous
    out = layer(yb, design=t(x[:8]))
    ref = make_layer(x, 12)(yb.reshape(8, -1), design=t(x[:8]))
    assert out.shape == yb.shape
    np.testing.assert_allclose(out.reshape(8, -1).numpy(), ref.numpy(), atol=TOL, rtol=0)


def test_feature_count_mismatch_is_an_error(rng):
    x = make_design(rng, 20)
    layer = make_layer(x, 1).eval()  # one feature: would silently broadcast over 5
    with pytest.raises(ValueError, match="1 features but the input has 5"):
        layer(torch.zeros(4, 5, dtype=torch.float64), design=t(x[:4]))


# -- running beta ------------------------------------------------------------------------------
def test_momentum_update_rule(rng):
    x = make_design(rng, 48)
    y = make_features(rng, x, 4)
    layer = make_layer(x, 4, momentum=0.1)
    running = np.zeros((x.shape[1], 4))
    for k, start in enumerate(range(0, 48, 16), start=1):
        layer(t(y[start : start + 16]), design=t(x[start : start + 16]))
        running = 0.9 * running + 0.1 * reference_batch_beta(x, x[start : start + 16], y[start : start + 16])
        np.testing.assert_allclose(layer.running_beta.numpy(), running, atol=TOL, rtol=0)
        assert int(layer.num_batches_tracked) == k


def test_momentum_none_is_the_cumulative_average(rng):
    x = make_design(rng, 50)
    y = make_features(rng, x, 3)
    layer = make_layer(x, 3, momentum=None)
    betas = []
    sizes = [10, 3, 17, 1, 19]
    start = 0
    for k, size in enumerate(sizes, start=1):
        xb, yb = x[start : start + size], y[start : start + size]
        layer(t(yb), design=t(xb))
        betas.append(reference_batch_beta(x, xb, yb))
        np.testing.assert_allclose(layer.running_beta.numpy(), np.mean(betas, axis=0), atol=1e-9, rtol=0)
        start += size


def test_invalid_momentum_rejected():
    with pytest.raises(ValueError, match="momentum"):
        MetadataNorm(3, 3, momentum=0.0)
    with pytest.raises(ValueError, match="momentum"):
        MetadataNorm(3, 3, momentum=1.5)
    with pytest.raises(ValueError, match="num_preserved"):
        MetadataNorm(3, 3, num_preserved=3)


def test_reset_running_stats(rng):
    x = make_design(rng, 20)
    y = make_features(rng, x, 2)
    layer = make_layer(x, 2)
    layer(t(y), design=t(x))
    assert layer.running_beta.abs().sum() > 0 and int(layer.num_batches_tracked) == 1
    layer.reset_running_stats()
    assert torch.count_nonzero(layer.running_beta) == 0
    assert int(layer.num_batches_tracked) == 0
    # the Gram inverse is not a running statistic: it survives
    np.testing.assert_allclose(layer.gram_inverse.numpy(), np.linalg.inv(x.T @ x), atol=TOL)


def test_eval_uses_running_beta_and_ignores_batch_composition(rng):
    x = make_design(rng, 40)
    y = make_features(rng, x, 5)
    layer = make_layer(x, 5)
    for start in range(0, 40, 8):
        layer(t(y[start : start + 8]), design=t(x[start : start + 8]))
    running = layer.running_beta.clone()
    layer.eval()
    full = layer(t(y), design=t(x)).numpy()
    np.testing.assert_allclose(full, y - x[:, 1:] @ running.numpy()[1:], atol=TOL, rtol=0)
    np.testing.assert_array_equal(layer(t(y), design=t(x)).numpy(), full)  # deterministic
    perm = rng.permutation(40)
    shuffled = layer(t(y[perm]), design=t(x[perm])).numpy()
    np.testing.assert_allclose(shuffled, full[perm], atol=TOL, rtol=0)
    singles = np.concatenate([layer(t(y[i : i + 1]), design=t(x[i : i + 1])).numpy() for i in range(40)])
    np.testing.assert_allclose(singles, full, atol=TOL, rtol=0)
    assert torch.equal(layer.running_beta, running)  # eval does not update
    assert int(layer.num_batches_tracked) == 5


def test_gradient_flows_through_beta(rng):
    n, nb, f, q = 30, 10, 4, 1
    x = make_design(rng, n)
    y = make_features(rng, x, f)
    layer = make_layer(x, f).train()
    yb = t(y[:nb]).requires_grad_(True)
    weights = rng.normal(size=(nb, f))
    (layer(yb, design=t(x[:nb])) * t(weights)).sum().backward()
    # out = (I - c X_m K_m X_b') Y_b  =>  dL/dY_b = A' W
    xb = x[:nb]
    k = np.linalg.inv(x.T @ x)
    a = np.eye(nb) - (n / nb) * xb[:, q:] @ k[q:, :] @ xb.T
    np.testing.assert_allclose(yb.grad.numpy(), a.T @ weights, atol=1e-9, rtol=0)
    assert np.abs(yb.grad.numpy() - weights).max() > 1e-3  # not the detached-beta gradient

    # finite difference on one entry, as an independent check of the autograd graph
    def loss(values: np.ndarray) -> float:
        with torch.no_grad():
            probe = make_layer(x, f)
            return float((probe(t(values), design=t(xb)) * t(weights)).sum())

    eps = 1e-6
    plus, minus = y[:nb].copy(), y[:nb].copy()
    plus[2, 1] += eps
    minus[2, 1] -= eps
    assert (loss(plus) - loss(minus)) / (2 * eps) == pytest.approx(float(yb.grad[2, 1]), abs=1e-6)


def test_eval_has_no_gradient_through_beta(rng):
    x = make_design(rng, 20)
    y = make_features(rng, x, 3)
    layer = make_layer(x, 3).eval()
    yb = t(y[:5]).requires_grad_(True)
    layer(yb, design=t(x[:5])).sum().backward()
    np.testing.assert_array_equal(yb.grad.numpy(), np.ones((5, 3)))


def test_training_without_fit_gram_is_an_error():
    layer = MetadataNorm(2, 3)
    with pytest.raises(RuntimeError, match="fit_gram"):
        layer(torch.zeros(4, 2), design=torch.ones(4, 3))


def test_collinear_training_design_names_columns(rng):
    x = make_design(rng, 30)
    x = np.concatenate([x[:, :2], x[:, 1:2] * 2 + 1, x[:, 2:]], axis=1)  # m0 duplicated (affine)
    layer = MetadataNorm(2, x.shape[1])
    with pytest.raises(CollinearDesignError, match="collinear") as info:
        layer.fit_gram(x, ["label", "a", "a2", "b", "intercept"])
    assert "a, a2" in str(info.value)
    assert "label" not in str(info.value).split("columns")[1].split("are collinear")[0]


def test_extra_repr():
    text = repr(MetadataNorm(8, 4, num_preserved=1, momentum=None))
    assert "num_features=8" in text and "num_design=4" in text
    assert "num_preserved=1" in text and "momentum=None" in text


# -- state_dict --------------------------------------------------------------------------------
def small_model(lazy: bool, num_design: int) -> nn.Sequential:
    if lazy:
        return nn.Sequential(nn.LazyLinear(8), LazyMetadataNorm(num_design, num_preserved=1), nn.ReLU(), nn.LazyLinear(1))
    return nn.Sequential(nn.Linear(5, 8), MetadataNorm(8, num_design, num_preserved=1), nn.ReLU(), nn.Linear(8, 1))


def train_a_little(model: nn.Module, inputs: torch.Tensor, x: torch.Tensor, batch_size: int) -> None:
    fit_gram(model, x)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    model.train()
    for epoch in range(2):
        for start in range(0, len(inputs), batch_size):
            sl = slice(start, start + batch_size)
            with metadata(model, x[sl]):
                loss = model(inputs[sl]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()


@pytest.mark.parametrize("lazy", [False, True])
def test_state_dict_round_trip_with_other_batch_sizes(rng, torch_seed, lazy):
    n = 70  # batch 32: the last batch has 6 rows
    x = torch.from_numpy(make_design(rng, n)).float()
    inputs = torch.from_numpy(rng.normal(size=(n, 5))).float()
    model = small_model(lazy, x.shape[1])
    if lazy:
        with metadata(model, x[:2]), torch.no_grad():
            model.eval()(inputs[:2])  # materialise
    train_a_little(model, inputs, x, 32)
    state = model.state_dict()
    assert int(state["1.num_batches_tracked"]) == 6
    assert int(state["1.n_train"]) == n

    # nothing in the checkpoint is tied to a batch size or holds metadata rows
    for key, value in state.items():
        assert "design" not in key and "metadata" not in key
        assert n not in value.shape and 32 not in value.shape and 6 not in value.shape, key
    assert set(state) == {"0.weight", "0.bias", "1.running_beta", "1.num_batches_tracked", "1.gram_inverse", "1.n_train", "3.weight", "3.bias"}

    model.eval()
    with metadata(model, x), torch.no_grad():
        expected = model(inputs)

    fresh = small_model(lazy, x.shape[1])
    fresh.load_state_dict(state)
    fresh.eval()
    assert fresh[1].num_features == 8
    for batch_size in (7, 1):
        outs = []
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            with metadata(fresh, x[sl]), torch.no_grad():
                outs.append(fresh(inputs[sl]))
        torch.testing.assert_close(torch.cat(outs), expected, atol=1e-6, rtol=1e-6)
    assert "num_features=8" in repr(fresh[1])


def test_lazy_layer_infers_feature_count(rng):
    x = make_design(rng, 20)
    layer = LazyMetadataNorm(x.shape[1], num_preserved=1).double()
    layer.fit_gram(x)
    out = layer(t(np.ones((4, 3, 2))), design=t(x[:4]))
    assert out.shape == (4, 3, 2)
    assert type(layer) is MetadataNorm and layer.num_features == 6
    assert layer.running_beta.shape == (x.shape[1], 6)


# -- metadata context manager ------------------------------------------------------------------
def test_metadata_context_sets_and_restores(rng):
    x = t(make_design(rng, 10))
    model = nn.Sequential(nn.Linear(3, 3).double(), make_layer(x.numpy(), 3), make_layer(x.numpy(), 3))
    layers = [model[1], model[2]]
    with metadata(model, x[:4]):
        assert all(layer._design is x[:4] or torch.equal(layer._design, x[:4]) for layer in layers)
        with metadata(model, x[:2]):
            assert all(layer._design.shape[0] == 2 for layer in layers)
        assert all(layer._design.shape[0] == 4 for layer in layers)
    assert all(layer._design is None for layer in layers)
    with pytest.raises(ZeroDivisionError):
        with metadata(model, x[:4]):
            1 / 0
    assert all(layer._design is None for layer in layers)
    assert not any("design" in key for key in model.state_dict())


def test_forward_without_metadata_is_a_clear_error(rng):
    x = make_design(rng, 10)
    model = nn.Sequential(make_layer(x, 3))
    with pytest.raises(RuntimeError, match=r"needs the batch's metadata.*metadata\(model, design\)"):
        model(torch.zeros(4, 3, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="needs the batch's metadata"):
        model.eval()(torch.zeros(4, 3, dtype=torch.float64))


def test_wrong_design_shape_is_a_clear_error(rng):
    x = make_design(rng, 10)
    model = nn.Sequential(make_layer(x, 3))
    with metadata(model, t(x[:, :3])), pytest.raises(ValueError, match=r"shape \(10, 3\).*4 design columns"):
        model(torch.zeros(10, 3, dtype=torch.float64))
    with metadata(model, t(x[:5])), pytest.raises(ValueError, match="batch of 10 rows"):
        model(torch.zeros(10, 3, dtype=torch.float64))


# -- attach by name ----------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.act = nn.Tanh()

    def forward(self, h):
        return self.act(self.fc(h))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 6), nn.ReLU())
        self.block = Block()
        self.head = nn.Linear(5, 1)

    def forward(self, inputs):
        return self.head(self.block(self.encoder(inputs)))


def test_attach_matches_inserting_by_hand(rng, torch_seed):
    n = 24
    x_np = make_design(rng, n)
    x = torch.from_numpy(x_np).float()
    inputs = torch.from_numpy(rng.normal(size=(n, 4))).float()
    net = Net()
    attached = attach_metadata_norm(net, ["encoder", "block.fc"], lambda name: MetadataNorm({"encoder": 6, "block.fc": 5}[name], x.shape[1], 1))
    assert set(attached.keys()) == {"encoder", "block__fc"}
    wrapper = nn.ModuleDict({"net": net, "mdn": attached})
    fit_gram(wrapper, x_np)

    mdn_a, mdn_b = MetadataNorm(6, x.shape[1], 1).fit_gram(x_np), MetadataNorm(5, x.shape[1], 1).fit_gram(x_np)
    plain = Net()  # same weights, no hooks: the layers are inserted by hand
    plain.load_state_dict(net.state_dict())

    def by_hand(rows: slice) -> torch.Tensor:
        h = mdn_a(plain.encoder[1](plain.encoder[0](inputs[rows])), design=x[rows])
        h = plain.block.act(mdn_b(plain.block.fc(h), design=x[rows]))
        return plain.head(h)

    for mode in ("train", "eval"):
        wrapper.train(mode == "train")
        mdn_a.train(mode == "train")
        mdn_b.train(mode == "train")
        for start in range(0, n, 10):
            rows = slice(start, start + 10)
            with metadata(wrapper, x[rows]):
                got = net(inputs[rows])
            torch.testing.assert_close(got, by_hand(rows), atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(attached["encoder"].running_beta, mdn_a.running_beta)
        torch.testing.assert_close(attached["block__fc"].running_beta, mdn_b.running_beta)
    assert int(attached["encoder"].num_batches_tracked) == 3
    # the MDN really changes the output (the check above is not vacuous)
    with metadata(wrapper, x):
        with_mdn = net(inputs)
    assert (plain(inputs) - with_mdn).abs().max() > 1e-3


def test_attach_unknown_name_raises_and_leaves_model_untouched(torch_seed):
    net = Net()
    inputs = torch.randn(3, 4)
    before = net(inputs)
    made = []
    with pytest.raises(KeyError, match="block.fcc"):
        attach_metadata_norm(net, ["encoder", "block.fcc"], lambda name: made.append(name) or MetadataNorm(6, 3))
    assert made == []
    assert all(not m._forward_hooks for m in net.modules())
    torch.testing.assert_close(net(inputs), before)  # no MDN hook left behind: no metadata needed


def test_attach_rejects_non_tensor_output():
    class Pair(nn.Module):
        def forward(self, h):
            return h, h

    model = nn.Sequential()
    model.add_module("pair", Pair())
    attached = attach_metadata_norm(model, ["pair"], lambda name: MetadataNorm(3, 3))
    with metadata(attached, torch.ones(2, 3)), pytest.raises(TypeError, match="'pair'.*tuple"):
        model(torch.zeros(2, 3))
