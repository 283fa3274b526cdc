"""ModelContext on a tiny LM: gradients vs brute-force autograd, LoRA, merging, no side effects."""

from __future__ import annotations

import pytest
import torch
from test_model_context_lm import DOMAINS, TinyLM, loss_fn, make_batch

from mixstream.model import LoRAAdapter, ModelContext, find_linear_modules, select_params


def snapshot(model: torch.nn.Module) -> dict:
    return {n: (p.detach().clone(), p.requires_grad, None if p.grad is None else p.grad.clone())
            for n, p in model.named_parameters()}


def assert_untouched(model: torch.nn.Module, before: dict) -> None:
    for n, p in model.named_parameters():
        value, flag, grad = before[n]
        assert torch.equal(p.detach(), value), n
        assert p.requires_grad == flag, n
        assert (p.grad is None) == (grad is None), n
        if grad is not None:
            assert torch.equal(p.grad, grad), n


def brute_force_grads(model, batch, names):
    """Per-domain mean-loss gradients with plain .backward() on a copy."""
    out = []
    for k in range(len(DOMAINS)):
        m = model.__class__()
        m.load_state_dict(model.state_dict())
        m.train(model.training)
        mask = batch["domain"] == k
        if not mask.any():
            out.append(None)
            continue
        torch.manual_seed(0)
        loss_fn(m, batch)[mask].mean().backward()
        params = dict(m.named_parameters())
        out.append(torch.cat([params[n].grad.reshape(-1) for n in names]))
    return out


@pytest.fixture
def model():
    m = TinyLM()
    m.eval()  # deterministic forward (dropout off) for the brute-force comparison
    return m


@pytest.mark.parametrize("params", ["lm_head", ["block.ff_out.weight", "embed"], None])
def test_gram_equals_brute_force_autograd(model, params):
    ctx = ModelContext(model, loss_fn, DOMAINS)
    batch = make_batch([0, 1, 1, 2, 0, 2, 2], seed=1)
    names = [n for n, _ in select_params(model, params)]
    ref = torch.stack(brute_force_grads(model, batch, names))
    out = ctx.grad_gram(batch, params)
    torch.testing.assert_close(out.gram, ref @ ref.T, rtol=1e-5, atol=1e-7)
    dg = ctx.domain_grads(batch, params)
    torch.testing.assert_close(dg.grads, ref, rtol=1e-5, atol=1e-7)
    assert dg.counts.tolist() == [2, 2, 3] and dg.present.all()
    assert dg.unflatten(0)[names[0]].shape == dict(model.named_parameters())[names[0]].shape
    per_sample = loss_fn(model, batch).detach()
    for k in range(3):
        assert dg.losses[k].item() == pytest.approx(per_sample[batch["domain"] == k].mean().item())


def test_absent_domains_are_flagged_with_zero_rows(model):
    ctx = ModelContext(model, loss_fn, DOMAINS)
    batch = make_batch([0, 2, 2, 0], seed=2)
    out = ctx.grad_gram(batch, "lm_head")
    assert out.present.tolist() == [True, False, True]
    assert out.counts.tolist() == [2, 0, 2]
    assert torch.all(out.gram[1] == 0) and torch.all(out.gram[:, 1] == 0)
    assert torch.isnan(out.losses[1]) and out.gram[0, 0] > 0


def test_reference_inner_products_match_brute_force(model):
    ctx = ModelContext(model, loss_fn, DOMAINS)
    batch, val = make_batch([0, 1, 2, 1], seed=3), make_batch([2, 2, 0], seed=4)
    out = ctx.grad_gram(batch, "lm_head", reference=val)
    names = [n for n, _ in select_params(model, "lm_head")]
    g = torch.stack(brute_force_grads(model, batch, names))
    m = TinyLM()
    m.load_state_dict(model.state_dict())
    m.eval()
    loss_fn(m, val).mean().backward()
    g_ref = torch.cat([dict(m.named_parameters())[n].grad.reshape(-1) for n in names])
    torch.testing.assert_close(out.ref, g @ g_ref, rtol=1e-5, atol=1e-7)
    full = out.full()
    assert full.shape == (4, 4)
    torch.testing.assert_close(full[3, 3], g_ref @ g_ref, rtol=1e-5, atol=1e-7)


