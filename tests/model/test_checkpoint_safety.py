"""No file the tool reads can run code: checkpoints load with ``torch.load(weights_only=True)``.

A crafted pickle whose payload would create a file is given where a user gives checkpoints
(``extract --checkpoint``, ``train --resume``, ``refit --checkpoint``): it is refused with exit 2
and the payload never runs.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from mdn_cli.model.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, save_checkpoint
from mdn_cli.utils.errors import MdnError
from tests.helpers import mdn


class Payload:
    """Unpickling this calls os.system, as a malicious checkpoint would."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def run(trained_runs) -> Path:
    return trained_runs / "mdn"


def evil_checkpoint(path: Path, marker: Path) -> Path:
    state = torch.load(path.parent / "last.pt", weights_only=True) if (path.parent / "last.pt").exists() else {}
    torch.save({**state, "history": [Payload(marker)]}, path)
    return path


@pytest.mark.parametrize("command", ["extract", "refit", "resume"])
def test_a_pickle_with_a_payload_is_refused_and_never_runs(run, tmp_path, command):
    target = tmp_path / "run"
    shutil.copytree(run, target)
    marker = tmp_path / "payload-ran"
    if command == "extract":
        evil = evil_checkpoint(target / "checkpoints" / "evil.pt", marker)
        result = mdn("extract", target, "--checkpoint", evil, "-l", "fc1", "-o", tmp_path / "f.h5")
    elif command == "refit":
        evil = evil_checkpoint(target / "checkpoints" / "evil.pt", marker)
        result = mdn("refit", target, "--checkpoint", "evil")
    else:
        evil = evil_checkpoint(target / "checkpoints" / "last.pt", marker)
        result = mdn("train", target / "config.yaml", "-o", target, "--resume", "-q", "--set", "train.epochs=4")
    assert result.returncode == 2, result.stderr
    assert "refused" in result.stderr and str(evil) in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
    assert not (tmp_path / "f.h5").exists()


def test_the_project_checkpoints_hold_only_tensors_and_plain_types(run):
    state = load_checkpoint(run / "checkpoints" / "last.pt")  # weights_only=True inside
    assert state["format"] == CHECKPOINT_FORMAT and state["epoch"] == 3


def test_the_writer_refuses_other_objects(tmp_path):
    import numpy as np

    with pytest.raises(TypeError, match=r"state\['best'\]\['val_loss'\] is a float64"):
        save_checkpoint({"best": {"val_loss": np.float64(0.5)}}, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()


def test_another_format_version_is_refused(run, tmp_path):
    state = load_checkpoint(run / "checkpoints" / "last.pt")
    torch.save({**state, "format": CHECKPOINT_FORMAT + 1}, tmp_path / "future.pt")
    with pytest.raises(MdnError, match="format version 2 is not supported"):
        load_checkpoint(tmp_path / "future.pt")
