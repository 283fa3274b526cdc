"""Per-domain reservoirs: the shuffled windows one reader holds for one domain.

A :class:`DomainReader` decodes the windows its reader slot claimed (see
:mod:`mixstream.plan.claims`), keeps the current one, and decodes the window it expects to claim
next in a background thread. Memory is about two windows per active domain. A domain whose
weight is zero releases its windows (:meth:`DomainReader.release`); the claim book keeps the
position, so they are decoded again if the domain comes back.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np

from .plan.claims import Piece
from .plan.order import Geometry, window_permutation
from .sources.base import Block, concat_blocks, slice_block
from .sources.resolve import Domain


class DomainExhausted(Exception):
    """Raised in ``stop`` mode when a domain's first epoch has been handed out."""


@dataclass
class Window:
    index: int
    data: Block
    perm: np.ndarray  # shuffled row order


class DomainReader:
    def __init__(self, domain: Domain, domain_id: int, *, seed: int, geometry: Geometry,
                 shuffle: bool, epochs: int | None, executor: Executor | None):
        self.domain = domain
        self.domain_id = domain_id
        self.seed = seed
        self.shuffle = shuffle
        self.epochs = epochs
        self.geometry = geometry
        self.executor = executor
        self._current: Window | None = None
        self._pending: dict[int, Future] = {}
        self._last_block: tuple[int, Block] | None = None

    def _read(self, block: int) -> Block:
        last = self._last_block  # one read: the background decode thread replaces it too
        if last is not None and last[0] == block:
            return last[1]
        data = self.domain.read_block(block)
        self._last_block = (block, data)
        return data

    def _load(self, index: int) -> Window:
        spans = self.geometry.spans(index)
        self.domain.prefetch([s.block for s in spans])  # remote blocks: fetch all at once
        parts = [slice_block(self._read(s.block), s.start, s.stop) for s in spans]
        size = sum(s.stop - s.start for s in spans)
        perm = window_permutation(size, self.seed, self.geometry.domain, index, self.shuffle)
        return Window(index, concat_blocks(parts), perm)

    def _exhausted(self, index: int) -> bool:
        return self.epochs is not None and self.geometry.epoch_of(index) >= self.epochs

    def _get(self, index: int) -> Window:
        cur = self._current
        if cur is not None and cur.index == index:
            return cur
        fut = self._pending.pop(index, None)
        for f in self._pending.values():
            f.cancel()
        self._pending.clear()
        win = fut.result() if fut is not None else self._load(index)
        self._current = win
        return win

    def prefetch(self, index: int) -> None:
        """Start decoding window ``index`` (the slot's reserved next window) in the background."""
        if (self.executor is None or index < 0 or index in self._pending or self._exhausted(index)
                or (self._current is not None and self._current.index == index)):
            return
        self._pending[index] = self.executor.submit(self._load, index)

    def release(self) -> None:
        self._current = None
        for f in self._pending.values():
            f.cancel()
        self._pending.clear()
        self._last_block = None

    def take(self, pieces: list[Piece]) -> list[tuple[Block, np.ndarray]]:
        """(window data, row indices) for claimed window pieces, in order."""
        out = []
        for index, off, k in pieces:
            cur = self._current
            if cur is None or cur.index != index:
                if self._exhausted(index):
                    raise DomainExhausted(self.domain.name)
                cur = self._get(index)
            out.append((cur.data, cur.perm[off : off + k]))
        return out

    @property
    def window_index(self) -> int:
        return -1 if self._current is None else self._current.index
