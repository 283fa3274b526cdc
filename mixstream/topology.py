"""Where this process sits in the job: rank and world size, read when they are true.

Trainers create the process group late (HF ``TrainingArguments`` does it inside its
constructor), so a stream built first must not freeze ``rank 0 of 1``: the topology is read
when iteration starts and when a checkpoint is taken — from ``torch.distributed`` when it is
initialised, else from the ``RANK``/``WORLD_SIZE`` variables that torchrun, Slurm launchers
and accelerate set before the script starts.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def resolve_topology(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): explicit values first, then torch.distributed, then the environment."""
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        else:
            rank = _env_int("RANK") if rank is None else rank
            world_size = _env_int("WORLD_SIZE") if world_size is None else world_size
        rank = 0 if rank is None else rank
        world_size = 1 if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world_size {world_size}")
    return int(rank), int(world_size)


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def check_ranks_agree(digest: str, batch: int) -> None:
    """Under torch.distributed, every rank must hold the same weight log and position (a
    collective: every rank calls it at a checkpoint)."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    mine = (digest, batch)
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    if any(x != everyone[0] for x in everyone):
        raise RuntimeError(
            f"ranks disagree on the stream's weight log or position ({everyone}); every rank must "
            f"make the same set_weights calls at the same steps (controllers all-reduce their "
            f"feedback for this) — a change on one rank only makes ranks repeat samples")
