"""File-based studies end to end: path_column specs, transforms and augment, pack, synth --format, extract/refit/layers, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from mdn_cli.config import load_spec
from mdn_cli.data.synthetic import make_synthetic, make_synthetic_3d
from mdn_cli.utils.errors import MdnError
from tests.helpers import copy_study, epoch_metrics, first_of, mdn, no_leftovers, ok, write_spec

TRANSFORM = [{"normalize": {"mean": 0.2, "std": 0.25}}]
AUGMENT = [{"flip": {"axes": [0, 1]}}, {"random_crop": {"size": 32, "padding": 2}}]


def file_spec(folder: Path, name: str = "spec.yaml", epochs: int = 2, **data) -> Path:
    """``write_spec`` reading the images through the table's path column."""
    return write_spec(folder, name, epochs=epochs, data={"inputs": None, "path_column": "path", "transform": TRANSFORM, "augment": AUGMENT, **data},
                      train={"batch_size": 16, "num_workers": 0})


@pytest.fixture(scope="module")
def png_study(tmp_path_factory) -> Path:
    """60 PNGs of the synthetic set, with meta.csv naming them (what `mdn synth --format png` writes)."""
    folder = tmp_path_factory.mktemp("png")
    ok("synth", folder, "--format", "png", "--per-group", 30, "--seed", 1)
    file_spec(folder)
    return folder


