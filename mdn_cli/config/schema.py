"""The spec's schema: one pydantic model per section, with checks that report key paths and hints."""

from __future__ import annotations

import inspect
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from mdn_cli.config.issues import Loc, Problem, SpecError, fail, make_issue, suggest
from mdn_cli.config.yamlio import show_value

_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"  # a module name inside nn.Sequential
_DOTTED = r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$"  # a named_modules() path
_FACTORY = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")
PATTERN_MESSAGES = {
    _NAME: ("must be a plain name (letters, digits and _, not starting with a digit)", "e.g. `name: fc1`."),
    _DOTTED: ("must be a layer name from named_modules()", "e.g. `fc1` or `layer4.1.conv2`."),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a setting of .inf or .nan is a spec error


class ClipSpec(_Section):
    """How a video becomes samples: clips of ``frames`` frames, every ``stride``-th (``data.clips.ClipSampler``)."""

    frames: int = Field(ge=1, strict=True, examples=[16])
    stride: int = Field(1, ge=1, strict=True, examples=[2])
    train: Literal["random", "center"] = Field("random", examples=["random"])  # where a training clip starts
    eval_clips: int = Field(1, ge=1, strict=True, examples=[3])  # clips per video at evaluation, spread evenly; scores averaged per video


class DataSpec(_Section):
    """Where samples come from and which table columns play which role."""

    inputs: Path | None = Field(None, examples=["images.h5"])
    path_column: str | None = Field(None, min_length=1, examples=["path"])
    root: Path | None = Field(None, examples=["images/"])
    channels: Literal[1, 3] | None = Field(None, examples=[1])
    transform: list[Any] = Field(default_factory=list, examples=[[{"resize": {"size": [64, 64]}}]])
    augment: list[Any] = Field(default_factory=list, examples=[[{"flip": {"axes": [1]}}]])
    clip: ClipSpec | None = Field(None, examples=[None])  # the samples are videos (files or frame folders), read as (C, T, H, W) clips
    dataset: str = Field("x", min_length=1, examples=["x"])
    ids_dataset: str = Field("ids", min_length=1, examples=["ids"])
    table: Path = Field(examples=["meta.csv"])
    id_column: str | None = Field(None, examples=["id"])
    split_column: str | None = Field(None, examples=["split"])
    split_file: Path | None = Field(None, examples=[None])  # CSV of (id_column or `row`, split); overrides split_column (what `--folds` writes)
    val_fraction: float = Field(0.2, gt=0, lt=1, strict=True, examples=[0.2])
    label: str = Field(examples=["label"])
    metadata: list[str] = Field(min_length=1, examples=[["cf"]])
    categorical: list[str] = Field(default_factory=list, examples=[["site"]])
    stage_column: str | None = Field(None, min_length=1, examples=[None])  # train the stages in order, train.epochs each (continual learning)

    @field_validator("transform", "augment")
    @classmethod
    def _steps(cls, value: list[Any], info: ValidationInfo) -> list[Any]:
        """Parsed by the transforms module, whose problems carry key paths inside the list."""
        if not checks_with_torch(info):
            return value
        from mdn_cli.data.transforms import TransformSpecError, parse_steps  # lazy: it imports torch

        try:
            parse_steps(value)
        except TransformSpecError as exc:
            raise fail(*[(path, message, hint) for path, message, hint in exc.problems]) from None
        return value

    @model_validator(mode="after")
    def _one_input_source(self) -> DataSpec:
        """Samples come from an HDF5 file (`inputs`) or from files named in the table (`path_column`), not both."""
        if self.inputs is not None and self.path_column is not None:
            raise fail((("path_column",), "cannot be used together with data.inputs",
                        "keep `inputs` (one HDF5 file) or `path_column` (one file per row, named in the table)."))
        if self.inputs is None and self.path_column is None:
            raise fail(((), "needs either `inputs` or `path_column`",
                        "give an HDF5 file (`inputs: images.h5`) or the table column that names each sample's file (`path_column: path`)."))
        problems = [((key,), "is only used with data.path_column", "remove it, or read files listed in the table.")
                    for key in ("root", "channels") if getattr(self, key) is not None and self.path_column is None]
        if self.clip is not None and self.inputs is not None and (self.clip.train != "center" or self.clip.eval_clips != 1):
            problems.append((("clip",), "with data.inputs the clips are cut already (one per video, as `mdn pack` writes them)",
                             "keep clip.train: center and clip.eval_clips: 1, or read the videos with data.path_column."))
        if problems:
            raise fail(*problems)
        return self

    @field_validator("metadata")
    @classmethod
    def _column_roles(cls, metadata: list[str], info: ValidationInfo) -> list[str]:
        """A field validator (not a model one) so that it runs even when other data keys are wrong."""
        roles = {info.data.get(key): role for key, role in
                 (("split_column", "the split column"), ("id_column", "the id column"), ("label", "the label"))}
        problems = []
        for i, column in enumerate(metadata):
            if column in metadata[:i]:
                problems.append(((i,), f"{column!r} is listed twice", "list each column once."))
            elif column == info.data.get("label"):
                problems.append(((i,), f"the label {column!r} cannot be metadata",
                                 "MDN would remove the target from the features; to keep its effect list it in mdn.preserve."))
            elif column in roles:
                problems.append(((i,), f"{column!r} is {roles[column]}, not metadata", "remove it from data.metadata."))
        if problems:
            raise fail(*problems)
        return metadata


def checks_with_torch(info: ValidationInfo) -> bool:
    """Whether to run the checks that import torch (layer types, transform steps): off for a spec that `mdn train` checked when it wrote it."""
    return (info.context or {}).get("check_with_torch", True)


class LayerSpec(BaseModel):
    """One entry of `model.layers`: a `type` from `LAYER_TYPES`, an optional `name`, its keyword arguments."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["conv2d"])
    name: Annotated[str, Field(pattern=_NAME)] | None = Field(None, examples=["fc1"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _known_type_and_arguments(self, info: ValidationInfo) -> LayerSpec:
        if not checks_with_torch(info):
            return self
        from mdn_cli.nn.layer_types import LAYER_TYPES  # lazy: it imports torch

        if self.type not in LAYER_TYPES:
            raise fail((("type",), f"unknown layer type {self.type!r}", suggest(self.type, sorted(LAYER_TYPES), "layer types")))
        accepted = _keyword_parameters(LAYER_TYPES[self.type])
        if accepted is not None:
            unknown = [key for key in self.kwargs if key not in accepted]
            if unknown:
                raise fail(*[((key,), f"a {self.type} layer takes no argument {key!r}", suggest(key, accepted, "arguments"))
                              for key in unknown])
        return self


def _keyword_parameters(factory: Any) -> list[str] | None:
    """The keyword arguments ``factory`` accepts, or None when it accepts any (or cannot be inspected)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


class InitSpec(_Section):
    """Weights loaded into the built model before training (a pretrained backbone, another run).

    ``path`` is a state dict, a checkpoint holding one under ``key``, or an `mdn train` checkpoint
    (its model's ``body.`` weights; the MDN state of the other data is not taken). Only keys that
    start with ``prefix`` are used, with the prefix removed; the result names the model's own
    parameters and buffers (``named_modules()`` names, as `mdn layers` lists them).
    """

    path: Path = Field(examples=["weights.pt"])
    key: str | None = Field(None, min_length=1, examples=["state_dict"])
    strict: bool = Field(True, strict=True, examples=[True])
    prefix: str = Field("", examples=["backbone."])


class ModelSpec(_Section):
    """The network: a sequential layer list, or a factory returning any nn.Module."""

    layers: Annotated[list[LayerSpec], Field(min_length=1)] | None = Field(None, examples=[[{"type": "linear", "out_features": 1}]])
    factory: str | None = Field(None, examples=["torchvision.models:resnet18"])
    kwargs: dict[str, Any] = Field(default_factory=dict, examples=[{"num_classes": 2}])
    mdn_after: list[Annotated[str, Field(pattern=_DOTTED)]] = Field(default_factory=list, examples=[["layer4", "fc1"]])
    init: InitSpec | None = Field(None, examples=[{"path": "weights.pt"}])

    @field_validator("factory")
    @classmethod
    def _factory_form(cls, value: str | None) -> str | None:
        if value is not None and not _FACTORY.match(value):
            raise fail(((), f"{value!r} is not of the form module.path:callable", "e.g. `factory: torchvision.models:resnet18`."))
        return value

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
        problems = []
        if self.layers is not None and self.factory is not None:
            problems.append((("factory",), "cannot be used together with model.layers", "keep either `layers` or `factory`."))
        if self.layers is None and self.factory is None:
            problems.append(((), "needs either `layers` or `factory`",
                             "list the layers (`layers: [{type: linear, out_features: 1}]`) or name a callable (`factory: pkg.module:make_net`)."))
        if self.kwargs and self.factory is None:
            problems.append((("kwargs",), "is only used with model.factory", "remove it, or give layer arguments on the layers themselves."))
        for key in ("pretrained", "weights"):  # torchvision's and timm's ways to fetch weights at run time
            if self.factory and self.factory.split(".")[0].split(":")[0] in ("torchvision", "timm") and self.kwargs.get(key) not in (None, False):
                problems.append((("kwargs", key), f"would download weights when the model is built ({key}: {self.kwargs[key]!r})",
                                 "download the file once, set model.init.path to it (strict: false when the head differs), and remove this key."))
        seen: dict[str, int] = {}
        for i, layer in enumerate(self.layers or ()):
            if layer.name is not None and layer.name in seen:
                problems.append((("layers", i, "name"), f"{layer.name!r} is already the name of model.layers[{seen[layer.name]}]",
                                 "give each layer a unique name."))
            seen.setdefault(layer.name, i)
        if problems:
            raise fail(*problems)
        return self


MdnVariant = Literal["batch", "recursive", "penalty"]

# the settings that belong to one variant only (setting them for another is an error)
VARIANT_KEYS = {"momentum": "batch", "ridge": "batch", "forgetting": "recursive", "regularizer": "recursive",
                "process_noise": "recursive", "beta_lr": "penalty"}


class MdnSpec(_Section):
    """How MDN layers estimate the metadata effect: batch (the paper), recursive (R-MDN) or penalty (PMDN)."""

    variant: MdnVariant = Field("batch", examples=["batch"])
    momentum: Annotated[float, Field(gt=0, le=1, strict=True)] | None = Field(0.1, examples=[0.1])
    preserve: list[str] = Field(default_factory=list, examples=[["label"]])
    standardize: bool = Field(True, strict=True, examples=[True])  # false: numeric columns in their units, the references' raw design
    ridge: float = Field(0.0, ge=0, strict=True, examples=[0.0])
    forgetting: float = Field(0.999, gt=0, le=1, strict=True, examples=[0.999])
    regularizer: float = Field(1e-2, gt=0, strict=True, examples=[1e-2])
    process_noise: float = Field(1e-4, ge=0, strict=True, examples=[1e-4])
    beta_lr: float = Field(0.045, gt=0, strict=True, examples=[0.045])

    @field_validator("preserve")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        twice = [((i,), f"{c!r} is listed twice", "list each column once.") for i, c in enumerate(value) if c in value[:i]]
        if twice:
            raise fail(*twice)
        return value

    @model_validator(mode="after")
    def _settings_fit_variant(self) -> MdnSpec:
        """A changed setting of another variant would be silently ignored: say so (defaults are fine)."""
        problems = [((key,), f"is a setting of variant {owner}, not of {self.variant}",
                     f"remove it, or set `variant: {owner}`.")
                    for key, owner in VARIANT_KEYS.items()
                    if owner != self.variant and getattr(self, key) != type(self).model_fields[key].default]
        if problems:
            raise fail(*problems)
        return self


class EarlyStoppingSpec(_Section):
    """Stop when ``train.select`` has not improved by more than ``min_delta`` for ``patience`` epochs (Lightning's EarlyStopping)."""

    patience: int = Field(ge=1, strict=True, examples=[5])
    min_delta: float = Field(0.0, ge=0, strict=True, examples=[0.001])


class PlateauSpec(_Section):
    """``ReduceLROnPlateau`` on ``train.select``: the rate times ``factor`` after ``patience`` epochs without improvement."""

    factor: float = Field(0.1, gt=0, lt=1, strict=True, examples=[0.5])
    patience: int = Field(10, ge=0, strict=True, examples=[3])
    min_lr: float = Field(0.0, ge=0, strict=True, examples=[1e-6])
    threshold: float = Field(1e-4, ge=0, strict=True, examples=[1e-4])  # relative improvement, torch's 'rel' mode



class TrainSpec(_Section):
    """The training loop and what it monitors."""

    task: Literal["binary", "multiclass", "regression"] = Field(examples=["binary"])
    epochs: int = Field(30, ge=1, strict=True, examples=[30])
    batch_size: int = Field(200, ge=1, strict=True, examples=[200])
    optimizer: Literal["adam", "adamw", "sgd"] = Field("adam", examples=["adam"])
    lr: float = Field(1e-4, gt=0, strict=True, examples=[1e-4])
    weight_decay: float = Field(0.0, ge=0, strict=True, examples=[0.0])
    seed: int = Field(0, ge=0, strict=True, examples=[0])
    monitor: Annotated[str, Field(pattern=_DOTTED)] | None = Field(None, examples=["fc1"])
    select: Literal["val_loss", "val_acc", "val_balanced_acc", "val_auc"] = Field("val_loss", examples=["val_loss"])
    dcor_max_samples: Annotated[int, Field(ge=4, strict=True)] | None = Field(None, examples=[2000])
    device: Literal["auto", "cpu", "cuda"] = Field("auto", examples=["auto"])
    freeze: list[Annotated[str, Field(pattern=_DOTTED)]] = Field(default_factory=list, examples=[["layer1", "layer2"]])
    scheduler: Literal["none", "cosine", "step", "plateau"] = Field("none", examples=["cosine"])
    plateau: PlateauSpec | None = Field(None, examples=[{"factor": 0.5, "patience": 3}])  # with scheduler: plateau; None: torch's defaults
    early_stopping: EarlyStoppingSpec | None = Field(None, examples=[{"patience": 5, "min_delta": 0.001}])
    loggers: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list, examples=[["tensorboard", "mlflow"]])
    warmup_epochs: int = Field(0, ge=0, strict=True, examples=[5])
    step_size: int = Field(20, ge=1, strict=True, examples=[20])
    gamma: float = Field(0.8, gt=0, le=1, strict=True, examples=[0.8])
    grad_clip: Annotated[float, Field(gt=0, strict=True)] | None = Field(None, examples=[1.0])
    class_weights: Literal["balanced"] | None = Field(None, examples=["balanced"])
    precision: Literal["32", "bf16-mixed", "16-mixed"] = Field("32", examples=["bf16-mixed"])
    num_workers: Annotated[int, Field(ge=0, strict=True)] | None = Field(None, examples=[2])  # file inputs; None: default_num_workers()
    checkpoint_every: int = Field(1, ge=1, strict=True, examples=[1])  # epochs between checkpoints (and the records that land with them)

    @model_validator(mode="after")
    def _select_fits_task(self) -> TrainSpec:
        if self.select != "val_loss" and self.task == "regression":
            raise fail((("select",), f"{self.select} needs a classification task", "use `select: val_loss` for regression."))
        if self.select == "val_auc" and self.task != "binary":
            raise fail((("select",), "val_auc is recorded for the binary task only", "use val_balanced_acc or val_loss."))
        return self

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_number(cls, value: Any) -> Any:
        """`precision: 32` is a YAML number; Lightning's name is the string."""
        return "32" if value == 32 and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _training_options_fit(self) -> TrainSpec:
        """Settings that would be silently ignored, or a schedule with no epochs left after warm-up."""
        problems = []
        for key in ("step_size", "gamma"):
            if self.scheduler != "step" and getattr(self, key) != type(self).model_fields[key].default:
                problems.append(((key,), "is a setting of scheduler step", "remove it, or set `scheduler: step`."))
        if self.plateau is not None and self.scheduler != "plateau":
            problems.append((("plateau",), "is a setting of scheduler plateau", "remove it, or set `scheduler: plateau`."))
        problems += [(("loggers", i), f"{name!r} is listed twice", "list each logger once.") for i, name in enumerate(self.loggers) if name in self.loggers[:i]]
        if self.warmup_epochs and self.warmup_epochs >= self.epochs:
            problems.append((("warmup_epochs",), f"{self.warmup_epochs} warm-up epochs leave none of the {self.epochs} epochs",
                             "use fewer warm-up epochs than train.epochs."))
        if self.class_weights is not None and self.task == "regression":
            problems.append((("class_weights",), "weights classes, but train.task is regression", "remove it, or use a classification task."))
        if problems:
            raise fail(*problems)
        return self


