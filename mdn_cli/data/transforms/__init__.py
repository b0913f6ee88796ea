"""Transforms of one channels-first sample, (C, H, W) or (C, X, Y, Z), built from a spec's list of one-key steps.

    [{"resize": {"size": [64, 64]}}, {"center_crop": {"size": 56}}, {"zscore": {"nonzero": true}}]

Names and meanings follow torchvision.transforms.v2 and MONAI (each step says which). Random
steps draw from a generator seeded by (seed, epoch, row), so a sample's augmentation does not
depend on the number of workers or the loading order, and a resumed run continues identically.

Parsing the spec (``parse``, with the option parsers in ``options``) is apart from the steps
themselves (``steps``) and their composition (``compose``).
"""

from mdn_cli.data.transforms.compose import Compose, needs_float, output_shape, sample_generator
from mdn_cli.data.transforms.parse import TransformSpecError, parse_steps
from mdn_cli.data.transforms.steps import STEPS, Step, TransformApplyError

__all__ = ["STEPS", "Compose", "Step", "TransformApplyError", "TransformSpecError", "needs_float", "output_shape", "parse_steps", "sample_generator"]
