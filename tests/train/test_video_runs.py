"""Video studies end to end: synth --format video, clip training, video-level evaluate and extract, pack, bad videos."""

from __future__ import annotations

import json
from pathlib import Path

import av
import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from sklearn.metrics import accuracy_score

from mdn_cli.config import load_spec
from mdn_cli.utils.errors import MdnError
from tests.helpers import copy_study, epoch_metrics, first_of, mdn, ok, write_audio_only, write_no_frames, write_spec

CLIP = {"frames": 4, "stride": 3, "train": "random", "eval_clips": 3}
LAYERS = [
    {"type": "conv3d", "out_channels": 4, "kernel_size": 3, "stride": 2, "name": "conv1"},
    {"type": "mdn"},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "linear", "out_features": 8, "name": "fc1"},
    {"type": "mdn"},
    {"type": "relu"},
    {"type": "linear", "out_features": 1, "name": "out"},
]
MEAN, STD = 0.35, 0.2


def video_spec(folder: Path, name: str = "spec.yaml", epochs: int = 2, **data) -> Path:
    """``write_spec`` reading clips of the videos the table's path column names."""
    return write_spec(folder, name, LAYERS, epochs, train={"batch_size": 8, "num_workers": 0},
                      data={"inputs": None, "path_column": "path", "clip": CLIP, "transform": [{"normalize": {"mean": MEAN, "std": STD}}],
                            "augment": [{"flip": {"axes": [1]}}], **data})  # fmt: skip


