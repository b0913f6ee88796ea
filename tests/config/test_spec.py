"""The YAML spec: every error message (key path, line, hint), overrides, round trips, paths."""

from __future__ import annotations

import sys
import textwrap
import types
from pathlib import Path

import pydantic
import pytest

from mdn_cli.utils.errors import MdnError, did_you_mean
from mdn_cli.config import Spec, SpecError, SpecIssue, dump_spec, load_spec, spec_hash

# Line numbers below refer to this text.
BASE = """\
data:
  inputs: images.h5
  table: meta.csv
  label: label
  metadata: [cf]
model:
  layers:
    - {type: conv2d, out_channels: 16, kernel_size: 5, name: conv1}
    - {type: mdn}
    - {type: relu}
    - {type: flatten}
    - {type: linear, out_features: 1, name: fc1}
train:
  task: binary
"""


def conv2d(out_channels, kernel_size, stride=1, padding=0): ...
def linear(out_features, bias=True): ...
def relu(): ...
def flatten(start_dim=1, end_dim=-1): ...
def mdn(momentum=0.1): ...
def anything(**kwargs): ...


@pytest.fixture(autouse=True)
def layer_types(monkeypatch):
    """A small LAYER_TYPES, so these tests do not depend on the real list (mdn_cli.nn.layer_types)."""
    fake = types.ModuleType("mdn_cli.nn.layer_types")
    fake.LAYER_TYPES = {f.__name__: f for f in (conv2d, linear, relu, flatten, mdn, anything)}
    monkeypatch.setitem(sys.modules, "mdn_cli.nn.layer_types", fake)


