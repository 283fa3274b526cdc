"""The mixture sequence: which domain global sample ``i`` comes from.

A pure function of (seed, weight log, i), computed chunk by chunk:

* Every domain has a real-valued *target* count ``T_d(i)``: the integral of its weight over the
  weight log up to sample ``i`` (targets carry over weight changes, so a domain whose share is
  0.3 samples per step still gets its samples over many steps).
* The sample axis is cut into *chunks* at multiples of ``block`` (the mixing block). A chunk
  starting at ``cs`` with realised counts ``A`` gets per-domain counts by largest-remainder
  rounding of ``T(chunk end) - A`` (never negative; a zero-weight domain gets none), and an
  order that spaces each domain evenly through the chunk (ties broken by a per-chunk seeded
  domain priority). Realised counts therefore stay within a small constant of the targets at
  every prefix instead of drifting like i.i.d. draws.
* A weight-log entry starting at ``f`` inside a chunk keeps the chunk's samples before ``f``
  (the prefix of the order computed without it) and starts a new chunk at ``f``. Appending an
  entry therefore never changes a sample before its ``from_sample``: that is what makes a live
  weight change deterministic and checkable (an entry behind the frontier is an error).
* At an entry the targets are re-based: a domain switched off keeps its realised count as its
  target (it gets no more samples), and its fractional balance goes to the active domains.

:class:`MixCursor` walks this sequence forward; its checkpoint (chunk start, counts, entry in
force) makes random access and resume O(1) in the number of samples already consumed.
Megatron's ``BlendedDataset`` (greedy error-minimising) and Levanter's block-deterministic
mixtures are the ancestors; neither supports an append-only weight log with O(1) resume, hence
this module.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .rng import CHUNK_ORDER, generator


class LateWeightChangeError(RuntimeError):
    """A weight change arrived for samples that were already produced."""


def apportion(delta: np.ndarray, m: int, active: np.ndarray) -> np.ndarray:
    """Integer counts summing to ``m``, close to ``delta`` (largest remainder, floor at 0).

    Inactive domains get 0. Each active count is ``floor(delta)`` or ``floor(delta) + 1``
    except when a domain is ahead of its target (``delta < 0``), which is clamped to 0.
    """
    base = np.where(active, np.maximum(np.floor(delta), 0.0), 0.0).astype(np.int64)
    short = m - int(base.sum())
    if short > 0:
        n_active = int(active.sum())
        full, part = divmod(short, n_active)
        rem = np.where(active, delta - base, -np.inf)
        if full:
            base[active] += full
        if part:
            idx = np.argsort(-rem, kind="stable")[:part]
            base[idx] += 1
    while short < 0:
        cand = np.flatnonzero(active & (base > 0))
        idx = cand[np.argsort((delta - base)[cand], kind="stable")[:-short]]
        base[idx] -= 1
        short += len(idx)
    return base


def chunk_order(counts: np.ndarray, due: np.ndarray, rate: np.ndarray, seed: int,
                chunk_start: int) -> np.ndarray:
    """Domain ids of one chunk, in order of when each sample falls due.

    Domain ``d``'s ``j``-th sample of the chunk is due when its target count passes the next
    half-integer: at ``(due[d] + j) / rate[d]`` samples into the chunk, where ``due[d]`` is how
    far the domain is from its next half-integer at the chunk start (its carried balance). Ties
    are broken by a per-chunk seeded domain priority.
    """
    num = len(counts)
    dom = np.repeat(np.arange(num, dtype=np.int64), counts)
    if len(dom) == 0 or (counts > 0).sum() == 1:
        return dom
    firsts = np.cumsum(counts) - counts
    rank = np.arange(len(dom), dtype=np.int64) - np.repeat(firsts, counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        when = (due[dom] + rank) / rate[dom]
    prio = generator(seed, CHUNK_ORDER, chunk_start).permutation(num)
    order = np.lexsort((prio[dom], when))
    return dom[order]


@dataclass
class MixCheckpoint:
    """Cursor state at a chunk start: enough to continue without replaying earlier samples."""

    chunk_start: int
    counts: np.ndarray  # realised per-domain counts before chunk_start
    entry_from: int  # the weight entry in force at chunk_start ...
    entry_weights: np.ndarray
    entry_targets: np.ndarray  # ... and the targets T(entry_from) after re-basing
    entry_base: np.ndarray  # targets at entry_from before re-basing (for a same-index replacement)

    def get_state(self) -> dict:
        return {
            "chunk_start": int(self.chunk_start),
            "counts": [int(x) for x in self.counts],
            "entry_from": int(self.entry_from),
            "entry_weights": [float(x) for x in self.entry_weights],
            "entry_targets": [float(x) for x in self.entry_targets],
            "entry_base": [float(x) for x in self.entry_base],
        }

    @staticmethod
    def from_state(raw: Any, num_domains: int) -> MixCheckpoint:
        """A checkpoint from :meth:`get_state`'s dict, validated (untrusted input)."""
        try:
            mix = MixCheckpoint(
                int(raw["chunk_start"]),
                np.asarray(raw["counts"], dtype=np.int64),
                int(raw["entry_from"]),
                np.asarray(raw["entry_weights"], dtype=np.float64),
                np.asarray(raw["entry_targets"], dtype=np.float64),
                np.asarray(raw["entry_base"], dtype=np.float64),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"MixStream checkpoint 'mix' is malformed: {e}") from None
        for key in ("counts", "entry_weights", "entry_targets", "entry_base"):
            value = getattr(mix, key)
            if value.shape != (num_domains,) or not np.isfinite(value).all():
                raise ValueError(f"MixStream checkpoint mix.{key} must be {num_domains} finite "
                                 f"numbers")
        # (retired domains' samples leave the counts: their sum may be below the chunk start)
        if mix.chunk_start < 0 or (mix.counts < 0).any() or int(mix.counts.sum()) > mix.chunk_start:
            raise ValueError("MixStream checkpoint 'mix' is inconsistent: its counts add up to "
                             "more than its chunk start")
        return mix

    @staticmethod
    def initial(weights: np.ndarray) -> MixCheckpoint:
        num = len(weights)
        return MixCheckpoint(0, np.zeros(num, np.int64), 0, np.asarray(weights, np.float64),
                             np.zeros(num, np.float64), np.zeros(num, np.float64))


