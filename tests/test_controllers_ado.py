import numpy as np
import pytest
import torch
from controller_fakes import FakeStream
from controller_harness import check_round_trip

from mixstream.controllers.ado import ADO, ado_policy
from mixstream.controllers.ado_fit import fit_free_alpha_power_law, free_alpha_power_law, init_grid
from mixstream.controllers.simplex import clip_min_probability

D = ["a", "b", "c"]


def sizes(tokens):
    return {d: {"samples": t, "tokens": t, "bytes": None, "documents": None}
            for d, t in zip(D, tokens, strict=True)}


def test_fit_recovers_known_law():
    n = np.linspace(500, 50000, 300)
    true = np.array([2.5, 0.7, 0.4])
    got = fit_free_alpha_power_law(n, free_alpha_power_law(true, n))
    np.testing.assert_allclose(got, true, atol=1e-3)
    assert init_grid().shape == (512, 3)


def test_clip_min_probability_exact_floor():
    p = np.array([0.985, 0.01, 0.005])
    q = clip_min_probability(p, 0.01)
    np.testing.assert_allclose(q, [0.98, 0.01, 0.01])
    q = clip_min_probability(np.array([0.5, 0.5, 0.0, 0.0]), 0.2)
    np.testing.assert_allclose(q, [0.3, 0.3, 0.2, 0.2])
    np.testing.assert_allclose(clip_min_probability(np.array([0.7, 0.3]), 0.1), [0.7, 0.3])
    with pytest.raises(ValueError, match="exceeds 1"):
        clip_min_probability(p, 0.5)


def test_policy_prefers_domain_with_reducible_loss_left():
    # b's loss is at its floor (tiny reducible part): -dL/dn is smallest
    params = np.array([[3.0, 0.5, 0.5], [-3.0, 0.5, 0.5], [3.0, 0.5, 0.5]])
    pi = ado_policy(params, np.full(3, 1000.0), np.full(3, 1 / 3), np.full(3, 1 / 3))
    assert pi[1] < pi[0] and pi[0] == pytest.approx(pi[2])


def run_synthetic(ado, stream, steps, rng):
    """Domain a keeps improving (power law in its own count), b and c have flattened out."""
    own = np.zeros(3)
    for _ in range(steps):
        ids = stream.next_batch()
        own += np.bincount(ids.numpy(), minlength=3)
        mean = np.array([2.0 + 20.0 * (own[0] + 1) ** -0.5, 3.0, 2.5])
        loss = torch.as_tensor(mean[ids.numpy()] * np.exp(rng.normal(0, 0.01, len(ids))))
        ado.feedback(ids, loss)


def test_domain_whose_loss_stops_falling_loses_weight():
    s = FakeStream(D, sizes=sizes([100, 100, 100]), batch_size=32)
    ado = ADO(s, update_interval=50, start_step=100, ignore_steps=20, smoothing_window=31,
              subsample=2)
    assert ado.weights == pytest.approx({d: 1 / 3 for d in D})   # prior mu pushed
    run_synthetic(ado, s, 300, np.random.default_rng(0))
    w = ado.weight_vector
    assert ado.fits >= 4
    assert w[0] > 0.5 and w[1] < 0.25 and w[2] < 0.25
    assert w.min() >= 0.1 * 0.01
    law = ado.law()
    assert law is not None and law["a"][2] > law["b"][2]   # a's exponent is larger


def test_empirical_prior_and_imputation():
    s = FakeStream(D, sizes=sizes([600, 300, 100]))
    ado = ADO(s)
    assert ado.prior.tolist() == pytest.approx([0.6, 0.3, 0.1])
    assert s.weights == pytest.approx({"a": .6, "b": .3, "c": .1})
    ado.feedback(torch.tensor([0, 0]), torch.tensor([2.0, 4.0]))
    assert ado.losses.last().tolist() == [3.0, 3.0, 3.0]  # first step: batch mean for absent
    ado.feedback(torch.tensor([1]), torch.tensor([5.0]))
    assert ado.losses.last().tolist() == [3.0, 5.0, 3.0]  # previous value for absent
    assert ado.counts.array.tolist() == [[2, 0, 0], [0, 1, 0]]
    assert ado.sample_axis().tolist() == [[2, 2, 2], [1, 1, 1]]  # same step size: batch total
    assert ado.n_seen.tolist() == [3, 3, 3]


def test_bad_args():
    s = FakeStream(D, sizes=sizes([1, 1, 1]))
    with pytest.raises(ValueError, match="credit"):
        ADO(s, credit="x")
    with pytest.raises(ValueError, match="prior"):
        ADO(s, prior="natural")


def test_round_trip():
    def losses(step, ids):
        base = torch.tensor([1.0 + 5 / (step + 1) ** 0.3, 2.0 + 1 / (step + 1), 2.5],
                            dtype=torch.float64)
        g = torch.Generator().manual_seed(step)
        return {"loss": base[ids] * (1 + 0.01 * torch.rand(len(ids), generator=g,
                                                           dtype=torch.float64))}
    check_round_trip(lambda: FakeStream(D, sizes=sizes([1, 2, 3]), lag=16),
                     lambda s: ADO(s, update_interval=10, start_step=20, ignore_steps=5,
                                   smoothing_window=11, subsample=1), losses, n=35, m=30)


def test_savgol_matches_scipy():
    signal = pytest.importorskip("scipy.signal")
    from mixstream.controllers.ado import savgol
    y = np.random.default_rng(0).normal(size=(250, 3)).cumsum(0)
    for w in (5, 31, 101):
        np.testing.assert_allclose(savgol(y, w), signal.savgol_filter(y, w, 3, axis=0),
                                   atol=1e-9)


def test_history_state_is_compact_and_exact():
    import json

    from mixstream.controllers.history import History
    h = History(3, np.float32)
    rows = np.random.default_rng(1).normal(size=(100, 3))
    for r in rows:
        h.append(r)
    st = json.loads(json.dumps(h.state_dict()))
    h2 = History.from_state(st)
    assert h2.array.dtype == np.float32 and np.array_equal(h2.array, rows.astype(np.float32))
    assert len(st["b64"]) < 100 * 3 * 4 * 1.4
    h2.append(np.ones(3))
    assert len(h2) == 101 and len(h) == 100


def test_val_loss_axis():
    s = FakeStream(D, sizes=sizes([1, 1, 1]), batch_size=32)
    state = {"n": 0}

    def validate():   # domain a improves with training, b and c are flat
        return {"a": 2.0 + 10.0 * (state["n"] + 32) ** -0.5, "b": 3.0, "c": 2.5}

    ado = ADO(s, prior="uniform", y_axis="val_loss", val_every=5, validate=validate,
              start_step=60, update_interval=30, ignore_steps=0)
    for _ in range(120):
        ids = s.next_batch()
        state["n"] += int((ids == 0).sum())
        ado.feedback(ids, torch.ones(len(ids)))
    assert ado.val_steps[:3] == [0, 5, 10] and len(ado.val_steps) == 24
    assert ado.fits == 2 and ado.weight_vector[0] > 0.4   # refits at itr 60 and 90
    with pytest.raises(ValueError, match="y_axis='val_loss'"):
        ADO(FakeStream(D, sizes=sizes([1, 1, 1]))).update_validation(np.ones(3))
