"""Metadata Normalization for any PyTorch model: functional forms, modules, model-level helpers.

Laid out like ``torch.nn``: ``functional`` (the computations), ``_functions`` (autograd nodes
with hand-written backward passes), ``kernels`` (the two products everything is made of),
``modules`` (the layers and their lazy twins, state in buffers), ``helpers`` (the metadata
context, attach-by-name, ``fit_gram``, ``refit_beta``), ``gram`` (the Gram inverse) and
``layer_types`` (the layer names a sequential spec may use). Imports nothing else of mdn_cli.

Each name is imported from its module when first asked for (PEP 562), so ``gram_inverse``,
which is numpy only, comes without torch (`mdn residualize` needs no more).
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "functional": ["batch_beta", "batch_metadata_norm", "metadata_norm", "penalty_metadata_norm", "rls_update"],
    "gram": ["CollinearDesignError", "gram_inverse"],
    "helpers": ["attach_key", "attach_metadata_norm", "fit_gram", "layer_outputs", "mdn_penalty", "metadata", "metadata_norm_layers",
                "penalty_parameters", "penalty_pass", "refit_beta", "set_sync"],
    "modules": ["LazyMetadataNorm", "LazyPenaltyMetadataNorm", "LazyRecursiveMetadataNorm", "MetadataNorm", "MetadataNormBase",
                "PenaltyMetadataNorm", "RecursiveMetadataNorm"],
})
