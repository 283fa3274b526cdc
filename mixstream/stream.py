"""MixStream: the mixture-aware streaming ``IterableDataset`` — a facade.

Data flow (see docs/ARCHITECTURE.md): sources -> plan (weight log, mixture sequence, per-domain
order, claim book) -> per-domain reservoirs in each reader -> batches tagged with domain ids.
The stream is a thin facade over parts that each own their state: the :class:`~.corpus.Corpus`
(domains, columns, windows), the :class:`~.session.Session` (topology, position, weight log,
what readers see through the channel), the :class:`~.link.LoaderLink` (the loader handshake),
:class:`~.attachments.Attachments` (states saved with the stream's) and :func:`~.resume.restore`
(reading a checkpoint back). Readers get a :class:`~.reading.ReaderPlan` and nothing else.

Global layout: rank ``r``'s ``t``-th batch holds global samples
``[(t * world + r) * B, (t * world + r + 1) * B)``, and a DataLoader with ``N`` workers asks
worker ``j`` for the batches ``t`` with ``t - start ≡ j (mod N)``; reader slot ``t mod N`` of
rank ``r`` serves them, so the data each slot reads does not depend on where an iteration started.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, Generic, TypeVar

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from .attachments import Attachments
from .batch import Batch, Sample
from .channel import WeightChannel
from .checkpoint import STATE_VERSION, to_plain
from .config import Settings, check_args
from .corpus import Corpus
from .link import LoaderLink, publish_start_on_iter
from .plan.weights import WeightsLike, normalize_weights
from .reading import ReaderPlan, check_driver, check_workers, produce
from .remote.config import RemoteConfig
from .resume import restore
from .session import Session
from .sources.base import Schema
from .sources.resolve import Domain
from .topology import check_ranks_agree

UNBOUND_BATCH = 32  # internal batch of a stream iterated without a loader (yields samples)
log = logging.getLogger(__name__)


T = TypeVar("T")


class _Field(Generic[T]):
    """A read-only attribute of one of the stream's parts (the facade owns no state). A worker's
    copy has no session: its topology fields read the reader plan's copy."""

    def __init__(self, part: str, name: str, doc: str | None = None):
        self.part, self.name, self.__doc__ = part, name, doc

    def __get__(self, obj: Any, owner: Any = None) -> T:
        if obj is None:  # the class attribute (documentation tools)
            return self  # type: ignore[return-value]
        part = getattr(obj, self.part)
        if part is None:
            part = obj._plan
        return getattr(part, self.name, None)  # type: ignore[return-value]


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
        check_args(domains, on_exhausted, shuffle_window, token_dtype, max_pending_weight_changes)
        self._remote = remote or RemoteConfig(cache_dir=cache_dir,
                                              cache_limit_bytes=cache_limit_bytes,
                                              concurrency=remote_concurrency)
        self._verify = bool(verify)
        self._make_corpus = partial(Corpus, columns=columns, shuffle_window=shuffle_window,
                                    memory_budget=memory_budget)
        doms = [Domain(name, spec, remote=self._remote, verify=verify)
                for name, spec in domains.items()]
        self._plan = ReaderPlan(
            domains=doms, schema={}, union_schema={}, windows=[], seed=int(seed),
            shuffle=bool(shuffle), mix_block=int(mix_block), on_exhausted=on_exhausted,
            prefetch=bool(prefetch),
            token_dtype=None if token_dtype is None else str(token_dtype).replace("torch.", ""),
            channel=WeightChannel(len(doms), max_pending_weight_changes or 64))
        self._session = Session(self._plan, np.ones(len(doms)) / len(doms), rank=rank,
                                world_size=world_size, max_pending=max_pending_weight_changes)
        self._install(doms, weights)
        self._batch_size = batch_size  # until bound
        self._attached = Attachments()
        self._listeners: list[Callable[[int, dict[str, float]], None]] = []

    # -- the worker payload -----------------------------------------------------------------
    _worker_flags: tuple[bool, bool]  # a pickled copy's (driven by a loader, loader iterating)

    def __getstate__(self) -> dict:
        """Workers get the reader plan and two flags: nothing attached, no trainer state."""
        link = self._session.link
        return {"_plan": self._plan, "domains": self.domains, "_session": None,
                "_worker_flags": (link.driven, link.iterating)}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def _install(self, doms: list[Domain], weights: WeightsLike | None) -> None:
        """Make ``doms`` this stream's domains (construction, and a domain-set change)."""
        corpus = self._make_corpus(doms)
        self._corpus, self.domains = corpus, list(corpus.names)
        w0 = (np.full(len(doms), 1.0 / len(doms)) if weights is None
              else normalize_weights(weights, self.domains))
        self._session.install(corpus.domains, corpus.schema, corpus.union_schema, corpus.windows,
                              w0)

    # -- settings (the reader plan's) and topology (the session's) ----------------------------
    seed: _Field[int] = _Field("_plan", "seed")
    shuffle: _Field[bool] = _Field("_plan", "shuffle")
    mix_block: _Field[int] = _Field("_plan", "mix_block")
    on_exhausted: _Field[str] = _Field("_plan", "on_exhausted")
    schema: _Field[Schema] = _Field("_plan", "schema")
    batched: _Field[bool] = _Field("_plan", "batched")
    num_workers: _Field[int | None] = _Field("_session", "num_workers")
    prefetch_depth: _Field[int] = _Field("_session", "prefetch_depth",
                                         "batches the loader may have requested beyond the fetched")
    rank: _Field[int] = _Field("_session", "rank")
    world_size: _Field[int] = _Field("_session", "world_size")

    @property
    def windows(self) -> list[int]:
        return list(self._plan.windows)

    @property
    def batch_size(self) -> int | None:
        if self._session is None:  # a worker's copy
            return self._plan.batch_size
        return self._session.batch_size or self._batch_size

    @property
    def link(self) -> LoaderLink:
        """The loader handshake (MixLoader, StagePlan and reader threads use it)."""
        return self._session.link

    @property
    def bound(self) -> bool:
        """Has a loader (or :meth:`bind`) told the stream its batch size and workers?"""
        return self._session.bound

    # -- public state -----------------------------------------------------------------------
    @property
    def weights(self) -> dict[str, float]:
        """The latest weights (the last entry of the weight log)."""
        return dict(zip(self.domains, (float(x) for x in self._session.log.latest.weights)))

    @property
    def weight_log(self) -> list[tuple[int, dict[str, float]]]:
        """The retained weight log: the entry in force at the last checkpoint/compaction point
        and every later one. Earlier entries are folded into the mixture state; observers that
        want every change register with :meth:`add_weight_listener`."""
        return [(e.from_sample, dict(zip(self.domains, map(float, e.weights))))
                for e in self._session.log.entries]

    def add_weight_listener(self, fn: Callable[[int, dict[str, float]], None]) -> None:
        """Call ``fn(from_sample, weights)`` on every weight change (the full log)."""
        self._listeners.append(fn)

    @property
    def consumed_batches(self) -> int:
        """Batches this rank fetched from its loader (MixLoader counts them)."""
        return self._session.position.consumed

    @consumed_batches.setter
    def consumed_batches(self, value: int) -> None:
        """For plain DataLoaders: tell the stream where the trainer is (e.g. ``step + 1``)."""
        with self._session.lock:
            self._session.position.set_consumed(int(value))
            self._session.loop_thread = threading.get_ident()

    @property
    def trained_batches(self) -> int:
        """Batches the trainer has trained on: the checkpoint position (default: fetched)."""
        return self._session.position.trained_batches

    @trained_batches.setter
    def trained_batches(self, value: int) -> None:
        """For trainers that fetch ahead (Lightning): the position a checkpoint records."""
        with self._session.lock:
            self._session.position.set_trained(int(value))

    @property
    def trained_batches_set(self) -> bool:
        """Did a trainer say how many batches it trained on (else: the fetched count)?"""
        return self._session.position.trained is not None

    @property
    def consumed_samples(self) -> int:
        """Global samples consumed by all ranks (assumes ranks step together)."""
        return self.trained_batches * self.world_size * (self.batch_size or 0)

    def domain_stats(self) -> dict[str, dict[str, int | None]]:
        return self._corpus.stats()

    def attach(self, obj: Any, name: str | None = None) -> None:
        """Include ``obj.state_dict()`` (a controller, say) in this stream's checkpoints, under
        ``name`` (default: the class name, numbered if taken; see :attr:`attached`)."""
        self._attached.add(obj, name)

    def detach(self, obj: Any) -> None:
        """Stop including ``obj`` in checkpoints (a StagePlan retiring a stage's controller)."""
        self._attached.remove(obj)

    @property
    def attached(self) -> dict[str, Any]:
        return self._attached.items()

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
        if batched:
            self._corpus.check_batchable()
        self._session.bind(batch_size, num_workers, prefetch_factor, batched, loader=loader,
                           threads=threads)

    def bind_loader(self, loader: torch.utils.data.DataLoader) -> None:
        """Bind to a plain ``DataLoader`` (per-sample mode; see :meth:`bind`); its iterations
        then start where the trainer is (see :func:`~mixstream.link.publish_start_on_iter`)."""
        if loader.batch_size is None:
            raise ValueError("bind_loader needs a DataLoader with batch_size set; for batched mode "
                             "use MixLoader or stream.bind(batch_size, num_workers)")
        self.bind(loader.batch_size, loader.num_workers, loader.prefetch_factor, batched=False)
        publish_start_on_iter(loader)

    # -- weights ----------------------------------------------------------------------------
    def set_initial_weights(self, weights: WeightsLike) -> None:
        """Replace the initial weights (before the first batch only; a StagePlan's first
        stage)."""
        with self._session.lock:
            if self.link.started or self.consumed_batches or len(self._session.log) > 1:
                raise RuntimeError("initial weights can only change before the first batch")
            self._session.reset_log(normalize_weights(weights, self.domains))

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
        with self._session.lock:
            if self.link.mute:
                return self._session.log.latest.from_sample
            from_sample = self._session.place(w, from_batch)
        log.debug("weights %s from sample %d", np.round(w, 4).tolist(), from_sample)
        named = dict(zip(self.domains, map(float, w)))
        for fn in self._listeners:
            fn(from_sample, named)
        return from_sample

    # -- the domain set ---------------------------------------------------------------------
    def add_domains(self, domains: Mapping[str, Any], weights: WeightsLike | None = None) -> int:
        """Add domains during a run, from the next batch the loader fetches; returns that batch.

        The stream continues as if its checkpoint at that batch were loaded into a stream with
        the larger domain set (see :meth:`load_state_dict`): old domains keep their epochs and
        positions, new ones start fresh, ``weights`` (every domain, by name; default uniform)
        apply from there and supersede weight changes scheduled after it (a warning names
        them). The MixLoader restarts its workers at that batch (batches it had prefetched are
        produced again under the new plan). Needs a MixLoader.
        """
        self._corpus.check_new(list(domains))
        new = [Domain(name, spec, remote=self._remote, verify=self._verify)
               for name, spec in domains.items()]
        return self._change_domains(self._corpus.domains + new, weights)

    def remove_domains(self, names: list[str], weights: WeightsLike | None = None) -> int:
        """Retire domains during a run (see :meth:`add_domains`); ``weights`` for those left."""
        return self._change_domains(self._corpus.without(names), weights)

    def _change_domains(self, doms: list[Domain], weights: WeightsLike | None) -> int:
        session = self._session
        with session.lock:
            if not self.link.driven or not session.bound:
                raise RuntimeError("changing the domain set during a run needs a MixLoader (it "
                                   "restarts its workers with the new domains); with a plain "
                                   "DataLoader, load the checkpoint into a new MixStream")
            if weights is not None:
                normalize_weights(weights, [d.name for d in doms])  # validate before changing
            self._attached.check_remappable()
            at = session.position.consumed
            session.position.trained = None
            after = at * self.world_size * (self.batch_size or 0)
            dropped = [f for f, _ in self.weight_log if f > after]
            if dropped:
                log.warning("the domain set changes at batch %d: weight changes scheduled from "
                            "samples %s are superseded by the new domains' weights", at, dropped)
            state = self.state_dict(check_ranks=False)
            self._plan.channel.frozen = False  # the loader makes new workers with new buffers
            session.position.tracker = None
            self._install(doms, weights)
            self._load(state)
            session.position.tracker = session.new_tracker()
            self.link.restart = True
        log.info("domain set changed at batch %d: %s", at, self.domains)
        return at

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self, *, check_ranks: bool = True) -> dict[str, Any]:
        """Small, exact, plain Python: seed, corpus fingerprint, retained weight log, position,
        claim book and attached states (by name).

        Under torch.distributed, ``check_ranks`` compares the ranks' weight logs (a collective:
        call it on every rank, as HF Trainer, Lightning and torch.distributed.checkpoint do) so
        that a weight change made on one rank only is an error instead of duplicated data.
        """
        with self._session.lock:
            state = {"version": STATE_VERSION, **vars(self._settings()),
                     "domains": self._corpus.get_state(), **self._session.get_state(),
                     "attached": self._attached.get_state()}
        if check_ranks and self.world_size > 1:
            check_ranks_agree(str(state["weight_digest"]), int(state["consumed_batches"]))
        return to_plain(state)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where ``state`` was taken (elastic if the topology differs).

        The checkpoint must describe this corpus (names, sizes, fingerprints) and be internally
        consistent: its claim counters must equal the samples its mixture assigns up to its
        position — a rewound or edited counter is an error, not duplicated data.
        """
        with self._session.lock:
            self._load(state)
            self.link.restart = True  # a running iteration restarts from the new position
        self.link.begin_iteration()

    def _load(self, state: Mapping[str, Any]) -> None:
        got = restore(state, self._corpus, self._settings(), self._session.initial_weights)
        self._attached.check_names(got.attached)
        attached = got.attached
        if got.names != self.domains:
            attached = self._attached.remap(attached, got.names, list(self.domains))
        self._session.load(got)
        self._attached.load(attached)

    def _settings(self) -> Settings:
        return Settings(self.seed, self.mix_block, self.shuffle, self.on_exhausted)

    def progress(self) -> dict[str, dict[str, Any]]:
        """Per domain: global samples consumed and epochs of the domain completed so far."""
        with self._session.lock:
            realised = self._session.realised_counts()
        if realised is None:
            return {}
        return {dom.name: {"samples": int(n), "epochs": int(n) / dom.num_samples,
                           "epoch": int(n) // dom.num_samples}
                for dom, n in zip(self._corpus.domains, realised)}

    # -- iteration (runs in each DataLoader worker, or in the main process) ------------------
    def __iter__(self) -> Iterator[Batch | Sample]:
        info = get_worker_info()
        if info is not None:  # a DataLoader worker
            link = self._session.link if self._session is not None else None
            check_driver(*((link.driven, link.iterating) if link else self._worker_flags))
            check_workers(self._plan, info.num_workers)
            return produce(self._plan, info.id, info.num_workers, ring=self._plan.ring)
        if self._session is None:
            raise RuntimeError("a pickled MixStream copy cannot be iterated outside a worker")
        return self._session.iterate(self.batch_size or UNBOUND_BATCH)

    def __repr__(self) -> str:
        w = ", ".join(f"{k}: {v:.3g}" for k, v in self.weights.items())
        return f"MixStream({len(self.domains)} domains, weights {{{w}}}, seed={self.seed})"
