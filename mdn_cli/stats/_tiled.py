"""One pass over the upper-triangle distance tiles: which tiles, which engine, which threads and processes.

Both engines fill the same pass arrays (``_pass_arrays``). The numba engine shares the tiles
out to worker threads in a fixed way, each with its own sums, so they are added in one order
(the same input gives the same bytes, for a given thread count); with ``share_over_processes``
every process of the torch.distributed group takes its share of the tiles and the sums are
all-reduced.
"""

from __future__ import annotations

import enum
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from mdn_cli.stats._kernel import accumulate_tile
from mdn_cli.stats._pass_arrays import OUTPUT_NAMES, PassArrays, masked
from mdn_cli.stats._torch_engine import accumulate as torch_accumulate
from mdn_cli.stats.validation import check_finite

# Pairs closer than this fraction of (|x_i|^2 + |x_j|^2) lose precision in the
# |x_i|^2 + |x_j|^2 - 2 x_i.x_j form; their distance is recomputed from the coordinates.
_NEAR_PAIR_FRACTION = 1.0 / 64.0


class Engine(enum.Enum):
    """The implementation that accumulates the tiles (the same sums, to rounding)."""

    NUMBA = "numba"  # tiles (Gram blocks) from the device, sums on the CPU in numba worker threads
    TORCH = "torch"  # tiles and sums stay on the device


@dataclass(frozen=True)
class Tiles:
    """How the pass runs: tile dtype and size, ``progress(done, total)`` after each tile, the device.

    ``engine`` None picks numba on the CPU and torch on other devices. ``share_over_processes``:
    every process of the running torch.distributed group calls with the same arguments; the
    tiles are shared out and the sums all-reduced, so each gets the one-process results (off by
    default: a rank may audit alone while others wait, as in training).
    """

    dtype: torch.dtype = torch.float32
    tile_size: int = 1024
    progress: Optional[Callable[[int, int], None]] = None
    device: torch.device | str = "cpu"
    engine: Optional[Engine] = None
    share_over_processes: bool = False

    def __post_init__(self):  # names become values here, so a bad one fails before any work
        object.__setattr__(self, "device", torch.device(self.device))
        object.__setattr__(self, "engine", None if self.engine is None else Engine(self.engine))


def features_matrix(x, dtype: torch.dtype) -> torch.Tensor:
    """(n, ...) -> (n, d) in ``dtype``, translated to near the origin (distances do not change)."""
    matrix = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    matrix = matrix.detach().to("cpu").reshape(matrix.shape[0], -1)
    if not bool(torch.isfinite(matrix).all()):  # the check in torch; the message from the shared one
        check_finite(matrix.double().numpy())
    centre = matrix.sum(dim=0, dtype=torch.float64) / max(matrix.shape[0], 1)
    return (matrix.to(dtype) - centre.to(dtype)).contiguous()


def tile_pass(features: torch.Tensor, arrays: PassArrays, options: Tiles) -> PassArrays:
    """One pass over the upper-triangle tiles; returns ``arrays`` with every output filled in.

    Per-row sums come back restricted to each mask's rows.
    """
    n = features.shape[0]
    tile = max(16, min(options.tile_size, n))
    lo, hi = arrays.lo, arrays.hi
    starts = range(0, n, tile)
    tiles = [(i0, j0) for i0 in starts for j0 in starts if j0 >= i0]
    # Tiles that no mask touches (strata far from each other in row order) are skipped.
    tiles = [(i0, j0) for i0, j0 in tiles
             if ((lo < i0 + tile) & (hi > i0) & (lo < j0 + tile) & (hi > j0)).any()]  # fmt: skip
    rank, processes = _process_share() if options.share_over_processes else (0, 1)
    tiles = tiles[rank::processes]  # shared: each process of the group takes every processes-th tile
    engine = options.engine or (Engine.NUMBA if options.device.type == "cpu" else Engine.TORCH)
    accumulate = _numba_accumulate if engine is Engine.NUMBA else torch_accumulate
    total = accumulate(features, arrays, tiles, tile, options.device, options.progress, _NEAR_PAIR_FRACTION)
    if processes > 1:
        total = _summed_over_processes(total)
    return masked(total)


def _process_share() -> tuple[int, int]:
    """(rank, number of processes) of the running torch.distributed group, else (0, 1).

    Every process computes the same jobs from the same inputs; the tiles are shared out and the
    sums all-reduced (gloo on CPU, nccl on GPU), so each process ends with the one-process sums.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _summed_over_processes(arrays: PassArrays) -> PassArrays:
    """Every output of the pass added over the process group."""
    device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    summed = {}
    for name in OUTPUT_NAMES:
        tensor = torch.from_numpy(np.ascontiguousarray(getattr(arrays, name), dtype=np.float64)).to(device)
        torch.distributed.all_reduce(tensor)
        summed[name] = tensor.cpu().numpy()
    return arrays._replace(**summed)


def _numba_accumulate(features, arrays: PassArrays, tiles, tile, device, progress, near_fraction: float) -> PassArrays:
    """The tiles shared out to worker threads, each with its own outputs (no locks, no barriers)."""
    n = features.shape[0]
    near_fraction = np.array([near_fraction], dtype=arrays.weights.dtype)
    norms_np = (features * features).sum(dim=1).numpy()
    features_np = features.numpy()
    features_on_device = features.to(device)
    n_workers = max(1, min(torch.get_num_threads(), len(tiles)))
    accumulators = [arrays._replace(**{name: np.zeros_like(getattr(arrays, name)) for name in OUTPUT_NAMES})
                    for _ in range(n_workers)]  # fmt: skip
    lock = threading.Lock()
    done = [0]

    def work(worker, own):
        for i0, j0 in tiles[worker::n_workers]:
            i1, j1 = min(i0 + tile, n), min(j0 + tile, n)
            gram = (features_on_device[i0:i1] @ features_on_device[j0:j1].T).cpu().numpy()
            accumulate_tile(
                gram, norms_np[i0:i1], norms_np[j0:j1], features_np[i0:i1], features_np[j0:j1],
                i0, j0, i0 == j0, near_fraction, **own._asdict(),
            )  # fmt: skip
            if progress is not None:
                with lock:
                    done[0] += 1
                    progress(done[0], len(tiles))

    # One single-threaded matmul + kernel per worker thread, no barrier between them. Each worker
    # takes a fixed share of the tiles (every n_workers-th), so the sums are added in the same
    # order on every run: the same input gives the same bytes out (for a given thread count).
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(n_workers) as pool:
            for future in [pool.submit(work, w, own) for w, own in enumerate(accumulators)]:
                future.result()
    finally:
        torch.set_num_threads(threads_before)
    return arrays._replace(**{name: np.sum([getattr(own, name) for own in accumulators], axis=0) for name in OUTPUT_NAMES})
