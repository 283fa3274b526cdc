"""PositionTracker: where the stream stands after ``k`` rounds, without reading data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.plan.claims import ClaimBook
from mixstream.plan.mixture import MixCheckpoint, MixCursor
from mixstream.plan.order import WindowGeometry
from mixstream.tracker import PositionTracker
from mixstream.walker import SlotLayout

W0 = np.array([0.6, 0.3, 0.1])


def geometry() -> list:
    return [WindowGeometry(np.array(s), 8, seed=2, domain=i, shuffle=True)
            for i, s in enumerate([[12, 9], [7, 7, 7], [30]])]


def tracker(topo: SlotLayout, pending=()) -> PositionTracker:
    return PositionTracker(seed=5, block=16, topology=topo,
                           claims=ClaimBook(geometry(), topo.num_slots),
                           mix=MixCheckpoint.initial(W0), pending=list(pending))


def snapshot(t: PositionTracker) -> tuple:
    w = t.walker
    ck = w.cursor.checkpoint()
    return (t.batch, t.realised_counts().tolist(),
            ck.get_state() if hasattr(ck, "get_state") else ck.to_json(),
            {k: v.tolist() for k, v in w.claims.arrays().items()})


@settings(max_examples=30, deadline=None)
@given(bsz=st.integers(1, 5), world=st.integers(1, 3), workers=st.integers(0, 3),
       stops=st.lists(st.integers(0, 40), min_size=1, max_size=5))
def test_advance_to_equals_walking_one_round_at_a_time(bsz, world, workers, stops):
    topo = SlotLayout(bsz, world, workers)
    jump, step = tracker(topo), tracker(topo)
    for b in sorted(stops):
        jump.advance_to(b)
        while step.batch < b:
            step.advance_to(step.batch + 1)
        assert snapshot(jump) == snapshot(step)


@settings(max_examples=30, deadline=None)
@given(bsz=st.integers(1, 5), world=st.integers(1, 3), b=st.integers(0, 50),
       change=st.integers(0, 200))
def test_realised_counts_are_the_mixture_prefix(bsz, world, b, change):
    """Counts before round ``b`` = the per-domain counts of the first ``b * world * bsz``
    samples of the mixture sequence (with a weight change scheduled at ``change``)."""
    w1 = np.array([0.0, 0.5, 0.5])
    t = tracker(SlotLayout(bsz, world, 2), pending=[(change, w1)] if change else [])
    t.advance_to(b)
    cursor = MixCursor(5, 16, MixCheckpoint.initial(W0), [(change, w1)] if change else [])
    n = b * world * bsz
    assert t.realised_counts().tolist() == np.bincount(cursor.domains(0, n), minlength=3).tolist()
    # and the claim book served exactly those samples
    assert t.walker.claims.served().tolist() == t.realised_counts().tolist()


def test_add_entry_applies_from_its_sample_and_late_entries_are_refused():
    t = tracker(SlotLayout(4, 1, 1))
    t.advance_to(3)  # samples [0, 12) walked
    t.add_entry(16, np.array([0.0, 0.0, 1.0]))
    before = t.realised_counts()
    t.advance_to(10)
    assert (t.realised_counts() - before)[:2].tolist() == \
        np.bincount(MixCursor(5, 16, MixCheckpoint.initial(W0)).domains(12, 16),
                    minlength=3)[:2].tolist()  # only the 4 samples before 16 may be a or b
    with pytest.raises(Exception, match="weight change for sample 20 arrived after"):
        t.add_entry(20, np.array([1.0, 0.0, 0.0]))


def test_the_position_cannot_go_back():
    t = tracker(SlotLayout(2, 1, 0))
    t.advance_to(5)
    t.advance_to(5)  # staying is fine
    with pytest.raises(ValueError, match="cannot go back from batch 5 to 4; load a checkpoint"):
        t.advance_to(4)
