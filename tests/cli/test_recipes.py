"""`mdn recipes`: listing and copying, and every recipe validated and trained for one epoch, unmodified, on
small generated data of the shape its header describes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import torchvision
import yaml
from PIL import Image

from mdn_cli.recipes import recipe, recipe_names
from tests.helpers import mdn, ok


def test_recipes_are_listed_as_a_table_and_as_json():
    listed = json.loads(ok("recipes", "--format", "json").stdout)
    assert [row["name"] for row in listed] == recipe_names() == ["faces", "mri", "synthetic", "video"]
    assert all(row["command"].startswith("mdn ") and row["about"] for row in listed)
    assert "faces" in ok("recipes").stdout


def test_copy_to_a_file_or_a_folder_refuses_to_overwrite_without_force(tmp_path):
    ok("recipes", "copy", "mri", tmp_path)
    assert (tmp_path / "mri.yaml").read_text() == recipe("mri").text
    ok("recipes", "copy", "faces", tmp_path / "study.yaml")
    assert yaml.safe_load((tmp_path / "study.yaml").read_text())["data"]["label"] == "gender"
    refused = mdn("recipes", "copy", "faces", tmp_path / "study.yaml")
    assert refused.returncode == 2 and "--force" in refused.stderr
    ok("recipes", "copy", "synthetic", tmp_path / "study.yaml", "--force")
    assert (tmp_path / "study.yaml").read_text() == recipe("synthetic").text
    unknown = mdn("recipes", "copy", "fcaes", tmp_path)
    assert unknown.returncode == 2 and "faces" in unknown.stderr and "Traceback" not in unknown.stderr


def copy_and_train(folder: Path, name: str, *extra: str) -> dict:
    """Validate the copied recipe as it is, then train it for one epoch; the run's summary."""
    spec = folder / f"{name}.yaml"
    checked = mdn("validate", spec)
    assert checked.returncode == 0, checked.stderr
    result = mdn("train", spec, "-o", folder / "run", "-q", "--format", "json", "--set", "train.epochs=1", *extra)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_the_synthetic_recipe_trains(tmp_path):
    ok("recipes", "copy", "synthetic", tmp_path)
    ok("synth", tmp_path, "--per-group", 20)
    summary = copy_and_train(tmp_path, "synthetic", "--set", "train.batch_size=32")
    assert summary["mdn_layers"] == 3 and np.isfinite(summary["last"]["val_loss"])


@pytest.mark.slow
def test_the_faces_recipe_trains_its_folds_from_a_local_weights_file(tmp_path):
    ok("recipes", "copy", "faces", tmp_path)
    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    rows = []
    for i in range(16):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8), "RGB").save(tmp_path / "images" / f"{i}.png")
        rows.append({"id": f"f{i}", "path": f"images/{i}.png", "gender": i % 2, "shade": 1 + i % 6})
    pd.DataFrame(rows).to_csv(tmp_path / "faces.csv", index=False)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "resnet18-f37072fd.pth")
    summary = copy_and_train(tmp_path, "faces", "--set", "train.batch_size=4")
    assert summary["mdn_layers"] == 1 and summary["init"]["shape_mismatch"] and np.isfinite(summary["last"]["val_loss"])
    layers = json.loads(ok("layers", tmp_path / "run", "--format", "json").stdout)
    assert [row["name"] for row in layers if row["mdn"]] == ["avgpool"]
    cv = mdn("train", tmp_path / "faces.yaml", "-o", tmp_path / "cv", "--folds", "2", "-q", "--format", "json",
             "--set", "train.epochs=1", "--set", "train.batch_size=4")  # the recipe's command, two folds of one epoch
    assert cv.returncode == 0, cv.stderr
    assert len(json.loads((tmp_path / "cv" / "cv.json").read_text())["runs"]) == 2


