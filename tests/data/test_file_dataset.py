"""file_dataset: FileSamples, the up-front checks, and a loader whose batches do not depend on its workers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mdn_cli.data.file_dataset import FileSamples, MissingFilesError, SampleShapeError, SampleTransformError, check_files, check_shapes, default_num_workers, loader
from mdn_cli.data.readers import SampleReadError, read_sample
from mdn_cli.data.transforms import Compose, parse_steps

AUGMENT = [{"flip": {"axes": [0, 1]}}, {"random_crop": {"size": 8, "padding": 2}}]


def write_pngs(folder: Path, rng: np.random.Generator, n: int, shape=(8, 8)) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i in range(n):
        paths.append(folder / f"{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(paths[-1])
    return paths


@pytest.fixture
def study(tmp_path: Path, rng: np.random.Generator) -> tuple[list[Path], list[str]]:
    paths = write_pngs(tmp_path, rng, 12)
    return paths, [f"s{i}" for i in range(12)]


def test_items_are_rows_and_read_samples(study):
    paths, ids = study
    samples = FileSamples(paths, ids, transform=Compose(parse_steps([{"center_crop": {"size": 6}}])))
    row, x = samples[3]
    assert row == 3 and torch.equal(x, read_sample(paths[3])[:, 1:7, 1:7])
    assert len(samples) == 12


def test_augment_only_while_training(study):
    paths, ids = study
    samples = FileSamples(paths, ids, augment=Compose(parse_steps([{"flip": {"axes": [1], "p": 1}}])), seed=5)
    assert torch.equal(samples[0][1], read_sample(paths[0]))
    samples.training = True
    assert torch.equal(samples[0][1], torch.flip(read_sample(paths[0]), [2]))


def test_decode_failure_names_row_id_and_path(study):
    paths, ids = study
    paths[4].write_bytes(paths[4].read_bytes()[:40])
    with pytest.raises(SampleReadError) as info:
        FileSamples(paths, ids)[4]
    assert (info.value.row_id, info.value.path) == ("s4", str(paths[4]))
    assert str(info.value).startswith(f"row id s4, {paths[4]}: cannot be read as an image")


def test_transform_failure_says_which_list_and_step(study):
    paths, ids = study
    samples = FileSamples(paths, ids, transform=Compose(parse_steps([{"zscore": None}, {"center_crop": {"size": 9}}])))
    with pytest.raises(SampleTransformError) as info:
        samples[2]
    assert (info.value.transforms, info.value.step, info.value.row_id) == ("transform", 1, "s2") and "pad_or_crop" in info.value.hint


def test_check_files_lists_every_missing_file(study):
    paths, ids = study
    check_files(paths, ids)
    for i in range(12):
        paths[i].unlink()
    with pytest.raises(MissingFilesError) as info:
        check_files(paths, ids, limit=3)
    assert info.value.missing == [(f"s{i}", str(paths[i])) for i in range(12)]
    message = str(info.value)
    assert "12 of 12 sample files do not exist" in message and "row id s2" in message and "row id s3" not in message and "and 9 more" in message


def test_check_shapes_names_the_rows_and_a_fix(tmp_path: Path, rng: np.random.Generator):
    paths = write_pngs(tmp_path, rng, 4) + write_pngs(tmp_path / "big", rng, 2, shape=(10, 12))
    ids = list("abcdef")
    splits = {"train": [0, 1, 2], "val": [4, 5], "test": [3]}
    with pytest.raises(SampleShapeError) as info:
        check_shapes(FileSamples(paths, ids), splits)
    assert [shape for _, _, shape in info.value.shapes] == [(1, 8, 8), (1, 10, 12), (1, 8, 8)]
    assert "val row id e" in str(info.value) and "resize: {size: [8, 8]}" in info.value.hint and "pad_or_crop: {shape: [8, 8]}" in info.value.hint
    fixed = FileSamples(paths, ids, transform=Compose(parse_steps([{"pad_or_crop": {"shape": [8, 8]}}])))
    assert check_shapes(fixed, splits) == (1, 8, 8) == fixed.expected_shape


def test_later_mismatch_fails_at_load_with_its_row_id(tmp_path: Path, rng: np.random.Generator):
    paths = write_pngs(tmp_path, rng, 5)
    Image.fromarray(rng.integers(0, 256, (8, 9), dtype=np.uint8)).save(paths[3])
    samples = FileSamples(paths, list("abcde"))
    check_shapes(samples, {"train": [0, 1, 2, 3, 4]})
    with pytest.raises(SampleShapeError) as info:
        list(loader(samples, [0, 1, 2, 3, 4], batch_size=2))
    assert info.value.row_id == "d" and "(1, 8, 9)" in str(info.value) and "(1, 8, 8)" in str(info.value)


def test_unchecked_mismatch_in_a_batch_is_named_too(tmp_path: Path, rng: np.random.Generator):
    paths = write_pngs(tmp_path, rng, 3)
    Image.fromarray(rng.integers(0, 256, (8, 9), dtype=np.uint8)).save(paths[2])
    with pytest.raises(SampleShapeError, match="row id c") as info:
        list(loader(FileSamples(paths, list("abc")), [0, 1, 2], batch_size=3))
    assert "row id a in the same batch" in str(info.value)


def test_augment_must_keep_the_shape(study):
    paths, ids = study
    samples = FileSamples(paths, ids, augment=Compose(parse_steps([{"random_crop": {"size": 6}}])))
    with pytest.raises(SampleShapeError, match=r"augment changes the sample shape \(1, 8, 8\) to \(1, 6, 6\)"):
        check_shapes(samples, {"train": [0]})


def test_loader_keeps_the_order_and_shuffles_like_training_data(study):
    paths, ids = study
    samples = FileSamples(paths, ids)
    rows = [5, 1, 9, 0, 7]
    batches = list(loader(samples, rows, batch_size=2))
    assert [b[0].tolist() for b in batches] == [[5, 1], [9, 0], [7]]
    assert torch.equal(batches[1][1], torch.stack([read_sample(paths[9]), read_sample(paths[0])]))
    order = np.array(rows)[torch.randperm(5, generator=torch.Generator().manual_seed(11)).numpy()]
    assert torch.cat([b[0] for b in loader(samples, rows, batch_size=2, shuffle_seed=11)]).tolist() == order.tolist()


def test_batches_do_not_depend_on_workers_and_epochs_differ(study):
    paths, ids = study

    def passes(num_workers: int) -> list[torch.Tensor]:
        samples = FileSamples(paths, ids, augment=Compose(parse_steps(AUGMENT)), seed=3, training=True)
        batches = loader(samples, range(12), batch_size=4, num_workers=num_workers, persistent_workers=True)
        out = []
        for epoch in (1, 2):
            samples.set_epoch(epoch)  # after the workers started: reaches them through the sampler
            out.append(torch.cat([x for _, x in batches]))
        return out

    serial, workers = passes(0), passes(2)
    assert all(torch.equal(a, b) for a, b in zip(serial, workers))
    assert not torch.equal(serial[0], serial[1])


def test_worker_errors_keep_row_id_and_path(study):
    paths, ids = study
    paths[6].write_bytes(b"not a png")
    with pytest.raises(SampleReadError) as info:
        list(loader(FileSamples(paths, ids), range(12), batch_size=4, num_workers=1))
    assert (info.value.row_id, info.value.path) == ("s6", str(paths[6]))


def test_default_num_workers_leaves_a_core():
    assert 0 <= default_num_workers() <= 4
