"""The trainer-side position tracker: where the stream stands after ``k`` delivered batches.

It walks the mixture sequence over this rank's batches (cheap: domain ids only, no data) and
keeps, per reader slot, how many samples of each domain that slot has served. That is the whole
resume state besides the weight log, so checkpoints and iteration restarts never replay data.
"""

from __future__ import annotations

import numpy as np

from .plan.mixture import MixCheckpoint, MixCursor


class PositionTracker:
    def __init__(self, *, seed: int, block: int, batch_size: int, world_size: int, rank: int,
                 num_slots: int, checkpoint: MixCheckpoint, pending: list[tuple[int, np.ndarray]],
                 batch: int = 0, slot_counts: np.ndarray | None = None):
        self.batch_size = batch_size
        self.world_size = world_size
        self.rank = rank
        self.num_slots = num_slots
        self.batch = batch
        self.cursor = MixCursor(seed, block, checkpoint, pending,
                                frontier=batch * world_size * batch_size)
        d = len(checkpoint.counts)
        self.slot_counts = (np.zeros((num_slots, d), np.int64) if slot_counts is None
                            else np.asarray(slot_counts, np.int64).reshape(num_slots, d).copy())

    def batch_range(self, t: int) -> tuple[int, int]:
        """Global sample range of this rank's batch ``t``."""
        start = (t * self.world_size + self.rank) * self.batch_size
        return start, start + self.batch_size

    def add_entry(self, from_sample: int, weights: np.ndarray) -> None:
        self.cursor.add_entry(from_sample, weights)

    def advance_to(self, batch: int) -> None:
        d = self.slot_counts.shape[1]
        for t in range(self.batch, batch):
            dom = self.cursor.domains(*self.batch_range(t))
            self.slot_counts[t % self.num_slots] += np.bincount(dom, minlength=d)
        self.batch = max(self.batch, batch)

    def realised_counts(self) -> np.ndarray:
        """Global per-domain sample counts before the current batch (all ranks)."""
        return self.cursor.counts_at(self.batch * self.world_size * self.batch_size)
