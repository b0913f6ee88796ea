"""The field's 2D backbones through `model.factory` on a colour PNG study: torchvision's ResNet-18 with
MDN after avgpool and timm's ResNet-10t, initialised from weights files the test writes (`.pth` and
`.safetensors`), with `train.freeze` and `strict` as documented. Nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torchvision
import yaml
from PIL import Image
from safetensors.torch import save_file

from tests.helpers import mdn


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """32 RGB PNGs of 32x32: the label brightens the red channel, a numeric 'shade' darkens all channels."""
    folder = tmp_path_factory.mktemp("colour")
    (folder / "images").mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(32):
        label, shade = i % 2, rng.uniform(0, 1)
        image = rng.uniform(0.3, 0.7, (32, 32, 3)) - 0.25 * shade
        image[..., 0] += 0.2 * label
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8), "RGB").save(folder / "images" / f"{i}.png")
        rows.append({"id": f"s{i}", "path": f"images/{i}.png", "gender": label, "shade": shade, "split": "val" if i % 4 == 0 else "train"})
    pd.DataFrame(rows).to_csv(folder / "faces.csv", index=False)
    return folder


def write_study_spec(study: Path, name: str, model: dict, **train) -> Path:
    spec = {
        "data": {"path_column": "path", "table": "faces.csv", "id_column": "id", "label": "gender", "metadata": ["shade"],
                 "split_column": "split", "channels": 3, "transform": [{"normalize": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}]},
        "model": model,
        "mdn": {"preserve": ["gender"]},
        "train": {"task": "binary", "epochs": 1, "batch_size": 8, "lr": 1e-3, "seed": 0, "num_workers": 0, **train},
    }
    path = study / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def imagenet_resnet18(study) -> Path:
    """A ResNet-18 state dict of ImageNet's shape (fc: 1000 classes), as torchvision's resnet18-f37072fd.pth is."""
    torch.manual_seed(1)
    path = study / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


RESNET18 = {"factory": "torchvision.models:resnet18", "kwargs": {"num_classes": 1}, "mdn_after": ["avgpool"]}
FROZEN = ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4"]


@pytest.mark.slow
def test_resnet18_fine_tunes_its_head_from_a_weights_file_with_mdn_after_avgpool(study, imagenet_resnet18, tmp_path):
    spec = write_study_spec(study, "resnet18.yaml", {**RESNET18, "init": {"path": imagenet_resnet18.name, "strict": False}},
                            freeze=FROZEN, epochs=2, monitor="avgpool")
    layers = mdn("layers", spec)
    assert layers.returncode == 0 and "avgpool" in layers.stdout
    result = mdn("train", spec, "-o", tmp_path / "run", "-q", "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mdn_layers"] == 1 and summary["init"]["shape_mismatch"] == ["fc.weight: file (1000, 512), model (1, 512)", "fc.bias: file (1000,), model (1,)"]
    assert np.isfinite(summary["last"]["val_loss"]) and summary["last"]["dcor2"]["shade"]
    file = torch.load(imagenet_resnet18, weights_only=True)
    trained = {key.removeprefix("body."): value for key, value in torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["model"].items()}
    frozen = [key for key in file if key.split(".")[0] in FROZEN]
    assert any("running_mean" in key for key in frozen)
    assert all(torch.equal(trained[key], file[key]) for key in frozen)  # weights and BatchNorm statistics unmoved
    assert not torch.equal(trained["fc.weight"], torchvision.models.resnet18(num_classes=1).fc.weight)  # the head trained

    strict = write_study_spec(study, "strict.yaml", {**RESNET18, "init": {"path": imagenet_resnet18.name}})
    refused = mdn("validate", strict)
    assert refused.returncode == 2 and "fc.weight" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.slow
def test_a_timm_model_trains_from_a_safetensors_file(study, tmp_path):
    torch.manual_seed(2)
    weights = study / "resnet10t.safetensors"
    save_file(timm.create_model("resnet10t", pretrained=False, num_classes=1).state_dict(), str(weights))
    model = {"factory": "timm:create_model", "kwargs": {"model_name": "resnet10t", "pretrained": False, "num_classes": 1},
             "mdn_after": ["global_pool"], "init": {"path": weights.name}}
    spec = write_study_spec(study, "timm.yaml", model, monitor="global_pool", lr=1e-4)
    result = mdn("train", spec, "-o", tmp_path / "run", "-q", "--format", "json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["init"]["loaded"] == len(timm.create_model("resnet10t", num_classes=1).state_dict()) and not summary["init"]["missing"]
    assert summary["mdn_layers"] == 1 and np.isfinite(summary["last"]["val_loss"])


@pytest.mark.parametrize("factory,kwargs", [("torchvision.models:resnet18", {"weights": "IMAGENET1K_V1"}),
                                            ("timm:create_model", {"model_name": "resnet10t", "pretrained": True})])
def test_weights_that_would_be_downloaded_are_refused_with_the_way_out(study, factory, kwargs):
    spec = write_study_spec(study, "download.yaml", {"factory": factory, "kwargs": kwargs, "mdn_after": []})
    result = mdn("validate", spec)
    key = next(iter(k for k in kwargs if k != "model_name"))
    assert result.returncode == 2 and f"model.kwargs.{key}" in result.stderr and "model.init.path" in result.stderr
