"""readers: each format against arrays written by Pillow, nibabel and numpy themselves."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mdn_cli.data.readers import SUPPORTED_EXTENSIONS, SampleReadError, extension_of, read_raw, read_sample, to_float, write_image_study


@pytest.mark.parametrize("name", ["a.png", "a.bmp", "a.tif", "a.tiff", "A.PNG"])
def test_8bit_grayscale_round_trip_is_exact(tmp_path: Path, rng: np.random.Generator, name: str):
    pixels = rng.integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / name)
    raw = read_raw(tmp_path / name)
    assert raw.dtype == np.uint8 and np.array_equal(raw, pixels[None])
    assert torch.equal(read_sample(tmp_path / name), torch.from_numpy(pixels[None]).float() / 255)


@pytest.mark.parametrize("name", ["a.png", "a.tif"])
def test_16bit_round_trip_keeps_uint16(tmp_path: Path, rng: np.random.Generator, name: str):
    pixels = rng.integers(0, 65536, (4, 6), dtype=np.uint16)
    Image.fromarray(pixels).save(tmp_path / name)
    raw = read_raw(tmp_path / name)
    assert raw.dtype == np.uint16 and np.array_equal(raw, pixels[None])
    assert torch.equal(read_sample(tmp_path / name), torch.from_numpy(pixels[None].astype(np.float32)) / 65535)


def test_big_endian_16bit_tiff(tmp_path: Path, rng: np.random.Generator):
    pixels = rng.integers(0, 65536, (3, 5), dtype=np.uint16)
    Image.frombytes("I;16B", (5, 3), pixels.astype(">u2").tobytes()).save(tmp_path / "b.tif")
    raw = read_raw(tmp_path / "b.tif")
    assert raw.dtype == np.dtype(np.uint16) and raw.dtype.isnative and np.array_equal(raw, pixels[None])


def test_rgb_channels_first_and_conversions(tmp_path: Path, rng: np.random.Generator):
    rgb = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert np.array_equal(read_raw(tmp_path / "c.png"), rgb.transpose(2, 0, 1))
    luminance = np.array(Image.fromarray(rgb).convert("L"))
    assert np.array_equal(read_raw(tmp_path / "c.png", channels=1), luminance[None])
    grey = rng.integers(0, 256, (4, 5), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    assert np.array_equal(read_raw(tmp_path / "g.png", channels=3), np.stack([grey] * 3))


def test_alpha_dropped_and_palette_to_rgb(tmp_path: Path, rng: np.random.Generator):
    rgba = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.array_equal(read_raw(tmp_path / "a.png"), rgba[..., :3].transpose(2, 0, 1))
    la = rng.integers(0, 256, (3, 4, 2), dtype=np.uint8)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    assert np.array_equal(read_raw(tmp_path / "la.png"), la[None, ..., 0])
    palette = Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).convert("P")
    palette.save(tmp_path / "p.png")
    assert np.array_equal(read_raw(tmp_path / "p.png"), np.array(palette.convert("RGB")).transpose(2, 0, 1))


def test_jpeg_as_pillow_decodes_it(tmp_path: Path, rng: np.random.Generator):
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "j.jpg")
    assert np.array_equal(read_raw(tmp_path / "j.jpg"), np.array(Image.open(tmp_path / "j.jpg")).transpose(2, 0, 1))


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_nifti_3d_and_4d(tmp_path: Path, rng: np.random.Generator, name: str):
    volume = rng.normal(size=(4, 5, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / name)
    raw = read_raw(tmp_path / name)
    assert raw.dtype == np.float32 and np.array_equal(raw, volume[None])
    channels_last = rng.normal(size=(4, 5, 6, 2)).astype(np.float32)
    nib.save(nib.Nifti1Image(channels_last, np.eye(4)), tmp_path / f"c{name}")
    assert np.array_equal(read_raw(tmp_path / f"c{name}"), np.moveaxis(channels_last, 3, 0))


def test_nifti_scaling_gives_float32(tmp_path: Path):
    stored = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    image = nib.Nifti1Image(stored, np.eye(4))
    image.header.set_slope_inter(0.5, 1.0)
    nib.save(image, tmp_path / "s.nii")
    raw = read_raw(tmp_path / "s.nii")
    assert raw.dtype == np.float32 and np.array_equal(raw, (stored * 0.5 + 1.0)[None].astype(np.float32))
    nib.save(nib.Nifti1Image(stored, np.eye(4)), tmp_path / "i.nii")
    assert read_raw(tmp_path / "i.nii").dtype == np.int16


def nifti_variants(folder: Path, rng: np.random.Generator) -> dict[str, Path]:
    """Files as scanners and tools write them, each saved by nibabel: NIfTI-1 and -2, both byte orders, header
    extensions, scaled integers, and gzip streams of several members (bgzip, ``cat a.gz b.gz``)."""
    volume = rng.normal(size=(6, 5, 4)).astype(np.float32)
    images = {
        "nifti1.nii.gz": nib.Nifti1Image(volume, np.eye(4)),
        "nifti2.nii.gz": nib.Nifti2Image(volume, np.eye(4)),
        "nifti2.nii": nib.Nifti2Image(volume.astype(np.float64), np.eye(4)),
        "big_endian.nii.gz": nib.Nifti1Image(volume, np.eye(4), nib.Nifti1Header(endianness=">")),
        "scaled.nii.gz": nib.Nifti1Image(rng.integers(0, 1000, (6, 5, 4)).astype(np.int16), np.eye(4)),
        "extension.nii.gz": nib.Nifti1Image(volume, np.eye(4)),
        "channels.nii.gz": nib.Nifti1Image(rng.normal(size=(6, 5, 4, 3)).astype(np.float32), np.eye(4)),
    }
    images["scaled.nii.gz"].header.set_slope_inter(0.25, -3.0)
    images["extension.nii.gz"].header.extensions.append(nib.nifti1.Nifti1Extension("comment", b"scanner notes " * 40))
    for name, image in images.items():
        nib.save(image, folder / name)
    members = folder / "members.nii.gz"
    whole = gzip.decompress((folder / "nifti1.nii.gz").read_bytes())
    members.write_bytes(b"".join(gzip.compress(whole[start : start + 1000]) for start in range(0, len(whole), 1000)))
    return {path.name: path for path in [*(folder / name for name in images), members]}


def test_nifti_variants_read_as_nibabel_reads_them(tmp_path: Path, rng: np.random.Generator):
    for name, path in nifti_variants(tmp_path, rng).items():
        expected = np.asanyarray(nib.load(path).dataobj)
        expected = expected[None] if expected.ndim == 3 else np.moveaxis(expected, 3, 0)
        raw = read_raw(path)
        assert raw.dtype.isnative and raw.flags.writeable and raw.flags.c_contiguous, name
        assert np.array_equal(raw, expected.astype(raw.dtype)), name
        assert raw.dtype == (np.float32 if name == "scaled.nii.gz" else expected.dtype.newbyteorder("=")), name


def test_damaged_nifti_is_named(tmp_path: Path, rng: np.random.Generator):
    good = nifti_variants(tmp_path, rng)["nifti1.nii.gz"].read_bytes()
    damaged = {
        "truncated.nii.gz": gzip.compress(gzip.decompress(good)[:-100]),  # data cut short
        "cut_stream.nii.gz": good[: len(good) // 2],  # the gzip stream itself cut short
        "not_gzip.nii.gz": gzip.decompress(good),
        "not_nifti.nii": b"\0" * 600,
        "empty.nii.gz": b"",
    }
    for name, content in damaged.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SampleReadError, match="cannot be read as NIfTI") as info:
            read_raw(tmp_path / name)
        assert info.value.path == str(tmp_path / name), name


@pytest.mark.parametrize("shape, found", [((4, 5), "2D"), ((2, 3, 4, 1, 2), "5D")])
def test_nifti_other_dims_refused(tmp_path: Path, shape: tuple, found: str):
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), tmp_path / "x.nii")
    with pytest.raises(SampleReadError, match=f"{found} NIfTI.*expected a 3D volume") as info:
        read_raw(tmp_path / "x.nii")
    assert info.value.path == str(tmp_path / "x.nii")


def test_npy_as_stored_and_pickles_refused(tmp_path: Path):
    array = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    np.save(tmp_path / "a.npy", array)
    raw = read_raw(tmp_path / "a.npy")
    assert raw.dtype == np.float64 and np.array_equal(raw, array)
    np.save(tmp_path / "big.npy", array.astype(">f4"))
    assert torch.equal(read_sample(tmp_path / "big.npy"), torch.from_numpy(array.astype(np.float32)))
    np.save(tmp_path / "o.npy", np.array([1, "a", None], dtype=object), allow_pickle=True)
    with pytest.raises(SampleReadError, match="allow_pickle") as info:
        read_raw(tmp_path / "o.npy")
    assert info.value.path == str(tmp_path / "o.npy")


@pytest.mark.parametrize("name", ["t.png", "t.nii.gz", "t.npy"])
def test_truncated_files_name_the_path(tmp_path: Path, name: str):
    whole = tmp_path / f"whole{name}"
    if name.endswith(".png"):
        Image.fromarray(np.zeros((32, 32), np.uint8) + np.arange(32, dtype=np.uint8)).save(whole)
    elif name.endswith(".nii.gz"):
        nib.save(nib.Nifti1Image(np.random.default_rng(0).normal(size=(8, 8, 8)).astype(np.float32), np.eye(4)), whole)
    else:
        np.save(whole, np.zeros((3, 8, 8)))
    data = whole.read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    with pytest.raises(SampleReadError) as info:
        read_raw(tmp_path / name)
    assert info.value.path == str(tmp_path / name) and str(tmp_path / name) in str(info.value)


def test_unknown_extension_and_missing_file(tmp_path: Path):
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(SampleReadError, match="unsupported file type '.gif'") as info:
        read_raw(tmp_path / "a.gif")
    assert all(ext in info.value.hint for ext in SUPPORTED_EXTENSIONS)
    with pytest.raises(SampleReadError, match="not found"):
        read_raw(tmp_path / "absent.png")


def test_extension_of():
    assert extension_of("a/B.NII.GZ") == ".nii.gz"
    assert extension_of("x.tar.gz") == ".gz"
    assert extension_of("scan.nii") == ".nii"
    assert extension_of("noext") == ""


def test_to_float_of_other_dtypes():
    assert torch.equal(to_float(np.array([True, False])), torch.tensor([1.0, 0.0]))
    assert torch.equal(to_float(np.array([-3, 7], np.int32)), torch.tensor([-3.0, 7.0]))
    assert to_float(np.zeros(2, np.float64)).dtype == torch.float32


def test_error_keeps_its_fields_through_pickle():
    error = SampleReadError("cannot be read.", path="x.png", hint="re-export it.").for_row("007")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.path, copy.row_id, copy.hint, str(copy)) == (error.message, "x.png", "007", "re-export it.", str(error))
    assert str(copy) == "row id 007, x.png: cannot be read. Hint: re-export it."


def test_write_png_study_scales_with_one_global_range(tmp_path: Path, rng: np.random.Generator):
    images = rng.normal(size=(3, 1, 6, 5)).astype(np.float32)
    images[1] *= 3  # a brighter image must stay brighter
    table = pd.DataFrame({"id": ["a", "b", "c"], "label": [0, 1, 0]})
    out = write_image_study(tmp_path, images, table, "png")
    assert list(out["path"]) == ["files/a.png", "files/b.png", "files/c.png"] and "path" not in table
    expected = np.round((images - images.min()) / (images.max() - images.min()) * 255).astype(np.uint8)
    for path, pixels in zip(out["path"], expected):
        assert np.array_equal(read_raw(tmp_path / path), pixels)


def test_write_nifti_study_round_trips_float32(tmp_path: Path, rng: np.random.Generator):
    for channels in (1, 2):
        volumes = rng.normal(size=(2, channels, 4, 3, 5)).astype(np.float32)
        out = write_image_study(tmp_path / str(channels), volumes, pd.DataFrame({"id": [10, 11]}), "nifti")
        for path, volume in zip(out["path"], volumes):
            assert np.array_equal(read_raw(tmp_path / str(channels) / path), volume)
            assert np.array_equal(nib.load(tmp_path / str(channels) / path).affine, np.eye(4))


def test_write_study_refuses_unsafe_ids(tmp_path: Path):
    with pytest.raises(ValueError, match="safe as file names"):
        write_image_study(tmp_path, np.zeros((2, 1, 2, 2)), pd.DataFrame({"id": ["../x", "y"]}), "png")
    with pytest.raises(ValueError, match="distinct"):
        write_image_study(tmp_path, np.zeros((2, 1, 2, 2)), pd.DataFrame({"id": ["y", "y"]}), "png")
