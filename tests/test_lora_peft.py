"""The hand-written LoRA (mixstream.model.lora) computes what peft's LoRA computes.

Its docstring claims peft's formulation on ``nn.Linear`` (``scaling · B A dropout(x)``,
``scaling = alpha / r``, A Kaiming-uniform(a=√5), B zero); these tests put both on copies of the
same layers with the same factors and compare outputs, gradients, merged weights, dropout and
the initial distribution.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from mixstream.model import LoRAAdapter, merge_adapters, merged_copy

peft = pytest.importorskip("peft", reason="peft is in the dev extra (pip install -e '.[dev]')")
stats = pytest.importorskip("scipy.stats")

TARGETS = ["0", "2"]


def _base(seed: int = 0, bias: bool = True) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24, bias=bias), nn.Tanh(), nn.Linear(24, 6, bias=bias))


def _pair(rank: int = 4, alpha: float = 8.0, dropout: float = 0.0, bias: bool = True,
          seed: int = 0):
    """(our adapter on a base, peft on a copy of the same base), with the same random factors."""
    base = _base(seed, bias)
    ours = LoRAAdapter(base, TARGETS, rank=rank, alpha=alpha, dropout=dropout, seed=seed)
    cfg = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout,
                          target_modules=TARGETS)
    theirs = peft.inject_adapter_in_model(cfg, copy.deepcopy(base))
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for i, name in enumerate(ours.module_names):
            ours.lora_B[i].copy_(torch.randn(ours.lora_B[i].shape, generator=gen))
            layer = theirs.get_submodule(name)
            layer.lora_A["default"].weight.copy_(ours.lora_A[i])
            layer.lora_B["default"].weight.copy_(ours.lora_B[i])
    return base, ours, theirs


def _factors(theirs: nn.Module, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    layer = theirs.get_submodule(name)
    return layer.lora_A["default"].weight, layer.lora_B["default"].weight


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("rank,alpha", [(1, 1.0), (4, 8.0), (8, 3.0)])
def test_same_output_and_gradients(rank, alpha, bias):
    base, ours, theirs = _pair(rank, alpha, bias=bias)
    x = torch.randn(5, 12, generator=torch.Generator().manual_seed(7))
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    with ours.attached():
        y1 = base(x1)
    y2 = theirs(x2)
    torch.testing.assert_close(y1, y2)
    assert not torch.allclose(y1, _base(0, bias)(x))  # the adapters do change the output
    target = torch.randn(y1.shape, generator=torch.Generator().manual_seed(8))
    ((y1 - target) ** 2).mean().backward()
    ((y2 - target) ** 2).mean().backward()
    torch.testing.assert_close(x1.grad, x2.grad)
    for i, name in enumerate(ours.module_names):
        a, b = _factors(theirs, name)
        torch.testing.assert_close(ours.lora_A[i].grad, a.grad)
        torch.testing.assert_close(ours.lora_B[i].grad, b.grad)


def test_merged_weights_match_peft_merge():
    base, ours, theirs = _pair(rank=4, alpha=8.0)
    for name in ours.module_names:
        torch.testing.assert_close(ours.deltas()[f"{name}.weight"],
                                   theirs.get_submodule(name).get_delta_weight("default"))
    mine = merged_copy(base, merge_adapters([ours], [1.0]))
    for name in ours.module_names:
        theirs.get_submodule(name).merge()
        torch.testing.assert_close(mine.get_submodule(name).weight,
                                   theirs.get_submodule(name).base_layer.weight)
    x = torch.randn(3, 12)
    torch.testing.assert_close(mine(x), theirs(x))  # peft's merged layers skip the adapter path


def test_dropout_matches_in_train_and_eval_mode():
    base, ours, theirs = _pair(rank=4, alpha=8.0, dropout=0.3)
    x = torch.randn(64, 12)
    for train in (True, False):
        ours.train(train)
        theirs.train(train)
        torch.manual_seed(123)  # one dropout mask per adapted layer, drawn in forward order
        with ours.attached():
            y1 = base(x)
        torch.manual_seed(123)
        y2 = theirs(x)
        torch.testing.assert_close(y1, y2)
    torch.manual_seed(1)
    ours.train(True)
    with ours.attached():  # and dropout is really active in train mode
        assert not torch.allclose(base(x), y2)


def test_initial_factors_have_peft_distribution():
    """B starts at zero (a new adapter changes nothing) and A ~ U(±1/√fan_in), as peft's
    kaiming_uniform_(a=√5): a two-sample KS test against peft's own draw."""
    base = nn.Sequential(nn.Linear(256, 64))
    ours = LoRAAdapter(base, ["0"], rank=16, alpha=16.0, seed=3)
    torch.manual_seed(3)
    theirs = peft.inject_adapter_in_model(
        peft.LoraConfig(r=16, lora_alpha=16.0, target_modules=["0"]), copy.deepcopy(base))
    a, b = _factors(theirs, "0")
    assert torch.count_nonzero(ours.lora_B[0]) == 0 and torch.count_nonzero(b) == 0
    assert float(ours.lora_A[0].detach().abs().max()) <= 1 / 16
    assert float(a.detach().abs().max()) <= 1 / 16
    p = stats.ks_2samp(ours.lora_A[0].detach().numpy().ravel(),
                       a.detach().numpy().ravel()).pvalue
    assert p > 1e-3, p
    x = torch.randn(4, 256)
    with ours.attached():
        torch.testing.assert_close(base(x), theirs(x))
    # a wrong bound (e.g. peft's without a=√5: √(6/fan_in)) would be rejected by the same test
    wide = np.random.default_rng(0).uniform(-np.sqrt(6 / 256), np.sqrt(6 / 256), a.numel())
    assert stats.ks_2samp(wide, a.detach().numpy().ravel()).pvalue < 1e-6
