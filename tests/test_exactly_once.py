"""The exactly-once property harness (tests/exactly_once.py) over the topologies users bring.

Domain sizes from 1 sample to many windows (below the window, below the number of readers, not
a multiple of the block), block sizes, windows, shuffle on/off, 0-4 readers per rank, 1-4
ranks, weight changes including zero weights, 1-3 domain epochs, both ``on_exhausted`` modes,
resume and elastic resume at random points. ``MIXSTREAM_HARNESS_EXAMPLES`` raises the example
count (CI runs the default in about a minute).
"""

from __future__ import annotations

import os
from unittest import mock

import pytest
from exactly_once import (
    Scenario,
    check_exactly_once,
    check_mixture,
    check_ranks_equal,
    check_stop,
    merged,
    run,
    run_with_resume,
    same_batches,
)
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("MIXSTREAM_HARNESS_EXAMPLES", "60"))
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                      HealthCheck.data_too_large])


@st.composite
def scenarios(draw, real_workers: bool = False, max_workers: int = 4,
              continual: bool = False) -> Scenario:
    d = draw(st.integers(1, 4))
    sizes = []
    for _ in range(d):
        n_blocks = draw(st.integers(1, 5))
        sizes.append(draw(st.lists(st.integers(1, 40), min_size=n_blocks, max_size=n_blocks)))
    weight = st.sampled_from([0.0, 0.1, 0.25, 0.5, 1.0, 3.0])
    weights = draw(st.lists(weight, min_size=d, max_size=d).filter(lambda w: sum(w) > 0))
    world = draw(st.integers(1, 4))
    workers = draw(st.integers(0, max_workers))
    batch = draw(st.integers(1, 8))
    total = sum(map(sum, sizes))
    # 1-3 domain epochs of the corpus, in rounds
    steps = max(2, min(60, draw(st.integers(1, 3)) * total // (batch * world) + 1))
    changes = draw(st.lists(
        st.tuples(st.integers(0, steps - 1), st.lists(weight, min_size=d, max_size=d)
                  .filter(lambda w: sum(w) > 0)), max_size=3, unique_by=lambda c: c[0]))
    scheduled = draw(st.lists(
        st.tuples(st.integers(0, steps - 1), st.lists(weight, min_size=d, max_size=d)
                  .filter(lambda w: sum(w) > 0), st.integers(1, 6)), max_size=2,
        unique_by=lambda c: c[0]))
    resume = draw(st.none() | st.integers(1, steps - 1))
    elastic = resume is not None and draw(st.booleans())
    # elastic resume keeps the global batch: the new world size divides batch x world
    new_world = draw(st.sampled_from([w for w in range(1, 5) if batch * world % w == 0]))
    initial, domain_changes = None, []
    if continual and d > 1:
        # a retired domain is forgotten (one that comes back starts afresh), so the harness
        # adds only domains the run has not had yet; stop mode has no domain changes
        initial = draw(st.integers(1, d - 1))
        raw = sorted(draw(st.lists(
            st.tuples(st.integers(0, steps - 2), st.sampled_from(["add", "remove"]),
                      st.integers(0, d - 1)), min_size=1, max_size=3, unique_by=lambda c: c[0])))
        had = set(range(initial))
        for at, kind, dom in raw:
            if kind == "add" and dom in had:
                continue
            had.add(dom)
            domain_changes.append((at, kind, dom))
    return Scenario(
        initial=initial, domain_changes=domain_changes,
        sizes=sizes, weights=weights, window=draw(st.integers(1, 48)),
        shuffle=draw(st.booleans()), batch=batch, world=world, workers=workers,
        on_exhausted="restart" if continual else draw(st.sampled_from(["restart", "stop"])),
        steps=steps,
        changes=sorted(changes), scheduled=sorted(scheduled), resume_at=resume,
        resume_world=new_world if elastic else None,
        resume_workers=draw(st.integers(0, max_workers)) if elastic else None,
        resume_batch=batch * world // new_world if elastic else None,
        seed=draw(st.integers(0, 3)), real_workers=real_workers)


def check(sc: Scenario) -> None:
    continual = sc.initial is not None or bool(sc.domain_changes)
    full, _ = run(sc)
    check_exactly_once(sc, full)
    if not continual:
        check_mixture(sc, full)
    check_ranks_equal(full)
    if sc.on_exhausted == "stop" and not continual:
        check_stop(sc, full, sc.world)
    if sc.resume_at is None:
        return
    ref, resumed = run_with_resume(sc)
    check_exactly_once(sc, resumed)
    if not continual:
        check_mixture(sc, resumed)
    if sc.resume_world is None:
        same_batches(ref, resumed)
    else:  # the same global mixture; a change made after the move is placed by the new
        # topology's prefetch depth, so compare up to the first one
        _, dom_a, _ = merged(ref)
        _, dom_b, _ = merged(resumed)
        later = [f for f, _ in ref.log + resumed.log if f >= sc.resume_at * sc.batch * sc.world]
        n = min([len(dom_a), len(dom_b)] + later)
        assert (dom_a[:n] == dom_b[:n]).all()


# Found by hand or by hypothesis once; kept as permanent examples.
SMALL_DOMAINS = Scenario(  # issue: 3 domains below the shuffle window, 2 workers -> duplicates
    sizes=[[500] * 3, [500] * 3, [500] * 3], weights=[0.5, 0.3, 0.2], window=8192, batch=16,
    workers=2, steps=120)
SMALL_DOMAINS_NO_SHUFFLE = Scenario(
    sizes=[[500] * 3, [500] * 3, [500] * 3], weights=[0.5, 0.3, 0.2], window=8192, batch=16,
    workers=2, steps=120, shuffle=False)
TWO_RANKS_ONE_FILE = Scenario(  # issue: both ranks yielded rows 0, 1, 2 ... of every domain
    sizes=[[300], [300]], weights=[0.5, 0.5], window=8192, batch=8, world=2, workers=1,
    steps=60, shuffle=False)
ONE_SAMPLE_DOMAIN = Scenario(sizes=[[1], [7, 3]], weights=[0.5, 0.5], window=4, batch=3,
                             world=3, workers=2, steps=12)
STOP_MODE_RANKS = Scenario(  # issue: ranks ended after 56/56/56/55 batches (a DDP hang)
    sizes=[[97, 40], [61]], weights=[0.7, 0.3], window=16, batch=5, world=4, workers=2,
    steps=60, on_exhausted="stop")


LAGGING_READER = Scenario(  # a reader that starts its batch late must still get every change
    # (the weight tail once started at the trainer's position and dropped changes it needed)
    sizes=[[50] * 4, [50] * 4], weights=[1, 1], window=16, batch=2, workers=4, steps=60,
    changes=[(s, [1 + (s % 3), 1]) for s in range(0, 60, 2)], seed=1)

SWITCH_OFF_HANDS_OVER = Scenario(  # the README bound read as "of the raw weights' integral"
    # failed (2.01 > 2): switching domain 3 off hands its unserved 1.15 samples to domain 2
    sizes=[[2], [1], [1, 1, 35, 40, 40], [40]], weights=[0.1, 0.1, 0.1, 1.0], window=1,
    shuffle=False, batch=8, world=4, workers=2, steps=11,
    scheduled=[(2, [0.1, 0.1, 3.0, 0.0], 3)])
SCHEDULED_THEN_DEFAULT = Scenario(  # a default change lands before one scheduled ahead
    sizes=[[40] * 3, [40] * 3], weights=[1, 1], window=16, batch=4, workers=2, steps=40,
    scheduled=[(3, [0.0, 1.0], 5)], changes=[(4, [3, 1]), (9, [1, 3])])


@pytest.mark.parametrize("sc", [SMALL_DOMAINS, SMALL_DOMAINS_NO_SHUFFLE, TWO_RANKS_ONE_FILE,
                                ONE_SAMPLE_DOMAIN, STOP_MODE_RANKS, LAGGING_READER,
                                SWITCH_OFF_HANDS_OVER, SCHEDULED_THEN_DEFAULT],
                         ids=["small", "small-noshuffle", "ranks-one-file", "one-sample", "stop",
                              "lagging-reader", "switch-off", "scheduled-then-default"])
def test_known_cases(sc):
    check(sc)


@settings(max_examples=EXAMPLES, **SETTINGS)
@example(ONE_SAMPLE_DOMAIN)
@given(scenarios())
def test_exactly_once_simulated(sc):
    check(sc)


@settings(max_examples=max(10, EXAMPLES // 3), **SETTINGS)
@given(scenarios(continual=True))
def test_exactly_once_across_domain_set_changes(sc):
    """add_domains / remove_domains during the run, and resume into the changed set."""
    check(sc)


@pytest.mark.slow
@settings(max_examples=max(3, EXAMPLES // 12), **SETTINGS)
@given(scenarios(real_workers=True, max_workers=2))
def test_real_workers_match_the_simulation(sc):
    """Real DataLoader workers (fork) give batch for batch what the simulated readers give."""
    sc.resume_world = sc.resume_workers = None  # (elastic resume is covered by the simulation)
    sc.world = 1
    real, _ = run(sc)
    sc.real_workers = False
    sim, _ = run(sc)
    same_batches(real, sim)
    check_exactly_once(sc, real)


@pytest.mark.parametrize("free_threaded", [False, True], ids=["inline", "threads"])
@settings(max_examples=max(6, EXAMPLES // 5), **SETTINGS)
@given(sc=scenarios(real_workers=True, max_workers=4))
def test_reader_threads_match_the_simulation(free_threaded, sc):
    """MixLoader(reader_threads=N) gives batch for batch what N simulated readers give, weight
    changes and resume included: both the slots taking turns on the trainer's thread (under
    the GIL) and the slots on threads of their own (free-threaded Python)."""
    sc.resume_world = sc.resume_workers = sc.resume_batch = None
    sc.world = 1
    sc.threads = True
    with mock.patch("mixstream.threads.gil_enabled", lambda: not free_threaded):
        real, _ = run(sc)
        if sc.resume_at is not None:
            _, resumed = run_with_resume(sc)
            same_batches(real, resumed)
    sc.real_workers = False
    sim, _ = run(sc)
    same_batches(real, sim)
    check_exactly_once(sc, real)
