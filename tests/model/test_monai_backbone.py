"""A backbone of the field through `model.factory`: the shipped MONAI 3D ResNet spec, MDN after its last block."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from tests.helpers import ok

pytest.importorskip("monai")

SPEC = Path(__file__).resolve().parents[2] / "sample_data" / "monai" / "resnet10_3d.yaml"


def write_volumes(folder: Path, n: int = 24) -> tuple[Path, Path]:
    """(n, 1, 16, 16, 16) volumes whose brightness carries the label and, confounded with it, age."""
    rng = np.random.default_rng(0)
    label = np.arange(n) % 2
    age = rng.normal(60 + 5 * label, 3)
    x = rng.normal(size=(n, 1, 16, 16, 16)).astype(np.float32) + (label + (age - 60) / 10)[:, None, None, None, None].astype(np.float32)
    ids = [f"s{i:02d}" for i in range(n)]
    with h5py.File(folder / "volumes.h5", "w") as f:
        f["x"] = x
        f["ids"] = np.array(ids, dtype="S")
    split = np.where(np.arange(n) < 16, "train", "val")
    pd.DataFrame({"id": ids, "label": label, "age": age, "split": split}).to_csv(folder / "meta.csv", index=False)
    return folder / "volumes.h5", folder / "meta.csv"


@pytest.mark.slow
def test_the_monai_resnet_spec_trains_with_mdn_after_layer4(tmp_path):
    volumes, table = write_volumes(tmp_path)
    sets = ["--set", f"data.inputs={volumes}", "--set", f"data.table={table}", "--set", "train.epochs=1", "--set", "train.warmup_epochs=0",
            "--set", "model.kwargs.widen_factor=0.25"]  # a quarter of the channels: 11 MB checkpoints instead of 170 MB (importing monai is most of the rest)
    summary = json.loads(ok("train", SPEC, "-o", tmp_path / "run", "-q", "--format", "json", *sets).stdout)
    assert summary["epochs"] == 1 and summary["mdn_layers"] == 1
    assert set(summary["last"]["dcor2"]["age"]) == {"all", "label=0", "label=1"}
    layers = json.loads(ok("layers", tmp_path / "run", "--format", "json").stdout)
    layer4 = next(row for row in layers if row["name"] == "layer4")
    assert layer4["mdn"] == "attached_mdn.layer4" and layer4["output_shape"] == [128, 1, 1, 1]