def cross_section_problems(metadata: list, preserve: list, categorical: list) -> list[Problem]:
    """Checks that span `data` and `mdn`; plain lists, so they run even when other keys have errors."""
    problems = []
    for i, column in enumerate(preserve):
        if column in metadata:
            problems.append((("mdn", "preserve", i), f"{column!r} is also in data.metadata",
                             "a column is either removed (data.metadata) or kept (mdn.preserve), not both."))
    for i, column in enumerate(categorical):
        if column not in metadata and column not in preserve:
            problems.append((("data", "categorical", i), f"{column!r} is neither in data.metadata nor in mdn.preserve",
                             "only those columns are encoded; add it to one of them or remove it here."))
    return problems


def staging_problems(data: DataSpec, train: TrainSpec) -> list[Problem]:
    """A staged run (``data.stage_column``) trains every stage for ``train.epochs``: nothing stops it early."""
    if data.stage_column is not None and train.early_stopping is not None:
        return [(("train", "early_stopping"), "stops a whole run, but a staged run (data.stage_column) trains every stage for train.epochs",
                 "remove it, or remove data.stage_column.")]
    return []


SECTIONS: dict[str, type[BaseModel]] = {"data": DataSpec, "model": ModelSpec, "mdn": MdnSpec, "train": TrainSpec}


