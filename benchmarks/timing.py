"""The benchmarks' shared timer (scripts here import it as `from timing import best_time`)."""

from __future__ import annotations

import time
from typing import Callable


def best_time(function: Callable[[], object], repeats: int = 3) -> float:
    """The fastest of ``repeats`` calls, in seconds: the least disturbed by other work on the machine."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)
