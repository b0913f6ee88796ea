"""Metadata Normalization for any PyTorch model: functional forms, modules, model-level helpers.

Laid out like ``torch.nn``: ``functional`` (the computations), ``_functions`` (autograd nodes
with hand-written backward passes), ``kernels`` (the two products everything is made of),
``modules`` (the layers and their lazy twins, state in buffers), ``helpers`` (the metadata
context, attach-by-name, ``fit_gram``, ``refit_beta``), ``gram`` (the Gram inverse) and
``layer_types`` (the layer names a sequential spec may use). Imports nothing else of mdn_cli.

Each name is imported from its module when first asked for (PEP 562), so ``gram_inverse``,
which is numpy only, comes without torch (`mdn residualize` needs no more).
"""

import importlib

_HOMES = {
    "functional": ("batch_beta", "batch_metadata_norm", "metadata_norm", "penalty_metadata_norm", "rls_update"),
    "gram": ("CollinearDesignError", "gram_inverse"),
    "helpers": ("attach_key", "attach_metadata_norm", "fit_gram", "layer_outputs", "mdn_penalty", "metadata", "metadata_norm_layers",
                "penalty_parameters", "penalty_pass", "refit_beta", "set_sync"),
    "modules": ("LazyMetadataNorm", "LazyPenaltyMetadataNorm", "LazyRecursiveMetadataNorm", "MetadataNorm", "MetadataNormBase",
                "PenaltyMetadataNorm", "RecursiveMetadataNorm"),
}
_HOME_OF = {name: module for module, exported in _HOMES.items() for name in exported}
__all__ = sorted(_HOME_OF)


def __getattr__(name: str):
    if name not in _HOME_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOME_OF[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
