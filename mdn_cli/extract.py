"""A trained run's layer outputs -> a self-describing HDF5 file, streamed batch by batch.

The model is rebuilt from the run's resolved spec and the checkpoint (weights, design matrix, input
shape), so new data (``file_source``) needs neither the training data nor a Gram refit;
"the features of a layer" are the output of ``Network.feature_module`` (after its MDN, if any).
MDN layers run in eval mode with their running beta and the rows' metadata, as in the paper.
Nothing is held per sample but ids and design rows, so memory does not grow with n x d.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import h5py
import numpy as np
import pandas as pd
import torch

from mdn_cli import __version__
from mdn_cli.data import TrainingData, align_table, load_training_data, num_outputs, open_h5_dataset, read_ids, read_table
from mdn_cli.design import DesignMatrix
from mdn_cli.errors import MdnError
from mdn_cli.fileio import atomic_path
from mdn_cli.nn import MetadataNormBase, metadata
from mdn_cli.residualize import apply_design
from mdn_cli.spec import Spec, load_spec, spec_hash
from mdn_cli.models import Network, build_network
from mdn_cli.train import build_run, resolve_device, same_training

SPLIT_CHOICES = ("train", "val", "test", "all")
CHUNK_BYTES = 1 << 20  # HDF5 chunks of about 1 MiB: good gzip ratio, small chunk cache


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

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.state["sample_shape"])

    def training_data(self) -> TrainingData:
        """The run's own data with the splits it was trained with (its files must still be there)."""
        return load_training_data(self.spec, self.spec.train.seed)


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


def checkpoint_path(run_dir: Path, checkpoint: str) -> Path:
    """A name in the run's checkpoints/ (``best``, ``last``, ``best-refit``...), else a path."""
    named = run_dir / "checkpoints" / f"{checkpoint}.pt"
    path = named if checkpoint in ("best", "last") or named.is_file() else Path(checkpoint)
    if not path.is_file():
        raise MdnError("checkpoint not found.", where=str(path), hint="train the run first, or give --checkpoint best|last|NAME|PATH (NAME: a file of the run's checkpoints/ without .pt).")
    return path


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
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a file that is not a checkpoint
        raise MdnError(f"not a readable checkpoint ({type(exc).__name__}: {exc}).", where=str(path), hint="pass a .pt file written by `mdn train`.") from None
    if not isinstance(state, dict) or not {"model", "config", "design", "classes", "sample_shape"} <= set(state):
        raise MdnError("not a checkpoint of `mdn train` (no model/config/design/classes/sample_shape).", where=str(path), hint="pass a .pt file written by `mdn train`.")
    if not same_training(state["config"], (run_dir / "config.yaml").read_text()):
        raise MdnError(
            f"this checkpoint was trained from another spec (spec hash {state.get('spec_hash')}, the run's is {spec_hash(spec)}).",
            where=str(path),
            hint=f"use a checkpoint of {run_dir}, or pass the run directory the checkpoint belongs to.",
        )
    design = DesignMatrix.from_dict(state["design"])
    network = build_network(spec, design.num_columns, design.num_preserved, state["sample_shape"], num_outputs(state["classes"]))
    network.load_state_dict(state["model"])  # the Gram inverse and running betas come with the weights
    device = resolve_device(spec.train.device)
    return LoadedRun(run_dir, path, state, spec, network.to(device).eval(), device, design)


# -- layers ------------------------------------------------------------------------------------
def layers_of(target: str | Path) -> list[dict]:
    """``describe_layers`` of a run directory or a spec file.

    A run that has a checkpoint is described from it (weights, design, input shape), so its
    training data need not be there; a spec, or a run not yet checkpointed, is built from its data.
    """
    target = Path(target)
    saved = [c for c in ("last", "best") if (target / "checkpoints" / f"{c}.pt").is_file()] if target.is_dir() else []
    if saved:
        loaded = load_run(target, saved[0])
        return describe_layers(loaded.network, loaded.sample_shape, loaded.design.num_columns, loaded.device)
    run = build_run(run_spec(target))
    return describe_layers(run.network, run.data.sample_shape, run.data.design.num_columns, run.device)


