"""Videos as frames: video files decoded with PyAV, and folders of numbered frames read as images.

``probe`` gives a video's frame count and size; ``read_clips`` the clips a sample needs, chosen
from the frame count, each a uint8 ``(C, T, H, W)`` array (C = 3, or 1 with ``channels: 1``,
Pillow's luminance as for images); ``read_frames`` given frames. A video file is decoded from the keyframe before the first frame needed to the last one
needed, not from its start; a frame's index is its timestamp times the stream's average frame
rate (constant-rate video, as HMDB51's and UCF101's). Every failure is a ``SampleReadError``
naming the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from mdn_cli.data.readers import IMAGE_EXTENSIONS, SampleReadError, extension_of, file_names, read_raw

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov")
_NUMBER = re.compile(r"(\d+)")


@dataclass(frozen=True)
class VideoInfo:
    frames: int
    height: int
    width: int


def probe(path: str | Path) -> VideoInfo:
    """The frame count and frame size, from the container's header (or by counting packets when it has none)."""
    if os.path.isdir(path):
        frames = frame_files(path)
        _, height, width = read_raw(frames[0]).shape
        return VideoInfo(len(frames), height, width)
    with _opened(path) as (container, stream):
        return VideoInfo(_frame_count(container, stream, path), stream.codec_context.height, stream.codec_context.width)


def read_clips(path: str | Path, clips: Callable[[int], Sequence[Sequence[int]]], channels: int | None = None) -> list[np.ndarray]:
    """The clips whose frame indices ``clips(n_frames)`` gives, each uint8 ``(C, T, H, W)``, from one opening of the
    file (or one listing of the folder) and one pass over the frames they need."""
    if os.path.isdir(path):
        files = frame_files(path)
        wanted_clips = clips(len(files))
        frames = _folder_frames(files, path, _union(wanted_clips), channels)
    else:
        frames, wanted_clips = _video_frames(path, clips, channels)
    shapes = {frame.shape for frame in frames.values()}
    if len(shapes) > 1:
        raise SampleReadError(f"has frames of different sizes ({', '.join(str(s[1:]) for s in sorted(shapes))}).", path=path,
                              hint="every frame of a video needs one size; re-export the frames.")
    return [np.ascontiguousarray(np.stack([frames[int(i)] for i in indices], axis=1)) for indices in wanted_clips]


def read_frames(path: str | Path, indices: Sequence[int], channels: int | None = None) -> np.ndarray:
    """The frames at ``indices`` (any order, repeats allowed) as uint8 ``(C, T, H, W)``."""
    return read_clips(path, lambda n_frames: [indices], channels)[0]


def _union(clips: Sequence[Sequence[int]]) -> list[int]:
    return sorted({int(i) for indices in clips for i in indices})


def frame_files(folder: str | Path) -> list[str]:
    """The image files of a frame folder in frame order: by the numbers in their names, then by name."""
    names = [name for name in os.listdir(folder) if extension_of(name) in IMAGE_EXTENSIONS]
    if not names:
        raise SampleReadError("is a folder with no frames.", path=folder, hint=f"a frame folder holds one image per frame ({', '.join(IMAGE_EXTENSIONS)}), numbered in order.")
    names.sort(key=lambda name: ([int(part) for part in _NUMBER.findall(name)], name))
    return [os.path.join(folder, name) for name in names]


def _folder_frames(files: list[str], folder: str | Path, wanted: list[int], channels: int | None) -> dict[int, np.ndarray]:
    if wanted[-1] >= len(files):
        raise SampleReadError(f"has {len(files)} frames; frame {wanted[-1]} was asked for.", path=folder, hint=f"frames are 0 to {len(files) - 1}.")
    out = {}
    for index in wanted:
        frame = read_raw(files[index], channels or 3)
        if frame.dtype != np.uint8 or frame.ndim != 3:
            raise SampleReadError(f"is a {frame.dtype} image; frames must be 8-bit.", path=files[index], hint="store frames as 8-bit JPEG or PNG.")
        out[index] = frame
    sizes = {frame.shape for frame in out.values()}
    if len(sizes) > 1:
        first = next(i for i in wanted if out[i].shape != out[wanted[0]].shape)
        raise SampleReadError(f"is {out[first].shape[2]}x{out[first].shape[1]} but {files[wanted[0]]} is {out[wanted[0]].shape[2]}x{out[wanted[0]].shape[1]}: "
                              "frames of different sizes.", path=files[first], hint="every frame of a video needs one size; re-export the frames.")
    return out


class _opened:
    """``(container, first video stream)``, closed on exit; open failures as SampleReadError."""

    def __init__(self, path: str | Path):
        self.path = path

    def __enter__(self):
        import av

        try:
            self.container = av.open(str(self.path))
        except (av.FFmpegError, UnicodeDecodeError, OSError) as exc:
            raise SampleReadError(f"cannot be opened as a video ({exc}).", path=self.path, hint="the file may be truncated or not a video; re-encode it.") from None
        if not self.container.streams.video:
            self.container.close()
            raise SampleReadError("has no video stream.", path=self.path, hint="the table's path column must name videos (or frame folders).")
        stream = self.container.streams.video[0]
        stream.thread_type = "NONE"  # one thread per decoder: loader workers are the parallelism
        return self.container, stream

    def __exit__(self, *exc) -> None:
        self.container.close()


