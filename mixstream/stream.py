"""MixStream: the mixture-aware streaming ``IterableDataset``.

Data flow (see docs/ARCHITECTURE.md): sources -> plan (weight log, mixture sequence, per-domain
order, claim book) -> per-domain reservoirs in each reader -> batches tagged with domain ids.
The trainer's process owns the weight log and a :class:`~mixstream.tracker.PositionTracker`;
readers (DataLoader workers) get a :class:`~mixstream.reading.ReaderPlan` and read weight
changes and their start position from a :class:`~mixstream.channel.WeightChannel`.

Global layout: rank ``r``'s ``t``-th batch holds global samples
``[(t * world + r) * B, (t * world + r + 1) * B)``, and a DataLoader with ``N`` workers asks
worker ``j`` for the batches ``t`` with ``t - start ≡ j (mod N)``; reader slot ``t mod N`` of
rank ``r`` serves them, so the data each slot reads does not depend on where an iteration started.

Threads: every method that touches the session (weights, position, checkpoints) holds one lock,
and MixLoader marks the window in which the DataLoader may request one more batch, so
``set_weights`` is safe from any thread of the trainer's process when a MixLoader drives the
stream (an async validation controller, say).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .channel import WeightChannel
from .checkpoint import (
    STATE_VERSION,
    blocks_digest,
    content_units,
    float_list,
    int_array,
    parse_domains,
    parse_segments,
    require,
    to_plain,
    units_digest,
)
from .plan.claims import ClaimBook, layout_shapes
from .plan.mixture import MixCheckpoint, MixCursor, rebase
from .plan.order import build_geometry
from .plan.rng import domain_key
from .plan.weights import LogEntry, WeightLog, WeightsLike, normalize_weights
from .reading import ReaderPlan, produce
from .remote.config import RemoteConfig
from .ring import BatchRing, ring_layout
from .sources.base import Schema
from .sources.resolve import Domain
from .topology import resolve_topology
from .tracker import PositionTracker
from .walker import Topology

ON_EXHAUSTED = ("restart", "stop")
UNBOUND_BATCH = 32  # internal batch of a stream iterated without a loader (yields samples)


class MixStream(IterableDataset):
    """Sharded streaming dataset mixing several domains with live, resumable weights.

    Args:
        domains: ``{name: source}``; a source is a mixstream shard directory, a Parquet file,
            glob or directory, an MDS directory, a ``datasets.Dataset`` / ``save_to_disk``
            folder, a :class:`~mixstream.sources.base.Source`, or a list of these.
        weights: initial mixture (``{name: weight}`` or a sequence); default uniform.
        seed: root seed of every random choice (block order, window shuffles, mixing ties).
        batch_size: samples per batch per rank; set by :class:`~mixstream.MixLoader`.
        shuffle: shuffle block order per epoch and samples within each window.
        shuffle_window: samples per domain per reader in one shuffle window; memory per worker
            is about ``2 * shuffle_window * bytes_per_sample`` per active domain.
        memory_budget: bytes per worker for all reservoirs; if given, overrides
            ``shuffle_window`` per domain (``budget / (2 * domains * bytes_per_sample)``).
        mix_block: samples per mixing chunk (exact counts per chunk, see plan.mixture).
        on_exhausted: ``"restart"`` (next epoch, reshuffled) or ``"stop"`` (end the stream before
            the first round of batches that would need a sample beyond a domain's first epoch;
            every rank yields the same number of batches).
        columns: keep only these columns (all domains must have them).
        rank, world_size: fixed values; by default read when iteration starts and at
            ``state_dict()`` from ``torch.distributed`` if initialised, else ``RANK`` /
            ``WORLD_SIZE``, else 0 and 1.
        prefetch: decode the next window of each active domain in a background thread.
        max_pending_weight_changes: weight changes that may be scheduled at or after the
            trainer's position at once (default: enough for the prefetch depth plus 64).
        token_dtype: unsigned integer columns (token ids stored as uint16/uint32) arrive as this
            dtype (default ``torch.int64``, what ``nn.Embedding`` takes; None keeps them).
        verify: check every local file against its recorded hash (manifest sha256, MDS index
            hashes) once per process when first opened, and validate decoded Arrow data, so a
            corrupt shard is an error naming the file and domain, never data (remote files are
            checked when downloaded).
        remote, cache_dir, cache_limit_bytes, remote_concurrency: how URL sources (``s3://``,
            ``gs://``, ``az://``, ``http(s)://``) are fetched: a local cache shared by all workers
            and ranks of a machine (see :class:`~mixstream.remote.config.RemoteConfig`).
    """

    def __init__(
        self,
        domains: Mapping[str, Any],
        weights: WeightsLike | None = None,
        *,
        seed: int = 0,
        batch_size: int | None = None,
        shuffle: bool = True,
        shuffle_window: int = 8192,
        memory_budget: int | None = None,
        mix_block: int = 1024,
        on_exhausted: str = "restart",
        columns: list[str] | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        prefetch: bool = True,
        max_pending_weight_changes: int | None = None,
        token_dtype: torch.dtype | None = torch.int64,
        verify: bool = True,
        remote: RemoteConfig | None = None,
        cache_dir: str | None = None,
        cache_limit_bytes: int | None = None,
        remote_concurrency: int = 4,
    ):
        super().__init__()
        if not isinstance(domains, Mapping) or not domains:
            raise ValueError("domains must be a non-empty mapping {name: path or source}")
        for name in domains:
            if not isinstance(name, str) or not name:
                raise ValueError(f"domain names must be non-empty strings, got {name!r}")
        if on_exhausted not in ON_EXHAUSTED:
            raise ValueError(f"on_exhausted must be one of {ON_EXHAUSTED}, got {on_exhausted!r}")
        if shuffle_window < 1:
            raise ValueError(f"shuffle_window must be >= 1, got {shuffle_window}")
        if token_dtype is not None and not isinstance(token_dtype, torch.dtype):
            raise ValueError(f"token_dtype must be a torch.dtype or None, got {token_dtype!r}")
        remote = remote or RemoteConfig(cache_dir=cache_dir, cache_limit_bytes=cache_limit_bytes,
                                        concurrency=remote_concurrency)
        self._remote = remote
        self._columns = columns
        self._shuffle_window, self._memory_budget = shuffle_window, memory_budget
        self._fixed_topology = (rank, world_size)
        self.rank, self.world_size = resolve_topology(rank, world_size)
        if max_pending_weight_changes is not None and max_pending_weight_changes < 2:
            raise ValueError(f"max_pending_weight_changes must be >= 2, got "
                             f"{max_pending_weight_changes}")
        self._max_pending = max_pending_weight_changes
        self._verify = bool(verify)
        doms = [Domain(name, spec, remote=remote, verify=verify) for name, spec in domains.items()]
        self._plan = ReaderPlan(
            domains=doms, schema={}, union_schema={}, windows=[], seed=int(seed),
            shuffle=bool(shuffle), mix_block=int(mix_block), on_exhausted=on_exhausted,
            prefetch=bool(prefetch),
            token_dtype=None if token_dtype is None else str(token_dtype).replace("torch.", ""),
            channel=WeightChannel(len(doms), max_pending_weight_changes or 64), rank=self.rank,
            world_size=self.world_size)
        self._install_domains(doms, weights)
        self._listeners: list[Callable[[int, dict[str, float]], None]] = []
        self.batch_size: int | None = batch_size
        self.num_workers: int | None = None
        self.prefetch_depth = 0
        self._consumed = 0  # batches fetched from the loader (drives weight placement)
        self._trained: int | None = None  # batches trained on, when a trainer says so
        self._tracker: PositionTracker | None = None
        self._attached: dict[str, Any] = {}
        self._resume: dict[str, Any] | None = None  # a loaded checkpoint awaiting bind()
        self._loaded: tuple[dict[str, Any], int] | None = None  # (resume, position) until read
        self._fresh = True  # nothing delivered since the last bind/load: the topology may move
        self._lock = threading.RLock()
        self._loop_thread: int | None = None
        self._driven_by_loader = False  # bound by a MixLoader (which counts batches)
        self._in_next = False  # the MixLoader is inside next(): one more batch may be requested
        self._loader_iterating = False  # set by MixLoader while it creates its iterator
        self._restart = False  # the domain set changed: the loader restarts its iterator
        self._delivery_hooks: list[Callable[[Any], None]] = []  # called with each batch
        self._mute = 0  # >0: set_weights is ignored (objects rebuilt while resuming)
        self._started = False  # an iteration has started (initial weights are fixed)
        self._threads = 0  # >0: the readers are this many threads in this process
        self._readers: Any = None  # the running ThreadedReaders (threads keep it alive)
        self._tail_floor = 0  # the pending tail's lower bound (sample), monotonic per iteration

    # -- the worker payload -----------------------------------------------------------------
    def __getstate__(self) -> dict:
        """Workers get the reader plan and two flags: nothing attached, no trainer state."""
        return {"_plan": self._plan, "domains": self.domains, "batch_size": self.batch_size,
                "num_workers": self.num_workers, "_driven_by_loader": self._driven_by_loader,
                "_loader_iterating": self._loader_iterating, "_in_worker_copy": True}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    # -- construction helpers ---------------------------------------------------------------
    def _install_domains(self, doms: list[Domain], weights: WeightsLike | None) -> None:
        """Make ``doms`` this stream's domains (construction, and a domain-set change)."""
        self.domains = [d.name for d in doms]
        self._domains = doms
        plan = self._plan
        plan.domains = doms
        plan.schema = self._select_columns(self._columns)
        plan.union_schema = dict(plan.schema)
        if self._columns is None:
            for dom in doms[1:]:
                for key, spec in dom.schema.items():
                    plan.union_schema.setdefault(key, spec)
        plan.windows = self._windows(self._shuffle_window, self._memory_budget)
        plan.segments, plan._geometry = None, None
        if plan.channel.num_domains != len(doms):
            plan.channel = WeightChannel(len(doms), plan.channel.capacity)
            if self.num_workers is not None:
                plan.channel.allocate_start(1, 1)
        d = len(doms)
        w0 = np.full(d, 1.0 / d) if weights is None else normalize_weights(weights, self.domains)
        self._fresh_log(w0)

    def _select_columns(self, columns: list[str] | None) -> Schema:
        first = self._domains[0]
        if columns is None:
            return dict(first.schema)
        for dom in self._domains:
            missing = [c for c in columns if c not in dom.schema]
            if missing:
                raise ValueError(f"domain {dom.name!r} has no column(s) {missing}; it has "
                                 f"{list(dom.schema)}")
        return {c: first.schema[c] for c in columns}

    def _windows(self, shuffle_window: int, memory_budget: int | None) -> list[int]:
        out = []
        for dom in self._domains:
            w = shuffle_window
            if memory_budget is not None:
                w = int(memory_budget // (2 * len(self._domains) * _bytes_per_sample(dom)))
            out.append(max(1, min(int(w), dom.num_samples)))  # a window never repeats a sample
        return out

    # -- read-only settings -----------------------------------------------------------------
    @property
    def seed(self) -> int:
        return self._plan.seed

    @property
    def shuffle(self) -> bool:
        return self._plan.shuffle

    @property
    def mix_block(self) -> int:
        return self._plan.mix_block

    @property
    def on_exhausted(self) -> str:
        return self._plan.on_exhausted

    @property
    def windows(self) -> list[int]:
        return list(self._plan.windows)

    @property
    def schema(self) -> Schema:
        return self._plan.schema

    @property
    def batched(self) -> bool:
        return self._plan.batched

    # -- public state -----------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        """The latest weights (the last entry of the weight log)."""
        return dict(zip(self.domains, (float(x) for x in self._log.latest.weights)))

    @property
    def weight_log(self) -> list[tuple[int, dict[str, float]]]:
        """The retained weight log: the entry in force at the last checkpoint/compaction point
        and every later one. Earlier entries are folded into the mixture state; observers that
        want every change register with :meth:`add_weight_listener`."""
        return [(e.from_sample, dict(zip(self.domains, map(float, e.weights))))
                for e in self._log.entries]

    def add_weight_listener(self, fn: Callable[[int, dict[str, float]], None]) -> None:
        """Call ``fn(from_sample, weights)`` on every weight change (the full log)."""
        self._listeners.append(fn)

    @property
    def consumed_batches(self) -> int:
        """Batches this rank fetched from its loader (MixLoader counts them)."""
        return self._consumed

    @consumed_batches.setter
    def consumed_batches(self, value: int) -> None:
        """For plain DataLoaders: tell the stream where the trainer is (e.g. ``step + 1``)."""
        with self._lock:
            value = int(value)
            if value < self._position_floor():
                raise ValueError(f"consumed_batches cannot go back from {self._position_floor()} "
                                 f"to {value}; load a checkpoint instead")
            self._consumed = value
            self._trained = None
            self._loop_thread = threading.get_ident()
            if value > 0:
                self._fresh, self._loaded = False, None

    @property
    def trained_batches(self) -> int:
        """Batches the trainer has trained on: the checkpoint position (default: fetched)."""
        return self._consumed if self._trained is None else self._trained

    @trained_batches.setter
    def trained_batches(self, value: int) -> None:
        """For trainers that fetch ahead (Lightning): the position a checkpoint records."""
        with self._lock:
            value = int(value)
            if not self._position_floor() <= value <= self._consumed:
                raise ValueError(f"trained_batches={value} must be between the last checkpoint "
                                 f"position {self._position_floor()} and the batches fetched "
                                 f"{self._consumed}")
            self._trained = value

    def _position_floor(self) -> int:
        return 0 if self._tracker is None else self._tracker.batch

    @property
    def consumed_samples(self) -> int:
        """Global samples consumed by all ranks (assumes ranks step together)."""
        return self.trained_batches * self.world_size * (self.batch_size or 0)

    def domain_stats(self) -> dict[str, dict[str, int | None]]:
        return {d.name: d.stats() for d in self._domains}

    def attach(self, obj: Any, name: str | None = None) -> None:
        """Include ``obj.state_dict()`` (a controller, say) in this stream's checkpoints, under
        ``name`` (default: the class name, numbered if taken; see :attr:`attached`)."""
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise TypeError(f"{type(obj).__name__} has no state_dict/load_state_dict")
        if any(other is obj for other in self._attached.values()):
            return
        base = name or type(obj).__name__
        key, i = base, 1
        while key in self._attached:
            if name is not None:
                raise ValueError(f"an object is already attached as {name!r}")
            i += 1
            key = f"{base}#{i}"
        self._attached[key] = obj

    @property
    def attached(self) -> dict[str, Any]:
        return dict(self._attached)

    # -- binding to a loader ----------------------------------------------------------------
    def bind(self, batch_size: int, num_workers: int = 0, prefetch_factor: int | None = None,
             batched: bool = True, *, loader: bool = False, threads: bool = False) -> None:
        """Tell the stream how it is loaded (MixLoader calls this; so can plain-DataLoader users).

        ``threads``: the ``num_workers`` readers are threads in this process
        (:mod:`mixstream.threads`), not DataLoader workers. Must happen before workers start.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        with self._lock:
            if self._tracker is not None and (self.batch_size, self.num_workers) != (
                    batch_size, num_workers):
                if self._consumed > 0:
                    raise ValueError(f"this stream was loaded with batch_size={self.batch_size}, "
                                     f"num_workers={self.num_workers}; it cannot change to "
                                     f"{batch_size}, {num_workers} mid-run")
                self._tracker = None
            if batched:
                self._check_batchable()
            self.batch_size, self.num_workers = batch_size, num_workers
            self._threads = num_workers if threads else 0
            self.prefetch_depth = 0 if num_workers == 0 else num_workers * (prefetch_factor or 2)
            self._plan.batched = batched
            self._plan.ring = self._make_ring(batch_size, num_workers, batched and not threads)
            self._driven_by_loader = loader
            self._loop_thread = threading.get_ident()
            # room for every change a worker may not have passed, plus changes scheduled ahead
            need = self.prefetch_depth + 2
            if self._max_pending is not None and self._max_pending < need:
                raise ValueError(f"max_pending_weight_changes={self._max_pending} is below the "
                                 f"loader's prefetch depth + 2 ({need}); raise it")
            self._plan.channel.ensure_capacity(self._max_pending or self.prefetch_depth + 64)
            self._refresh_topology()
            if self._tracker is None:
                self._tracker = self._new_tracker()
            self._begin_iteration()

    def _make_ring(self, batch_size: int, num_workers: int, batched: bool) -> BatchRing | None:
        """Shared batch slots for worker processes, when every column has a fixed size."""
        if not batched or num_workers == 0:
            return None
        fields = ring_layout(self._plan.schema, batch_size, self._plan.token_dtype)
        if fields is None:
            return None
        slots = self.prefetch_depth + 2
        ring = self._plan.ring
        if ring is not None and ring.fields == fields and ring.slots >= slots:
            return ring
        if self._plan.channel.frozen:
            raise RuntimeError("the stream's shared batch slots must change, but persistent "
                               "DataLoader workers hold the old ones; create a new MixLoader")
        return BatchRing(fields, slots)

    def bind_loader(self, loader: torch.utils.data.DataLoader) -> None:
        """Bind to a plain ``DataLoader`` (per-sample mode); see :meth:`bind`.

        The loader's iterations then start where the trainer is (its class is swapped for a
        subclass whose ``__iter__`` publishes the start first, as MixLoader's does): workers read
        their start when they boot, which may be after the trainer consumed batches of the
        same iteration, so the start cannot be rewritten on every step.
        """
        if loader.batch_size is None:
            raise ValueError("bind_loader needs a DataLoader with batch_size set; for batched mode "
                             "use MixLoader or stream.bind(batch_size, num_workers)")
        self.bind(loader.batch_size, loader.num_workers, loader.prefetch_factor, batched=False)
        cls = type(loader)
        if not getattr(cls, "_mixstream_bound", False):
            def __iter__(self_: Any) -> Any:
                self_.dataset._begin_iteration()
                return cls.__iter__(self_)

            loader.__class__ = type(cls.__name__, (cls,), {"__iter__": __iter__,
                                                           "_mixstream_bound": True})

    def _check_batchable(self) -> None:
        schema = self._plan.schema
        for dom in self._domains[1:]:
            mine = {c: dom.schema.get(c) for c in schema}
            if mine != schema:
                raise ValueError(f"batched mode needs the same columns in every domain; domain "
                                 f"{dom.name!r} has {_fmt(dom.schema)} but {self.domains[0]!r} has "
                                 f"{_fmt(schema)}: select common columns with "
                                 f"MixStream(columns=[...]) or use per-sample mode")

    def _refresh_topology(self) -> None:
        """Read rank and world size now; re-bind if this process delivered nothing since the
        last bind/load (a checkpoint loaded before the process group existed is re-applied
        under the true topology), else refuse."""
        rank, world = resolve_topology(*self._fixed_topology)
        if (rank, world) == (self.rank, self.world_size):
            return
        if not self._fresh:
            raise RuntimeError(
                f"this stream was bound as rank {self.rank} of {self.world_size} but now runs as "
                f"rank {rank} of {world} after delivering batches; initialise torch.distributed "
                f"(or set RANK/WORLD_SIZE) before iterating, or pass rank=/world_size= to "
                f"MixStream")
        self.rank, self.world_size = rank, world
        self._plan.rank, self._plan.world_size = rank, world
        if self._tracker is not None:
            if self._loaded is not None:  # replay the load under the true topology
                self._resume, self._consumed = dict(self._loaded[0]), self._loaded[1]
            elif self._tracker.batch == 0:
                self._consumed = 0
            self._trained = None
            self._tracker = self._new_tracker()

    def _topology(self) -> Topology:
        assert self.batch_size is not None
        return Topology(self.batch_size, self.world_size, self.num_workers or 0)

    def _new_tracker(self) -> PositionTracker:
        topo = self._topology()
        self._plan.batch_size, self._plan.num_workers = topo.batch_size, self.num_workers or 0
        r = self._resume or {}
        self._resume = None
        mix = r.get("mix") or MixCheckpoint.initial(self._log.entries[0].weights)
        pending = [(e.from_sample, e.weights) for e in self._log.entries
                   if e.from_sample > mix.chunk_start]
        if not r:
            claims = ClaimBook(self._plan.geometry, topo.num_slots)
        else:
            old = Topology(r["batch_size"], r["world_size"], r["num_workers"])
            book = r["claims"]  # a copy: the tracker walks (mutates) it, a replay needs the original
            claims = ClaimBook(book.geometry, book.num_slots, book.arrays())
            if (old.batch_size, old.world_size, old.num_workers) != (
                    topo.batch_size, topo.world_size, topo.num_workers):
                claims = self._elastic(old, topo, claims)
        tracker = PositionTracker(seed=self.seed, block=self.mix_block, topology=topo,
                                  claims=claims, mix=mix, pending=pending, batch=self._consumed)
        self._plan.channel.allocate_start(claims.num_slots, claims.queue_depth)
        return tracker

    def _elastic(self, old: Topology, new: Topology, claims: ClaimBook) -> ClaimBook:
        """Resume a checkpoint under another topology (see ClaimBook.remap)."""
        done = self._consumed * old.world_size * old.batch_size
        step = new.world_size * new.batch_size
        if done % step:
            raise ValueError(f"the checkpoint stopped after {done} samples, which is not a whole "
                             f"number of global batches of {new.world_size} ranks x batch_size "
                             f"{new.batch_size}; keep the global batch size ({old.world_size} x "
                             f"{old.batch_size}) or use one that divides {done}")
        self._consumed = done // step
        return claims.remap(new.num_slots)

    def _begin_iteration(self) -> None:
        """Publish where the next iteration starts (before DataLoader workers (re)start)."""
        with self._lock:
            if self._tracker is None:
                return
            self._refresh_topology()
            start = self.trained_batches
            self._tracker.advance_to(start)
            self._consumed, self._trained = start, None
            walker = self._tracker.walker
            mix = walker.cursor.checkpoint()
            self._plan.channel.write_start(start, mix, walker.claims)
            self._tail_floor = mix.chunk_start + 1  # older entries are in the start checkpoint
            self._plan.channel.write_tail([(e.from_sample, e.weights) for e in self._log.entries
                                           if e.from_sample >= self._tail_floor])

    def _delivered(self, batch: Any = None) -> None:
        with self._lock:
            self._consumed += 1
            self._in_next = False
            if self._fresh:
                self._fresh, self._loaded = False, None
        for hook in self._delivery_hooks:
            hook(batch)

    def detach(self, obj: Any) -> None:
        """Stop including ``obj`` in checkpoints (a StagePlan retiring a stage's controller)."""
        for key, other in list(self._attached.items()):
            if other is obj:
                del self._attached[key]

    @contextlib.contextmanager
    def _muted(self) -> Iterator[None]:
        self._mute += 1
        try:
            yield
        finally:
            self._mute -= 1

    def _set_initial_weights(self, weights: WeightsLike) -> None:
        """Replace the initial weights (before the first iteration only)."""
        with self._lock:
            if self._started or self._consumed or len(self._log) > 1:
                raise RuntimeError("initial weights can only change before the first batch")
            self._install_log(normalize_weights(weights, self.domains))

    def _fresh_log(self, w0: np.ndarray) -> None:
        """A weight log holding only the initial weights ``w0`` (and its digest chain)."""
        self._initial_weights = w0
        self._log = WeightLog(w0)
        self._digest = hashlib.sha256(w0.tobytes())

    def _install_log(self, w0: np.ndarray) -> None:
        self._fresh_log(w0)
        if self._tracker is not None:
            self._tracker = self._new_tracker()
            self._begin_iteration()

    # -- weights ----------------------------------------------------------------------------
    def set_weights(self, weights: WeightsLike, *, from_batch: int | None = None) -> int:
        """Change the mixture; returns the global sample index from which it applies.

        By default it applies from this rank's batch ``consumed_batches + prefetch_depth``: the
        first batch the DataLoader cannot have requested yet, so the change lands at the same
        sample in every run, whatever the timing of the workers. Under torch.distributed every
        rank must make the same call at the same step (controllers all-reduce for this; a
        checkpoint compares the ranks' weight logs). With a MixLoader it may be called from any
        thread of the trainer's process; with a plain DataLoader only from the training loop.
        """
        w = normalize_weights(weights, self.domains)
        with self._lock:
            if self._mute:
                return self._log.latest.from_sample
            if self.batch_size is None or self._tracker is None:
                raise ValueError("set_weights needs the batch size: use MixLoader, or pass "
                                 "batch_size= to MixStream and call stream.bind(...) first")
            if not self._driven_by_loader and self._loop_thread not in (
                    None, threading.get_ident()):
                raise RuntimeError("set_weights was called from another thread than the training "
                                   "loop of a plain DataLoader; the stream cannot know which "
                                   "batches that DataLoader already requested. Use MixLoader "
                                   "(safe from any thread) or call it from the loop")
            horizon = self._consumed + self.prefetch_depth + (1 if self._in_next else 0)
            per_batch = self.world_size * self.batch_size
            if from_batch is None:
                from_sample = max(horizon * per_batch, self._log.latest.from_sample)
            else:
                if from_batch < horizon:
                    raise ValueError(f"from_batch={from_batch} may already be prefetched (fetched "
                                     f"{self._consumed} + prefetch depth {self.prefetch_depth}); "
                                     f"use from_batch >= {horizon}")
                from_sample = from_batch * per_batch
                if from_sample < self._log.latest.from_sample:
                    raise ValueError(f"from_batch={from_batch} is before the last weight change "
                                     f"(sample {self._log.latest.from_sample})")
            # every entry a reader may not have seen: a reader last read the tail when it
            # started its latest batch, which is at most ``readers`` behind the trainer, and
            # must still walk other readers' batches after it (a floor at the trainer's position
            # dropped entries a slow reader needed)
            readers = max(1, self.num_workers or 0)
            floor = max(self._tail_floor, max(0, self._consumed - readers) * per_batch)
            tail = [e for e in self._log.entries if e.from_sample >= floor
                    and e.from_sample != from_sample] + [LogEntry(from_sample, w)]
            self._plan.channel.write_tail([(e.from_sample, e.weights) for e in tail])
            self._tail_floor = floor  # never lower within an iteration: readers prune below it
            self._log.append(from_sample, w)
            self._digest.update(np.int64(from_sample).tobytes() + w.tobytes())
            self._tracker.add_entry(from_sample, w)
            if len(self._log) > 4 * self._plan.channel.capacity:
                self._compact()
            named = dict(zip(self.domains, map(float, w)))
        for fn in self._listeners:
            fn(from_sample, named)
        return from_sample

    def _compact(self) -> None:
        """Fold entries the tracker has passed into its mixture state (bounded memory/state)."""
        assert self._tracker is not None
        self._tracker.advance_to(self.trained_batches)
        cs = self._tracker.walker.cursor.checkpoint().chunk_start
        entries = self._log.entries
        keep = max([i for i, e in enumerate(entries) if e.from_sample <= cs] + [0])
        self._log.entries = entries[keep:]

    # -- the domain set ---------------------------------------------------------------------
    def add_domains(self, domains: Mapping[str, Any], weights: WeightsLike | None = None) -> int:
        """Add domains during a run, from the next batch the loader fetches; returns that batch.

        The stream continues as if its checkpoint at that batch were loaded into a stream with
        the larger domain set (see :meth:`load_state_dict`): old domains keep their epochs and
        positions, new ones start fresh, ``weights`` (every domain, by name; default uniform)
        apply from there. The MixLoader restarts its workers at that batch (batches it had
        prefetched are produced again under the new plan). Needs a MixLoader.
        """
        for name in domains:
            if name in self.domains:
                raise ValueError(f"domain {name!r} is already in this stream")
        new = [Domain(name, spec, remote=self._remote, verify=self._verify)
               for name, spec in domains.items()]
        return self._change_domains(self._domains + new, weights)

    def remove_domains(self, names: list[str], weights: WeightsLike | None = None) -> int:
        """Retire domains during a run (see :meth:`add_domains`); ``weights`` for those left."""
        missing = [n for n in names if n not in self.domains]
        if missing:
            raise ValueError(f"unknown domain(s) {missing}; this stream has {self.domains}")
        keep = [d for d in self._domains if d.name not in names]
        if not keep:
            raise ValueError("cannot remove every domain")
        return self._change_domains(keep, weights)

    def _change_domains(self, doms: list[Domain], weights: WeightsLike | None) -> int:
        with self._lock:
            if not self._driven_by_loader or self._tracker is None:
                raise RuntimeError("changing the domain set during a run needs a MixLoader (it "
                                   "restarts its workers with the new domains); with a plain "
                                   "DataLoader, load the checkpoint into a new MixStream")
            if weights is not None:
                normalize_weights(weights, [d.name for d in doms])  # validate before changing
            for key, obj in self._attached.items():
                if not hasattr(obj, "remap_state"):
                    raise ValueError(f"the attached {key!r} ({type(obj).__name__}) cannot carry "
                                     f"its state into another domain set (no remap_state)")
            at = self._consumed
            self._trained = None
            state = self.state_dict(check_ranks=False)
            self._plan.channel.frozen = False  # the loader makes new workers with new buffers
            self._install_domains(doms, weights)
            self._tracker = None
            self._load(state)
            self._tracker = self._new_tracker()
            self._restart = True
        return at

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self, *, check_ranks: bool = True) -> dict[str, Any]:
        """Small, exact, plain Python: seed, corpus fingerprint, retained weight log, position,
        claim book and attached states (by name).

        Under torch.distributed, ``check_ranks`` compares the ranks' weight logs (a collective:
        call it on every rank, as HF Trainer, Lightning and torch.distributed.checkpoint do) so
        that a weight change made on one rank only is an error instead of duplicated data.
        """
        with self._lock:
            if self._tracker is None:
                raise RuntimeError("state_dict() needs the loader topology: use MixLoader, or call "
                                   "stream.bind(batch_size, num_workers) / stream.bind_loader(loader)")
            self._refresh_topology()
            self._tracker.advance_to(self.trained_batches)
            walker = self._tracker.walker
            mix = walker.cursor.checkpoint()
            log = [e for e in self._log.entries if e.from_sample > mix.chunk_start]
            log.insert(0, LogEntry(mix.entry_from, mix.entry_weights))
            state = {
                "version": STATE_VERSION,
                "seed": self.seed,
                "domains": [[d.name, d.num_samples, _fingerprint(d), len(d.block_sizes),
                             blocks_digest(d.block_sizes), *_units(d)] for d in self._domains],
                "segments": [[list(sg) for sg in segs] for segs in
                             (self._plan.segments or self._plan.default_segments())],
                "batch_size": self.batch_size,
                "num_workers": self.num_workers,
                "world_size": self.world_size,
                "rank": self.rank,
                "mix_block": self.mix_block,
                "shuffle": self.shuffle,
                "on_exhausted": self.on_exhausted,
                "consumed_batches": self._tracker.batch,
                "weight_log": [e.to_json() for e in log],
                "weight_digest": self._digest.hexdigest(),
                "mix": mix.to_json(),
                "claims": {k: v.tolist() for k, v in walker.claims.arrays().items()},
                "attached": {k: obj.state_dict() for k, obj in self._attached.items()},
            }
        if check_ranks and self.world_size > 1:
            _check_ranks_agree(str(state["weight_digest"]), self._tracker.batch)
        return to_plain(state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where ``state`` was taken (elastic if the topology differs).

        The checkpoint must describe this corpus (names, sizes, fingerprints) and be internally
        consistent: its claim counters must equal the samples its mixture assigns up to its
        position — a rewound or edited counter is an error, not duplicated data.
        """
        with self._lock:
            self._load(state)
        if self._tracker is not None:
            self._begin_iteration()

    def _load(self, state: Mapping[str, Any]) -> None:
        version = state.get("version") if isinstance(state, Mapping) else None
        if version != STATE_VERSION:
            raise ValueError(f"unsupported MixStream state version {version!r} (this mixstream "
                             f"writes version {STATE_VERSION})")
        theirs = parse_domains(require(state, "domains", list))
        for key, value in {"seed": self.seed, "mix_block": self.mix_block,
                           "shuffle": self.shuffle, "on_exhausted": self.on_exhausted}.items():
            if state.get(key) != value:
                raise ValueError(f"checkpoint has {key}={state.get(key)!r} but this stream has "
                                 f"{value!r}; create the stream with the same settings")
        d = len(theirs)
        names = [x["name"] for x in theirs]
        segments = parse_segments(require(state, "segments", list), d)
        bsz = require(state, "batch_size", int)
        nw = require(state, "num_workers", int)
        world = require(state, "world_size", int)
        consumed = require(state, "consumed_batches", int)
        if bsz < 1 or nw < 0 or world < 1 or consumed < 0:
            raise ValueError(f"MixStream checkpoint has batch_size={bsz}, num_workers={nw}, "
                             f"world_size={world}, consumed_batches={consumed}")
        log = _load_log(require(state, "weight_log", list), d)
        mix = _load_mix(require(state, "mix", dict), d)
        old = Topology(bsz, world, nw)
        raw = require(state, "claims", dict)
        q = max(1, int(np.asarray(raw.get("queue", [])).size) // max(1, old.num_slots * d * 3))
        shapes = layout_shapes(d, old.num_slots, q)
        arrays = {k: int_array(raw.get(k), shape, f"claims.{k}") for k, shape in shapes.items()}
        attached = require(state, "attached", dict)
        missing = [k for k in attached if k not in self._attached]
        if missing and "stages" not in attached:  # a StagePlan attaches its stage's controller
            raise ValueError(f"checkpoint has attached states {sorted(attached)}, this stream has "
                             f"{sorted(self._attached)}; attach the same controllers (same names) "
                             f"before loading")
        if self._plan.channel.frozen and self._tracker is not None and old.num_slots != \
                self._topology().num_slots:
            raise RuntimeError("cannot load a checkpoint of another topology into a stream whose "
                               "persistent DataLoader workers are running; create a new MixLoader")
        # -- this corpus against the checkpoint's, by name ------------------------------------
        mine = {dom.name: i for i, dom in enumerate(self._domains)}
        old_geo: list[Any] = []
        new_segments = self._plan.default_segments()
        for i, x in enumerate(theirs):
            j = mine.get(x["name"])
            if j is None:
                old_geo.append(None)  # retired
                continue
            dom = self._domains[j]
            grown = self._check_domain(dom, x)
            old_geo.append(build_geometry(dom.block_sizes, segments[i], seed=self.seed,
                                          domain=domain_key(dom.name), shuffle=self.shuffle))
            segs = list(segments[i])
            if grown:  # the new shards join at the domain's next epoch not yet started
                claimed = int(arrays["claimed"][i])
                start = 0 if claimed == 0 else old_geo[-1].epoch_of(claimed - 1) + 1
                segs = [sg for sg in segs if sg[0] < start] + [
                    (start, len(dom.block_sizes), self._plan.windows[j])]
            elif segs[-1][2] != self._plan.windows[j]:
                raise ValueError(f"checkpoint has window {segs[-1][2]} for domain {dom.name!r} but "
                                 f"this stream has {self._plan.windows[j]}; create the stream with "
                                 f"the same shuffle_window / memory_budget")
            new_segments[j] = segs
        pos = consumed * old.world_size * old.batch_size
        cursor = MixCursor(self.seed, self.mix_block, mix,
                           [(e.from_sample, e.weights) for e in log.entries
                            if e.from_sample > mix.chunk_start])
        if mix.chunk_start > pos:
            raise ValueError(f"MixStream checkpoint is inconsistent: mixture at sample "
                             f"{mix.chunk_start} but position {pos}")
        realised = cursor.counts_at(pos)
        for i, geo in enumerate(old_geo):
            if geo is None:
                continue
            book = ClaimBook([geo], old.num_slots, {k: v[i : i + 1] if v.ndim == 1 else
                                                    v[:, i : i + 1] for k, v in arrays.items()})
            served = int(book.served()[0])
            if served != int(realised[i]):
                raise ValueError(
                    f"MixStream checkpoint is inconsistent: at batch {consumed} the mixture assigns "
                    f"{int(realised[i])} samples of domain {names[i]!r} but the claim book served "
                    f"{served}; the checkpoint was edited or its counters rewound (loading it "
                    f"would repeat or skip data)")
        self._plan.segments = new_segments
        self._plan._geometry = None
        if names != self.domains:
            log, mix, arrays = self._carry(names, cursor, pos, arrays, old.num_slots)
            attached = {k: self._remap_attached(k, v, names) for k, v in attached.items()}
        claims = ClaimBook(self._plan.geometry, old.num_slots, arrays)
        self._log = log
        self._consumed, self._trained = consumed, None
        self._digest = hashlib.sha256(str(state.get("weight_digest", "")).encode())
        self._resume = {"batch_size": bsz, "num_workers": nw, "world_size": world, "mix": mix,
                        "claims": claims}
        self._loaded, self._fresh = (dict(self._resume), consumed), True
        if self._tracker is not None:  # already bound: rebuild (elastic if the topology differs)
            self._tracker = self._new_tracker()
        self._load_attached(attached)

    def _load_attached(self, attached: Mapping[str, Any]) -> None:
        """Load attached states by name; an object may attach others while it loads (a
        StagePlan creates its stage's controller), so load until nothing new appears."""
        done: set[str] = set()
        while True:
            todo = [k for k in attached if k in self._attached and k not in done]
            if not todo:
                break
            for key in todo:
                self._attached[key].load_state_dict(attached[key])
                done.add(key)
        left = sorted(set(attached) - done)
        extra = sorted(set(self._attached) - set(attached))
        if left or extra:
            raise ValueError(f"checkpoint has attached states {sorted(attached)}, this stream has "
                             f"{sorted(self._attached)}; attach the same controllers (same names) "
                             f"before loading")

    def _check_domain(self, dom: Domain, theirs: dict[str, Any]) -> bool:
        """Is ``dom`` the checkpoint's domain (False) or the same one grown (True)? Else raise."""
        blocks, digest = theirs["blocks"], theirs["digest"]
        if theirs["samples"] == dom.num_samples:
            fp, now = theirs["fingerprint"], _fingerprint(dom)
            if fp is not None and now is not None and fp != now:
                raise ValueError(f"domain {dom.name!r}: the checkpoint was taken on other data "
                                 f"(corpus fingerprint {fp} != {now}); its shards changed")
            if digest is not None and digest != blocks_digest(dom.block_sizes):
                raise ValueError(f"domain {dom.name!r}: its blocks differ from the checkpoint's")
            return False
        grown = (isinstance(blocks, int) and digest is not None
                 and theirs["samples"] < dom.num_samples and blocks < len(dom.block_sizes)
                 and blocks_digest(dom.block_sizes[:blocks]) == digest)
        n_units, units = theirs.get("units"), theirs.get("units_digest")
        if grown and isinstance(n_units, int) and units is not None:  # the old files unchanged
            mine = content_units(dom.sources)
            grown = n_units <= len(mine) and units_digest(mine[:n_units]) == units
        if not grown:
            raise ValueError(
                f"domain {dom.name!r} has {dom.num_samples} samples but the checkpoint's had "
                f"{theirs['samples']}; a domain may only grow by shards appended after its old "
                f"ones (then the new shards join at its next epoch)")
        return True

    def _carry(self, names: list[str], cursor: MixCursor, pos: int,
               arrays: dict[str, np.ndarray], slots: int) -> tuple[WeightLog, MixCheckpoint,
                                                                    dict[str, np.ndarray]]:
        """Carry the checkpoint's state into this stream's domain set at sample ``pos``: kept
        domains keep their counts, targets and claims; new ones start fresh; retired ones are
        dropped; this stream's initial weights apply from ``pos``."""
        index = [names.index(n) if n in names else -1 for n in self.domains]
        counts_old, targets_old = cursor.counts_at(pos), cursor.targets_at(pos)

        def pick(values: np.ndarray, fill: float) -> np.ndarray:
            return np.array([values[i] if i >= 0 else fill for i in index])

        counts = pick(counts_old, 0).astype(np.int64)
        targets = pick(targets_old, 0.0).astype(np.float64)
        w = self._initial_weights
        mix = MixCheckpoint(pos, counts, pos, w.copy(), rebase(targets, counts, w), targets)
        d = len(self.domains)
        out = ClaimBook(self._plan.geometry, slots,
                        queue_depth=int(arrays["queue"].shape[2])).arrays()
        for j, i in enumerate(index):
            if i >= 0:
                for key in ("claimed", "held", "offset", "end"):
                    out[key][..., j] = arrays[key][..., i]
                out["queue"][:, j] = arrays["queue"][:, i]
        assert out["claimed"].shape == (d,)
        log = WeightLog(w)
        log.entries = [LogEntry(pos, w.copy())]
        return log, mix, out

    def _remap_attached(self, key: str, sub: Any, names: list[str]) -> Any:
        obj = self._attached[key]
        remap = getattr(obj, "remap_state", None)
        if remap is None:
            raise ValueError(
                f"the domain set changed ({names} -> {self.domains}) but the attached {key!r} "
                f"({type(obj).__name__}) cannot carry its state over (no remap_state); attach it "
                f"after load_state_dict to start it fresh")
        return remap(sub, names, list(self.domains))

    def progress(self) -> dict[str, dict[str, Any]]:
        """Per domain: global samples consumed and epochs of the domain completed so far."""
        with self._lock:
            if self._tracker is None:
                return {}
            self._tracker.advance_to(self.trained_batches)
            realised = self._tracker.realised_counts()
            out = {}
            for i, dom in enumerate(self._domains):
                n = int(realised[i])
                out[dom.name] = {"samples": n, "epochs": n / dom.num_samples,
                                 "epoch": n // dom.num_samples}
            return out

    # -- iteration (runs in each DataLoader worker, or in the main process) ------------------
    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        if self._driven_by_loader and not self._loader_iterating:
            raise RuntimeError(
                "this MixStream is driven by a MixLoader but is being iterated by another "
                "DataLoader (e.g. accelerate's skip_first_batches or a Trainer building its own "
                "loader): that loader would re-batch or skip data behind the stream's back. "
                "Iterate the MixLoader itself; to resume, load_state_dict() instead of skipping "
                "batches (mixstream.integrations do this for HF Trainer and Lightning)")
        plan = self._plan
        if info is None:
            if getattr(self, "_in_worker_copy", False):
                raise RuntimeError("a pickled MixStream copy cannot be iterated outside a worker")
            if self._tracker is None:  # no loader: yield samples, as every dataset does
                self.bind(self.batch_size or UNBOUND_BATCH, 0, batched=False)
            elif not self._loader_iterating:  # (MixLoader published the start just before)
                self._begin_iteration()
            if self._threads:
                from .threads import ThreadedReaders

                if self._readers is not None:  # the previous iteration's threads stop
                    self._readers.close()
                it = self._readers = ThreadedReaders(self, self._threads, self._consumed)
                return it if plan.batched else _samples(it, self.batch_size or 1)
            worker, num = 0, 1
        else:
            worker, num = info.id, info.num_workers
            if self.num_workers != num:
                raise RuntimeError(f"MixStream is bound to num_workers={self.num_workers} but runs in "
                                   f"a DataLoader with {num} workers; use MixLoader, or call "
                                   f"stream.bind_loader(loader) before iterating")
        if num != max(1, self.num_workers or 0):
            raise RuntimeError(f"MixStream bound to num_workers={self.num_workers} iterated in the "
                               f"main process; use a DataLoader with num_workers={self.num_workers}")
        return produce(plan, worker, num, ring=plan.ring if info is not None else None)

    def __repr__(self) -> str:
        w = ", ".join(f"{k}: {v:.3g}" for k, v in self.weights.items())
        return f"MixStream({len(self.domains)} domains, weights {{{w}}}, seed={self.seed})"


def _samples(batches: Iterator[dict], size: int) -> Iterator[dict]:
    from .batching import split_samples

    for batch in batches:
        yield from split_samples(batch, size)


def _units(dom: Domain) -> list[Any]:
    units = content_units(dom.sources)
    return [len(units), units_digest(units)]


def _fingerprint(dom: Domain) -> str | None:
    fn = getattr(dom, "fingerprint", None)
    return None if fn is None else str(fn())


def _load_log(items: list, d: int) -> WeightLog:
    if not items:
        raise ValueError("MixStream checkpoint 'weight_log' is empty")
    entries = []
    last = -1
    for i, item in enumerate(items):
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError(f"MixStream checkpoint weight_log[{i}] is not [from_sample, weights]")
        f = item[0]
        if isinstance(f, bool) or not isinstance(f, int) or f < last:
            raise ValueError(f"MixStream checkpoint weight_log[{i}] starts at {f!r}; entries must "
                             f"be non-decreasing integers")
        w = float_list(item[1], d, f"weight_log[{i}]")
        if (w < 0).any() or not w.sum() > 0:
            raise ValueError(f"MixStream checkpoint weight_log[{i}] has invalid weights")
        entries.append(LogEntry(int(f), w))
        last = f
    log = WeightLog(entries[0].weights)
    log.entries = entries
    return log


def _load_mix(raw: dict, d: int) -> MixCheckpoint:
    try:
        mix = MixCheckpoint.from_json(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"MixStream checkpoint 'mix' is malformed: {e}") from None
    for key in ("counts", "entry_weights", "entry_targets", "entry_base"):
        value = getattr(mix, key)
        if value.shape != (d,) or not np.isfinite(value).all():
            raise ValueError(f"MixStream checkpoint mix.{key} must be {d} finite numbers")
    # (retired domains' samples leave the counts: their sum may be below the chunk start)
    if mix.chunk_start < 0 or (mix.counts < 0).any() or int(mix.counts.sum()) > mix.chunk_start:
        raise ValueError("MixStream checkpoint 'mix' is inconsistent: its counts add up to more "
                         "than its chunk start")
    return mix


def _check_ranks_agree(digest: str, batch: int) -> None:
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()):
        return
    mine = (digest, batch)
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    if any(x != everyone[0] for x in everyone):
        raise RuntimeError(
            f"ranks disagree on the stream's weight log or position ({everyone}); every rank must "
            f"make the same set_weights calls at the same steps (controllers all-reduce their "
            f"feedback for this) — a change on one rank only makes ranks repeat samples")


def _bytes_per_sample(dom: Domain) -> float:
    stats = dom.stats()
    if stats.get("bytes"):
        return max(1.0, stats["bytes"] / dom.num_samples)  # type: ignore[operator]
    total = 0.0
    for spec in dom.schema.values():
        item = np.dtype(spec.dtype).itemsize if spec.kind != "object" else 64
        total += item * (spec.width or (1 if spec.kind == "scalar" else 256))
    return max(1.0, total)


def _fmt(schema: Schema) -> str:
    return json.dumps({k: v.describe() for k, v in schema.items()})
