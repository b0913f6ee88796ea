"""Shared, generic fixtures: seeded random generators and a tiny HDF5 writer."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import h5py
import numpy as np
import pytest
import torch


@pytest.fixture
def rng() -> np.random.Generator:
    """A numpy generator with a fixed seed (a fresh one per test)."""
    return np.random.default_rng(12345)


@pytest.fixture
def torch_seed() -> int:
    """Seeds torch's global generator for the test and returns the seed."""
    torch.manual_seed(0)
    return 0


@pytest.fixture
def make_h5(tmp_path: Path) -> Callable[..., Path]:
    """``make_h5(name, **datasets)`` writes numpy arrays as datasets of ``tmp_path / name``."""

    def make(name: str = "inputs.h5", **datasets: np.ndarray) -> Path:
        path = tmp_path / name
        with h5py.File(path, "w") as f:
            for key, value in datasets.items():
                f.create_dataset(key, data=value)
        return path

    return make


# -- session data: made once, shared by every test that reads them (tests write only beside them) --
@pytest.fixture(scope="session")
def synth_data(tmp_path_factory) -> Path:
    """`mdn synth` data: 120 images (72 train / 24 val / 24 test), per_group 60, seed 1."""
    from tests.helpers import make_small_data

    return make_small_data(tmp_path_factory.mktemp("synth"), per_group=60, seed=1)


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory, synth_data) -> Path:
    """A folder with ``mdn/`` (the small MDN model, batch 16, 3 epochs) and ``baseline/`` (1 epoch) on ``synth_data``.

    Tests that change a run copy it first.
    """
    from tests.helpers import SMALL_BASELINE, ok, write_spec

    folder = tmp_path_factory.mktemp("runs")
    ok("train", write_spec(synth_data, "session-mdn.yaml", train={"batch_size": 16}), "-o", folder / "mdn", "-q")
    ok("train", write_spec(synth_data, "session-baseline.yaml", layers=SMALL_BASELINE, epochs=1), "-o", folder / "baseline", "-q")
    return folder


@pytest.fixture(scope="session")
def crossval_runs(tmp_path_factory) -> Path:
    """A folder of its own `mdn synth` data (per_group 60, seed 1), ``spec.yaml`` (the small MDN model,
    1 epoch) and ``cv/``: the spec's 3-fold cross-validation (``mdn train --folds 3``).

    Tests that change the cross-validation copy it first.
    """
    from tests.helpers import make_small_data, ok, write_spec

    folder = make_small_data(tmp_path_factory.mktemp("crossval"))
    spec = write_spec(folder, epochs=1)
    ok("train", spec, "-o", folder / "cv", "--folds", 3, "-q")
    return folder
