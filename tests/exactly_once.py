"""The exactly-once harness: run a MixStream over a whole topology and check its promises.

Ranks are simulated in one process with explicit ``rank=``/``world_size=``; readers are either
the real reader loop (:func:`mixstream.reading.produce`, one generator per simulated worker,
driven in the DataLoader's order) or real ``MixLoader`` workers. The checks:

* exactly once per domain epoch, epochs counted in global sample order: ordered by
  ``batch["index"]``, the first N samples of an N-sample domain are a permutation of it, the
  next N another, and so on (and the tail has no repeat);
* no global batch skipped: the delivered indices are ``0 .. total-1``;
* the mixture: the domain sequence is the plan's (a MixCursor over the full weight log) and
  every prefix is within the README's bound ``1 + D/4`` of the weights' integral;
* every rank yields the same number of batches;
* a resumed run equals the uninterrupted one (same topology: batch for batch; elastic: the
  same global sequence of domains and the exactly-once property).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mixstream import MixLoader, MixStream
from mixstream.plan.mixture import MixCheckpoint, MixCursor
from mixstream.plan.weights import normalize_weights
from mixstream.reading import produce
from mixstream.sources.base import Block, ColumnSpec, Schema, Source

ID_BASE = 1_000_000


class IdSource(Source):
    """In-memory domain: column ``id`` = ``domain * ID_BASE + row``, in blocks of given sizes."""

    def __init__(self, domain: int, sizes: list[int]):
        self.uri = f"mem://domain{domain}"
        self.domain = domain
        self._sizes = np.asarray(sizes, np.int64)
        self._first = np.concatenate([[0], np.cumsum(self._sizes)[:-1]]).astype(np.int64)

    @property
    def block_sizes(self) -> np.ndarray:
        return self._sizes

    @property
    def schema(self) -> Schema:
        return {"id": ColumnSpec("scalar", "int64")}

    def read_block(self, index: int) -> Block:
        a = int(self._first[index])
        return {"id": np.arange(a, a + int(self._sizes[index]), dtype=np.int64)
                + self.domain * ID_BASE}


@dataclass
class Scenario:
    sizes: list[list[int]]  # per domain, block sizes
    weights: list[float]
    window: int = 16
    shuffle: bool = True
    batch: int = 4
    world: int = 1
    workers: int = 0
    on_exhausted: str = "restart"
    steps: int = 20
    changes: list[tuple[int, list[float]]] = field(default_factory=list)  # (step, weights)
    # (step, weights, k): set_weights(from_batch=horizon + k), a change scheduled ahead; later
    # default changes land before it (placed at the horizon) and it still applies at its batch
    scheduled: list[tuple[int, list[float], int]] = field(default_factory=list)
    resume_at: int | None = None
    resume_world: int | None = None
    resume_workers: int | None = None
    resume_batch: int | None = None  # elastic: keeps the global batch (batch x world)
    seed: int = 0
    real_workers: bool = False
    threads: bool = False  # real_workers as reader threads (MixLoader(reader_threads=N))
    # continual: only the first ``initial`` domains exist at first; (step, "add"|"remove", d)
    # changes the domain set after that step's batches (None: all domains from the start)
    initial: int | None = None
    domain_changes: list[tuple[int, str, int]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f"d{i}" for i in range(len(self.sizes))]


@dataclass
class Run:
    rows: list[list[dict[str, np.ndarray]]]  # per rank, batches (index, domain, id)
    log: list[tuple[int, np.ndarray]]  # every weight change, in order
    ended: list[bool]


def make_stream(sc: Scenario, rank: int, world: int, present: list[int] | None = None
                ) -> MixStream:
    present = list(range(len(sc.sizes))) if present is None else present
    domains = {sc.names[i]: IdSource(i, sc.sizes[i]) for i in present}
    weights = [sc.weights[i] for i in present]
    if sum(weights) <= 0:
        weights = [1.0] * len(present)
    return MixStream(domains, weights=weights, seed=sc.seed, shuffle=sc.shuffle,
                     shuffle_window=sc.window, on_exhausted=sc.on_exhausted, rank=rank,
                     world_size=world, prefetch=False)


class _Rank:
    """One simulated rank: a stream and its readers, driven like a DataLoader drives workers."""

    def __init__(self, sc: Scenario, rank: int, world: int, workers: int,
                 state: dict[str, Any] | None, batch: int, present: list[int] | None = None):
        self.stream = make_stream(sc, rank, world, present)
        self.real = sc.real_workers and workers > 0
        if self.real:
            kw: dict[str, Any] = ({"reader_threads": workers} if sc.threads else
                                  {"num_workers": workers, "multiprocessing_context": "fork"})
            self.loader = MixLoader(self.stream, batch_size=batch, **kw)
            if state is not None:
                self.loader.load_state_dict(state)
            self.it: Any = iter(self.loader)
        else:
            self.stream.bind(batch, workers, 2 if workers else None, loader=True)
            if state is not None:
                self.stream.load_state_dict(state)
            # readers run ahead of the trainer as DataLoader workers do: any reader may produce
            # any of its batches the loader has requested (below fetched + prefetch depth), in
            # a seeded random order, so a reader can lag behind the others
            self.rng = np.random.default_rng([sc.seed, rank, 7])
            self._restart_readers(max(1, workers))

    def _restart_readers(self, n: int) -> None:
        self.start = self.t = self.stream.consumed_batches
        self.gens = [produce(self.stream._plan, j, n) for j in range(n)]
        self.next_of = [self.start + j for j in range(n)]
        self.ready: dict[int, Any] = {}

    def _produce(self, j: int) -> None:
        t = self.next_of[j]
        self.ready[t] = next(self.gens[j], None)
        self.next_of[j] = t + len(self.gens) if self.ready[t] is not None else 1 << 60

    def next(self) -> dict | None:
        if self.real:
            return next(self.it, None)
        if self.stream.link.take_restart():  # the domain set changed: readers restart
            self.stream.link.begin_iteration()  # (as MixLoader does)
            self._restart_readers(len(self.gens))
        n = len(self.gens)
        limit = self.t + self.stream.prefetch_depth  # batches the loader has requested
        for j in range(n):  # each reader runs as far ahead as allowed, or waits, at random
            if self.rng.random() < 0.5:
                while self.next_of[j] < limit:
                    self._produce(j)
        owner = (self.t - self.start) % n
        while self.t not in self.ready:
            if self.next_of[owner] > self.t:  # the owner ended (stop mode)
                return None
            self._produce(owner)
        batch = self.ready.pop(self.t)
        if batch is not None:
            self.t += 1
            self.stream.link.delivered()
        return batch


def present_at(sc: Scenario, step: int) -> list[int]:
    """The domains present after ``step``'s batches (continual scenarios)."""
    present = list(range(len(sc.sizes) if sc.initial is None else sc.initial))
    for at, kind, d in sc.domain_changes:
        if at < step:
            if kind == "add" and d not in present:
                present.append(d)
            elif kind == "remove" and d in present and len(present) > 1:
                present.remove(d)
    return present