def describe_layers(network: Network, sample_shape: Sequence[int], num_design: int, device: torch.device) -> list[dict]:
    """Every named module: dotted name, type, output shape for one sample, and its MDN.

    Shapes come from one eval pass on a two-row zero batch, the way the model builder infers them.
    """
    body_modules = dict(network.body.named_modules())
    placement = network.mdn_placement()
    shapes: dict[str, tuple] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: shapes.__setitem__(name, tuple(out.shape[1:])) if isinstance(out, torch.Tensor) else None)
        for name, module in body_modules.items()
        if name
    ]
    x = torch.zeros(2, *sample_shape, device=device)
    network.eval()
    try:
        with torch.no_grad(), metadata(network, torch.zeros(2, num_design, device=device)):
            network(x)
    finally:
        for handle in handles:
            handle.remove()
    rows = []
    for name in network.layer_names():
        module = body_modules[name]
        mdn = "is MDN" if isinstance(module, MetadataNormBase) else placement.get(name)
        rows.append({"name": name, "type": type(module).__name__, "output_shape": list(shapes[name]) if name in shapes else None, "mdn": mdn})
    return rows


# -- sources of rows ---------------------------------------------------------------------------
@dataclass
class Source:
    """Rows to run through the model, in output order: ids, their table rows, a batch iterator."""

    description: str
    ids: np.ndarray
    table: pd.DataFrame
    batches: Callable[[int], Iterator[tuple[slice, torch.Tensor, torch.Tensor]]]


def split_source(loaded: LoadedRun, split: str) -> Source:
    """The rows of a split of the run's own data (``all``: every row in file order)."""
    data = loaded.training_data()
    if split not in SPLIT_CHOICES:
        raise MdnError(f"unknown split {split!r}.", where="--split", hint=f"use one of {', '.join(SPLIT_CHOICES)}.")
    rows = np.arange(len(data.table)) if split == "all" else data.splits[split]
    if len(rows) == 0:
        raise MdnError(f"the run's data has no {split!r} rows.", where="--split", hint="choose another split.")
    table = data.table.iloc[rows].reset_index(drop=True)
    design_rows = apply_design(loaded.design, table, str(loaded.spec.data.table)).astype(np.float32)
    spec = loaded.spec.data
    file_ids = read_ids(spec.inputs, spec.ids_dataset) if spec.id_column else None
    ids = file_ids[rows] if file_ids is not None else rows.copy()  # the inputs' own ids, in their dtype

    def batches(size: int):
        for start in range(0, len(rows), size):
            part = slice(start, min(start + size, len(rows)))
            yield part, data.inputs.take(rows[part]), torch.from_numpy(design_rows[part])

    return Source(f"split={split}", ids, table, batches)


def file_source(loaded: LoadedRun, inputs: str | Path, table_path: str | Path, id_column: str | None = None) -> Source:
    """New data: an HDF5 file of inputs (the spec's dataset names) and a table with the spec's columns."""
    spec = loaded.spec.data
    inputs = Path(inputs)
    with open_h5_dataset(inputs, spec.dataset, hint=f"new inputs keep the run's dataset name (data.dataset: {spec.dataset}).") as ds:
        shape = tuple(ds.shape)
    if shape[1:] != loaded.sample_shape:
        raise MdnError(
            f"dataset {spec.dataset!r} holds samples of shape {shape[1:]}, but the model was trained on {loaded.sample_shape}.",
            where=str(inputs),
            hint="new inputs must look like the training inputs.",
        )
    n = shape[0]
    ids = read_ids(inputs, spec.ids_dataset)
    id_column = id_column or spec.id_column
    table = read_table(table_path, id_column)  # ids as text: '007' stays '007'
    if id_column is not None and ids is None and id_column not in table.columns:
        id_column = None  # neither side has ids: match by row order
    table = align_table(table, ids, id_column, n, str(table_path), f"{inputs}:{spec.dataset}")
    missing = [c for c in loaded.design.metadata if c not in table.columns]
    if missing:
        raise MdnError(
            f"the table has no metadata column(s) {', '.join(map(repr, missing))}, which the model's MDN layers need in eval mode.",
            where=str(table_path),
            hint=f"MDN subtracts the metadata's effect per row; give a table with {', '.join(loaded.design.metadata)} (columns are: {', '.join(map(str, table.columns))}).",
        )
    design_rows = apply_design(loaded.design, table, str(table_path)).astype(np.float32)
    if ids is None:
        ids = table[id_column].to_numpy() if id_column else np.arange(n)

    def batches(size: int):
        with h5py.File(inputs, "r") as f:
            ds = f[spec.dataset]
            for start in range(0, n, size):
                part = slice(start, min(start + size, n))
                yield part, torch.from_numpy(np.ascontiguousarray(ds[part], dtype=np.float32)), torch.from_numpy(design_rows[part])

    return Source(str(inputs), ids, table, batches)


def meta_table(loaded: LoadedRun, source: Source) -> pd.DataFrame:
    """The table rows matching the features: id, label, preserved and metadata columns."""
    spec = loaded.spec.data
    id_name = spec.id_column or "id"
    columns = [c for c in dict.fromkeys([spec.label, *loaded.design.preserve, *loaded.design.metadata]) if c in source.table.columns and c != id_name]
    out = source.table[columns].copy()
    out.insert(0, id_name, source.ids)
    return out


