import math

import numpy as np
import pytest
import torch
from controller_fakes import FakeStream
from controller_harness import assert_on_simplex, check_round_trip, const_losses

from mixstream.controllers.odm import ODM, odm_epsilon, odm_weights

D = ["a", "b", "c"]


def test_epsilon_formula():
    assert odm_epsilon(1, 3) == pytest.approx(1 / 3)
    assert odm_epsilon(100, 3) == pytest.approx(math.sqrt(math.log(3) / 300))
    assert odm_epsilon(10**6, 22) < odm_epsilon(10**3, 22)


def test_warmup_keeps_initial_weights_then_updates():
    s = FakeStream(D, [0.5, 0.3, 0.2])
    c = ODM(s, warmup=5)
    loss = torch.tensor([1.0, 2.0, 3.0])
    for _ in range(5):
        assert c.feedback(torch.tensor([0, 1, 2]), loss) is None
    assert len(s.log) == 1 and s.weights == pytest.approx({"a": .5, "b": .3, "c": .2})
    w = c.feedback(torch.tensor([0, 1, 2]), loss)
    assert w is not None and s.weights == pytest.approx(w)
    # first update: R = (1-a) e^L, eps_6
    eps = odm_epsilon(6, 3)
    r = 0.5 * np.exp([1.0, 2.0, 3.0])
    assert list(w.values()) == pytest.approx(odm_weights(r, eps).tolist())


def test_constant_losses_converge_to_eps_mixture_of_exp_loss():
    s = FakeStream(D)
    c = ODM(s, warmup=0, smoothing=0.5)
    loss_vals = torch.tensor([1.0, 1.5, 3.0])
    ids = torch.tensor([0, 1, 2, 0, 1, 2])
    for _ in range(200):
        c.feedback(ids, loss_vals[ids])
    eps = odm_epsilon(200, 3)
    expect = (1 - 3 * eps) * np.exp([1, 1.5, 3.0]) / np.exp([1, 1.5, 3.0]).sum() + eps
    np.testing.assert_allclose(c.weight_vector, expect, rtol=1e-12)
    # a domain whose loss stays high keeps the largest weight; floor respected
    assert c.weight_vector.argmax() == 2
    assert_on_simplex(c.weight_vector, floor=eps)


def test_absent_domain_keeps_reward():
    s = FakeStream(D)
    c = ODM(s, warmup=0)
    c.feedback(torch.tensor([0, 1, 2]), torch.tensor([1.0, 1.0, 1.0]))
    r_c = c.reward[2]
    c.feedback(torch.tensor([0, 1]), torch.tensor([2.0, 2.0]))
    assert c.reward[2] == r_c
    assert c.reward[0] == pytest.approx(0.5 * r_c + 0.5 * math.e**2)


def test_loss_falling_domain_loses_weight():
    """Domain 'a' keeps learning (loss falls), 'b' and 'c' plateau: 'a' must lose weight."""
    s = FakeStream(D, batch_size=32)
    c = ODM(s, warmup=10)
    for t in range(300):
        ids = s.next_batch()
        base = torch.tensor([4.0 * 0.99**t + 1.0, 3.0, 3.0], dtype=torch.float64)
        c.feedback(ids, base[ids])
    w = c.weights
    assert w["a"] < 0.2 < w["b"] and w["a"] < w["c"]
    assert_on_simplex(c.weight_vector, floor=c.floor)


def test_token_weighted_mean_used():
    s = FakeStream(["a", "b"])
    c = ODM(s, warmup=0, smoothing=0.0)
    # per-token losses: domain a has sequences with 1 and 3 loss tokens
    loss = torch.tensor([[1.0, 0, 0], [2.0, 2.0, 2.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1], [1, 1, 1]])
    c.feedback(torch.tensor([0, 0, 1]), loss, mask=mask)
    assert c.reward[0] == pytest.approx(math.exp((1 + 6) / 4))


def test_bad_input():
    s = FakeStream(D)
    with pytest.raises(ValueError, match="smoothing"):
        ODM(s, smoothing=1.0)
    c = ODM(s, warmup=0)
    with pytest.raises(ValueError, match="per-sample losses"):
        c.feedback(torch.tensor([0]))
    with pytest.raises(ValueError, match="out of range"):
        c.feedback(torch.tensor([3]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="non-finite"):
        c.feedback(torch.tensor([0]), torch.tensor([float("nan")]))


def test_round_trip():
    check_round_trip(lambda: FakeStream(D, lag=32), lambda s: ODM(s, warmup=10),
                     const_losses([1.0, 2.0, 2.5]))
