"""Metadata Normalization for any PyTorch model: functional forms, modules, model-level helpers.

Laid out like ``torch.nn``: ``functional`` (the computations), ``_functions`` (autograd nodes
with hand-written backward passes), ``kernels`` (the two products everything is made of),
``modules`` (the layers and their lazy twins, state in buffers), ``helpers`` (the metadata
context, attach-by-name, ``fit_gram``, ``refit_beta``), ``gram`` (the Gram inverse) and
``layer_types`` (the layer names a sequential spec may use). Imports nothing else of mdn_cli.
"""

from mdn_cli.nn.functional import batch_beta, batch_metadata_norm, metadata_norm, penalty_metadata_norm, rls_update
from mdn_cli.nn.gram import CollinearDesignError, gram_inverse
from mdn_cli.nn.helpers import (
    attach_key,
    attach_metadata_norm,
    fit_gram,
    layer_outputs,
    mdn_penalty,
    metadata,
    metadata_norm_layers,
    penalty_parameters,
    penalty_pass,
    refit_beta,
    set_sync,
)
from mdn_cli.nn.modules import (
    LazyMetadataNorm,
    LazyPenaltyMetadataNorm,
    LazyRecursiveMetadataNorm,
    MetadataNorm,
    MetadataNormBase,
    PenaltyMetadataNorm,
    RecursiveMetadataNorm,
)

__all__ = [
    "CollinearDesignError", "LazyMetadataNorm", "LazyPenaltyMetadataNorm", "LazyRecursiveMetadataNorm", "MetadataNorm",
    "MetadataNormBase", "PenaltyMetadataNorm", "RecursiveMetadataNorm", "attach_key", "attach_metadata_norm", "batch_beta",
    "batch_metadata_norm", "fit_gram", "gram_inverse", "layer_outputs", "mdn_penalty", "metadata", "metadata_norm", "metadata_norm_layers",
    "penalty_metadata_norm", "penalty_parameters", "penalty_pass", "refit_beta", "rls_update", "set_sync",
]