@pytest.fixture(scope="module")
def png_run(png_study: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "png"
    ok("train", png_study / "spec.yaml", "-o", run, "--quiet")
    return run


def test_synth_png_writes_the_images_as_8_bit_files(png_study):
    table = pd.read_csv(png_study / "meta.csv")
    images = make_synthetic(30, 1).images
    low, high = images.min(), images.max()
    first = np.asarray(Image.open(png_study / table["path"][0]))
    assert first.dtype == np.uint8 and first.shape == (32, 32)
    np.testing.assert_allclose(first, np.round((images[0, 0] - low) / (high - low) * 255), atol=1)
    assert (table[["id", "label", "cf", "mf", "split"]] == make_synthetic(30, 1).table).all().all()


@pytest.mark.slow
def test_training_on_packed_files_gives_the_same_numbers(png_study, png_run, tmp_path):
    result = ok("pack", png_study / "spec.yaml", "-o", tmp_path / "packed", "--format", "json")
    assert json.loads(result.stdout)["dtype"] == "float32"  # normalize needs float
    packed = load_spec(tmp_path / "packed" / "spec.yaml")
    assert packed.data.path_column is None and packed.data.transform == [] and packed.data.augment == AUGMENT
    ok("train", tmp_path / "packed" / "spec.yaml", "-o", tmp_path / "run", "--quiet")
    assert epoch_metrics(tmp_path / "run") == epoch_metrics(png_run)
    assert no_leftovers(tmp_path) == []


def test_pack_keeps_uint8_when_transforms_only_move_values(png_study, tmp_path):
    spec = file_spec(tmp_path, transform=[{"center_crop": {"size": 28}}], augment=[])
    study = copy_study(png_study, tmp_path / "study")
    shutil.move(spec, study / "crop.yaml")
    ok("pack", study / "crop.yaml", "-o", tmp_path / "packed", "-q")
    table = pd.read_csv(study / "meta.csv")
    with h5py.File(tmp_path / "packed" / "inputs.h5") as f:
        x, divisor, ids = f["x"][:], f["x"].attrs["divisor"], f["ids"][:].astype(str)
    reference = np.stack([np.asarray(Image.open(study / p))[2:30, 2:30] for p in table["path"]])[:, None]
    assert x.dtype == np.uint8 and divisor == 255 and np.array_equal(x, reference)
    assert list(ids) == [str(i) for i in table["id"]]
    from mdn_cli.data.h5 import H5Rows

    rows = H5Rows(tmp_path / "packed" / "inputs.h5", "x").take(np.array([3, 0]))
    np.testing.assert_array_equal(rows, reference[[3, 0]].astype(np.float32) / np.float32(255))


@pytest.mark.slow
def test_worker_count_does_not_change_the_numbers(png_study, png_run, tmp_path):
    ok("train", png_study / "spec.yaml", "-o", tmp_path / "run", "--quiet", "--set", "train.num_workers=2")
    assert epoch_metrics(tmp_path / "run") == epoch_metrics(png_run)


@pytest.mark.slow
def test_resume_continues_the_augmentation_as_if_never_stopped(png_study, png_run, tmp_path):
    ok("train", png_study / "spec.yaml", "-o", tmp_path / "run", "--quiet", "--set", "train.epochs=1")
    ok("train", png_study / "spec.yaml", "-o", tmp_path / "run", "--quiet", "--resume", "--set", "train.num_workers=1")  # workers may change
    assert epoch_metrics(tmp_path / "run") == epoch_metrics(png_run)


@pytest.mark.slow
def test_augment_changes_training_only(png_study, png_run, tmp_path):
    ok("train", png_study / "spec.yaml", "-o", tmp_path / "run", "--quiet", "--set", "data.augment=[]")
    assert epoch_metrics(tmp_path / "run")[0]["train_loss"] != epoch_metrics(png_run)[0]["train_loss"]


def test_extract_split_and_a_new_table_give_the_same_features(png_study, png_run, tmp_path):
    ok("extract", png_run, "--layer", "fc1", "--split", "val", "-o", tmp_path / "val.h5")
    table = pd.read_csv(png_study / "meta.csv")
    val = table[table["split"] == "val"].copy()
    val["path"] = [str(png_study / p) for p in val["path"]]  # absolute paths stay as they are
    val.to_csv(tmp_path / "new.csv", index=False)
    ok("extract", png_run, "--layer", "fc1", "--table", tmp_path / "new.csv", "-o", tmp_path / "new.h5")
    with h5py.File(tmp_path / "val.h5") as a, h5py.File(tmp_path / "new.h5") as b:
        assert a["features"].shape == (len(val), 16)
        np.testing.assert_array_equal(a["features"][:], b["features"][:])
        assert list(a["ids"][:].astype(str)) == [str(i) for i in val["id"]]


def test_evaluate_a_new_table_equals_evaluating_its_split(png_study, png_run, tmp_path):
    """`mdn evaluate RUN --table new.csv` on a run that reads files: the val rows as new data give the val split's numbers."""
    table = pd.read_csv(png_study / "meta.csv")
    val = table[table["split"] == "val"].copy()
    val["path"] = [str(png_study / p) for p in val["path"]]
    val.to_csv(tmp_path / "new.csv", index=False)
    on_split = json.loads(ok("evaluate", png_run, "--split", "val", "--format", "json").stdout)
    on_table = json.loads(ok("evaluate", png_run, "--table", tmp_path / "new.csv", "--format", "json").stdout)
    assert on_table["n"] == on_split["n"] == len(val)
    assert on_table["overall"] == pytest.approx(on_split["overall"], rel=1e-6)


def test_new_data_without_rows_is_an_input_error(png_study, png_run, trained_runs, tmp_path):
    pd.read_csv(png_study / "meta.csv").iloc[:0].to_csv(tmp_path / "empty.csv", index=False)
    for command in ("extract", "evaluate"):
        result = mdn(command, png_run, *(["--layer", "fc1", "-o", tmp_path / "f.h5"] if command == "extract" else []), "--table", tmp_path / "empty.csv")
        assert result.returncode == 2 and "no rows" in result.stderr and "Traceback" not in result.stderr, result.stderr
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f.create_dataset("x", shape=(0, 1, 32, 32), dtype="float32")
        f.create_dataset("ids", shape=(0,), dtype="int64")
    result = mdn("extract", trained_runs / "mdn", "--layer", "fc1", "--inputs", tmp_path / "empty.h5", "--table", tmp_path / "empty.csv", "-o", tmp_path / "f.h5")
    assert result.returncode == 2 and "no rows" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "f.h5").exists()


def test_extract_inputs_is_refused_for_a_run_that_reads_files(png_run, tmp_path):
    result = mdn("extract", png_run, "--layer", "fc1", "--inputs", tmp_path / "x.h5", "--table", tmp_path / "t.csv", "-o", tmp_path / "f.h5")
    assert result.returncode == 2 and "--table" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "f.h5").exists()


