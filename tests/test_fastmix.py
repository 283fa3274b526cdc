"""FastMix: hypergradient formula, a synthetic search with a known answer, state round-trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from controller_fakes import FakeStream
from controller_harness import assert_on_simplex, check_round_trip

from mixstream.controllers import FastMix
from mixstream.controllers.fastmix import fastmix_hypergrad, fastmix_preset, softmax
from mixstream.model import ModelContext

torch.set_num_threads(1)
D = ["target", "near", "far"]


def test_hypergrad_matches_autograd():
    rng = np.random.default_rng(0)
    for _ in range(5):
        z, a = rng.normal(size=4), rng.normal(size=4)
        eta, lam = 0.3, 0.2
        zt = torch.tensor(z, requires_grad=True)
        p = torch.softmax(zt, 0)
        # one-step unrolled objective L_val(θ - η Σ p_k g_k) ≈ L_val(θ) - η Σ p_k a_k, plus λH
        obj = -eta * (p * torch.tensor(a)).sum() + lam * (-(p * p.log()).sum())
        (g,) = torch.autograd.grad(obj, zt)
        # the released code adds lam * dH/dz, so descending it lowers the entropy H
        np.testing.assert_allclose(fastmix_hypergrad(z, a, eta, lam), g.numpy(), atol=1e-12)


def test_hypergrad_first_order_in_a_real_model():
    """dL_val(θ - η Σ_k p_k ∇L_k)/dz at small η equals the formula with a_k = <g_val, g_k>."""
    torch.manual_seed(0)
    w = torch.randn(3, 5, dtype=torch.float64)
    xs = [torch.randn(8, 5, dtype=torch.float64) for _ in range(4)]
    ys = [torch.randn(8, 3, dtype=torch.float64) for _ in range(4)]

    def loss(wt, i):
        return ((xs[i] @ wt.T - ys[i]) ** 2).mean()

    w.requires_grad_()
    grads = [torch.autograd.grad(loss(w, k), [w])[0] for k in range(3)]
    g_val = torch.autograd.grad(loss(w, 3), [w])[0]
    a = np.array([float((g_val * g).sum()) for g in grads])
    z = torch.tensor([0.2, -0.1, 0.4], dtype=torch.float64, requires_grad=True)
    eta = 1e-5
    p = torch.softmax(z, 0)
    step = sum(p[k] * grads[k] for k in range(3))
    (gz,) = torch.autograd.grad(loss(w.detach() - eta * step, 3), [z])
    np.testing.assert_allclose(fastmix_hypergrad(z.detach().numpy(), a, eta), gz.numpy(),
                               rtol=1e-3)


class Head(torch.nn.Module):
    """Linear regression with the parameter FastMix reads named like an LM head."""

    def __init__(self) -> None:
        super().__init__()
        self.lm_head = torch.nn.Linear(4, 2, bias=False)


W_TRUE = [torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]]),
          torch.tensor([[0.8, 0, 0.2, 0], [0, 1.0, 0, 0.3]]),
          torch.tensor([[-1.0, 0, 0, 1.0], [0, -1.0, 1.0, 0]])]


def make_batch(ids: torch.Tensor, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(ids), 4, generator=g)
    y = torch.stack([W_TRUE[int(k)] @ xi for k, xi in zip(ids, x)])
    return {"x": x, "y": y, "domain": ids}


def mse(model, batch):
    return ((model.lm_head(batch["x"]) - batch["y"]) ** 2).mean(1)


def test_search_finds_the_source_matching_the_target():
    """Validation data = source 'target': p must concentrate there (known answer)."""
    torch.manual_seed(0)
    model = Head()
    stream = FakeStream(D, batch_size=24)
    val = [make_batch(torch.zeros(32, dtype=torch.long), 10_000 + i) for i in range(4)]
    fm = FastMix(stream, ctx=ModelContext(model, mse, D), val_batches=val, every=2, lr=0.05)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    assert np.allclose(stream.weights_at(0), 1 / 3)          # uniform sampling during search
    for step in range(300):
        ids = stream.next_batch()
        batch = make_batch(ids, step)
        loss = fm.weighted_loss(ids, mse(model, batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        fm.feedback(batch=batch, lr=0.05)
    p = np.array(list(fm.final_weights().values()))
    assert_on_simplex(p)
    assert p[0] > 0.6 and p[0] > p[1] > p[2], p
    assert len(stream.log) == 1                              # sampling never changed
    assert fm.outer_steps == 150
    # the model trained with these loss weights fits the target better than with uniform
    assert float(mse(model, val[0]).mean().detach()) < 0.05


def test_sampling_mode_pushes_p_and_absent_sources_use_zero():
    stream = FakeStream(D)
    fm = FastMix(stream, apply_to="sampling", lr=0.1)
    assert fm.loss_weights() is None
    # source 0 helps, 2 hurts, 1 absent (a = 0 although a value is given)
    for _ in range(20):
        fm.observe_gradients({"ref": [1.0, 50.0, -1.0], "present": [True, False, True]})
    w = stream.weights_at(10**9)
    assert w[0] > w[1] > w[2]
    np.testing.assert_allclose(w, softmax(fm.z))


def test_loss_weighting_is_self_normalised():
    stream = FakeStream(D)
    fm = FastMix(stream)
    fm.z = np.log(np.array([0.5, 0.3, 0.2]))
    loss = torch.tensor([1.0, 2.0, 4.0, 8.0])
    dom = torch.tensor([0, 1, 2, 2])
    w = np.array([0.5, 0.3, 0.2, 0.2])
    assert float(fm.weighted_loss(dom, loss)) == pytest.approx(float(w @ loss.numpy() / w.sum()))
    per_tok = loss[:, None].expand(4, 3)
    assert float(fm.weighted_loss(dom, per_tok)) == pytest.approx(float(w @ loss.numpy() / w.sum()))


def test_bad_inputs():
    with pytest.raises(ValueError, match="both ctx"):
        FastMix(FakeStream(D), ctx=object())
    with pytest.raises(ValueError, match="3 values"):
        FastMix(FakeStream(D)).observe_gradients({"ref": [1.0], "present": [True]})


def test_state_round_trip():
    torch.manual_seed(0)
    model = Head()
    val = [make_batch(torch.zeros(8, dtype=torch.long), 10_000 + i) for i in range(3)]

    def make(stream):
        return FastMix(stream, ctx=ModelContext(model, mse, D), val_batches=val, every=3)

    def loss_fn(step, ids):
        batch = make_batch(ids, step)
        return {"loss": mse(model, batch).detach(), "batch": batch}

    ref = check_round_trip(lambda: FakeStream(D, seed=1), make, loss_fn, n=20, m=20)
    assert ref[0][1] != ref[-1][1]  # the loss weights moved (not vacuous)


def _search(fm, model, stream, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in range(steps):
        ids = stream.next_batch()
        batch = make_batch(ids, step)
        loss = fm.weighted_loss(ids, mse(model, batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        fm.feedback(batch=batch, lr=0.05)
    return np.array(list(fm.final_weights().values()))


def test_defaults_take_enough_outer_updates_to_move():
    """With the released every=20, lr=0.01, 200 steps give 10 outer updates and |Δz| <= 0.1:
    p stays near uniform. The defaults must find the source matching the target."""
    torch.manual_seed(0)
    model = Head()
    stream = FakeStream(D, batch_size=24)
    val = [make_batch(torch.zeros(32, dtype=torch.long), 10_000 + i) for i in range(4)]
    p = _search(FastMix(stream, ctx=ModelContext(model, mse, D), val_batches=val), model,
                stream, 200)
    assert p[0] > 0.5 and p[0] > p[1] > p[2], p
    torch.manual_seed(0)
    model = Head()
    stream = FakeStream(D, batch_size=24)
    released = FastMix(stream, ctx=ModelContext(model, mse, D), val_batches=val,
                       **fastmix_preset("released_pretrain"))
    assert _search(released, model, stream, 200).max() < 0.45     # barely moved


def test_named_weighted_target_sets_not_training_domains():
    """target ≠ sources: targets built from sources 0 and 1, weighted 0.7/0.3; source 2 (which
    conflicts with both) must get the least weight, and reweighting the targets moves p."""
    val = {"t0": [make_batch(torch.zeros(32, dtype=torch.long), 20_000 + i) for i in range(2)],
           "t1": [make_batch(torch.ones(32, dtype=torch.long), 30_000 + i) for i in range(2)]}
    got = []
    for tw in ({"t0": 0.7, "t1": 0.3}, {"t0": 0.0, "t1": 1.0}):
        torch.manual_seed(0)
        model = Head()
        stream = FakeStream(D, batch_size=24)
        fm = FastMix(stream, ctx=ModelContext(model, mse, D), val_batches=val,
                     target_weights=tw)
        got.append(_search(fm, model, stream, 150))
    assert got[0][2] == got[0].min() and got[1][2] == got[1].min(), got
    assert got[1][1] > got[0][1] and got[1][0] < got[0][0], got   # follows the weights
    with pytest.raises(ValueError, match="target_weights"):
        FastMix(FakeStream(D), ctx=ModelContext(Head(), mse, D), val_batches=val,
                target_weights={"zzz": 1.0})


def test_sft_preset_cosine_schedule_and_all_target_batches():
    torch.manual_seed(0)
    model = Head()
    stream = FakeStream(D, batch_size=24)
    val = [make_batch(torch.zeros(8, dtype=torch.long), 10_000 + i) for i in range(3)]
    kw = fastmix_preset("sft", total_steps=40)
    assert kw["betas"] == (0.5, 0.999) and kw["every"] == 10
    fm = FastMix(stream, ctx=ModelContext(model, mse, D), val_batches=val, **kw)
    _search(fm, model, stream, 40)
    assert fm.outer_steps == 4 and fm._cursor[""] == 4 * 3          # all target batches
    assert fm.opt.lr == pytest.approx(0.01 * 0.5 * (1 + np.cos(np.pi * 40 / 40)))
    with pytest.raises(ValueError, match="total_steps"):
        FastMix(FakeStream(D), **fastmix_preset("sft"))
    with pytest.raises(ValueError, match="unknown FastMix preset"):
        fastmix_preset("nope")
