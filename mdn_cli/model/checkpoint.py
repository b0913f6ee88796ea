"""The run directory and the checkpoint format: one writer, one safe loader with a version check.

A checkpoint holds only tensors and plain Python types (numbers, strings, lists, dicts), so it
loads with ``torch.load(weights_only=True)``: no file the tool reads can run code. Every load of a
checkpoint (``--resume``, ``extract``, ``refit``, ``layers``, ``--checkpoint PATH``) goes through
``load_checkpoint``.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, ContextManager, Iterator, Sequence

import torch

from mdn_cli.config import Spec, load_spec, same_training, spec_hash
from mdn_cli.data.design import DesignMatrix
from mdn_cli.data.training import TrainingData, load_training_data, num_outputs
from mdn_cli.model.network import Network, build_network
from mdn_cli.utils.distributed import resolve_device
from mdn_cli.utils.errors import MdnError
from mdn_cli.utils.fileio import atomic_link, atomic_path, recycled_file

CHECKPOINT_FORMAT = 1  # the version of the layout below; a checkpoint of another version is refused
CHECKPOINT_KEYS = ("format", "epoch", "model", "config", "design", "classes", "sample_shape")
_PLAIN = (torch.Tensor, int, float, bool, str, type(None))


def save_checkpoint(state: dict, path: Path, also: Sequence[Path] = (), recycle: bool = False) -> None:
    """Write ``state`` atomically, after checking it holds only tensors and plain types.

    ``also``: further names of the same checkpoint (``best.pt`` of the last epoch), each made
    atomically from the one file written (``atomic_link``), before ``path`` lands. ``recycle``:
    write over the file the previous checkpoint of ``path`` displaced (``recycled_file``), for a
    checkpoint rewritten every epoch.
    """
    _check_plain(state, "state")
    with (recycled_file(path) if recycle else _opened(atomic_path(path))) as file:
        torch.save(state, file)
        file.truncate()  # a recycled file may have been longer
        file.flush()
        for other in also:
            atomic_link(file.name, other)


@contextlib.contextmanager
def _opened(paths: ContextManager[Path]) -> Iterator[BinaryIO]:
    with paths as tmp, open(tmp, "wb") as file:
        yield file


def _check_plain(value, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, where)
            _check_plain(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not isinstance(value, _PLAIN) or type(value).__module__ == "numpy":
        raise TypeError(f"checkpoint {where} is a {type(value).__name__}: checkpoints hold only tensors and plain types.")


def load_state_file(path: Path, hint: str = "save the weights with torch.save(model.state_dict(), path).") -> object:
    """The tensors and plain containers of a ``torch.save`` file (on the CPU); anything else is an ``MdnError``.

    ``weights_only=True`` refuses any pickled object other than tensors and plain containers
    before it could run, so a crafted file is an input error, never executed code. Every file of
    weights the tool reads (checkpoints, ``model.init``) goes through here.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        globals_named = [line.strip() for line in str(exc).splitlines() if "GLOBAL" in line]
        if not globals_named:  # not a pickle of objects at all (text, a truncated file...); torch's text goes on to advise weights_only=False
            found = re.search(r"WeightsUnpickler error:\s*(.*?)\s*(?:Check the documentation|$)", str(exc), re.S)
            if found is None:
                raise MdnError(f"not a PyTorch file this tool can read safely ({_first_line(exc)}).", where=str(path), hint=hint) from None
            reason = " ".join(found.group(1).split()) or "not a pickle of tensors"
            raise MdnError(f"not a PyTorch file this tool can read safely ({reason[:200]}).", where=str(path), hint=hint) from None
        reason = globals_named[0]
        raise MdnError(
            f"refused: the file holds objects other than tensors and plain types, which could run code when loaded ({reason[:200]}).",
            where=str(path),
            hint=f"{hint} This tool never needs such objects; do not load files from untrusted sources with other tools either.",
        ) from None
    except Exception as exc:  # torch raises many types for a file that is not a torch.save file
        raise MdnError(f"not a PyTorch file this tool can read safely ({_first_line(exc)}).", where=str(path), hint=hint) from None


def load_weights(path: Path, hint: str) -> object:
    """A file of weights for ``model.init``: ``.safetensors`` with the safetensors library (a flat dict of
    names to tensors, no code by construction), anything else as a ``torch.save`` file (``load_state_file``)."""
    if Path(path).suffix.lower() != ".safetensors":
        return load_state_file(path, hint)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise MdnError(f"not a readable safetensors file ({_first_line(exc)}).", where=str(path),
                       hint="give a file written by safetensors.torch.save_file (e.g. a model.safetensors from a model hub), complete.") from None