def _frame_count(container, stream, path) -> int:
    """From the header; else by counting packets (no decoding), rewinding after."""
    import av

    if stream.frames:
        return stream.frames
    try:
        frames = sum(1 for packet in container.demux(stream) if packet.size)
        if frames:
            container.seek(stream.start_time or 0, stream=stream, backward=True, any_frame=False)
    except av.FFmpegError as exc:
        raise SampleReadError(f"cannot be read as a video ({exc}).", path=path, hint="the file may be truncated or corrupt; re-encode it.") from None
    if frames == 0:
        raise SampleReadError("has no frames.", path=path, hint="the file may be truncated; re-encode or remove it.")
    return frames


def _video_frames(path: str | Path, clips: Callable[[int], Sequence[Sequence[int]]], channels: int | None) -> tuple[dict[int, np.ndarray], Sequence[Sequence[int]]]:
    """Decoded from the keyframe before the first frame needed; from the start when seeking lands after it or timestamps are missing."""
    import av

    try:
        with _opened(path) as (container, stream):
            wanted_clips = clips(_frame_count(container, stream, path))
            wanted = _union(wanted_clips)
            out = _decode(container, stream, wanted, channels, seek=wanted[0] > 0)
        if out is None:
            with _opened(path) as (container, stream):
                out = _decode(container, stream, wanted, channels, seek=False)
    except av.FFmpegError as exc:
        raise SampleReadError(f"cannot be decoded ({exc}).", path=path, hint="the file may be truncated or corrupt; re-encode it.") from None
    missing = [index for index in wanted if index not in out]
    if missing:
        raise SampleReadError(f"frame {missing[0]} does not decode: the video ends before it.", path=path, hint="the file may be truncated; re-encode or remove it.")
    return out, wanted_clips


def _decode(container, stream, wanted: list[int], channels: int | None, seek: bool) -> dict[int, np.ndarray] | None:
    """The wanted frames found by timestamp, or None when seeking went past ``wanted[0]`` (decode again from the start)."""
    rate = stream.average_rate or stream.guessed_rate
    start = stream.start_time or 0
    timestamps = seek and rate is not None
    if timestamps:
        container.seek(start + int(wanted[0] / (rate * stream.time_base)), stream=stream, backward=True, any_frame=False)
    from av.video.reformatter import VideoReformatter
    from PIL import Image

    reformatter = VideoReformatter()  # one conversion context for the video's frames (2-3x faster than one per frame)
    want, out, counter = set(wanted), {}, 0
    for frame in container.decode(stream):
        if frame.pts is None or rate is None:
            if timestamps:
                return None
            index = counter
        else:
            index = int(round(float((frame.pts - start) * stream.time_base * rate)))
        counter += 1
        if timestamps and not out and index > wanted[0]:
            return None
        if index in want:
            rgb = reformatter.reformat(frame, format="rgb24").to_ndarray()
            out[index] = np.asarray(Image.fromarray(rgb).convert("L"))[None] if channels == 1 else rgb.transpose(2, 0, 1)
        if index >= wanted[-1]:
            break
    return out


CODECS = {".mp4": "libx264", ".mov": "libx264", ".mkv": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}


def write_video(path: str | Path, clip: np.ndarray, fps: int = 25, codec: str | None = None, options: dict[str, str] | None = None) -> None:
    """Encode a uint8 (C, T, H, W) array (C 1 or 3; H and W even) with PyAV: H.264 (.mp4, .mov, .mkv), MPEG-4 part 2 (.avi) or VP9 (.webm).

    H.264 is written at constant quality 17 (visually lossless) unless ``options`` say otherwise,
    MPEG-4 at quantiser 2; ``codec: ffv1`` in .mkv is lossless. MPEG-4 writes the same bytes every
    time (``mdn synth`` uses it); the bundled x264 does not always.
    """
    import av

    if clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[0] not in (1, 3):
        raise ValueError(f"write_video needs a uint8 (C, T, H, W) array with C 1 or 3; got {clip.dtype} {clip.shape}")
    codec = codec or CODECS[extension_of(path)]
    frames = np.repeat(clip, 3, axis=0) if clip.shape[0] == 1 else clip
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[2], frames.shape[3]
        stream.pix_fmt = "yuv444p" if codec == "ffv1" else "yuv420p"
        stream.options = options if options is not None else ({"crf": "17"} if codec == "libx264" else {})
        if codec == "mpeg4":
            stream.codec_context.qscale = 2
        for frame in frames.transpose(1, 2, 3, 0):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def write_video_study(out_dir: str | Path, videos: np.ndarray, table: pd.DataFrame, id_column: str = "id", extension: str = ".avi") -> pd.DataFrame:
    """One video per row in ``out_dir/files/<id><extension>`` from float (n, C, T, H, W) in [0, 1] (rounded to 8 bits);
    the table with a ``path`` column relative to ``out_dir``."""
    if videos.ndim != 5 or len(videos) != len(table):
        raise ValueError(f"videos must be (n, C, T, H, W) with n = {len(table)} table rows; got {videos.shape}")
    names = file_names(table[id_column])
    files = Path(out_dir) / "files"
    files.mkdir(parents=True, exist_ok=True)
    for name, video in zip(names, videos):
        write_video(files / f"{name}{extension}", np.round(np.clip(video, 0.0, 1.0) * 255).astype(np.uint8))
    return table.assign(path=[f"files/{name}{extension}" for name in names])
