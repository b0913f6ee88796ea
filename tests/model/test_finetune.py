"""Fine-tuning: `model.init` (pretrained weights through the one safe loader) and `train.freeze`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from mdn_cli.config import load_spec
from mdn_cli.nn import MetadataNormBase
from mdn_cli.train.loop import Trainer
from mdn_cli.train.run import build_run
from tests.helpers import SMALL_BASELINE, SMALL_MDN, make_small_data, mdn, ok, write_spec

BN_MDN = SMALL_MDN[:1] + [{"type": "batchnorm2d", "name": "bn1"}] + SMALL_MDN[1:]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("finetune")
    make_small_data(folder, per_group=20)
    return folder


@pytest.fixture(scope="module")
def trained(folder) -> Path:
    """A trained MDN run, whose checkpoint is the 'pretrained' model."""
    ok("train", write_spec(folder, "pre.yaml", epochs=1), "-o", folder / "pre", "-q")
    return folder / "pre" / "checkpoints" / "last.pt"


def body_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    state = torch.load(checkpoint, weights_only=True)["model"]
    return {k.removeprefix("body."): v for k, v in state.items() if k.startswith("body.")}


def init_spec(folder: Path, name: str, init: dict, layers=SMALL_MDN, **train):
    return write_spec(folder, name, layers=layers, epochs=1, model={"init": init}, train=train)


def is_mdn_key(network, key: str) -> bool:
    module = dict(network.body.named_modules())[key.rsplit(".", 1)[0]]
    return isinstance(module, MetadataNormBase)


def test_an_mdn_checkpoint_initialises_the_body_but_not_the_mdn_state(folder, trained):
    run = build_run(load_spec(init_spec(folder, "from_run.yaml", {"path": str(trained)})))
    file = body_state(trained)
    model = run.network.body.state_dict()
    weights = [k for k in model if not is_mdn_key(run.network, k)]
    assert weights and all(torch.equal(model[k], file[k]) for k in weights)
    # the MDN layers start afresh on this run's data: zero running beta, Gram inverse of this training set
    mdn_betas = [k for k in model if k.endswith("running_beta")]
    assert mdn_betas and all(not model[k].any() for k in mdn_betas) and any(file[k].any() for k in mdn_betas)
    assert run.init_report["loaded"] == len(weights) and not run.init_report["missing"]


def test_a_state_dict_under_a_key_with_a_prefix(folder, trained, tmp_path):
    file = {k: v for k, v in body_state(trained).items() if "running_beta" not in k and "gram" not in k and "n_train" not in k and "tracked" not in k}
    torch.save({"epoch": 7, "state_dict": {**{f"backbone.{k}": v for k, v in file.items()}, "decoder.w": torch.ones(3)}}, tmp_path / "w.pt")
    run = build_run(load_spec(init_spec(folder, "prefixed.yaml", {"path": str(tmp_path / "w.pt"), "key": "state_dict", "prefix": "backbone."})))
    model = run.network.body.state_dict()
    assert all(torch.equal(model[k], v) for k, v in file.items())
    assert run.init_report["unexpected"] == []  # keys without the prefix are not part of the selection


@pytest.mark.slow
def test_strict_false_loads_what_fits_and_says_what_was_left(folder, trained, tmp_path):
    file = body_state(trained)
    file["out.weight"] = torch.zeros(3, 16)  # a head of another width
    file.pop("out.bias")
    torch.save(file, tmp_path / "head.pt")
    spec = init_spec(folder, "loose.yaml", {"path": str(tmp_path / "head.pt"), "strict": False})
    result = ok("train", spec, "-o", tmp_path / "run", "--format", "json")
    assert "model.init: loaded" in result.stderr and "out.bias" in result.stderr and "out.weight: file (3, 16), model (1, 16)" in result.stderr
    run = build_run(load_spec(spec))
    assert torch.equal(run.network.body.state_dict()["fc1.weight"], file["fc1.weight"])
    assert run.init_report["missing"] == ["out.bias"] and run.init_report["shape_mismatch"] == ["out.weight: file (3, 16), model (1, 16)"]


def refused(result, *words: str) -> None:
    """Exit 2, one message naming the key and carrying a hint, no traceback."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Hint:" in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)


def test_keys_that_do_not_match_are_listed_with_a_prefix_hint(folder, trained, tmp_path):
    torch.save({f"module.{k}": v for k, v in body_state(trained).items()}, tmp_path / "ddp.pt")  # as saved from a DDP-wrapped model
    result = mdn("train", init_spec(folder, "ddp.yaml", {"path": str(tmp_path / "ddp.pt")}), "-o", tmp_path / "run", "-q")
    refused(result, "model.init.path", "do not fit the model", "missing from the file (conv1.weight", "not in the model (module.", "prefix: 'module.'")
    assert not (tmp_path / "run").exists()
    names = [row["name"] for row in json.loads(ok("layers", folder / "ddp.yaml", "--format", "json").stdout)]  # the hint's command works
    assert "conv1" in names and "fc1" in names


