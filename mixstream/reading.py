"""The reader side of a MixStream: what DataLoader workers receive, and the loop they run.

A worker gets a :class:`ReaderPlan` and nothing else: the sources, the plan settings, the
session's topology and the weight channel's shared-memory handles. Nothing the trainer attached
to the stream (controllers, loggers, a model) travels to workers — under spawn and forkserver
(Python 3.14's default on Linux) everything a worker gets is pickled, and an attached closure
or model used to make every worker fail or carry the model.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .batching import Pieces, assemble, split_samples
from .channel import WeightChannel
from .plan.claims import ClaimBook
from .plan.order import Geometry, build_geometry
from .plan.rng import domain_key
from .reservoir import DomainExhausted, DomainReader
from .ring import BatchRing
from .sources.base import Schema
from .sources.resolve import Domain
from .walker import SlotLayout, StreamEnd, Walker


@dataclass
class ReaderPlan:
    """Everything a reader needs to produce its batches (the worker payload)."""

    domains: list[Domain]
    schema: Schema  # batched mode: columns every domain has
    union_schema: Schema  # per-sample mode: every domain's columns
    windows: list[int]
    seed: int
    shuffle: bool
    mix_block: int
    on_exhausted: str
    prefetch: bool
    token_dtype: str | None
    channel: WeightChannel
    batch_size: int = 0
    num_workers: int = 0
    rank: int = 0
    world_size: int = 1
    batched: bool = True
    # per domain, its versions [(first_epoch, num_blocks, window)] (a domain that grew has two)
    segments: list[list[tuple[int, int, int]]] | None = None
    ring: BatchRing | None = None  # shared batch slots for DataLoader workers (fixed columns)
    _geometry: list[Geometry] | None = field(default=None, repr=False)

    @property
    def layout(self) -> SlotLayout:
        return SlotLayout(self.batch_size, self.world_size, self.num_workers)

    def default_segments(self) -> list[list[tuple[int, int, int]]]:
        return [[(0, len(d.block_sizes), w)] for d, w in zip(self.domains, self.windows)]

    @property
    def geometry(self) -> list[Geometry]:
        if self._geometry is None:
            segments = self.segments or self.default_segments()
            self._geometry = [
                build_geometry(d.block_sizes, segs, seed=self.seed, domain=domain_key(d.name),
                               shuffle=self.shuffle)
                for d, segs in zip(self.domains, segments)]
        return self._geometry

    @property
    def limit(self) -> np.ndarray | None:
        """``stop`` mode: no domain beyond its first epoch."""
        if self.on_exhausted != "stop":
            return None
        return np.array([d.num_samples for d in self.domains], np.int64)


def check_driver(driven: bool, iterating: bool) -> None:
    """A MixLoader-driven stream must not be iterated by another loader."""
    if driven and not iterating:
        raise RuntimeError(
            "this MixStream is driven by a MixLoader but is being iterated by another "
            "DataLoader (e.g. accelerate's skip_first_batches or a Trainer building its own "
            "loader): that loader would re-batch or skip data behind the stream's back. "
            "Iterate the MixLoader itself; to resume, load_state_dict() instead of skipping "
            "batches (mixstream.integrations do this for HF Trainer and Lightning)")


def check_workers(plan: ReaderPlan, workers: int | None) -> None:
    """The readers must be the ones bound: ``workers`` DataLoader workers, or (None) the main
    process of a stream bound without workers."""
    if workers is not None and plan.num_workers != workers:
        raise RuntimeError(f"MixStream is bound to num_workers={plan.num_workers} but runs in "
                           f"a DataLoader with {workers} workers; use MixLoader, or call "
                           f"stream.bind_loader(loader) before iterating")
    if workers is None and plan.num_workers > 1:
        raise RuntimeError(f"MixStream bound to num_workers={plan.num_workers} iterated in the "
                           f"main process; use a DataLoader with num_workers={plan.num_workers}")


def produce(plan: ReaderPlan, worker: int, num: int, ring: BatchRing | None = None
            ) -> Generator[Any, None, None]:
    """Batches (or samples) of reader ``worker`` of ``num``: this rank's batches
    ``t ≡ start + worker (mod num)`` from the start checkpoint in the channel. With ``ring``
    (a DataLoader worker process), each batch is written to its ring slot and a
    :class:`~mixstream.ring.RingRef` is yielded instead."""
    return _produce(plan, (worker,), num, ring)


def produce_in_turn(plan: ReaderPlan, num: int) -> Generator[Any, None, None]:
    """Every batch of this rank, reader slot ``t - start mod num`` making batch ``t``: the
    batches of ``num`` :func:`produce` readers, in order, from one walk of the plan. Each slot
    keeps its own windows and decodes them on its own thread. Why one walk: every reader walks
    all of the rank's batches (it must know what the others took); ``num`` readers in one
    process under the GIL would do that walk ``num`` times over, ~18 µs per batch with 2."""
    return _produce(plan, tuple(range(num)), num, None)


class _Slot:
    """One reader slot's windows, and the thread that decodes its next ones."""

    def __init__(self, plan: ReaderPlan):
        self.executor = (ThreadPoolExecutor(1, thread_name_prefix="mixstream") if plan.prefetch
                         else None)
        self.readers: dict[int, DomainReader] = {}

    def close(self) -> None:
        for reader in self.readers.values():
            reader.release()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)


