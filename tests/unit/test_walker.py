"""SlotLayout and Walker: who owns which global batch, and walking the plan by rounds."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.plan.claims import ClaimBook
from mixstream.plan.mixture import MixCheckpoint, MixCursor
from mixstream.plan.order import WindowGeometry
from mixstream.walker import SlotLayout, StreamEnd, Walker

FAST = settings(max_examples=30, deadline=None)
SIZES = [[10, 7, 12], [5, 5], [9]]  # per domain: block sizes (small: epochs wrap quickly)


def geometry(window: int = 6) -> list:
    return [WindowGeometry(np.array(s), window, seed=3, domain=i, shuffle=True)
            for i, s in enumerate(SIZES)]


def walker(topo: SlotLayout, *, next_batch: int = 0, limit=None, book=None, mix=None,
           pending=(), weights=(0.5, 0.3, 0.2)) -> Walker:
    mix = mix or MixCheckpoint.initial(np.asarray(weights, np.float64))
    return Walker(seed=1, block=8, topology=topo, claims=book or ClaimBook(geometry(),
                                                                           topo.num_slots),
                  mix=mix, pending=list(pending), next_batch=next_batch, limit=limit)


topologies = st.builds(SlotLayout, batch_size=st.integers(1, 6), world_size=st.integers(1, 3),
                       num_workers=st.integers(0, 3))


@FAST
@given(topo=topologies, n=st.integers(1, 60))
def test_slot_of_matches_rank_and_worker(topo, n):
    g = np.arange(n)
    slots = topo.slot_of(g)
    assert np.array_equal(slots, [topo.slot_of(int(x)) for x in g])  # vectorised == scalar
    assert ((0 <= slots) & (slots < topo.num_slots)).all()
    for rank in range(topo.world_size):
        for t in range(n):
            gb = topo.global_batch(rank, t)
            assert gb % topo.world_size == rank  # rank r owns every world-th batch
            assert topo.slot_of(gb) == rank * topo.num_workers + t % topo.num_workers
    # every slot serves one batch in each num_slots consecutive batches (round-robin)
    if n >= topo.num_slots:
        assert sorted(slots[: topo.num_slots].tolist()) == list(range(topo.num_slots))


def test_num_workers_zero_is_one_reader():
    assert SlotLayout(4, 2, 0).num_workers == 1 and SlotLayout(4, 2, 0).num_slots == 2


def walk(w: Walker, stop: int) -> list:
    return [(dom.tolist(), served) for dom, served in (w.own(g) for g in range(w.next_batch, stop))]


@FAST
@given(topo=topologies, cut=st.integers(0, 30), more=st.integers(1, 20), data=st.data())
def test_skip_to_then_own_equals_a_fresh_walk(topo, cut, more, data):
    """Skipping ``cut`` batches (counts only, bulk path or not) leaves the claim book and the
    counts where owning them one by one does; what follows is identical."""
    # any batch: a reader skips to its own next batch, which may be mid-round
    limited = data.draw(st.booleans())  # a limit forces the batch-by-batch path
    limit = np.full(3, 10**9) if limited else None
    ref = walker(topo, limit=limit)
    walk(ref, cut)
    w = walker(topo, limit=limit)
    w.skip_to(cut)
    for name, arr in ref.claims.arrays().items():
        assert np.array_equal(w.claims.arrays()[name], arr), name
    assert np.array_equal(w.seen, ref.seen) and w.next_batch == ref.next_batch == cut
    assert walk(w, cut + more) == walk(ref, cut + more)


@FAST
@given(topo=topologies, data=st.data())
def test_a_reader_owning_only_its_batches_reads_what_the_full_walk_assigns(topo, data):
    """Reader ``j`` of rank ``r`` owns batches ``t = j (mod N)`` and skips the rest; its domains
    and window pieces are those the full walk (every batch of every slot) gives them."""
    rank = data.draw(st.integers(0, topo.world_size - 1))
    j = data.draw(st.integers(0, topo.num_workers - 1))
    full = walker(topo)
    n = 8 * topo.num_slots
    want = {g: (dom.tolist(), served) for g in range(n)
            for dom, served in [full.own(g)]}
    reader = walker(topo)
    for t in range(j, n // topo.world_size, topo.num_workers):
        g = topo.global_batch(rank, t)
        dom, served = reader.own(g)
        assert (dom.tolist(), served) == want[g], g


@FAST
@given(topo=topologies, start=st.integers(0, 10), n=st.integers(1, 30))
def test_a_walker_started_from_a_checkpoint_walks_on_identically(topo, start, n):
    """A walker rebuilt from (mixture checkpoint, claim book) at a round start, as a reader is
    from the channel's start checkpoint, produces what the uninterrupted walker produces."""
    g0 = start * topo.world_size
    ref = walker(topo)
    walk(ref, g0)
    book = ClaimBook(geometry(), topo.num_slots,
                     {k: v.copy() for k, v in ref.claims.arrays().items()})
    w = walker(topo, next_batch=g0, book=book, mix=ref.cursor.checkpoint())
    assert np.array_equal(w.seen, ref.seen)
    assert walk(w, g0 + n) == walk(ref, g0 + n)


def test_domains_follow_the_mixture_sequence_and_pieces_add_up():
    topo = SlotLayout(5, 2, 2)
    w = walker(topo)
    cursor = MixCursor(1, 8, MixCheckpoint.initial(np.array([0.5, 0.3, 0.2])))
    for g in range(40):
        dom, served = w.own(g)
        assert dom.tolist() == cursor.domains(g * 5, (g + 1) * 5).tolist()
        per = np.bincount(dom, minlength=3)
        assert {d: sum(k for _, _, k in pieces) for d, pieces in served} == \
            {d: int(per[d]) for d in np.flatnonzero(per)}


def test_a_round_must_be_started_at_its_first_batch():
    w = walker(SlotLayout(4, 2, 1), next_batch=1)  # a walker must start at a round
    with pytest.raises(RuntimeError, match="middle of an unwalked round"):
        w.own(1)


def test_weight_entries_apply_from_their_sample():
    topo = SlotLayout(4, 1, 1)
    w = walker(topo, pending=[(8, np.array([0.0, 0.0, 1.0]))])
    doms = [w.own(g)[0].tolist() for g in range(4)]
    assert all(d == [2] * 4 for d in doms[2:])  # from sample 8 on: only domain 2
    assert doms[:2] != [[2] * 4] * 2


@pytest.mark.parametrize("world", [1, 2, 3])
def test_stop_mode_ends_before_the_first_round_beyond_an_epoch(world):
    """Every rank ends at the same round; no domain beyond its first epoch; the round that ends
    the stream would have needed one more sample than some domain has."""
    topo = SlotLayout(4, world, 2)
    limit = np.array([sum(s) for s in SIZES])
    ends = []
    for rank in range(world):
        w = walker(topo, limit=limit)
        t = 0
        with pytest.raises(StreamEnd):
            while True:
                w.own(topo.global_batch(rank, t))
                t += 1
        ends.append(t)
        assert (w.seen <= limit).all()
    assert len(set(ends)) == 1  # ranks stop together: one stopping early hangs DDP
    r = ends[0]
    step = world * 4

    def counts(n: int) -> np.ndarray:
        cursor = MixCursor(1, 8, MixCheckpoint.initial(np.array([0.5, 0.3, 0.2])))
        return np.bincount(cursor.domains(0, n), minlength=3)

    within, beyond = counts(r * step), counts((r + 1) * step)
    assert (within <= limit).all() and (beyond > limit).any()
