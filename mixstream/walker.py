"""Walking the stream plan over global batches: mixture cursor + claim book.

Both the trainer's process (to know where the stream stands) and every DataLoader worker (to know
what to read) walk the same plan: for each global batch in order, its domain ids and, for the
batches a worker produces, which window pieces they come from. No data is read here.
"""

from __future__ import annotations

import numpy as np

from .plan.claims import ClaimBook, Piece
from .plan.mixture import MixCheckpoint, MixCursor


class Topology:
    """``world_size`` ranks x ``num_workers`` workers; global batch ``g`` belongs to rank
    ``g % world`` and, within it, to reader slot ``(g // world) % num_workers``."""

    def __init__(self, batch_size: int, world_size: int, num_workers: int):
        self.batch_size = batch_size
        self.world_size = world_size
        self.num_workers = max(1, num_workers)

    @property
    def num_slots(self) -> int:
        return self.world_size * self.num_workers

    def slot_of(self, g: np.ndarray | int) -> np.ndarray | int:
        return (g % self.world_size) * self.num_workers + (g // self.world_size) % self.num_workers

    def global_batch(self, rank: int, t: int) -> int:
        return t * self.world_size + rank


class Walker:
    def __init__(self, *, seed: int, block: int, topology: Topology, claims: ClaimBook,
                 mix: MixCheckpoint, pending: list[tuple[int, np.ndarray]], next_batch: int):
        self.topo = topology
        self.next_batch = next_batch  # next global batch to walk
        self.cursor = MixCursor(seed, block, mix, pending,
                                frontier=next_batch * topology.batch_size)
        self.claims = claims

    def skip_to(self, g: int) -> None:
        """Walk global batches ``[next_batch, g)`` produced by other readers (counts only)."""
        if g <= self.next_batch:
            return
        b = self.topo.batch_size
        d = len(self.claims.geometry)
        dom = self.cursor.domains(self.next_batch * b, g * b).reshape(-1, b)
        flat = dom + (np.arange(len(dom))[:, None] * d)
        per = np.bincount(flat.ravel(), minlength=len(dom) * d).reshape(len(dom), d)
        for i, counts in enumerate(per):
            self.claims.count(int(self.topo.slot_of(self.next_batch + i)), counts)
        self.next_batch = g

    def own(self, g: int) -> tuple[np.ndarray, list[tuple[int, list[Piece]]]]:
        """Domain ids of global batch ``g`` and, per domain in it, the window pieces to read."""
        self.skip_to(g)
        b = self.topo.batch_size
        dom = self.cursor.domains(g * b, (g + 1) * b)
        slot = int(self.topo.slot_of(g))
        per = np.bincount(dom, minlength=len(self.claims.geometry))
        out = self.claims.serve_batch(slot, per)
        self.next_batch = g + 1
        return dom, out
