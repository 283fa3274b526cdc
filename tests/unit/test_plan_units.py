"""Plan components beyond tests/test_plan.py: the claim-book layout and fast paths, state
validation of each component, re-basing targets, and window geometry (plain and grown)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.plan.claims import LAYOUT, ClaimBook, layout_shapes
from mixstream.plan.mixture import MixCheckpoint, MixCursor, rebase
from mixstream.plan.order import GrownGeometry, WindowGeometry, build_geometry
from mixstream.plan.weights import WeightLog

FAST = settings(max_examples=30, deadline=None)


def geometry(d: int = 3, window: int = 5) -> list:
    sizes = [[7, 9, 5], [16, 4], [3, 3, 3, 3]]
    return [WindowGeometry(np.array(sizes[i % 3]), window, seed=5, domain=i, shuffle=True)
            for i in range(d)]


# -- claim book ------------------------------------------------------------------------------
def test_layout_shapes_follow_the_declaration():
    shapes = layout_shapes(3, 4, 2)
    assert list(shapes) == [name for name, _ in LAYOUT]
    assert shapes == {"claimed": (3,), "held": (4, 3), "offset": (4, 3), "end": (4, 3),
                      "queue": (4, 3, 2, 3)}


@FAST
@given(slots=st.integers(1, 4), batches=st.lists(
    st.tuples(st.integers(0, 3), st.lists(st.integers(0, 6), min_size=3, max_size=3)),
    min_size=1, max_size=40))
def test_serve_batch_and_count_agree_with_serving_domain_by_domain(slots, batches):
    """The fast paths (whole batch in range) book exactly what serve() books."""
    fast, slow, counted = (ClaimBook(geometry(), slots) for _ in range(3))
    for slot, per in batches:
        slot %= slots
        per = np.asarray(per)
        got = fast.serve_batch(slot, per)
        want = [(d, slow.serve(slot, d, int(per[d]))) for d in np.flatnonzero(per)]
        assert got == want
        counted.count(slot, per)
    for name, arr in slow.arrays().items():
        assert np.array_equal(fast.arrays()[name], arr), name
        assert np.array_equal(counted.arrays()[name], arr), name
    assert fast.served().tolist() == np.sum([p for _, p in batches], axis=0).tolist()


@FAST
@given(slots=st.integers(1, 4), n=st.integers(0, 30))
def test_claim_state_round_trip_and_validation(slots, n):
    book = ClaimBook(geometry(), slots)
    rng = np.random.default_rng(n)
    for _ in range(n):
        book.serve_batch(int(rng.integers(slots)), rng.integers(0, 4, 3))
    state = book.get_state()
    again = ClaimBook(geometry(), slots, ClaimBook.parse_state(state, 3, slots))
    assert again.get_state() == state
    assert again.served().tolist() == book.served().tolist()


@pytest.mark.parametrize(("edit", "match"), [
    (lambda s: s.update(held=s["held"][:-1]), "claims.held"),
    (lambda s: s.update(claimed=[1, 2]), "claims.claimed"),
    (lambda s: s.update(offset="x"), "claims.offset"),
    (lambda s: s.pop("end"), "claims.end"),
])
def test_a_malformed_claim_state_names_its_key(edit, match):
    state = ClaimBook(geometry(), 2).get_state()
    edit(state)
    with pytest.raises(ValueError, match=match):
        ClaimBook.parse_state(state, 3, 2)


def test_remap_keeps_every_open_range_and_the_counters():
    book = ClaimBook(geometry(), 3)
    rng = np.random.default_rng(0)
    for t in range(25):
        book.serve_batch(t % 3, rng.integers(0, 4, 3))
    for slots in (1, 2, 5):
        moved = book.remap(slots)
        assert moved.num_slots == slots
        assert moved.claimed.tolist() == book.claimed.tolist()
        assert moved.served().tolist() == book.served().tolist()
        assert [sorted(r) for r in moved.open_ranges()] == [sorted(r) for r in book.open_ranges()]


# -- mixture checkpoint and weight log: validation of untrusted state --------------------------
def test_mix_checkpoint_state_round_trip():
    cur = MixCursor(1, 8, MixCheckpoint.initial(np.array([0.5, 0.25, 0.25])),
                    [(12, np.array([0.0, 0.5, 0.5]))])
    cur.domains(0, 30)
    ck = cur.checkpoint()
    back = MixCheckpoint.from_state(ck.get_state(), 3)
    assert back.get_state() == ck.get_state()


@pytest.mark.parametrize(("edit", "match"), [
    (lambda s: s.pop("counts"), "'mix' is malformed"),
    (lambda s: s.update(counts=[1, 2]), "mix.counts must be 3 finite"),
    (lambda s: s.update(entry_weights=[0.5, float("nan"), 0.5]), "mix.entry_weights must be 3"),
    (lambda s: s.update(counts=[100, 0, 0]), "inconsistent"),
    (lambda s: s.update(chunk_start="eight"), "'mix' is malformed"),
])
def test_a_malformed_mix_state_is_refused(edit, match):
    cur = MixCursor(1, 8, MixCheckpoint.initial(np.array([0.5, 0.25, 0.25])))
    cur.domains(0, 16)
    state = cur.checkpoint().get_state()
    edit(state)
    with pytest.raises(ValueError, match=match):
        MixCheckpoint.from_state(state, 3)


def test_weight_log_state_round_trip_keeps_the_digest_input():
    log = WeightLog(np.array([0.5, 0.5]))
    log.add(8, np.array([0.2, 0.8]))
    log.add(8, np.array([0.3, 0.7]))  # same index: replaces
    log.add(20, np.array([1.0, 0.0]))
    back = WeightLog.from_state(log.get_state(), 2, digest=log.digest)
    assert back.get_state() == log.get_state() == [[0, [0.5, 0.5]], [8, [0.3, 0.7]],
                                                   [20, [1.0, 0.0]]]
    assert [f for f, _ in back.after(8)] == [20]
    other = WeightLog(np.array([0.5, 0.5]))
    other.add(8, np.array([0.3, 0.7]))
    other.add(20, np.array([1.0, 0.0]))
    assert other.digest != log.digest  # the digest covers replaced entries too


@pytest.mark.parametrize(("state", "match"), [
    ([], "empty"),
    ([[0, [0.5, 0.5]], [10, [0.5, 0.5]], [5, [1.0, 0.0]]], r"weight_log\[2\] starts at 5"),
    ([[0, [0.5, 0.5]], [True, [0.5, 0.5]]], r"weight_log\[1\]"),
    ([[0, [0.5]]], r"weight_log\[0\]' must be 2 finite"),
    ([[0, [-0.5, 1.5]]], r"weight_log\[0\] has invalid weights"),
    ([[0, [0.0, 0.0]]], r"weight_log\[0\] has invalid weights"),
    ([[0, 0.5, 0.5]], r"weight_log\[0\] is not \[from_sample, weights\]"),
])
def test_a_malformed_weight_log_state_is_refused(state, match):
    with pytest.raises(ValueError, match=match):
        WeightLog.from_state(state, 2)


def test_compact_keeps_the_entry_in_force():
    log = WeightLog(np.array([0.5, 0.5]))
    for f in (10, 20, 30):
        log.add(f, np.array([0.1 * f / 10, 1 - 0.1 * f / 10]))
    log.compact(25)
    assert [e.from_sample for e in log.entries] == [20, 30]  # 20 is in force at 25


# -- re-basing targets at a weight change ------------------------------------------------------
@FAST
@given(data=st.data(), d=st.integers(2, 6))
def test_rebase_freezes_switched_off_domains_and_keeps_the_total(data, d):
    targets = np.asarray(data.draw(st.lists(st.floats(0, 100), min_size=d, max_size=d)))
    counts = np.floor(targets + np.asarray(data.draw(
        st.lists(st.floats(-1, 1), min_size=d, max_size=d)))).clip(0)
    w = np.asarray(data.draw(st.lists(st.sampled_from([0.0, 0.1, 0.5, 1.0]), min_size=d,
                                      max_size=d)))
    if w.sum() == 0:
        w[0] = 1.0
    out = rebase(targets, counts, w)
    off = w <= 0
    assert np.array_equal(out[off], counts[off])  # a domain switched off gets no more samples
    assert out.sum() == pytest.approx(targets.sum(), abs=1e-9)  # nothing lost or created
    gained = out[~off] - targets[~off]
    assert np.allclose(gained, gained.sum() * w[~off] / w[~off].sum())  # in proportion


@FAST
@given(data=st.data(), block=st.sampled_from([1, 7, 16]))
def test_entries_not_reached_yet_may_come_in_any_order(data, block):
    """A change placed before one scheduled further ahead: the sequence is the one the same
    entries give in order of their sample (and the weight log keeps that order too)."""
    points = data.draw(st.lists(st.integers(0, 120), min_size=1, max_size=6, unique=True))
    entries = [(f, np.random.default_rng(f).dirichlet(np.ones(3))) for f in points]
    shuffled = data.draw(st.permutations(entries))
    start = MixCheckpoint.initial(np.array([0.2, 0.3, 0.5]))
    ordered = MixCursor(3, block, start, sorted(entries, key=lambda e: e[0]))
    cur = MixCursor(3, block, start)
    log = WeightLog(np.array([0.2, 0.3, 0.5]))
    for f, w in shuffled:
        cur.add_entry(f, w)
        log.add(f, w)
    assert cur.domains(0, 150).tolist() == ordered.domains(0, 150).tolist()
    assert [e.from_sample for e in log.entries] == sorted({0, *points})


def test_targets_at_follow_the_weights():
    cur = MixCursor(0, 10, MixCheckpoint.initial(np.array([0.5, 0.5])),
                    [(20, np.array([1.0, 0.0]))])
    assert cur.targets_at(10).tolist() == [5.0, 5.0]
    at20 = cur.counts_at(20)
    t = cur.targets_at(40)
    assert t[1] == pytest.approx(at20[1])  # b frozen at its realised count
    assert t.sum() == pytest.approx(40)


# -- window geometry ---------------------------------------------------------------------------
def rows_of(geo, w: int) -> list[tuple[int, int]]:
    return [(s.block, r) for s in geo.spans(w) for r in range(s.start, s.stop)]


@FAST
@given(sizes=st.lists(st.integers(1, 25), min_size=1, max_size=8), window=st.integers(1, 30),
       shuffle=st.booleans(), epoch=st.integers(0, 3))
def test_windows_of_an_epoch_cover_every_row_once(sizes, window, shuffle, epoch):
    geo = WindowGeometry(np.array(sizes), window, seed=1, domain=2, shuffle=shuffle)
    first = geo.first_window(epoch)
    windows = range(first, first + geo.per_epoch)
    rows = [r for w in windows for r in rows_of(geo, w)]
    assert sorted(rows) == [(b, r) for b, n in enumerate(sizes) for r in range(n)]
    assert all(geo.epoch_of(w) == epoch for w in windows)
    assert [geo.size(w) for w in windows] == [len(rows_of(geo, w)) for w in windows]
    for w in windows:
        assert geo.served_before(w + 1) - geo.served_before(w) == geo.size(w)
    assert geo.served_before(first) == epoch * geo.epoch_size == epoch * sum(sizes)


def test_block_order_is_reshuffled_every_epoch_and_kept_without_shuffle():
    sizes = np.full(12, 4)
    geo = WindowGeometry(sizes, 4, seed=1, domain=0, shuffle=True)
    orders = [[geo.spans(w)[0].block for w in range(e * 12, (e + 1) * 12)] for e in range(3)]
    assert len({tuple(o) for o in orders}) == 3
    plain = WindowGeometry(sizes, 4, seed=1, domain=0, shuffle=False)
    assert [plain.spans(w)[0].block for w in range(12, 24)] == list(range(12))


def test_a_grown_domain_switches_to_its_new_blocks_at_an_epoch():
    sizes = np.array([6, 6, 6, 6, 6])
    geo = build_geometry(sizes, [(0, 3, 6), (2, 5, 6)], seed=1, domain=0, shuffle=True)
    assert isinstance(geo, GrownGeometry)
    old = geo.first_window(2)
    assert old == 2 * 3  # two epochs of the three old blocks
    for e, nblocks in ((0, 3), (1, 3), (2, 5), (3, 5)):
        first, nxt = geo.first_window(e), geo.first_window(e + 1)
        blocks = sorted(s.block for w in range(first, nxt) for s in geo.spans(w))
        assert blocks == list(range(nblocks)), e
        assert all(geo.epoch_of(w) == e for w in range(first, nxt))
    assert geo.served_before(geo.first_window(3)) == 2 * 18 + 30
    assert geo.served_before(old) == 2 * 18
