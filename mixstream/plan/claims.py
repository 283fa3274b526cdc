"""Which reader reads which shuffle window: deterministic claims that keep readers balanced.

Windows are defined per domain by :class:`~mixstream.plan.order.WindowGeometry`. A reader slot
(one (rank, worker) pair) serves its samples of a domain from one window at a time; when it needs
a sample beyond its window it *claims* the domain's next unclaimed window. Claims happen in global
batch order, so which window a claim gets is a pure function of the mixture sequence and the
topology.

A slot claims one window ahead: when it starts a window it also reserves the next one, so its
reader can decode that window in the background knowing it will be the one (no speculative reads
of blocks another reader owns).

Because windows are handed out on demand rather than split up front, a slot whose batches happen
to carry more of a domain simply claims more windows: every window is read once, by one slot.
When any slot claims a window of epoch ``e + 1``, every window of epoch ``e`` has been claimed,
so at most ``2 * slots - 1`` windows of epoch ``e`` are still to be served: no sample repeats
within an epoch, and all slots stay in step. (A static split of each epoch among slots lets a
slot whose batches resonate with the mixing pattern run into its next epoch early.)
"""

from __future__ import annotations

import numpy as np

from .order import WindowGeometry

Piece = tuple[int, int, int]
"""(window id, offset in the window, samples)"""


class ClaimBook:
    """Claim counters per domain; per (slot, domain) the window held, the offset in it and the
    window reserved next.

    ``queue[slot, domain]`` lists partly read windows ``(window, offset)`` that a slot serves
    before claiming new ones; it is only filled by :meth:`remap` (elastic resume).
    """

    def __init__(self, geometry: list[WindowGeometry], num_slots: int,
                 claimed: np.ndarray | None = None, held: np.ndarray | None = None,
                 offset: np.ndarray | None = None, queue: np.ndarray | None = None,
                 reserved: np.ndarray | None = None):
        self.geometry = geometry
        d = len(geometry)
        shape = (num_slots, d)
        self.claimed = (np.zeros(d, np.int64) if claimed is None
                        else np.asarray(claimed, np.int64).copy())
        self.held = (np.full(shape, -1, np.int64) if held is None
                     else np.asarray(held, np.int64).reshape(shape).copy())
        self.offset = (np.zeros(shape, np.int64) if offset is None
                       else np.asarray(offset, np.int64).reshape(shape).copy())
        self.reserved = (np.full(shape, -1, np.int64) if reserved is None
                         else np.asarray(reserved, np.int64).reshape(shape).copy())
        q = np.zeros((num_slots, d, 0, 2), np.int64) if queue is None else np.asarray(queue, np.int64)
        self.queue = q.reshape(num_slots, d, -1, 2).copy()
        self.held_size = np.zeros(shape, np.int64)
        for s, i in zip(*np.nonzero(self.held >= 0)):
            self.held_size[s, i] = geometry[i].size(int(self.held[s, i]))

    @property
    def num_slots(self) -> int:
        return int(self.held.shape[0])

    def size(self, domain: int, window: int) -> int:
        return self.geometry[domain].size(window)

    def count(self, slot: int, per_domain: np.ndarray) -> None:
        """Serve a batch's per-domain counts to ``slot`` when only the bookkeeping matters."""
        room = self.held_size[slot] - self.offset[slot]
        if (per_domain <= room).all():  # fast path: no window boundary crossed
            self.offset[slot] += per_domain
            return
        for d in np.flatnonzero(per_domain):
            self.serve(slot, int(d), int(per_domain[d]))

    def serve_batch(self, slot: int, per_domain: np.ndarray) -> list[tuple[int, list[Piece]]]:
        """:meth:`serve` for every domain of one batch: ``[(domain, pieces) ...]``."""
        present = np.flatnonzero(per_domain)
        held = self.held[slot, present]
        off = self.offset[slot, present]
        n = per_domain[present]
        if (held >= 0).all() and (n <= self.held_size[slot, present] - off).all():
            self.offset[slot, present] = off + n  # fast path: every domain stays in its window
            return [(d, [(h, o, k)]) for d, h, o, k in
                    zip(present.tolist(), held.tolist(), off.tolist(), n.tolist())]
        return [(d, self.serve(slot, d, int(per_domain[d]))) for d in present.tolist()]

    def serve(self, slot: int, domain: int, n: int) -> list[Piece]:
        """Serve ``n`` samples of ``domain`` to ``slot``: the window pieces they come from."""
        out: list[Piece] = []
        while n > 0:
            held = int(self.held[slot, domain])
            off = int(self.offset[slot, domain])
            if held < 0 or off == self.held_size[slot, domain]:
                held, off = self._next_window(slot, domain)
                self.held[slot, domain] = held
                self.held_size[slot, domain] = self.size(domain, held)
            k = min(n, int(self.held_size[slot, domain]) - off)
            out.append((held, off, k))
            self.offset[slot, domain] = off + k
            n -= k
        return out

    def _claim(self, domain: int) -> int:
        window = int(self.claimed[domain])
        self.claimed[domain] += 1
        return window

    def _next_window(self, slot: int, domain: int) -> tuple[int, int]:
        q = self.queue[slot, domain]
        if q.shape[0] and q[0, 0] >= 0:  # a partly read window handed over by remap()
            window, off = int(q[0, 0]), int(q[0, 1])
            q[:-1] = q[1:].copy()
            q[-1] = -1
            return window, off
        window = int(self.reserved[slot, domain])
        if window < 0:
            window = self._claim(domain)
        self.reserved[slot, domain] = self._claim(domain)
        return window, 0

    def upcoming(self, slot: int, domain: int) -> int:
        """The window ``slot`` will serve next for ``domain`` (-1 if not known yet)."""
        q = self.queue[slot, domain]
        if q.shape[0] and q[0, 0] >= 0:
            return int(q[0, 0])
        return int(self.reserved[slot, domain])

    def open_windows(self) -> list[list[tuple[int, int]]]:
        """Per domain, the partly read windows ``(window, offset)`` in slot order."""
        out: list[list[tuple[int, int]]] = [[] for _ in self.geometry]
        for slot in range(self.num_slots):
            for d in range(len(self.geometry)):
                h, o = int(self.held[slot, d]), int(self.offset[slot, d])
                if h >= 0 and o < self.held_size[slot, d]:
                    out[d].append((h, o))
                for w, off in self.queue[slot, d]:
                    if w >= 0:
                        out[d].append((int(w), int(off)))
                if self.reserved[slot, d] >= 0:
                    out[d].append((int(self.reserved[slot, d]), 0))
        return out

    def remap(self, num_slots: int) -> ClaimBook:
        """The same claims for ``num_slots`` readers (elastic resume).

        Claim counters are kept; every partly read window is handed to a new slot (the ``i``-th
        open window of a domain to slot ``i mod num_slots``), so no sample of a claimed window is
        lost or served twice. Which slot serves a sample changes, so the exact order within
        batches does not survive a change of topology; the mixture sequence does.
        """
        open_ = self.open_windows()
        depth = max([-(-len(ws) // num_slots) for ws in open_] + [1])
        queue = np.full((num_slots, len(self.geometry), depth, 2), -1, np.int64)
        fill = np.zeros((num_slots, len(self.geometry)), np.int64)
        for d, ws in enumerate(open_):
            for i, (w, off) in enumerate(ws):
                slot = i % num_slots
                queue[slot, d, fill[slot, d]] = (w, off)
                fill[slot, d] += 1
        return ClaimBook(self.geometry, num_slots, self.claimed, queue=queue)