def test_model_is_left_exactly_as_found():
    model = TinyLM()
    model.train()
    model.embed.weight.requires_grad_(False)  # a frozen parameter we ask gradients for
    model.lm_head.weight.grad = torch.full_like(model.lm_head.weight, 0.5)  # pending grads
    before = snapshot(model)
    ctx = ModelContext(model, loss_fn, DOMAINS)
    batch = make_batch([0, 1, 2], seed=5)
    ctx.grad_gram(batch, ["embed", "lm_head"], reference=batch)
    ctx.val_losses([batch])
    clone = ctx.clone()
    with torch.no_grad():
        clone.lm_head.weight.add_(1.0)
    adapter = ctx.lora("ff_proj", rank=2)
    ctx.train_lora(adapter, [batch], steps=2, lr=1e-2)
    assert_untouched(model, before)
    assert model.training and model.drop.training


def test_val_losses_per_domain_and_mode_restored(model):
    model.train()
    ctx = ModelContext(model, loss_fn, DOMAINS)
    b1, b2 = make_batch([0, 1, 0], seed=6), make_batch([1, 0], seed=7)
    got = ctx.val_losses([b1, b2])
    model.eval()
    with torch.no_grad():
        l1, l2 = loss_fn(model, b1), loss_fn(model, b2)
    model.train()
    all_l = torch.cat([l1, l2])
    all_d = torch.cat([b1["domain"], b2["domain"]])
    assert got["web"] == pytest.approx(all_l[all_d == 0].mean().item(), rel=1e-6)
    assert got["code"] == pytest.approx(all_l[all_d == 1].mean().item(), rel=1e-6)
    assert got["books"] != got["books"]  # NaN: no sample
    assert model.training
    by_domain = ctx.val_losses({"books": [make_batch([2, 2], seed=8)]})
    assert by_domain["books"] == by_domain["books"] and by_domain["web"] != by_domain["web"]


def test_clone_is_independent(model):
    ctx = ModelContext(model, loss_fn, DOMAINS)
    clone = ctx.clone(frozen=True)
    assert all(not p.requires_grad for p in clone.parameters())
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        clone.lm_head.weight.zero_()
        model.block["ff_out"].bias.add_(1.0)
    assert not torch.equal(model.lm_head.weight, clone.lm_head.weight)
    assert not torch.equal(model.block["ff_out"].bias, clone.block["ff_out"].bias)
    assert clone.lm_head.weight.data_ptr() != model.lm_head.weight.data_ptr()


def _train(ctx, adapter, domain, steps=40, seed=0):
    batches = [make_batch([domain] * 8, seed=seed + i) for i in range(4)]
    return batches, ctx.train_lora(adapter, batches, steps=steps, lr=3e-2)


def test_lora_trains_only_adapter_and_reduces_loss(model):
    ctx = ModelContext(model, loss_fn, DOMAINS)
    base = ctx.clone(frozen=True)
    base_before = snapshot(base)
    adapter = ctx.lora(["ff_proj", "ff_out"], base=base, rank=4, dropout=0.0)
    a0 = [p.detach().clone() for p in adapter.parameters()]
    assert {n for n, _ in adapter.named_parameters()} == {
        "lora_A.0", "lora_A.1", "lora_B.0", "lora_B.1"}
    batches, history = _train(ctx, adapter, domain=1)
    with torch.no_grad():
        before = torch.cat([loss_fn(base, b) for b in batches]).mean()
        with adapter.attached():
            after = torch.cat([loss_fn(base, b) for b in batches]).mean()
    assert after < before - 0.05, (before, after)
    assert history[-1] < history[0]
    assert_untouched(base, base_before)  # frozen base: values, flags and grads unchanged
    assert all(not torch.equal(p0, p) for p0, p in zip(a0, adapter.parameters()))
    # hooks are gone: the base computes exactly as before
    with torch.no_grad():
        torch.testing.assert_close(torch.cat([loss_fn(base, b) for b in batches]).mean(), before)


def test_adapter_equals_its_merged_delta(model):
    ctx = ModelContext(model, loss_fn, DOMAINS)
    base = ctx.clone(frozen=True)
    adapter = ctx.lora("ff_proj", base=base, rank=3, dropout=0.0)
    batches, _ = _train(ctx, adapter, domain=0, steps=10)
    with torch.no_grad():
        with adapter.attached():
            hooked = loss_fn(base, batches[0])
        with ctx.applied(adapter.deltas(), base):
            merged = loss_fn(base, batches[0])
    torch.testing.assert_close(hooked, merged, rtol=1e-5, atol=1e-6)


