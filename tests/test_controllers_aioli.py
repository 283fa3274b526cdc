import numpy as np
import pytest
import torch
from controller_fakes import FakeStream
from controller_harness import assert_on_simplex, check_round_trip, const_losses

from mixstream.controllers.aioli import Aioli, aioli_matrix, probe_mixture

D = ["a", "b", "c"]
# true linear mixing law: training on domain j lowers domain i's loss by A*[i, j] per step
A_TRUE = np.array([[0.30, 0.05, 0.00],
                   [0.20, 0.10, 0.00],
                   [0.10, 0.00, 0.05]])


class SimModel:
    """Validation losses under the dynamic linear law L <- L - lr * A* @ (batch shares)."""

    def __init__(self, lr=0.01):
        self.loss = np.full(3, 5.0)
        self.lr = lr
        self.evals = 0

    def train(self, ids: torch.Tensor) -> None:
        share = np.bincount(ids.numpy(), minlength=3) / len(ids)
        self.loss = self.loss - self.lr * A_TRUE @ share

    def validate(self) -> dict:
        self.evals += 1
        return dict(zip(D, self.loss.tolist(), strict=True))


def run(ctrl, stream, model, steps):
    for _ in range(steps):
        ids = stream.next_batch()
        model.train(ids)
        ctrl.feedback(ids)


@pytest.mark.parametrize("lag", [0, 32])
def test_recovers_mixing_matrix_with_one_hot_probes(lag):
    s = FakeStream(D, batch_size=16, lag=lag)
    m = SimModel()
    c = Aioli(s, validate=m.validate, update_steps=40, lp_rounds=2, lp_steps=3,
              one_hot_factor=1.0, ema=None, eta=1.0)
    run(c, s, m, 40)
    assert c.round == 1
    np.testing.assert_allclose(c.mixing_matrix, A_TRUE / A_TRUE.sum(), rtol=1e-9)
    expect = np.exp(A_TRUE.sum(0) / A_TRUE.sum())
    np.testing.assert_allclose(c.weight_vector, expect / expect.sum(), rtol=1e-9)
    # one validation per probe boundary: K*lp_rounds + 1 without lag; with lag each probe
    # waits for its window and needs a fresh start measurement
    assert m.evals == (3 * 2 + 1 if lag == 0 else 2 * 3 * 2)


def test_demixing_smoothed_probes():
    k, f = 3, 0.6
    w = np.stack([probe_mixture(j, k, f) for j in range(k)])
    observed = (A_TRUE @ w.T) * 2      # lp_rounds = 2 accumulated
    got = aioli_matrix(observed, 2, f, normalize=False)
    np.testing.assert_allclose(got, A_TRUE, atol=1e-12)
    diag = aioli_matrix(observed, 2, f, diagonal=True, normalize=False)
    np.testing.assert_allclose(np.diag(diag), np.diag(A_TRUE @ w.T) / f)
    neg = aioli_matrix(np.array([[1.0, -1.0], [0.0, 2.0]]), 1, 1.0)
    assert neg.min() == 0 and neg.sum() == pytest.approx(1)


def test_helpful_domain_gains_weight_over_rounds():
    s = FakeStream(D, batch_size=64)
    m = SimModel()
    c = Aioli(s, validate=m.validate, update_steps=50, lp_rounds=1, lp_steps=4,
              one_hot_factor=0.8, eta=2.0)
    run(c, s, m, 200)
    assert c.round == 4
    w = c.weight_vector
    assert w.argmax() == 0 and w[2] < w[1]
    assert_on_simplex(w)
    # probes really were forced: the log holds smoothed one-hot mixtures
    assert any(np.isclose(max(wl), 0.8) for _, wl in s.log)


def test_manual_validation_protocol():
    s = FakeStream(["a", "b"], batch_size=8)
    c = Aioli(s, update_steps=10, lp_rounds=1, lp_steps=2)
    c.feedback(s.next_batch())
    assert c.wants_validation()
    with pytest.raises(ValueError, match="waiting for validation"):
        c.feedback(s.next_batch())
    c.observe_validation({"a": 3.0, "b": 3.0})
    assert not c.wants_validation()
    with pytest.raises(ValueError, match="did not ask"):
        c.observe_validation({"a": 3.0, "b": 3.0})


