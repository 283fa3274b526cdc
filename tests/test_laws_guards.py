"""Data Mixing Laws guard rails (issue 15): each test fails on the code before them."""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.cli import laws as laws_cli
from mixstream.laws import (
    DataMixingLaw,
    LawWarning,
    MixtureLawParams,
    critical_proportion,
    fit_two_domain,
    parse_table,
    prepare_table,
    read_table,
    sample_mixtures,
)
from mixstream.laws.implicit import ImplicitMixingLaw, compare_laws

TRUE = MixtureLawParams(log_c=np.log([1.0, 2.0, 1.5]), log_k=np.array([0.0, -0.5, 0.2]),
                        t=np.array([[-2.0, 0.2, 0.1], [0.3, -1.5, 0.0], [0.0, 0.2, -3.0]]))
SMALL = dict(log_c_grid=np.linspace(-2, 1.5, 4), log_k_grid=np.linspace(-3, 1, 4), n_random_t=2,
             max_step=20)
PILE = "tests/data/laws/two_domain_pile.csv"


def _quiet_fit(r, y, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LawWarning)
        return DataMixingLaw(**SMALL).fit(r, y, **kw)


def test_fewer_mixtures_than_parameters_is_refused():
    r = sample_mixtures(3, 4, seed=1)                      # 4 < M + 2 = 5
    with pytest.raises(ValueError, match="underdetermined"):
        DataMixingLaw(**SMALL).fit(r, TRUE.predict(r))
    with pytest.warns(LawWarning, match="underdetermined"):
        DataMixingLaw(**SMALL).fit(r, TRUE.predict(r), allow_underdetermined=True, loo=False)
    r = sample_mixtures(3, 6, seed=1)                      # 5 <= 6 < 2 (M + 1) = 8
    with pytest.warns(LawWarning, match="loosely determined"):
        DataMixingLaw(**SMALL).fit(r, TRUE.predict(r), loo=False)


def test_leave_one_out_is_reported_and_flags_a_law_that_learned_nothing():
    r = sample_mixtures(3, 12, seed=2)
    law = _quiet_fit(r, TRUE.predict(r))
    assert law.loo_rmse is not None and law.loo_baseline is not None
    assert np.all(law.loo_rmse < 0.05 * law.loo_baseline)     # noise-free: LOO ≈ 0
    assert law.to_dict()["loo_rmse"] == law.loo_rmse.tolist()
    noise = 3.0 + np.random.default_rng(0).normal(0, 0.05, size=(12, 1))  # no mixture effect
    with pytest.warns(LawWarning, match="leave-one-out error is not below"):
        DataMixingLaw(**SMALL).fit(r, noise)


def test_prediction_far_outside_the_fitted_mixtures_warns():
    r = np.array([[0.2, 0.4, 0.4], [0.3, 0.3, 0.4], [0.25, 0.45, 0.3], [0.3, 0.4, 0.3],
                  [0.2, 0.3, 0.5], [0.35, 0.35, 0.3], [0.25, 0.35, 0.4], [0.3, 0.45, 0.25]])
    law = _quiet_fit(r, TRUE.predict(r), loo=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", LawWarning)
        law.predict(np.array([0.3, 0.35, 0.35]))              # inside: silent
    with pytest.warns(LawWarning, match="outside the fitted mixtures"):
        law.predict(np.array([1.0, 0.0, 0.0]))
    back = DataMixingLaw.from_dict(law.to_dict())
    with pytest.warns(LawWarning, match="outside"):
        back.predict(np.array([1.0, 0.0, 0.0]))


def test_propose_stays_in_the_trust_region_by_default():
    r = np.array([[0.2, 0.4, 0.4], [0.3, 0.3, 0.4], [0.25, 0.45, 0.3], [0.3, 0.4, 0.3],
                  [0.2, 0.3, 0.5], [0.35, 0.35, 0.3], [0.25, 0.35, 0.4], [0.3, 0.45, 0.25]])
    law = _quiet_fit(r, TRUE.predict(r), loo=False)
    free = law.propose(trust_region=False)
    kept = law.propose()
    assert np.any(free > r.max(0) + 0.05)                   # the unconstrained optimum leaves
    assert np.all(kept <= r.max(0) + 1e-9) and abs(kept.sum() - 1) < 1e-9
    assert np.all(law.propose(trust_region=0.1) <= r.max(0) + 0.1 + 1e-9)


def test_one_rule_for_mixtures_that_do_not_sum_to_one():
    r = sample_mixtures(3, 10, seed=3)
    law = _quiet_fit(r, TRUE.predict(r), loo=False)
    with pytest.raises(ValueError, match="sums to 1.0199"):   # accepted silently before
        law.predict(np.array([0.51, 0.5099, 0.0]))
    with pytest.raises(ValueError, match="sums to 1.0199"):
        law.predict_total(np.array([0.51, 0.5099, 0.0]))
    np.testing.assert_allclose(law.predict(np.array([0.5, 0.5005, 0.0])),
                               law.predict(np.array([0.5, 0.5005, 0.0]) / 1.0005))


def test_csv_with_a_byte_order_mark(tmp_path):
    text = "r_a,r_b,loss_a\n0.5,0.5,2.0\n0.25,0.75,2.5\n"
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert read_table(p).train_domains == ("a", "b")
    assert parse_table("\ufeff" + text).train_domains == ("a", "b")


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 7), st.integers(0, 1000))
def test_sample_mixtures_on_the_halving_grid(m, seed):
    n = 2 * (m + 1) + 2
    x = sample_mixtures(m, seed=seed)
    assert x.shape == (n, m) and len({tuple(row) for row in x}) == n
    np.testing.assert_allclose(x.sum(1), 1, atol=1e-12)
    assert np.all(np.round(x * 16) == x * 16) and x.min() >= 0     # multiples of 1/16
    assert np.all(x.max(0) > 0)                                    # every domain trained on
    np.testing.assert_array_equal(x, sample_mixtures(m, seed=seed))


