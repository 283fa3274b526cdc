"""Per-domain sample order and shuffle windows. Pure functions.

For each domain and epoch, the domain's blocks are permuted (seeded by seed, domain, epoch) and
laid end to end; epochs follow one another, giving an endless *domain sequence*. It is cut into
*windows* of ``window`` samples (window ``k`` = positions ``[k * window, (k + 1) * window)``; the
last window of an epoch may run into the next one). A window is the unit of reading and of
shuffling (rows permuted, seeded by seed, domain, window), and each window is read by exactly one
reader (see :mod:`mixstream.plan.claims`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rng import BLOCK_ORDER, WINDOW_SHUFFLE, permutation


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


def epoch_spans(block_sizes: np.ndarray, order: np.ndarray, lo: int, hi: int) -> list[BlockSpan]:
    """The block pieces that make up positions ``[lo, hi)`` of one epoch's sequence."""
    sizes = block_sizes[order]
    ends = np.cumsum(sizes)
    i = int(np.searchsorted(ends, lo, side="right"))
    spans = []
    pos = lo
    while pos < hi:
        begin = int(ends[i] - sizes[i])
        stop = min(hi, int(ends[i]))
        spans.append(BlockSpan(int(order[i]), pos - begin, stop - begin))
        pos = stop
        i += 1
    return spans


def window_bounds(index: int, window: int) -> tuple[int, int]:
    return index * window, (index + 1) * window


def window_permutation(n: int, seed: int, domain: int, index: int, shuffle: bool) -> np.ndarray:
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return permutation(n, seed, WINDOW_SHUFFLE, domain, index)
