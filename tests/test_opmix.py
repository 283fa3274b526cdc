"""OP-Mix: law fit and KL proposer with known answers; a phase on a tiny model; round-trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from controller_fakes import FakeStream
from controller_harness import assert_on_simplex

from mixstream.controllers import OPMix
from mixstream.controllers.opmix_fit import fit_loglinear, propose_kl
from mixstream.model import ModelContext

torch.set_num_threads(1)
D = ["a", "b"]


def test_law_fit_recovers_known_parameters():
    rng = np.random.default_rng(0)
    x = rng.dirichlet(np.ones(3), size=12)
    t = np.array([-1.5, 0.05, 0.02])
    y = np.exp(0.3) + np.exp(x @ t)
    law = fit_loglinear(x, y, own=0, max_step=20)
    np.testing.assert_allclose(law.t, t, atol=1e-3)
    assert law.c == pytest.approx(0.3, abs=1e-3)


def test_kl_proposal_matches_brute_force():
    t = np.array([[-2.0, 0.0, 0.3], [0.0, -0.5, 0.0]])
    expand = np.array([[0.5, 1.0, 0.0], [0.5, 0.0, 1.0]])     # old = (0.5, 0.5) + two leaves
    q = np.array([0.7, 0.3])
    x = propose_kl(t, expand, q, kl_reg=0.05)
    g = np.linspace(0, 1, 201)
    best, arg = np.inf, None
    for a in g:
        for b in g[g <= 1 - a + 1e-12]:
            cand = np.array([a, b, max(1 - a - b, 0)])
            p = np.maximum(expand @ cand, 1e-12)
            f = np.exp(t @ cand).mean() + 0.05 * p @ np.log(p / q)
            if f < best:
                best, arg = f, cand
    np.testing.assert_allclose(x, arg, atol=0.01)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 2, bias=False)


def make(dom: int, n: int, seed: int) -> dict:
    """Domain a lives on inputs 0-1, b on inputs 2-3: one linear map can fit both."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 4)
    x[:, 2 * dom:2 * dom + 2] = torch.randn(n, 2, generator=g)
    y = x[:, 2 * dom:2 * dom + 2] @ torch.tensor([[1.0, -1.0], [2.0, 0.5]]) * (1 + dom)
    return {"x": x, "y": y, "domain": torch.full((n,), dom, dtype=torch.long)}


def mse(model, batch):
    return ((model.lin(batch["x"]) - batch["y"]) ** 2).mean(1)


def mixed(mixture, n=16):
    rng = np.random.default_rng(0)
    p = np.array([mixture[d] for d in D])
    for i in range(10**6):
        dom = rng.choice(2, size=n, p=p)
        parts = [make(k, int((dom == k).sum()), 1000 * i + k) for k in range(2)]
        yield {key: torch.cat([pp[key] for pp in parts]) for key in parts[0]}


def test_phase_upweights_the_domain_the_model_has_not_learned():
    """θ₀ fits domain a exactly and knows nothing of b: the chosen mixture must favour b."""
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.lin.weight.zero_()
        model.lin.weight[:, :2] = torch.tensor([[1.0, -1.0], [2.0, 0.5]]).T
    before = model.lin.weight.clone()
    stream = FakeStream(D)
    val = {d: [make(k, 32, 99 + k)] for k, d in enumerate(D)}
    op = OPMix(stream, ctx=ModelContext(model, mse, D), train_batches=mixed, val_batches=val,
               lora_steps=60, lora_lr=0.05, rank=2, alpha=2, dropout=0.0, proxy_count=8,
               fit_steps=10, phases=[3])
    for _ in range(3):
        op.feedback(stream.next_batch())
    w = stream.weights_at(10**9)
    assert_on_simplex(w)
    assert len(op.decisions) == 1 and w[1] > 0.65, w
    assert torch.equal(model.lin.weight, before)          # the trainer's model is untouched
    dec = op.decisions[0]
    assert dec["components"] == ["old", "a", "b"] and len(dec["val_losses"]) == 8
    # the law for b's loss falls with b's coordinate; a's barely depends on anything
    assert dec["laws"][1]["t"][2] < -0.5
    b = op.budget()
    assert b["probe_train_samples"] == 2 * 60 * 16 and b["eval_samples"] == 8 * 64
    assert b["compute_ratio"] > 1                          # honest: probes dwarf 3 tiny steps
    json.dumps(stream.state_dict())                        # state is plain data


def test_add_domains_brings_in_a_zero_weight_domain():
    torch.manual_seed(0)
    model = Net()
    stream = FakeStream(D, weights=[1.0, 0.0])
    val = {d: [make(k, 16, 7 + k)] for k, d in enumerate(D)}
    op = OPMix(stream, ctx=ModelContext(model, mse, D), train_batches=mixed, val_batches=val,
               lora_steps=30, lora_lr=0.05, rank=2, alpha=2, dropout=0.0, proxy_count=6,
               fit_steps=5)
    op.add_domains(["b"])
    assert op.decisions[0]["components"] == ["old", "b"]
    assert stream.weights_at(10**9)[1] > 0.2
    with pytest.raises(ValueError, match="unknown"):
        op.add_domains(["zzz"])


def test_state_round_trip_through_the_harness():
    """A decision before the checkpoint and one after: the resumed run decides identically."""
    from controller_harness import check_round_trip, const_losses

    def make_ctrl(stream):
        torch.manual_seed(0)
        val = {d: [make(k, 16, 7 + k)] for k, d in enumerate(D)}
        return OPMix(stream, ctx=ModelContext(Net(), mse, D), train_batches=mixed,
                     val_batches=val, lora_steps=10, lora_lr=0.05, rank=2, alpha=2,
                     dropout=0.0, proxy_count=4, fit_steps=3, phases=[2, 5])

    check_round_trip(lambda: FakeStream(D), make_ctrl, const_losses([1.0, 2.0]), n=3, m=4)