def test_sample_mixtures_include_zeros_and_respect_caps():
    x = sample_mixtures(5, 26, seed=0)
    assert (x == 0).mean() > 0.1
    capped = sample_mixtures(3, 8, caps=[0.25, 1, 1])
    assert capped[:, 0].max() <= 0.25


def test_critical_proportion_by_domain_name():
    t = read_table(PILE).select(step=30000, size=18915328)
    law = _quiet_fit(t.mixtures, t.losses, train_domains=t.train_domains,
                     val_domains=t.val_domains, loo=False)
    target = 3.5669533169533167
    by_name = law.critical_proportion("Pile-CC", "Pile-CC", target)
    assert by_name == critical_proportion(law.params, 1, 1, target)
    with pytest.raises(ValueError, match="unknown domain"):
        law.critical_proportion("web", "Pile-CC", target)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mixstream")
    laws_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_critical_uses_the_papers_two_domain_estimator(capsys):
    """On a two-domain table the CLI gives exactly the notebook estimator's proportion
    (before: it required a law JSON with c fitted freely, 3e-3 away from the paper)."""
    t = read_table(PILE).select(step=30000, size=18915328)
    i = t.train_domains.index("Pile-CC")
    target = 3.5669533169533167
    want = fit_two_domain(t.mixtures[:, i], t.losses[:, t.val_domains.index("Pile-CC")]
                          ).critical_proportion(target)
    assert _cli(["laws", "critical", PILE, "--step", "30000", "--model-size", "18915328",
                 "--val-domain", "Pile-CC", "--original", "Pile-CC", "--target-loss",
                 str(target), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert float(out.split("critical proportion of Pile-CC:")[1].split()[0]) == pytest.approx(
        want, abs=1e-6)


def test_cli_mixture_rule_and_warnings(tmp_path, capsys):
    law = tmp_path / "law.json"
    assert _cli(["laws", "fit", PILE, "--step", "30000", "--model-size", "18915328", "--out",
                 str(law), "--random-t", "1", "--max-step", "5"]) == 0
    err = capsys.readouterr().err
    assert "leave-one-out" in err or "loo" in err or "fitting" in err   # progress / LOO shown
    assert _cli(["laws", "predict", str(law), "--mixture", "Github=0.51,Pile-CC=0.5099"]) == 2
    assert "sums to 1.0199" in capsys.readouterr().err


def test_implicit_law_held_out_error_next_to_the_explicit():
    r = sample_mixtures(3, 12, seed=4)
    y = TRUE.predict(r) + np.random.default_rng(1).normal(0, 0.005, size=(12, 3))
    res = compare_laws(r, y, folds=3, explicit=DataMixingLaw(**SMALL),
                       implicit=ImplicitMixingLaw(n_models=4, steps=300))
    assert set(res) == {"explicit", "implicit", "mean", "folds"}
    assert res["explicit"] < 0.3 * res["mean"]                    # the true law form wins
    assert np.isfinite(res["implicit"])
    imp = ImplicitMixingLaw(n_models=4, steps=300).fit(r, y.mean(1))
    prop = imp.propose()
    assert abs(prop.sum() - 1) < 1e-9 and np.all(prop <= r.max(0) + 1e-9)


def test_size_law_restarts_report_a_spread_and_step_range_is_used():
    from test_laws_nested import FAST_SIZE, FAST_STEP, _table
    t = prepare_table(_table(), target_step=20000, target_size=1e9, step_settings=FAST_STEP,
                      size_settings=FAST_SIZE, size_restarts=2)
    assert t.spread is not None and t.spread.shape == t.losses.shape
    with pytest.raises(Exception, match="checkpoints in range"):
        prepare_table(_table(), target_step=20000, step_settings=FAST_STEP,
                      step_range=(1000, 3000))
    with pytest.raises(ValueError, match="give target_step"):
        prepare_table(_table(), step=1000, step_range=(1000, 3000))


def test_trust_region_and_caps_that_leave_no_mixture_warn_and_use_the_caps():
    r = np.array([[0.6, 0.2, 0.2], [0.5, 0.3, 0.2], [0.55, 0.25, 0.2], [0.6, 0.3, 0.1],
                  [0.5, 0.2, 0.3], [0.45, 0.3, 0.25], [0.5, 0.25, 0.25], [0.6, 0.25, 0.15]])
    law = _quiet_fit(r, TRUE.predict(r), loo=False)
    with pytest.warns(LawWarning, match="leave no mixture"):
        got = law.propose(caps=[0.2, 1.0, 1.0])
    assert got[0] <= 0.2 + 1e-9 and abs(got.sum() - 1) < 1e-9
