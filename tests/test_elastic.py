"""Elastic resume: a checkpoint taken with W ranks x N workers resumes with other values.

Ranks are simulated in one process with explicit ``rank=`` / ``world_size=`` (each rank's
stream walks the same global plan); tests/test_distributed.py covers real process groups.
"""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream import MixLoader, MixStream
from mixstream.plan.claims import ClaimBook
from mixstream.plan.mixture import MixCheckpoint, MixCursor
from mixstream.plan.order import WindowGeometry

W0 = {"a": 0.5, "b": 0.3, "c": 0.2}


def run_topology(paths, world, workers, batch, rounds, state=None, change=None):
    """Run ``rounds`` steps on every simulated rank; returns rows and rank 0's final state."""
    streams, iters = [], []
    for rank in range(world):
        s = MixStream(paths, weights=W0, seed=9, shuffle_window=40, rank=rank, world_size=world)
        loader = MixLoader(s, batch_size=batch, num_workers=workers)
        if state is not None:
            s.load_state_dict(state)
        streams.append(s)
        iters.append(iter(loader))
    rows = []
    for step in range(rounds):
        for it in iters:
            b = next(it)
            rows.append((b["index"].numpy(), b["domain"].numpy(), b["id"].numpy()))
        if change is not None and step == change[0]:
            for s in streams:
                s.set_weights(change[1])
    return rows, json.loads(json.dumps(streams[0].state_dict()))


def test_resume_across_topologies_keeps_mixture_and_loses_nothing(corpus):
    paths = corpus["native"]
    rows1, s1 = run_topology(paths, 2, 2, 8, 6, change=(2, {"a": 0.2, "b": 0.2, "c": 0.6}))
    rows2, s2 = run_topology(paths, 4, 1, 4, 7, state=s1)        # 2x2 -> 4x1, same global batch 16
    rows3, s3 = run_topology(paths, 1, 3, 16, 5, state=s2,       # 4x1 -> 1x3
                             change=(1, {"a": 0.0, "b": 0.5, "c": 0.5}))
    rows = rows1 + rows2 + rows3
    index = np.concatenate([r[0] for r in rows])
    dom = np.concatenate([r[1] for r in rows])
    ids = np.concatenate([r[2] for r in rows])
    order = np.argsort(index)
    total = 16 * (6 + 7 + 5)
    assert (index[order] == np.arange(total)).all()
    # the global mixture continues exactly, weight changes before and after the moves included
    log = s3["weight_log"]  # retained: the entry in force at the checkpoint's chunk, then later
    assert [f for f, _ in log] == [112, 336]
    cur = MixCursor(9, 1024, MixCheckpoint.initial(np.array(list(W0.values()))))
    for f, w in log:
        cur.add_entry(f, np.array(w))
    assert (dom[order] == cur.domains(0, total)).all()
    # fewer samples than any domain holds: within the first epoch nothing repeats
    assert len(np.unique(ids)) == len(ids)
    assert (ids // 1_000_000 == dom).all()


def test_same_topology_resume_is_exact_with_simulated_ranks(corpus):
    paths = corpus["native"]
    full, _ = run_topology(paths, 2, 1, 8, 10)
    head, state = run_topology(paths, 2, 1, 8, 4)
    tail, _ = run_topology(paths, 2, 1, 8, 6, state=state)
    for a, b in zip(full, head + tail):
        assert all((x == y).all() for x, y in zip(a, b))


@settings(max_examples=40, deadline=None)
@given(n_blocks=st.integers(1, 12), block=st.integers(1, 30), window=st.integers(1, 60),
       before=st.integers(1, 6), after=st.integers(1, 6), data=st.data())
def test_remap_hands_over_every_open_window(n_blocks, block, window, before, after, data):
    geo = WindowGeometry(np.full(n_blocks, block), window, seed=0, domain=0, shuffle=True)
    book = ClaimBook([geo], before)
    seen: list[tuple[int, int]] = []

    def serve(b, slots, steps):
        for _ in range(steps):
            slot = data.draw(st.integers(0, slots - 1))
            for wid, off, k in b.serve(slot, 0, data.draw(st.integers(1, 9))):
                rows = [(s.block, r) for s in geo.spans(wid) for r in range(s.start, s.stop)]
                seen.extend(rows[off : off + k])

    serve(book, before, data.draw(st.integers(0, 30)))
    moved = book.remap(after)
    assert int(moved.served()[0]) == len(seen)  # nothing lost, nothing served twice
    serve(moved, after, data.draw(st.integers(0, 30)))
    n = geo.epoch_size
    for e in range(len(seen) // n):  # each epoch whole before the next, across the move
        assert len(set(seen[e * n : (e + 1) * n])) == n
    assert len(set(seen[len(seen) // n * n :])) == len(seen) % n
