"""The state round-trip harness (tests/state_harness.py) applied to every stateful component.

Each component is driven through the state API it has: ``state_dict``/``load_state_dict`` for
the stream, the loader, controllers, the logger and the stage plan; for the plan components the
adapters below (``*_state`` / ``*_from``) use ``get_state``/``from_state`` when the class has
them and the older ``to_json``/``from_json``/constructor recipe otherwise.
"""

from __future__ import annotations

from typing import Any
from unittest import mock

import numpy as np
import pytest
import test_acodm as acodm_t  # their fakes: inputs and models the controllers' own tests use
import test_fastmix as fastmix_t
import test_opmix as opmix_t
import torch
from conftest import domain_table, to_arrow
from controller_fakes import FakeStream
from controller_harness import const_losses
from state_harness import Stateful, check_state_round_trip, rounds

from mixstream import MixLoader, MixStream
from mixstream.checkpoint import to_plain
from mixstream.controllers import ADO, ODM, Aioli, DoReMi, Schedule, StaticMixture, StepFeedback
from mixstream.controllers.history import History
from mixstream.observe import MixLogger
from mixstream.plan.claims import ClaimBook
from mixstream.plan.mixture import MixCheckpoint, MixCursor
from mixstream.plan.order import WindowGeometry
from mixstream.plan.weights import LogEntry, WeightLog
from mixstream.shards.writer import write_shards
from mixstream.stages import Stage, StagePlan
from mixstream.tracker import PositionTracker
from mixstream.walker import SlotLayout

SIZES = {"a": 120, "b": 80, "c": 50}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("roundtrip")
    out = {}
    for i, (name, n) in enumerate(SIZES.items()):
        write_shards(to_arrow(domain_table(i, n)), root / name, domain=name, rows_per_block=16,
                     blocks_per_shard=2, token_column="input_ids")
        out[name] = str(root / name)
    return out


def weights_for(step: int, d: int = 3) -> list[float]:
    """Deterministic weights of a change made at ``step`` (one domain off now and then)."""
    w = np.random.default_rng(step).uniform(0.1, 1.0, d)
    if step % 4 == 0:
        w[step % d] = 0.0
    return w.tolist()


# -- plan components: state adapters (get_state/from_state when the class has them) ---------------
def log_state(log: WeightLog) -> Any:
    return log.get_state() if hasattr(log, "get_state") else log.to_json()


def log_from(state: Any, d: int = 3) -> WeightLog:
    return WeightLog.from_state(state, d) if hasattr(WeightLog, "from_state") else \
        WeightLog.from_json(state)


def mix_state(ck: MixCheckpoint) -> Any:
    return ck.get_state() if hasattr(ck, "get_state") else ck.to_json()


def mix_from(state: Any, d: int = 3) -> MixCheckpoint:
    return MixCheckpoint.from_state(state, d) if hasattr(MixCheckpoint, "from_state") else \
        MixCheckpoint.from_json(state)


def claims_state(book: ClaimBook) -> Any:
    if hasattr(book, "get_state"):
        return book.get_state()
    return {k: v.tolist() for k, v in book.arrays().items()}


def claims_from(state: Any, geometry: list) -> ClaimBook:
    slots = len(state["held"])
    if hasattr(ClaimBook, "from_state"):
        return ClaimBook.from_state(state, geometry=geometry)
    if hasattr(ClaimBook, "parse_state"):
        return ClaimBook(geometry, slots, ClaimBook.parse_state(state, len(geometry), slots))
    return ClaimBook(geometry, slots, {k: np.asarray(v) for k, v in state.items()})


def geometry(d: int = 3) -> list:
    sizes = [[7, 9, 5], [16, 4], [3, 3, 3, 3]]
    return [WindowGeometry(np.array(sizes[i % 3]), 6, seed=5, domain=i, shuffle=True)
            for i in range(d)]


