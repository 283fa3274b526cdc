import numpy as np
import pytest
import torch
from controller_fakes import FakeStream
from controller_harness import check_round_trip, const_losses

from mixstream.controllers.schedule import Schedule, schedule_weights

A = {"a": 1.0, "b": 0.0}
B = {"a": 0.0, "b": 1.0}


def test_pure_schedule():
    pts = np.array([0.0, 10.0])
    mix = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert schedule_weights(pts, mix, 5, "constant").tolist() == [1, 0]
    assert schedule_weights(pts, mix, 10, "constant").tolist() == [0, 1]
    np.testing.assert_allclose(schedule_weights(pts, mix, 2.5, "linear"), [0.75, 0.25])
    assert schedule_weights(pts, mix, 99, "linear").tolist() == [0, 1]


def test_piecewise_by_step():
    s = FakeStream(["a", "b"])
    c = Schedule(s, [(0, A), (3, B)])
    assert s.weights == A
    seen = []
    for _ in range(5):
        ids = s.next_batch()
        c.feedback(ids)
        seen.append(s.weights["b"])
    assert seen == [0, 0, 1, 1, 1]


def test_linear_by_samples_with_every():
    s = FakeStream(["a", "b"], batch_size=10)
    c = Schedule(s, [(0, A), (100, B)], by="samples", interpolate="linear", every=2)
    for _ in range(12):
        c.feedback(s.next_batch())
    # a new blend at most every 2 steps; the last point (100 samples) is reached at step 10
    assert [st for st, _ in s.log] == [0, 20, 40, 60, 80, 100]
    assert [w[1] for _, w in s.log] == pytest.approx([0, .2, .4, .6, .8, 1])
    assert s.weights == pytest.approx(B)


def test_by_tokens_needs_counts():
    s = FakeStream(["a", "b"])
    c = Schedule(s, [(0, A), (50, B)], by="tokens")
    with pytest.raises(ValueError, match="token counts"):
        c.feedback(torch.tensor([0, 1]))
    c2 = Schedule(FakeStream(["a", "b"]), [(0, A), (50, B)], by="tokens")
    c2.feedback(torch.tensor([0, 1]), tokens=torch.tensor([20, 20]))
    assert c2.weights == A
    c2.feedback(torch.tensor([0, 1]), tokens=torch.tensor([5, 5]))
    assert c2.weights == B


def test_bad_stages():
    s = FakeStream(["a", "b"])
    with pytest.raises(ValueError, match="strictly increasing"):
        Schedule(s, [(10, A), (5, B)])
    with pytest.raises(ValueError, match="stage 1"):
        Schedule(s, [(0, A), (5, {"a": -1, "b": 1})])
    with pytest.raises(ValueError, match="'by'"):
        Schedule(s, [(0, A)], by="epochs")


def test_round_trip():
    check_round_trip(lambda: FakeStream(["a", "b"], lag=16),
                     lambda s: Schedule(s, [(0, A), (40, B)], interpolate="linear", every=3),
                     const_losses([1.0, 2.0]), n=15, m=30)
