"""The weight channel: shared memory between the trainer's process and DataLoader workers.

Created in the trainer's process before any worker starts, as torch shared-memory tensors
(inherited on fork, passed by file descriptor on spawn), never as named POSIX shm, whose
naming and cleanup are the most reported failure of mosaicml-streaming. It holds:

* the *pending tail* of the weight log: every entry from ``readers`` batches before the trainer's
  position on, rewritten whole on every change under a sequence lock. Workers compare one
  integer per batch and copy the tail when it changed. A worker last read the tail when it
  started its latest batch, at most ``readers`` batches behind the trainer, and entries made
  since start at or after that batch; so the tail is bounded by the prefetch depth plus the
  readers plus changes scheduled ahead, whatever the rate of changes — an earlier ring of
  entries overflowed, and killed the run, when many changes came between two reads of a worker;
* the *start checkpoint*: where the next iteration starts (batch, mixture cursor state, claim
  book), written by the trainer's process before workers (re)start. Its layout is the claim
  book's own declaration (:data:`mixstream.plan.claims.LAYOUT`).
"""

from __future__ import annotations

import numpy as np
import torch

from .plan.claims import LAYOUT, ClaimBook, layout_shapes
from .plan.mixture import MixCheckpoint


class WeightChannelOverflow(ValueError):
    """More weight changes are scheduled ahead of the trainer than the channel holds."""


class ChannelReallocatedError(RuntimeError):
    """The shared buffers had to grow while persistent workers hold the old ones."""


class WeightChannel:
    def __init__(self, num_domains: int, capacity: int):
        self.num_domains = num_domains
        self.capacity = 0
        self.num_slots = 0
        self.queue_depth = 0
        self.frozen = False  # set while persistent workers hold these buffers
        self._version = torch.zeros(2, dtype=torch.int64).share_memory_()  # [version, count]
        self._tail = torch.zeros((0, num_domains + 1), dtype=torch.float64)
        self._ck_int = torch.zeros(0, dtype=torch.int64)
        self._ck_float = torch.zeros(3 * num_domains, dtype=torch.float64).share_memory_()
        self.ensure_capacity(capacity)

    # numpy views are cached per process but never pickled into workers (they would be copies)
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_views", None)
        return state

    def _np(self, t: torch.Tensor) -> np.ndarray:
        views = self.__dict__.setdefault("_views", {})
        view = views.get(id(t))
        if view is None or view[0] is not t:
            view = views[id(t)] = (t, t.numpy())
        return view[1]

    def _grow_check(self, what: str) -> None:
        if self.frozen:
            raise ChannelReallocatedError(
                f"the stream's shared {what} must grow, but persistent DataLoader workers hold the "
                f"old one; create a new MixLoader after load_state_dict() / the change")

    def ensure_capacity(self, capacity: int) -> None:
        """Room for ``capacity`` pending weight entries (before workers start)."""
        if capacity > self.capacity:
            self._grow_check("weight buffer")
            tail = torch.zeros((capacity, self.num_domains + 1), dtype=torch.float64)
            self._tail = tail.share_memory_()
            self.capacity = capacity

    def allocate_start(self, num_slots: int, queue_depth: int) -> None:
        """Size the start checkpoint for ``num_slots`` readers (before workers start)."""
        if (num_slots, queue_depth) != (self.num_slots, self.queue_depth):
            self._grow_check("start checkpoint")
            shapes = layout_shapes(self.num_domains, num_slots, queue_depth)
            size = 3 + self.num_domains + sum(int(np.prod(s)) for s in shapes.values())
            self._ck_int = torch.zeros(size, dtype=torch.int64).share_memory_()
            self.num_slots, self.queue_depth = num_slots, queue_depth

    # -- pending weight entries -------------------------------------------------------------
    def write_tail(self, entries: list[tuple[int, np.ndarray]]) -> None:
        """Replace the pending tail (trainer's process only, one writer at a time)."""
        if len(entries) > self.capacity:
            raise WeightChannelOverflow(
                f"{len(entries)} weight changes are scheduled at or after the trainer's position, "
                f"but the stream holds {self.capacity}; create the MixStream with a larger "
                f"max_pending_weight_changes, or schedule fewer changes ahead")
        head = self._np(self._version)
        rows = self._np(self._tail)
        v = int(head[0])
        head[0] = v + 1  # odd: a write is in progress
        for i, (f, w) in enumerate(entries):
            rows[i, 0] = f
            rows[i, 1:] = w
        head[1] = len(entries)
        head[0] = v + 2

    def read_tail(self, seen_version: int) -> tuple[list[tuple[int, np.ndarray]] | None, int]:
        """The pending tail if it changed since ``seen_version`` (else None), and its version."""
        head = self._np(self._version)
        while True:
            v = int(head[0])
            if v == seen_version:
                return None, v
            if v % 2:
                continue  # the trainer is writing; it takes microseconds
            n = int(head[1])
            rows = self._np(self._tail)[:n].copy()
            if int(head[0]) == v:
                return [(int(r[0]), r[1:]) for r in rows], v

    # -- start checkpoint -------------------------------------------------------------------
    def write_start(self, start_batch: int, mix: MixCheckpoint, claims: ClaimBook) -> None:
        if (claims.num_slots, claims.queue_depth) != (self.num_slots, self.queue_depth):
            raise ValueError(f"start checkpoint for {claims.num_slots} readers x queue "
                             f"{claims.queue_depth}, channel has {self.num_slots} x "
                             f"{self.queue_depth}")
        arrays = claims.arrays()
        ints = self._np(self._ck_int)
        ints[:3] = (start_batch, mix.chunk_start, mix.entry_from)
        ints[3:] = np.concatenate([mix.counts] + [arrays[name].ravel() for name, _ in LAYOUT])
        floats = self._np(self._ck_float)
        floats[:] = np.concatenate((mix.entry_weights, mix.entry_targets, mix.entry_base))

    def read_start(self) -> tuple[int, MixCheckpoint, dict[str, np.ndarray]]:
        """(start batch, mixture checkpoint, claim-book arrays)."""
        d = self.num_domains
        ints = self._np(self._ck_int).copy()
        floats = self._np(self._ck_float).copy()
        mix = MixCheckpoint(int(ints[1]), ints[3 : 3 + d], int(ints[2]), floats[:d],
                            floats[d : 2 * d], floats[2 * d :])
        arrays: dict[str, np.ndarray] = {}
        at = 3 + d
        for name, shape in layout_shapes(d, self.num_slots, self.queue_depth).items():
            n = int(np.prod(shape))
            arrays[name] = ints[at : at + n].reshape(shape)
            at += n
        return int(ints[0]), mix, arrays
