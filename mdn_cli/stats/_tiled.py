"""One pass over the upper-triangle distance tiles: which tiles, which engine, which threads and processes.

Both engines fill the same pass arrays (``_pass_arrays``). The numba engine shares the tiles
out to worker threads in a fixed way, each with its own sums, so they are added in one order
(the same input gives the same bytes, for a given thread count); with ``share_over_processes``
every process of the torch.distributed group takes its share of the tiles and the sums are
all-reduced. On the CPU the pass needs numpy and numba only: torch is imported for another
device or for a process group, so `mdn audit` starts without it.
"""

from __future__ import annotations

import enum
import functools
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from mdn_cli.stats._kernel import accumulate_tile
from mdn_cli.stats._pass_arrays import OUTPUT_NAMES, PassArrays, masked
from mdn_cli.stats.validation import as_matrix, check_finite, float_dtype

# Pairs closer than this fraction of (|x_i|^2 + |x_j|^2) lose precision in the
# |x_i|^2 + |x_j|^2 - 2 x_i.x_j form; their distance is recomputed from the coordinates.
_NEAR_PAIR_FRACTION = 1.0 / 64.0


class Engine(enum.Enum):
    """The implementation that accumulates the tiles (the same sums, to rounding)."""

    NUMBA = "numba"  # on the CPU: each tile's Gram block by numpy's matmul, its sums by the numba kernel, in worker threads
    TORCH = "torch"  # tiles and sums stay on the device


@dataclass(frozen=True)
class Tiles:
    """How the pass runs: tile dtype and size, ``progress(done, total)`` after each tile, the device.

    ``dtype`` is float32 or float64, named as numpy or torch names it; ``device`` a torch device
    name ("cpu", "cuda:0") or a ``torch.device``. ``engine`` None picks numba on the CPU and torch
    on other devices. ``share_over_processes``:
    every process of the running torch.distributed group calls with the same arguments; the
    tiles are shared out and the sums all-reduced, so each gets the one-process results (off by
    default: a rank may audit alone while others wait, as in training).
    """

    dtype: object = np.float32
    tile_size: int = 1024
    progress: Optional[Callable[[int, int], None]] = None
    device: object = "cpu"
    engine: Optional[Engine] = None
    share_over_processes: bool = False

    def __post_init__(self):  # names become values here, so a bad one fails before any work
        object.__setattr__(self, "dtype", float_dtype(self.dtype))
        object.__setattr__(self, "device", str(self.device))
        object.__setattr__(self, "engine", None if self.engine is None else Engine(self.engine))
        if self.engine is Engine.NUMBA and not self.on_cpu:
            raise ValueError(f"the numba engine runs on the CPU; device {self.device} needs the torch engine")

    @property
    def on_cpu(self) -> bool:
        return self.device.partition(":")[0] == "cpu"  # "cpu" or "cpu:0", as torch.device(...).type


def features_matrix(x, dtype) -> np.ndarray:
    """(n, ...) -> (n, d) C-contiguous in ``dtype``, translated to near the origin (distances do not change)."""
    matrix = as_matrix(x)
    check_finite(matrix)
    centre = matrix.sum(axis=0, dtype=np.float64) / max(matrix.shape[0], 1)
    return np.ascontiguousarray(matrix.astype(dtype, copy=False) - centre.astype(dtype))


def tile_pass(features: np.ndarray, arrays: PassArrays, options: Tiles) -> PassArrays:
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
    engine = options.engine or (Engine.NUMBA if options.on_cpu else Engine.TORCH)
    if engine is Engine.NUMBA:
        accumulate = _numba_accumulate
    else:
        from mdn_cli.stats._torch_engine import accumulate
    total = accumulate(features, arrays, tiles, tile, options.device, options.progress, _NEAR_PAIR_FRACTION)
    if processes > 1:
        total = _summed_over_processes(total)
    return masked(total)


def _process_share() -> tuple[int, int]:
    """(rank, number of processes) of the running torch.distributed group, else (0, 1).

    Every process computes the same jobs from the same inputs; the tiles are shared out and the
    sums all-reduced (gloo on CPU, nccl on GPU), so each process ends with the one-process sums.
    """
    dist = sys.modules.get("torch.distributed")  # never imported: no group can be running
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _summed_over_processes(arrays: PassArrays) -> PassArrays:
    """Every output of the pass added over the process group."""
    import torch

    device = "cuda" if torch.distributed.get_backend() == "nccl" else "cpu"
    summed = {}
    for name in OUTPUT_NAMES:
        tensor = torch.from_numpy(np.ascontiguousarray(getattr(arrays, name), dtype=np.float64)).to(device)
        torch.distributed.all_reduce(tensor)
        summed[name] = tensor.cpu().numpy()
    return arrays._replace(**summed)


def _numba_accumulate(features: np.ndarray, arrays: PassArrays, tiles, tile, device, progress, near_fraction: float) -> PassArrays:
    """The tiles shared out to worker threads, each with its own outputs (no locks, no barriers)."""
    n = features.shape[0]
    near_fraction = np.array([near_fraction], dtype=arrays.weights.dtype)
    norms = np.einsum("ij,ij->i", features, features)
    n_workers = max(1, min(worker_threads(), len(tiles)))
    accumulators = [arrays._replace(**{name: np.zeros_like(getattr(arrays, name)) for name in OUTPUT_NAMES})
                    for _ in range(n_workers)]  # fmt: skip
    lock = threading.Lock()
    done = [0]

    def work(worker, own):
        for i0, j0 in tiles[worker::n_workers]:
            i1, j1 = min(i0 + tile, n), min(j0 + tile, n)
            gram = features[i0:i1] @ features[j0:j1].T
            accumulate_tile(
                gram, norms[i0:i1], norms[j0:j1], features[i0:i1], features[j0:j1],
                i0, j0, i0 == j0, near_fraction, **own._asdict(),
            )  # fmt: skip
            if progress is not None:
                with lock:
                    done[0] += 1
                    progress(done[0], len(tiles))

    # One single-threaded matmul + kernel per worker thread, no barrier between them. Each worker
    # takes a fixed share of the tiles (every n_workers-th), so the sums are added in the same
    # order on every run: the same input gives the same bytes out (for a given thread count).
    # BLAS stays on one thread also for one worker: its idle threads spin after a call, taking the
    # cores from a training process's torch threads (an epoch of the shipped spec 8% slower at 2 threads).
    with _blas_threads().limit(limits=1, user_api="blas"):
        if n_workers == 1:  # a pass of one tile (up to tile_size rows): no pool to start
            work(0, accumulators[0])
        else:
            with ThreadPoolExecutor(n_workers) as pool:
                for future in [pool.submit(work, w, own) for w, own in enumerate(accumulators)]:
                    future.result()
    return arrays._replace(**{name: np.sum([getattr(own, name) for own in accumulators], axis=0) for name in OUTPUT_NAMES})


@functools.cache
def _blas_threads():
    """numpy's BLAS, to hold to one thread in each worker (found once: a search of the loaded libraries takes milliseconds)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def worker_threads() -> int:
    """Threads for the pass: torch's setting when torch is loaded (the training process's), else
    ``OMP_NUM_THREADS`` or the cores this process may use."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    configured = os.environ.get("OMP_NUM_THREADS", "")
    return int(configured) if configured.isdigit() and int(configured) > 0 else len(os.sched_getaffinity(0))
