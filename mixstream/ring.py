"""A ring of reusable shared-memory batch slots between DataLoader workers and the trainer.

A DataLoader worker returns a batch by pickling it: every tensor is moved to a *new*
shared-memory segment (a file descriptor, an mmap, a handle to pickle) and the trainer's process
maps it again — per tensor, per batch; with 2 workers on 2 cores that, not reading or mixing,
bounded mixstream at about half of what the DataLoader itself can carry. The ring is allocated
once in the trainer's process before workers start (inherited on fork, passed by descriptor on
spawn): a worker writes batch ``t`` into slot ``t mod R`` and returns a few bytes naming it; the
trainer copies the slot out (one memcpy of the batch) and hands the trainer ordinary tensors.

Why a slot is never overwritten while it is read: the DataLoader asks for batch ``t`` only after
the trainer received batch ``t - prefetch depth``; with ``R`` > prefetch depth, the batch that
last used slot ``t mod R`` was copied out already. Only batches of fixed-size columns (token
arrays, scalars) take this path; ragged or text columns are pickled as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .batching import widened_dtype
from .sources.base import Schema


@dataclass(frozen=True)
class RingRef:
    """What a worker returns instead of a batch: the slot holding batch ``t``."""

    t: int


Field = tuple[str, str, tuple[int, ...], int]  # (name, dtype, shape, byte offset)


def ring_layout(schema: Schema, batch_size: int, token_dtype: str | None) -> list[Field] | None:
    """Where each column of a batch lives in a slot, or None if a column has no fixed size."""
    fields: list[Field] = []
    offset = 0
    cols: list[tuple[str, str, tuple[int, ...]]] = []
    for name, spec in schema.items():
        if spec.kind == "fixed" and spec.width:
            shape: tuple[int, ...] = (batch_size, int(spec.width))
        elif spec.kind == "scalar":
            shape = (batch_size,)
        else:
            return None
        dtype = widened_dtype(np.dtype(spec.dtype), token_dtype)  # as assemble() writes it
        cols.append((name, dtype.str, shape))
    cols += [("domain", np.dtype(np.int64).str, (batch_size,)),
             ("index", np.dtype(np.int64).str, (batch_size,))]
    for name, dt, shape in cols:
        offset = -(-offset // 8) * 8  # 8-byte aligned views
        fields.append((name, dt, shape, offset))
        offset += int(np.prod(shape)) * np.dtype(dt).itemsize
    return fields


class BatchRing:
    """``slots`` shared-memory slots of one batch each, laid out by :func:`ring_layout`."""

    def __init__(self, fields: list[Field], slots: int):
        self.fields = fields
        self.slots = slots
        name, dt, shape, off = fields[-1]
        self.slot_bytes = off + int(np.prod(shape)) * np.dtype(dt).itemsize
        self._buf = torch.zeros((slots, self.slot_bytes), dtype=torch.uint8).share_memory_()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_np", None)
        return state

    def _slot(self, t: int) -> np.ndarray:
        arr = self.__dict__.get("_np")
        if arr is None:
            arr = self.__dict__["_np"] = self._buf.numpy()
        return arr[t % self.slots]

    def put(self, t: int, batch: Mapping[str, Any]) -> RingRef:
        """Write batch ``t`` into its slot (worker side)."""
        slot = self._slot(t)
        for name, dt, shape, off in self.fields:
            n = int(np.prod(shape)) * np.dtype(dt).itemsize
            view = slot[off : off + n].view(dt).reshape(shape)
            view[...] = batch[name].numpy()
        return RingRef(t)

    def take(self, ref: RingRef, pin: bool = False) -> dict:
        """Batch ``ref.t`` as fresh tensors (trainer side; one copy out of the slot)."""
        slot = self._slot(ref.t)
        out: dict = {}
        for name, dt, shape, off in self.fields:
            n = int(np.prod(shape)) * np.dtype(dt).itemsize
            src = torch.from_numpy(slot[off : off + n].view(dt).reshape(shape))
            dst = torch.empty(shape, dtype=src.dtype, pin_memory=pin)
            dst.copy_(src)
            out[name] = dst
        return out
