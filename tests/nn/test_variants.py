"""R-MDN and PMDN against closed-form least squares (numpy), their state, and training from a spec."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mdn_cli.nn import (
    LazyPenaltyMetadataNorm,
    LazyRecursiveMetadataNorm,
    PenaltyMetadataNorm,
    RecursiveMetadataNorm,
    mdn_penalty,
    metadata,
    penalty_parameters,
    penalty_pass,
)
from mdn_cli.config import load_spec
from mdn_cli.train.loop import train
from tests.helpers import write_spec
from tests.helpers import make_design, make_features, ols, t


def batches(n: int, sizes):
    """Consecutive slices of 0..n with the given sizes, cycling through them."""
    start, i = 0, 0
    while start < n:
        yield slice(start, start + sizes[i % len(sizes)])
        start += sizes[i % len(sizes)]
        i += 1


# -- R-MDN -------------------------------------------------------------------------------------
def test_rmdn_without_forgetting_converges_to_whole_set_ols(rng):
    n, f = 400, 5
    x = make_design(rng, n)
    y = make_features(rng, x, f)
    layer = RecursiveMetadataNorm(f, x.shape[1], num_preserved=1, forgetting=1.0, regularizer=1e-9, process_noise=0.0).train()
    for sl in batches(n, [1, 7, 32, 3]):  # batch size 1 and uneven batches included
        layer(t(y[sl]).float(), design=t(x[sl]).float())
    np.testing.assert_allclose(layer.running_beta.numpy(), ols(x, y), atol=1e-4, rtol=0)
    assert int(layer.num_batches_tracked) == len(list(batches(n, [1, 7, 32, 3])))


def test_rmdn_with_forgetting_is_exponentially_weighted_ridge(rng):
    n, f, lam, delta = 150, 3, 0.9, 0.5
    x = make_design(rng, n)
    y = make_features(rng, x, f)
    layer = RecursiveMetadataNorm(f, x.shape[1], num_preserved=1, forgetting=lam, regularizer=delta, process_noise=0.0).double().train()
    slices = list(batches(n, [10, 1, 25]))
    for sl in slices:
        layer(t(y[sl]), design=t(x[sl]))
    # closed form: argmin Σ_s λ^(T-s) ||Y_s - X_s b||² + λ^T δ ||b||²
    big_t = len(slices)
    info = lam**big_t * delta * np.eye(x.shape[1])
    rhs = np.zeros((x.shape[1], f))
    for s, sl in enumerate(slices, start=1):
        info += lam ** (big_t - s) * x[sl].T @ x[sl]
        rhs += lam ** (big_t - s) * x[sl].T @ y[sl]
    np.testing.assert_allclose(layer.running_beta.numpy(), np.linalg.solve(info, rhs), atol=1e-9, rtol=0)
    np.testing.assert_allclose(layer.covariance.numpy(), np.linalg.inv(info), atol=1e-9, rtol=0)


def test_rmdn_three_batches_equal_the_reference_recursion(rng):
    """P and beta after three batches against the R-MDN reference's update, written out here.

    Per batch (ynshah3/Recursive-MDN, rmdn.py): P <- P/λ; K = P X'(I + X P X')^-1;
    P <- P - K X P + reg I; beta <- beta + K (Y - X beta); the output uses the new beta.
    """
    f, lam, delta, reg = 4, 0.999, 0.01, 1e-4
    x = make_design(rng, 3 * 16)
    y = make_features(rng, x, f)
    layer = RecursiveMetadataNorm(f, x.shape[1], num_preserved=1).double().train()  # the reference's defaults
    assert (layer.forgetting, layer.regularizer, layer.process_noise) == (lam, delta, reg)
    p, beta = np.eye(x.shape[1]) / delta, np.zeros((x.shape[1], f))
    for sl in (slice(0, 16), slice(16, 32), slice(32, 48)):
        xb, yb = x[sl], y[sl]
        out = layer(t(yb), design=t(xb)).detach().numpy()
        p = p / lam
        gain = p @ xb.T @ np.linalg.inv(np.eye(len(xb)) + xb @ p @ xb.T)
        p = p - gain @ xb @ p + reg * np.eye(x.shape[1])
        beta = beta + gain @ (yb - xb @ beta)
        np.testing.assert_allclose(out, yb - xb[:, 1:] @ beta[1:], rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(layer.covariance.numpy(), p, rtol=1e-9, atol=1e-10)  # the reference's form rounds differently (not symmetric)
    np.testing.assert_allclose(layer.running_beta.numpy(), beta, rtol=1e-9, atol=1e-9)


def test_rmdn_process_noise_keeps_p_from_collapsing(rng):
    """Without process noise P shrinks like 1/t (beta stops moving); with it P settles at a floor of at least q I."""
    x = make_design(rng, 4000)
    y = make_features(rng, x, 2)
    traces = {}
    for noise in (0.0, 1e-4):
        layer = RecursiveMetadataNorm(2, x.shape[1], num_preserved=1, forgetting=1.0, process_noise=noise).double().train()
        for i, sl in enumerate(batches(len(x), [20]), start=1):
            layer(t(y[sl]), design=t(x[sl]))
            if i in (100, 200):
                traces[noise, i] = float(torch.trace(layer.covariance))
        assert float(torch.linalg.eigvalsh(layer.covariance)[0]) >= noise
    assert traces[0.0, 200] / traces[0.0, 100] < 0.6  # halves when the data double
    assert traces[1e-4, 200] / traces[1e-4, 100] > 0.9  # steady state


def test_rmdn_output_removes_metadata_part_and_no_gradient_reaches_beta(rng):
    x = make_design(rng, 12)
    y = make_features(rng, x, 4)
    layer = RecursiveMetadataNorm(4, x.shape[1], num_preserved=1).double().train()
    inputs = t(y).clone().requires_grad_(True)
    out = layer(inputs, design=t(x))
    beta = layer.running_beta.numpy()
    np.testing.assert_allclose(out.detach().numpy(), y - x[:, 1:] @ beta[1:], atol=1e-10)
    out.sum().backward()
    assert torch.equal(inputs.grad, torch.ones_like(inputs))  # beta is a constant for autograd
    layer.eval()
    before = layer.running_beta.clone()
    out_eval = layer(t(y[:1]), design=t(x[:1]))  # eval, batch size 1: uses beta, leaves it alone
    assert torch.equal(layer.running_beta, before)
    np.testing.assert_allclose(out_eval.numpy(), y[:1] - x[:1, 1:] @ beta[1:], atol=1e-10)


def test_rmdn_state_survives_a_checkpoint_round_trip(rng, tmp_path):
    n, f = 90, 6
    x = t(make_design(rng, n)).float()
    y = t(make_features(rng, x.double().numpy(), f)).float()

    def model():
        return nn.Sequential(LazyRecursiveMetadataNorm(x.shape[1], num_preserved=1, forgetting=0.95, regularizer=1e-3))

    straight = model().train()
    for sl in [*batches(40, [8]), *(slice(s.start + 40, s.stop + 40) for s in batches(n - 40, [8]))]:
        with metadata(straight, x[sl]):
            straight(y[sl])

    first = model().train()
    for sl in batches(40, [8]):
        with metadata(first, x[sl]):
            first(y[sl])
    torch.save(first.state_dict(), tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt")
    assert set(state) == {"0.running_beta", "0.covariance", "0.num_batches_tracked"}
    assert state["0.covariance"].shape == (x.shape[1], x.shape[1]) and state["0.running_beta"].shape == (x.shape[1], f)
    resumed = model()
    resumed.load_state_dict(state)
    assert resumed[0].num_features == f
    resumed.train()
    for sl in batches(n - 40, [8]):
        sl = slice(sl.start + 40, sl.stop + 40)
        with metadata(resumed, x[sl]):
            resumed(y[sl])
    assert type(resumed[0]) is RecursiveMetadataNorm
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, atol=0, rtol=0)
    resumed[0].reset_running_stats()
    assert torch.count_nonzero(resumed[0].running_beta) == 0 and int(resumed[0].num_batches_tracked) == 0
    torch.testing.assert_close(resumed[0].covariance, torch.eye(x.shape[1], dtype=torch.float64) / 1e-3)


def test_rmdn_rejects_bad_settings():
    with pytest.raises(ValueError, match="forgetting"):
        RecursiveMetadataNorm(3, 3, forgetting=0.0)
    with pytest.raises(ValueError, match="regularizer"):
        RecursiveMetadataNorm(3, 3, regularizer=0.0)
    with pytest.raises(ValueError, match="process_noise"):
        RecursiveMetadataNorm(3, 3, process_noise=-1e-3)
    assert "forgetting=0.99, regularizer=0.1, process_noise=0.001" in repr(RecursiveMetadataNorm(3, 3, forgetting=0.99, regularizer=0.1, process_noise=1e-3))


# -- PMDN --------------------------------------------------------------------------------------
def test_pmdn_learned_beta_approaches_ols_on_fixed_features(rng):
    n, f = 256, 4
    x = make_design(rng, n)
    y = make_features(rng, x, f)
    layer = PenaltyMetadataNorm(f, x.shape[1], num_preserved=1).double().train()
    optimizer = torch.optim.Adam(penalty_parameters(layer), lr=0.05)
    for _epoch in range(150):
        for sl in batches(n, [64]):
            layer(t(y[sl]), design=t(x[sl]))
            optimizer.zero_grad()
            mdn_penalty(layer).backward()
            optimizer.step()
    reference = ols(x, y)
    np.testing.assert_allclose(layer.beta.detach().numpy(), reference, atol=0.02 * np.abs(reference).max(), rtol=0)


def test_pmdn_penalty_output_and_gradients(rng):
    x = make_design(rng, 10)
    y = make_features(rng, x, 3)
    layer = PenaltyMetadataNorm(3, x.shape[1], num_preserved=1).double().train()
    beta = rng.normal(size=(x.shape[1], 3))
    with torch.no_grad():
        layer.beta.copy_(t(beta))
    inputs = t(y).clone().requires_grad_(True)
    out = layer(inputs, design=t(x))
    np.testing.assert_allclose(out.detach().numpy(), y - x[:, 1:] @ beta[1:], atol=1e-12)
    np.testing.assert_allclose(float(mdn_penalty(layer).detach()), np.sum((y - x @ beta) ** 2), rtol=1e-12)
    out.sum().backward()  # the output's gradient reaches beta (the removed part) and the input
    assert torch.equal(inputs.grad, torch.ones_like(inputs))
    np.testing.assert_allclose(layer.beta.grad.numpy()[1:], -x[:, 1:].sum(0)[:, None].repeat(3, 1), atol=1e-12)
    assert np.all(layer.beta.grad.numpy()[0] == 0)


def pmdn_net(x: np.ndarray, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), PenaltyMetadataNorm(4, x.shape[1], num_preserved=1), nn.Tanh(), nn.Linear(4, 1)).double()


def test_pmdn_step_moves_beta_by_the_penalty_alone_and_the_network_by_the_task_loss_alone(rng):
    """One training step (train.fit_penalty_betas, then the task loss) against the reference's two passes written out."""
    from mdn_cli.train.loop import fit_penalty_betas

    x = make_design(rng, 32)
    inputs, target = t(rng.normal(size=(32, 5))), t(rng.normal(size=(32, 1)))
    net = pmdn_net(x)
    with torch.no_grad():
        net[1].beta.copy_(t(rng.normal(size=net[1].beta.shape) * 0.1))
    reference = pmdn_net(x)
    reference.load_state_dict(net.state_dict())
    network_params = [p for name, p in net.named_parameters() if name != "1.beta"]
    beta_optimizer, optimizer = torch.optim.Adam([net[1].beta], lr=0.045), torch.optim.SGD(network_params, lr=0.1)

    fit_penalty_betas(net, inputs, t(x), beta_optimizer)
    with metadata(net, t(x)):
        loss = ((net(inputs) - target) ** 2).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()

    # pass 1 written out: the penalty's gradient on beta only, one Adam step
    features = reference[0](inputs)
    beta = reference[1].beta.detach().clone().requires_grad_(True)
    penalty = ((features.detach() - t(x) @ beta) ** 2).sum()  # the features do not depend on beta (first MDN layer)
    (grad,) = torch.autograd.grad(penalty, beta)
    reference_beta = torch.optim.Adam([beta], lr=0.045)
    beta.grad = grad
    reference_beta.step()
    torch.testing.assert_close(net[1].beta.detach(), beta.detach(), rtol=1e-12, atol=1e-12)
    # pass 2 written out: the task loss with the updated (constant) beta, gradients on the network only
    with torch.no_grad():
        reference[1].beta.copy_(beta)
    reference[1].beta.requires_grad_(False)
    with metadata(reference, t(x)):
        reference_loss = ((reference(inputs) - target) ** 2).mean()
    reference_params = [p for name, p in reference.named_parameters() if name != "1.beta"]
    grads = torch.autograd.grad(reference_loss, reference_params)
    for param, before, grad in zip(network_params, reference_params, grads):
        torch.testing.assert_close(param.detach(), before.detach() - 0.1 * grad, rtol=1e-12, atol=1e-12)


