"""Per-domain sample order and shuffle windows. Pure functions and a small cached geometry.

Each block is cut into *units* of at most ``window`` samples (near-equal parts; a block no larger
than the window is one unit). For each epoch the domain's blocks are permuted (seeded by seed,
domain, epoch) and their units laid end to end. Consecutive runs of ``k`` units form *windows* of
about ``window`` samples: ``K = ceil(units / k)`` windows per epoch, and window ``w`` is window
``w % K`` of epoch ``w // K``. A window is the unit of reading and of shuffling (rows permuted,
seeded by seed, domain, window), and each window is read by exactly one reader (see
:mod:`mixstream.plan.claims`). Windows hold whole blocks, so a block is decoded by one reader per
epoch — unless a block is larger than the window, when the readers of its units share it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from .rng import BLOCK_ORDER, WINDOW_SHUFFLE, permutation


def block_order(num_blocks: int, seed: int, domain: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(num_blocks, dtype=np.int64)
    return permutation(num_blocks, seed, BLOCK_ORDER, domain, epoch)


def window_permutation(n: int, seed: int, domain: int, index: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return permutation(n, seed, WINDOW_SHUFFLE, domain, index)


@dataclass(frozen=True)
class BlockSpan:
    """Rows ``[start, stop)`` of block ``block``."""

    block: int
    start: int
    stop: int


class WindowGeometry:
    """Windows of one domain: how many per epoch, their sizes and block spans."""

    def __init__(self, block_sizes: np.ndarray, window: int, *, seed: int, domain: int,
                 shuffle: bool, epoch_base: int = 0):
        sizes = np.asarray(block_sizes, dtype=np.int64)
        self.window = int(window)
        self.epoch_base = epoch_base  # seeds block orders by global epoch (see GrownGeometry)
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.seed, self.domain, self.shuffle = seed, domain, shuffle
        self.num_blocks = len(sizes)
        parts = np.maximum(1, -(-sizes // window))  # units per block
        self.parts = parts
        self.first_unit = np.cumsum(parts) - parts
        rank = np.arange(parts.sum(), dtype=np.int64) - np.repeat(self.first_unit, parts)
        block_of = np.repeat(np.arange(len(sizes), dtype=np.int64), parts)
        s, p = sizes[block_of], parts[block_of]
        self.unit_block = block_of
        self.unit_start = rank * s // p
        self.unit_stop = (rank + 1) * s // p
        self.unit_size = self.unit_stop - self.unit_start
        self.num_units = len(self.unit_size)
        mean = float(self.unit_size.mean()) if self.num_units else 1.0
        self.units_per_window = max(1, int(round(window / max(mean, 1.0))))
        self.per_epoch = -(-self.num_units // self.units_per_window)
        self.epoch_size = int(sizes.sum())
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()  # readers decode windows in a background thread

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_epochs"] = {}
        del state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            return self._epoch_locked(epoch)

    def _epoch_locked(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        cached = self._epochs.get(epoch)
        if cached is None:
            order = block_order(self.num_blocks, self.seed, self.domain, epoch + self.epoch_base,
                                self.shuffle)
            parts = self.parts[order]
            base = np.repeat(self.first_unit[order] - (np.cumsum(parts) - parts), parts)
            units = base + np.arange(self.num_units, dtype=np.int64)
            csum = np.concatenate([[0], np.cumsum(self.unit_size[units])])
            if len(self._epochs) >= 3:
                self._epochs.pop(min(self._epochs))
            cached = self._epochs[epoch] = (units, csum)
        return cached

    def _range(self, window: int) -> tuple[int, int, int]:
        epoch, i = divmod(window, self.per_epoch)
        a = i * self.units_per_window
        return epoch, a, min(self.num_units, a + self.units_per_window)

    def epoch_of(self, window: int) -> int:
        return window // self.per_epoch

    def first_window(self, epoch: int) -> int:
        return epoch * self.per_epoch

    def size(self, window: int) -> int:
        epoch, a, b = self._range(window)
        csum = self._epoch(epoch)[1]
        return int(csum[b] - csum[a])

    def served_before(self, window: int) -> int:
        """Samples in all windows before ``window`` (earlier epochs included)."""
        epoch, a, _ = self._range(window)
        return epoch * self.epoch_size + int(self._epoch(epoch)[1][a])

    def spans(self, window: int) -> list[BlockSpan]:
        epoch, a, b = self._range(window)
        units = self._epoch(epoch)[0][a:b]
        return [BlockSpan(int(self.unit_block[u]), int(self.unit_start[u]), int(self.unit_stop[u]))
                for u in units]


class GrownGeometry:
    """A domain whose shards grew: epochs before ``first_epoch`` keep ``old`` (the blocks the
    domain had), later epochs follow ``new`` (all blocks). Window ids stay global and increasing,
    so claims and checkpoints see one sequence; the switch happens at an epoch boundary, so every
    epoch is one whole pass over one version of the domain."""

    def __init__(self, old: WindowGeometry | GrownGeometry, new: WindowGeometry, first_epoch: int):
        self.old, self.new, self.first_epoch = old, new, first_epoch
        self.start = old.first_window(first_epoch)
        self.window = new.window
        self.domain = new.domain

    @property
    def num_blocks(self) -> int:
        return self.new.num_blocks

    def _split(self, window: int) -> tuple[WindowGeometry | GrownGeometry, int]:
        return (self.old, window) if window < self.start else (self.new, window - self.start)

    def epoch_of(self, window: int) -> int:
        if window < self.start:
            return self.old.epoch_of(window)
        return self.first_epoch + self.new.epoch_of(window - self.start)

    def first_window(self, epoch: int) -> int:
        if epoch < self.first_epoch:
            return self.old.first_window(epoch)
        return self.start + self.new.first_window(epoch - self.first_epoch)

    def size(self, window: int) -> int:
        geo, w = self._split(window)
        return geo.size(w)

    def spans(self, window: int) -> list[BlockSpan]:
        geo, w = self._split(window)
        return geo.spans(w)

    def served_before(self, window: int) -> int:
        if window < self.start:
            return self.old.served_before(window)
        return self.old.served_before(self.start) + self.new.served_before(window - self.start)


Geometry = WindowGeometry | GrownGeometry


def build_geometry(block_sizes: np.ndarray, segments: list[tuple[int, int, int]], *, seed: int,
                   domain: int, shuffle: bool) -> WindowGeometry | GrownGeometry:
    """The geometry of a domain from its history ``[(first_epoch, num_blocks, window), ...]``
    (one segment per version of the domain; ``block_sizes`` of the latest)."""
    geo: WindowGeometry | GrownGeometry | None = None
    for first_epoch, num_blocks, window in segments:
        part = WindowGeometry(block_sizes[:num_blocks], window, seed=seed, domain=domain,
                              shuffle=shuffle, epoch_base=first_epoch)
        geo = part if geo is None else GrownGeometry(geo, part, first_epoch)
    assert geo is not None
    return geo