def _produce(plan: ReaderPlan, workers: tuple[int, ...], num: int, ring: BatchRing | None
             ) -> Generator[Any, None, None]:
    topo = plan.layout
    bsz = plan.batch_size
    channel = plan.channel
    start, mix, arrays = channel.read_start()
    claims = ClaimBook(plan.geometry, topo.num_slots, arrays)
    walker = Walker(seed=plan.seed, block=plan.mix_block, topology=topo, claims=claims, mix=mix,
                    pending=[], next_batch=start * topo.world_size, limit=plan.limit)
    # entries up to the start checkpoint's chunk are folded into it; the tail reaches back a
    # few batches (see channel.py), so older entries in it are skipped, not added again
    seen: dict[int, np.ndarray] = {mix.entry_from: mix.entry_weights}
    folded = mix.chunk_start
    version = -1
    slots = {w: _Slot(plan) for w in workers}
    weights = None
    schema = plan.schema if plan.batched else plan.union_schema
    try:
        for first in itertools.count(start, num):
            for w in workers:
                t = first + w
                tail, version = channel.read_tail(version)
                if tail is not None:
                    _take_entries(walker, [e for e in tail if e[0] >= folded], seen)
                g = topo.global_batch(plan.rank, t)
                slot = slots[w]
                try:
                    dom, served = walker.own(g)
                    pieces = _pieces(plan, dom, served, slot.readers, slot.executor, claims,
                                     int(topo.slot_of(g)))
                except (StreamEnd, DomainExhausted):
                    return
                a = g * bsz
                batch = assemble(schema, bsz, pieces, dom, np.arange(a, a + bsz), plan.batched,
                                 plan.token_dtype)
                if walker.cursor.weights is not weights:  # a change: drop switched-off domains
                    weights = walker.cursor.weights
                    for each in slots.values():
                        for i, reader in each.readers.items():
                            if weights[i] == 0:
                                reader.release()
                if ring is not None:
                    yield ring.put(t, batch)
                elif plan.batched:
                    yield batch
                else:
                    yield from split_samples(batch, bsz)
    finally:
        try:
            for each in slots.values():
                each.close()
        except Exception:  # noqa: BLE001 - at interpreter exit, module globals are gone
            pass


def _take_entries(walker: Walker, tail: list[tuple[int, np.ndarray]],
                  seen: dict[int, np.ndarray]) -> None:
    """Add the tail's entries this reader has not taken yet (the tail is rewritten whole)."""
    for f, w in tail:
        known = seen.get(f)
        if known is not None and np.array_equal(known, w):
            continue
        walker.cursor.add_entry(f, w)  # LateWeightChangeError if f is behind what was produced
        seen[f] = w
    if tail:
        first = tail[0][0]
        for f in [f for f in seen if f < first]:
            del seen[f]


def _pieces(plan: ReaderPlan, dom: np.ndarray, claims: list, readers: dict[int, DomainReader],
            executor: ThreadPoolExecutor | None, book: ClaimBook, slot: int) -> Pieces:
    order = np.argsort(dom, kind="stable")
    pieces: Pieces = []
    start = 0
    for i, parts in claims:
        n = sum(k for _, _, k in parts)
        reader = readers.get(i)
        if reader is None:
            reader = DomainReader(plan.domains[i], i, seed=plan.seed, geometry=book.geometry[i],
                                  shuffle=plan.shuffle,
                                  epochs=1 if plan.on_exhausted == "stop" else None,
                                  executor=executor)
            readers[i] = reader
        before = reader.window_index
        pieces.append((order[start : start + n], reader.take(parts)))
        if reader.window_index != before:  # started a window: decode the reserved next one
            reader.prefetch(book.upcoming(slot, i))
        start += n
    return pieces
