"""Where ``set_weights`` places a change: the first batch no reader can have prefetched."""

from __future__ import annotations

import pytest

from mixstream import MixStream


def bound(tiny, workers: int = 2, prefetch: int = 2) -> MixStream:
    s = MixStream(tiny, seed=1, shuffle_window=32, mix_block=16)
    s.bind(4, workers, prefetch_factor=prefetch)  # trainer side only: nothing is read
    return s


@pytest.mark.parametrize(("workers", "prefetch"), [(0, None), (1, 2), (2, 3)])
def test_default_placement_is_the_prefetch_horizon(tiny, workers, prefetch):
    s = bound(tiny, workers, prefetch)
    depth = 0 if workers == 0 else workers * prefetch
    assert s.prefetch_depth == depth
    for step in (0, 3, 10):
        s.consumed_batches = step
        assert s.set_weights([1, 2, 3]) == (step + depth) * 4


def test_a_change_listener_sees_every_change_with_its_sample(tiny):
    s = bound(tiny)
    seen = []
    s.add_weight_listener(lambda f, w: seen.append((f, round(w["c"], 3))))
    s.set_weights([1, 1, 2])
    s.set_weights([1, 1, 0])  # same index: replaces, still reported
    s.set_weights([0, 1, 1], from_batch=9)
    assert seen == [(16, 0.5), (16, 0.0), (36, 0.5)]
    assert [f for f, _ in s.weight_log] == [0, 16, 36]


def test_a_change_inside_the_prefetch_window_is_refused_naming_the_first_allowed(tiny):
    s = bound(tiny)
    s.consumed_batches = 5
    with pytest.raises(ValueError, match=r"from_batch=8 may already be prefetched \(fetched 5 "
                       r"\+ prefetch depth 4\); use from_batch >= 9"):
        s.set_weights([1, 1, 1], from_batch=8)
    s.set_weights([1, 1, 1], from_batch=9)


def test_a_change_before_a_scheduled_one_lands_before_it(tiny):
    s = bound(tiny)
    s.set_weights([1, 1, 1], from_batch=20)
    assert s.set_weights([1, 2, 1], from_batch=10) == 40
    assert [f for f, _ in s.weight_log] == [0, 40, 80]


def test_a_default_change_does_not_silently_replace_a_scheduled_one(tiny):
    """It replaced it (placed at max(horizon, latest)); it now lands at the horizon, as the
    docstring promises, and the planned switch still happens at its batch."""
    s = bound(tiny)
    s.set_weights([0, 0, 1], from_batch=30)  # a planned switch
    scheduled = s.weight_log[-1]
    at = s.set_weights([1, 0, 0])  # a controller's ordinary update at batch 0
    assert at == s.prefetch_depth * 4  # applied where promised ...
    assert scheduled in s.weight_log  # ... and the planned switch still happens