@pytest.mark.slow
def test_the_mri_recipe_trains_on_nifti_volumes_of_32x64x64(tmp_path):
    ok("recipes", "copy", "mri", tmp_path)
    rng = np.random.default_rng(0)
    (tmp_path / "volumes").mkdir()
    rows = []
    for i in range(12):
        nib.save(nib.Nifti1Image(rng.normal(size=(32, 64, 64)).astype(np.float32), np.eye(4)), str(tmp_path / "volumes" / f"{i}.nii.gz"))
        rows.append({"id": f"s{i}", "path": f"volumes/{i}.nii.gz", "dx": i % 2, "age": 30 + 3 * i})
    pd.DataFrame(rows).to_csv(tmp_path / "mri.csv", index=False)
    summary = copy_and_train(tmp_path, "mri", "--set", "train.batch_size=4")
    assert summary["mdn_layers"] == 2 and np.isfinite(summary["last"]["val_loss"])
    layers = {row["name"]: row for row in json.loads(ok("layers", tmp_path / "run", "--format", "json").stdout)}
    assert layers["features"]["output_shape"] == [1024] and layers["features"]["mdn"] and layers["fc1"]["mdn"]


def write_hmdb51(folder: Path, actions=("brush_hair", "wave", "sit"), per_action: int = 5) -> None:
    """HMDB51's layout in miniature: <action>/<clip>.avi with the meta tags in the names, and split files."""
    from mdn_cli.data.video import write_video

    rng = np.random.default_rng(0)
    (folder / "splits").mkdir()
    for action in actions:
        (folder / "hmdb51" / action).mkdir(parents=True)
        lines = []
        for i in range(per_action):
            name = f"Clip{i}_{action}_{'fuhl'[i % 4]}_{('cm', 'nm')[i % 2]}_np1_{('fr', 'ba')[i % 2]}_{('bad', 'med', 'goo')[i % 3]}_{i}.avi"
            write_video(folder / "hmdb51" / action / name, rng.integers(0, 255, (3, 20 + i, 24, 32), dtype=np.uint8))
            lines.append(f"{name} {2 if i == 0 else 1}")
        (folder / "splits" / f"{action}_test_split1.txt").write_text("\n".join(lines) + "\n")


@pytest.mark.slow
def test_the_video_recipe_trains_on_hmdb51s_layout_from_a_local_weights_file(tmp_path):
    from mdn_cli.data.hmdb51 import hmdb51_table

    ok("recipes", "copy", "video", tmp_path)
    write_hmdb51(tmp_path)
    table = hmdb51_table(tmp_path / "hmdb51", tmp_path / "splits", split=1, val_fraction=0.5)
    assert table["split"].value_counts().to_dict() == {"train": 6, "val": 6, "test": 3}
    assert table.loc[table["id"] == "Clip3_wave_l_nm_np1_ba_bad_3", ["action", "body", "camera", "people", "viewpoint", "quality"]].values.tolist() == [
        ["wave", "l", "nm", "np1", "ba", "bad"]]
    table["path"] = "hmdb51/" + table["path"]
    table.to_csv(tmp_path / "hmdb51.csv", index=False)
    torch.save(torchvision.models.video.r3d_18().state_dict(), tmp_path / "r3d_18-b3b3357e.pth")
    classes = "model.kwargs.num_classes=3"  # three actions here, 51 in HMDB51
    assert "15 videos of 20-24 frames" in ok("validate", tmp_path / "video.yaml", "--set", classes).stderr
    result = mdn("train", tmp_path / "video.yaml", "-o", tmp_path / "run", "-q", "--format", "json", "--set", "train.epochs=1", "--set", "train.batch_size=4", "--set", classes)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["mdn_layers"] == 1 and summary["init"]["shape_mismatch"] and np.isfinite(summary["last"]["val_loss"])
    assert [row["name"] for row in json.loads(ok("layers", tmp_path / "run", "--format", "json").stdout) if row["mdn"]] == ["layer4"]
