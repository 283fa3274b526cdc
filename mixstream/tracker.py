"""The trainer-side position tracker: where the stream stands after ``k`` delivered batches.

It walks the plan (domain ids and window claims only, no data) up to the trainer's position, so
checkpoints and iteration restarts never replay data: the resume state is the weight log, the
mixture cursor and the claim book (per domain, and per reader slot and domain).
"""

from __future__ import annotations

import numpy as np

from .plan.claims import ClaimBook
from .plan.mixture import MixCheckpoint
from .walker import SlotLayout, Walker


class PositionTracker:
    def __init__(self, *, seed: int, block: int, topology: SlotLayout, claims: ClaimBook,
                 mix: MixCheckpoint, pending: list[tuple[int, np.ndarray]], batch: int = 0):
        self.topo = topology
        self.batch = batch  # this rank's batches consumed
        self.walker = Walker(seed=seed, block=block, topology=topology, claims=claims, mix=mix,
                             pending=pending, next_batch=batch * topology.world_size)

    def add_entry(self, from_sample: int, weights: np.ndarray) -> None:
        self.walker.cursor.add_entry(from_sample, weights)

    def advance_to(self, batch: int) -> None:
        """Walk to the start of round ``batch`` (every rank has consumed ``batch`` batches)."""
        if batch < self.batch:
            raise ValueError(f"the stream position cannot go back from batch {self.batch} to "
                             f"{batch}; load a checkpoint instead")
        if batch > self.batch:
            self.walker.skip_to(batch * self.topo.world_size)
            self.batch = batch

    def realised_counts(self) -> np.ndarray:
        """Global per-domain sample counts before the current round (all ranks)."""
        return self.walker.seen.copy()