class ReferencePMDNNet(nn.Module):
    """vento99/PMDN's three-block network (src/model.py), written out small: conv, LayerNorm, PMDN,
    ReLU twice, then fc, LayerNorm, PMDN, ReLU, fc, sigmoid. With ``use_labels`` (the first pass)
    each PMDN layer outputs ``f - X beta`` over the whole design, otherwise ``f - X[:, 1:] beta[1:]``
    (column 0 is the label); the loss term is the mean over the three layers of ``||f - X beta||²``.
    """

    def __init__(self):
        super().__init__()
        self.conv1, self.ln1 = nn.Conv2d(1, 4, 5), nn.LayerNorm([4, 8, 8])
        self.conv2, self.ln2 = nn.Conv2d(4, 6, 5), nn.LayerNorm([6, 4, 4])
        self.fc, self.ln_fc, self.fc_last = nn.Linear(96, 10), nn.LayerNorm([10]), nn.Linear(10, 1)
        self.betas = nn.ParameterList([nn.Parameter(torch.zeros(3, width)) for width in (4 * 8 * 8, 6 * 4 * 4, 10)])
        self.use_labels, self.cfs, self.loss_terms = False, None, None

    def pmdn(self, f: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        flat = f.reshape(len(f), -1)
        fitted = self.cfs @ beta if self.use_labels else self.cfs[:, 1:] @ beta[1:]
        residual = flat - fitted
        self.loss_terms = self.loss_terms + torch.linalg.norm(residual) ** 2
        return residual.reshape(f.shape)

    def forward(self, x):
        self.loss_terms = 0
        x = torch.relu(self.pmdn(self.ln1(self.conv1(x)), self.betas[0]))
        x = torch.relu(self.pmdn(self.ln2(self.conv2(x)), self.betas[1]))
        x = torch.relu(self.pmdn(self.ln_fc(self.fc(x.flatten(1))), self.betas[2]))
        self.loss_terms = self.loss_terms / 3
        return torch.sigmoid(self.fc_last(x))


def pmdn_three_layer_net() -> nn.Sequential:
    """The same network from mdn_cli's layers: PenaltyMetadataNorm with the label preserved."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 5), nn.LayerNorm([4, 8, 8]), PenaltyMetadataNorm(256, 3, num_preserved=1), nn.ReLU(),
        nn.Conv2d(4, 6, 5), nn.LayerNorm([6, 4, 4]), PenaltyMetadataNorm(96, 3, num_preserved=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(96, 10), nn.LayerNorm([10]), PenaltyMetadataNorm(10, 3, num_preserved=1), nn.ReLU(), nn.Linear(10, 1), nn.Sigmoid(),
    ).double()


def test_pmdn_three_layer_network_follows_the_reference_two_pass_update(rng):
    """Several batches of PMDN's two passes in a three-layer network against vento99/PMDN's
    training step written out (src/train.py): pass 1 backpropagates the mean layer penalty and steps
    only the betas' Adam (lr 0.045); pass 2 runs again on the task loss (BCE) and steps only the
    network's Adam. Raw design [label, cf, 1]. Penalty, betas after each step and outputs agree."""
    from mdn_cli.train.loop import fit_penalty_betas

    torch.manual_seed(0)
    reference = ReferencePMDNNet().double()
    ours = pmdn_three_layer_net()
    pairs = [(0, "conv1"), (1, "ln1"), (4, "conv2"), (5, "ln2"), (9, "fc"), (10, "ln_fc"), (13, "fc_last")]
    with torch.no_grad():
        for index, name in pairs:
            for param_name, param in ours[index].named_parameters():
                param.copy_(getattr(getattr(reference, name), param_name))
    pmdn_layers = [ours[2], ours[6], ours[11]]
    model_params = [p for p in ours.parameters() if all(p is not layer.beta for layer in pmdn_layers)]
    beta_optimizer, optimizer = torch.optim.Adam(penalty_parameters(ours), lr=0.045), torch.optim.Adam(model_params, lr=1e-3)
    reference_beta_optimizer = torch.optim.Adam(reference.betas.parameters(), lr=0.045)
    reference_optimizer = torch.optim.Adam([p for name, p in reference.named_parameters() if not name.startswith("betas")], lr=1e-3)

    for _step in range(4):
        label = rng.integers(0, 2, 16).astype(np.float64)
        cf = rng.uniform(3, 5, 16) + label
        design = t(np.stack([label, cf, np.ones(16)], 1))
        inputs = t(rng.normal(size=(16, 1, 12, 12)) + cf[:, None, None, None] / 4)
        target = t(label[:, None])

        # the reference's step
        reference.cfs = design
        reference.use_labels = True
        reference(inputs)
        reference_penalty = reference.loss_terms
        reference_penalty.backward()
        reference_beta_optimizer.step()
        reference.zero_grad()
        reference.use_labels = False
        reference_out = reference(inputs)
        torch.nn.functional.binary_cross_entropy(reference_out, target).backward()
        reference_optimizer.step()
        reference.zero_grad()

        # ours: fit_penalty_betas, then the task loss
        penalty = fit_penalty_betas(ours, inputs, design, beta_optimizer)
        np.testing.assert_allclose(penalty, float(reference_penalty.detach()), rtol=1e-10)
        for layer, beta in zip(pmdn_layers, reference.betas):
            torch.testing.assert_close(layer.beta.detach(), beta.detach(), rtol=1e-9, atol=1e-12)
        with metadata(ours, design):
            out = ours(inputs)
        torch.testing.assert_close(out, reference_out, rtol=1e-9, atol=1e-12)
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.binary_cross_entropy(out, target).backward()
        optimizer.step()
    ours.eval(), reference.eval()
    with torch.no_grad(), metadata(ours, design):
        torch.testing.assert_close(ours(inputs), reference(inputs), rtol=1e-9, atol=1e-12)


def test_pmdn_penalty_pass_passes_the_whole_residual_and_averages_the_layers(rng):
    x = make_design(rng, 12)
    net = nn.Sequential(PenaltyMetadataNorm(3, x.shape[1], num_preserved=1), PenaltyMetadataNorm(3, x.shape[1], num_preserved=1)).double().train()
    betas = [rng.normal(size=(x.shape[1], 3)) for _ in range(2)]
    with torch.no_grad():
        for layer, beta in zip(net, betas):
            layer.beta.copy_(t(beta))
    y = rng.normal(size=(12, 3))
    with metadata(net, t(x)), penalty_pass(net):
        out = net(t(y))
    first = y - x @ betas[0]  # the whole design, label part included
    np.testing.assert_allclose(out.detach().numpy(), first - x @ betas[1], atol=1e-12)
    expected = (np.sum(first**2) + np.sum((first - x @ betas[1]) ** 2)) / 2
    np.testing.assert_allclose(float(mdn_penalty(net).detach()), expected, rtol=1e-12)
    assert not any(layer.fitting for layer in net)
    with metadata(net, t(x)):  # the second pass keeps the label part
        out = net(t(y))
    np.testing.assert_allclose(out.detach().numpy(), y - x[:, 1:] @ betas[0][1:] - x[:, 1:] @ betas[1][1:], atol=1e-12)


def test_pmdn_two_pass_beta_approaches_full_design_ols_on_fixed_features(rng):
    """With a frozen network the betas' pass alone fits the whole design (label included), as OLS does."""
    from mdn_cli.train.loop import fit_penalty_betas

    n = 256
    x = make_design(rng, n)
    net = pmdn_net(x)
    for param in (*net[0].parameters(), *net[3].parameters()):
        param.requires_grad_(False)
    inputs = t(rng.normal(size=(n, 5)) + x[:, 1:2])
    beta_optimizer = torch.optim.Adam([net[1].beta], lr=0.045)
    for _epoch in range(200):
        for sl in batches(n, [64]):
            fit_penalty_betas(net, inputs[sl], t(x[sl]), beta_optimizer)
    reference = ols(x, net[0](inputs).detach().numpy())
    np.testing.assert_allclose(net[1].beta.detach().numpy(), reference, atol=0.02 * np.abs(reference).max(), rtol=0)


def test_lazy_pmdn_infers_width_and_resets():
    layer = LazyPenaltyMetadataNorm(3, num_preserved=1)
    layer(torch.ones(2, 2, 5), design=torch.ones(2, 3))
    assert type(layer) is PenaltyMetadataNorm and layer.beta.shape == (3, 10) and layer.num_features == 10
    with torch.no_grad():
        layer.beta.fill_(1.0)
    layer.reset_parameters()
    assert torch.count_nonzero(layer.beta) == 0


# -- end to end from a spec ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_data(synth_data) -> Path:
    return synth_data  # 72 training rows


def variant_spec(folder: Path, name: str, mdn: dict, **train) -> Path:
    return write_spec(folder, name, epochs=2, mdn=mdn, train={"batch_size": 8, "device": "cpu", **train})


def metrics_of(run: Path) -> list[dict]:
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mdn", [{"variant": "recursive", "forgetting": 0.99}, {"variant": "penalty", "beta_lr": 0.01}])
@pytest.mark.slow
def test_variants_train_from_a_spec_and_resume_exactly(small_data, tmp_path, mdn):
    spec = load_spec(variant_spec(small_data, f"{mdn['variant']}.yaml", mdn))
    summary = train(spec, tmp_path / "straight")
    assert summary["mdn_layers"] == 2 and summary["epochs"] == 2
    metrics = metrics_of(tmp_path / "straight")
    assert {"train_loss", "val_loss", "val_acc", "dcor2"} <= set(metrics[0])
    assert ("train_penalty" in metrics[0]) == (mdn["variant"] == "penalty")
    state = torch.load(tmp_path / "straight" / "checkpoints" / "last.pt", weights_only=True)
    keys = set(state["model"])
    if mdn["variant"] == "recursive":
        assert len([k for k in keys if k.endswith((".covariance", ".running_beta"))]) == 4
        assert state["beta_optimizer"] is None
    else:
        assert len([k for k in keys if k.endswith(".beta")]) == 2 and state["beta_optimizer"]["param_groups"][0]["lr"] == 0.01

    train(spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": 1})}), tmp_path / "split")
    train(spec, tmp_path / "split", resume=True)
    assert metrics_of(tmp_path / "split") == metrics


# -- the references' raw design (mdn.standardize: false) ----------------------------------------
@pytest.mark.parametrize("variant", ["batch", "recursive"])
def test_raw_design_layers_follow_the_reference_update_rules(small_data, tmp_path, variant):
    """With `mdn.standardize: false` the design is the references' [label, cf, 1] in the table's
    units, and a built run's first MDN layer, on a training batch, does what the reference layer
    does with it: mlu355/MetadataNorm (B = K X'Y with K = (X'X)^-1 of the raw training design,
    out = Y - N/n X_m B_m, beta <- 0.9 beta + 0.1 B) or ynshah3/Recursive-MDN (P <- P/λ,
    K = P X'(I + X P X')^-1, P <- P - K X P + q I, beta <- beta + K (Y - X beta), out with that beta)."""
    from mdn_cli.train.run import build_run

    mdn = {"variant": variant, "standardize": False, **({"momentum": 0.1} if variant == "batch" else {})}
    run = build_run(load_spec(write_spec(small_data, f"raw-{variant}.yaml", mdn=mdn, train={"device": "cpu"})))
    table = run.data.table
    raw = np.stack([table["label"], table["cf"], np.ones(len(table))], 1)
    np.testing.assert_allclose(run.data.design_rows.numpy(), raw, rtol=1e-6)

    layer = run.network.body[1]
    captured = {}
    layer.register_forward_hook(lambda _m, args, out: captured.update(y=args[0].detach().double().flatten(1), out=out.detach().double().flatten(1)))
    rows = run.data.splits["train"][:16]
    x, design = next(iter(run.data.inputs.batches([rows]))), raw[rows]
    run.network.train()
    with metadata(run.network, run.data.design_rows[rows]):
        run.network(x)
    y = captured["y"].numpy()
    if variant == "batch":
        train_design = raw[run.data.splits["train"]]
        kernel = np.linalg.inv(train_design.T @ train_design)
        b = kernel @ design.T @ y
        scale = len(train_design) / len(rows)
        expected_out, expected_beta = y - scale * design[:, 1:] @ b[1:], 0.1 * b * scale
        state = layer.running_beta
    else:
        p = np.eye(3) / 0.01 / 0.999
        gain = p @ design.T @ np.linalg.inv(np.eye(len(rows)) + design @ p @ design.T)
        expected_beta = gain @ y  # beta starts at zero
        expected_out = y - design[:, 1:] @ expected_beta[1:]
        state = layer.running_beta
        np.testing.assert_allclose(layer.covariance.numpy(), p - gain @ design @ p + 1e-4 * np.eye(3), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.double().numpy(), expected_beta, rtol=1e-4, atol=1e-5 * np.abs(expected_beta).max())
    np.testing.assert_allclose(captured["out"].numpy(), expected_out, rtol=1e-4, atol=1e-4 * np.abs(y).max())