def test_bad_args():
    s = FakeStream(D)
    with pytest.raises(ValueError, match="update_steps"):
        Aioli(s, update_steps=10, lp_rounds=2, lp_steps=2)
    with pytest.raises(ValueError, match="one_hot_factor"):
        Aioli(s, one_hot_factor=0.2)
    with pytest.raises(ValueError, match="at least 2"):
        Aioli(FakeStream(["a"]))


def test_round_trip():
    def make(stream):
        def validate():  # deterministic in the stream position, so resume can replay it
            n = stream.consumed_samples
            return {"a": 5 - 1e-3 * n, "b": 5 - 2e-3 * n ** 0.9, "c": 5 - 1e-4 * n}
        return Aioli(stream, validate=validate, update_steps=20, lp_rounds=1, lp_steps=2,
                     one_hot_factor=0.7)
    check_round_trip(lambda: FakeStream(D, lag=16), make, const_losses([1, 2, 3]), n=13, m=40)


def test_target_set_that_is_not_a_training_domain():
    """target ≠ sources: one target set whose loss only domain c (and a bit b) lowers."""
    a_t = np.array([[0.0, 0.05, 0.30]])

    class TargetSim(SimModel):
        def __init__(self):
            super().__init__()
            self.loss = np.full(1, 5.0)

        def train(self, ids):
            share = np.bincount(ids.numpy(), minlength=3) / len(ids)
            self.loss = self.loss - self.lr * a_t @ share

        def validate(self):
            self.evals += 1
            return {"target": float(self.loss[0])}

    s = FakeStream(D, batch_size=16)
    m = TargetSim()
    c = Aioli(s, validate=m.validate, update_steps=40, lp_rounds=2, lp_steps=3,
              one_hot_factor=1.0, ema=None, eta=1.0, targets=["target"])
    run(c, s, m, 40)
    np.testing.assert_allclose(c.mixing_matrix, a_t / a_t.sum(), rtol=1e-9)
    expect = np.exp(a_t[0] / a_t.sum())
    np.testing.assert_allclose(c.weight_vector, expect / expect.sum(), rtol=1e-9)
    assert c.weight_vector.argmax() == 2
    with pytest.raises(ValueError, match="diagonal"):
        Aioli(FakeStream(D), targets=["t"], diagonal=True)


def test_weighted_targets_with_smoothed_probes_and_resume():
    a_t = np.array([[0.3, 0.0, 0.0], [0.0, 0.0, 0.3]])

    class Sim2(SimModel):
        def __init__(self):
            super().__init__()
            self.loss = np.full(2, 5.0)

        def train(self, ids):
            share = np.bincount(ids.numpy(), minlength=3) / len(ids)
            self.loss = self.loss - self.lr * a_t @ share

        def validate(self):
            return {"x": float(self.loss[0]), "y": float(self.loss[1])}

    s = FakeStream(D, batch_size=16)
    m = Sim2()
    c = Aioli(s, validate=m.validate, update_steps=40, lp_rounds=2, lp_steps=3, ema=None,
              eta=5.0, targets={"x": 0.9, "y": 0.1})
    run(c, s, m, 40)
    w = c.weight_vector
    assert w[0] > w[2] > w[1] - 1e-9, w             # weighted towards target x's helper

    def make(stream):
        sim = Sim2()
        ctrl = Aioli(stream, update_steps=40, lp_rounds=2, lp_steps=3, ema=None,
                     targets={"x": 0.9, "y": 0.1})
        ctrl.validate = lambda: {"x": 5.0 - 0.01 * ctrl.step, "y": 5.0 - 0.02 * ctrl.step}
        del sim
        return ctrl
    check_round_trip(lambda: FakeStream(D, lag=16), make, const_losses([1, 2, 3]), n=13, m=40)
