"""Which reader reads which samples: window claims that keep every domain epoch exact.

Windows are defined per domain by :class:`~mixstream.plan.order.WindowGeometry`. A reader slot
(one (rank, worker) pair) serves its samples of a domain from one *range* of one window at a
time: ``held[slot, d]`` with ``offset <= end``. When its range runs out it *acquires* the next:

1. its own queued range (the window it reserved ahead, or one handed over by :meth:`remap`),
2. else the domain's next unclaimed window,
3. else it *steals*: a whole range another slot queued but has not started, or the second half
   of the largest range another slot is serving,

always from the *oldest epoch that still has unserved samples*. Acquisitions happen in global
batch order (every process walks the same plan), so all of this is a pure function of the
mixture sequence and the topology.

Why the epoch rule and the stealing: claims alone (each window read by one slot, in claim
order) keep readers balanced and decode each block once per epoch, but at an epoch boundary one
slot may start epoch ``e + 1`` while another still serves the tail of epoch ``e`` — and a domain
smaller than ``slots`` windows is *always* at a boundary, so every slot served the whole domain
at once (issue: duplicated samples for small domains). With the rule, every sample of epoch
``e`` is served, in global order, before any sample of epoch ``e + 1``: ordered by global index,
the first ``N`` samples of an ``N``-sample domain are a permutation of it, the next ``N`` another.
Stealing costs a second decode of the stolen window, only at epoch tails.

A slot reserves one window ahead (its queue) when it starts a window, so its reader can decode
that window in the background knowing it is the one (no speculative reads). Reservations never
run more than one epoch ahead of the oldest open epoch.
"""

from __future__ import annotations

import numpy as np

from .order import Geometry

Piece = tuple[int, int, int]
"""(window id, offset in the window, samples)"""

# The serialised layout: name -> shape as a function of (domains d, slots s, queue depth q).
# Declared once; ClaimBook.arrays(), the checkpoint and the shared-memory start buffer use it.
LAYOUT: tuple[tuple[str, str], ...] = (
    ("claimed", "d"),
    ("held", "s,d"),
    ("offset", "s,d"),
    ("end", "s,d"),
    ("queue", "s,d,q,3"),
)


def layout_shapes(d: int, s: int, q: int) -> dict[str, tuple[int, ...]]:
    dims = {"d": d, "s": s, "q": q, "3": 3}
    return {name: tuple(dims[x] for x in spec.split(",")) for name, spec in LAYOUT}


_FILL = {"claimed": 0, "held": -1, "offset": 0, "end": 0, "queue": -1}


def blank_arrays(d: int, s: int, q: int) -> dict[str, np.ndarray]:
    """The arrays of a book in which nothing is claimed."""
    return {name: np.full(shape, _FILL[name], np.int64)
            for name, shape in layout_shapes(d, s, q).items()}


