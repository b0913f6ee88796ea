"""Distance correlation between features and metadata: the exact tiled U/V statistics and their tests.

A small functional API (like the ``dcor`` package's), pure and testable: arrays in, results out;
the options of ``distance_correlation`` are small frozen dataclasses.
Raises plain ``ValueError``; imports nothing of mdn_cli but ``validation``.

The names are imported from ``dcor`` when first asked for (PEP 562): a module that needs only
``validation`` or ``metrics`` does not load the numba kernels.
"""

import importlib

__all__ = ["DcorResult", "Engine", "IndependenceTest", "Interval", "Tiles", "dcor2", "dcor_t_test", "distance_correlation"]


def __getattr__(name: str):
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.dcor"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
