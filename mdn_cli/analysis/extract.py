"""A trained run's layer outputs -> a self-describing HDF5 file, streamed batch by batch.

The model comes from the run directory alone (``model.checkpoint.load_run``: the resolved spec and the
checkpoint's weights, design matrix and input shape), so new data (``model.rows``) needs neither
the training data nor a Gram refit; "the features of a layer" are the output of
``Network.feature_module`` (after its MDN, if any). MDN layers run in eval mode with their running
beta and the rows' metadata, as in the paper. Nothing is held per sample but ids and design rows,
so memory does not grow with n x d.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Callable, Sequence

import h5py
import numpy as np
import pandas as pd

from mdn_cli import __version__
from mdn_cli.config import spec_hash
from mdn_cli.data.h5 import CHUNK_BYTES, create_chunked, write_ids
from mdn_cli.model.checkpoint import LoadedRun
from mdn_cli.model.inference import eval_batches, flat, per_row
from mdn_cli.model.rows import Source
from mdn_cli.nn import MetadataNormBase
from mdn_cli.utils.errors import MdnError
from mdn_cli.utils.fileio import atomic_path


def meta_table(loaded: LoadedRun, source: Source, per_clip: bool = False) -> pd.DataFrame:
    """The table rows matching the features: id, label, preserved and metadata columns (with ``per_clip``, each video's row per clip, and ``clip``)."""
    spec = loaded.spec.data
    id_name = spec.id_column or "id"
    columns = [c for c in dict.fromkeys([spec.label, *loaded.design.preserve, *loaded.design.metadata]) if c in source.table.columns and c != id_name]
    out = source.table[columns].copy()
    out.insert(0, id_name, source.ids)
    if per_clip:
        out = out.loc[out.index.repeat(source.views)].reset_index(drop=True)
        out.insert(1, "clip", np.tile(np.arange(source.views), len(source.ids)))
    return out



# -- extraction --------------------------------------------------------------------------------
def _dataset_paths(layers: Sequence[str]) -> dict[str, str]:
    return {layers[0]: "features"} if len(layers) == 1 else {name: f"features/{name}" for name in layers}


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


def extract(
    loaded: LoadedRun,
    layers: Sequence[str],
    source: Source,
    output: str | Path,
    *,
    meta_out: str | Path | None = None,
    batch_size: int | None = None,
    per_clip: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Run ``source`` through the model and stream the features of ``layers`` into ``output``.

    One layer -> dataset ``features`` (n, d); several -> ``features/<name>``. Both files are
    written under temporary names and renamed at the end, so a failure leaves nothing behind.
    A video's row is the mean of its evaluation clips' features; with ``per_clip`` every clip is
    a row (its video's id, and its index in dataset ``clip``).
    """
    layers = list(dict.fromkeys(layers))
    if not layers:
        raise MdnError("no layer given.", where="--layer", hint="name at least one layer (`mdn layers RUNDIR` lists them).")
    network, device = loaded.network, loaded.device
    modules = {name: network.feature_module(name) for name in layers}
    paths = _dataset_paths(layers)
    batch_size = batch_size or loaded.spec.train.batch_size
    views = source.views
    per_clip = per_clip and views > 1
    n = len(source.ids) * (views if per_clip else 1)
    started = time.perf_counter()
    shapes: dict[str, list[int]] = {}
    with contextlib.ExitStack() as outputs:  # exits in reverse: both renamed only when all went well
        tmp = outputs.enter_context(atomic_path(output))
        meta_tmp = outputs.enter_context(atomic_path(meta_out)) if meta_out is not None else None
        with h5py.File(tmp, "w", rdcc_nbytes=8 * CHUNK_BYTES) as f:
            datasets: dict[str, h5py.Dataset] = {}
            for (part, _x, _design), _out, captured in eval_batches(network, source.batches(batch_size), device, modules, views):
                if per_clip:
                    part = slice(part.start * views, part.stop * views)
                for name in layers:  # streamed: nothing of past batches is kept
                    out = captured[name]
                    rows = (flat(out) if per_clip else per_row(flat(out), views)).numpy()
                    if name not in datasets:
                        shapes[name] = list(out.shape[1:])
                        datasets[name] = create_chunked(f, paths[name], (n, rows.shape[1]), batch_size)
                        datasets[name].attrs.update({"layer": name, "sample_shape": shapes[name], "after_mdn": isinstance(modules[name], MetadataNormBase)})
                    datasets[name][part] = rows
                if progress is not None:
                    progress(part.stop, n)
            write_ids(f, np.repeat(source.ids, views) if per_clip else source.ids)
            if per_clip:
                f.create_dataset("clip", data=np.tile(np.arange(views), len(source.ids)))
            f.attrs.update(_file_attrs(loaded, layers, source))
            f.attrs["clips_per_row"] = views if per_clip else 1
        if meta_tmp is not None:
            meta_table(loaded, source, per_clip).to_csv(meta_tmp, index=False)
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

