"""Synthetic checks of the Huber L-BFGS engine and the explicit mixing law."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixstream.laws import DataMixingLaw, MixtureLawParams, critical_proportion, fit_huber_lbfgs
from mixstream.laws.mixture import default_inits

TRUE = MixtureLawParams(
    log_c=np.log([1.0, 2.0, 1.5]),
    log_k=np.array([0.0, -0.5, 0.2]),
    t=np.array([[-2.0, 0.2, 0.1], [0.3, -1.5, 0.0], [0.0, 0.2, -3.0]]),
)
SMALL = dict(log_c_grid=np.linspace(-2, 1.5, 4), log_k_grid=np.linspace(-3, 1, 4), n_random_t=2,
             max_step=20)


def _mixtures(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(3), size=n)


def test_engine_recovers_exponential_and_reports_selection_loss():
    x = np.linspace(0, 1, 8)
    y = np.exp(-1.3 * x + 0.4)
    model = lambda p, xx: torch.exp(p[:, :1] * xx[None, :] + p[:, 1:2])  # noqa: E731
    res = fit_huber_lbfgs(model, x, y, np.array([[0.0, 0.0], [5.0, -5.0]]), delta=0.02,
                          max_step=20)
    np.testing.assert_allclose(res.params, [-1.3, 0.4], atol=1e-5)
    assert res.selection_loss < 1e-12 and res.train_loss < 1e-11
    # valid_split = 1 scores the held-out last point by squared error
    res1 = fit_huber_lbfgs(model, x, y + np.r_[np.zeros(7), 0.1], np.array([[0.0, 0.0]]),
                           delta=0.02, max_step=20, valid_split=1)
    assert res1.selection_loss == pytest.approx(0.01, rel=1e-3)


def test_engine_rejects_bad_input():
    model = lambda p, xx: p[:, :1] * xx[None, :]  # noqa: E731
    with pytest.raises(ValueError, match="valid_split"):
        fit_huber_lbfgs(model, np.ones(3), np.ones(3), np.zeros((1, 1)), delta=0.1, max_step=1,
                        valid_split=3)
    with pytest.raises(ValueError, match="NaN"):
        fit_huber_lbfgs(model, np.ones(3), np.array([1, np.nan, 1]), np.zeros((1, 1)), delta=0.1,
                        max_step=1)
    with pytest.raises(ValueError, match="inits"):
        fit_huber_lbfgs(model, np.ones(3), np.ones(3), np.zeros((0, 1)), delta=0.1, max_step=1)


def test_default_inits_follow_the_authors_grid():
    inits = default_inits(5)
    assert inits.shape == (10 * 20 * 30, 7)
    assert set(np.round(inits[:, 0], 9)) == set(np.round(np.linspace(-2, 1.5, 10), 9))
    assert set(np.round(inits[:, 1], 9)) == set(np.round(np.linspace(-10, 1, 20), 9))
    assert inits[:, 2:].min() >= 0 and inits[:, 2:].max() <= 0.1


def test_law_generated_data_is_recovered():
    train, test = _mixtures(16, 0), _mixtures(40, 1)
    law = DataMixingLaw(**SMALL).fit(train, TRUE.predict(train))
    np.testing.assert_allclose(law.predict(test), TRUE.predict(test), atol=1e-5)
    # gauge-fixed parameters are identifiable from noise-free data
    got, want = law.params.gauge_fixed(), TRUE.gauge_fixed()
    np.testing.assert_allclose(got.t, want.t, atol=1e-4)
    np.testing.assert_allclose(got.log_k, want.log_k, atol=1e-4)
    np.testing.assert_allclose(np.exp(got.log_c), np.exp(want.log_c), atol=1e-4)


def test_noisy_law_predictions_stay_within_noise():
    rng = np.random.default_rng(3)
    train, test = _mixtures(20, 4), _mixtures(40, 5)
    noisy = TRUE.predict(train) + rng.normal(0, 0.003, size=(20, 3))
    law = DataMixingLaw(**SMALL).fit(train, noisy)
    err = np.abs(law.predict(test) - TRUE.predict(test))
    assert err.mean() < 0.002 and err.max() < 0.012  # noise sd 0.003


def test_fit_rejects_bad_tables_with_clear_errors():
    law = DataMixingLaw(**SMALL)
    with pytest.raises(ValueError, match="sum to 1"):
        law.fit(np.array([[0.5, 0.4]] * 3), np.ones((3, 1)))
    with pytest.raises(ValueError, match="at least 3 mixtures"):
        law.fit(np.array([[0.5, 0.5]] * 2), np.ones((2, 1)))
    with pytest.raises(ValueError, match="> 0"):
        law.fit(_mixtures(4, 0)[:, :2] / _mixtures(4, 0)[:, :2].sum(1, keepdims=True),
                -np.ones((4, 1)))
    with pytest.raises(ValueError, match="not fitted"):
        DataMixingLaw().predict(np.array([0.5, 0.5]))


def test_dict_round_trip_and_errors():
    law = DataMixingLaw(train_domains=("a", "b", "c"), val_domains=("a", "b", "c"), params=TRUE)
    back = DataMixingLaw.from_dict(law.to_dict())
    m = _mixtures(5, 9)
    np.testing.assert_allclose(back.predict(m), TRUE.predict(m))
    d = law.to_dict()
    d["t"] = [[0.0]]
    with pytest.raises(ValueError, match="shapes"):
        DataMixingLaw.from_dict(d)
    with pytest.raises(ValueError, match="kind"):
        DataMixingLaw.from_dict({"kind": "other"})


def test_critical_proportion_solves_the_law_along_the_line():
    q = np.array([0.0, 0.7, 0.3])
    lo, hi = TRUE.predict(q)[0], TRUE.predict(np.array([1.0, 0, 0]))[0]
    target = 0.5 * (lo + hi)
    p = critical_proportion(TRUE, 0, 0, target, new_mixture=q)
    assert 0 < p < 1
    assert TRUE.predict(p * np.array([1.0, 0, 0]) + (1 - p) * q)[0] == pytest.approx(target)
    with pytest.raises(ValueError, match="asymptote"):
        critical_proportion(TRUE, 0, 0, 0.5)
    with pytest.raises(ValueError, match="0 on the original"):
        critical_proportion(TRUE, 0, 0, target, new_mixture=np.array([0.2, 0.5, 0.3]))