class Spec(BaseModel):
    """A validated spec. Remembers its file and the line of each key, to point errors found later at them."""

    model_config = ConfigDict(extra="forbid")

    data: DataSpec
    model: ModelSpec
    mdn: MdnSpec = Field(default_factory=MdnSpec)
    train: TrainSpec

    _source: Path | None = PrivateAttr(None)
    _lines: dict[str, int] = PrivateAttr(default_factory=dict)
    _overridden: frozenset[str] = PrivateAttr(frozenset())

    @model_validator(mode="after")
    def _cross_sections(self) -> Spec:
        problems = cross_section_problems(self.data.metadata, self.mdn.preserve, self.data.categorical) + staging_problems(self.data, self.train)
        if problems:
            raise fail(*problems)
        return self

    def __eq__(self, other: object) -> bool:
        """Equal when they describe the same run, wherever and however they were written."""
        if not isinstance(other, Spec):
            return NotImplemented
        return self.model_dump() == other.model_dump()

    @property
    def source(self) -> Path | None:
        return self._source

    def line_of(self, key_path: str) -> int | None:
        """Line of ``key_path`` ("train.lr", "model.layers[2].type") in the spec file, if it is written there."""
        return self._lines.get(key_path)

    def error(self, issues: list[tuple[str, str, str | None]]) -> SpecError:
        """A SpecError for problems found after loading (e.g. by the model builder), located like load errors."""
        located = [make_issue(path, message, hint, self._lines, self._overridden) for path, message, hint in issues]
        return SpecError(located, where=str(self._source) if self._source else None)


