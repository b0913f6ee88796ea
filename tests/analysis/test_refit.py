"""`mdn refit` on a trained run: a new checkpoint whose MDN layers leave no metadata on the training rows.

(``refit_beta`` itself, on bare modules against numpy's least squares: tests/nn/test_refit_beta.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdn_cli.nn import metadata
from tests.helpers import ols


@pytest.fixture(scope="module")
def runs(trained_runs):
    """The session's small MDN run (batch 16, 3 epochs) and baseline run."""
    return trained_runs


def test_refit_writes_a_new_checkpoint_whose_layers_leave_no_metadata_on_the_training_rows(runs):
    import json

    from mdn_cli.data.training import load_training_data
    from mdn_cli.model.checkpoint import load_run
    from tests.helpers import no_leftovers, ok

    original = (runs / "mdn" / "checkpoints" / "best.pt").read_bytes()
    result = json.loads(ok("refit", runs / "mdn", "--format", "json").stdout)
    assert result["checkpoint"] == str(runs / "mdn" / "checkpoints" / "best-refit.pt")
    assert (runs / "mdn" / "checkpoints" / "best.pt").read_bytes() == original  # kept as it was
    assert not no_leftovers(runs / "mdn")
    loaded = load_run(runs / "mdn", "best-refit")  # a checkpoint name the other commands accept
    data = load_training_data(loaded.spec, loaded.spec.train.seed)
    assert result["rows"] == len(data.splits["train"])
    assert set(result["before"]) == set(result["after"]) >= {"val_acc", "val_loss", "dcor2[cf|label=0]"}
    outputs, designs = [], []
    hook = loaded.network.feature_module("fc1").register_forward_hook(lambda _m, _i, out: outputs.append(out.detach().double()))
    with torch.no_grad():
        for _rows, x, design, _y in data.batches("train", 64):
            with metadata(loaded.network, design):
                loaded.network(x)
            designs.append(design.double())
    hook.remove()
    out, x = torch.cat(outputs).numpy(), torch.cat(designs).numpy()
    coefficients = ols(x, out)
    scale = np.abs(out).max()
    np.testing.assert_allclose(coefficients[1:] / scale, 0.0, atol=1e-5)  # cf and intercept: nothing left (float32 network)
    assert np.abs(coefficients[0]).max() / scale > 1e-3  # the label's part stays


def test_refit_output_option_and_extract_with_the_refitted_checkpoint(runs, tmp_path):
    """`extract --checkpoint PATH` runs the refitted betas: its features are those of a forward with them, not the original's."""
    import h5py

    from mdn_cli.model.checkpoint import load_run
    from mdn_cli.train.monitor import split_metrics
    from mdn_cli.train.run import Run
    from tests.helpers import ok

    target = tmp_path / "refitted.pt"
    ok("refit", runs / "mdn", "--checkpoint", "last", "-o", target, "--format", "json")
    assert target.is_file()
    ok("extract", runs / "mdn", "--checkpoint", str(target), "-l", "fc1", "-o", tmp_path / "fc1.h5")
    with h5py.File(tmp_path / "fc1.h5") as f:
        extracted = f["features"][:]
        assert f.attrs["checkpoint"] == str(target.resolve())

    def val_features(checkpoint: str):
        loaded = load_run(runs / "mdn", checkpoint)
        return split_metrics(Run(loaded.spec, loaded.training_data(), loaded.network, loaded.device), "val", capture="fc1")[1]

    refitted, original = val_features(str(target)), val_features("last")
    np.testing.assert_allclose(extracted, refitted, rtol=1e-5, atol=1e-6)
    assert np.abs(extracted - original).max() > 1e-3  # the refit changed the betas, and extract used the new ones
    state, before = torch.load(target, weights_only=True), torch.load(runs / "mdn" / "checkpoints" / "last.pt", weights_only=True)
    betas = [key for key in state["model"] if key.endswith("running_beta")]
    assert betas and all(not torch.equal(state["model"][key], before["model"][key]) for key in betas)


def test_refit_of_a_run_without_mdn_is_an_input_error(runs):
    from tests.helpers import mdn

    result = mdn("refit", runs / "baseline")
    assert result.returncode == 2 and "no MDN layers" in result.stderr and "Traceback" not in result.stderr
