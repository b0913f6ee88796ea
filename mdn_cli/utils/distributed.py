"""Process groups for DistributedDataParallel training (torchrun), and the `--nproc` launcher.

Under torchrun (``WORLD_SIZE`` > 1 in the environment) ``session`` joins the process group: gloo
on CPU, nccl on GPU. Outside it everything here is a single-process no-op, so the training loop
has one code path. torch is imported only to join a group or to place tensors: a process that
never imported torch.distributed has no group, so single-process commands (`mdn audit`) can ask.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

from mdn_cli.utils.errors import MdnError


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes checkpoints, metrics and progress."""
        return self.rank == 0


def _running_group():
    """torch.distributed while a process group is running, else None (never imports torch)."""
    dist = sys.modules.get("torch.distributed")
    return dist if dist is not None and dist.is_available() and dist.is_initialized() else None


def world() -> World:
    dist = _running_group()
    if dist is not None:
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def rank() -> int:
    """This process's rank: the joined group's, else torchrun's (``RANK``) before ``session`` joins it."""
    dist = _running_group()
    return dist.get_rank() if dist is not None else int(os.environ.get("RANK", 0))


def _env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextlib.contextmanager
def session(device: str) -> Iterator[World]:
    """Join the torchrun process group for the duration (nothing to do in a single process)."""
    if _env_world_size() <= 1 or _running_group() is not None:
        yield world()
        return
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise MdnError("this PyTorch build has no torch.distributed.", where="--nproc", hint="run in one process (without --nproc).")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        yield world()
        dist.barrier()  # every process is done before the group goes (rank 0 may still be writing)
    finally:
        dist.destroy_process_group()


def resolve_device(name: str, where: str = "train.device"):
    """The ``torch.device``; auto: the GPU when there is one; asking for cuda without one is an input error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise MdnError("CUDA is not available on this machine.", where=where, hint="use cpu or auto.")
    return torch.device(name)


def device_for(base):
    """One GPU per process under torchrun (``cuda:LOCAL_RANK``); CPU stays CPU."""
    if base.type == "cuda" and world().size > 1:
        import torch

        return torch.device("cuda", world().local_rank)
    return base


def shard(rows, w: World):
    """This rank's share of a global batch: every ``size``-th row from ``rank``.

    Over an epoch this is DistributedSampler's split of the shuffled indices, without its padding
    (a padded duplicate row would enter the MDN statistics twice).
    """
    return rows[w.rank :: w.size]


def all_sum(values: Sequence[float], device) -> list[float]:
    """Sums of plain numbers over the processes (metrics), unchanged in a single process."""
    dist = _running_group()
    if dist is None or dist.get_world_size() == 1:
        return list(values)
    import torch

    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def barrier() -> None:
    dist = _running_group()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def peer_failed(exc: BaseException) -> bool:
    """Whether ``exc`` is only the echo of another training process's failure (its connection closed), which that process reports."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not isinstance(exc, RuntimeError):
        return False
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, dist.DistError) or any(sign in text for sign in ("Connection closed by peer", "Connection reset by peer", "Broken pipe"))


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m mdn_cli ARGV`` in ``nproc`` processes with torchrun; return its exit code.

    The processes' messages pass through, an error that several processes report alike once.
    """
    command = [sys.executable, "-m", "mdn_cli.utils._torchrun", "--standalone", f"--nproc_per_node={nproc}", "-m", "mdn_cli", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, bufsize=1)
    reported = set()
    for line in process.stderr:
        if line.startswith("error: "):
            if line in reported:
                continue
            reported.add(line)
        sys.stderr.write(line)
        sys.stderr.flush()
    return process.wait()