class ClaimBook:
    """Claim counters per domain; per (slot, domain) the range served now and the queued ranges.

    ``held[s, d]``/``offset``/``end``: the window a slot serves from, the next sample in it and the
    end of its range (a range may be part of a window after a steal). ``queue[s, d, k]`` holds
    ranges ``(window, offset, end)`` (``window = -1``: empty) the slot serves later.
    """

    def __init__(self, geometry: list[Geometry], num_slots: int,
                 arrays: dict[str, np.ndarray] | None = None, queue_depth: int = 1):
        self.geometry = geometry
        d = len(geometry)
        arrays = arrays or {}
        if "queue" in arrays:
            queue_depth = max(1, int(np.asarray(arrays["queue"]).size // max(1, num_slots * d * 3)))
        blank = blank_arrays(d, num_slots, queue_depth)
        for name, arr in blank.items():
            value = arrays.get(name)
            if value is not None:
                arr = np.asarray(value, np.int64).reshape(arr.shape).copy()
            setattr(self, name, arr)
        self.claimed: np.ndarray
        self.held: np.ndarray
        self.offset: np.ndarray
        self.end: np.ndarray
        self.queue: np.ndarray

    # -- state ------------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name, _ in LAYOUT}

    def get_state(self) -> dict[str, list]:
        return {name: getattr(self, name).tolist() for name, _ in LAYOUT}

    @staticmethod
    def parse_state(raw: dict, num_domains: int, num_slots: int) -> dict[str, np.ndarray]:
        """:meth:`get_state`'s arrays, checked against :data:`LAYOUT` (untrusted input); the
        geometry comes from the corpus, so this returns arrays for the constructor."""
        q = max(1, int(np.asarray(raw.get("queue", [])).size) // max(1, num_slots * num_domains * 3))
        shapes = layout_shapes(num_domains, num_slots, q)
        return {k: _int_array(raw.get(k), shape, f"claims.{k}") for k, shape in shapes.items()}

    @property
    def num_slots(self) -> int:
        return int(self.held.shape[0])

    @property
    def queue_depth(self) -> int:
        return int(self.queue.shape[2])

    def size(self, domain: int, window: int) -> int:
        return self.geometry[domain].size(window)

    # -- serving ----------------------------------------------------------------------------
    def count(self, slot: int, per_domain: np.ndarray) -> None:
        """Serve a batch's per-domain counts to ``slot`` when only the bookkeeping matters."""
        if (per_domain <= self.end[slot] - self.offset[slot]).all():  # fast path: in range
            self.offset[slot] += per_domain
            return
        for d in np.flatnonzero(per_domain):
            self.serve(slot, int(d), int(per_domain[d]))

    def serve_batch(self, slot: int, per_domain: np.ndarray) -> list[tuple[int, list[Piece]]]:
        """:meth:`serve` for every domain of one batch: ``[(domain, pieces) ...]``."""
        present = np.flatnonzero(per_domain)
        off = self.offset[slot, present]
        n = per_domain[present]
        if (n <= self.end[slot, present] - off).all():  # fast path: every domain stays in range
            held = self.held[slot, present]
            self.offset[slot, present] = off + n
            return [(d, [(h, o, k)]) for d, h, o, k in
                    zip(present.tolist(), held.tolist(), off.tolist(), n.tolist())]
        return [(d, self.serve(slot, d, int(per_domain[d]))) for d in present.tolist()]

    def serve(self, slot: int, domain: int, n: int) -> list[Piece]:
        """Serve ``n`` samples of ``domain`` to ``slot``: the window pieces they come from."""
        out: list[Piece] = []
        while n > 0:
            off, end = int(self.offset[slot, domain]), int(self.end[slot, domain])
            if off >= end:
                self._acquire(slot, domain)
                continue
            k = min(n, end - off)
            out.append((int(self.held[slot, domain]), off, k))
            self.offset[slot, domain] = off + k
            n -= k
        return out

    # -- acquiring ranges -------------------------------------------------------------------
    def _epoch(self, domain: int, window: int) -> int:
        return self.geometry[domain].epoch_of(int(window))

    def oldest_open_epoch(self, domain: int) -> int:
        """The oldest epoch of ``domain`` with samples not yet served."""
        best = int(self.claimed[domain])  # (epochs grow with window ids: take the least window)
        held, off, end = self.held[:, domain], self.offset[:, domain], self.end[:, domain]
        live = (held >= 0) & (off < end)
        if live.any():
            best = min(best, int(held[live].min()))
        q = self.queue[:, domain]
        qlive = q[..., 0] >= 0
        if qlive.any():
            best = min(best, int(q[..., 0][qlive].min()))
        return self._epoch(domain, best)

    def _claim(self, domain: int) -> tuple[int, int, int]:
        window = int(self.claimed[domain])
        self.claimed[domain] += 1
        return window, 0, self.size(domain, window)

    def _hold(self, slot: int, domain: int, rng: tuple[int, int, int]) -> None:
        self.held[slot, domain], self.offset[slot, domain], self.end[slot, domain] = rng

    def _pop_queue(self, slot: int, domain: int, k: int) -> tuple[int, int, int]:
        q = self.queue[slot, domain]
        rng = (int(q[k, 0]), int(q[k, 1]), int(q[k, 2]))
        q[k:-1] = q[k + 1 :].copy()
        q[-1] = -1
        return rng

    def _acquire(self, slot: int, domain: int) -> None:
        epoch = self.oldest_open_epoch(domain)
        q = self.queue[slot, domain]
        mine = [k for k in range(q.shape[0]) if q[k, 0] >= 0 and self._epoch(domain, q[k, 0]) == epoch]
        if mine:
            self._hold(slot, domain, self._pop_queue(slot, domain, mine[0]))
        elif self._epoch(domain, int(self.claimed[domain])) == epoch:
            self._hold(slot, domain, self._claim(domain))
        else:
            self._steal(slot, domain, epoch)
        # reserve one window ahead, at most one epoch beyond the oldest open one
        if (self.queue[slot, domain, :, 0] < 0).all() and \
                self._epoch(domain, int(self.claimed[domain])) <= epoch + 1:
            self.queue[slot, domain, 0] = self._claim(domain)

    def _steal(self, slot: int, domain: int, epoch: int) -> None:
        """Take unserved samples of ``epoch`` from another slot: a queued range whole, else the
        second half of the largest range being served (ties: lowest slot, queue before held)."""
        best: tuple[int, int, int, int] | None = None  # (-remaining, kind, slot, queue index)
        for s in range(self.num_slots):
            if s == slot:
                continue
            q = self.queue[s, domain]
            for k in range(q.shape[0]):
                w, o, e = (int(x) for x in q[k])
                if w >= 0 and e > o and self._epoch(domain, w) == epoch:
                    cand = (o - e, 0, s, k)
                    best = cand if best is None or cand < best else best
            h, o, e = int(self.held[s, domain]), int(self.offset[s, domain]), int(self.end[s, domain])
            if h >= 0 and e > o and self._epoch(domain, h) == epoch:
                cand = (o - e, 1, s, -1)
                best = cand if best is None or cand < best else best
        if best is None:  # cannot happen while the book is consistent
            raise RuntimeError(f"claim book: no unserved sample of epoch {epoch} of domain {domain}")
        _, kind, s, k = best
        if kind == 0:
            self._hold(slot, domain, self._pop_queue(s, domain, k))
            return
        h, o, e = int(self.held[s, domain]), int(self.offset[s, domain]), int(self.end[s, domain])
        mid = e - (e - o + 1) // 2
        self.end[s, domain] = mid
        self._hold(slot, domain, (h, mid, e))

    def upcoming(self, slot: int, domain: int) -> int:
        """The window ``slot`` will serve next for ``domain`` (-1 if not known yet)."""
        return int(self.queue[slot, domain, 0, 0])

    # -- accounting -------------------------------------------------------------------------
    def open_ranges(self) -> list[list[tuple[int, int, int]]]:
        """Per domain, the unserved ranges ``(window, offset, end)`` in slot order."""
        out: list[list[tuple[int, int, int]]] = [[] for _ in self.geometry]
        for slot in range(self.num_slots):
            for d in range(len(self.geometry)):
                h, o, e = int(self.held[slot, d]), int(self.offset[slot, d]), int(self.end[slot, d])
                if h >= 0 and o < e:
                    out[d].append((h, o, e))
                for w, off, end in self.queue[slot, d]:
                    if w >= 0 and off < end:
                        out[d].append((int(w), int(off), int(end)))
        return out

    def served(self) -> np.ndarray:
        """Per domain, samples served so far: every claimed window minus the open ranges.

        Used to check a checkpoint against the mixture (a rewound or edited counter shows up as
        a mismatch with the realised counts)."""
        out = np.zeros(len(self.geometry), np.int64)
        for d, ranges in enumerate(self.open_ranges()):
            total = self.geometry[d].served_before(int(self.claimed[d]))
            out[d] = total - sum(e - o for _, o, e in ranges)
        return out

    def remap(self, num_slots: int) -> ClaimBook:
        """The same claims for ``num_slots`` readers (elastic resume).

        Claim counters are kept; every unserved range is handed to a new slot (the ``i``-th
        open range of a domain to slot ``i mod num_slots``), so no sample of a claimed window is
        lost or served twice. Which slot serves a sample changes, so the exact order within
        batches does not survive a change of topology; the mixture sequence and the epoch rule
        do.
        """
        open_ = self.open_ranges()
        depth = max([-(-len(rs) // num_slots) for rs in open_] + [1])
        queue = np.full((num_slots, len(self.geometry), depth, 3), -1, np.int64)
        fill = np.zeros((num_slots, len(self.geometry)), np.int64)
        for d, rs in enumerate(open_):
            for i, rng in enumerate(rs):
                slot = i % num_slots
                queue[slot, d, fill[slot, d]] = rng
                fill[slot, d] += 1
        return ClaimBook(self.geometry, num_slots, {"claimed": self.claimed, "queue": queue})


def _int_array(value: object, shape: tuple[int, ...], key: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"MixStream checkpoint {key!r} is not an integer array") from None
    if arr.shape != shape:
        raise ValueError(f"MixStream checkpoint {key!r} has shape {arr.shape}, expected {shape} "
                         f"for its topology")
    return arr
