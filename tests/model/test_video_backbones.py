"""torchvision's video ResNets through `model.factory` with MDN after layer4, on clips of a synthetic video study.

Kinetics-400 weights are stood in for by a state dict of the same shape that the test writes
(400-class head, so `strict: false`); nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import yaml
from safetensors.torch import save_file

from tests.helpers import mdn, ok


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("video")
    ok("synth", folder, "--format", "video", "--per-group", 8, "--seed", 2)
    return folder


def spec(study: Path, factory: str, **model) -> Path:
    text = {
        "data": {"path_column": "path", "table": "meta.csv", "id_column": "id", "label": "label", "metadata": ["cf"], "split_column": "split",
                 "clip": {"frames": 4, "stride": 2, "eval_clips": 2},
                 "transform": [{"normalize": {"mean": [0.43216, 0.394666, 0.37645], "std": [0.22803, 0.22145, 0.216989]}}]},
        "model": {"factory": f"torchvision.models.video:{factory}", "kwargs": {"num_classes": 1}, "mdn_after": ["layer4"], **model},
        "mdn": {"preserve": ["label"]},
        "train": {"task": "binary", "epochs": 1, "batch_size": 8, "lr": 1e-4, "seed": 0, "monitor": "layer4", "num_workers": 0},
    }
    path = study / f"{factory}.yaml"
    path.write_text(yaml.safe_dump(text, sort_keys=False))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("factory", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_a_video_resnet_trains_with_mdn_after_layer4(study, factory, tmp_path):
    path = spec(study, factory)
    assert "layer4" in ok("layers", path).stdout
    summary = json.loads(ok("train", path, "-o", tmp_path / "run", "-q", "--format", "json").stdout)
    assert summary["mdn_layers"] == 1 and np.isfinite(summary["last"]["val_loss"]) and "cf" in summary["last"]["dcor2"]
    assert set(summary["last"]["dcor2"]["cf"]) == {"all", "label=0", "label=1"}
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["sample_shape"] == [3, 4, 32, 32]


@pytest.mark.slow
def test_kinetics_shaped_weights_initialise_r3d_18_from_safetensors(study, tmp_path):
    torch.manual_seed(3)
    weights = study / "r3d_18-kinetics.safetensors"
    save_file(torchvision.models.video.r3d_18().state_dict(), str(weights))  # 400 classes, as Kinetics-400's
    path = spec(study, "r3d_18", init={"path": weights.name, "strict": False})
    result = mdn("train", path, "-o", tmp_path / "run", "-q", "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert sorted(summary["init"]["shape_mismatch"]) == ["fc.bias: file (400,), model (1,)", "fc.weight: file (400, 512), model (1, 512)"]
    assert summary["init"]["loaded"] == len(torchvision.models.video.r3d_18().state_dict()) - 2
