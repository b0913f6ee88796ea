"""Helpers shared by the end-to-end tests: a small model, small specs, running the CLI in or out of process."""

from __future__ import annotations

import contextlib
import json
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

SMALL_MDN = [
    {"type": "conv2d", "out_channels": 4, "kernel_size": 5, "stride": 2, "name": "conv1"},
    {"type": "mdn"},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "linear", "out_features": 16, "name": "fc1"},
    {"type": "mdn"},
    {"type": "relu"},
    {"type": "linear", "out_features": 1, "name": "out"},
]
SMALL_BASELINE = [layer for layer in SMALL_MDN if layer["type"] != "mdn"]


def mdn(*args, stdin: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the CLI in this process (as `mdn ARGS`; `main()` with its exit codes): no start-up cost per call.

    The one way tests run a command, unless they need a process of its own (signals, torchrun,
    the malloc setting, a traceback with MDN_DEBUG=1): then ``run_cli``. ``env`` is set for the call.
    """
    from mdn_cli.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, stdin_before, env_before = sys.argv, sys.stdin, dict(os.environ)
    sys.argv = ["mdn", *map(str, args)]
    sys.stdin = io.StringIO(stdin or "")
    os.environ.update({"NO_COLOR": "1", "COLUMNS": "200", **(env or {})})
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv, sys.stdin = argv, stdin_before
        os.environ.clear()
        os.environ.update(env_before)
    return subprocess.CompletedProcess(sys.argv, code, out.getvalue(), err.getvalue())


def ok(*args, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = mdn(*args, stdin=stdin)
    assert result.returncode == 0, f"mdn {' '.join(map(str, args))} failed:\n{result.stderr}"
    return result


def write_spec(folder: Path, name: str = "spec.yaml", layers=SMALL_MDN, epochs: int = 3, **sections: dict) -> Path:
    """A small binary spec on `mdn synth` data in ``folder``; ``sections`` update data/model/mdn/train."""
    spec = {
        "data": {"inputs": "images.h5", "table": "meta.csv", "id_column": "id", "label": "label", "metadata": ["cf"], "split_column": "split"},
        "model": {"layers": layers},
        "mdn": {"momentum": 0.1, "preserve": ["label"]},
        "train": {"task": "binary", "epochs": epochs, "batch_size": 32, "lr": 1e-3, "seed": 0, "monitor": "fc1"},
    }
    for section, values in sections.items():
        spec[section].update(values)
    path = folder / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def read_metrics(run: Path) -> list[dict]:
    """A run's metrics.jsonl, one dict per epoch."""
    return [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def epoch_metrics(run: Path) -> list[dict]:
    """``read_metrics`` without each epoch's seconds: what two runs that should agree are compared on."""
    return [{key: value for key, value in row.items() if key != "seconds"} for row in read_metrics(run)]


def copy_study(study: Path, target: Path) -> Path:
    """A copy of a study's folder to damage or extend without touching the module's fixture."""
    shutil.copytree(study, target)
    return target


def first_of(table, split: str) -> int:
    """The position of a split's first row: the one the checks before training decode."""
    return int(np.flatnonzero(table["split"] == split)[0])


def write_audio_only(path: Path) -> None:
    """An .mp4 with one audio stream and no video stream."""
    import av

    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode())


def write_no_frames(path: Path, size: int = 16) -> None:
    """A container with a video stream and no frames (an .avi keeps the stream's header)."""
    import av

    with av.open(str(path), "w", format="avi") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height = size, size
        stream.pix_fmt = "yuv420p"
        container.start_encoding()


class Stop(Exception):
    """Raised by ``stop_after``: a training stopped between epochs."""


def stop_after(epoch: int):
    """A progress callback that stops training after ``epoch``'s checkpoint, as Ctrl-C would."""
    def progress(event, **info):
        if event == "epoch_end" and info["metrics"]["epoch"] == epoch:
            raise Stop
    return progress


def readme_block(containing: str) -> str:
    """The README's fenced code block that contains ``containing`` (so examples stay true: tests run them)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [block.split("\n", 1)[1] for block in text.split("```")[1::2]]
    found = [block for block in blocks if containing in block]
    assert len(found) == 1, f"{len(found)} README code blocks contain {containing!r}"
    return found[0]


def run_cli(*args, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m mdn_cli ARGS` in a fresh process (for exit codes, signals, distributed runs)."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "mdn_cli", *map(str, args)], capture_output=True, text=True, env=full_env, timeout=timeout)


def make_small_data(folder: Path, per_group: int = 60, seed: int = 1) -> Path:
    """Write `mdn synth` data (images.h5, meta.csv) into ``folder`` and return it."""
    from mdn_cli.data.synthetic import write_dataset
    from mdn_cli.data.synthetic import make_synthetic

    dataset = make_synthetic(per_group, seed)
    write_dataset(folder, dataset.images, dataset.table)
    return folder


def no_leftovers(folder: Path) -> list[Path]:
    """Temporary files of atomic writes that should never survive."""
    return [p for p in Path(folder).rglob("*.tmp")]


# -- numeric references -----------------------------------------------------------------------
def make_design(rng: np.random.Generator, n: int, num_preserved: int = 1, num_meta: int = 2) -> np.ndarray:
    """``[preserved | metadata | intercept]``: a binary label, correlated metadata, ones."""
    label = rng.integers(0, 2, size=(n, num_preserved)).astype(np.float64)
    meta = rng.normal(size=(n, num_meta)) + 0.5 * label[:, :1]
    return np.concatenate([label, meta, np.ones((n, 1))], axis=1)


def make_features(rng: np.random.Generator, x: np.ndarray, num_features: int) -> np.ndarray:
    """Features with a real linear dependence on every design column, plus noise."""
    coef = rng.normal(size=(x.shape[1], num_features)) * 3.0
    return x @ coef + rng.normal(size=(x.shape[0], num_features))


def ols(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(x, y, rcond=None)[0]


def t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))
