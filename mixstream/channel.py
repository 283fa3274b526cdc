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

from .plan.mixture import MixCheckpoint


class WeightChannelOverflow(RuntimeError):
    pass


class WeightChannel:
    def __init__(self, num_domains: int, capacity: int, max_slots: int):
        d = num_domains
        self.num_domains = d
        self.capacity = capacity
        self.max_slots = max_slots
        self._ring = torch.zeros((capacity, d + 1), dtype=torch.float64).share_memory_()
        self._head = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._ck_int = torch.zeros(4 + d + max_slots * d, dtype=torch.int64).share_memory_()
        self._ck_float = torch.zeros(3 * d, dtype=torch.float64).share_memory_()

    # numpy views are made on demand: they must not be pickled into workers
    def _np(self, t: torch.Tensor) -> np.ndarray:
        return t.numpy()

    # -- weight entries ---------------------------------------------------------------------
    @property
    def published(self) -> int:
        return int(self._head[0])

    def publish(self, from_sample: int, weights: np.ndarray) -> None:
        i = self.published
        row = self._np(self._ring)[i % self.capacity]
        row[0] = from_sample
        row[1:] = weights
        self._head[0] = i + 1  # written last: readers see complete entries only

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
    def write_start(self, start_batch: int, mix: MixCheckpoint, slot_counts: np.ndarray,
                    read_from: int) -> None:
        d = self.num_domains
        n = len(slot_counts)
        if n > self.max_slots:
            raise ValueError(f"{n} workers exceed the {self.max_slots} the stream was created for; "
                             f"pass max_workers={n} to MixStream")
        ints = self._np(self._ck_int)
        ints[0] = start_batch
        ints[1] = mix.chunk_start
        ints[2] = mix.entry_from
        ints[3] = read_from
        ints[4 : 4 + d] = mix.counts
        ints[4 + d : 4 + d + n * d] = np.asarray(slot_counts, dtype=np.int64).ravel()
        floats = self._np(self._ck_float)
        floats[:d] = mix.entry_weights
        floats[d : 2 * d] = mix.entry_targets
        floats[2 * d :] = mix.entry_base

    def read_start(self, num_slots: int) -> tuple[int, MixCheckpoint, np.ndarray, int]:
        d = self.num_domains
        ints = self._np(self._ck_int).copy()
        floats = self._np(self._ck_float).copy()
        mix = MixCheckpoint(int(ints[1]), ints[4 : 4 + d], int(ints[2]), floats[:d],
                            floats[d : 2 * d], floats[2 * d :])
        slots = ints[4 + d : 4 + d + num_slots * d].reshape(num_slots, d)
        return int(ints[0]), mix, slots, int(ints[3])
