"""The two products behind every MDN layer, and the fused autograd nodes built on them.

References are independent: float64 numpy products, ``torch.autograd.gradcheck`` (finite
differences against the hand-written backward passes), and the same computation written with
plain differentiable torch operations.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdn_cli.nn.kernels import subtract_product, transposed_product
from mdn_cli.nn import batch_beta, batch_metadata_norm, metadata_norm, penalty_metadata_norm


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """Both code paths of transposed_product: one block, or column blocks run as a batch."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


# widths below and above the blocking threshold, with and without a remainder block
@pytest.mark.parametrize("width", [1, 7, 1023, 4096, 5003])
@pytest.mark.parametrize("columns", [1, 3, 6])
def test_transposed_product_matches_numpy(rng, threads, width, columns):
    x, y = rng.normal(size=(37, columns)), rng.normal(size=(37, width))
    out = transposed_product(torch.from_numpy(x), torch.from_numpy(y))
    assert out.shape == (columns, width)
    np.testing.assert_allclose(out.numpy(), x.T @ y, rtol=1e-12, atol=1e-12)


def test_transposed_product_of_non_contiguous_features(rng, threads):
    y = torch.from_numpy(rng.normal(size=(4100, 20))).T  # (20, 4100), column-major
    x = torch.from_numpy(rng.normal(size=(20, 3)))
    np.testing.assert_allclose(transposed_product(x, y).numpy(), x.numpy().T @ y.numpy(), rtol=1e-12, atol=1e-12)


# elementwise path (up to 4 columns), the gemm path above it, and no column at all
@pytest.mark.parametrize("columns", [0, 1, 2, 4, 5, 9])
def test_subtract_product_matches_numpy(rng, columns):
    y, x, c = rng.normal(size=(23, 300)), rng.normal(size=(23, columns)), rng.normal(size=(columns, 300))
    out = subtract_product(torch.from_numpy(y), torch.from_numpy(x), torch.from_numpy(c))
    np.testing.assert_allclose(out.numpy(), y - x @ c, rtol=1e-12, atol=1e-12)


def test_subtract_product_never_writes_into_its_input(rng):
    y = torch.from_numpy(rng.normal(size=(5, 8)))
    kept = y.clone()
    subtract_product(y, torch.ones(5, 0, dtype=y.dtype), torch.ones(0, 8, dtype=y.dtype))
    subtract_product(y, torch.ones(5, 2, dtype=y.dtype), torch.ones(2, 8, dtype=y.dtype))
    assert torch.equal(y, kept)


def _design(rng, n: int, columns: int = 4) -> torch.Tensor:
    x = np.concatenate([rng.integers(0, 2, size=(n, 1)), rng.normal(size=(n, columns - 2)), np.ones((n, 1))], axis=1)
    return torch.from_numpy(x.astype(np.float64))


@pytest.mark.parametrize("num_preserved", [0, 1, 2])
def test_batch_metadata_norm_backward_passes_gradcheck(rng, num_preserved):
    x_train = _design(rng, 40)
    gram_inv = torch.linalg.inv(x_train.T @ x_train)
    y = torch.from_numpy(rng.normal(size=(9, 2, 3))).requires_grad_(True)  # any feature shape

    def out(features):
        return batch_metadata_norm(features, x_train[:9], gram_inv, 40, num_preserved)[0]

    assert torch.autograd.gradcheck(out, (y,), eps=1e-6, atol=1e-8)


def test_batch_metadata_norm_equals_the_composition_of_plain_operations(rng):
    """Forward, beta and gradient against autograd through batch_beta and a plain subtraction."""
    x_train = _design(rng, 60)
    gram_inv = torch.linalg.inv(x_train.T @ x_train)
    x, q = x_train[10:26], 1
    y = torch.from_numpy(rng.normal(size=(16, 5)))
    weights = torch.from_numpy(rng.normal(size=(16, 5)))

    fused_in = y.clone().requires_grad_(True)
    fused, beta = batch_metadata_norm(fused_in, x, gram_inv, 60, q)
    (fused * weights).sum().backward()

    plain_in = y.clone().requires_grad_(True)
    plain_beta = batch_beta(plain_in, x, gram_inv, 60)
    plain = plain_in - x[:, q:] @ plain_beta[q:]
    (plain * weights).sum().backward()

    np.testing.assert_allclose(fused.detach().numpy(), plain.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(beta.numpy(), plain_beta.detach().numpy(), atol=1e-10)
    np.testing.assert_allclose(fused_in.grad.numpy(), plain_in.grad.numpy(), atol=1e-10)
    assert not beta.requires_grad


def test_metadata_norm_backward_passes_gradcheck(rng):
    x = _design(rng, 7)
    y = torch.from_numpy(rng.normal(size=(7, 5))).requires_grad_(True)
    beta = torch.from_numpy(rng.normal(size=(4, 5))).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f, b: metadata_norm(f, x, b, num_preserved=1), (y, beta), eps=1e-6, atol=1e-8)


def test_float32_features_match_float64_reference(rng, threads):
    """The float32 path (the one training takes) at a conv-map size, against float64 numpy."""
    x_train = _design(rng, 300).numpy()
    k = np.linalg.inv(x_train.T @ x_train)
    x, y = x_train[:100], rng.normal(size=(100, 4, 33, 33))
    out, beta = batch_metadata_norm(torch.from_numpy(y).float(), torch.from_numpy(x), torch.from_numpy(k), 300, 1)
    flat = y.reshape(100, -1)
    ref_beta = k @ x.T @ flat * 3.0
    ref = flat - x[:, 1:] @ ref_beta[1:]
    assert out.dtype == torch.float32 and out.shape == y.shape
    np.testing.assert_allclose(out.reshape(100, -1).numpy(), ref, atol=2e-4)
    np.testing.assert_allclose(beta.numpy(), ref_beta, atol=2e-4)


@pytest.mark.parametrize("num_preserved", [0, 1])
def test_penalty_metadata_norm_backward_passes_gradcheck(rng, num_preserved):
    x = _design(rng, 8)
    y = torch.from_numpy(rng.normal(size=(8, 2, 3))).requires_grad_(True)
    beta = torch.from_numpy(rng.normal(size=(4, 6))).requires_grad_(True)

    def both(features, b):  # the output and the penalty, as one loss sees them
        out, penalty = penalty_metadata_norm(features, x, b, num_preserved)
        return out, penalty

    assert torch.autograd.gradcheck(both, (y, beta), eps=1e-6, atol=1e-8)


def test_penalty_metadata_norm_equals_plain_operations(rng):
    x, q = _design(rng, 12), 1
    y = torch.from_numpy(rng.normal(size=(12, 5)))
    beta = torch.from_numpy(rng.normal(size=(4, 5)))
    out, penalty = penalty_metadata_norm(y, x, beta, q)
    np.testing.assert_allclose(out.numpy(), (y - x[:, q:] @ beta[q:]).numpy(), atol=1e-12)
    assert float(penalty) == pytest.approx(float(((y - x @ beta) ** 2).sum()), rel=1e-12)  # a sum of squares, as the reference


def test_penalty_output_may_be_changed_in_place_afterwards(rng):
    x = _design(rng, 6)
    y = torch.from_numpy(rng.normal(size=(6, 3))).requires_grad_(True)
    beta = torch.from_numpy(rng.normal(size=(4, 3))).requires_grad_(True)
    out, penalty = penalty_metadata_norm(y, x, beta, num_preserved=0)
    (torch.relu_(out).sum() + penalty).backward()  # as after nn.ReLU(inplace=True)
    assert y.grad is not None and beta.grad is not None
