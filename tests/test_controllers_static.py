import numpy as np
import pytest
import torch
from controller_fakes import FakeStream
from controller_harness import check_round_trip, const_losses

from mixstream.controllers.sizes import (
    domain_sizes,
    proportional_weights,
    temperature_weights,
    unimax_budgets,
    unimax_weights,
)
from mixstream.controllers.static import StaticMixture


def stats(tokens):
    return {d: {"samples": t // 10, "tokens": t, "bytes": None, "documents": None}
            for d, t in tokens.items()}


def test_unimax_reference_vector():
    """The unimax_sampling PyPI README example (ALGORITHMS.md §3.8)."""
    counts = {"swe": 179955884499, "fas": 184595788282, "ekk": 42541080893,
              "isl": 10027573389, "fao": 549707867}
    sizes = np.array(list(counts.values()), dtype=float)
    b = unimax_budgets(sizes, 250_000_000_000, 4)
    got = dict(zip(counts, b, strict=True))
    assert got["fao"] == pytest.approx(2198831468)
    assert got["isl"] == pytest.approx(40110293556)
    for k in ("ekk", "swe", "fas"):
        assert got[k] == pytest.approx(69230291658.67)
    p = dict(zip(counts, unimax_weights(sizes, 250_000_000_000, 4), strict=True))
    assert p["fao"] == pytest.approx(0.008795325872)
    assert p["isl"] == pytest.approx(0.160441174224)
    assert p["swe"] == pytest.approx(0.2769211666346667)


def test_temperature_limits():
    s = np.array([100.0, 10.0, 1.0, 0.0])
    np.testing.assert_allclose(temperature_weights(s, alpha=1), proportional_weights(s))
    np.testing.assert_allclose(temperature_weights(s, alpha=0), [1 / 3, 1 / 3, 1 / 3, 0])
    q = temperature_weights(s, tau=1 / 0.3)
    np.testing.assert_allclose(q, s**0.3 / (s**0.3).sum())
    with pytest.raises(ValueError, match="exactly one"):
        temperature_weights(s)
    with pytest.raises(ValueError, match="tau"):
        temperature_weights(s, tau=0)


def test_domain_sizes_units():
    st = stats({"a": 300, "b": 100})
    sizes, unit = domain_sizes(st, ["a", "b"])
    assert unit == "tokens" and sizes.tolist() == [300, 100]
    st["b"]["tokens"] = None
    assert domain_sizes(st, ["a", "b"])[1] == "samples"
    with pytest.raises(ValueError, match="unknown for domain"):
        domain_sizes(st, ["a", "b"], "tokens")
    with pytest.raises(ValueError, match="no entry"):
        domain_sizes(st, ["a", "c"])


def test_static_constructors_push_weights():
    s = FakeStream(["a", "b"], sizes=stats({"a": 300, "b": 100}))
    c = StaticMixture.proportional(s)
    assert s.weights == pytest.approx({"a": .75, "b": .25}) and c.rule == "proportional(tokens)"
    c2 = StaticMixture.temperature(s, alpha=0.5)
    w = np.sqrt([3.0, 1.0])
    assert s.weights == pytest.approx(dict(zip("ab", w / w.sum(), strict=True)))
    StaticMixture.unimax(s, budget=300, max_epochs=1)
    assert s.weights == pytest.approx({"a": 2 / 3, "b": 1 / 3})
    # feedback only observes
    before = list(s.log)
    assert c2.feedback(torch.tensor([0, 1]), torch.tensor([1.0, 2.0])) is None
    assert s.log == before


def test_static_rejects_bad_weights():
    s = FakeStream(["a", "b"])
    with pytest.raises(ValueError, match="negative"):
        StaticMixture(s, [1.0, -1.0])
    with pytest.raises(ValueError, match="missing"):
        StaticMixture(s, {"a": 1.0})


def test_round_trip():
    check_round_trip(lambda: FakeStream(["a", "b"]), lambda s: StaticMixture(s, [0.2, 0.8]),
                     const_losses([1.0, 2.0]), n=5, m=5)