def rebase(targets: np.ndarray, counts: np.ndarray, new_weights: np.ndarray) -> np.ndarray:
    """Targets at a weight change: switched-off domains keep their realised count, and their
    fractional balance is spread over the active domains in proportion to the new weights."""
    off = new_weights <= 0
    out = targets.copy()
    balance = float((targets[off] - counts[off]).sum())
    out[off] = counts[off]
    out[~off] += balance * new_weights[~off] / new_weights[~off].sum()
    return out


class MixCursor:
    """Walks the mixture sequence forward from a checkpoint.

    ``domains(start, stop)`` returns the domain ids of global samples ``[start, stop)``; calls
    must not go backwards. New weight-log entries are given with :meth:`add_entry`; an entry
    starting before the *frontier* (the end of the last range returned) raises
    :class:`LateWeightChangeError`.
    """

    def __init__(self, seed: int, block: int, checkpoint: MixCheckpoint,
                 pending: Iterable[tuple[int, np.ndarray]] = (), frontier: int | None = None):
        if block < 1:
            raise ValueError(f"mixing block must be >= 1, got {block}")
        self.seed = seed
        self.block = block
        self.num_domains = len(checkpoint.counts)
        self._chunk_start = checkpoint.chunk_start
        self._counts = checkpoint.counts.astype(np.int64).copy()
        self._entry_from = checkpoint.entry_from
        self._entry_weights = checkpoint.entry_weights.astype(np.float64).copy()
        self._entry_targets = checkpoint.entry_targets.astype(np.float64).copy()
        self._entry_base = checkpoint.entry_base.astype(np.float64).copy()
        self._pending: list[tuple[int, np.ndarray]] = []
        self._order: np.ndarray | None = None  # order of [cs, natural end), computed lazily
        self.frontier = self._chunk_start if frontier is None else frontier
        for f, w in pending:
            self.add_entry(f, w)

    # -- state ------------------------------------------------------------------------------
    @property
    def weights(self) -> np.ndarray:
        return self._entry_weights

    def checkpoint(self, at: int | None = None) -> MixCheckpoint:
        """The cursor's state; ``at``: first advance to the chunk holding sample ``at`` (a
        position at a chunk's end is saved as the next chunk's start, as loading it puts it:
        one position, one state)."""
        if at is not None:
            self._advance(at)
            self.frontier = max(self.frontier, at)
        return MixCheckpoint(self._chunk_start, self._counts.copy(), self._entry_from, self._entry_weights.copy(),
                             self._entry_targets.copy(), self._entry_base.copy())

    def counts_at(self, pos: int) -> np.ndarray:
        """Realised per-domain counts of samples ``[0, pos)`` (advances the cursor to ``pos``)."""
        self._advance(pos)
        out = self._counts.copy()
        if pos > self._chunk_start:
            out += np.bincount(self._chunk()[: pos - self._chunk_start], minlength=self.num_domains)
        self.frontier = max(self.frontier, pos)
        return out

    def targets_at(self, pos: int) -> np.ndarray:
        """Per-domain real-valued targets at sample ``pos`` under the entries before ``pos``
        (advances the cursor to ``pos``; used to carry a run into another domain set)."""
        self._advance(pos)
        self.frontier = max(self.frontier, pos)
        if self._entry_from == pos and pos == self._chunk_start:  # an entry switched in at pos: its base
            return self._entry_base.copy()
        return self._targets(pos)

    # -- weight log -------------------------------------------------------------------------
    def add_entry(self, from_sample: int, weights: np.ndarray) -> None:
        if from_sample < self.frontier:
            raise LateWeightChangeError(
                f"weight change for sample {from_sample} arrived after samples up to "
                f"{self.frontier} were produced; apply weight changes at or after the first sample "
                f"not yet prefetched (MixLoader does this), or pass a later from_sample")
        w = np.asarray(weights, dtype=np.float64)
        # entries not reached yet may come in any order (a change placed before one scheduled
        # further ahead); one at the same sample replaces it
        i = bisect.bisect_left([f for f, _ in self._pending], from_sample)
        if i < len(self._pending) and self._pending[i][0] == from_sample:
            self._pending[i] = (from_sample, w)
        else:
            self._pending.insert(i, (from_sample, w))
        if from_sample == self._chunk_start:  # nothing produced at cs yet: switch now
            self._switch_if_due()
            self._order = None

    # -- walking ----------------------------------------------------------------------------
    def _natural_end(self) -> int:
        return (self._chunk_start // self.block + 1) * self.block

    def _end(self) -> int:
        end = self._natural_end()
        if self._pending and self._pending[0][0] < end:
            return self._pending[0][0]
        return end

    def _targets(self, pos: int) -> np.ndarray:
        return self._entry_targets + self._entry_weights * float(pos - self._entry_from)

    def _counts_natural(self) -> np.ndarray:
        ne = self._natural_end()
        delta = self._targets(ne) - self._counts
        return apportion(delta, ne - self._chunk_start, self._entry_weights > 0)

    def _chunk(self) -> np.ndarray:
        if self._order is None:
            # how many samples short of the next half-integer each domain is at the chunk start
            due = self._counts + 0.5 - self._targets(self._chunk_start)
            self._order = chunk_order(self._counts_natural(), due, self._entry_weights, self.seed, self._chunk_start)
        return self._order

    def _switch_if_due(self) -> None:
        while self._pending and self._pending[0][0] == self._chunk_start:
            _, w = self._pending.pop(0)
            if self._entry_from != self._chunk_start:  # first entry at this index; a later one replaces it
                self._entry_base = self._targets(self._chunk_start)
            self._entry_targets = rebase(self._entry_base, self._counts, w)
            self._entry_from, self._entry_weights = self._chunk_start, w

    def _next_chunk(self) -> None:
        end = self._end()
        if end == self._natural_end() and self._order is None:
            self._counts += self._counts_natural()
        else:
            self._counts += np.bincount(self._chunk()[: end - self._chunk_start], minlength=self.num_domains)
        self._chunk_start = end
        self._order = None
        self.frontier = max(self.frontier, end)
        self._switch_if_due()

    def _advance(self, pos: int) -> None:
        if pos < self._chunk_start:
            raise ValueError(f"mixture cursor cannot go back from {self._chunk_start} to {pos}")
        while pos >= self._end():
            self._next_chunk()

    def domains(self, start: int, stop: int) -> np.ndarray:
        """Domain ids (int64) of global samples ``[start, stop)``."""
        cs = self._chunk_start
        if self._order is not None and start >= cs and stop <= self._end():  # fast path
            self.frontier = max(self.frontier, stop)
            return self._order[start - cs : stop - cs].copy()
        out = np.empty(stop - start, dtype=np.int64)
        pos = start
        while pos < stop:
            self._advance(pos)
            end = min(stop, self._end())
            out[pos - start : end - start] = self._chunk()[pos - self._chunk_start : end - self._chunk_start]
            pos = end
        self.frontier = max(self.frontier, stop)
        return out
