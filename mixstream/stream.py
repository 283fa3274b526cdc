"""MixStream: the mixture-aware streaming ``IterableDataset``.

Data flow (see docs/ARCHITECTURE.md): sources -> plan (weight log, mixture sequence, per-domain
order) -> per-domain reservoirs in each DataLoader worker -> batches tagged with domain ids.
The trainer's process owns the weight log and a :class:`~mixstream.tracker.PositionTracker`;
workers read weight changes and their start position from a
:class:`~mixstream.channel.WeightChannel` in shared memory.

Global layout: rank ``r``'s ``t``-th batch holds global samples
``[(t * world + r) * B, (t * world + r + 1) * B)``, and a DataLoader with ``N`` workers asks
worker ``j`` for the batches ``t`` with ``t - start ≡ j (mod N)``; reader slot ``t mod N`` of
rank ``r`` serves them, so the data each slot reads does not depend on where an iteration started.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .batching import Pieces, assemble, split_samples
from .channel import WeightChannel
from .plan.claims import ClaimBook
from .plan.mixture import MixCheckpoint
from .plan.order import WindowGeometry
from .plan.weights import WeightLog, WeightsLike, normalize_weights
from .remote.config import RemoteConfig
from .reservoir import DomainExhausted, DomainReader
from .sources.base import Schema
from .sources.resolve import Domain
from .tracker import PositionTracker
from .walker import Topology, Walker

STATE_VERSION = 1
ON_EXHAUSTED = ("restart", "stop")


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
        on_exhausted: ``"restart"`` (next epoch, reshuffled) or ``"stop"`` (end the stream when
            a reader runs out of a domain's first epoch).
        columns: keep only these columns (all domains must have them).
        rank, world_size: defaults from ``torch.distributed`` when initialised, else 0 and 1.
        prefetch: decode the next window of each active domain in a background thread.
        max_pending_weight_changes: capacity of the shared weight-change ring.
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
        self.domains: list[str] = list(domains)
        remote = remote or RemoteConfig(cache_dir=cache_dir, cache_limit_bytes=cache_limit_bytes,
                                        concurrency=remote_concurrency)
        self._domains = [Domain(name, spec, remote=remote) for name, spec in domains.items()]
        self.schema = self._select_columns(columns)
        self._union_schema = dict(self.schema)
        if columns is None:
            for dom in self._domains[1:]:
                for key, spec in dom.schema.items():
                    self._union_schema.setdefault(key, spec)
        d = len(self.domains)
        w0 = (np.full(d, 1.0 / d) if weights is None else normalize_weights(weights, self.domains))
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.mix_block = int(mix_block)
        self.on_exhausted = on_exhausted
        self.prefetch = bool(prefetch)
        self.windows = self._windows(shuffle_window, memory_budget)
        self.rank, self.world_size = _topology(rank, world_size)
        capacity = max_pending_weight_changes or int(min(4096, max(64, 1_000_000 // (d + 1))))
        self._channel = WeightChannel(d, capacity)
        self._log = WeightLog(w0)
        self.batch_size: int | None = batch_size
        self.num_workers: int | None = None
        self.prefetch_depth = 0
        self.batched = True
        self._consumed = 0
        self._tracker: PositionTracker | None = None
        self._attached: list[Any] = []
        self._resume: dict[str, Any] | None = None  # a loaded checkpoint awaiting bind()
        self._geometry: list[WindowGeometry] | None = None

    # -- construction helpers ---------------------------------------------------------------
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

    # -- public state -----------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        """The latest weights (the last entry of the weight log)."""
        return dict(zip(self.domains, (float(x) for x in self._log.latest.weights)))

    @property
    def weight_log(self) -> list[tuple[int, dict[str, float]]]:
        return [(e.from_sample, dict(zip(self.domains, map(float, e.weights))))
                for e in self._log.entries]

    @property
    def consumed_batches(self) -> int:
        """Batches this rank's trainer has consumed (MixLoader counts them)."""
        return self._consumed

    @consumed_batches.setter
    def consumed_batches(self, value: int) -> None:
        """For plain DataLoaders: tell the stream where the trainer is (e.g. ``step + 1``)."""
        if self._tracker is not None and value < self._tracker.batch:
            raise ValueError(f"consumed_batches cannot go back from {self._tracker.batch} to "
                             f"{value}; load a checkpoint instead")
        self._consumed = int(value)
        self._begin_iteration()

    @property
    def consumed_samples(self) -> int:
        """Global samples consumed by all ranks (assumes ranks step together)."""
        return self._consumed * self.world_size * (self.batch_size or 0)

    def domain_stats(self) -> dict[str, dict[str, int | None]]:
        return {d.name: d.stats() for d in self._domains}

    def attach(self, obj: Any) -> None:
        """Include ``obj.state_dict()`` (a controller, say) in this stream's checkpoints."""
        if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
            raise TypeError(f"{type(obj).__name__} has no state_dict/load_state_dict")
        if obj not in self._attached:
            self._attached.append(obj)

    # -- binding to a loader ----------------------------------------------------------------
    def bind(self, batch_size: int, num_workers: int = 0, prefetch_factor: int | None = None,
             batched: bool = True) -> None:
        """Tell the stream how it is loaded (MixLoader calls this; so can plain-DataLoader users).

        Must happen before DataLoader workers start; the topology cannot change mid-run.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if self._tracker is not None and (self.batch_size, self.num_workers) != (batch_size, num_workers):
            if self._consumed > 0:
                raise ValueError(f"this stream was loaded with batch_size={self.batch_size}, "
                                 f"num_workers={self.num_workers}; it cannot change to "
                                 f"{batch_size}, {num_workers} mid-run")
            self._tracker = None
        if batched:
            self._check_batchable()
        self.batch_size, self.num_workers = batch_size, num_workers
        self.prefetch_depth = 0 if num_workers == 0 else num_workers * (prefetch_factor or 2)
        self.batched = batched
        if self._tracker is None:
            self._tracker = self._new_tracker()
            claims = self._tracker.walker.claims
            self._channel.allocate_start(claims.held.shape[0], claims.queue.shape[2])
        self._begin_iteration()

    def bind_loader(self, loader: torch.utils.data.DataLoader) -> None:
        """Bind to a plain ``DataLoader`` (per-sample mode); see :meth:`bind`."""
        if loader.batch_size is None:
            raise ValueError("bind_loader needs a DataLoader with batch_size set; for batched mode "
                             "use MixLoader or stream.bind(batch_size, num_workers)")
        self.bind(loader.batch_size, loader.num_workers, loader.prefetch_factor, batched=False)

    def _check_batchable(self) -> None:
        for dom in self._domains[1:]:
            mine = {c: dom.schema.get(c) for c in self.schema}
            if mine != self.schema:
                raise ValueError(f"batched mode needs the same columns in every domain; domain "
                                 f"{dom.name!r} has {_fmt(dom.schema)} but {self.domains[0]!r} has "
                                 f"{_fmt(self.schema)}: select common columns with "
                                 f"MixStream(columns=[...]) or use per-sample mode")

    def _topology(self) -> Topology:
        assert self.batch_size is not None
        return Topology(self.batch_size, self.world_size, self.num_workers or 0)

    def _new_tracker(self) -> PositionTracker:
        topo = self._topology()
        r = self._resume or {}
        self._resume = None
        mix = r.get("mix") or MixCheckpoint.initial(self._log.entries[0].weights)
        pending = [(e.from_sample, e.weights) for e in self._log.entries
                   if e.from_sample > mix.chunk_start]
        if not r:
            claims = self._claim_book(topo.num_slots)
        else:
            old = Topology(r["batch_size"], r["world_size"], r["num_workers"])
            claims = self._claim_book(old.num_slots, *r["claims"])
            if (old.batch_size, old.world_size, old.num_workers) != (
                    topo.batch_size, topo.world_size, topo.num_workers):
                claims = self._elastic(old, topo, claims)
        return PositionTracker(seed=self.seed, block=self.mix_block, topology=topo, claims=claims,
                               mix=mix, pending=pending, batch=self._consumed)

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

    def _claim_book(self, num_slots: int, claimed: Any = None, held: Any = None,
                    offset: Any = None, queue: Any = None, reserved: Any = None) -> ClaimBook:
        if self._geometry is None:
            self._geometry = [
                WindowGeometry(d.block_sizes, w, seed=self.seed, domain=i, shuffle=self.shuffle)
                for i, (d, w) in enumerate(zip(self._domains, self.windows))]
        return ClaimBook(self._geometry, num_slots, claimed, held, offset, queue, reserved)

    def _begin_iteration(self) -> None:
        """Publish where the next iteration starts (before DataLoader workers (re)start)."""
        if self._tracker is None:
            return
        self._tracker.advance_to(self._consumed)
        walker = self._tracker.walker
        mix = walker.cursor.checkpoint()
        read_from = self._channel.published
        for e in self._log.entries:
            if e.from_sample > mix.chunk_start:
                self._channel.publish(e.from_sample, e.weights)
        self._channel.write_start(self._consumed, mix, walker.claims, read_from)

    def _delivered(self) -> None:
        self._consumed += 1

    # -- weights ----------------------------------------------------------------------------
    def set_weights(self, weights: WeightsLike, *, from_batch: int | None = None) -> int:
        """Change the mixture; returns the global sample index from which it applies.

        By default it applies from this rank's batch ``consumed_batches + prefetch_depth``: the
        first batch the DataLoader cannot have requested yet, so the change lands at the same
        sample in every run, whatever the timing of the workers. Under torch.distributed every
        rank must make the same call at the same step (controllers all-reduce for this).
        """
        w = normalize_weights(weights, self.domains)
        if self.batch_size is None:
            raise ValueError("set_weights needs the batch size: use MixLoader, or pass "
                             "batch_size= to MixStream / call stream.bind(...) first")
        horizon = self._consumed + self.prefetch_depth
        if from_batch is None:
            from_batch = horizon
        elif from_batch < horizon:
            raise ValueError(f"from_batch={from_batch} may already be prefetched (consumed "
                             f"{self._consumed} + prefetch depth {self.prefetch_depth}); use "
                             f"from_batch >= {horizon}")
        from_sample = from_batch * self.world_size * self.batch_size
        if from_sample < self._log.latest.from_sample:
            raise ValueError(f"from_batch={from_batch} is before the last weight change "
                             f"(sample {self._log.latest.from_sample})")
        self._log.append(from_sample, w)
        self._channel.publish(from_sample, w)
        if self._tracker is not None:
            self._tracker.add_entry(from_sample, w)
        return from_sample

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Small and exact: seed, weight log, position, per-reader counts, attached states."""
        if self._tracker is None:
            raise RuntimeError("state_dict() needs the loader topology: use MixLoader, or call "
                               "stream.bind(batch_size, num_workers) / stream.bind_loader(loader)")
        self._tracker.advance_to(self._consumed)
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "domains": [[d.name, d.num_samples] for d in self._domains],
            "batch_size": self.batch_size,
            "num_workers": self.num_workers,
            "world_size": self.world_size,
            "rank": self.rank,
            "mix_block": self.mix_block,
            "windows": list(self.windows),
            "shuffle": self.shuffle,
            "consumed_batches": self._consumed,
            "weight_log": self._log.to_json(),
            "mix": self._tracker.walker.cursor.checkpoint().to_json(),
            "claimed": self._tracker.walker.claims.claimed.tolist(),
            "held": self._tracker.walker.claims.held.tolist(),
            "offset": self._tracker.walker.claims.offset.tolist(),
            "queue": self._tracker.walker.claims.queue.tolist(),
            "reserved": self._tracker.walker.claims.reserved.tolist(),
            "attached": [obj.state_dict() for obj in self._attached],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported MixStream state version {state.get('version')!r}")
        mine = [[d.name, d.num_samples] for d in self._domains]
        if [list(x) for x in state["domains"]] != mine:
            raise ValueError(f"checkpoint domains {state['domains']} do not match this stream's "
                             f"{mine} (names and sample counts must be equal)")
        expect = {"seed": self.seed, "mix_block": self.mix_block, "windows": list(self.windows),
                  "shuffle": self.shuffle}
        for key, value in expect.items():
            if state[key] != value:
                raise ValueError(f"checkpoint has {key}={state[key]!r} but this stream has "
                                 f"{value!r}; create the stream with the same settings")
        self._log = WeightLog.from_json(state["weight_log"])
        self._consumed = int(state["consumed_batches"])
        self._resume = {
            "batch_size": int(state["batch_size"]),
            "num_workers": int(state["num_workers"]),
            "world_size": int(state["world_size"]),
            "mix": MixCheckpoint.from_json(state["mix"]),
            "claims": [np.asarray(state[k], dtype=np.int64)
                       for k in ("claimed", "held", "offset", "queue", "reserved")],
        }
        if self._tracker is not None:  # already bound: rebuild (elastic if the topology differs)
            self._tracker = self._new_tracker()
            claims = self._tracker.walker.claims
            self._channel.allocate_start(claims.held.shape[0], claims.queue.shape[2])
        attached = state.get("attached", [])
        if len(attached) != len(self._attached):
            raise ValueError(f"checkpoint has {len(attached)} attached states, this stream has "
                             f"{len(self._attached)} attached objects; attach the same controllers "
                             f"before loading")
        for obj, sub in zip(self._attached, attached):
            obj.load_state_dict(sub)
        if self._tracker is not None:
            self._begin_iteration()

    def progress(self) -> dict[str, dict[str, Any]]:
        """Per domain: global samples consumed and epochs of the domain handed out so far."""
        if self._tracker is None:
            return {}
        self._tracker.advance_to(self._consumed)
        realised = self._tracker.realised_counts()
        claims = self._tracker.walker.claims
        out = {}
        for i, dom in enumerate(self._domains):
            claimed = int(claims.claimed[i])
            out[dom.name] = {"samples": int(realised[i]),
                             "epochs": int(realised[i]) / dom.num_samples,
                             "epoch": claims.geometry[i].epoch_of(max(0, claimed - 1)),
                             "windows_claimed": claimed}
        return out

    # -- iteration (runs in each DataLoader worker, or in the main process) ------------------
    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        if info is None:
            if self._tracker is None:
                if self.batch_size is None:
                    raise ValueError("MixStream needs a batch size: use MixLoader, pass "
                                     "batch_size=, or call stream.bind_loader(loader)")
                self.bind(self.batch_size, 0, batched=self.batched)
            else:
                self._begin_iteration()
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
        return self._generate(worker, num)

    def _generate(self, worker: int, num: int) -> Iterator[dict]:
        assert self.batch_size is not None
        topo = self._topology()
        bsz = self.batch_size
        start, mix, book, next_entry = self._channel.read_start()
        claims = self._claim_book(topo.num_slots, *book)
        walker = Walker(seed=self.seed, block=self.mix_block, topology=topo, claims=claims,
                        mix=mix, pending=[], next_batch=start * topo.world_size)
        executor = ThreadPoolExecutor(1, thread_name_prefix="mixstream") if self.prefetch else None
        readers: dict[int, DomainReader] = {}
        t = start + worker
        weights = None
        schema = self.schema if self.batched else self._union_schema
        uniform = self.batched  # batched mode checked that every domain has these columns
        try:
            while True:
                entries, next_entry = self._channel.read(next_entry)
                for f, w in entries:
                    walker.cursor.add_entry(f, w)
                g = topo.global_batch(self.rank, t)
                dom, served = walker.own(g)
                try:
                    pieces = self._pieces(dom, served, readers, executor, claims,
                                          int(topo.slot_of(g)))
                except DomainExhausted:
                    return
                a = g * bsz
                batch = assemble(schema, bsz, pieces, dom, np.arange(a, a + bsz), uniform)
                if walker.cursor.weights is not weights:  # a change: drop switched-off domains
                    weights = walker.cursor.weights
                    for i, reader in readers.items():
                        if weights[i] == 0:
                            reader.release()
                if self.batched:
                    yield batch
                else:
                    yield from split_samples(batch, bsz)
                t += num
        finally:
            try:
                for reader in readers.values():
                    reader.release()
                if executor is not None:
                    executor.shutdown(wait=False, cancel_futures=True)
            except Exception:  # noqa: BLE001 - at interpreter exit, module globals are gone
                pass

    def _pieces(self, dom: np.ndarray, claims: list, readers: dict[int, DomainReader],
                executor: ThreadPoolExecutor | None, book: ClaimBook, slot: int) -> Pieces:
        order = np.argsort(dom, kind="stable")
        pieces: Pieces = []
        start = 0
        for i, parts in claims:
            n = sum(k for _, _, k in parts)
            reader = readers.get(i)
            if reader is None:
                reader = DomainReader(self._domains[i], i, seed=self.seed,
                                      geometry=book.geometry[i],
                                      shuffle=self.shuffle,
                                      epochs=1 if self.on_exhausted == "stop" else None,
                                      executor=executor)
                readers[i] = reader
            before = reader.window_index
            pieces.append((order[start : start + n], reader.take(parts)))
            if reader.window_index != before:  # started a window: decode the reserved next one
                reader.prefetch(book.upcoming(slot, i))
            start += n
        return pieces

    def __repr__(self) -> str:
        w = ", ".join(f"{k}: {v:.3g}" for k, v in self.weights.items())
        return f"MixStream({len(self.domains)} domains, weights {{{w}}}, seed={self.seed})"


def _topology(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized():
            rank = dist.get_rank() if rank is None else rank
            world_size = dist.get_world_size() if world_size is None else world_size
        rank = 0 if rank is None else rank
        world_size = 1 if world_size is None else world_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid rank {rank} for world_size {world_size}")
    return int(rank), int(world_size)


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

