"""Walking the stream plan over global batches: mixture cursor + claim book.

Both the trainer's process (to know where the stream stands) and every reader (to know what to
read) walk the same plan: for each global batch in order, its domain ids and, for the batches a
reader produces, which window pieces they come from. No data is read here.

The walk goes by *rounds* (one batch per rank): in ``stop`` mode the stream ends before the
first round that would need a sample beyond a domain's first epoch, so every rank yields the
same number of batches (a rank that stops one batch early hangs DDP) and no global batch is
skipped.
"""

from __future__ import annotations

import numpy as np

from .plan.claims import ClaimBook, Piece
from .plan.mixture import MixCheckpoint, MixCursor


class StreamEnd(Exception):
    """``stop`` mode: the next round needs a sample beyond a domain's first epoch."""


class SlotLayout:
    """``world_size`` ranks x ``num_workers`` readers; global batch ``g`` belongs to rank
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
    """Walks global batches from ``next_batch`` on (``next_batch`` must start a round).

    ``limit``: per-domain sample counts not to exceed (``stop`` mode: the domain sizes).
    """

    def __init__(self, *, seed: int, block: int, topology: SlotLayout, claims: ClaimBook,
                 mix: MixCheckpoint, pending: list[tuple[int, np.ndarray]], next_batch: int,
                 limit: np.ndarray | None = None):
        self.topo = topology
        self.next_batch = next_batch  # next global batch to walk
        b = topology.batch_size
        self.cursor = MixCursor(seed, block, mix, pending, frontier=next_batch * b)
        self.claims = claims
        self.limit = limit
        self.seen = self.cursor.counts_at(next_batch * b)  # per-domain samples before next_batch
        self._round = -1
        self._dom = np.zeros((0, b), np.int64)

    def _load_round(self, r: int) -> None:
        w, b = self.topo.world_size, self.topo.batch_size
        dom = self.cursor.domains(r * w * b, (r + 1) * w * b)
        if self.limit is not None:
            counts = np.bincount(dom, minlength=len(self.limit))
            if (self.seen + counts > self.limit).any():
                raise StreamEnd(r)
        self._round, self._dom = r, dom.reshape(w, b)

    def _batch_domains(self, g: int) -> np.ndarray:
        r, k = divmod(g, self.topo.world_size)
        if r != self._round:
            if k:
                raise RuntimeError(f"walker asked for batch {g} in the middle of an unwalked round")
            self._load_round(r)
        return self._dom[k]

    def skip_to(self, g: int) -> None:
        """Walk global batches ``[next_batch, g)`` produced by other readers (counts only)."""
        world, b = self.topo.world_size, self.topo.batch_size
        d = len(self.claims.geometry)
        while self.next_batch < g:
            r, k = divmod(self.next_batch, world)
            rounds = g // world - r
            if k == 0 and self.limit is None and rounds > 1 and r != self._round:
                # bulk: whole rounds at once, one cursor call and one bincount
                stop = (r + rounds) * world
                dom = self.cursor.domains(self.next_batch * b, stop * b).reshape(-1, b)
                flat = dom + (np.arange(len(dom))[:, None] * d)
                per = np.bincount(flat.ravel(), minlength=len(dom) * d).reshape(len(dom), d)
                for i, counts in enumerate(per):
                    self.claims.count(int(self.topo.slot_of(self.next_batch + i)), counts)
                self.seen += per.sum(axis=0)
                self.next_batch = stop
                continue
            counts = np.bincount(self._batch_domains(self.next_batch), minlength=d)
            self.claims.count(int(self.topo.slot_of(self.next_batch)), counts)
            self.seen += counts
            self.next_batch += 1

    def own(self, g: int) -> tuple[np.ndarray, list[tuple[int, list[Piece]]]]:
        """Domain ids of global batch ``g`` and, per domain in it, the window pieces to read."""
        self.skip_to(g)
        dom = self._batch_domains(g)
        slot = int(self.topo.slot_of(g))
        per = np.bincount(dom, minlength=len(self.claims.geometry))
        out = self.claims.serve_batch(slot, per)
        self.seen += per
        self.next_batch = g + 1
        return dom.copy(), out
