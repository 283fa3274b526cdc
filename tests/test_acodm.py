"""AC-ODM: reward, a DDPG bandit with a known optimum, ODM warm-up, proxy mode, round-trip."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from controller_fakes import FakeStream
from controller_harness import assert_on_simplex, check_round_trip
from hypothesis import given, settings
from hypothesis import strategies as st
from test_fastmix import Head, make_batch, mse

from mixstream.controllers import ACODM, ODM
from mixstream.controllers.acodm import acodm_rewards, zclip
from mixstream.controllers.acodm_agent import DDPGAgent, ReplayPool
from mixstream.controllers.acodm_batches import ForcedDomainBatches, concat_batches
from mixstream.model import ModelContext

torch.set_num_threads(1)
D = ["a", "b", "c"]
SMALL = {"hidden": 16, "layers": 1, "minibatch": 8}


def test_reward_is_standardised_alignment():
    g = np.array([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.1]])   # a, b aligned; c opposes both
    gram = g @ g.T
    s = (gram.sum(1) - np.diag(gram)) / (np.linalg.norm(g, axis=1).mean() + 1e-6)
    r = acodm_rewards(gram)
    np.testing.assert_allclose(r, (s - s.mean()) / s.std())
    assert r[2] == r.min() and r[1] == r.max()
    assert np.all(zclip(np.array([0.0, 0.0, 100.0, 0, 0, 0, 0, 0, 0, 0, 0])) <= 3)
    assert np.all(zclip(np.ones(4)) == 0)


def test_ddpg_actor_is_trained_to_the_best_action():
    """Reward peaks at a* = (0.6, 0.3, 0.1); the actor must move there (released code: never
    steps the actor, which would leave it at its random initial output)."""
    k, sd, target = 3, 4, np.array([0.6, 0.3, 0.1])
    agent = DDPGAgent(sd, k, hidden=32, layers=1, gamma=0.5, tau=0.05, lr=3e-3, weight_decay=0,
                      objective="mean_q", seed=0)
    before = agent.act(np.zeros(sd))
    pool, rng = ReplayPool(1000, sd, k), np.random.default_rng(0)
    for _ in range(300):
        a = rng.dirichlet(np.ones(k))
        pool.add(rng.normal(size=sd) * 0.1, a, -30 * (a - target) ** 2, rng.normal(size=sd) * 0.1)
        if pool.n >= 32:
            agent.update(pool.sample(rng, 32))
    after = agent.act(np.zeros(sd))
    assert np.abs(before - target).sum() > 0.5
    assert np.abs(after - target).sum() < 0.12, after


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 9), st.integers(0, 10_000))
def test_released_rewards_sum_to_zero(k, seed):
    """Why the released actor objective (mean_k Q_k) has no signal: Σ_k r_k = 0 every step."""
    g = np.random.default_rng(seed).normal(size=(k, 7))
    assert abs(acodm_rewards(g @ g.T).sum()) < 1e-9


def _bandit_agent(objective: str, seed: int = 0) -> tuple[DDPGAgent, DDPGAgent]:
    """Domain 0 is always the best aligned (z-scored rewards, independent of the action)."""
    k, sd = 4, 5
    agent = DDPGAgent(sd, k, hidden=32, layers=1, gamma=0.5, tau=0.05, lr=3e-3,
                      objective=objective, seed=seed)   # default weight decay 0.1
    before = copy.deepcopy(agent)
    pool, rng = ReplayPool(2000, sd, k), np.random.default_rng(seed)
    for _ in range(400):
        r = zclip(np.array([2.0, 0.0, 0.3, -0.2]) + 0.3 * rng.normal(size=k))
        pool.add(rng.normal(size=sd), rng.dirichlet(np.ones(k)), r, rng.normal(size=sd))
        if pool.n >= 32:
            agent.update(pool.sample(rng, 32))
    return agent, before


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_action_weighted_actor_weights_the_best_domain(seed):
    """Known answer: the actor must put most mass on domain 0. With the released objective
    (and the former coupled-L2 Adam) it drifts to a random domain or to uniform."""
    agent, _ = _bandit_agent("action_weighted", seed)
    w = np.mean([agent.act(s) for s in np.random.default_rng(9).normal(size=(20, 5))], axis=0)
    assert w.argmax() == 0 and w[0] > 0.6, w


def test_released_objective_never_steps_the_actor():
    agent, before = _bandit_agent("released")
    for p, q in zip(agent.actor.parameters(), before.actor.parameters()):
        assert torch.equal(p, q)
    assert any(not torch.equal(p, q) for p, q in zip(agent.critic.parameters(),
                                                    before.critic.parameters()))
    with pytest.raises(ValueError, match="objective"):
        DDPGAgent(3, 2, objective="mean")


def test_agent_weight_decay_is_decoupled():
    agent = DDPGAgent(3, 2, hidden=8, layers=1)
    assert type(agent.opt_actor) is torch.optim.AdamW
    assert type(agent.opt_critic) is torch.optim.AdamW
    assert agent.opt_actor.defaults["weight_decay"] == 0.1


def fake_inputs(step: int, ids: torch.Tensor) -> dict:
    """Losses per domain + gradients where c conflicts with a and b; 2 weight norms."""
    g = torch.Generator().manual_seed(step)
    loss = torch.tensor([3.0, 2.0, 4.0], dtype=torch.float64)[ids] + 0.1 * torch.rand(
        len(ids), generator=g, dtype=torch.float64)
    base = torch.tensor([[1.0, 0.0], [0.8, 0.6], [-1.0, 0.2]], dtype=torch.float64)
    grads = base + 0.05 * torch.randn(3, 2, generator=g, dtype=torch.float64)
    return {"loss": loss, "grads": grads, "norms": [10.0 + 0.01 * step, 5.0 - 0.02 * step]}


def test_warmup_is_odm_then_actor():
    stream, ref_stream = FakeStream(D, seed=3), FakeStream(D, seed=3)
    ac = ACODM(stream, total_steps=100, warmup=10, n_norms=2, **SMALL)
    odm = ODM(ref_stream, warmup=0)
    for step in range(1, 21):
        ids = stream.next_batch()
        ref_stream.next_batch()
        kw = fake_inputs(step, ids)
        ac.feedback(ids, **kw)
        odm.feedback(ids, kw["loss"])
        if step <= 10:   # the warm-up weights are ODM's smoothed-mean weights
            np.testing.assert_allclose(ac.weight_vector, odm.weight_vector, rtol=1e-12)
        assert_on_simplex(ac.weight_vector)
    assert ac.pool.n == 19 and len(ac.losses["actor"]) == 19
    assert not np.allclose(ac.weight_vector, odm.weight_vector)   # the actor took over
    np.testing.assert_allclose(ac.last_reward, acodm_rewards((fake_inputs(20, ids)["grads"] @
                                                              fake_inputs(20, ids)["grads"].T
                                                              ).numpy()))


def test_proxy_mode_loads_a_frozen_actor(tmp_path):
    src = ACODM(FakeStream(D), total_steps=50, warmup=3, n_norms=2, **SMALL)
    stream = FakeStream(D)
    for step in range(1, 11):
        src.feedback(stream.next_batch(), **fake_inputs(step, stream.next_batch()))
    path = tmp_path / "agent.pt"
    src.save_agent(path)
    stream2 = FakeStream(D)
    proxy = ACODM(stream2, total_steps=500, warmup=3, n_norms=2, agent=path, noise=0, **SMALL)
    frozen = {n: p.clone() for n, p in proxy.agent.actor.named_parameters()}
    for step in range(1, 11):
        ids = stream2.next_batch()
        kw = fake_inputs(step, ids)
        del kw["grads"]                                  # proxy mode needs no gradients
        proxy.feedback(ids, **kw)
        if step > 3:   # frozen actor of the source run, applied to this run's state
            expected = src.agent.act(proxy.prev_state)
            np.testing.assert_allclose(proxy.weight_vector, expected / expected.sum(), rtol=1e-9)
    for n, p in proxy.agent.actor.named_parameters():
        assert torch.equal(p, frozen[n])
    assert proxy.pool.n == 0
    with pytest.raises(ValueError, match="built for"):
        ACODM(FakeStream(D), total_steps=5, n_norms=3, agent=path, **SMALL)


def test_state_round_trip():
    def make(stream):
        return ACODM(stream, total_steps=60, warmup=5, n_norms=2, **SMALL)
    ref = check_round_trip(lambda: FakeStream(D, seed=2), make, fake_inputs, n=12, m=12)
    assert ref[0][0] != ref[-1][0]


def test_with_model_context_and_forced_domain_batches():
    """One single-domain micro-batch per domain per step + a mixed batch; grads via the ctx."""
    torch.manual_seed(0)
    model = Head()
    loaders = {d: (make_batch(torch.zeros(4, dtype=torch.long), 100 * k + i)
                   for i in range(1000)) for k, d in enumerate(D)}
    forced = iter(ForcedDomainBatches(loaders, D))
    stream = FakeStream(D)
    ctx = ModelContext(model, mse, D)
    ac = ACODM(stream, total_steps=40, warmup=4, ctx=ctx, grad_params=["lm_head.weight"],
               norm_params=["lm_head.weight"], **SMALL)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(12):
        micro = next(forced)
        assert [int(b["domain"][0]) for b in micro] == [0, 1, 2]
        mixed = make_batch(stream.next_batch(), step)
        batch = concat_batches(micro + [mixed])
        per_seq = mse(model, batch)
        opt.zero_grad()
        per_seq.mean().backward()
        opt.step()
        ac.feedback(batch["domain"], per_seq.detach(), batch=batch)
    assert ac.pool.n == 11 and ac.prev_state is not None
    assert ac.prev_state.shape == (3 * 3 + 2 * 1 + 1,)
    assert ac.prev_state[-1] == pytest.approx(100 * 12 / 40)
    assert_on_simplex(ac.weight_vector)


def test_recorder_gives_the_extra_pass_gradients_for_free():
    """Gradients differenced around each single-domain micro-batch's backward (θ_t) equal
    ModelContext.domain_grads at θ_t; AC-ODM's reward then needs no extra pass."""
    torch.manual_seed(0)
    model = Head()
    def domain_data(k: int):   # domain k follows W_TRUE[k]
        return (make_batch(torch.full((4,), k, dtype=torch.long), 100 * k + i)
                for i in range(1000))
    loaders = {d: domain_data(k) for k, d in enumerate(D)}
    forced = iter(ForcedDomainBatches(loaders, D))
    stream = FakeStream(D)
    ctx = ModelContext(model, mse, D)
    ac = ACODM(stream, total_steps=40, warmup=2, ctx=ctx, grad_params=["lm_head.weight"],
               norm_params=["lm_head.weight"], grad_source="backward", **SMALL)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    calls = []
    orig = ctx.domain_grads
    ctx.domain_grads = lambda *a, **k: calls.append(1) or orig(*a, **k)  # type: ignore
    for step in range(6):
        micro = next(forced)
        mixed = make_batch(stream.next_batch(), step)
        batch = concat_batches(micro + [mixed])
        expected = orig(concat_batches(micro), ["lm_head.weight"]).grads.double()
        opt.zero_grad()
        for k, mb in enumerate(micro):
            with ac.recorder.record(k):
                (mse(model, mb).sum() / len(batch["domain"])).backward()
        mse(model, mixed).sum().div(len(batch["domain"])).backward()   # not recorded
        g, c = ac.recorder._sum.clone(), ac.recorder._count.clone()
        np.testing.assert_allclose((g / c[:, None]).double().numpy() * len(batch["domain"]) / 4,
                                   expected.numpy(), rtol=1e-5, atol=1e-7)
        opt.step()
        ac.feedback(batch["domain"], mse(model, batch).detach(), batch=batch)
        np.testing.assert_allclose(ac.last_reward,
                                   acodm_rewards((expected @ expected.T).numpy()), atol=1e-5)
    assert calls == [] and ac.recorder.recorded == 0
    ac2 = ACODM(FakeStream(D), total_steps=40, ctx=ctx, grad_params=["lm_head.weight"],
                norm_params=["lm_head.weight"], grad_source="backward", **SMALL)
    with pytest.raises(ValueError, match="recorder.record"):
        ac2.feedback(batch["domain"], mse(model, batch).detach(), batch=batch)


def test_min_weight_floors_the_actors_mixture():
    stream = FakeStream(D, seed=3)
    ac = ACODM(stream, total_steps=100, warmup=2, n_norms=2, min_weight=0.1, **SMALL)
    ac.agent.act = lambda s: np.array([1.0, 0.0, 0.0])        # a collapsed actor
    for step in range(1, 6):
        ids = stream.next_batch()
        ac.feedback(ids, **fake_inputs(step, ids))
    np.testing.assert_allclose(ac.weight_vector, [0.8, 0.1, 0.1], atol=1e-3)
    with pytest.raises(ValueError, match="min_weight"):
        ACODM(FakeStream(D), total_steps=10, n_norms=2, min_weight=0.5)
