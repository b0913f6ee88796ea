"""The MDN regression applied after the fact to stored features: the linear, whole-set version.

Fit: ``beta = (X'X)^-1 X'Y`` on some rows, with the same ``DesignMatrix`` and ``gram_inverse`` as
the MDN layer, ``X'Y`` summed over chunks. Apply: ``Y - X[:, q:] beta[q:]``, the layer's
``metadata_norm``, so the preserved columns' part stays in the features, as in MDN and ComBat.
Features are streamed in row chunks, twice (fit, apply): memory is O(chunk x d). numpy only:
the layer's functions serve autograd, and the command starts without torch.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import pandas as pd

from mdn_cli import __version__
from mdn_cli.data.design import DesignMatrix, apply_design
from mdn_cli.data.features import FeatureFile
from mdn_cli.data.h5 import create_chunked
from mdn_cli.data.tables import align_table, read_table
from mdn_cli.nn import CollinearDesignError, gram_inverse
from mdn_cli.utils.errors import MdnError
from mdn_cli.utils.fileio import atomic_path, read_json

MODEL_FORMAT = "mdn-residualizer"
MODEL_VERSION = 1


def aligned_table(features: FeatureFile, table_source: str | Path, id_column: str | None = None) -> pd.DataFrame:
    """The table (a CSV path, or - for stdin) in feature order: joined by id when both sides have ids, else by row order.

    The id column is read as text, so ids such as '007' match the file's ids.
    """
    default = id_column or str(features.attrs.get("id_column", "id"))
    table = read_table(table_source, default)
    if id_column is None and features.ids is not None:
        id_column = default if default in table.columns else None
    return align_table(table, features.ids if id_column else None, id_column, features.shape[0], str(table_source), f"{features.path}:{features.dataset}",
                       features.clips)




# -- the model ---------------------------------------------------------------------------------
@dataclass
class Residualizer:
    """A fitted whole-set MDN: the design encoding and beta (design columns x features)."""

    design: DesignMatrix
    beta: np.ndarray
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"format": MODEL_FORMAT, "version": MODEL_VERSION, "tool": f"mdn {__version__}", "design": self.design.to_dict(),
                "columns": self.design.column_names, "beta": self.beta.tolist(), "info": self.info}

    @classmethod
    def load(cls, path: str | Path) -> "Residualizer":
        path = Path(path)
        state = read_json(path, hint="give a model saved with --save-model.")
        if not isinstance(state, dict) or state.get("format") != MODEL_FORMAT:
            raise MdnError("not a residualize model.", where=str(path), hint="give a model saved with `mdn residualize --save-model`.")
        if state.get("version") != MODEL_VERSION:
            raise MdnError(f"model format version {state.get('version')} is not supported (this tool reads {MODEL_VERSION}).", where=str(path), hint="fit it again with this version.")
        try:
            design = DesignMatrix.from_dict(state["design"])
            beta = np.asarray(state["beta"], dtype=np.float64)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MdnError(f"the model's design or beta is malformed ({type(exc).__name__}: {exc}).", where=str(path), hint="the file is damaged; fit it again.") from None
        if not np.isfinite(beta).all():
            raise MdnError("beta holds NaN or Inf.", where=str(path), hint="the file is damaged; fit it again.")
        if beta.ndim != 2 or beta.shape[0] != design.num_columns:
            raise MdnError(f"beta has shape {beta.shape}, which does not fit {design.num_columns} design columns.", where=str(path), hint="the file is damaged; fit it again.")
        return cls(design, beta, state.get("info", {}))


def fit(features: FeatureFile, table: pd.DataFrame, columns: Sequence[str], preserve: Sequence[str] = (), categorical: Sequence[str] = (),
        fit_rows: np.ndarray | None = None, ridge: float = 0.0) -> Residualizer:
    """beta of the features on ``[preserve | columns | intercept]`` over ``fit_rows`` (default: all)."""
    mask = np.ones(features.shape[0], bool) if fit_rows is None else np.asarray(fit_rows, bool)
    design = DesignMatrix(columns, preserve, categorical).fit(table[mask])
    x = design.transform(table)
    try:
        gram_inv = gram_inverse(x[mask], design.column_names, ridge)
    except CollinearDesignError as exc:
        raise MdnError(str(exc), where=str(features.path), hint="drop one of those columns from --columns/--preserve, or set --ridge (e.g. 1e-3).") from None
    cross = np.zeros((design.num_columns, features.num_features))  # X'Y over the fit rows
    for part, block in features.chunks():
        used = mask[part]
        cross += x[part][used].T @ block[used]
    info = {"features": str(features.path), "dataset": features.dataset, "n_fit": int(mask.sum()), "num_features": features.num_features, "ridge": ridge}
    return Residualizer(design, gram_inv @ cross, info)


def apply(model: Residualizer, features: FeatureFile, table: pd.DataFrame, table_name: str, output: str | Path,
          save_model: str | Path | None = None) -> dict:
    """Write ``features - X[:, metadata+intercept] beta`` (float32, same shape and dataset path) to ``output``.

    With ``save_model``, the model's JSON is written beside it; both appear only if both succeed.
    """
    if features.num_features != model.beta.shape[1]:
        raise MdnError(
            f"the model was fitted on {model.beta.shape[1]} features per sample, but {features.dataset!r} has {features.num_features}.",
            where=str(features.path),
            hint="apply the model to features of the same layer it was fitted on.",
        )
    x = apply_design(model.design, table, table_name)
    with contextlib.ExitStack() as outputs:
        tmp = outputs.enter_context(atomic_path(output))
        model_tmp = outputs.enter_context(atomic_path(save_model)) if save_model is not None else None
        with h5py.File(tmp, "w") as f:
            _write_clean(model, features, x, f)
        if model_tmp is not None:
            model_tmp.write_text(json.dumps(model.to_dict()) + "\n")
    return {"output": str(output), "dataset": features.dataset, "n": features.shape[0], "num_features": features.num_features,
            "columns": model.design.column_names, "n_fit": model.info.get("n_fit"), "fit_on": model.info.get("fit_on", "all rows"),
            "model": str(save_model) if save_model is not None else None}


def _write_clean(model: Residualizer, features: FeatureFile, x: np.ndarray, f: h5py.File) -> None:
    kept = model.design.num_preserved  # the preserved columns' part stays in the features
    out = create_chunked(f, features.dataset, features.shape)
    for part, block in features.chunks():
        clean = block - x[part][:, kept:] @ model.beta[kept:]
        out[part] = clean.reshape(-1, *features.shape[1:]).astype(np.float32)
    if features.ids is not None:
        with h5py.File(features.path, "r") as source:
            source.copy(source["ids"], f, "ids")
    f.attrs.update({**features.attrs, "residualized": list(model.design.metadata), "preserved": list(model.design.preserve),
                    "fit_on": str(model.info.get("fit_on", "all rows")), "residualized_from": f"{features.path}:{features.dataset}",
                    "tool": f"mdn {__version__}"})
