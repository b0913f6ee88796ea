"""`model.init` from `.safetensors` files: exact loads, prefix and strict as for `.pt`, unreadable files named."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mdn_cli.config import SpecError, load_spec
from mdn_cli.train.run import build_run
from tests.helpers import SMALL_MDN, make_small_data, mdn, write_spec


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("safetensors")
    make_small_data(folder, per_group=10)
    return folder


def body_weights(folder, seed: int) -> dict[str, torch.Tensor]:
    """A trained-looking state dict of the small model's body (MDN layers aside), from a differently seeded build."""
    torch.manual_seed(seed)
    run = build_run(load_spec(write_spec(folder, "plain.yaml")))
    return {k: v.clone() for k, v in run.network.body.state_dict().items() if not k.startswith("mdn")}


def spec_with_init(folder, init: dict):
    return write_spec(folder, "init.yaml", model={"layers": SMALL_MDN, "init": init})


def test_a_safetensors_file_loads_exactly_with_its_prefix(folder):
    weights = body_weights(folder, seed=5)
    save_file({f"backbone.{k}": v.contiguous() for k, v in weights.items()}, str(folder / "w.safetensors"))
    run = build_run(load_spec(spec_with_init(folder, {"path": "w.safetensors", "prefix": "backbone."})))
    loaded = run.network.body.state_dict()
    assert run.init_report["loaded"] == len(weights) and all(torch.equal(loaded[k], v) for k, v in weights.items())


def test_strict_and_its_report_work_as_for_torch_files(folder):
    weights = body_weights(folder, seed=6)
    partial = {k: v.contiguous() for k, v in weights.items() if not k.startswith("out.")}  # the last linear layer left out
    save_file(partial, str(folder / "partial.safetensors"))
    with pytest.raises(SpecError) as error:
        build_run(load_spec(spec_with_init(folder, {"path": "partial.safetensors"})))
    assert "missing from the file" in str(error.value) and "model.init.path" in str(error.value)
    report = build_run(load_spec(spec_with_init(folder, {"path": "partial.safetensors", "strict": False}))).init_report
    assert sorted(report["missing"]) == sorted(k for k in weights if k.startswith("out."))


def test_an_unreadable_safetensors_file_is_an_input_error_naming_it(folder):
    (folder / "bad.safetensors").write_bytes(b"garbage" * 10)
    result = mdn("validate", spec_with_init(folder, {"path": "bad.safetensors"}))
    assert result.returncode == 2 and "bad.safetensors" in result.stderr and "safetensors" in result.stderr and "Traceback" not in result.stderr
    save_file({"x": torch.zeros(1)}, str(folder / "flat.safetensors"))
    result = mdn("validate", spec_with_init(folder, {"path": "flat.safetensors", "key": "state_dict"}))
    assert result.returncode == 2 and "model.init.key" in result.stderr