def write(folder: Path, text: str = BASE, name: str = "spec.yaml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for data_file in ("images.h5", "meta.csv"):
        (folder / data_file).touch()
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def issues_of(path: Path, overrides=()) -> dict[str, SpecIssue]:
    with pytest.raises(SpecError) as caught:
        load_spec(path, overrides)
    return {issue.key_path: issue for issue in caught.value.issues}


def only_issue(path: Path, overrides=()) -> SpecIssue:
    issues = issues_of(path, overrides)
    assert len(issues) == 1, issues
    return next(iter(issues.values()))


# --- valid specs ------------------------------------------------------------------------------


def test_minimal_spec_gets_defaults_and_absolute_paths(tmp_path):
    spec = load_spec(write(tmp_path))
    assert spec.data.inputs == tmp_path / "images.h5" and spec.data.inputs.is_absolute()
    assert spec.data.table == tmp_path / "meta.csv"
    assert (spec.data.dataset, spec.data.ids_dataset, spec.data.id_column) == ("x", "ids", None)
    assert (spec.data.categorical, spec.data.split_column, spec.data.val_fraction) == ([], None, 0.2)
    assert (spec.mdn.variant, spec.mdn.momentum, spec.mdn.preserve, spec.mdn.ridge) == ("batch", 0.1, [], 0.0)
    train = spec.train
    assert (train.task, train.epochs, train.batch_size, train.optimizer, train.lr) == ("binary", 30, 200, "adam", 1e-4)
    assert (train.weight_decay, train.seed, train.monitor, train.select) == (0.0, 0, None, "val_loss")
    assert (train.dcor_max_samples, train.device) == (None, "auto")
    assert spec.model.factory is None and spec.model.mdn_after == []
    assert [layer.type for layer in spec.model.layers] == ["conv2d", "mdn", "relu", "flatten", "linear"]
    assert spec.model.layers[0].name == "conv1"
    assert spec.model.layers[0].kwargs == {"out_channels": 16, "kernel_size": 5}
    assert spec.source == tmp_path / "spec.yaml"
    assert spec.line_of("train.task") == 14 and spec.line_of("model.layers[4].type") == 12
    assert spec.line_of("train.lr") is None


def test_paths_are_relative_to_the_spec_folder_not_the_cwd(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.h5").touch()
    path = write(tmp_path / "specs", BASE.replace("images.h5", "../data/x.h5"))
    monkeypatch.chdir(tmp_path / "data")
    spec = load_spec(Path("..") / "specs" / "spec.yaml")
    assert spec.data.inputs == tmp_path / "data" / "x.h5"
    assert spec.source == path


def test_factory_model(tmp_path):
    text = BASE.split("model:")[0] + (
        "model:\n  factory: torchvision.models:resnet18\n  kwargs: {num_classes: 1}\n  mdn_after: [layer4.1, fc]\n"
        "train:\n  task: binary\n"
    )
    spec = load_spec(write(tmp_path, text))
    assert spec.model.layers is None
    assert spec.model.kwargs == {"num_classes": 1} and spec.model.mdn_after == ["layer4.1", "fc"]


def test_exponent_floats_without_a_dot_are_numbers(tmp_path):
    spec = load_spec(write(tmp_path, BASE + "  lr: 1e-3\n"))
    assert spec.train.lr == 1e-3


def test_layer_with_var_kwargs_accepts_any_argument(tmp_path):
    spec = load_spec(write(tmp_path, BASE.replace("{type: relu}", "{type: anything, whatever: 3}")))
    assert spec.model.layers[2].kwargs == {"whatever": 3}


# --- round trip and hash ----------------------------------------------------------------------


def test_dump_then_load_gives_an_equal_spec_and_hash(tmp_path):
    text = BASE.replace("metadata: [cf]", "metadata: [cf, site]\n  categorical: [site]") + "mdn:\n  preserve: [label]\n  momentum: null\n"
    spec = load_spec(write(tmp_path / "a", text), ["train.lr=3e-4", "model.layers[0].padding=2"])
    dumped = tmp_path / "elsewhere" / "config.yaml"
    dumped.parent.mkdir()
    dumped.write_text(dump_spec(spec))
    again = load_spec(dumped)
    assert again == spec
    assert spec_hash(again) == spec_hash(spec)
    assert len(spec_hash(spec)) == 16 and int(spec_hash(spec), 16) >= 0
    assert str(tmp_path / "a" / "images.h5") in dump_spec(spec)
    assert "- {type: conv2d" in dump_spec(spec)


def test_hash_follows_content_not_layout(tmp_path):
    spec = load_spec(write(tmp_path / "a"))
    reordered = load_spec(write(tmp_path / "a", "train: {task: binary}\n" + BASE.replace("train:\n  task: binary\n", ""), "b.yaml"))
    assert spec_hash(reordered) == spec_hash(spec) and reordered == spec
    assert spec_hash(load_spec(write(tmp_path / "a"), ["train.epochs=5"])) != spec_hash(spec)


def test_strings_that_look_like_numbers_survive_the_round_trip(tmp_path):
    spec = load_spec(write(tmp_path, BASE.replace("metadata: [cf]", "metadata: ['1e-4']")))
    path = tmp_path / "dumped.yaml"
    path.write_text(dump_spec(spec))
    assert load_spec(path).data.metadata == ["1e-4"]


# --- overrides --------------------------------------------------------------------------------


def test_overrides_parse_yaml_values(tmp_path):
    spec = load_spec(write(tmp_path), [
        "train.epochs=5", "train.lr=1e-3", "mdn.momentum=null", "data.metadata=[cf, site]",
        "train.monitor=fc1", "model.layers[0].out_channels=8", "model.layers.4.out_features=2",
    ])
    assert spec.train.epochs == 5 and spec.train.lr == 1e-3 and spec.mdn.momentum is None
    assert spec.data.metadata == ["cf", "site"] and spec.train.monitor == "fc1"
    assert spec.model.layers[0].kwargs["out_channels"] == 8 and spec.model.layers[4].kwargs["out_features"] == 2


def test_override_of_a_missing_section_creates_it(tmp_path):
    assert load_spec(write(tmp_path), ["mdn.preserve=[label]"]).mdn.preserve == ["label"]


def test_override_unknown_key_path_suggests_the_nearest(tmp_path):
    issue = only_issue(write(tmp_path), ["train.epoch=5"])
    assert issue.key_path == "train.epoch" and issue.from_override and issue.line is None
    assert issue.message == "unknown key" and issue.hint == "did you mean `train.epochs`?"
    assert "train.epoch (from --set): unknown key. Hint: did you mean `train.epochs`?" in issue.render()


def test_override_bad_value_is_reported_from_set_not_from_the_file(tmp_path):
    issue = only_issue(write(tmp_path, BASE + "  epochs: 3\n"), ["train.epochs=-2"])
    assert issue.key_path == "train.epochs" and issue.from_override and issue.line is None
    assert issue.render() == "train.epochs (from --set): must be >= 1 (got -2). Hint: e.g. `epochs: 30`."


def test_override_errors_index_form_and_syntax(tmp_path):
    path = write(tmp_path)
    issue = only_issue(path, ["model.layers[7].out_channels=8"])
    assert issue.key_path == "model.layers[7]" and "out of range (model.layers has 5 items)" in issue.message
    issue = only_issue(path, ["train.epochs"])
    assert issue.message == "is not KEY=VALUE" and "--set train.epochs=5" in issue.hint
    issue = only_issue(path, ["train.lr.x=1"])
    assert issue.key_path == "train.lr.x" and "train.lr holds a single value" in issue.message
    assert only_issue(path, ["model.layers.first=1"]).message == "model.layers is a list: expected an index"
    assert only_issue(path, ["train[0]=1"]).message == "train is not a list"
    issue = only_issue(path, ["train.lr=[1"])
    assert issue.key_path == "train.lr" and "is not valid YAML" in issue.message
    assert issue.hint == "to pass it as text, quote it: `--set 'train.lr=\"[1\"'`."


def test_override_keys_of_layer_entries_are_checked_against_the_layer_type(tmp_path):
    issue = only_issue(write(tmp_path), ["model.layers[0].kernel=3"])
    assert (issue.key_path, issue.from_override) == ("model.layers[0].kernel", True)
    assert issue.hint == "did you mean `kernel_size`?"


# --- error messages from the file -------------------------------------------------------------


def test_yaml_syntax_error_has_its_line_and_a_hint(tmp_path):
    issue = only_issue(write(tmp_path, BASE.replace("  label: label", "\tlabel: label")))
    assert issue.line == 4 and issue.message.startswith("invalid YAML")
    assert issue.hint == "indent with spaces: YAML does not allow tabs."
    issue = only_issue(write(tmp_path, BASE.replace("label: label", "label: a: b")))
    assert issue.line == 4 and "quote values" in issue.hint


def test_unknown_keys_suggest_known_keys_at_their_level(tmp_path):
    issues = issues_of(write(tmp_path, BASE + "  epoch: 3\n  zzz: 1\nmdnn: {}\n"))
    assert (issues["train.epoch"].line, issues["train.epoch"].hint) == (15, "did you mean `epochs`?")
    assert issues["train.zzz"].hint.startswith("known keys of train: task, epochs, batch_size")
    assert (issues["mdnn"].line, issues["mdnn"].message, issues["mdnn"].hint) == (17, "unknown section", "did you mean `mdn`?")


def test_wrong_types_and_values(tmp_path):
    text = BASE + "  lr: -1\n  batch_size: 2.5\n  optimizer: adamm\n  seed: no\n  dcor_max_samples: 2\nmdn:\n  momentum: 0\n  variant: recursiv\n"
    issues = issues_of(write(tmp_path, text))
    assert set(issues) == {"train.lr", "train.batch_size", "train.optimizer", "train.seed", "train.dcor_max_samples", "mdn.momentum", "mdn.variant"}
    assert issues["train.lr"].render() == "train.lr (line 15): must be > 0 (got -1). Hint: e.g. `lr: 0.0001`."
    assert issues["train.batch_size"].render() == "train.batch_size (line 16): must be an integer (got 2.5). Hint: e.g. `batch_size: 200`."
    assert issues["train.optimizer"].message == "must be one of adam, adamw, sgd (got adamm)"
    assert issues["train.optimizer"].hint == "did you mean `adam`?"
    assert (issues["train.seed"].line, issues["train.seed"].message) == (18, "must be an integer (got false)")
    assert issues["train.dcor_max_samples"].message == "must be >= 4 (got 2)"
    assert (issues["mdn.momentum"].line, issues["mdn.momentum"].message) == (21, "must be > 0 (got 0)")
    assert issues["mdn.variant"].message == "must be one of batch, recursive, penalty (got recursiv)"
    assert issues["mdn.variant"].hint == "did you mean `recursive`?"


def test_wrong_shapes(tmp_path):
    text = BASE.replace("metadata: [cf]", "metadata: cf").replace("label: label", "label: 3") + "mdn: 5\n"
    issues = issues_of(write(tmp_path, text))
    assert issues["data.metadata"].message == "must be a list (got cf)" and issues["data.metadata"].hint == "e.g. `metadata: [cf]`."
    assert issues["data.label"].message == "must be a string (got 3)" and issues["data.label"].hint == 'quote it: `label: "3"`.'
    assert issues["mdn"].message == "must be a mapping of keys (got 5)" and issues["mdn"].line == 15


def test_missing_required_keys_point_at_the_parent(tmp_path):
    text = BASE.replace("  label: label\n", "").replace("    - {type: mdn}", "    - {name: norm}").replace("  task: binary\n", "")
    issues = issues_of(write(tmp_path, text))
    assert (issues["data.label"].line, issues["data.label"].message, issues["data.label"].hint) == (1, "required key is missing", "e.g. `label: label`.")
    assert (issues["model.layers[1].type"].line, issues["model.layers[1].type"].hint) == (8, "e.g. `type: conv2d`.")
    assert (issues["train.task"].line, issues["train.task"].hint) == (12, "e.g. `task: binary`.")


def test_missing_sections(tmp_path):
    issues = issues_of(write(tmp_path, "data:\n  inputs: images.h5\n"))
    assert {"model", "train", "data.table", "data.label", "data.metadata"} <= set(issues)
    assert issues["train"].line is None and issues["train"].message == "required section is missing"


def test_missing_data_files_name_the_key_and_resolved_path(tmp_path):
    path = write(tmp_path, BASE.replace("images.h5", "sub/nope.h5"))
    issue = only_issue(path)
    assert (issue.key_path, issue.line) == ("data.inputs", 2)
    assert issue.message == f"file not found: {tmp_path / 'sub' / 'nope.h5'}"
    assert issue.hint == f"paths are relative to the spec file's folder ({tmp_path})."
    (tmp_path / "dir.csv").mkdir()
    assert "is a directory" in only_issue(write(tmp_path, BASE.replace("meta.csv", "dir.csv"))).message


def test_layer_entries(tmp_path):
    text = BASE.replace("kernel_size: 5", "kernel_sz: 5").replace("{type: relu}", "{type: rellu}").replace(
        "name: fc1", "name: conv1").replace("{type: flatten}", "{type: flatten, name: 2x}")
    issues = issues_of(write(tmp_path, text))
    assert issues["model.layers[0].kernel_sz"].render() == (
        "model.layers[0].kernel_sz (line 8): a conv2d layer takes no argument 'kernel_sz'. Hint: did you mean `kernel_size`?")
    assert issues["model.layers[2].type"].message == "unknown layer type 'rellu'"
    assert issues["model.layers[2].type"].hint == "did you mean `relu`?"
    assert issues["model.layers[3].name"].message.startswith("must be a plain name")
    assert set(issues) == {"model.layers[0].kernel_sz", "model.layers[2].type", "model.layers[3].name"}


def test_layer_names_are_unique(tmp_path):
    issue = only_issue(write(tmp_path, BASE.replace("name: fc1", "name: conv1")))
    assert (issue.key_path, issue.line) == ("model.layers[4].name", 12)
    assert issue.message == "'conv1' is already the name of model.layers[0]" and issue.hint == "give each layer a unique name."


def test_unknown_layer_type_without_a_near_match_lists_the_types(tmp_path):
    issue = only_issue(write(tmp_path, BASE.replace("{type: relu}", "{type: transformer}")))
    assert issue.hint == "known layer types: anything, conv2d, flatten, linear, mdn, relu."


def test_model_needs_exactly_one_of_layers_and_factory(tmp_path):
    both = BASE.replace("model:\n", "model:\n  factory: pkg.mod:make\n")
    issue = only_issue(write(tmp_path, both))
    assert (issue.key_path, issue.line, issue.message) == ("model.factory", 7, "cannot be used together with model.layers")
    neither = BASE.split("model:")[0] + "model:\n  mdn_after: [fc]\ntrain:\n  task: binary\n"
    issue = only_issue(write(tmp_path, neither))
    assert (issue.key_path, issue.line, issue.message) == ("model", 6, "needs either `layers` or `factory`")
    assert "factory: pkg.module:make_net" in issue.hint


def test_factory_form_and_kwargs_without_factory(tmp_path):
    factory = BASE.split("model:")[0] + "model:\n  factory: pkg/mod.py\ntrain:\n  task: binary\n"
    issue = only_issue(write(tmp_path, factory))
    assert (issue.key_path, issue.line) == ("model.factory", 7)
    assert issue.message == "'pkg/mod.py' is not of the form module.path:callable"
    issue = only_issue(write(tmp_path, BASE.replace("model:\n", "model:\n  kwargs: {a: 1}\n")))
    assert (issue.key_path, issue.message) == ("model.kwargs", "is only used with model.factory")


def test_column_roles(tmp_path):
    text = BASE.replace("metadata: [cf]", "metadata: [cf, label, cf, split]\n  split_column: split\n  categorical: [site, cf]")
    text += "mdn:\n  preserve: [cf]\n"
    issues = issues_of(write(tmp_path, text))
    assert issues["data.metadata[1]"].message == "the label 'label' cannot be metadata"
    assert "mdn.preserve" in issues["data.metadata[1]"].hint
    assert issues["data.metadata[2]"].message == "'cf' is listed twice"
    assert issues["data.metadata[3]"].message == "'split' is the split column, not metadata"
    assert issues["data.categorical[0]"].message == "'site' is neither in data.metadata nor in mdn.preserve"
    assert (issues["mdn.preserve[0]"].line, issues["mdn.preserve[0]"].message) == (18, "'cf' is also in data.metadata")
    assert len(issues) == 5


def test_select_val_acc_needs_classification(tmp_path):
    issue = only_issue(write(tmp_path, BASE.replace("task: binary", "task: regression\n  select: val_acc")))
    assert (issue.key_path, issue.line, issue.hint) == ("train.select", 15, "use `select: val_loss` for regression.")


def test_duplicate_keys_are_errors(tmp_path):
    issue = only_issue(write(tmp_path, BASE + "  task: multiclass\n"))
    assert (issue.key_path, issue.line, issue.message) == ("train.task", 15, "duplicate key (also on line 14)")


def test_all_errors_at_once_sorted_by_line_in_one_readable_message(tmp_path):
    text = BASE.replace("images.h5", "missing.h5").replace("kernel_size", "kernel_sz").replace(
        "metadata: [cf]", "metadata: [cf]\n  val_fraction: 1") + "  lr: 0\nmdn:\n  preserve: [cf]\n"
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        load_spec(path, ["train.epochs=0"])
    error = caught.value
    assert isinstance(error, MdnError) and error.where == str(path)
    assert [i.key_path for i in error.issues] == [
        "train.epochs", "data.inputs", "data.val_fraction", "model.layers[0].kernel_sz", "train.lr", "mdn.preserve[0]"]
    lines = str(error).splitlines()
    assert lines[0] == f"{path}: 6 problems in the spec:"
    assert lines[1] == "  train.epochs (from --set): must be >= 1 (got 0). Hint: e.g. `epochs: 30`."
    assert lines[3] == "  data.val_fraction (line 6): must be < 1 (got 1). Hint: e.g. `val_fraction: 0.2`."
    assert "pydantic" not in str(error) and "http" not in str(error) and "Traceback" not in str(error)


# --- the spec file itself ---------------------------------------------------------------------


@pytest.mark.parametrize("content, message", [
    (None, "spec file not found"),
    ("", "the spec is empty"),
    ("- a\n- b\n", "the top level must be a mapping (got [a, b])"),
])
def test_unusable_spec_files(tmp_path, content, message):
    path = tmp_path / "spec.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    (issue,) = caught.value.issues
    assert issue.message == message and issue.hint
    assert caught.value.where == str(path)


def test_a_directory_suggests_its_yaml_files(tmp_path):
    write(tmp_path / "d", name="mdn.yaml")
    issue = only_issue(tmp_path / "d")
    assert issue.message == "is a directory, not a spec file" and issue.hint == "pass one of its YAML files: mdn.yaml."


# --- errors found later, and direct construction ----------------------------------------------


def test_spec_error_locates_later_problems_like_load_errors(tmp_path):
    path = write(tmp_path, BASE + "  monitor: fc9\n")
    spec = load_spec(path, ["model.mdn_after=[conv9]"])
    error = spec.error([("train.monitor", "the model has no layer 'fc9'.", "did you mean fc1?"),
                        ("model.mdn_after[0]", "the model has no layer 'conv9'.", None)])
    assert isinstance(error, SpecError) and error.where == str(path)
    first, second = error.issues
    assert (first.line, first.from_override) == (15, False)
    assert (second.line, second.from_override) == (None, True)
    assert str(error).splitlines()[1:] == [
        "  train.monitor (line 15): the model has no layer 'fc9'. Hint: did you mean fc1?",
        "  model.mdn_after[0] (from --set): the model has no layer 'conv9'.",
    ]


def test_cross_section_checks_also_hold_for_specs_built_in_python(tmp_path):
    spec = load_spec(write(tmp_path))
    fields = spec.model_dump()
    fields["mdn"]["preserve"] = ["cf"]
    with pytest.raises(pydantic.ValidationError, match="also in data.metadata"):
        Spec(**fields)


def test_arguments_to_a_layer_that_takes_none(tmp_path):
    issue = only_issue(write(tmp_path, BASE.replace("{type: relu}", "{type: relu, inplace: true}")))
    assert issue.key_path == "model.layers[2].inplace" and issue.hint == "there are no arguments; remove it."


def test_paths_must_be_text(tmp_path):
    issue = only_issue(write(tmp_path, BASE.replace("inputs: images.h5", "inputs: [a.h5]")))
    assert (issue.key_path, issue.message) == ("data.inputs", "must be a file path (got [a.h5])")


# --- MDN variants -------------------------------------------------------------------------------


def test_variant_settings_are_read_and_dumped_for_their_variant_only(tmp_path):
    spec = load_spec(write(tmp_path, BASE + "mdn:\n  variant: recursive\n  forgetting: 0.99\n  regularizer: 1.0e-6\n"))
    assert (spec.mdn.variant, spec.mdn.forgetting, spec.mdn.regularizer) == ("recursive", 0.99, 1e-6)
    dumped = dump_spec(spec)
    assert "forgetting: 0.99" in dumped and "momentum" not in dumped and "beta_lr" not in dumped
    assert load_spec(write(tmp_path / "again", dumped)) == spec
    penalty = load_spec(write(tmp_path, BASE), ["mdn.variant=penalty", "mdn.beta_lr=1e-3"])
    assert penalty.mdn.beta_lr == 1e-3
    recursive = load_spec(write(tmp_path, BASE), ["mdn.variant=recursive", "mdn.process_noise=0"])
    assert (recursive.mdn.process_noise, recursive.mdn.regularizer) == (0.0, 1e-2)


def test_variant_settings_out_of_range(tmp_path):
    text = BASE + "mdn:\n  variant: recursive\n  forgetting: 1.5\n  regularizer: 0\n"
    issues = issues_of(write(tmp_path, text))
    assert issues["mdn.forgetting"].render() == "mdn.forgetting (line 17): must be <= 1 (got 1.5). Hint: e.g. `forgetting: 0.999`."
    assert issues["mdn.regularizer"].message == "must be > 0 (got 0)"
    issues = issues_of(write(tmp_path, BASE), ["mdn.variant=recursive", "mdn.process_noise=-1", "mdn.forgetting=0"])
    assert set(issues) == {"mdn.process_noise", "mdn.forgetting"} and issues["mdn.process_noise"].from_override


def test_a_setting_of_another_variant_is_an_error(tmp_path):
    issue = only_issue(write(tmp_path, BASE + "mdn:\n  forgetting: 0.9\n"))
    assert issue.key_path == "mdn.forgetting" and issue.line == 16
    assert issue.message == "is a setting of variant recursive, not of batch"
    assert issue.hint == "remove it, or set `variant: recursive`."
    issue = only_issue(write(tmp_path, BASE + "mdn:\n  momentum: 0.5\n"), ["mdn.variant=penalty"])
    assert issue.key_path == "mdn.momentum" and "variant batch, not of penalty" in issue.message
    # a default value does no harm: a batch spec switches variant with one override
    assert load_spec(write(tmp_path, BASE + "mdn:\n  momentum: 0.1\n"), ["mdn.variant=recursive"]).mdn.variant == "recursive"


def test_did_you_mean_names_the_closest_and_only_equally_close_others():
    keys = ["train.epochs", "train.select", "train.device"]
    assert did_you_mean("train.epoch", keys, "-") == "did you mean `train.epochs`?"
    assert did_you_mean("fc", ["fc1", "fc2", "conv1"], "-") == "did you mean `fc1`, `fc2`?"
    assert did_you_mean("zzz", keys, "known keys: ...") == "known keys: ..."
