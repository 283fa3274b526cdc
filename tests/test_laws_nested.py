"""Step and model-size scaling laws, and nesting them under the mixing law."""

from __future__ import annotations

import numpy as np
import pytest

from mixstream.laws import (
    SIZE_LAW,
    STEP_LAW,
    LawTable,
    PowerLawSettings,
    TableError,
    fit_shared_alpha_power_law,
    prepare_table,
)
from mixstream.laws.scaling import TOKENS_PER_STEP, power_law_inits

# Ground truth L(r, N, D) = c(r) + (n(r)/N)^BETA + (d(r)/D)^ALPHA: at a fixed size it is an exact
# step law (shared α), and its step-law prediction at a fixed D is an exact size law (shared β).
ALPHA, BETA = 0.7, 0.45
MIXES = np.array([[0.2, 0.8], [0.5, 0.5], [0.8, 0.2]])
SIZES = np.array([1e7, 3e7, 1e8, 3e8])
STEPS = np.arange(1000, 13000, 1000)
FAST_STEP = PowerLawSettings(0.05, 5, 20, (17.0, 19.0, 21.0), (0.6, 0.8), n_draws=2)
FAST_SIZE = PowerLawSettings(0.08, 1, 40, (16.0, 18.0, 20.0), (0.4, 0.6), n_draws=2)


def truth(r: np.ndarray, size: float, step: float) -> np.ndarray:
    c = np.array([1.0 + 0.5 * r[1], 2.0 + 0.8 * r[0]])  # two validation domains
    n = np.exp(17.0 - np.array([1.0 * r[0], 1.0 * r[1]]))
    d = np.exp(19.0 - np.array([0.5 * r[0], 0.5 * r[1]]))
    return c + (n / size) ** BETA + (d / (step * TOKENS_PER_STEP)) ** ALPHA


def _table() -> LawTable:
    rows = [(r, n, s) for r in MIXES for n in SIZES for s in STEPS]
    return LawTable(("a", "b"), ("a", "b"), np.array([r for r, _, _ in rows]),
                    np.array([truth(r, n, s) for r, n, s in rows]),
                    steps=np.array([s for _, _, s in rows], dtype=np.int64),
                    sizes=np.array([n for _, n, _ in rows]), source="synthetic")


def test_authors_settings_and_init_quirk():
    assert (STEP_LAW.delta, STEP_LAW.valid_split, STEP_LAW.max_step) == (0.05, 5, 20)
    assert (SIZE_LAW.delta, SIZE_LAW.valid_split, SIZE_LAW.max_step) == (0.08, 1, 100)
    y = np.array([[2.0, 3.0], [1.5, 2.5]])
    inits = power_law_inits(y, STEP_LAW)
    assert inits.shape == (11 * 10 * 50, 5)
    # log c starts between min log L + 1 and + 2, as in the authors' code
    assert np.all(inits[:, 0] >= np.log(1.5) + 1) and np.all(inits[:, 0] <= np.log(1.5) + 2)


def test_power_law_recovers_shared_alpha():
    x = np.geomspace(1e9, 2e10, 10)
    y = np.stack([1.5 + (2e8 / x) ** 0.6, 2.5 + (5e8 / x) ** 0.6], axis=1)
    fit = fit_shared_alpha_power_law(x, y, FAST_STEP)
    assert fit.alpha == pytest.approx(0.6, abs=1e-3)
    np.testing.assert_allclose(fit.predict(1e11),
                               np.array([1.5, 2.5]) + (np.array([2e8, 5e8]) / 1e11) ** 0.6,
                               atol=1e-4)


def test_nested_extrapolation_matches_the_generating_law():
    target_step, target_size = 50_000, 1e9
    out = prepare_table(_table(), target_step=target_step, target_size=target_size,
                        step_settings=FAST_STEP, size_settings=FAST_SIZE)
    assert len(out) == len(MIXES) and set(out.steps.tolist()) == {target_step}
    for r, loss in zip(out.mixtures, out.losses):
        np.testing.assert_allclose(loss, truth(r, target_size, target_step), rtol=2e-4)


def test_table_with_several_steps_needs_a_choice():
    with pytest.raises(TableError, match="--step / --target-step"):
        prepare_table(_table().select(size=1e7))
    one = prepare_table(_table(), step=12000, size=1e8)
    assert len(one) == len(MIXES)
    with pytest.raises(ValueError, match="not both"):
        prepare_table(_table(), step=1000, target_step=2000)


def test_too_few_checkpoints_or_missing_sizes_are_explained():
    t = _table()
    few = t.take(t.steps <= 5000)
    with pytest.raises(TableError, match=r"has 5 checkpoints in range; the step law needs >= 8"):
        prepare_table(few, size=1e7, target_step=20000, step_settings=FAST_STEP)
    drop = ~((t.sizes == 1e8) & np.isclose(t.mixtures[:, 0], 0.2))
    with pytest.raises(TableError, match=r"lacks size\(s\) \[100000000.0\]"):
        prepare_table(t.take(drop), step=12000, target_size=1e9, size_settings=FAST_SIZE)
    with pytest.raises(TableError, match=r"3 model sizes .* needs >= 4"):
        prepare_table(t.take(t.sizes < 3e8), step=12000, target_size=1e9,
                      size_settings=FAST_SIZE)
