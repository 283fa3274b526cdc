"""The weight channel: shared memory between the trainer's process and DataLoader workers.

Created in the trainer's process before any worker starts, as torch shared-memory tensors
(inherited on fork, passed by file descriptor on spawn), never as named POSIX shm, whose
naming and cleanup are the most reported failure of mosaicml-streaming. It holds:

* a ring of published weight-log entries ``(from_sample, weights)`` and a publish counter;
  workers read the entries they have not seen at the start of every batch;
* the *start checkpoint*: where the next iteration starts (batch, mixture cursor state,
  per-reader domain counts), written by the trainer's process before workers (re)start.
"""

from __future__ import annotations

import numpy as np
import torch

from .plan.claims import ClaimBook
from .plan.mixture import MixCheckpoint


class WeightChannelOverflow(RuntimeError):
    pass


class WeightChannel:
    def __init__(self, num_domains: int, capacity: int):
        d = num_domains
        self.num_domains = d
        self.capacity = capacity
        self.num_slots = 0
        self.queue_depth = 0
        self._ring = torch.zeros((capacity, d + 1), dtype=torch.float64).share_memory_()
        self._head = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._ck_int = torch.zeros(0, dtype=torch.int64)
        self._ck_float = torch.zeros(3 * d, dtype=torch.float64).share_memory_()

    def allocate_start(self, num_slots: int, queue_depth: int) -> None:
        """Size the start checkpoint for ``num_slots`` readers (before workers start)."""
        if (num_slots, queue_depth) != (self.num_slots, self.queue_depth):
            size = 4 + self.num_domains * (2 + num_slots * (3 + 2 * queue_depth))
            self._ck_int = torch.zeros(size, dtype=torch.int64).share_memory_()
            self.num_slots, self.queue_depth = num_slots, queue_depth

    # numpy views are cached per process but never pickled into workers (they would be copies)
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.pop("_views", None)
        return state

    def _np(self, t: torch.Tensor) -> np.ndarray:
        views = self.__dict__.setdefault("_views", {})
        key = id(t)
        view = views.get(key)
        if view is None or view[0] is not t:
            view = views[key] = (t, t.numpy())
        return view[1]

    # -- weight entries ---------------------------------------------------------------------
    @property
    def published(self) -> int:
        return int(self._np(self._head)[0])

    def publish(self, from_sample: int, weights: np.ndarray) -> None:
        i = self.published
        row = self._np(self._ring)[i % self.capacity]
        row[0] = from_sample
        row[1:] = weights
        self._np(self._head)[0] = i + 1  # written last: readers see complete entries only

    def read(self, start: int) -> tuple[list[tuple[int, np.ndarray]], int]:
        """Entries published from index ``start`` on, and the next index to read."""
        end = self.published
        if end == start:
            return [], end
        if end - start > self.capacity:
            raise WeightChannelOverflow(
                f"{end - start} weight changes are pending but the channel holds {self.capacity}; "
                f"create the MixStream with a larger max_pending_weight_changes")
        ring = self._np(self._ring)
        out = []
        for i in range(start, end):
            row = ring[i % self.capacity]
            out.append((int(row[0]), row[1:].copy()))
        if self.published - start > self.capacity:  # overwritten while we read
            raise WeightChannelOverflow("weight channel overwritten during a read; increase "
                                        "max_pending_weight_changes")
        return out, end

    # -- start checkpoint -------------------------------------------------------------------
    def write_start(self, start_batch: int, mix: MixCheckpoint, claims: ClaimBook,
                    read_from: int) -> None:
        d, s = self.num_domains, self.num_slots
        if claims.held.shape != (s, d):
            raise ValueError(f"start checkpoint for {claims.held.shape[0]} readers, channel has {s}")
        ints = self._np(self._ck_int)
        ints[:4] = (start_batch, mix.chunk_start, mix.entry_from, read_from)
        if claims.queue.shape[2] != self.queue_depth:
            raise ValueError("start checkpoint queue depth differs from the channel's")
        parts = (mix.counts, claims.claimed, claims.held.ravel(), claims.offset.ravel(),
                 claims.queue.ravel(), claims.reserved.ravel())
        ints[4:] = np.concatenate(parts)
        floats = self._np(self._ck_float)
        floats[:] = np.concatenate((mix.entry_weights, mix.entry_targets, mix.entry_base))

    def read_start(self) -> tuple[int, MixCheckpoint, list[np.ndarray], int]:
        """(start batch, mixture checkpoint, [claimed, held, offset, queue, reserved], first entry
        to read)."""
        d, s, q = self.num_domains, self.num_slots, self.queue_depth
        ints = self._np(self._ck_int).copy()
        floats = self._np(self._ck_float).copy()
        mix = MixCheckpoint(int(ints[1]), ints[4 : 4 + d], int(ints[2]), floats[:d],
                            floats[d : 2 * d], floats[2 * d :])
        at = 4 + d
        claimed = ints[at : at + d]
        held = ints[at + d : at + d + s * d].reshape(s, d)
        offset = ints[at + d + s * d : at + d + 2 * s * d].reshape(s, d)
        at += d + 2 * s * d
        queue = ints[at : at + s * d * q * 2].reshape(s, d, q, 2)
        reserved = ints[at + s * d * q * 2 :].reshape(s, d)
        return int(ints[0]), mix, [claimed, held, offset, queue, reserved], int(ints[3])
