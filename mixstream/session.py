"""The trainer-side session of a stream: topology, position, weight log, and what readers see.

A :class:`Session` owns everything that depends on how the stream is loaded and how far the
trainer got; :class:`~mixstream.stream.MixStream` is a facade over it. Readers (worker
processes or threads) share only the :class:`~mixstream.reading.ReaderPlan` and its
:class:`~mixstream.channel.WeightChannel`, to which the session publishes the start of each
iteration and the pending tail of the weight log.

Threads: every method that touches the session holds :attr:`lock`; MixLoader marks the window
in which the DataLoader may request one more batch (:class:`~mixstream.link.LoaderLink`), so a
weight change is placeable from any thread of the trainer's process when a MixLoader drives
the stream.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np

from .batching import split_samples
from .channel import WeightChannel
from .link import LoaderLink
from .plan.claims import ClaimBook
from .plan.mixture import MixCheckpoint
from .plan.weights import LogEntry, WeightLog
from .position import Position
from .reading import ReaderPlan, check_driver, check_workers, produce
from .resume import Restored
from .ring import BatchRing, ring_layout
from .sources.base import Schema
from .sources.resolve import Domain
from .threads import InlineReaders, ThreadedReaders, readers
from .topology import resolve_topology
from .tracker import PositionTracker
from .walker import SlotLayout


class Session:
    """Topology (rank, world size, loader layout), position and weight log of one stream, in
    the trainer's process."""

    def __init__(self, plan: ReaderPlan, initial_weights: np.ndarray, *, rank: int | None,
                 world_size: int | None, max_pending: int | None):
        self.plan = plan
        self.lock = threading.RLock()
        self.fixed = (rank, world_size)
        self.rank, self.world_size = resolve_topology(rank, world_size)
        plan.rank, plan.world_size = self.rank, self.world_size
        self.max_pending = max_pending
        self.batch_size: int | None = None
        self.num_workers: int | None = None
        self.prefetch_depth = 0
        self.threads = 0  # >0: the readers are this many threads in this process
        self.position = Position()
        self.link = LoaderLink(self)
        self.loop_thread: int | None = None  # the thread that drives a plain DataLoader
        self.tail_floor = 0  # the pending tail's lower bound (sample), monotonic per iteration
        self.readers: ThreadedReaders | InlineReaders | None = None  # this iteration's readers
        self.initial_weights = initial_weights
        self.log = WeightLog(initial_weights)

    @property
    def bound(self) -> bool:
        return self.position.tracker is not None

    # -- binding ----------------------------------------------------------------------------
    def bind(self, batch_size: int, num_workers: int, prefetch_factor: int | None,
             batched: bool, *, loader: bool, threads: bool) -> None:
        pos = self.position
        with self.lock:
            if pos.tracker is not None and (self.batch_size, self.num_workers) != (
                    batch_size, num_workers):
                if pos.consumed > 0:
                    raise ValueError(f"this stream was loaded with batch_size={self.batch_size}, "
                                     f"num_workers={self.num_workers}; it cannot change to "
                                     f"{batch_size}, {num_workers} mid-run")
                pos.tracker = None
            self.batch_size, self.num_workers = batch_size, num_workers
            self.threads = num_workers if threads else 0
            self.prefetch_depth = 0 if num_workers == 0 else num_workers * (prefetch_factor or 2)
            self.plan.batched = batched
            self.plan.ring = self._make_ring(batch_size, num_workers, batched and not threads)
            self.link.driven = loader
            self.loop_thread = threading.get_ident()
            # room for every change a worker may not have passed, plus changes scheduled ahead
            need = self.prefetch_depth + 2
            if self.max_pending is not None and self.max_pending < need:
                raise ValueError(f"max_pending_weight_changes={self.max_pending} is below the "
                                 f"loader's prefetch depth + 2 ({need}); raise it")
            self.plan.channel.ensure_capacity(self.max_pending or self.prefetch_depth + 64)
            self.refresh_topology()
            if pos.tracker is None:
                pos.tracker = self.new_tracker()
            self.begin_iteration()

    def _make_ring(self, batch_size: int, num_workers: int, batched: bool) -> BatchRing | None:
        """Shared batch slots for worker processes, when every column has a fixed size."""
        if not batched or num_workers == 0:
            return None
        fields = ring_layout(self.plan.schema, batch_size, self.plan.token_dtype)
        if fields is None:
            return None
        slots = self.prefetch_depth + 2
        ring = self.plan.ring
        if ring is not None and ring.fields == fields and ring.slots >= slots:
            return ring
        if self.plan.channel.frozen:
            raise RuntimeError("the stream's shared batch slots must change, but persistent "
                               "DataLoader workers hold the old ones; create a new MixLoader")
        return BatchRing(fields, slots)

    def refresh_topology(self) -> None:
        """Read rank and world size now; re-bind if this process delivered nothing since the
        last bind/load (a checkpoint loaded before the process group existed is re-applied
        under the true topology), else refuse."""
        rank, world = resolve_topology(*self.fixed)
        if (rank, world) == (self.rank, self.world_size):
            return
        pos = self.position
        if not pos.fresh:
            raise RuntimeError(
                f"this stream was bound as rank {self.rank} of {self.world_size} but now runs as "
                f"rank {rank} of {world} after delivering batches; initialise torch.distributed "
                f"(or set RANK/WORLD_SIZE) before iterating, or pass rank=/world_size= to "
                f"MixStream")
        self.rank, self.world_size = rank, world
        self.plan.rank, self.plan.world_size = rank, world
        if pos.tracker is not None:
            pos.replay_load()
            pos.tracker = self.new_tracker()

    def layout(self) -> SlotLayout:
        assert self.batch_size is not None
        return SlotLayout(self.batch_size, self.world_size, self.num_workers or 0)

    def new_tracker(self) -> PositionTracker:
        """A tracker at the position, from the loaded checkpoint if any (elastic if its
        topology differs), else from the start."""
        topo = self.layout()
        pos = self.position
        self.plan.batch_size, self.plan.num_workers = topo.batch_size, self.num_workers or 0
        r, pos.resume = pos.resume, None
        mix = r.mix if r is not None else MixCheckpoint.initial(self.log.entries[0].weights)
        if r is None:
            claims = ClaimBook(self.plan.geometry, topo.num_slots)
        else:
            claims = r.claim_book()
            old = SlotLayout(r.batch_size, r.world_size, r.num_workers)
            if (old.batch_size, old.world_size, old.num_workers) != (
                    topo.batch_size, topo.world_size, topo.num_workers):
                claims = self._elastic(old, topo, claims)
        tracker = PositionTracker(seed=self.plan.seed, block=self.plan.mix_block, topology=topo,
                                  claims=claims, mix=mix, pending=self.log.after(mix.chunk_start),
                                  batch=pos.consumed)
        self.plan.channel.allocate_start(claims.num_slots, claims.queue_depth)
        return tracker

    def _elastic(self, old: SlotLayout, new: SlotLayout, claims: ClaimBook) -> ClaimBook:
        """Resume a checkpoint under another topology (see ClaimBook.remap)."""
        done = self.position.consumed * old.world_size * old.batch_size
        step = new.world_size * new.batch_size
        if done % step:
            raise ValueError(f"the checkpoint stopped after {done} samples, which is not a whole "
                             f"number of global batches of {new.world_size} ranks x batch_size "
                             f"{new.batch_size}; keep the global batch size ({old.world_size} x "
                             f"{old.batch_size}) or use one that divides {done}")
        self.position.consumed = done // step
        return claims.remap(new.num_slots)

    # -- iterations -------------------------------------------------------------------------
    def iterate(self, unbound_batch: int) -> Iterator[Any]:
        """This process's batches (or samples) from the published start: the reader loop
        itself, or reader threads. A stream no loader bound yields samples, as every dataset
        does (bound here with ``unbound_batch``)."""
        link = self.link
        check_driver(link.driven, link.iterating)
        if not self.bound:
            self.bind(unbound_batch, 0, None, False, loader=False, threads=False)
        elif not link.iterating:  # (MixLoader published the start just before)
            self.begin_iteration()
        if not self.threads:
            check_workers(self.plan, None)
            return produce(self.plan, 0, 1)
        if self.readers is not None:  # the previous iteration's threads stop
            self.readers.close()
        it = self.readers = readers(self.plan, self.threads, self.position.consumed,
                                    lock=self.lock, horizon=self.horizon)
        if self.plan.batched:
            return it
        size = self.batch_size or 1
        return (s for batch in it for s in split_samples(batch, size))

    def begin_iteration(self) -> None:
        """Publish where the next iteration starts (before DataLoader workers (re)start)."""
        with self.lock:
            pos = self.position
            if pos.tracker is None:
                return
            self.refresh_topology()
            start = pos.trained_batches
            pos.tracker.advance_to(start)
            pos.consumed, pos.trained = start, None
            walker = pos.tracker.walker
            mix = walker.cursor.checkpoint()
            self.plan.channel.write_start(start, mix, walker.claims)
            self.tail_floor = mix.chunk_start + 1  # older entries are in the start checkpoint
            self.plan.channel.write_tail(self.log.after(mix.chunk_start))

    def horizon(self) -> int:
        """The first batch the loader cannot have requested yet."""
        return self.position.consumed + self.prefetch_depth + (1 if self.link.in_next else 0)

    # -- weights ----------------------------------------------------------------------------
    def install(self, domains: list[Domain], schema: Schema, union_schema: Schema,
                windows: list[int], initial_weights: np.ndarray) -> None:
        """Readers get a new domain set (construction, a domain-set change)."""
        plan = self.plan
        plan.domains, plan.schema, plan.union_schema = domains, schema, union_schema
        plan.windows, plan.segments, plan._geometry = windows, None, None
        if plan.channel.num_domains != len(domains):
            plan.channel = WeightChannel(len(domains), plan.channel.capacity)
            if self.num_workers is not None:
                plan.channel.allocate_start(1, 1)
        self.reset_log(initial_weights)

    def reset_log(self, w0: np.ndarray) -> None:
        """A log holding only the initial weights ``w0`` (a new domain set, new initial
        weights); a bound session restarts its tracker from them."""
        self.initial_weights = w0
        self.log = WeightLog(w0)
        if self.position.tracker is not None:
            self.position.tracker = self.new_tracker()
            self.begin_iteration()

    def place(self, w: np.ndarray, from_batch: int | None) -> int:
        """Append ``w`` to the log at the first sample no reader can have produced (or at
        ``from_batch``, checked) and publish it; returns that sample. Holds the lock."""
        pos = self.position
        if self.batch_size is None or pos.tracker is None:
            raise ValueError("set_weights needs the batch size: use MixLoader, or pass "
                             "batch_size= to MixStream and call stream.bind(...) first")
        if not self.link.driven and self.loop_thread not in (None, threading.get_ident()):
            raise RuntimeError("set_weights was called from another thread than the training "
                               "loop of a plain DataLoader; the stream cannot know which "
                               "batches that DataLoader already requested. Use MixLoader "
                               "(safe from any thread) or call it from the loop")
        horizon = self.horizon()
        per_batch = self.world_size * self.batch_size
        if from_batch is not None and from_batch < horizon:
            raise ValueError(f"from_batch={from_batch} may already be prefetched (fetched "
                             f"{pos.consumed} + prefetch depth {self.prefetch_depth}); "
                             f"use from_batch >= {horizon}")
        # at the horizon by default, not after a change scheduled further ahead (that one still
        # applies at its own batch; placing the new one there replaced it silently)
        from_sample = (horizon if from_batch is None else from_batch) * per_batch
        # every entry a reader may not have seen: a reader last read the tail when it started
        # its latest batch, which is at most ``readers`` behind the trainer, and must still walk
        # other readers' batches after it (a floor at the trainer's position dropped entries a
        # slow reader needed). Written first: a tail that does not fit changes nothing.
        readers = max(1, self.num_workers or 0)
        floor = max(self.tail_floor, max(0, pos.consumed - readers) * per_batch)
        tail = sorted([(e.from_sample, e.weights) for e in self.log.entries
                       if e.from_sample >= floor and e.from_sample != from_sample]
                      + [(from_sample, w)], key=lambda e: e[0])
        self.plan.channel.write_tail(tail)
        self.tail_floor = floor  # never lower within an iteration: readers prune below it
        self.log.add(from_sample, w)
        pos.tracker.add_entry(from_sample, w)
        if len(self.log) > 4 * self.plan.channel.capacity:
            self._compact()
        return from_sample

    def _compact(self) -> None:
        """Fold entries the tracker has passed into its mixture state (bounded memory/state)."""
        tracker = self.position.tracker
        assert tracker is not None
        tracker.advance_to(self.position.trained_batches)
        self.log.compact(tracker.walker.cursor.checkpoint().chunk_start)

    # -- checkpoints ------------------------------------------------------------------------
    def load(self, got: Restored) -> None:
        """Continue from a checkpoint :func:`~mixstream.resume.restore` checked."""
        if self.plan.channel.frozen and self.bound and \
                got.resume.claims.num_slots != self.layout().num_slots:
            raise RuntimeError("cannot load a checkpoint of another topology into a stream whose "
                               "persistent DataLoader workers are running; create a new MixLoader")
        # the geometry restore built for these segments (readers build the same one)
        self.plan.segments, self.plan._geometry = got.segments, got.resume.claims.geometry
        self.log = got.log
        self.position.load(got.resume, got.consumed)
        if self.position.tracker is not None:  # already bound: rebuild (elastic if needed)
            self.position.tracker = self.new_tracker()

    def get_state(self) -> dict[str, Any]:
        """Topology, position, retained weight log, mixture checkpoint and claim book at the
        trained position. Holds the lock."""
        tracker = self.position.tracker
        if tracker is None:
            raise RuntimeError("state_dict() needs the loader topology: use MixLoader, or call "
                               "stream.bind(batch_size, num_workers) / stream.bind_loader(loader)")
        self.refresh_topology()
        tracker.advance_to(self.position.trained_batches)
        walker = tracker.walker
        mix = walker.cursor.checkpoint(at=tracker.batch * self.world_size * (self.batch_size or 0))
        log = [e for e in self.log.entries if e.from_sample > mix.chunk_start]
        log.insert(0, LogEntry(mix.entry_from, mix.entry_weights))
        return {
            "segments": [[list(sg) for sg in segs] for segs in
                         (self.plan.segments or self.plan.default_segments())],
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "world_size": self.world_size,
            "rank": self.rank,
            **self.position.get_state(),
            "weight_log": [e.get_state() for e in log],
            "weight_digest": self.log.digest,
            "mix": mix.get_state(),
            "claims": walker.claims.get_state(),
        }

    def realised_counts(self) -> np.ndarray | None:
        """Global per-domain samples before the trained position (None if unbound)."""
        tracker = self.position.tracker
        if tracker is None:
            return None
        tracker.advance_to(self.position.trained_batches)
        return tracker.realised_counts()
