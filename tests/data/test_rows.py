"""Rows providers: HDF5 rows with a divisor read as the file reader does, file batches in order with empty shares kept."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from mdn_cli.data import h5
from mdn_cli.data.file_dataset import FileSamples
from mdn_cli.data.readers import read_sample
from mdn_cli.data.rows import FileProvider, checked_shape
from mdn_cli.data.transforms import Compose


@pytest.mark.parametrize("in_memory", [True, False])
def test_integer_rows_with_a_divisor_equal_the_file_readers_floats(tmp_path, rng, monkeypatch, in_memory):
    pixels = rng.integers(0, 256, (6, 1, 5, 5), dtype=np.uint8)
    paths = []
    for i, image in enumerate(pixels):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image[0]).save(paths[-1])
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("x", data=pixels).attrs["divisor"] = 255
    if not in_memory:
        monkeypatch.setattr(h5, "IN_MEMORY_LIMIT", 0)
    rows = h5.H5Rows(tmp_path / "x.h5", "x")
    assert (rows._memory is not None) == in_memory
    assert torch.equal(torch.from_numpy(rows.take(np.array([4, 2, 4]))), torch.stack([read_sample(paths[i]) for i in (4, 2, 4)]))


@pytest.mark.parametrize("workers", [0, 2])
def test_file_batches_come_in_the_given_order_with_empty_shares_as_empty_tensors(tmp_path, rng, workers):
    paths = []
    for i in range(5):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(paths[-1])
    samples = FileSamples(paths, [f"s{i}" for i in range(5)], transform=Compose(()))
    assert checked_shape(samples, {"all": np.arange(5)}) == (1, 4, 4)
    provider = FileProvider(samples, num_workers=workers)
    batches = [np.array([3, 0]), np.array([], dtype=np.int64), np.array([4])]
    for _ in range(2):  # a second pass through the same (persistent) loader
        out = list(provider.batches(batches))
        assert [tuple(x.shape) for x in out] == [(2, 1, 4, 4), (0, 1, 4, 4), (1, 1, 4, 4)]
        assert torch.equal(out[0], torch.stack([read_sample(paths[3]), read_sample(paths[0])])) and torch.equal(out[2][0], read_sample(paths[4]))
