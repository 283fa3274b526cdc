"""Per-domain reservoirs: one reader's shuffled window over its part of a domain.

A :class:`DomainReader` serves positions ``p = 0, 1, 2 ...`` of one reader's stream of one
domain (see :mod:`mixstream.plan.order`). It holds the decoded window that contains the current
position and, in the background, decodes the next one; memory is two windows. A domain whose
weight is zero releases its windows (:meth:`DomainReader.release`) and reloads them from the
same position when it is switched on again.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np

from .plan.order import block_order, locate, slot_range, window_permutation, window_spans
from .sources.base import Block, concat_blocks, slice_block
from .sources.resolve import Domain


class DomainExhausted(Exception):
    """Raised in ``stop`` mode when a reader reaches the end of its first epoch."""


@dataclass
class Window:
    epoch: int
    index: int
    data: Block
    perm: np.ndarray  # shuffled row order


class DomainReader:
    def __init__(self, domain: Domain, domain_id: int, *, seed: int, slot: int, num_slots: int,
                 window: int, shuffle: bool, epochs: int | None, executor: Executor | None):
        self.domain = domain
        self.domain_id = domain_id
        self.seed = seed
        self.shuffle = shuffle
        self.epochs = epochs
        self.lo, self.hi = slot_range(domain.num_samples, slot, num_slots)
        self.size = self.hi - self.lo
        self.window = max(1, int(window))
        self.executor = executor
        self._current: Window | None = None
        self._pending: dict[tuple[int, int], Future] = {}
        self._orders: dict[int, np.ndarray] = {}
        self._last_block: tuple[int, Block] | None = None

    # -- planning ---------------------------------------------------------------------------
    def _order(self, epoch: int) -> np.ndarray:
        order = self._orders.get(epoch)
        if order is None:
            order = block_order(len(self.domain.block_sizes), self.seed, self.domain_id, epoch,
                                self.shuffle)
            self._orders = {epoch: order}
        return order

    def _bounds(self, index: int) -> tuple[int, int]:
        start = self.lo + index * self.window
        return start, min(self.hi, start + self.window)

    def _next_key(self, epoch: int, index: int) -> tuple[int, int]:
        start, stop = self._bounds(index)
        return (epoch, index + 1) if stop < self.hi else (epoch + 1, 0)

    # -- loading ----------------------------------------------------------------------------
    def _read(self, block: int) -> Block:
        if self._last_block is not None and self._last_block[0] == block:
            return self._last_block[1]
        data = self.domain.read_block(block)
        self._last_block = (block, data)
        return data

    def _load(self, epoch: int, index: int) -> Window:
        start, stop = self._bounds(index)
        spans = window_spans(self.domain.block_sizes, self._order(epoch), start, stop)
        parts = [slice_block(self._read(s.block), s.start, s.stop) for s in spans]
        data = concat_blocks(parts)
        perm = window_permutation(stop - start, self.seed, self.domain_id, epoch, start,
                                  self.shuffle)
        return Window(epoch, index, data, perm)

    def _get(self, epoch: int, index: int) -> Window:
        cur = self._current
        if cur is not None and cur.epoch == epoch and cur.index == index:
            return cur
        fut = self._pending.pop((epoch, index), None)
        self._pending.clear()
        win = fut.result() if fut is not None else self._load(epoch, index)
        self._current = win
        nxt = self._next_key(epoch, index)
        if self.executor is not None and (self.epochs is None or nxt[0] < self.epochs):
            self._pending[nxt] = self.executor.submit(self._load, *nxt)
        return win

    def release(self) -> None:
        """Drop the decoded windows (the domain is switched off); positions are kept by the caller."""
        self._current = None
        for f in self._pending.values():
            f.cancel()
        self._pending.clear()
        self._last_block = None

    # -- serving ----------------------------------------------------------------------------
    def take(self, p: int, n: int) -> list[tuple[Block, np.ndarray]]:
        """Positions ``[p, p + n)`` as (window data, row indices) pieces, in order."""
        out: list[tuple[Block, np.ndarray]] = []
        while n > 0:
            pos = locate(p, self.size, self.window)
            if self.epochs is not None and pos.epoch >= self.epochs:
                raise DomainExhausted(self.domain.name)
            win = self._get(pos.epoch, pos.window)
            k = min(n, len(win.perm) - pos.offset)
            out.append((win.data, win.perm[pos.offset : pos.offset + k]))
            p += k
            n -= k
        return out

    def epoch_of(self, p: int) -> int:
        return p // self.size