def _row(batch: dict) -> dict[str, np.ndarray]:
    return {k: batch[k].numpy().copy() for k in ("index", "domain", "id")}


def run(sc: Scenario, *, steps: int | None = None, state: list[dict] | None = None,
        world: int | None = None, workers: int | None = None, first_step: int = 0,
        log: list | None = None, batch: int | None = None) -> tuple[Run, list[dict]]:
    """Run ``steps`` rounds on every rank (weight changes at ``sc.changes``); returns the rows
    and every rank's final state."""
    world = sc.world if world is None else world
    workers = sc.workers if workers is None else workers
    steps = sc.steps if steps is None else steps
    batch = sc.batch if batch is None else batch
    present = present_at(sc, first_step)
    ranks = [_Rank(sc, r, world, workers, None if state is None else state[r % len(state)],
                   batch, present) for r in range(world)]
    log = [] if log is None else log
    if state is None:
        log.append((0, normalize_weights(sc.weights, sc.names)))
    ranks[0].stream.add_weight_listener(
        lambda f, w: log.append((f, np.array([w.get(n, 0.0) for n in sc.names]))))
    rows: list[list[dict[str, np.ndarray]]] = [[] for _ in range(world)]
    ended = [False] * world
    changes = dict(sc.changes)
    for step in range(first_step, first_step + steps):
        for r, rk in enumerate(ranks):
            if ended[r]:
                continue
            batch = rk.next()
            if batch is None:
                ended[r] = True
            else:
                rows[r].append(_row(batch))
        for when, weights, ahead in sc.scheduled:
            if when != step or any(ended):
                continue
            for rk in ranks:
                w = {n: weights[sc.names.index(n)] for n in rk.stream.domains}
                if sum(w.values()) > 0:
                    horizon = rk.stream.consumed_batches + rk.stream.prefetch_depth
                    rk.stream.set_weights(w, from_batch=horizon + ahead)
        if step in changes and not any(ended):  # (a loop that ended makes no more changes)
            for rk in ranks:
                cur = rk.stream.domains
                w = {n: changes[step][sc.names.index(n)] for n in cur}
                if sum(w.values()) > 0:
                    rk.stream.set_weights(w)
        for at, kind, d in sc.domain_changes:
            if at != step or any(ended):
                continue
            name = sc.names[d]
            for rk in ranks:
                cur = rk.stream.domains
                if kind == "add" and name not in cur:
                    rk.stream.add_domains({name: IdSource(d, sc.sizes[d])})
                elif kind == "remove" and name in cur and len(cur) > 1:
                    rk.stream.remove_domains([name])
    states = [rk.stream.state_dict(check_ranks=False) for rk in ranks]
    return Run(rows, log, ended), states


