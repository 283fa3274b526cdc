"""Properties of the pure plan: mixture sequence, weight log, window claims."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.plan.claims import ClaimBook
from mixstream.plan.mixture import (
    LateWeightChangeError,
    MixCheckpoint,
    MixCursor,
    apportion,
)
from mixstream.plan.order import WindowGeometry
from mixstream.plan.weights import WeightLog, normalize_weights

weights_st = st.lists(st.floats(0.0, 1.0), min_size=2, max_size=8).filter(lambda w: sum(w) > 0.05)


def sequence(weights, changes, n, block, seed=0):
    cur = MixCursor(seed, block, MixCheckpoint.initial(normalize_weights(weights, "abcdefgh"[: len(weights)])))
    out, pos = [], 0
    for f, w in sorted(changes) + [(n, None)]:
        out.append(cur.domains(pos, f))
        pos = f
        if w is not None:
            cur.add_entry(f, normalize_weights(w, "abcdefgh"[: len(weights)]))
    return np.concatenate(out)


def targets(weights, changes, n):
    d = len(weights)
    w = np.zeros((n, d))
    points = [(0, weights)] + sorted(changes)
    for i, (f, ws) in enumerate(points):
        end = points[i + 1][0] if i + 1 < len(points) else n
        w[f:end] = np.asarray(ws) / np.sum(ws)
    return np.vstack([np.zeros(d), np.cumsum(w, 0)])


def prefix_error(seq, weights, changes):
    n, d = len(seq), len(weights)
    counts = np.vstack([np.zeros(d), np.cumsum(np.eye(d)[seq], 0)])
    return counts - targets(weights, changes, n)


@settings(max_examples=60, deadline=None)
@given(weights=weights_st, block=st.sampled_from([1, 5, 64, 1024]),
       data=st.data())
def test_counts_track_targets_within_stated_bound(weights, block, data):
    """Stated bound: every prefix is within 1 + D/4 samples of its target per domain, so every
    window of any length is within 2 * (1 + D/4) of weight x window; zero weights get nothing."""
    d = len(weights)
    n = 3000
    points = data.draw(st.lists(st.integers(1, n - 1), max_size=5, unique=True))
    changes = [(f, data.draw(weights_st.filter(lambda w, d=d: len(w) == d) | st.just(weights)))
               for f in points]
    changes = [(f, w if len(w) == d else weights) for f, w in changes]
    seq = sequence(weights, changes, n, block)
    err = prefix_error(seq, weights, changes)
    assert np.abs(err).max() < 1 + d / 4
    points_all = [(0, weights)] + sorted(changes)
    for i, (f, w) in enumerate(points_all):
        end = points_all[i + 1][0] if i + 1 < len(points_all) else n
        zero = np.flatnonzero(np.asarray(w) == 0)
        assert not np.isin(seq[f:end], zero).any()


def test_benchmark_mixture_is_within_one_sample():
    seq = sequence([0.4, 0.3, 0.2, 0.1], [], 20_000, 1024)
    err = prefix_error(seq, [0.4, 0.3, 0.2, 0.1], [])
    assert np.abs(err).max() <= 0.6 + 1e-6
    # i.i.d. draws drift like sqrt(n); here the share error over 1k and 10k samples is tiny
    assert abs((seq[:1000] == 0).mean() - 0.4) <= 0.001
    assert abs((seq[:10000] == 0).mean() - 0.4) <= 0.0001


@settings(max_examples=40, deadline=None)
@given(weights=weights_st, cut=st.integers(1, 2999), block=st.sampled_from([7, 64, 1024]),
       seed=st.integers(0, 2**31))
def test_appending_an_entry_never_changes_earlier_samples(weights, cut, block, seed):
    d = len(weights)
    base = sequence(weights, [], 3000, block, seed)
    new = list(reversed(weights))
    changed = sequence(weights, [(cut, new)], 3000, block, seed)
    assert (base[:cut] == changed[:cut]).all()
    assert len(changed) == 3000 and changed.max() < d


@settings(max_examples=30, deadline=None)
@given(weights=weights_st, stop=st.integers(0, 2500), block=st.sampled_from([7, 64, 1024]))
def test_resume_from_checkpoint_is_o1_and_exact(weights, stop, block):
    w = normalize_weights(weights, "abcdefgh"[: len(weights)])
    cur = MixCursor(3, block, MixCheckpoint.initial(w))
    head = cur.domains(0, stop)
    ck = MixCheckpoint.from_state(cur.checkpoint().get_state(), len(w))
    rest = MixCursor(3, block, ck, frontier=stop).domains(stop, 3000)
    ref = MixCursor(3, block, MixCheckpoint.initial(w)).domains(0, 3000)
    assert (np.concatenate([head, rest]) == ref).all()


def test_same_index_replacement_matches_single_entry():
    """Two set_weights calls for the same sample keep only the last, whoever saw the first."""
    w0, w1, w2 = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.2, 0.8]), np.array([0.3, 0.0, 0.7])
    a = MixCursor(1, 64, MixCheckpoint.initial(w0))
    a.domains(0, 100)
    a.add_entry(100, w1)
    a.add_entry(100, w2)
    b = MixCursor(1, 64, MixCheckpoint.initial(w0))
    b.domains(0, 100)
    b.add_entry(100, w2)
    assert (a.domains(100, 500) == b.domains(100, 500)).all()


def test_late_entry_raises():
    cur = MixCursor(0, 64, MixCheckpoint.initial(np.array([0.5, 0.5])))
    cur.domains(0, 10)
    with pytest.raises(LateWeightChangeError):
        cur.add_entry(9, np.array([1.0, 0.0]))


@given(delta=st.lists(st.floats(-0.99, 50), min_size=1, max_size=10), data=st.data())
def test_apportion_sums_and_floors(delta, data):
    delta = np.asarray(delta)
    active = np.asarray(data.draw(st.lists(st.booleans(), min_size=len(delta),
                                           max_size=len(delta))))
    if not active.any():
        active[0] = True
    m = data.draw(st.integers(1, 100))
    out = apportion(delta, m, active)
    assert out.sum() == m and (out >= 0).all() and (out[~active] == 0).all()


def test_weight_log_replaces_same_index_keeps_order_and_refuses_the_past():
    log = WeightLog(np.array([1.0, 0.0]))
    log.add(10, np.array([0.5, 0.5]))
    assert log.add(10, np.array([0.2, 0.8])) is True and len(log) == 2
    assert log.add(5, np.array([1.0, 0.0])) is False  # before one scheduled further ahead
    assert [e.from_sample for e in log.entries] == [0, 5, 10]
    with pytest.raises(ValueError, match="back in time"):
        log.add(-1, np.array([1.0, 0.0]))
    assert WeightLog.from_state(log.get_state(), 2).get_state() == log.get_state()


def test_an_entry_added_before_a_scheduled_one_gives_the_same_mixture_as_in_order():
    """The cursor takes entries not reached yet in any order (a change placed at the horizon
    before a change scheduled further ahead): the mixture equals adding them in order."""
    w0, w1, w2 = np.array([0.5, 0.5]), np.array([0.9, 0.1]), np.array([0.1, 0.9])
    a = MixCursor(3, 16, MixCheckpoint.initial(w0))
    a.add_entry(40, w2)
    a.domains(0, 8)
    a.add_entry(20, w1)  # inserted before the scheduled one
    b = MixCursor(3, 16, MixCheckpoint.initial(w0), [(20, w1), (40, w2)])
    assert np.array_equal(a.domains(0, 200), b.domains(0, 200))


def geometry(n_blocks, block, window, seed=0):
    sizes = np.full(n_blocks, block)
    sizes[-1] = max(1, block // 2)
    return WindowGeometry(sizes, window, seed=seed, domain=0, shuffle=True)


@settings(max_examples=80, deadline=None)
@given(n_blocks=st.integers(1, 20), block=st.integers(1, 50), window=st.integers(1, 120),
       slots=st.integers(1, 5), data=st.data())
def test_claims_serve_each_epoch_whole_before_the_next(n_blocks, block, window, slots, data):
    """In serving order, the first N samples are the whole domain, the next N again, ...
    whatever the slots, the window and the domain size (also below one window per slot)."""
    geo = geometry(n_blocks, block, window)
    book = ClaimBook([geo], slots)
    order: list[tuple[int, int]] = []
    total = geo.epoch_size
    while len(order) < 3 * total:
        slot = data.draw(st.integers(0, slots - 1))
        k = data.draw(st.integers(1, 20))
        for wid, off, cnt in book.serve(slot, 0, k):
            rows = [(s.block, r) for s in geo.spans(wid) for r in range(s.start, s.stop)]
            assert off + cnt <= len(rows) == geo.size(wid)
            order.extend(rows[off : off + cnt])
    assert int(book.served()[0]) == len(order)
    everything = sorted(set(order))
    assert len(everything) == total
    for e in range(len(order) // total):
        assert sorted(order[e * total : (e + 1) * total]) == everything


def test_windows_are_whole_blocks_unless_a_block_is_larger():
    geo = WindowGeometry(np.array([64] * 7 + [52]), 128, seed=1, domain=0, shuffle=True)
    assert geo.units_per_window == 2 and geo.per_epoch == 4
    for w in range(8):
        spans = geo.spans(w)
        assert all(s.start == 0 for s in spans) and len({s.block for s in spans}) == len(spans)
    big = WindowGeometry(np.array([1000, 10]), 300, seed=1, domain=0, shuffle=False)
    assert [big.size(w) for w in range(big.per_epoch)] == [250, 250, 250, 250, 10]
