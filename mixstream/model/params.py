"""Choosing parameters or modules of a model by name.

A *name spec* matches a dotted name ``n`` when it equals ``n``, is a dotted prefix of it
(``"lm_head"`` matches ``"lm_head.weight"``), a dotted suffix (``"down.weight"`` matches
``"layers.3.mlp.down.weight"``) or a dotted infix (``"mlp"`` matches ``"layers.3.mlp.up.weight"``)
— so module names work as in peft's ``target_modules``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import nn

ParamSpec = str | Sequence[str] | Sequence[nn.Parameter] | None


def name_matches(name: str, spec: str) -> bool:
    """Whether the dotted ``name`` is matched by ``spec`` (see the module docstring)."""
    return (name == spec or name.startswith(spec + ".") or name.endswith("." + spec)
            or ("." + spec + ".") in ("." + name + "."))


def _listing(names: Sequence[str]) -> str:
    shown = ", ".join(names[:12])
    return shown + (f", ... ({len(names)} in all)" if len(names) > 12 else "")


def select_params(model: nn.Module, spec: ParamSpec = None) -> list[tuple[str, nn.Parameter]]:
    """``(name, parameter)`` pairs chosen by ``spec``, in the model's order.

    ``None``: every parameter that requires grad; a string or list of strings: name specs;
    a list of ``nn.Parameter``: those parameters (they must belong to ``model``).
    """
    named = list(model.named_parameters())
    if spec is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
        if not chosen:
            raise ValueError("no parameter of the model requires grad; name the parameters to use")
        return chosen
    specs = [spec] if isinstance(spec, str) else list(spec)
    if not specs:
        raise ValueError("empty parameter selection; give names, modules or parameters")
    if all(isinstance(s, nn.Parameter) for s in specs):
        by_id = {id(p): n for n, p in named}
        missing = [i for i, s in enumerate(specs) if id(s) not in by_id]
        if missing:
            raise ValueError(f"parameter(s) at position(s) {missing} do not belong to the model")
        wanted = {id(s) for s in specs}
        return [(n, p) for n, p in named if id(p) in wanted]
    if not all(isinstance(s, str) for s in specs):
        raise ValueError("a parameter selection is names or parameters, not a mix of both")
    names = [n for n, _ in named]
    for s in specs:
        if not any(name_matches(n, s) for n in names):  # type: ignore[arg-type]
            raise ValueError(f"{s!r} matches no parameter of the model; parameters: "
                             f"{_listing(names)}")
    return [(n, p) for n, p in named if any(name_matches(n, s) for s in specs)]  # type: ignore[arg-type]


@contextmanager
def requires_grad(params: Sequence[nn.Parameter], flag: bool = True) -> Iterator[None]:
    """Temporarily set ``requires_grad`` on ``params``; the previous flags are restored."""
    saved = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(flag)
        yield
    finally:
        for p, f in zip(params, saved):
            p.requires_grad_(f)


@contextmanager
def training_mode(model: nn.Module, mode: bool) -> Iterator[None]:
    """Temporarily put every submodule in train (``True``) or eval mode; restore each one."""
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.train(mode)
        yield
    finally:
        for m, t in saved:
            m.training = t
