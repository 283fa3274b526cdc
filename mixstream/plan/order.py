"""Per-domain sample order: epochs, the split among readers, shuffle windows. Pure functions.

For each domain and epoch, the domain's blocks are permuted (seeded by seed, domain, epoch) and
laid end to end: the *epoch sequence*. It is cut into ``num_slots`` contiguous ranges, one per
reader (a (rank, worker) pair), so a reader decodes only the blocks of its range (plus at most
the two blocks it shares with its neighbours) and no two readers yield the same sample within
an epoch. A reader's range is cut into *windows* of ``window`` samples; each window is shuffled
(seeded by seed, domain, epoch, window start). A reader's ``p``-th sample of a domain is thus a
pure function of ``p``, so resume needs only the per-reader counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rng import BLOCK_ORDER, WINDOW_SHUFFLE, permutation


def slot_range(num_samples: int, slot: int, num_slots: int) -> tuple[int, int]:
    """The contiguous part ``[lo, hi)`` of an epoch sequence that reader ``slot`` owns."""
    return num_samples * slot // num_slots, num_samples * (slot + 1) // num_slots


@dataclass(frozen=True)
class Position:
    """Where a reader's ``p``-th sample of a domain lies."""

    epoch: int
    window: int  # index of the window within the reader's range
    offset: int  # position inside the (shuffled) window


def locate(p: int, range_size: int, window: int) -> Position:
    epoch, q = divmod(p, range_size)
    w, off = divmod(q, window)
    return Position(epoch, w, off)


def block_order(num_blocks: int, seed: int, domain: int, epoch: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(num_blocks, dtype=np.int64)
    return permutation(num_blocks, seed, BLOCK_ORDER, domain, epoch)


@dataclass(frozen=True)
class BlockSpan:
    """Rows ``[start, stop)`` of block ``block``."""

    block: int
    start: int
    stop: int


def window_spans(block_sizes: np.ndarray, order: np.ndarray, lo: int, hi: int) -> list[BlockSpan]:
    """The block pieces that make up positions ``[lo, hi)`` of an epoch sequence."""
    sizes = block_sizes[order]
    ends = np.cumsum(sizes)
    first = int(np.searchsorted(ends, lo, side="right"))
    spans = []
    pos = lo
    i = first
    while pos < hi:
        begin = int(ends[i] - sizes[i])
        stop = min(hi, int(ends[i]))
        spans.append(BlockSpan(int(order[i]), pos - begin, stop - begin))
        pos = stop
        i += 1
    return spans


def window_permutation(n: int, seed: int, domain: int, epoch: int, start: int,
                       shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return permutation(n, seed, WINDOW_SHUFFLE, domain, epoch, start)