def test_merge_coefficients_and_linearity(model):
    ctx = ModelContext(model, loss_fn, DOMAINS)
    base = ctx.clone(frozen=True)
    a1 = ctx.lora("ff_proj", base=base, rank=2, dropout=0.0, seed=1)
    a2 = ctx.lora(["ff_proj", "lm_head"], base=base, rank=2, dropout=0.0, seed=2)
    _train(ctx, a1, domain=0, steps=8)
    _train(ctx, a2, domain=2, steps=8, seed=10)
    d1, d2 = a1.deltas(), a2.deltas()
    only1 = ctx.merge([a1, a2], [1.0, 0.0])
    for n in d1:
        torch.testing.assert_close(only1[n], d1[n])
    assert torch.all(only1["lm_head.weight"] == 0)
    w = (0.3, -1.7)
    mixed = ctx.merge([a1, a2], w)
    for n in set(d1) | set(d2):
        expect = w[0] * d1.get(n, 0) + w[1] * d2.get(n, 0)
        torch.testing.assert_close(mixed[n], expect)
    # deltas are interpolated, not factors: (Σ w B)(Σ w A) differs from Σ w (B A)
    b_mix = 0.5 * a1.lora_B[0] + 0.5 * a2.lora_B[0]
    a_mix = 0.5 * a1.lora_A[0] + 0.5 * a2.lora_A[0]
    factor = a1.scaling * (b_mix @ a_mix)
    assert not torch.allclose(factor, ctx.merge([a1, a2], [0.5, 0.5])["block.ff_proj.weight"])
    # applying restores the exact base weights; merged_model gives a separate model
    before = snapshot(base)
    batch = make_batch([0, 1, 2], seed=20)
    with ctx.applied(mixed, base):
        inside = loss_fn(base, batch).detach()
    assert_untouched(base, before)
    copy = ctx.merged_model(mixed, base=base)
    torch.testing.assert_close(loss_fn(copy, batch).detach(), inside)


def test_bad_input_errors(model):
    ctx = ModelContext(model, loss_fn, DOMAINS)
    batch = make_batch([0, 1], seed=9)
    with pytest.raises(ValueError, match="one loss per sample"):
        ModelContext(model, lambda m, b: loss_fn(m, b).mean(), DOMAINS).grad_gram(batch)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        ctx.grad_gram({**batch, "domain": torch.tensor([0, 5])})
    with pytest.raises(ValueError, match="no 'domain' entry"):
        ctx.grad_gram({"input_ids": batch["input_ids"]})
    with pytest.raises(ValueError, match="'attn' matches no parameter"):
        ctx.grad_gram(batch, "attn")
    with pytest.raises(ValueError, match="not nn.Linear"):
        find_linear_modules(model, "embed")
    with pytest.raises(ValueError, match="one coefficient per adapter"):
        ctx.merge([ctx.lora("lm_head")], [0.5, 0.5])
    with pytest.raises(ValueError, match="trainer's model"):
        ctx.train_lora(LoRAAdapter(model, "lm_head"), [batch], steps=1, lr=1e-3)
    with pytest.raises(ValueError, match="ran out after 1 of 3"):
        ctx.train_lora(ctx.lora("lm_head"), iter([batch]), steps=3, lr=1e-3)
    with pytest.raises(ValueError, match="distinct names"):
        ModelContext(model, loss_fn, ["a", "a"])
    with pytest.raises(ValueError, match="not a parameter"):
        with ctx.applied({"nope.weight": torch.zeros(1)}, ctx.clone()):
            pass


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gram_is_computed_on_the_model_device(model):
    batch = make_batch([0, 1, 2, 2], seed=11)
    cpu = ModelContext(model, loss_fn, DOMAINS).grad_gram(batch, "lm_head").gram
    gpu_model = TinyLM()
    gpu_model.load_state_dict(model.state_dict())
    gpu_model.eval().cuda()
    gpu_batch = {"input_ids": batch["input_ids"].cuda(), "domain": batch["domain"].cuda()}
    out = ModelContext(gpu_model, loss_fn, DOMAINS).grad_gram(gpu_batch, "lm_head")
    assert out.gram.is_cuda
    torch.testing.assert_close(out.gram.cpu(), cpu, rtol=1e-4, atol=1e-6)