def run_with_resume(sc: Scenario) -> tuple[Run, Run]:
    """(uninterrupted, resumed at ``sc.resume_at`` possibly under another topology)."""
    full, _ = run(sc)
    assert sc.resume_at is not None
    log: list = []
    head, states = run(sc, steps=sc.resume_at, log=log)
    tail, _ = run(sc, steps=sc.steps - sc.resume_at, state=states, world=sc.resume_world,
                  workers=sc.resume_workers, first_step=sc.resume_at, log=log,
                  batch=sc.resume_batch)
    rows = [h + t for h, t in zip(head.rows, tail.rows)] if len(head.rows) == len(tail.rows) \
        else head.rows + tail.rows
    return full, Run(rows, log, tail.ended)


# -- checks ---------------------------------------------------------------------------------
def merged(run_: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [b for rank in run_.rows for b in rank]
    if not rows:
        return (np.zeros(0, np.int64),) * 3  # type: ignore[return-value]
    index = np.concatenate([b["index"] for b in rows])
    order = np.argsort(index, kind="stable")
    return (index[order], np.concatenate([b["domain"] for b in rows])[order],
            np.concatenate([b["id"] for b in rows])[order])


def check_exactly_once(sc: Scenario, run_: Run) -> None:
    index, dom, ids = merged(run_)
    assert (index == np.arange(len(index))).all(), "a global batch was skipped or repeated"
    if sc.initial is None and not sc.domain_changes:
        assert (ids // ID_BASE == dom).all(), "a sample came from another domain than its tag"
    for d, sizes in enumerate(sc.sizes):
        n = int(sum(sizes))
        mine = ids[ids // ID_BASE == d] - d * ID_BASE
        for e in range(0, len(mine), n):
            chunk = mine[e : e + n]
            assert len(np.unique(chunk)) == len(chunk), (
                f"domain {d} (size {n}): a sample repeats within epoch {e // n}")
            if len(chunk) == n:
                assert chunk.min() == 0 and chunk.max() == n - 1


def check_mixture(sc: Scenario, run_: Run) -> None:
    _, dom, _ = merged(run_)
    d = len(sc.sizes)
    log = run_.log
    cur = MixCursor(sc.seed, 1024, MixCheckpoint.initial(log[0][1]))
    for f, w in log[1:]:
        cur.add_entry(f, w)
    assert (dom == cur.domains(0, len(dom))).all(), "the domain sequence is not the plan's"
    # README bound: every prefix within 1 + D/4 of its target, the weights' integral, where a
    # change that switches a domain off hands its unserved fraction to the active domains
    n = len(dom)
    counts = np.cumsum(np.eye(d)[dom], 0) if n else np.zeros((0, d))
    last: dict[int, np.ndarray] = {}
    for f, w in log:  # call order: for one sample, the last call wins
        last[int(f)] = np.asarray(w, np.float64)
    points = sorted(last.items())
    target = np.zeros((n, d))
    base, start = np.zeros(d), 0
    for k, (f, w) in enumerate(points):
        if f >= n:
            break
        if k > 0:  # re-base at the entry, as the spec says
            reached = base + points[k - 1][1] * (f - start)
            done = counts[f - 1] if f > 0 else np.zeros(d)
            off = w <= 0
            balance = float((reached[off] - done[off]).sum())
            base = reached.copy()
            base[off] = done[off]
            base[~off] += balance * w[~off] / w[~off].sum()
        start = f
        end = points[k + 1][0] if k + 1 < len(points) else n
        idx = np.arange(f, min(end, n))
        target[idx] = base + np.outer(idx + 1 - f, w)
    assert n == 0 or np.abs(counts - target).max() < 1 + d / 4


def check_ranks_equal(run_: Run) -> None:
    counts = {len(r) for r in run_.rows}
    assert len(counts) == 1, f"ranks yielded different batch counts {[len(r) for r in run_.rows]}"


def check_stop(sc: Scenario, run_: Run, world: int) -> None:
    """``stop`` mode: no domain beyond its first epoch, and the stream ran as far as it could."""
    index, dom, _ = merged(run_)
    sizes = np.array([sum(s) for s in sc.sizes])
    counts = np.bincount(dom, minlength=len(sizes))
    assert (counts <= sizes).all()
    if all(run_.ended) and all(f < len(index) for f, _ in run_.log[1:]):
        # (a change made after the end would not restart the stream: check the log it ran on)
        per_round = sc.batch * world
        cur = MixCursor(sc.seed, 1024, MixCheckpoint.initial(run_.log[0][1]))
        for f, w in run_.log[1:]:
            cur.add_entry(f, w)
        nxt = np.bincount(cur.domains(0, len(index) + per_round), minlength=len(sizes))
        assert (nxt > sizes).any(), "the stream stopped although the next round fits"


def same_batches(a: Run, b: Run) -> None:
    assert len(a.rows) == len(b.rows)
    for ra, rb in zip(a.rows, b.rows):
        assert len(ra) == len(rb)
        for x, y in zip(ra, rb):
            for k in ("index", "domain", "id"):
                assert (x[k] == y[k]).all()
