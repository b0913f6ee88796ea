"""Distance correlation between features and metadata: the exact tiled U/V statistics and their tests.

A small functional API (like the ``dcor`` package's), pure and testable: arrays in, results out;
the options of ``distance_correlation`` are small frozen dataclasses.
Raises plain ``ValueError``; imports nothing of mdn_cli but ``validation``.
"""

from mdn_cli.stats.dcor import DcorResult, Engine, IndependenceTest, Interval, Tiles, dcor2, dcor_t_test, distance_correlation

__all__ = ["DcorResult", "Engine", "IndependenceTest", "Interval", "Tiles", "dcor2", "dcor_t_test", "distance_correlation"]
