"""Videos: clip sampling, the PyAV and frame-folder readers, transforms on clips, VideoSamples' seeded clips."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mdn_cli.data.clips import ClipSampler
from mdn_cli.data.file_dataset import VideoSamples
from mdn_cli.data.readers import SampleReadError
from mdn_cli.data.rows import FileProvider
from mdn_cli.data.transforms import Compose, output_shape, sample_generator
from mdn_cli.data.video import frame_files, probe, read_frames, write_video
from tests.helpers import write_audio_only, write_no_frames


def numbered_frames(n: int = 30, size: tuple[int, int] = (24, 32), seed: int = 0) -> np.ndarray:
    """uint8 (3, T, H, W) frames; frame t carries its number in its top-left block, so a misplaced frame shows."""
    rng = np.random.default_rng(seed)
    frames = (rng.random((3, n, *size)) * 200).astype(np.uint8)
    frames[:, :, :8, :8] = (np.arange(n) * 8).astype(np.uint8)[None, :, None, None]
    return frames


def decode_all(path: Path) -> np.ndarray:
    """Every frame in decode order, with PyAV and nothing of ours: the reference (3, T, H, W)."""
    with av.open(str(path)) as container:
        return np.stack([frame.to_ndarray(format="rgb24").transpose(2, 0, 1) for frame in container.decode(video=0)], axis=1)


# -- clip sampling ----------------------------------------------------------------------------
def test_a_clip_takes_every_stride_th_frame_from_its_start():
    clips = ClipSampler(frames=4, stride=3)
    assert clips.span == 10
    np.testing.assert_array_equal(clips.indices(30, 5), [5, 8, 11, 14])
    np.testing.assert_array_equal(clips.indices(10, 0), [0, 3, 6, 9])
    with pytest.raises(ValueError):
        clips.indices(30, 21)  # would end at frame 30


def test_a_video_shorter_than_a_clip_is_played_in_a_loop_from_its_first_frame():
    clips = ClipSampler(frames=5, stride=2)
    assert clips.loops(8) and not clips.loops(9)
    np.testing.assert_array_equal(clips.indices(4, 0), [0, 2, 0, 2, 0])
    np.testing.assert_array_equal(clips.indices(7, 0), [0, 2, 4, 6, 1])
    assert clips.train_start(7, torch.Generator().manual_seed(0)) == 0 and clips.eval_starts(7) == [0]


def test_random_starts_cover_every_start_that_fits_uniformly_and_repeat_per_seed():
    clips = ClipSampler(frames=4, stride=2)  # span 7: starts 0..13 in 20 frames
    starts = [clips.train_start(20, sample_generator(0, epoch, 3)) for epoch in range(2800)]
    counts = np.bincount(starts, minlength=14)
    assert len(counts) == 14 and counts.min() > 150 and counts.max() < 250  # 200 expected each
    assert starts[:50] == [clips.train_start(20, sample_generator(0, epoch, 3)) for epoch in range(50)]
    assert ClipSampler(4, 2, train="center").train_start(20, sample_generator(0, 1, 3)) == 6


def test_evaluation_clips_are_the_centres_of_equal_parts_of_the_starts():
    assert ClipSampler(4, 2, eval_clips=1).eval_starts(20) == [6]  # the centre clip: frames 6..12 of 0..19
    assert ClipSampler(4, 2, eval_clips=3).eval_starts(20) == [2, 6, 10]  # 13 // 6, 39 // 6, 65 // 6
    starts = ClipSampler(4, 2, eval_clips=4).eval_starts(101)
    assert starts == sorted(starts) and starts[0] >= 0 and starts[-1] <= 101 - 7
    np.testing.assert_allclose(np.diff(starts), 94 / 4, atol=1)


# -- readers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name, options", [("v.mp4", {"crf": "17", "g": "6", "bf": "2"}), ("v.avi", None), ("v.webm", None), ("v.mkv", {"crf": "17", "g": "4"})])
def test_frames_read_after_a_seek_equal_a_full_decode(tmp_path, name, options):
    path = tmp_path / name
    write_video(path, numbered_frames(), options=options)
    reference = decode_all(path)
    info = probe(path)
    assert (info.frames, info.height, info.width) == (30, 24, 32) == reference.shape[1:2] + reference.shape[2:]
    for indices in ([20, 22, 24, 26], [0, 1, 2], [29], [7, 3, 7, 28]):
        np.testing.assert_array_equal(read_frames(path, indices), reference[:, indices])


def test_one_channel_is_pillows_luminance_of_the_rgb_frames(tmp_path):
    path = tmp_path / "v.mp4"
    write_video(path, numbered_frames())
    rgb = decode_all(path)
    grey = read_frames(path, [3, 9], channels=1)
    expected = [np.asarray(Image.fromarray(rgb[:, t].transpose(1, 2, 0)).convert("L")) for t in (3, 9)]
    np.testing.assert_array_equal(grey[0], np.stack(expected))


def test_a_frame_folder_reads_as_the_video_its_frames_came_from(tmp_path):
    video = tmp_path / "v.mp4"
    write_video(video, numbered_frames(n=12))
    frames = decode_all(video)
    folder = tmp_path / "frames"
    folder.mkdir()
    for t in range(12):  # numbered without zero padding: frame_10 sorts after frame_9
        Image.fromarray(frames[:, t].transpose(1, 2, 0)).save(folder / f"frame_{t}.png")
    assert [Path(p).name for p in frame_files(folder)][8:11] == ["frame_8.png", "frame_9.png", "frame_10.png"]
    assert probe(folder) == probe(video)
    for channels in (None, 1):
        np.testing.assert_array_equal(read_frames(folder, [1, 10, 11, 4], channels), read_frames(video, [1, 10, 11, 4], channels))


@pytest.mark.parametrize("make, text", [
    (lambda p: p.write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video at all"), "cannot be opened as a video"),
    (write_audio_only, "has no video stream"),
    (write_no_frames, "has no frames"),
])
def test_a_bad_video_names_its_file(tmp_path, make, text):
    path = tmp_path / "bad.mp4"
    make(path)
    with pytest.raises(SampleReadError) as error:
        read_frames(path, [0]) if probe(path).frames else None
    assert text in error.value.message and error.value.path == str(path) and error.value.hint


def test_a_truncated_video_fails_at_the_frames_it_no_longer_has(tmp_path):
    path = tmp_path / "v.avi"
    write_video(path, numbered_frames(n=40))
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SampleReadError) as error:
        read_frames(path, range(probe(path).frames))
    assert error.value.path == str(path) and "truncated" in error.value.hint


def test_frame_folder_problems_name_the_folder_or_frame(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SampleReadError, match="no frames"):
        probe(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / "0.png")
    Image.fromarray(np.zeros((8, 10, 3), np.uint8)).save(mixed / "1.png")
    with pytest.raises(SampleReadError, match="frames of different sizes") as error:
        read_frames(mixed, [0, 1])
    assert error.value.path.endswith("1.png")


# -- transforms on clips ----------------------------------------------------------------------
def test_spatial_steps_act_on_every_frame_alike_and_keep_time():
    clip = torch.rand(3, 5, 20, 24)
    steps = Compose.from_spec([{"resize": {"size": [10, 12]}}, {"flip": {"axes": [1], "p": 0.5}}, {"random_crop": {"size": [8, 8], "padding": 1}}], clips=True)
    assert output_shape(steps, clip.shape) == (3, 5, 8, 8)
    out = steps(clip, sample_generator(0, 0, 0))
    # the same steps on each frame as an image, with the same random numbers (one draw per clip)
    frames = [Compose(steps.steps)(clip[:, t], sample_generator(0, 0, 0)) for t in range(5)]
    torch.testing.assert_close(out, torch.stack(frames, dim=1))
    resized = F.interpolate(clip.permute(1, 0, 2, 3), size=(10, 12), mode="bilinear", align_corners=False).permute(1, 0, 2, 3)
    torch.testing.assert_close(Compose.from_spec([{"resize": {"size": [10, 12]}}], clips=True)(clip), resized)


def test_value_steps_see_the_clips_channels():
    clip = torch.rand(3, 4, 6, 6)
    out = Compose.from_spec([{"normalize": {"mean": [0.1, 0.2, 0.3], "std": [1.0, 2.0, 4.0]}}], clips=True)(clip)
    torch.testing.assert_close(out, (clip - torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1, 1)) / torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1, 1))
    z = Compose.from_spec([{"zscore": {"channel_wise": True}}], clips=True)(clip)
    torch.testing.assert_close(z.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-6, rtol=0)
    with pytest.raises(Exception, match="sizes have 2 values"):
        Compose.from_spec([{"resize": {"size": [4, 4, 4]}}], clips=True)(clip)


# -- VideoSamples -----------------------------------------------------------------------------
@pytest.fixture
def videos(tmp_path) -> list[str]:
    paths = []
    for row, n in enumerate((30, 9, 17)):  # the second is shorter than a clip (span 13)
        path = tmp_path / f"{row}.mp4"
        write_video(path, numbered_frames(n=n, seed=row), options={"crf": "17", "g": "5"})
        paths.append(str(path))
    return paths


def test_training_clips_are_seeded_per_epoch_and_row_and_evaluation_clips_are_fixed(videos):
    clips = ClipSampler(frames=4, stride=4, train="random", eval_clips=3)
    samples = VideoSamples(videos, ["a", "b", "c"], clips, augment=Compose.from_spec([{"flip": {"axes": [1]}}], clips=True), seed=5)
    full = decode_all(Path(videos[0])).astype(np.float32) / 255
    for epoch in range(3):
        x = samples.load(0, epoch, training=True)
        generator = sample_generator(5, epoch, 0)
        start = clips.train_start(30, generator)
        expected = torch.from_numpy(full[:, clips.indices(30, start)])
        if torch.rand(1, generator=generator).item() < 0.5:
            expected = torch.flip(expected, [3])
        torch.testing.assert_close(x, expected)
        torch.testing.assert_close(samples.load(0, epoch, training=True), x)
    evaluated = samples.load(0, 7, training=False)
    assert evaluated.shape == (3, 3, 4, 24, 32)
    for k, start in enumerate(clips.eval_starts(30)):
        torch.testing.assert_close(evaluated[k], torch.from_numpy(full[:, clips.indices(30, start)]))
    short = decode_all(Path(videos[1])).astype(np.float32) / 255
    torch.testing.assert_close(samples.load(1, 0, training=True), torch.from_numpy(short[:, [0, 4, 8, 3]]))


def test_the_worker_count_does_not_change_the_clips(videos):
    clips = ClipSampler(frames=3, stride=2, train="random", eval_clips=2)
    samples = VideoSamples(videos, [0, 1, 2], clips, seed=1)
    samples.expected_shape = (3, 3, 24, 32)
    batches = [np.array([2, 0]), np.array([1])]
    results = {}
    for workers in (0, 2):
        provider = FileProvider(samples, num_workers=workers)
        results[workers] = [list(provider.batches(batches, epoch)) for epoch in (0, 1, None)]
    for a, b in zip(results[0], results[2]):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y)
    assert results[0][2][0].shape == (2, 2, 3, 3, 24, 32)  # evaluation: (rows, clips, C, T, H, W)
    assert not torch.equal(results[0][0][0], results[0][1][0])  # another epoch, other starts


def test_a_clip_late_in_a_long_video_is_decoded_from_its_keyframe_not_from_the_start(tmp_path, monkeypatch):
    path = tmp_path / "long.avi"
    write_video(path, numbered_frames(n=300, size=(16, 16)), options={"g": "12"})  # a keyframe every 12 frames
    reference = decode_all(path)
    decoded = []
    open_video = av.open

    class Counting:
        """The container, counting the frames its decoder hands out."""

        def __init__(self, container):
            self.container = container

        def __getattr__(self, name):
            return getattr(self.container, name)

        def decode(self, *args, **kwargs):
            for frame in self.container.decode(*args, **kwargs):
                decoded.append(frame)
                yield frame

    monkeypatch.setattr(av, "open", lambda *args, **kwargs: Counting(open_video(*args, **kwargs)))
    np.testing.assert_array_equal(read_frames(path, [281, 283, 285]), reference[:, [281, 283, 285]])
    assert len(decoded) <= 12 + 5  # from the keyframe at or before 281 to 285, not 286 frames
