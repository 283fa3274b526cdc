"""A small LoRA for ``nn.Linear``: low-rank adapters trained on a frozen base model.

For a target ``nn.Linear`` with weight ``W [out, in]`` the adapter holds ``A [r, in]`` and
``B [out, r]`` and adds ``scaling · B A x`` (``scaling = alpha / r``) to the layer's output, with
dropout on the adapter's input — the formulation of Hu et al. (2021) and of peft's ``Linear``
(A: Kaiming-uniform with a = √5, B: zeros, so a new adapter changes nothing). The adapter is
attached with forward hooks only while it is used (:meth:`LoRAAdapter.attached`); the base
model's modules and parameters are never replaced or modified.

Deviation from OP-Mix (which uses peft): peft is not required. peft's adapters on ``nn.Linear``
compute the same function (same outputs, gradients, merged weights, dropout masks and initial
distribution: ``tests/test_lora_peft.py`` puts both on the same layers); this implementation avoids pulling transformers/accelerate into a
data-loading library and keeps the merged weight delta ``ΔW = scaling · B A`` explicit, which is
what OP-Mix interpolates.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mixstream.model.params import name_matches, requires_grad, training_mode


def tied_linear_modules(model: nn.Module) -> list[str]:
    """``nn.Linear`` modules whose weight is also another module's parameter (a tied LM head:
    ``head.weight = embedding.weight``). Its merged delta cannot be applied by parameter name
    (``named_parameters`` lists the shared tensor once, under the other name) and adapting it
    would change the embedding too."""
    owners: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        owners[id(p)] = owners.get(id(p), 0) + 1
    return [n for n, m in model.named_modules()
            if isinstance(m, nn.Linear) and owners.get(id(m.weight), 0) > 1]


def find_linear_modules(model: nn.Module, targets: str | Sequence[str] | None = None,
                        exclude: str | Sequence[str] = ()) -> list[str]:
    """Names of the ``nn.Linear`` modules matched by ``targets`` (all if ``None``) minus ``exclude``.

    With ``targets=None`` linear modules with tied weights (:func:`tied_linear_modules`) are
    left out; naming one in ``targets`` raises.
    """
    excl = [exclude] if isinstance(exclude, str) else list(exclude)
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    modules = dict(model.named_modules())
    tied = tied_linear_modules(model)
    if targets is None:
        chosen = [n for n in linear if n not in tied]
    else:
        tl = [targets] if isinstance(targets, str) else list(targets)
        chosen = []
        for t in tl:
            hits = [n for n in modules if n and name_matches(n, t)]
            if not hits:
                raise ValueError(f"LoRA target {t!r} matches no module; linear modules: {linear}")
            bad = [n for n in hits if not isinstance(modules[n], nn.Linear)
                   and not any(name_matches(x, n) for x in linear)]
            if bad:
                raise ValueError(f"LoRA target {t!r} matches {bad}, which are not nn.Linear and "
                                 f"contain none; linear modules: {linear}")
        chosen = [n for n in linear if any(name_matches(n, t) for t in tl)]
        bad_tied = [n for n in chosen if n in tied]
        if bad_tied:
            raise ValueError(f"LoRA targets {bad_tied} have weights tied to another parameter "
                             f"(e.g. a tied embedding/LM head); exclude them")
    chosen = [n for n in chosen if not any(name_matches(n, e) for e in excl)]
    if not chosen:
        raise ValueError(f"no nn.Linear module left to adapt (targets {targets}, exclude {excl}); "
                         f"linear modules: {linear}")
    return chosen


class LoRAAdapter(nn.Module):
    """Trainable LoRA factors for some ``nn.Linear`` modules of ``base`` (which stays frozen).

    ``adapter.parameters()`` are only the factors; ``adapter.base`` is the model they adapt.
    """

    def __init__(self, base: nn.Module, targets: str | Sequence[str] | None = None, *,
                 exclude: str | Sequence[str] = (), rank: int = 16, alpha: float = 32.0,
                 dropout: float = 0.0, seed: int = 0) -> None:
        super().__init__()
        if rank < 1 or not math.isfinite(alpha) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"need rank >= 1, finite alpha and 0 <= dropout < 1; got {rank}, "
                             f"{alpha}, {dropout}")
        self.__dict__["base"] = base  # not a submodule: parameters() are the factors only
        self.module_names = find_linear_modules(base, targets, exclude)
        self.rank, self.alpha, self.scaling = rank, float(alpha), float(alpha) / rank
        self.dropout = nn.Dropout(dropout)
        gen = torch.Generator().manual_seed(seed)
        self.lora_A = nn.ParameterList()
        self.lora_B = nn.ParameterList()
        for name in self.module_names:
            lin = base.get_submodule(name)
            assert isinstance(lin, nn.Linear)
            w = lin.weight
            fan_in, fan_out = int(lin.in_features), int(lin.out_features)
            bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform_(a=sqrt(5)) bound
            a = torch.rand(rank, fan_in, generator=gen, dtype=torch.float64) * 2 - 1
            self.lora_A.append(nn.Parameter((a * bound).to(dtype=w.dtype, device=w.device)))
            self.lora_B.append(nn.Parameter(torch.zeros(fan_out, rank, dtype=w.dtype,
                                                        device=w.device)))

    base: nn.Module

    def deltas(self) -> dict[str, torch.Tensor]:
        """``{"<module>.weight": scaling · B A}`` — the merged weight change, detached."""
        with torch.no_grad():
            return {f"{n}.weight": self.scaling * (b @ a)
                    for n, a, b in zip(self.module_names, self.lora_A, self.lora_B)}

    def _hook(self, i: int):
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            x = self.dropout(args[0])
            return output + F.linear(F.linear(x, self.lora_A[i]), self.lora_B[i]) * self.scaling
        return hook

    @contextmanager
    def attached(self) -> Iterator[nn.Module]:
        """Within the block ``adapter.base`` computes with the adapter added; hooks removed after."""
        handles = [self.base.get_submodule(n).register_forward_hook(self._hook(i))
                   for i, n in enumerate(self.module_names)]
        try:
            yield self.base
        finally:
            for h in handles:
                h.remove()


def _batches(batches: Iterable[Any], steps: int) -> Iterator[Any]:
    """Yield ``steps`` batches, re-iterating ``batches`` when it runs out (if it can)."""
    done = 0
    while done < steps:
        it = iter(batches)
        got = False
        for b in it:
            got = True
            yield b
            done += 1
            if done == steps:
                return
        if not got or it is batches:
            raise ValueError(f"the batches ran out after {done} of {steps} steps; pass a "
                             f"re-iterable collection or an endless iterator")


def train_lora(adapter: LoRAAdapter, loss_fn, batches: Iterable[Any], steps: int, lr: float,
               weight_decay: float = 0.0) -> list[float]:
    """Train ``adapter`` for ``steps`` AdamW steps on ``mean(loss_fn(base, batch))``.

    The base model is frozen (``requires_grad`` off) and in train mode during training; both
    are restored afterwards. Returns the loss of every step.
    """
    if steps < 1 or not lr > 0:
        raise ValueError(f"need steps >= 1 and lr > 0, got {steps} and {lr}")
    base = adapter.base
    opt = torch.optim.AdamW(adapter.parameters(), lr=lr, weight_decay=weight_decay)
    history: list[float] = []
    with ExitStack() as stack:
        stack.enter_context(requires_grad(list(base.parameters()), False))
        stack.enter_context(training_mode(base, True))
        stack.enter_context(training_mode(adapter, True))
        stack.enter_context(adapter.attached())
        stack.enter_context(torch.enable_grad())
        for batch in _batches(batches, steps):
            loss = loss_fn(base, batch).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
    return history
