"""WeightChannel: the pending weight tail under a sequence lock, and the start checkpoint."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream import MixStream
from mixstream.channel import ChannelReallocatedError, WeightChannel, WeightChannelOverflow
from mixstream.plan.claims import ClaimBook
from mixstream.plan.mixture import MixCheckpoint
from mixstream.plan.order import WindowGeometry
from mixstream.walker import SlotLayout, Walker

FAST = settings(max_examples=25, deadline=None)


def entries_st(d: int, max_size: int) -> st.SearchStrategy:
    w = st.lists(st.floats(0, 1, allow_nan=False), min_size=d, max_size=d)
    return st.lists(st.tuples(st.integers(0, 10**9), w), max_size=max_size).map(
        lambda es: [(f, np.asarray(x, np.float64)) for f, x in sorted(es, key=lambda e: e[0])])


def mix_state(ck: MixCheckpoint) -> dict:
    return ck.get_state() if hasattr(ck, "get_state") else ck.to_json()


def same(a: list, b: list) -> bool:
    return len(a) == len(b) and all(fa == fb and np.array_equal(wa, wb)
                                    for (fa, wa), (fb, wb) in zip(a, b))


@FAST
@given(d=st.integers(1, 5), data=st.data())
def test_tail_round_trip_and_versions(d, data):
    ch = WeightChannel(d, capacity=8)
    got, v0 = ch.read_tail(-1)
    assert got == [] and v0 == 0
    assert ch.read_tail(v0) == (None, v0)  # unchanged: nothing copied
    seen = v0
    for _ in range(3):
        entries = data.draw(entries_st(d, 8))
        ch.write_tail(entries)
        got, v = ch.read_tail(seen)
        assert v == seen + 2 and v % 2 == 0  # one write: the version moved by two, even again
        assert got is not None and same(got, entries)
        assert ch.read_tail(v) == (None, v)
        seen = v


def test_read_tail_is_a_copy():
    ch = WeightChannel(2, capacity=4)
    ch.write_tail([(5, np.array([0.25, 0.75]))])
    got, _ = ch.read_tail(-1)
    ch.write_tail([(5, np.array([1.0, 0.0]))])
    assert got is not None and got[0][1].tolist() == [0.25, 0.75]


def test_overflow_names_the_fix_and_leaves_the_tail_untouched():
    ch = WeightChannel(2, capacity=3)
    ok = [(i * 10, np.array([0.5, 0.5])) for i in range(3)]
    ch.write_tail(ok)
    _, v = ch.read_tail(-1)
    with pytest.raises(WeightChannelOverflow, match=r"4 weight changes .* holds 3.*"
                       r"max_pending_weight_changes"):
        ch.write_tail(ok + [(40, np.array([1.0, 0.0]))])
    assert isinstance(WeightChannelOverflow("x"), ValueError)
    got, v2 = ch.read_tail(-1)
    assert v2 == v and got is not None and same(got, ok)  # a refused write changes nothing


def test_seqlock_reader_never_sees_a_torn_tail():
    """Each write's entries all carry the write's number; a reader racing the writer must see
    one write whole (a torn read would mix numbers or lengths)."""
    d, cap = 3, 64
    ch = WeightChannel(d, capacity=cap)
    stop = threading.Event()
    torn: list = []

    def writer() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            k = 1 + n % cap
            ch.write_tail([(n, np.full(d, float(n)))] * k)

    t = threading.Thread(target=writer)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: many interleavings in little time
    t.start()
    try:
        seen, reads, until = -1, 0, time.monotonic() + 1.5
        while reads < 2000 and time.monotonic() < until:
            got, seen = ch.read_tail(seen)
            if got is None:
                continue
            reads += 1
            if got:
                n = got[0][0]
                if len(got) != 1 + n % cap or any(f != n or (w != n).any() for f, w in got):
                    torn.append((n, len(got)))
    finally:
        stop.set()
        t.join()
        sys.setswitchinterval(old)
    assert reads > 20 and not torn


def _child_check(ch: WeightChannel, cap: int, d: int, q) -> None:  # a forked worker
    seen, reads, torn = -1, 0, 0
    until = time.monotonic() + 1.0
    while time.monotonic() < until:
        got, seen = ch.read_tail(seen)
        if got:
            reads += 1
            n = got[0][0]
            if len(got) != 1 + n % cap or any(f != n or (w != n).any() for f, w in got):
                torn += 1
    q.put((reads, torn))


def test_seqlock_across_processes():
    """A worker process reading while the trainer's process writes (truly in parallel, no
    GIL between them) never sees a torn tail."""
    d, cap = 3, 48
    ch = WeightChannel(d, capacity=cap)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_check, args=(ch, cap, d, q))
    p.start()
    n = 0
    while p.is_alive() and n < 10**7:
        n += 1
        ch.write_tail([(n, np.full(d, float(n)))] * (1 + n % cap))
    p.join(30)
    reads, torn = q.get(timeout=10)
    assert reads > 10 and torn == 0


def _child_read(ch: WeightChannel, q) -> None:  # a forked worker
    got, v = ch.read_tail(-1)
    start = ch.read_start()
    q.put((v, [(f, w.tolist()) for f, w in got or []], start[0], mix_state(start[1])))


def test_a_forked_worker_sees_the_trainers_writes():
    ch = WeightChannel(2, capacity=4)
    geo = [WindowGeometry(np.array([10, 10]), 10, seed=0, domain=i, shuffle=False) for i in range(2)]
    book = ClaimBook(geo, 2)
    ch.allocate_start(book.num_slots, book.queue_depth)
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    # written after the channel exists but before the worker starts: shared memory, not a copy
    mix = MixCheckpoint(64, np.array([40, 24]), 32, np.array([0.6, 0.4]), np.array([20.0, 12.0]),
                        np.array([19.5, 12.5]))
    ch.write_start(8, mix, book)
    ch.write_tail([(72, np.array([0.1, 0.9]))])
    p = ctx.Process(target=_child_read, args=(ch, q))
    p.start()
    p.join(30)
    assert p.exitcode == 0
    v, tail, start, mixj = q.get(timeout=10)
    assert (v, tail, start) == (2, [(72, [0.1, 0.9])], 8)
    assert mixj == mix_state(mix)


@FAST
@given(d=st.integers(1, 4), slots=st.integers(1, 4), depth=st.integers(1, 3),
       start=st.integers(0, 10**6), data=st.data())
def test_start_checkpoint_round_trip(d, slots, depth, start, data):
    ints = st.integers(-1, 10**6)
    fl = st.floats(-1e6, 1e6, allow_nan=False)
    mix = MixCheckpoint(data.draw(ints), np.asarray(data.draw(st.lists(ints, min_size=d, max_size=d))),
                        data.draw(ints), *(np.asarray(data.draw(st.lists(fl, min_size=d, max_size=d)))
                                           for _ in range(3)))
    geo = [WindowGeometry(np.array([7, 9]), 8, seed=1, domain=i, shuffle=True) for i in range(d)]
    arrays = {
        "claimed": np.asarray(data.draw(st.lists(ints, min_size=d, max_size=d))),
        "held": np.asarray(data.draw(st.lists(ints, min_size=slots * d, max_size=slots * d))),
        "offset": np.arange(slots * d), "end": np.arange(slots * d) * 3,
        "queue": np.asarray(data.draw(st.lists(ints, min_size=slots * d * depth * 3,
                                               max_size=slots * d * depth * 3))),
    }
    book = ClaimBook(geo, slots, arrays, queue_depth=depth)
    ch = WeightChannel(d, capacity=2)
    ch.allocate_start(slots, depth)
    ch.write_start(start, mix, book)
    got_start, got_mix, got_arrays = ch.read_start()
    assert got_start == start
    assert mix_state(got_mix) == mix_state(mix)
    for name, arr in book.arrays().items():
        assert np.array_equal(got_arrays[name], arr), name
    assert ClaimBook(geo, slots, got_arrays).arrays().keys() == book.arrays().keys()


def test_start_checkpoint_refuses_another_topology():
    geo = [WindowGeometry(np.array([4]), 4, seed=0, domain=0, shuffle=False)]
    ch = WeightChannel(1, capacity=2)
    ch.allocate_start(2, 1)
    with pytest.raises(ValueError, match=r"3 readers x queue 1, channel has 2 x 1"):
        ch.write_start(0, MixCheckpoint.initial(np.array([1.0])), ClaimBook(geo, 3))


def test_growing_a_frozen_channel_is_an_error_naming_the_fix():
    ch = WeightChannel(2, capacity=4)
    ch.allocate_start(2, 1)
    ch.frozen = True
    ch.ensure_capacity(3)  # within capacity: nothing to grow
    ch.allocate_start(2, 1)  # same shape: nothing to grow
    with pytest.raises(ChannelReallocatedError, match="weight buffer.*new MixLoader"):
        ch.ensure_capacity(5)
    with pytest.raises(ChannelReallocatedError, match="start checkpoint.*new MixLoader"):
        ch.allocate_start(3, 1)
    ch.frozen = False
    ch.ensure_capacity(5)
    assert ch.capacity == 5
    ch.write_tail([(i, np.array([0.5, 0.5])) for i in range(5)])


# -- the tail as the stream writes it ---------------------------------------------------------
def _bound(tiny, workers: int = 2, **kw) -> MixStream:
    s = MixStream(tiny, seed=1, shuffle_window=32, mix_block=16, **kw)
    s.bind(4, workers, prefetch_factor=2)  # no iteration: only the trainer side
    return s


def test_tail_floor_keeps_what_a_lagging_reader_needs_and_never_drops(tiny):
    """The tail holds every entry from ``readers`` batches behind the trainer on (a reader
    may have started its latest batch that far back), and its floor never goes down."""
    s = _bound(tiny, workers=2, max_pending_weight_changes=16)
    per_batch = 4
    floor_before = 0
    for step in range(1, 30):
        s.consumed_batches = step
        s.set_weights([step % 3 + 1, 1, 1])
        tail, _ = s._plan.channel.read_tail(-1)
        assert tail is not None
        firsts = [f for f, _ in tail]
        assert firsts == sorted(set(firsts))  # one entry per sample, in order
        floor = max(1, (step - 2) * per_batch)  # entry 0 is in the start checkpoint
        log = [f for f, _ in s.weight_log]
        assert set(firsts) >= {f for f in log if f >= floor}  # nothing a reader needs is missing
        assert min(firsts) >= floor_before  # monotonic
        floor_before = min(firsts)
        assert len(tail) <= 2 + s.prefetch_depth + 1  # readers + prefetch depth + the new entry


def test_many_changes_between_reads_do_not_overflow(tiny):
    """Changes made step after step stay bounded in the tail whatever their number."""
    s = _bound(tiny, workers=2, max_pending_weight_changes=8)
    for step in range(200):
        s.consumed_batches = step
        s.set_weights([1 + step % 2, 1, 2])
    assert len(s._plan.channel.read_tail(-1)[0] or []) <= 8


def test_scheduling_too_many_changes_ahead_is_refused_whole(tiny):
    s = _bound(tiny, workers=1, max_pending_weight_changes=4)
    for b in range(3, 7):  # four changes ahead: the tail is full
        s.set_weights([1, 1, b], from_batch=b)
    before = s.weight_log
    with pytest.raises(WeightChannelOverflow, match="5 weight changes.*max_pending_weight_changes"):
        s.set_weights([1, 2, 3], from_batch=7)
    assert s.weight_log == before  # the refused change is nowhere
    assert len(s._plan.channel.read_tail(-1)[0] or []) == 4
    s.set_weights([3, 2, 1], from_batch=6)  # replacing the last one still fits
    assert s.weight_log[-1] == (6 * 4, {"a": 0.5, "b": 1 / 3, "c": 1 / 6})


# -- de-duplication of tail entries in a reader -----------------------------------------------
def _take_entries(walker: Walker, tail: list, seen: dict) -> None:
    from mixstream.reading import _take_entries as take  # private: imported where it is tested

    take(walker, tail, seen)


def _walker(d: int = 2) -> Walker:
    geo = [WindowGeometry(np.array([64]), 64, seed=0, domain=i, shuffle=False) for i in range(d)]
    return Walker(seed=0, block=8, topology=SlotLayout(4, 1, 1), claims=ClaimBook(geo, 1),
                  mix=MixCheckpoint.initial(np.full(d, 1 / d)), pending=[], next_batch=0)


def test_a_reader_takes_each_entry_once_and_a_replacement_again():
    a, b = np.array([0.9, 0.1]), np.array([0.1, 0.9])
    w = _walker()
    seen: dict[int, np.ndarray] = {}
    _take_entries(w, [(8, a)], seen)
    for g in range(3):
        w.own(g)  # produced samples [0, 12): re-adding the entry at 8 would be a late change
    _take_entries(w, [(8, a), (16, b)], seen)  # the whole tail again: 8 is skipped
    _take_entries(w, [(16, a)], seen)  # replaced before it was produced: taken again
    assert 8 not in seen  # entries below the tail's first are forgotten (the tail moved on)
    assert np.array_equal(seen[16], a)
    ref = _walker()
    ref.cursor.add_entry(8, a)
    ref.cursor.add_entry(16, a)
    assert [w.own(g)[0].tolist() for g in range(3, 8)] == \
        [ref.own(g)[0].tolist() for g in range(3, 8)]


def test_dedup_makes_a_reader_walk_like_the_trainer():
    """A reader that re-reads the whole tail before every batch walks exactly the domains of a
    walker given each entry once."""
    changes = [(8, np.array([0.2, 0.8])), (20, np.array([0.7, 0.3])), (36, np.array([0.5, 0.5]))]
    ref = _walker()
    for f, w in changes:
        ref.cursor.add_entry(f, w)
    want = [ref.own(g)[0].tolist() for g in range(14)]
    r = _walker()
    seen: dict[int, np.ndarray] = {0: np.array([0.5, 0.5])}
    got = []
    for g in range(14):
        _take_entries(r, [e for e in changes if e[0] >= max(0, g - 2) * 4], seen)
        got.append(r.own(g)[0].tolist())
    assert got == want


def test_a_change_placed_before_a_scheduled_one_reaches_the_reader():
    """The trainer schedules a change far ahead, then places one before it: the reader, which
    already took the far one, takes the near one too and walks as the trainer does."""
    far, near = (40, np.array([0.1, 0.9])), (20, np.array([0.8, 0.2]))
    visible = {0: [far], 3: [near, far]}  # the tail a reader sees before batch g
    ref = _walker()
    for f, w in (near, far):
        ref.cursor.add_entry(f, w)
    want = [ref.own(g)[0].tolist() for g in range(14)]
    r = _walker()
    seen: dict[int, np.ndarray] = {0: np.array([0.5, 0.5])}
    got, tail = [], []
    for g in range(14):
        tail = visible.get(g, tail)
        _take_entries(r, tail, seen)
        got.append(r.own(g)[0].tolist())
    assert got == want