def test_a_file_that_is_not_a_state_dict(folder, tmp_path):
    torch.save({"epoch": 3, "lr": 0.1, "net": {"w": torch.ones(2)}}, tmp_path / "notes.pt")
    result = mdn("train", init_spec(folder, "notes.yaml", {"path": str(tmp_path / "notes.pt")}), "-o", tmp_path / "run", "-q")
    refused(result, "model.init.path", "is not a state dict", "set model.init.key to the entry holding the weights: net")
    (tmp_path / "text.pt").write_text("not a torch file")
    result = mdn("train", init_spec(folder, "text.yaml", {"path": str(tmp_path / "text.pt")}), "-o", tmp_path / "run", "-q")
    refused(result, "model.init.path", "not a PyTorch file this tool can read safely")
    assert not (tmp_path / "run").exists()


class Payload:
    """Unpickling this calls os.system, as a malicious weights file would."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_with_code_is_refused_and_never_runs(folder, trained, tmp_path):
    marker = tmp_path / "payload-ran"
    torch.save({**body_state(trained), "extra": Payload(marker)}, tmp_path / "evil.pt")
    result = mdn("train", init_spec(folder, "evil.yaml", {"path": str(tmp_path / "evil.pt")}), "-o", tmp_path / "run", "-q")
    refused(result, "model.init.path", "refused", str(tmp_path / "evil.pt"))
    assert not marker.exists() and not (tmp_path / "run").exists()


def test_freeze_naming_no_module(folder, tmp_path):
    result = mdn("train", write_spec(folder, "typo.yaml", train={"freeze": ["conv"]}), "-o", tmp_path / "run", "-q")
    refused(result, "train.freeze[0]", "no layer 'conv'", "did you mean `conv1`")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_frozen_modules_keep_weights_and_batchnorm_statistics(folder, tmp_path):
    spec = load_spec(write_spec(folder, "frozen.yaml", layers=BN_MDN, epochs=2, train={"freeze": ["conv1", "bn1"]}))
    run = build_run(spec)
    before = {k: v.clone() for k, v in run.network.body.state_dict().items()}
    trainer = Trainer(run, tmp_path / "run")
    optimised = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    frozen = [*run.network.body.conv1.parameters(), *run.network.body.bn1.parameters()]
    assert frozen and not any(id(p) in optimised or p.requires_grad for p in frozen)
    trainer.fit()
    after = run.network.body.state_dict()
    for key in ("conv1.weight", "conv1.bias", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"):
        assert torch.equal(after[key], before[key]), key
    assert not torch.equal(after["fc1.weight"], before["fc1.weight"])  # the rest trains


@pytest.mark.slow
def test_without_freeze_batchnorm_statistics_move(folder, tmp_path):
    """The property above is the freeze's doing: the same run unfrozen updates them."""
    run = build_run(load_spec(write_spec(folder, "free.yaml", layers=BN_MDN, epochs=1)))
    before = run.network.body.bn1.running_mean.clone()
    Trainer(run, tmp_path / "run").fit()
    assert not torch.equal(run.network.body.bn1.running_mean, before)


@pytest.mark.slow
def test_a_baseline_initialises_an_mdn_model_with_names_in_common(folder, tmp_path):
    """Named layers carry over between a baseline and its MDN twin (MDN layers have no weights to load)."""
    ok("train", write_spec(folder, "base.yaml", layers=SMALL_BASELINE, epochs=1), "-o", tmp_path / "base", "-q")
    base = tmp_path / "base" / "checkpoints" / "last.pt"
    run = build_run(load_spec(init_spec(folder, "twin.yaml", {"path": str(base)})))  # strict: every weight of the MDN model is in the file
    file = body_state(base)
    assert sorted(file) == ["conv1.bias", "conv1.weight", "fc1.bias", "fc1.weight", "out.bias", "out.weight"]
    assert all(torch.equal(run.network.body.state_dict()[k], v) for k, v in file.items())


def test_an_mdn_run_initialises_its_baseline_twin(folder, trained):
    """The other way round: the MDN layers' state in the file is not taken for weights the baseline lacks."""
    run = build_run(load_spec(init_spec(folder, "base_twin.yaml", {"path": str(trained)}, layers=SMALL_BASELINE)))  # strict
    file = body_state(trained)
    assert all(torch.equal(v, file[k]) for k, v in run.network.body.state_dict().items())
    assert run.init_report["loaded"] == 6 and not run.init_report["unexpected"]
