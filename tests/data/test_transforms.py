"""transforms: properties and references written out here (numpy slicing and padding, torch.flip)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdn_cli.data.readers import to_float
from mdn_cli.data.transforms import Compose, TransformApplyError, TransformSpecError, needs_float, output_shape, parse_steps, sample_generator


def compose(*raw) -> Compose:
    return Compose(parse_steps(list(raw)))


@pytest.fixture
def image(rng: np.random.Generator) -> torch.Tensor:
    return torch.from_numpy(rng.normal(size=(2, 7, 8)).astype(np.float32))


@pytest.mark.parametrize("shape, size", [((1, 5, 7), [9, 4]), ((2, 4, 5, 6), [3, 8, 5])])
def test_resize_keeps_a_constant_and_same_size_is_identity(rng: np.random.Generator, shape: tuple, size: list):
    constant = torch.full(shape, 0.3)
    assert torch.allclose(compose({"resize": {"size": size}})(constant), torch.full((shape[0], *size), 0.3))
    x = torch.from_numpy(rng.normal(size=shape).astype(np.float32))
    assert torch.equal(compose({"resize": {"size": list(shape[1:])}})(x), x)


def test_nearest_2x_upsample_repeats_and_keeps_uint8(rng: np.random.Generator):
    x = rng.integers(0, 256, (1, 3, 4, 2), dtype=np.uint8)
    y = compose({"resize": {"size": [6, 8, 4], "mode": "nearest"}})(torch.from_numpy(x))
    assert y.dtype == torch.uint8
    assert np.array_equal(y.numpy(), x.repeat(2, axis=1).repeat(2, axis=2).repeat(2, axis=3))
    assert compose({"resize": {"size": 6, "mode": "nearest"}})(torch.zeros(1, 3, 2)).shape == (1, 6, 6)  # an integer is every spatial dim


def test_resize_mode_must_fit_the_dims_and_linear_needs_float():
    with pytest.raises(TransformApplyError, match="bilinear does not apply to 3 spatial dims") as info:
        compose({"resize": {"size": 4, "mode": "bilinear"}})(torch.zeros(1, 2, 2, 2))
    assert info.value.step == 0 and "trilinear" in info.value.hint
    with pytest.raises(TransformApplyError, match="needs a float tensor"):
        compose({"resize": {"size": 4}})(torch.zeros(1, 2, 2, dtype=torch.uint8))


def test_sizes_must_match_the_spatial_dims():
    with pytest.raises(TransformApplyError, match=r"size \[4, 4\] has 2 values but the input \(1, 5, 5, 5\) has 3 spatial dims"):
        compose({"center_crop": {"size": [4, 4]}})(torch.zeros(1, 5, 5, 5))


def test_center_crop_is_torchvisions_window(image: torch.Tensor):
    # torchvision: top = int(round((7 - 4) / 2)) = 2, left = int(round((8 - 4) / 2)) = 2
    assert torch.equal(compose({"center_crop": {"size": 4}})(image), image[:, 2:6, 2:6])
    assert torch.equal(compose({"center_crop": {"size": [5, 2]}})(image), image[:, 1:6, 3:5])


def test_center_crop_larger_than_input_is_refused(image: torch.Tensor):
    with pytest.raises(TransformApplyError, match=r"larger than the input \(2, 7, 8\)") as info:
        compose({"zscore": None}, {"center_crop": {"size": [8, 8]}})(image)
    assert info.value.step == 1 and "pad_or_crop" in info.value.hint


def test_pad_or_crop_against_numpy(rng: np.random.Generator):
    x = rng.normal(size=(1, 5, 8)).astype(np.float32)
    # axis H: 5 -> 8 pads 1 before, 2 after; axis W: 8 -> 4 crops from 8 // 2 - 4 // 2 = 2
    expected = np.pad(x, ((0, 0), (1, 2), (0, 0)))[:, :, 2:6]
    assert np.array_equal(compose({"pad_or_crop": {"shape": [8, 4]}})(torch.from_numpy(x)).numpy(), expected)
    v = rng.normal(size=(2, 7, 4, 6)).astype(np.float32)
    # 7 -> 4 crops from 3 - 2 = 1; 4 -> 7 pads 1 and 2; 6 stays
    expected = np.pad(v[:, 1:5], ((0, 0), (0, 0), (1, 2), (0, 0)))
    assert np.array_equal(compose({"pad_or_crop": {"shape": [4, 7, 6]}})(torch.from_numpy(v)).numpy(), expected)


def test_flip_p1_is_torch_flip_and_p0_identity(image: torch.Tensor):
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(compose({"flip": {"axes": [0, 1], "p": 1}})(image, gen), torch.flip(image, [1, 2]))
    assert torch.equal(compose({"flip": {"axes": [1], "p": 1}})(image, gen), torch.flip(image, [2]))
    assert torch.equal(compose({"flip": {"axes": [0, 1], "p": 0}})(image, gen), image)


def test_flip_draws_each_axis_independently(image: torch.Tensor):
    flip = compose({"flip": {"axes": [0, 1], "p": 0.5}})
    seen = set()
    for row in range(40):
        out = flip(image, sample_generator(0, 0, row))
        seen.add(next(axes for axes in ((), (1,), (2,), (1, 2)) if torch.equal(out, torch.flip(image, axes) if axes else image)))
    assert seen == {(), (1,), (2,), (1, 2)}


def test_normalize_is_x_minus_mean_over_std(image: torch.Tensor):
    out = compose({"normalize": {"mean": [0.5, -1.0], "std": [2.0, 0.25]}})(image)
    expected = (image.numpy() - np.array([0.5, -1.0])[:, None, None]) / np.array([2.0, 0.25])[:, None, None]
    assert np.allclose(out.numpy(), expected, atol=1e-6)
    assert torch.allclose(compose({"normalize": {"mean": 0.5, "std": 2}})(image), (image - 0.5) / 2)
    with pytest.raises(TransformApplyError, match="mean has 3 values but the input .* has 2 channels"):
        compose({"normalize": {"mean": [0, 0, 0], "std": 1}})(image)


def test_zscore_whole_sample_and_channel_wise(image: torch.Tensor):
    x = image.numpy().astype(np.float64)
    out = compose({"zscore": None})(image).numpy()
    assert np.allclose(out, (x - x.mean()) / x.std(), atol=1e-5)
    out = compose({"zscore": {"channel_wise": True}})(image).numpy()
    for c in range(2):
        assert np.allclose(out[c], (x[c] - x[c].mean()) / x[c].std(), atol=1e-5)


def test_zscore_nonzero_leaves_zeros(rng: np.random.Generator):
    x = rng.normal(3.0, 2.0, size=(1, 6, 6, 6)).astype(np.float32)
    x[:, :2] = 0
    out = compose({"zscore": {"nonzero": True}})(torch.from_numpy(x)).numpy().astype(np.float64)
    assert np.all(out[:, :2] == 0)
    inside = out[x != 0]
    assert abs(inside.mean()) < 1e-5 and abs(inside.std() - 1) < 1e-5
    assert torch.equal(compose({"zscore": {"nonzero": True}})(torch.zeros(1, 3, 3)), torch.zeros(1, 3, 3))
    assert torch.equal(compose({"zscore": None})(torch.full((1, 3, 3), 4.0)), torch.zeros(1, 3, 3))  # std 0: mean only


def test_scale_intensity(image: torch.Tensor):
    out = compose({"scale_intensity": {"min": -1, "max": 2}})(image)
    assert out.min().item() == pytest.approx(-1) and out.max().item() == pytest.approx(2)
    x = image.numpy()
    assert np.allclose(out.numpy(), (x - x.min()) / (x.max() - x.min()) * 3 - 1, atol=1e-6)
    assert torch.equal(compose({"scale_intensity": {"min": 0.25}})(torch.full((1, 2, 2), 7.0)), torch.full((1, 2, 2), 0.25))


def test_random_crop_is_a_window_of_the_padded_input(image: torch.Tensor):
    crop = compose({"random_crop": {"size": [6, 5], "padding": 2}})
    padded = np.pad(image.numpy(), ((0, 0), (2, 2), (2, 2)))
    offsets = set()
    for row in range(30):
        out = crop(image, sample_generator(1, 0, row)).numpy()
        assert out.shape == (2, 6, 5)
        found = [(i, j) for i in range(padded.shape[1] - 5) for j in range(padded.shape[2] - 4) if np.array_equal(padded[:, i : i + 6, j : j + 5], out)]
        assert found
        offsets.add(found[0])
    assert len(offsets) > 10
    assert torch.equal(crop(image, sample_generator(1, 0, 3)), crop(image, sample_generator(1, 0, 3)))


def test_sample_generator_depends_only_on_its_three_integers():
    def draws(seed, epoch, row):
        return torch.rand(4, generator=sample_generator(seed, epoch, row))

    assert torch.equal(draws(3, 1, 7), draws(3, 1, 7))
    others = [draws(4, 1, 7), draws(3, 2, 7), draws(3, 1, 8), draws(7, 1, 3)]
    assert not any(torch.equal(draws(3, 1, 7), other) for other in others)


def test_random_steps_need_a_generator(image: torch.Tensor):
    flip = compose({"flip": {"axes": [0]}})
    assert flip.is_random and not compose({"zscore": None}).is_random
    with pytest.raises(ValueError, match="need a generator"):
        flip(image)
    assert torch.equal(compose({"center_crop": {"size": 3}})(image, torch.Generator()), image[:, 2:5, 2:5])


def test_parse_steps_reports_every_problem_with_key_paths():
    raw = [
        {"resise": {"size": 4}},
        {"resize": {"size": [64, -1]}},
        {"flip": {"axes": [0], "p": 1.5, "prob": 0.2}},
        {"normalize": {"mean": [0.5, 0.5], "std": [0.2, 0.0]}},
        {"center_crop": {"size": 8}, "zscore": {}},
        {"random_crop": {}},
        {"pad_or_crop": {"shape": [8, 8, 8]}},
        {"resize": {"size": [4, 4]}},
    ]
    with pytest.raises(TransformSpecError) as info:
        parse_steps(raw)
    problems = {path: (message, hint) for path, message, hint in info.value.problems}
    assert set(problems) == {
        (0, "resise"),
        (1, "resize", "size"),
        (2, "flip", "p"),
        (2, "flip", "prob"),
        (3, "normalize", "std"),
        (4,),
        (5, "random_crop", "size"),
        (7, "resize", "size"),
    }
    assert problems[(0, "resise")][1] == "did you mean `resize`?"
    assert "e.g." in problems[(1, "resize", "size")][1]
    assert problems[(2, "flip", "prob")][0] == "unknown option."
    assert "step 6 (pad_or_crop) has 3" in problems[(7, "resize", "size")][0]
    assert [path[0] for path, _, _ in info.value.problems] == sorted(path[0] for path, _, _ in info.value.problems)
    assert "[1].resize.size: must be" in str(info.value)


def test_parse_steps_forms_and_wrong_types():
    assert parse_steps(None) == []
    assert [step.name for step in parse_steps(["zscore", {"zscore": None}, {"flip": {"axes": [1]}}])] == ["zscore", "zscore", "flip"]
    for raw, path in [({"resize": {}}, ()), ([{"zscore": {"nonzero": "yes"}}], (0, "zscore", "nonzero")), ([{"flip": {"axes": [1, 1]}}], (0, "flip", "axes")), ([{"random_crop": {"size": 4, "padding": True}}], (0, "random_crop", "padding")), ([{"resize": {"size": 2.5}}], (0, "resize", "size")), ([{"scale_intensity": {"min": 1, "max": 1}}], (0, "scale_intensity", "max")), ([{"zscore": 3}], (0, "zscore"))]:
        with pytest.raises(TransformSpecError) as info:
            parse_steps(raw)
        assert [p for p, _, _ in info.value.problems] == [path], raw


def test_output_shape_follows_the_steps():
    steps = parse_steps([{"resize": {"size": [64, 60]}}, {"center_crop": {"size": 56}}, {"random_crop": {"size": 48, "padding": 4}}, {"flip": {"axes": [0, 1]}}, {"zscore": None}])
    assert output_shape(steps, (3, 100, 80)) == (3, 48, 48)
    assert output_shape(parse_steps([{"pad_or_crop": {"shape": [4, 9, 2]}}]), (1, 5, 5, 5)) == (1, 4, 9, 2)
    with pytest.raises(TransformApplyError, match="larger than the input") as info:
        output_shape(parse_steps([{"resize": {"size": 30}}, {"center_crop": {"size": 32}}]), (1, 64, 64))
    assert info.value.step == 1


def test_needs_float_is_exact_for_value_keeping_steps(rng: np.random.Generator):
    assert not needs_float([])
    keeping = parse_steps([{"pad_or_crop": {"shape": [9, 6]}}, {"random_crop": {"size": 5, "padding": 1}}, {"flip": {"axes": [0, 1]}}, {"center_crop": {"size": 4}}, {"resize": {"size": 8, "mode": "nearest"}}])
    assert not needs_float(keeping)
    x = rng.integers(0, 256, (1, 7, 8), dtype=np.uint8)
    steps = Compose(keeping)
    late = to_float(steps(torch.from_numpy(x), sample_generator(0, 0, 0)).numpy())
    assert torch.equal(late, steps(to_float(x), sample_generator(0, 0, 0)))
    for raw in ({"resize": {"size": 8}}, {"zscore": None}, {"normalize": {"mean": 0, "std": 1}}, {"scale_intensity": None}):
        assert needs_float(parse_steps([{"flip": {"axes": [0]}}, raw]))