@pytest.fixture(scope="module")
def video_study(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("video")
    ok("synth", folder, "--format", "video", "--per-group", 12, "--seed", 1)
    video_spec(folder)
    return folder


@pytest.fixture(scope="module")
def video_run(video_study: Path, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "video"
    ok("train", video_study / "spec.yaml", "-o", run, "--quiet")
    return run


def test_synth_video_moves_a_blob_in_the_labels_direction_under_the_confounders_light(video_study):
    table = pd.read_csv(video_study / "meta.csv")
    assert len(table) == 24 and set(table.columns) >= {"id", "label", "cf", "mf", "shake", "split", "path"}
    with av.open(str(video_study / table["path"][0])) as container:
        frames = np.stack([f.to_ndarray(format="gray").astype(float) for f in container.decode(video=0)])
    assert frames.shape == (24, 32, 32)
    background = np.median(frames)  # the scene's light: 0.08 cf of full scale (8-bit, limited-range luma)
    assert abs(background / 255 - 0.08 * table["cf"][0]) < 0.04


def test_validation_and_training_see_one_video_per_row(video_study, video_run):
    result = ok("validate", video_study / "spec.yaml")
    assert "24 videos of 24-24 frames" in result.stderr and "0 shorter than a clip's 10 frames" in result.stderr
    config = yaml.safe_load((video_run / "config.yaml").read_text())
    assert config["data"]["clip"] == CLIP
    assert torch.load(video_run / "checkpoints" / "best.pt", weights_only=True)["sample_shape"] == [3, 4, 32, 32]


def reference_scores(run: Path, study: Path, table: pd.DataFrame) -> np.ndarray:
    """Each video's score recomputed apart from the data code: every frame decoded with PyAV, the three
    evaluation clips cut by the documented rule, normalised, run, sigmoid, and averaged."""
    from mdn_cli.model.checkpoint import load_run
    from mdn_cli.nn import metadata

    loaded = load_run(run)
    design = torch.from_numpy(loaded.design.transform(table).astype(np.float32))
    scores = []
    for row, path in enumerate(table["path"]):
        with av.open(str(study / path)) as container:
            frames = np.stack([f.to_ndarray(format="rgb24").transpose(2, 0, 1) for f in container.decode(video=0)], axis=1)
        last = frames.shape[1] - (CLIP["frames"] - 1) * CLIP["stride"] - 1
        starts = [last * (2 * k + 1) // (2 * CLIP["eval_clips"]) for k in range(CLIP["eval_clips"])]
        clips = np.stack([frames[:, s : s + CLIP["frames"] * CLIP["stride"] : CLIP["stride"]] for s in starts]).astype(np.float32) / 255
        with torch.no_grad(), metadata(loaded.network.eval(), design[[row] * len(starts)]):
            logits = loaded.network((torch.from_numpy(clips) - MEAN) / STD)
        scores.append(torch.sigmoid(logits[:, 0].double()).mean().item())
    return np.array(scores)


def test_a_videos_score_is_the_mean_of_its_clips_probabilities(video_study, video_run, tmp_path):
    result = json.loads(ok("evaluate", video_run, "--split", "all", "--predictions", tmp_path / "p.csv", "--format", "json").stdout)
    predictions = pd.read_csv(tmp_path / "p.csv")
    table = pd.read_csv(video_study / "meta.csv")
    assert len(predictions) == len(table) and predictions["id"].tolist() == table["id"].tolist()  # one row per video
    np.testing.assert_allclose(predictions["score"], reference_scores(video_run, video_study, table), rtol=0, atol=1e-6)
    assert result["overall"]["accuracy"] == pytest.approx(accuracy_score(predictions["label"], predictions["predicted"]))


def test_the_epochs_validation_scores_videos_as_evaluate_does(video_run, tmp_path):
    ok("evaluate", video_run, "--split", "val", "--checkpoint", "last", "--predictions", tmp_path / "p.csv", "--format", "json")
    predictions = pd.read_csv(tmp_path / "p.csv")
    last = json.loads((video_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["val_acc"] == pytest.approx(accuracy_score(predictions["label"], predictions["predicted"]))


def test_extract_writes_the_mean_of_a_videos_clips_or_every_clip(video_run, tmp_path):
    ok("extract", video_run, "--layer", "fc1", "--split", "val", "-o", tmp_path / "v.h5", "--meta-out", tmp_path / "v.csv")
    ok("extract", video_run, "--layer", "fc1", "--split", "val", "-o", tmp_path / "c.h5", "--meta-out", tmp_path / "c.csv", "--per-clip")
    with h5py.File(tmp_path / "v.h5") as f, h5py.File(tmp_path / "c.h5") as g:
        per_video, ids = f["features"][:], f["ids"][:]
        per_clip, clip_ids, clip = g["features"][:], g["ids"][:], g["clip"][:]
    assert per_clip.shape == (3 * len(per_video), per_video.shape[1])
    np.testing.assert_array_equal(clip_ids, np.repeat(ids, 3))
    np.testing.assert_array_equal(clip, np.tile([0, 1, 2], len(ids)))
    np.testing.assert_allclose(per_clip.reshape(len(ids), 3, -1).mean(axis=1), per_video, rtol=1e-5, atol=1e-6)
    meta = pd.read_csv(tmp_path / "c.csv", dtype={"id": str})
    assert meta["clip"].tolist() == clip.tolist() and meta["id"].tolist() == clip_ids.astype(str).tolist()
    videos = json.loads(ok("audit", tmp_path / "v.h5", tmp_path / "v.csv", "--format", "json").stdout)
    assert videos["n"] == len(ids) and [r["column"] for r in videos["results"]] == ["label", "cf"]
    meta.sample(frac=1, random_state=0).to_csv(tmp_path / "shuffled.csv", index=False)  # joined on (id, clip), not on row order
    clips = json.loads(ok("audit", tmp_path / "c.h5", tmp_path / "shuffled.csv", "--format", "json").stdout)
    assert clips["n"] == 3 * len(ids) and clips["table"]["joined_on"] == "id and clip" and "clip" not in [r["column"] for r in clips["results"]]
    import dcor

    for result in clips["results"]:
        if result["column"] == "cf":
            assert result["dcor2"] == pytest.approx(dcor.u_distance_correlation_sqr(per_clip.astype(np.float64), meta["cf"].to_numpy()), abs=1e-5)


def center_spec(study: Path, name: str, **data) -> Path:
    return video_spec(study, name, clip={**CLIP, "train": "center", "eval_clips": 1}, augment=[{"flip": {"axes": [1]}}], **data)


def test_training_on_packed_centre_clips_equals_training_on_the_videos(video_study, tmp_path):
    study = copy_study(video_study, tmp_path / "study")
    spec = center_spec(study, "center.yaml")
    result = json.loads(ok("pack", spec, "-o", tmp_path / "packed", "--format", "json").stdout)
    assert result["sample_shape"] == [3, 4, 32, 32] and "note" not in result
    with h5py.File(tmp_path / "packed" / "inputs.h5") as f:
        assert f["x"].shape == (24, 3, 4, 32, 32) and f["x"].attrs["clip_frames"] == 4 and f["x"].attrs["clip_stride"] == 3
    ok("train", spec, "-o", tmp_path / "files", "--quiet")
    ok("train", tmp_path / "packed" / "spec.yaml", "-o", tmp_path / "h5", "--quiet")
    assert epoch_metrics(tmp_path / "files") == epoch_metrics(tmp_path / "h5")


def test_pack_keeps_uint8_clips_and_says_what_random_starts_become(video_study, tmp_path):
    spec = video_spec(video_study, "moves.yaml", transform=[{"center_crop": {"size": 24}}])
    result = json.loads(ok("pack", spec, "-o", tmp_path / "packed", "--format", "json").stdout)
    assert result["dtype"] == "uint8" and result["sample_shape"] == [3, 4, 24, 24] and "centre clip" in result["note"]
    packed = yaml.safe_load((tmp_path / "packed" / "spec.yaml").read_text())
    assert packed["data"]["clip"] == {**CLIP, "train": "center", "eval_clips": 1}


# -- bad input: exit 2, naming the row id and the file ------------------------------------------
def refused(command: str, spec: Path, tmp_path: Path, *expected: str) -> None:
    args = ("train", spec, "-o", tmp_path / "run", "--quiet") if command == "train" else ("validate", spec)
    result = mdn(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "Hint:" in result.stderr
    for text in expected:
        assert text in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:300])


@pytest.mark.parametrize("damage, text", [
    (lambda p: p.write_bytes(b"garbage, not a video"), "cannot be opened as a video"),
    (truncate, "truncated"),
    (write_audio_only, "has no video stream"),
    (write_no_frames, "has no frames"),
])
def test_a_bad_video_is_refused_with_its_row_id_and_path(video_study, tmp_path, damage, text):
    study = copy_study(video_study, tmp_path / "study")
    table = pd.read_csv(study / "meta.csv")
    row = first_of(table, "val")
    damage(study / table["path"][row])
    refused("train", study / "spec.yaml", tmp_path, f"row id {table['id'][row]}", table["path"][row], text)
    refused("validate", study / "spec.yaml", tmp_path, f"row id {table['id'][row]}", table["path"][row])


def as_frame_folder(study: Path, table: pd.DataFrame, row: int) -> Path:
    """The row's video replaced by a folder of its frames (PNG), the table pointing at it."""
    video = study / table["path"][row]
    folder = video.with_suffix("")
    folder.mkdir()
    with av.open(str(video)) as container:
        for t, frame in enumerate(container.decode(video=0)):
            frame.to_image().save(folder / f"{t:03d}.png")
    table.loc[row, "path"] = str(folder.relative_to(study))
    table.to_csv(study / "meta.csv", index=False)
    return folder


def test_frame_folders_train_beside_videos_and_bad_folders_are_refused(video_study, tmp_path):
    study = copy_study(video_study, tmp_path / "study")
    table = pd.read_csv(study / "meta.csv")
    row = first_of(table, "val")
    folder = as_frame_folder(study, table, row)
    ok("validate", study / "spec.yaml")
    Image.open(folder / "010.png").resize((30, 32)).save(folder / "010.png")  # in the centre clip (frames 7, 10, 13, 16), read by the checks
    refused("train", study / "spec.yaml", tmp_path, f"row id {table['id'][row]}", "frames of different sizes", "010.png")
    for frame in folder.iterdir():
        frame.unlink()
    refused("train", study / "spec.yaml", tmp_path, f"row id {table['id'][row]}", "folder with no frames")


def test_videos_of_different_sizes_need_a_resize(video_study, tmp_path):
    from mdn_cli.data.video import write_video

    study = copy_study(video_study, tmp_path / "study")
    table = pd.read_csv(study / "meta.csv")
    row = int(np.flatnonzero(table["split"] == "train")[4])  # not the first of a split: only the survey reads it
    write_video(study / table["path"][row], np.zeros((3, 24, 40, 48), np.uint8))
    refused("validate", study / "spec.yaml", tmp_path, f"row id {table['id'][row]}", "48x40", "resize")
    spec = video_spec(study, "resized.yaml", transform=[{"resize": {"size": [32, 32]}}])
    assert "24 videos" in ok("validate", spec).stderr


def test_a_video_that_fails_later_stops_training_and_keeps_the_last_epoch(video_study, tmp_path):
    from mdn_cli.train.loop import train

    study = copy_study(video_study, tmp_path / "study")
    table = pd.read_csv(study / "meta.csv")
    row = int(np.flatnonzero(table["split"] == "train")[3])

    def corrupt_after_epoch_1(event, **fields):
        if event == "epoch_end" and fields["metrics"]["epoch"] == 1:
            truncate(study / table["path"][row])

    with pytest.raises(MdnError) as error:
        train(load_spec(study / "spec.yaml"), tmp_path / "run", progress=corrupt_after_epoch_1)
    assert f"row id {table['id'][row]}" in error.value.render() and table["path"][row] in error.value.render()
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 1


def test_a_video_without_data_clip_is_refused_with_the_fix(video_study, tmp_path):
    spec = yaml.safe_load((video_study / "spec.yaml").read_text())
    del spec["data"]["clip"]
    (video_study / "noclip.yaml").write_text(yaml.safe_dump(spec))
    refused("train", video_study / "noclip.yaml", tmp_path, "unsupported type", "set data.clip")