def test_refit_and_layers_work_on_a_file_run(png_study, png_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(png_run, run)
    refit = ok("refit", run, "--format", "json")
    assert (run / "checkpoints" / "best-refit.pt").is_file() and "after" in refit.stdout
    layers = json.loads(ok("layers", png_study / "spec.yaml", "--format", "json").stdout)
    assert {row["name"]: row["output_shape"] for row in layers}["conv1"] == [4, 14, 14]


def test_transforms_apply_to_hdf5_inputs_too(tmp_path):
    from mdn_cli.data.h5 import H5Rows
    from mdn_cli.data.rows import H5Provider
    from mdn_cli.data.transforms import Compose

    images = np.random.default_rng(0).random((5, 1, 12, 12), dtype=np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["x"] = images
    provider = H5Provider(H5Rows(tmp_path / "x.h5", "x"), Compose.from_spec([{"center_crop": {"size": 8}}]), Compose.from_spec([{"flip": {"axes": [1], "p": 1.0}}]), seed=0)
    assert provider.sample_shape == (1, 8, 8)
    assert torch.equal(provider.take(np.array([4, 1])), torch.from_numpy(images[[4, 1], :, 2:10, 2:10]))
    assert torch.equal(provider.take(np.array([4, 1]), epoch=1), torch.from_numpy(images[[4, 1], :, 2:10, 2:10][..., ::-1].copy()))


@pytest.mark.slow
def test_synth_nifti_volumes_carry_the_factors_in_octants(tmp_path):
    ok("synth", tmp_path, "--format", "nifti", "--per-group", 4)
    table = pd.read_csv(tmp_path / "meta.csv")
    volume = np.asarray(nib.load(tmp_path / table["path"][0]).dataobj)
    assert volume.shape == (32, 32, 32)
    np.testing.assert_array_equal(volume, make_synthetic_3d(4).images[0, 0])
    octant = lambda a, b, c: volume[a * 16 : (a + 1) * 16, b * 16 : (b + 1) * 16, c * 16 : (c + 1) * 16].mean()
    mf, cf = table["mf"][0], table["cf"][0]
    np.testing.assert_allclose(octant(0, 0, 0) / octant(1, 1, 1), 1.0, rtol=0.02)
    np.testing.assert_allclose(octant(1, 0, 0) / octant(0, 0, 0), cf / mf, rtol=0.02)
    assert abs(octant(0, 1, 1)) < 0.01 * octant(0, 0, 0)
    layers = [{"type": "flatten"}, {"type": "linear", "out_features": 8, "name": "fc1"}, {"type": "mdn"}, {"type": "relu"}, {"type": "linear", "out_features": 1}]
    spec = file_spec(tmp_path, transform=[{"resize": {"size": [8, 8, 8]}}], augment=[{"flip": {"axes": [2]}}])
    text = yaml.safe_load(spec.read_text())
    text["model"]["layers"] = layers
    spec.write_text(yaml.safe_dump(text))
    ok("train", spec, "-o", tmp_path / "run", "--quiet")
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["last"]["epoch"] == 2


# -- bad input: exit 2, one paragraph naming the row, file or key, a hint, nothing written ----------
def refused(spec: Path, tmp_path: Path, *expected: str) -> str:
    result = mdn("train", spec, "-o", tmp_path / "run", "--quiet")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Hint:" in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()
    return result.stderr


def test_missing_files_are_listed_with_their_row_ids(png_study, tmp_path):
    study = copy_study(png_study, tmp_path / "study")
    table = pd.read_csv(study / "meta.csv")
    for row in (5, 40):
        (study / table["path"][row]).unlink()
    refused(study / "spec.yaml", tmp_path, "2 of 60 sample files do not exist", f"row id {table['id'][5]}", f"row id {table['id'][40]}")
    assert mdn("validate", study / "spec.yaml").returncode == 2


def test_a_corrupt_image_names_its_row_and_file(png_study, tmp_path):
    study = copy_study(png_study, tmp_path / "study")
    table = pd.read_csv(study / "meta.csv")
    row = first_of(table, "val")
    (study / table["path"][row]).write_bytes(b"\x89PNG\r\n\x1a\n not really")
    refused(study / "spec.yaml", tmp_path, f"row id {table['id'][row]}", table["path"][row], "cannot be read as an image")


@pytest.mark.slow
def test_a_file_that_fails_later_stops_training_and_keeps_the_last_epoch(png_study, tmp_path):
    from mdn_cli.train.loop import train

    study = copy_study(png_study, tmp_path / "study")
    table = pd.read_csv(study / "meta.csv")
    row = int(np.flatnonzero(table["split"] == "train")[3])  # not the first of its split: not decoded by the checks

    def corrupt_after_epoch_1(event, **fields):
        if event == "epoch_end" and fields["metrics"]["epoch"] == 1:
            (study / table["path"][row]).write_bytes(b"garbage")

    with pytest.raises(MdnError) as error:
        train(load_spec(study / "spec.yaml"), tmp_path / "run", progress=corrupt_after_epoch_1)
    assert f"row id {table['id'][row]}" in error.value.render() and table["path"][row] in error.value.render()
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


def test_an_unknown_extension_is_refused(png_study, tmp_path):
    study = copy_study(png_study, tmp_path / "study")
    table = pd.read_csv(study / "meta.csv")
    (study / "files" / "odd.gif").write_bytes(b"GIF89a")
    table.loc[7, "path"] = "files/odd.gif"
    table.to_csv(study / "meta.csv", index=False)
    refused(study / "spec.yaml", tmp_path, f"row id {table['id'][7]}", "odd.gif", "supported extensions")


def test_shapes_that_differ_without_a_transform_name_the_rows_and_the_fix(png_study, tmp_path):
    study = copy_study(png_study, tmp_path / "study")
    table = pd.read_csv(study / "meta.csv")
    row = first_of(table, "val")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(study / table["path"][row])
    spec = file_spec(study, transform=[], augment=[])
    refused(spec, tmp_path, f"row id {table['id'][row]}", "(1, 28, 28)", "resize")


def test_a_2d_nifti_is_refused_where_a_volume_is_needed(png_study, tmp_path):
    study = copy_study(png_study, tmp_path / "study")
    table = pd.read_csv(study / "meta.csv")
    nib.save(nib.Nifti1Image(np.zeros((32, 32), np.float32), np.eye(4)), str(study / "files" / "flat.nii.gz"))
    table.loc[0, "path"] = "files/flat.nii.gz"
    table.to_csv(study / "meta.csv", index=False)
    refused(study / "spec.yaml", tmp_path, f"row id {table['id'][0]}", "flat.nii.gz", "2D NIfTI")


def test_path_column_and_inputs_together_are_a_spec_error(png_study, tmp_path):
    spec = file_spec(png_study, name="both.yaml", inputs="images.h5")
    result = mdn("validate", spec)
    assert result.returncode == 2 and "data.path_column" in result.stderr and "data.inputs" in result.stderr and "Hint:" in result.stderr


@pytest.mark.parametrize("transform, key, text", [
    ([{"resise": {"size": 16}}], "data.transform[0].resise", "did you mean `resize`"),
    ([{"normalize": {"mean": 0, "std": 1}}, {"resize": {"size": 0}}], "data.transform[1].resize.size", "size"),
    ([{"center_crop": {"size": 64}}], "data.transform[0].center_crop", "larger"),
])
def test_bad_transforms_name_their_key_path(png_study, tmp_path, transform, key, text):
    spec = file_spec(png_study, name="bad.yaml", transform=transform)
    stderr = refused(spec, tmp_path, key, text)
    assert stderr.count("\n\n") == 0


@pytest.mark.slow
def test_two_processes_on_files_equal_one_with_the_global_batch(png_study, tmp_path):
    from tests.helpers import run_cli

    runs = {}
    for nproc, batch in ((2, 9), (1, 18)):  # 36 training rows: two steps of 18
        spec = file_spec(tmp_path, f"ddp{nproc}.yaml", epochs=1, table=str(png_study / "meta.csv"))
        text = yaml.safe_load(spec.read_text())
        text["train"].update({"batch_size": batch, "optimizer": "sgd", "lr": 0.05, "device": "cpu"})
        spec.write_text(yaml.safe_dump(text))
        result = run_cli("train", spec, "-o", tmp_path / f"run{nproc}", "--nproc", nproc, "-q", env={"OMP_NUM_THREADS": "1"}, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[nproc] = torch.load(tmp_path / f"run{nproc}" / "checkpoints" / "last.pt", weights_only=True)["model"]
    for key, value in runs[1].items():
        if value.is_floating_point():
            torch.testing.assert_close(runs[2][key], value, atol=1e-5, rtol=0, msg=key)


def test_a_spec_without_inputs_or_path_column_says_which_to_give(png_study):
    spec = yaml.safe_load((png_study / "spec.yaml").read_text())
    del spec["data"]["path_column"]
    (png_study / "neither.yaml").write_text(yaml.safe_dump(spec))
    result = mdn("validate", png_study / "neither.yaml")
    assert result.returncode == 2 and "needs either `inputs` or `path_column`" in result.stderr and "Traceback" not in result.stderr


def test_channels_3_repeats_a_grey_png(png_study):
    from mdn_cli.data.readers import read_sample
    from mdn_cli.data.training import load_training_data

    data = load_training_data(load_spec(png_study / "spec.yaml", ["data.channels=3", "data.transform=[]"]), 0)
    assert data.sample_shape == (3, 32, 32)
    grey = read_sample(data.inputs.samples.paths[0])
    assert torch.equal(data.inputs.take(np.array([0]))[0], grey.expand(3, -1, -1))


def test_pack_of_a_study_with_a_missing_file_writes_nothing(png_study, tmp_path):
    study = copy_study(png_study, tmp_path / "study")
    (study / pd.read_csv(study / "meta.csv")["path"][9]).unlink()
    result = mdn("pack", study / "spec.yaml", "-o", tmp_path / "packed")
    assert result.returncode == 2 and "1 of 60 sample files do not exist" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["study"]
