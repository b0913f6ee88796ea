"""Which frames of a video make its clips: ``frames`` frames, every ``stride``-th, from a start.

Training takes one clip per video and epoch, at a start drawn from the sample's generator
(``transforms.sample_generator(seed, epoch, row)``, so workers and resumes do not change it) or at
the centre; evaluation takes ``eval_clips`` clips whose starts are the centres of equal parts of
the possible starts, rounded down (one clip: the centre clip). A video with fewer frames than a clip spans,
``(frames - 1) * stride + 1``, is played in a loop from its first frame: frame ``k`` of the clip is
``(k * stride) mod n``. Nothing here reads a file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class ClipSampler:
    """The spec's ``data.clip``: T = ``frames``, every ``stride``-th frame; ``train`` is random or center."""

    frames: int
    stride: int = 1
    train: str = "random"
    eval_clips: int = 1

    @classmethod
    def from_spec(cls, clip) -> ClipSampler:
        return cls(clip.frames, clip.stride, clip.train, clip.eval_clips)

    @property
    def span(self) -> int:
        """Frames of the video one clip covers, first to last."""
        return (self.frames - 1) * self.stride + 1

    def loops(self, n_frames: int) -> bool:
        """True when a video of ``n_frames`` is shorter than a clip and is played in a loop."""
        return n_frames < self.span

    def indices(self, n_frames: int, start: int) -> np.ndarray:
        """The frame indices of the clip from ``start`` (looped from frame 0 when the video is short)."""
        if n_frames < 1:
            raise ValueError("a video needs at least one frame")
        if self.loops(n_frames):
            return (np.arange(self.frames) * self.stride) % n_frames
        if not 0 <= start <= n_frames - self.span:
            raise ValueError(f"start {start} does not fit a clip of {self.span} frames in {n_frames}")
        return start + np.arange(self.frames) * self.stride

    def center_start(self, n_frames: int) -> int:
        return max(n_frames - self.span, 0) // 2

    def train_start(self, n_frames: int, generator: torch.Generator | None) -> int:
        """Where this epoch's training clip starts: uniform over the starts that fit (random), or the centre one."""
        last = max(n_frames - self.span, 0)
        if self.train == "center" or last == 0:
            return self.center_start(n_frames)
        return int(torch.randint(0, last + 1, (1,), generator=generator))

    def eval_starts(self, n_frames: int) -> list[int]:
        """The evaluation clips' starts: the centres of ``eval_clips`` equal parts of the possible starts."""
        last = max(n_frames - self.span, 0)
        return [last * (2 * k + 1) // (2 * self.eval_clips) for k in range(self.eval_clips)]