def _first_line(exc: Exception) -> str:
    """The error's first sentence: what went wrong, without the library's advice that follows."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    first = f"{lines[0]} {lines[1]}" if lines[0].endswith(":") and len(lines) > 1 else lines[0]  # "Error(s) in loading state_dict:" and the error
    sentence = re.split(r"(?<=[a-z0-9])\. ", first)[0]
    return f"{type(exc).__name__}: {sentence[:200]}"


def load_checkpoint(path: Path) -> dict:
    """A checkpoint of `mdn train` (on the CPU), checked with ``load_state_file``; anything else is an ``MdnError``."""
    hint = "pass a .pt file written by `mdn train` (or `mdn refit`)."
    state = load_state_file(path, hint)
    if not isinstance(state, dict) or not set(CHECKPOINT_KEYS) - {"format", "epoch"} <= set(state):
        raise MdnError("not a checkpoint of `mdn train` (no model/config/design/classes/sample_shape).", where=str(path), hint=hint)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise MdnError(
            f"checkpoint format version {state.get('format')!r} is not supported (this tool reads version {CHECKPOINT_FORMAT}).",
            where=str(path),
            hint="train the run again with this version of mdn.",
        )
    shape = state["sample_shape"]
    if not isinstance(shape, (list, tuple)) or not shape or not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in shape):
        raise MdnError(f"sample_shape is {shape!r}; expected a list of positive sizes.", where=str(path), hint="the checkpoint is damaged; " + hint)
    if not isinstance(state["model"], dict) or not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise MdnError("its model is not a dict of tensors.", where=str(path), hint="the checkpoint is damaged; " + hint)
    return state


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    """A name in the run's checkpoints/ (``best``, ``last``, ``best-refit``...), else a path."""
    named = run_dir / "checkpoints" / f"{checkpoint}.pt"
    path = named if checkpoint in ("best", "last") or named.is_file() else Path(checkpoint)
    if not path.is_file():
        raise MdnError("checkpoint not found.", where=str(path), hint="train the run first, or give --checkpoint best|last|NAME|PATH (NAME: a file of the run's checkpoints/ without .pt).")
    return path


def check_run_dir(run_dir: Path, resume: bool) -> None:
    """A new training must not overwrite a run directory that already holds one."""
    if not resume and (Path(run_dir) / "checkpoints" / "last.pt").exists():
        raise MdnError("this run directory already holds a training.", where=str(run_dir), hint="add --resume to continue it, or choose another -o.")


def run_spec(path: str | Path, check_files: bool = True) -> Spec:
    """The spec of a run directory (its config.yaml) or of a spec file (``load_spec``'s ``check_files``)."""
    path = Path(path)
    if path.is_dir():
        config = path / "config.yaml"
        if not config.exists():
            raise MdnError("not a run directory (no config.yaml).", where=str(path), hint="pass the -o folder of `mdn train`, or a spec file.")
        return load_spec(config, check_files=check_files)
    if not path.exists():
        raise MdnError("no such run directory or spec file.", where=str(path), hint="pass the -o folder of `mdn train`, or a spec file.")
    return load_spec(path, check_files=check_files)


@dataclass
class LoadedRun:
    """A run's model rebuilt from its directory and one checkpoint (weights, design, input shape)."""

    run_dir: Path
    checkpoint: Path
    state: dict
    spec: Spec
    network: Network
    device: torch.device
    design: DesignMatrix
    _data: TrainingData | None = field(default=None, repr=False)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.state["sample_shape"])

    def training_data(self) -> TrainingData:
        """The run's own data with the splits it was trained with (its files must still be there), read once."""
        if self._data is None:
            self._data = load_training_data(self.spec, self.spec.train.seed)
        return self._data


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | None = None) -> LoadedRun:
    """Rebuild the run's model from config.yaml and load a checkpoint that was trained from that spec.

    ``device`` (auto, cpu, cuda) overrides the spec's train.device.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MdnError("no such run directory.", where=str(run_dir), hint="pass the -o folder of `mdn train`.")
    spec = run_spec(run_dir, check_files=False)  # the training data is needed only for its splits
    if device is not None:
        spec = spec.model_copy(update={"train": spec.train.model_copy(update={"device": device})})
    path = checkpoint_path(run_dir, checkpoint)
    state = load_checkpoint(path)
    if not same_training(state["config"], (run_dir / "config.yaml").read_text()):
        raise MdnError(
            f"this checkpoint was trained from another spec (spec hash {state.get('spec_hash')}, the run's is {spec_hash(spec)}).",
            where=str(path),
            hint=f"use a checkpoint of {run_dir}, or pass the run directory the checkpoint belongs to.",
        )
    try:
        design = DesignMatrix.from_dict(state["design"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MdnError(f"its design matrix is malformed ({type(exc).__name__}: {exc}).", where=str(path), hint=f"use a checkpoint that {run_dir} wrote.") from None
    network = build_network(spec, design.num_columns, design.num_preserved, state["sample_shape"], num_outputs(state["classes"]))
    try:
        network.load_state_dict(state["model"])  # the Gram inverse and running betas come with the weights
    except RuntimeError as exc:
        raise MdnError(f"its weights do not fit the run's model ({_first_line(exc)}).", where=str(path),
                       hint=f"use a checkpoint that {run_dir} wrote.") from None
    device = resolve_device(spec.train.device)
    return LoadedRun(run_dir, path, state, spec, network.to(device).eval(), device, design)
