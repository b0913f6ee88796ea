"""The YAML spec of `mdn train`: schema, loading with line numbers, `--set` overrides, error translation.

Every problem in a spec is reported at once, each with its key path, its line in the file (or
"from --set") and a hint, so a spec is fixed in one round instead of one error per run.
"""

from mdn_cli.config.issues import SpecError, SpecIssue
from mdn_cli.config.loading import dump_spec, load_spec, same_training, spec_hash
from mdn_cli.config.schema import DataSpec, EarlyStoppingSpec, MdnSpec, ModelSpec, PlateauSpec, Spec, TrainSpec

__all__ = ["DataSpec", "EarlyStoppingSpec", "MdnSpec", "ModelSpec", "PlateauSpec", "Spec", "SpecError", "SpecIssue", "TrainSpec", "dump_spec", "load_spec", "same_training", "spec_hash"]