# -- schema walking (for `--set` paths and "did you mean") --


def unwrap(annotation: Any) -> Any:
    """The type under Annotated[...] and Optional[...]."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        else:
            return annotation


def is_model(schema: Any) -> bool:
    return inspect.isclass(schema) and issubclass(schema, BaseModel)


def schema_at(loc: Loc) -> Any:
    """The type found at ``loc`` below Spec, or None when the schema has nothing there."""
    schema: Any = Spec
    for part in loc:
        schema = unwrap(schema)
        origin = typing.get_origin(schema)
        if is_model(schema):
            if part in schema.model_fields:
                schema = schema.model_fields[part].annotation
            elif schema.model_config.get("extra") == "allow":
                schema = Any
            else:
                return None
        elif origin is list and isinstance(part, int):
            schema = typing.get_args(schema)[0]
        elif origin is dict or schema is Any:
            schema = Any
        else:
            return None
    return schema


def known_keys(loc: Loc) -> list[str]:
    schema = unwrap(schema_at(loc))
    return list(schema.model_fields) if is_model(schema) else []


def example_hint(loc: Loc) -> str | None:
    """`e.g. lr: 0.0001`, from the field's documented example."""
    parent = unwrap(schema_at(loc[:-1])) if loc else None
    if not is_model(parent) or loc[-1] not in parent.model_fields:
        return None
    examples = parent.model_fields[loc[-1]].examples
    return f"e.g. `{loc[-1]}: {show_value(examples[0])}`." if examples else None
