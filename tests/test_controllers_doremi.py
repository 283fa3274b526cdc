import numpy as np
import pytest
import torch
from controller_fakes import FakeStream
from controller_harness import assert_on_simplex, check_round_trip

from mixstream.controllers.doremi import DoReMi, doremi_step

D = ["a", "b", "c"]


def test_step_formula():
    alpha = np.full(3, 1 / 3)
    lam = np.array([0.0, 1.0, 0.5])
    got = doremi_step(alpha, lam, eta=1.0, eps=1e-3)
    a = alpha * np.exp(lam)
    np.testing.assert_allclose(got, (1 - 1e-3) * a / a.sum() + 1e-3 / 3)


def test_per_token_clipping_and_absent_domain():
    s = FakeStream(D)
    c = DoReMi(s, eta=1.0, eps=0.0)
    loss = torch.tensor([[2.0, 1.0], [1.0, 1.0]])
    ref = torch.tensor([[1.0, 3.0], [1.0, 1.0]])       # excess per token: [1, 0] and [0, 0]
    c.feedback(torch.tensor([0, 1]), loss, ref_loss=ref)
    np.testing.assert_allclose(c.excess, [0.5, 0.0, 0.0])   # clipped per token, then mean
    # domain a absent now: its last score is reused
    c.feedback(torch.tensor([1]), torch.tensor([[3.0, 3.0]]), ref_loss=torch.tensor([[1.0, 1.0]]))
    np.testing.assert_allclose(c.excess, [0.5, 2.0, 0.0])


def test_high_excess_domain_gains_weight_and_average():
    s = FakeStream(D, batch_size=30)
    c = DoReMi(s)
    excess = torch.tensor([0.1, 0.5, 0.0], dtype=torch.float64)
    alphas = []
    for _ in range(50):
        ids = s.next_batch()
        ref = torch.full((len(ids),), 2.0, dtype=torch.float64)
        c.feedback(ids, ref + excess[ids], ref_loss=ref)
        alphas.append(c.alpha.copy())
        assert_on_simplex(c.alpha, floor=1e-3 / 3)
    assert c.alpha.argmax() == 1 and c.alpha[2] < c.alpha[0]
    avg = np.mean(alphas, axis=0)
    np.testing.assert_allclose(list(c.final_weights().values()), avg / avg.sum())
    # sampling is untouched in the paper's proxy mode; loss weights ∝ alpha / s
    assert len(s.log) == 1
    lw = c.loss_weight_vector()
    np.testing.assert_allclose(lw, c.alpha / c.alpha.sum())  # s uniform


def test_weighted_loss():
    s = FakeStream(["a", "b"], [0.5, 0.5])
    c = DoReMi(s)
    c.alpha = np.array([0.8, 0.2])
    loss = torch.tensor([[1.0, 1.0], [3.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1], [1, 0]])
    out = c.weighted_loss(torch.tensor([0, 1]), loss, mask)
    assert out.item() == pytest.approx((0.8 * 2 + 0.2 * 3) / (0.8 * 2 + 0.2 * 1))
    out.backward()
    assert loss.grad is not None and loss.grad[1, 1] == 0


def test_reference_model_path():
    s = FakeStream(["a", "b"])
    ref_model = torch.nn.Linear(1, 1)
    torch.nn.init.constant_(ref_model.weight, 0.0)
    torch.nn.init.constant_(ref_model.bias, 1.0)

    def ref_fn(model, batch):
        return model(batch["x"]).squeeze(-1)

    c = DoReMi(s, reference=ref_model, ref_loss_fn=ref_fn)
    batch = {"domain": torch.tensor([0, 1]), "x": torch.zeros(2, 1)}
    c.feedback(loss=torch.tensor([3.0, 1.0]), batch=batch)
    np.testing.assert_allclose(c.excess, [2.0, 0.0])
    with pytest.raises(ValueError, match="batch="):
        c.feedback(torch.tensor([0]), torch.tensor([1.0]))


def test_sampling_mode_pushes_alpha():
    s = FakeStream(["a", "b"])
    c = DoReMi(s, apply_to="sampling")
    c.feedback(torch.tensor([0, 1]), torch.tensor([2.0, 1.0]), ref_loss=torch.tensor([1.0, 1.0]))
    assert s.weights == pytest.approx(dict(zip(["a", "b"], c.alpha, strict=True)))
    assert c.loss_weights() is None


def test_bad_args():
    s = FakeStream(["a", "b"])
    with pytest.raises(ValueError, match="eta"):
        DoReMi(s, eta=0)
    with pytest.raises(ValueError, match="reference"):
        DoReMi(s).feedback(torch.tensor([0]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="both"):
        DoReMi(s, reference=torch.nn.Linear(1, 1))


def test_round_trip():
    def losses(step, ids):
        g = torch.Generator().manual_seed(step)
        loss = torch.rand(len(ids), 4, generator=g, dtype=torch.float64) + ids[:, None]
        ref = torch.rand(len(ids), 4, generator=g, dtype=torch.float64) + 1
        return {"loss": loss, "ref_loss": ref}
    check_round_trip(lambda: FakeStream(D), lambda s: DoReMi(s), losses)


def test_reference_trained_on_a_target_set_moves_weights_to_it():
    """target ≠ sources: the reference is trained on target data like domain c only; the
    proxy (uniform sampling, DoReMi loss weights) must end with most weight on c."""
    from test_fastmix import Head, make_batch, mse

    from mixstream.controllers.doremi import train_reference
    torch.manual_seed(0)
    proxy = Head()
    target = [make_batch(torch.full((32,), 2, dtype=torch.long), 50_000 + i) for i in range(4)]
    before = proxy.lm_head.weight.clone()
    ref = train_reference(proxy, mse, target, steps=200, lr=0.05)
    assert torch.equal(proxy.lm_head.weight, before)              # the proxy is untouched
    assert float(mse(ref, target[0]).mean().detach()) < 0.01
    stream = FakeStream(D, batch_size=24)
    dr = DoReMi(stream, reference=ref, ref_loss_fn=mse, eta=0.5)
    opt = torch.optim.SGD(proxy.parameters(), lr=0.02)
    for step in range(60):
        ids = stream.next_batch()
        batch = make_batch(ids, step)
        loss = dr.weighted_loss(ids, mse(proxy, batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        dr.feedback(batch=batch, loss=mse(proxy, batch).detach())
    w = np.array(list(dr.final_weights().values()))
    assert w.argmax() == 2 and w[2] > 0.5, w
