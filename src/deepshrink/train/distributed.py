"""Data-parallel training through the standard engine: torch.distributed, launched by torchrun.

The engine reads torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK) and, when
there is more than one process, joins the process group (gloo on CPU, nccl on
GPU), wraps the model in DistributedDataParallel, and gives each process an
equal slice of every global batch. No launcher of our own: the same command
runs alone or under ``torchrun --nproc_per_node=N``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) run.

    Example:
        >>> DistContext().is_main
        True
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: torch.device) -> DistContext:
    """Join the process group that torchrun describes, if any.

    Example:
        >>> setup_distributed(torch.device("cpu")).world_size  # not under torchrun
        1
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return DistContext(dist.get_world_size(), dist.get_rank(), int(os.environ.get("LOCAL_RANK", 0)), True)


def teardown_distributed(ctx: DistContext) -> None:
    """Leave the process group if this run created it.

    Example:
        >>> teardown_distributed(DistContext())
    """
    if ctx.owns_group and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op alone).

    Example:
        >>> barrier(DistContext())
    """
    if ctx.enabled:
        dist.barrier()
