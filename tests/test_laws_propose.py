"""Mixture proposal under availability caps: feasibility, optimality, the authors' grid."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.laws import (
    DataMixingLaw,
    MixtureLawParams,
    halving_grid,
    project_capped_simplex,
    propose_mixture,
)

LAW = DataMixingLaw(
    train_domains=("web", "code", "books"), val_domains=("web", "code", "books"),
    params=MixtureLawParams(log_c=np.log([1.0, 2.0, 1.5]), log_k=np.array([0.0, -0.5, 0.2]),
                            t=np.array([[-2.0, 0.2, 0.1], [0.3, -1.5, 0.0], [0.0, 0.2, -3.0]])))


def _dense_simplex(step: float = 0.0025) -> np.ndarray:
    n = int(round(1 / step))
    pts = [(i, j, n - i - j) for i in range(n + 1) for j in range(n + 1 - i)]
    return np.array(pts, dtype=np.float64) / n


def test_convex_proposal_beats_a_dense_grid_and_respects_caps():
    grid = _dense_simplex()
    for caps in (None, {"books": 0.2}, {"web": 0.3, "books": 0.25}):
        r = LAW.propose(caps=caps)
        cap = np.array([1.0 if caps is None else caps.get(d, 1.0) for d in LAW.train_domains])
        assert abs(r.sum() - 1) < 1e-12 and np.all(r >= 0) and np.all(r <= cap)
        feasible = grid[np.all(grid <= cap + 1e-12, axis=1)]
        best = LAW.predict_total(feasible).min()
        assert LAW.predict_total(r)[0] <= best + 1e-12
        assert LAW.predict_total(r)[0] >= best - 1e-3  # the grid is fine enough to come close


def test_weights_steer_the_proposal():
    only_code = LAW.propose(weights={"code": 1.0})
    only_books = LAW.propose(weights={"books": 1.0})
    assert only_code[1] > 0.9 and only_books[2] > 0.9
    with pytest.raises(ValueError, match="unknown validation domain"):
        LAW.propose(weights={"wiki": 1.0})
    with pytest.raises(ValueError, match="not all zero"):
        LAW.propose(weights=[0, 0, 0])


def test_infeasible_or_bad_caps_are_rejected():
    with pytest.raises(ValueError, match="caps sum to 0.5"):
        LAW.propose(caps={"web": 0.2, "code": 0.2, "books": 0.1})
    with pytest.raises(ValueError, match="unknown training domain"):
        LAW.propose(caps={"wiki": 0.5})
    with pytest.raises(ValueError, match="finite and >= 0"):
        LAW.propose(caps=[0.5, -1, 1])
    with pytest.raises(ValueError, match="unknown method"):
        LAW.propose(method="simplex")


def _authors_dfs(max_size, grid=1 / 16):
    """pipeline/find_opt.py ``dfs`` (yegcjs/mixinglaws), transcribed for comparison."""
    def dfs(depth, rs):
        results = []
        if depth == len(max_size) - 1:
            r = 1 - sum(rs)
            if 0 <= r <= max_size[depth]:
                results.append(rs + [r])
        else:
            for s in range(0, 1 + int(max_size[depth] / grid)):
                r = grid * int(max_size[depth] / grid) * (2 ** (-s))
                if r < grid:
                    r = 0.0
                results += dfs(depth + 1, rs + [r])
        return results
    return {tuple(np.round(r, 9)) for r in dfs(0, [])}


def test_halving_grid_matches_the_authors_enumeration():
    caps = [1, 1, 0.5857, 0.2588, 0.2254, 0.1779, 0.1727]  # find_opt.py max_size
    ours = {tuple(np.round(r, 9)) for r in halving_grid(np.array(caps))}
    assert ours == _authors_dfs(caps)


def test_grid_method_returns_the_best_grid_point():
    caps = np.array([1.0, 0.6, 0.3])
    cand = halving_grid(caps)
    r = LAW.propose(caps=caps, method="grid")
    assert any(np.allclose(r, c) for c in cand)
    assert LAW.predict_total(r)[0] == pytest.approx(LAW.predict_total(cand).min())
    assert LAW.predict_total(LAW.propose(caps=caps))[0] <= LAW.predict_total(r)[0] + 1e-12


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-50, 50), min_size=2, max_size=8),
       st.lists(st.floats(0.0, 1.0), min_size=8, max_size=8))
def test_projection_is_feasible_and_optimal(v, raw_caps):
    v = np.array(v)
    caps = np.array(raw_caps[: len(v)])
    if caps.sum() < 1:
        caps = np.minimum(caps + (1 - caps.sum()) / len(caps) + 1e-9, 1.0)
    x = project_capped_simplex(v, caps)
    assert abs(x.sum() - 1) < 1e-9 and np.all(x >= 0) and np.all(x <= caps)
    # no feasible two-coordinate move gets closer to v (KKT of the projection)
    for i, j in itertools.permutations(range(len(v)), 2):
        eps = min(1e-4, x[i], caps[j] - x[j])
        if eps > 1e-9:
            y = x.copy()
            y[i] -= eps
            y[j] += eps
            assert np.sum((y - v) ** 2) >= np.sum((x - v) ** 2) - 1e-9


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000))
def test_random_problems_are_solved_on_the_capped_simplex(seed):
    rng = np.random.default_rng(seed)
    k, m = int(rng.integers(1, 5)), int(rng.integers(2, 6))
    t = rng.normal(size=(k, m)) * rng.choice([0.1, 2.0, 8.0])
    log_a = rng.normal(size=k)
    caps = np.minimum(rng.uniform(0.15, 1.0, m), 1.0)
    if caps.sum() < 1:
        caps = np.minimum(caps / caps.sum() * 1.05, 1.0)
    r = propose_mixture(log_a, t, caps=caps)
    assert abs(r.sum() - 1) < 1e-12 and np.all(r >= 0) and np.all(r <= caps)
    samples = np.array([project_capped_simplex(x, caps) for x in rng.dirichlet(np.ones(m), 300)])
    f = lambda R: np.exp(log_a[None, :] + np.atleast_2d(R) @ t.T).sum(axis=1)  # noqa: E731
    assert f(r)[0] <= f(samples).min() * (1 + 1e-9)