# -- extraction --------------------------------------------------------------------------------
def _dataset_paths(layers: Sequence[str]) -> dict[str, str]:
    return {layers[0]: "features"} if len(layers) == 1 else {name: f"features/{name}" for name in layers}


def _create_features(f: h5py.File, path: str, n: int, d: int, batch_size: int) -> h5py.Dataset:
    chunk_rows = max(1, min(n, batch_size, CHUNK_BYTES // (4 * max(d, 1))))
    return f.create_dataset(path, shape=(n, d), dtype="float32", chunks=(chunk_rows, d), compression="gzip", compression_opts=4, shuffle=True)


def _file_attrs(loaded: LoadedRun, layers: Sequence[str], source: Source) -> dict:
    """What makes the file self-describing: where the features come from and how."""
    spec = loaded.spec
    return {
        "layers": list(layers),
        "run": str(loaded.run_dir.resolve()),
        "checkpoint": str(loaded.checkpoint.resolve()),
        "epoch": int(loaded.state.get("epoch", -1)),
        "spec_hash": str(loaded.state.get("spec_hash", spec_hash(spec))),
        "source": source.description,
        "id_column": spec.data.id_column or "id",
        "metadata": list(loaded.design.metadata),
        "preserve": list(loaded.design.preserve),
        "tool": f"mdn {__version__}",
    }


def _write_ids(f: h5py.File, ids: np.ndarray) -> None:
    if ids.dtype.kind in "OUS":
        f.create_dataset("ids", data=np.asarray(ids, dtype=object).astype(str).astype(object), dtype=h5py.string_dtype())
    else:
        f.create_dataset("ids", data=ids)


def extract(
    loaded: LoadedRun,
    layers: Sequence[str],
    source: Source,
    output: str | Path,
    *,
    meta_out: str | Path | None = None,
    batch_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Run ``source`` through the model and stream the features of ``layers`` into ``output``.

    One layer -> dataset ``features`` (n, d); several -> ``features/<name>``. Both files are
    written under temporary names and renamed at the end, so a failure leaves nothing behind.
    """
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise MdnError("no layer given.", where="--layer", hint="name at least one layer (`mdn layers RUNDIR` lists them).")
    network, device = loaded.network, loaded.device
    modules = {name: network.feature_module(name) for name in layers}
    paths = _dataset_paths(layers)
    batch_size = batch_size or loaded.spec.train.batch_size
    n = len(source.ids)
    started = time.perf_counter()
    captured: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach()))
        for name, module in modules.items()
    ]
    shapes: dict[str, list[int]] = {}
    try:
        with contextlib.ExitStack() as outputs:  # exits in reverse: both renamed only when all went well
            tmp = outputs.enter_context(atomic_path(output))
            meta_tmp = outputs.enter_context(atomic_path(meta_out)) if meta_out is not None else None
            with h5py.File(tmp, "w", rdcc_nbytes=8 * CHUNK_BYTES) as f:
                datasets: dict[str, h5py.Dataset] = {}
                network.eval()
                with torch.no_grad():
                    for part, x, design in source.batches(batch_size):
                        captured.clear()
                        with metadata(network, design.to(device)):
                            network(x.to(device))
                        for name in layers:
                            out = captured[name]
                            flat = out.reshape(out.shape[0], -1).float().cpu().numpy()
                            if name not in datasets:
                                shapes[name] = list(out.shape[1:])
                                datasets[name] = _create_features(f, paths[name], n, flat.shape[1], batch_size)
                                datasets[name].attrs.update({"layer": name, "sample_shape": shapes[name], "after_mdn": isinstance(modules[name], MetadataNormBase)})
                            datasets[name][part] = flat
                        if progress is not None:
                            progress(part.stop, n)
                _write_ids(f, source.ids)
                f.attrs.update(_file_attrs(loaded, layers, source))
            if meta_tmp is not None:
                meta_table(loaded, source).to_csv(meta_tmp, index=False)
    finally:
        for handle in handles:
            handle.remove()
    seconds = time.perf_counter() - started
    return {
        "output": str(output),
        "meta_out": str(meta_out) if meta_out is not None else None,
        "n": n,
        "source": source.description,
        "checkpoint": str(loaded.checkpoint),
        "datasets": {paths[name]: [n, int(np.prod(shapes[name]))] for name in layers},
        "seconds": round(seconds, 3),
        "samples_per_second": round(n / seconds, 1) if seconds > 0 else None,
    }
