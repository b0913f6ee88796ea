"""Distance correlation between features and metadata: the exact tiled U/V statistics and their tests.

A small functional API (like the ``dcor`` package's), pure and testable: arrays in, results out;
the options of ``distance_correlation`` are small frozen dataclasses.
Raises plain ``ValueError``; imports nothing of mdn_cli but ``validation``.

The names are imported from ``dcor`` when first asked for (PEP 562): a module that needs only
``validation`` or ``metrics`` does not load the numba kernels.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(__name__, submod_attrs={
    "dcor": ["DcorResult", "Engine", "IndependenceTest", "Interval", "Tiles", "dcor2", "dcor_t_test", "distance_correlation"],
})