# -- WeightLog -------------------------------------------------------------------------------
def weight_log_spec() -> Stateful[Any]:
    class Box:
        def __init__(self) -> None:
            self.log = WeightLog(np.array([0.5, 0.25, 0.25]))

    def step(box: Any) -> Any:
        latest, n = box.log.latest.from_sample, len(box.log)
        at = latest if (latest + n) % 3 == 0 else latest + 5 + n  # some replace the last entry
        if (latest + n) % 5 == 1 and len(box.log) > 1:  # some go before one scheduled ahead
            at = (box.log.entries[-2].from_sample + latest) // 2
        replaced = box.log.add(at, np.asarray(weights_for(at + n)) / sum(weights_for(at + n)))
        return replaced, log_state(box.log)

    def load(box: Any, state: Any) -> Any:
        box.log = log_from(state)
        return box

    return Stateful(make=Box, step=step, get_state=lambda b: log_state(b.log), load=load)


@rounds(max_k=8, max_m=8, examples=10)
def test_weight_log(k, m):
    check_state_round_trip(weight_log_spec(), k, m)


# -- MixCursor / MixCheckpoint -------------------------------------------------------------------
class CursorRun:
    """A mixture cursor walked like the tracker walks it: a weight log, a position."""

    def __init__(self, state: Any = None):
        if state is None:
            self.log = WeightLog(np.array([0.2, 0.5, 0.3]))
            ck, self.pos = MixCheckpoint.initial(self.log.latest.weights), 0
        else:
            self.log, ck, self.pos = log_from(state["log"]), mix_from(state["mix"]), state["pos"]
        pending = [(e.from_sample, e.weights) for e in self.log.entries
                   if e.from_sample > ck.chunk_start]
        self.cursor = MixCursor(3, 16, ck, pending, frontier=self.pos)

    def state(self) -> dict:
        return {"log": log_state(self.log), "mix": mix_state(self.cursor.checkpoint()),
                "pos": self.pos}

    def step(self) -> Any:
        ahead = []
        if (self.pos // 7) % 3 == 1:  # a change a little ahead (at the position now and then)
            ahead.append(self.pos + 3 * (self.pos % 2))
        if (self.pos // 5) % 4 == 2:  # one scheduled far ahead: later ones go before it
            ahead.append(self.pos + 45)
        for at in ahead:
            w = np.asarray(weights_for(at)) / sum(weights_for(at))
            self.log.add(at, w)
            self.cursor.add_entry(at, w)
        n = 5 + self.pos % 11
        dom = self.cursor.domains(self.pos, self.pos + n)
        self.pos += n
        return dom, self.cursor.counts_at(self.pos)


@rounds(max_k=10, max_m=10, examples=10)
def test_mix_cursor_and_checkpoint(k, m):
    check_state_round_trip(Stateful(make=CursorRun, step=CursorRun.step,
                                    get_state=CursorRun.state,
                                    load=lambda _, s: CursorRun(s)), k, m)


# -- ClaimBook -----------------------------------------------------------------------------------
class BookRun:
    """A claim book served batch by batch (3 slots, epochs wrap, steals at epoch tails)."""

    geo = geometry()

    def __init__(self, state: Any = None):
        self.t = 0 if state is None else state["t"]
        self.book = ClaimBook(self.geo, 3) if state is None else claims_from(state["book"],
                                                                              self.geo)

    def state(self) -> dict:
        return {"book": claims_state(self.book), "t": self.t}

    def step(self) -> Any:
        per = np.bincount(np.random.default_rng(self.t).integers(0, 3, 5), minlength=3)
        out = self.book.serve_batch(self.t % self.book.num_slots, per)
        self.t += 1
        return out, self.book.served()


@rounds(max_k=20, max_m=20, examples=10)
def test_claim_book(k, m):
    check_state_round_trip(Stateful(make=BookRun, step=BookRun.step, get_state=BookRun.state,
                                    load=lambda _, s: BookRun(s)), k, m)


def remapped() -> BookRun:
    """Three slots' claims handed to two (an elastic resume): queues deeper than one range."""
    run = BookRun()
    for _ in range(11):
        run.step()
    run.book = run.book.remap(2)
    return run


@rounds(max_k=20, max_m=20, examples=6)
def test_claim_book_after_a_remap(k, m):
    assert remapped().book.queue_depth > 1
    check_state_round_trip(Stateful(make=remapped, step=BookRun.step, get_state=BookRun.state,
                                    load=lambda _, s: BookRun(s)), k, m)


# -- PositionTracker -----------------------------------------------------------------------------
class TrackerRun:
    """A trainer-side tracker (2 ranks x 2 workers) advanced step by step, with weight changes
    placed a few batches ahead, rebuilt from its state the way the stream does it."""

    topo = SlotLayout(batch_size=4, world_size=2, num_workers=2)
    geo = geometry()

    def __init__(self, state: Any = None):
        if state is None:
            self.log = WeightLog(np.array([0.4, 0.4, 0.2]))
            mix, book, batch = MixCheckpoint.initial(self.log.latest.weights), None, 0
        else:
            self.log, mix = log_from(state["log"]), mix_from(state["mix"])
            book, batch = claims_from(state["claims"], self.geo), state["batch"]
        pending = [(e.from_sample, e.weights) for e in self.log.entries
                   if e.from_sample > mix.chunk_start]
        self.tracker = PositionTracker(seed=9, block=16, topology=self.topo,
                                       claims=book or ClaimBook(self.geo, self.topo.num_slots),
                                       mix=mix, pending=pending, batch=batch)

    def state(self) -> dict:
        if hasattr(self.tracker, "get_state"):
            return {"tracker": self.tracker.get_state(), "log": log_state(self.log)}
        walker = self.tracker.walker
        # as the session saves it: the cursor advanced to the position (one position, one state)
        mix = walker.cursor.checkpoint(at=walker.next_batch * self.topo.batch_size)
        log = WeightLog(mix.entry_weights)  # as the stream keeps it: the entry in force at the
        log.entries = [LogEntry(mix.entry_from, mix.entry_weights)] + [  # chunk start, then later
            e for e in self.log.entries if e.from_sample > mix.chunk_start]
        return {"batch": self.tracker.batch, "mix": mix_state(mix),
                "claims": claims_state(walker.claims), "log": log_state(log)}

    def step(self) -> Any:
        b = self.tracker.batch
        per_batch = self.topo.world_size * self.topo.batch_size
        for ahead in (2, 9) if b % 3 == 0 else ():  # near, and far (later near ones go before)
            at = (b + ahead) * per_batch
            w = np.asarray(weights_for(at)) / sum(weights_for(at))
            self.log.add(at, w)
            self.tracker.add_entry(at, w)
        self.tracker.advance_to(b + 1 + b % 2)
        return self.tracker.batch, self.tracker.realised_counts()


@rounds(max_k=8, max_m=8, examples=10)
def test_position_tracker(k, m):
    check_state_round_trip(Stateful(make=TrackerRun, step=TrackerRun.step,
                                    get_state=TrackerRun.state,
                                    load=lambda _, s: TrackerRun(s)), k, m)


# -- MixStream and MixLoader -------------------------------------------------------------------
def record(batch: dict) -> Any:
    return batch["index"], batch["domain"], batch["id"], batch["input_ids"][:, :3]


def position(stream: MixStream) -> Any:
    """What the stream reports about where it stands (must agree after a resume too; not
    ``weight_log``: the retained log starts at the last checkpoint by design)."""
    return stream.progress(), stream.weights, stream.consumed_samples


class StreamRun:
    """A MixStream read in the main process (``bind(batch_size, 0)``, no loader): the training
    loop tells it the position, as with a plain DataLoader."""

    def __init__(self, paths: dict[str, str]):
        self.stream = MixStream(paths, weights=[0.5, 0.3, 0.2], seed=4, shuffle_window=24,
                                mix_block=16)
        self.stream.bind(4, 0)
        self.it: Any = None

    def step(self) -> Any:
        if self.it is None:
            self.it = iter(self.stream)
        batch = next(self.it)
        self.stream.consumed_batches += 1
        at = self.stream.consumed_batches
        if at % 7 == 3:  # scheduled ahead: pending past the checkpoint position
            self.stream.set_weights(weights_for(1000 + at), from_batch=at + 6)
        elif at % 5 == 2:
            self.stream.set_weights(weights_for(at))
        return record(batch), position(self.stream)

    def load(self, state: Any) -> StreamRun:
        self.stream.load_state_dict(state)
        self.it = None
        return self


@rounds(max_k=25, max_m=20, examples=5)
def test_mix_stream_main_process(k, m, tiny):
    check_state_round_trip(Stateful(make=lambda: StreamRun(tiny), step=StreamRun.step,
                                    get_state=lambda r: r.stream.state_dict(),
                                    load=StreamRun.load), k, m)


def saved_after(run: StreamRun, k: int) -> dict:
    for _ in range(k):
        run.step()
    return run.stream.state_dict()


@pytest.mark.parametrize("k", [2, 4])  # 2: an entry starts at sample 8; 4: chunk end (16)
def test_stream_state_is_canonical_at_a_chunk_boundary(tiny, k):
    state = saved_after(StreamRun(tiny), k)
    again = StreamRun(tiny).load(state).stream.state_dict()
    assert again["mix"] == state["mix"] and again["weight_log"] == state["weight_log"]


def test_weight_digest_survives_load_then_save(tiny):
    state = saved_after(StreamRun(tiny), 3)
    assert StreamRun(tiny).load(state).stream.state_dict()["weight_digest"] == \
        state["weight_digest"]


def test_weight_digest_after_resume_and_a_change_is_the_uninterrupted_one(tiny):
    run = StreamRun(tiny)
    state = saved_after(run, 3)
    end = saved_after(run, 6)  # a weight change at batch 7
    resumed = saved_after(StreamRun(tiny).load(state), 6)
    assert resumed["weight_digest"] == end["weight_digest"]
    assert resumed == end


class PlainLoaderRun:
    """A plain ``DataLoader`` with 2 workers bound by ``stream.bind_loader`` (per-sample mode);
    the training loop tells the stream its position."""

    def __init__(self, paths: dict[str, str]):
        self.stream = MixStream(paths, weights=[0.5, 0.3, 0.2], seed=4, shuffle_window=24,
                                mix_block=16)
        self.loader = torch.utils.data.DataLoader(self.stream, batch_size=4, num_workers=2)
        self.stream.bind_loader(self.loader)
        self.it: Any = None

    def step(self) -> Any:
        if self.it is None:
            self.it = iter(self.loader)
        batch = next(self.it)
        self.stream.consumed_batches += 1
        if self.stream.consumed_batches % 5 == 2:
            self.stream.set_weights(weights_for(self.stream.consumed_batches))
        return record(batch)

    def load(self, state: Any) -> PlainLoaderRun:
        self.close()
        self.stream.load_state_dict(state)
        return self

    def close(self) -> None:
        shutdown = getattr(self.it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self.it = None


@rounds(max_k=12, max_m=10, examples=2)
def test_plain_dataloader_bound_to_the_stream(k, m, tiny):
    check_state_round_trip(Stateful(make=lambda: PlainLoaderRun(tiny), step=PlainLoaderRun.step,
                                    get_state=lambda r: r.stream.state_dict(),
                                    load=PlainLoaderRun.load, close=PlainLoaderRun.close), k, m)


class LoaderRun:
    """A MixLoader with ``workers`` worker processes (weight changes from the training loop)."""

    def __init__(self, paths: dict[str, str], workers: int, threads: int = 0, **kw: Any):
        self.stream = MixStream(paths, weights=[0.5, 0.3, 0.2], seed=4, shuffle_window=24,
                                mix_block=16)
        self.loader = MixLoader(self.stream, batch_size=4, num_workers=workers,
                                reader_threads=threads, **kw)
        self.it: Any = None

    def step(self) -> Any:
        if self.it is None:
            self.it = iter(self.loader)
        batch = next(self.it)
        at = self.stream.consumed_batches
        if at % 7 == 3:  # scheduled past the prefetch horizon; default changes go before it
            self.stream.set_weights(weights_for(1000 + at),
                                    from_batch=at + self.stream.prefetch_depth + 6)
        elif at % 5 == 2:
            self.stream.set_weights(weights_for(at))
        return (record(batch) if isinstance(batch, dict) else batch), position(self.stream)

    def load(self, state: Any) -> LoaderRun:
        self.loader.load_state_dict(state)  # as a trainer does: the next iter() starts there
        self.it = None
        return self

    def close(self) -> None:
        # the live iterator, and the one a persistent-workers DataLoader keeps for reuse
        for it in (self.it, getattr(self.loader, "_iterator", None)):
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        self.it = None


def loader_spec(paths: dict[str, str], workers: int, threads: int = 0,
                **kw: Any) -> Stateful[LoaderRun]:
    return Stateful(make=lambda: LoaderRun(paths, workers, threads, **kw), step=LoaderRun.step,
                    get_state=lambda r: r.loader.state_dict(), load=LoaderRun.load,
                    close=LoaderRun.close)


@rounds(max_k=25, max_m=20, examples=5)
def test_mix_loader_main_process(k, m, tiny):
    check_state_round_trip(loader_spec(tiny, 0), k, m)


@rounds(max_k=12, max_m=10, examples=2)
def test_mix_loader_two_workers(k, m, tiny):
    check_state_round_trip(loader_spec(tiny, 2), k, m)


@rounds(max_k=12, max_m=10, examples=2)
def test_mix_loader_two_persistent_workers(k, m, tiny):
    check_state_round_trip(loader_spec(tiny, 2, persistent_workers=True), k, m)


@rounds(max_k=12, max_m=10, examples=2)
def test_mix_loader_per_sample_two_workers(k, m, tiny):
    check_state_round_trip(loader_spec(tiny, 2, batched=False), k, m)


class FetchAheadRun(LoaderRun):
    """A trainer that fetches one batch ahead (as Lightning does) and tells the loader which
    batches it trained on: the checkpoint sits at the trained batch, and a resume fetches the
    fetched-but-untrained batch again."""

    def __init__(self, paths: dict[str, str], workers: int):
        super().__init__(paths, workers)
        self.ahead: list = []

    def step(self) -> Any:
        if self.it is None:
            self.it = iter(self.loader)
            self.trained = self.loader.trained_batches
        if not self.ahead:
            self.ahead.append(next(self.it))
        batch = self.ahead.pop()
        self.ahead.append(next(self.it))  # fetched, not trained on yet
        self.trained += 1
        self.loader.trained_batches = self.trained
        if self.stream.consumed_batches % 5 == 2:
            self.stream.set_weights(weights_for(self.stream.consumed_batches))
        return record(batch)

    def load(self, state: Any) -> FetchAheadRun:
        self.ahead = []
        super().load(state)
        return self


@pytest.mark.parametrize("workers", [0, 2])
@rounds(max_k=12, max_m=10, examples=3)
def test_mix_loader_fetching_ahead(k, m, tiny, workers):
    check_state_round_trip(Stateful(make=lambda: FetchAheadRun(tiny, workers),
                                    step=FetchAheadRun.step,
                                    get_state=lambda r: r.loader.state_dict(),
                                    load=FetchAheadRun.load, close=FetchAheadRun.close), k, m)


class ControlledLoaderRun(LoaderRun):
    """A MixLoader whose stream an ODM controller (with a MixLogger) retunes every step: the
    controller's state travels in the stream's checkpoint (attached by name)."""

    def __init__(self, paths: dict[str, str], workers: int):
        super().__init__(paths, workers)
        self.records: list = []
        self.ctrl = ODM(self.stream, warmup=3, observer=MixLogger(hooks=[self.records.append]))

    def step(self) -> Any:
        if self.it is None:
            self.it = iter(self.loader)
        before = len(self.records)
        batch = next(self.it)
        loss = 1.0 + batch["domain"].double() + (batch["id"] % 5).double() / 10
        self.ctrl.feedback(batch["domain"], loss)
        return (record(batch), position(self.stream), self.ctrl.weight_vector,
                self.records[before:])


@pytest.mark.parametrize("workers", [0, 2])
@rounds(max_k=15, max_m=10, examples=3)
def test_mix_loader_with_a_controller(k, m, tiny, workers):
    check_state_round_trip(Stateful(make=lambda: ControlledLoaderRun(tiny, workers),
                                    step=ControlledLoaderRun.step,
                                    get_state=lambda r: r.loader.state_dict(),
                                    load=ControlledLoaderRun.load,
                                    close=ControlledLoaderRun.close), k, m)


@rounds(max_k=12, max_m=8, examples=2)
def test_lightning_callback(k, m, tiny):
    """Lightning saves the callback's state (the loader's at the trained batch) on its own."""
    lightning = pytest.importorskip("mixstream.integrations.lightning")

    def make() -> LoaderRun:
        run = LoaderRun(tiny, 0)
        run.callback = lightning.MixStreamCallback(run.loader)  # type: ignore[attr-defined]
        return run

    def load(run: LoaderRun, state: Any) -> LoaderRun:
        run.callback.load_state_dict(state)  # type: ignore[attr-defined]
        run.it = None
        return run

    check_state_round_trip(Stateful(make=make, step=LoaderRun.step,
                                    get_state=lambda r: r.callback.state_dict(),
                                    load=load, close=LoaderRun.close), k, m)


@pytest.mark.parametrize("free_threaded", [False, True], ids=["inline", "threads"])
@rounds(max_k=12, max_m=10, examples=2)
def test_mix_loader_two_reader_threads(free_threaded, k, m, tiny):
    with mock.patch("mixstream.threads.gil_enabled", lambda: not free_threaded):
        check_state_round_trip(loader_spec(tiny, 0, threads=2), k, m)


# -- controllers (on the controllers' FakeStream) and their observer ----------------------------
D3 = ["a", "b", "c"]


def losses(step: int, ids: torch.Tensor) -> dict:
    g = torch.Generator().manual_seed(step)
    base = torch.tensor([1.0 + 3 / (step + 1) ** 0.5, 2.0, 2.5 + 1 / (step + 1)], dtype=torch.float64)
    return {"loss": base[ids] * (1 + 0.05 * torch.rand(len(ids), generator=g, dtype=torch.float64))}


def doremi_losses(step: int, ids: torch.Tensor) -> dict:
    g = torch.Generator().manual_seed(step)
    loss = torch.rand(len(ids), 4, generator=g, dtype=torch.float64) + ids[:, None]
    return {"loss": loss, "ref_loss": torch.rand(len(ids), 4, generator=g, dtype=torch.float64) + 1}


def aioli(stream: FakeStream) -> Aioli:
    def validate() -> dict[str, float]:  # deterministic in the position, so a resume replays it
        n = stream.consumed_samples
        return {"a": 5 - 1e-3 * n, "b": 5 - 2e-3 * n ** 0.9, "c": 5 - 1e-4 * n}
    return Aioli(stream, validate=validate, update_steps=20, lp_rounds=1, lp_steps=2,
                 one_hot_factor=0.7)


CONTROLLERS = {
    "static": (lambda s: StaticMixture(s, [0.2, 0.3, 0.5]), losses),
    "schedule": (lambda s: Schedule(s, [(0, [0.6, 0.2, 0.2]), (12, [0.1, 0.1, 0.8])],
                                    interpolate="linear", every=3), losses),
    "odm": (lambda s: ODM(s, warmup=4), losses),
    "doremi": (lambda s: DoReMi(s), doremi_losses),
    "aioli": (aioli, losses),
    "ado": (lambda s: ADO(s, update_interval=5, start_step=8, ignore_steps=2, smoothing_window=5,
                          subsample=1), losses),
}


def acodm() -> tuple:
    from mixstream.controllers import ACODM

    return D3, lambda s: ACODM(s, total_steps=60, warmup=5, n_norms=2, **acodm_t.SMALL), \
        acodm_t.fake_inputs


def fastmix() -> tuple:
    from mixstream.controllers import FastMix
    from mixstream.model import ModelContext

    torch.manual_seed(0)
    D, make_batch, mse = fastmix_t.D, fastmix_t.make_batch, fastmix_t.mse
    model = fastmix_t.Head()  # shared by the runs, as a trainer's model (FastMix only reads it)
    val = [make_batch(torch.zeros(8, dtype=torch.long), 10_000 + i) for i in range(3)]

    def loss_fn(step: int, ids: torch.Tensor) -> dict:
        batch = make_batch(ids, step)
        return {"loss": mse(model, batch).detach(), "batch": batch}

    return D, lambda s: FastMix(s, ctx=ModelContext(model, mse, D), val_batches=val,
                                every=3), loss_fn


def opmix() -> tuple:
    from mixstream.controllers import OPMix
    from mixstream.model import ModelContext

    D, make, mse = opmix_t.D, opmix_t.make, opmix_t.mse

    def ctrl(stream: FakeStream) -> OPMix:
        torch.manual_seed(0)
        val = {d: [make(k, 16, 7 + k)] for k, d in enumerate(D)}
        return OPMix(stream, ctx=ModelContext(opmix_t.Net(), mse, D), train_batches=opmix_t.mixed,
                     val_batches=val, lora_steps=10, lora_lr=0.05, rank=2, alpha=2,
                     dropout=0.0, proxy_count=4, fit_steps=3, phases=[2, 5])

    return D, ctrl, const_losses([1.0, 2.0])


MODEL_AWARE = {"acodm": acodm, "fastmix": fastmix, "opmix": opmix}


class ControlRun:
    """A controller fed step by step; its state and the fake stream's position and log."""

    def __init__(self, name: str):
        if name in CONTROLLERS:
            (make, self.loss_fn), domains = CONTROLLERS[name], D3
        else:
            domains, make, self.loss_fn = MODEL_AWARE[name]()
        self.stream = FakeStream(domains, lag=16, seed=3)
        self.ctrl = make(self.stream)
        self.records: list = []
        self.ctrl.observer = MixLogger(hooks=[self.records.append])  # what a user's log shows

    def step(self) -> Any:
        before = len(self.records)
        ids = self.stream.next_batch()
        self.ctrl.feedback(ids, **self.loss_fn(self.stream.consumed_batches, ids))
        lw = self.ctrl.loss_weights()
        return (self.ctrl.weight_vector, None if lw is None else sorted(lw.items()),
                self.stream.log, self.records[before:])

    def state(self) -> dict:
        return to_plain(self.stream.state_dict())  # the fake's log holds tuples

    def load(self, state: Any) -> ControlRun:
        self.stream.load_state_dict(state)  # and the attached controller's
        return self


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
@rounds(max_k=25, max_m=20, examples=3)
def test_controller(k, m, name):
    check_state_round_trip(Stateful(make=lambda: ControlRun(name), step=ControlRun.step,
                                    get_state=ControlRun.state, load=ControlRun.load), k, m)


@pytest.mark.parametrize("name", sorted(MODEL_AWARE))
@rounds(max_k=8, max_m=6, examples=2)
def test_model_aware_controller(k, m, name):
    check_state_round_trip(Stateful(make=lambda: ControlRun(name), step=ControlRun.step,
                                    get_state=ControlRun.state, load=ControlRun.load), k, m)


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64"])
@rounds(max_k=70, max_m=70, examples=4)  # past the first capacity doubling (64 rows)
def test_controller_history(k, m, dtype):
    class Box:
        def __init__(self) -> None:
            self.history = History(3, dtype)

    def step(box: Any) -> Any:
        n = box.history.rows
        box.history.append(np.random.default_rng(n).normal(size=3) * 1000)
        return box.history.last(), box.history.array.sum(axis=0)

    def load(box: Any, state: Any) -> Any:
        box.history = History.from_state(state)
        return box

    check_state_round_trip(Stateful(make=Box, step=step, get_state=lambda b: b.history.state_dict(),
                                    load=load), k, m)


class LoggerRun:
    """A MixLogger fed step feedback; ``records``: its written records are outputs too."""

    def __init__(self, records: bool = False) -> None:
        self.records = records
        self.log = MixLogger(log_every=3, ema=0.8)
        self.seen: list = []
        self.log.hooks.append(self.seen.append)
        self.t = 0

    def step(self) -> Any:
        rng = np.random.default_rng(self.t)
        counts = np.bincount(rng.integers(0, 3, 8), minlength=3).astype(np.float64)
        counts[self.t % 3] = 0  # an absent domain keeps its EMA
        loss = counts * rng.uniform(1, 3, 3)
        self.t += 1
        fb = StepFeedback(self.t, counts, counts, loss, loss, np.zeros(3))
        before = len(self.seen)
        self.log.on_step(self.t, 8 * self.t, D3, fb)
        return dict(self.log.loss_ema), self.seen[before:] if self.records else None

    def state(self) -> dict:
        return {"logger": self.log.state_dict(), "t": self.t}

    def load(self, state: Any) -> LoggerRun:
        self.log.load_state_dict(state["logger"])
        self.t = state["t"]
        return self


def logger_spec(records: bool) -> Stateful[LoggerRun]:
    return Stateful(make=lambda: LoggerRun(records), step=LoggerRun.step,
                    get_state=LoggerRun.state, load=LoggerRun.load)


@pytest.mark.parametrize("records", [False, True])
@rounds(max_k=10, max_m=10, examples=6)
def test_mix_logger(k, m, records):
    check_state_round_trip(logger_spec(records), k, m)


@pytest.mark.parametrize(("k", "m"), [(4, 5), (0, 2)])  # 4: mid-interval; 0, 2: a rewind
def test_mix_logger_records_resume_exactly(k, m):
    check_state_round_trip(logger_spec(records=True), k, m)


# -- StagePlan ---------------------------------------------------------------------------------
class StagesRun(LoaderRun):
    """Three stages (steps, tokens, open-ended with a controller fed every step) over a
    MixLoader."""

    def __init__(self, paths: dict[str, str], workers: int = 0):
        super().__init__(paths, workers)
        self.plan = StagePlan(self.stream, [
            Stage("warm", steps=6, weights={"a": 1.0}),
            Stage("mid", tokens=10 * 4 * 16, weights={"a": 0.2, "b": 0.8}),
            Stage("late", controller=lambda s: ODM(s, warmup=2)),
        ])

    def step(self) -> Any:
        if self.it is None:
            self.it = iter(self.loader)
        batch = next(self.it)
        loss = 1.0 + batch["domain"].double() + (batch["id"] % 7).double() / 10
        self.plan.feedback(batch["domain"], loss)  # the late stage's controller learns
        ctrl = self.plan.controller
        return (record(batch), self.plan.index, self.plan.start, self.plan.tokens,
                None if ctrl is None else ctrl.weight_vector)


@pytest.mark.parametrize("workers", [0, 2])  # 2: stage switches placed past the prefetch
@rounds(max_k=25, max_m=15, examples=6)
def test_stage_plan(k, m, tiny, workers):
    check_state_round_trip(Stateful(make=lambda: StagesRun(tiny, workers), step=StagesRun.step,
                                    get_state=lambda r: r.loader.state_dict(),
                                    load=StagesRun.load, close=StagesRun.close), k, m)