def _fit_a_only() -> Net:
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.lin.weight.zero_()
        model.lin.weight[:, :2] = torch.tensor([[1.0, -1.0], [2.0, 0.5]]).T
    return model


def test_a_target_set_that_is_not_a_training_domain():
    """Target = a named set (b-like data), not one set per domain: the mixture follows it."""
    model = _fit_a_only()
    stream = FakeStream(D)
    op = OPMix(stream, ctx=ModelContext(model, mse, D), train_batches=mixed,
               val_batches={"target": [make(1, 32, 99)]}, lora_steps=60, lora_lr=0.05, rank=2,
               alpha=2, dropout=0.0, fit_steps=10)
    op.run_phase()
    assert op.decisions[0]["evals"] == ["target"]
    assert stream.weights_at(10**9)[1] > 0.65
    with pytest.raises(ValueError, match="target_weights"):
        OPMix(FakeStream(D), ctx=ModelContext(model, mse, D), train_batches=mixed,
              val_batches={"t1": [make(1, 8, 1)]}, lora_steps=1, lora_lr=0.1,
              target_weights={"t2": 1.0})


def test_weighted_targets_follow_the_weights():
    model = _fit_a_only()
    val = {"A": [make(0, 32, 5)], "B": [make(1, 32, 6)]}
    got = []
    for tw in ({"A": 1.0, "B": 0.0}, {"A": 0.0, "B": 1.0}):
        stream = FakeStream(D, weights=[0.5, 0.5])
        op = OPMix(stream, ctx=ModelContext(model, mse, D), train_batches=mixed, val_batches=val,
                   lora_steps=40, lora_lr=0.05, rank=2, alpha=2, dropout=0.0, fit_steps=10,
                   target_weights=tw)
        op.run_phase()
        got.append(stream.weights_at(10**9)[1])
    assert got[1] > got[0] + 0.2, got


def test_old_probe_variant_merges_the_old_adapter():
    """pretrain_opm.py: an old probe on w_old, merged as Σ_c x_c (θ₀ + Δ_c); collapsed prior."""
    model = _fit_a_only()
    stream = FakeStream(D)
    ctx = ModelContext(model, mse, D)
    coefs = []
    orig = ctx.merge
    ctx.merge = lambda ads, c: coefs.append((len(ads), list(c))) or orig(ads, c)  # type: ignore
    op = OPMix(stream, ctx=ctx, train_batches=mixed, val_batches={d: [make(k, 32, 99 + k)]
                                                                  for k, d in enumerate(D)},
               lora_steps=60, lora_lr=0.05, rank=2, alpha=2, dropout=0.0, fit_steps=10,
               old_probe=True)
    op.run_phase()
    dec = op.decisions[0]
    assert dec["recipe"] == "old_probe" and dec["components"] == ["old", "a", "b"]
    assert all(n == 3 and abs(sum(c) - 1) < 1e-9 for n, c in coefs)   # old adapter included
    assert op.budget()["probe_train_samples"] == 3 * 60 * 16          # old probe trained too
    assert stream.weights_at(10**9)[1] > 0.5


def test_continual_recipe_uses_data_fraction_coordinates():
    model = _fit_a_only()
    stream = FakeStream(D, weights=[1.0, 0.0])
    op = OPMix(stream, ctx=ModelContext(model, mse, D), train_batches=mixed,
               val_batches={d: [make(k, 32, 7 + k)] for k, d in enumerate(D)}, lora_steps=40,
               lora_lr=0.05, rank=2, alpha=2, dropout=0.0, fit_steps=10)
    op.add_domains(["b"], recipe="continual")
    dec = op.decisions[0]
    assert dec["recipe"] == "continual" and dec["components"] == ["old", "new"]
    np.testing.assert_allclose(np.asarray(dec["candidates"])[:, 1], np.arange(1, 10) / 10)
    w = stream.weights_at(10**9)
    assert 0.2 < w[1] < 1.0 and abs(w.sum() - 1) < 1e-9
    with pytest.raises(ValueError, match="recipe"):
        op.add_domains(["b"], recipe="nope")


def test_proxy_count_scales_with_components():
    from mixstream.controllers.opmix import default_proxy_count
    assert default_proxy_count(3) == 12 and default_proxy_count(7) == 18   # 6 domains + old
    model = _fit_a_only()
    op = OPMix(FakeStream(D), ctx=ModelContext(model, mse, D), train_batches=mixed,
               val_batches={d: [make(k, 8, k)] for k, d in enumerate(D)}, lora_steps=2,
               lora_lr=0.05, rank=2, alpha=2, dropout=0.0, fit_steps=2, proxy_count=4)
    with pytest.warns(UserWarning, match="loosely determined"):
        op.run_phase()


class TiedLM(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(5, 4)
        self.mlp = torch.nn.Linear(4, 4)
        self.head = torch.nn.Linear(4, 5, bias=False)
        self.head.weight = self.emb.weight   # tied


def test_tied_lm_head_is_not_a_lora_target():
    """Before: default targets adapted the tied head and the merge raised "delta for
    'head.weight', which is not a parameter"."""
    from mixstream.model import find_linear_modules
    model = TiedLM()
    assert find_linear_modules(model) == ["mlp"]
    with pytest.raises(ValueError, match="tied"):
        find_linear_modules(model, ["head"])
    ctx = ModelContext(model, lambda m, b: m.head(m.mlp(m.emb(b["x"]))).logsumexp(-1), ["a"])
    base = ctx.clone(frozen=True)
    ad = ctx.lora(base=base, rank=2)
    with ctx.applied(ctx.merge([ad], [1.0]), base):
        pass
