"""OP-Mix — on-policy mixing with LoRA probes (Hu et al., arXiv 2605.15220); docs/methods/opmix.md.

One decision (:meth:`OPMix.run_phase`), at the start (after a uniform prefix), at scheduled steps
(``phases``) or when domains are added (:meth:`OPMix.add_domains`):

1. freeze a copy ``θ₀`` of the current model;
2. components ``C = [old] + probes``; probes are the added domains, or every active domain when
   rebalancing; probe ``d`` trains a LoRA adapter on ``θ₀`` with the data mixture
   ``0.9 δ_d + 0.1 w_old``. The ``old`` component is, by ``old_probe``:

   * ``False`` (``pipeline/pretrain.py``, OnPolicyMixExperiment): a *zero* adapter ("old" ≙
     stay at ``θ₀``); candidates are ``θ₀ + Σ_{d≠old} x_d ΔW_d``;
   * ``True`` (``pipeline/pretrain_opm.py``, the authors' published entry point ``opm()``):
     an old LoRA probe trained on ``w_old``; candidates are ``Σ_c x_c (θ₀ + ΔW_c)`` =
     ``θ₀ + Σ_c x_c ΔW_c``, and the default prior is the collapsed one
     ``{old: K/(K+n), d: 1/(K+n)}`` over components (``K`` old domains, ``n`` probes).
     Without an old probe, candidates with a large ``x_old`` carry less adapter mass, so
     "keep the old mix" is confounded with "train less";

3. ``proxy_count`` candidates ``x ~ Dirichlet(1)`` on the ``|C|``-simplex (default
   ``max(12, 2(|C|+1)+2)``: each law has ``|C|+1`` parameters), each simulated by merging
   the adapters' weight *deltas* (not the LoRA factors);
4. every candidate is evaluated on the validation data — one set per active domain, or any
   named *target sets* that are not training domains (``val_batches={"target": ...}``,
   weighted by ``target_weights``);
5. per evaluation set ``L_i(x) = exp(c_i) + exp(t_i·x)``; the mixture minimises
   ``Σ_i w_i exp(t_i·x) + λ KL(E x ‖ q)`` (:mod:`.opmix_fit`; ``w`` uniform unless
   ``target_weights``);
6. ``w[d] = x_old w_old[d] + x_d`` is pushed; the trainer keeps training its *full* model (never
   a merged one) on it — the trainer's model is not modified by the phase.

Continual recipe (``add_domains(names, recipe="continual")``, ``continual_opm_standalone.py``):
two probes, old (``0.9 w_old + 0.1 w_new``) and new (``0.1 w_old + 0.9 w_new``, ``w_new``
uniform over the new domains); 9 fixed points ``e ∈ {0.1, …, 0.9}`` (the new-data fraction)
simulated as ``θ₀ + (1-α) ΔW_old + α ΔW_new`` with ``α = (e - 0.1)/0.8``; the laws are fitted
in data-fraction coordinates ``x = (1-e, e)``; the prior is ``{old leaves: 0.5 w_old, new
leaves: 0.5 w_new}``; the pushed mixture is ``x_old w_old + x_new w_new``.

Data: ``train_batches(mixture: dict[str, float]) -> iterable of batches`` (e.g. a MixLoader on a
fresh ``MixStream`` of the same shards with those weights) and ``val_batches``
``{domain or target name: iterable of batches}``. Budget: :meth:`OPMix.budget` reports probe
samples (LoRA training), evaluation samples and the trainer's samples; ``compute_ratio`` counts
a training sample as 3 forward-equivalents (a LoRA step still back-propagates through the
activations, only the weight-gradient and optimiser work shrink) and an evaluation sample as 1.

Defaults follow the released code (LoRA rank 16, alpha 32, dropout 0.05, ``kl_reg`` 0.05, probe
0.9/0.1, prior uniform over the active domains as in ``pretrain.py``); ``lora_steps`` and
``lora_lr`` must be chosen for the run (released: 0.2 × stage steps, 2 × base lr). LoRA
targets default to every ``nn.Linear`` except the LM head (``exclude`` defaults to
``("lm_head",)`` when no ``targets`` are named, and a linear layer whose weight is tied to another parameter — a tied
embedding/LM head — is never adapted), as the authors exclude the head. Deviations: the LoRA
is :mod:`mixstream.model.lora` (peft-equivalent on ``nn.Linear``), the fit/solver as
documented in :mod:`.opmix_fit`; see ``docs/methods/opmix.md``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from ..feedback import StepFeedback
from .base import Controller, Observer, Requirements, StreamLike
from .opmix_fit import fit_loglinear, propose_kl
from .simplex import as_vector, scale_to_unit_sum, to_dict

Batches = Iterable[Mapping[str, Any]]
logger = logging.getLogger(__name__)


def _set_losses(ctx: Any, val: Mapping[str, Iterable[Any]], model: Any) -> dict[str, float]:
    """Mean loss per named evaluation set (domain or target), eval mode, no grad."""
    from ..model.params import training_mode
    if all(k in ctx.domains for k in val):
        return ctx.val_losses(val, model=model)
    out = {}
    with torch.no_grad(), training_mode(model, False):
        for name, batches in val.items():
            tot, n = 0.0, 0
            for b in batches:
                losses = ctx.loss_fn(model, b)
                tot += float(losses.double().sum())
                n += int(losses.numel())
            if n == 0:
                raise ValueError(f"target set {name!r} has no samples")
            out[name] = tot / n
    return out


def _count(batches: Batches, counter: list[int]) -> Iterator[Mapping[str, Any]]:
    for b in batches:
        counter[0] += len(b["domain"]) if "domain" in b else 1
        yield b


def default_proxy_count(n_components: int) -> int:
    """``max(12, 2(|C|+1) + 2)``: twice the ``|C|+1`` parameters of each law, plus two."""
    return max(12, 2 * (n_components + 1) + 2)


CONTINUAL_POINTS = tuple(round(0.1 * i, 10) for i in range(1, 10))


class OPMix(Controller):
    """On-policy mixing; see the module docstring."""

    requires = Requirements(phase_hook=True, val_losses=True)

    def __init__(self, stream: StreamLike, *, ctx: Any,
                 train_batches: Callable[[dict[str, float]], Batches],
                 val_batches: Mapping[str, Batches], lora_steps: int, lora_lr: float,
                 phases: Sequence[int] = (), targets: str | Sequence[str] | None = None,
                 exclude: str | Sequence[str] | None = None, rank: int = 16,
                 alpha: float = 32.0, dropout: float = 0.05, proxy_count: int | None = None,
                 kl_reg: float = 0.05, probe_weight: float = 0.9,
                 prior: Mapping[str, float] | None = None, fit_steps: int = 30, seed: int = 42,
                 observer: Observer | None = None, old_probe: bool = False,
                 target_weights: Mapping[str, float] | None = None) -> None:
        if lora_steps < 1 or not lora_lr > 0 or (proxy_count is not None and proxy_count < 2):
            raise ValueError(f"OP-Mix needs lora_steps >= 1, lora_lr > 0 and proxy_count >= 2, "
                             f"got {lora_steps}, {lora_lr}, {proxy_count}")
        super().__init__(stream, observer=observer)
        if not val_batches:
            raise ValueError("OP-Mix needs val_batches: {domain or target name: batches}")
        self.ctx, self.train_batches, self.val_batches = ctx, train_batches, dict(val_batches)
        # the authors exclude the LM head; tied heads are excluded by find_linear_modules
        excl = (("lm_head",) if targets is None else ()) if exclude is None else exclude
        self.lora = {"targets": targets, "exclude": excl, "rank": rank, "alpha": alpha,
                     "dropout": dropout}
        self.lora_steps, self.lora_lr = int(lora_steps), float(lora_lr)
        self.phases = sorted(int(p) for p in phases)
        self.proxy_count = None if proxy_count is None else int(proxy_count)
        self.kl_reg, self.probe_weight = float(kl_reg), float(probe_weight)
        self.prior = None if prior is None else as_vector(prior, self.domains, "OP-Mix prior")
        self.fit_steps, self.seed = int(fit_steps), int(seed)
        self.old_probe = bool(old_probe)
        # target sets that are not training domains: evaluate exactly those, weighted
        self.target_mode = any(k not in self.domains for k in self.val_batches)
        if target_weights is not None:
            unknown = [k for k in target_weights if k not in self.val_batches]
            if unknown:
                raise ValueError(f"target_weights for {unknown}, which have no val_batches; "
                                 f"val_batches has {list(self.val_batches)}")
            tw = np.array([float(target_weights.get(k, 0.0)) for k in self.val_batches])
            if not np.all(np.isfinite(tw)) or np.any(tw < 0) or tw.sum() <= 0:
                raise ValueError(f"target_weights must be >= 0 and not all 0, got "
                                 f"{dict(target_weights)}")
        self.target_weights = None if target_weights is None else dict(target_weights)
        self.decisions: list[dict[str, Any]] = []
        self.probe_samples = 0
        self.eval_samples = 0

    def update(self, fb: StepFeedback) -> np.ndarray | None:
        return None

    def feedback(self, domain: torch.Tensor | None = None, loss: torch.Tensor | None = None,
                 **kwargs: Any) -> dict[str, float] | None:
        """Counts steps; runs a decision when the step count reaches one of ``phases``."""
        pushed = super().feedback(domain, loss, **kwargs)
        if self.step in self.phases:
            pushed = self.run_phase() or pushed
        return pushed

    def add_domains(self, names: Sequence[str] | Mapping[str, Any], recipe: str = "probes"
                    ) -> dict[str, float] | None:
        """Bring new domains into the mixture by an OP-Mix decision (expansion).

        ``names``: domains of the stream (zero weight so far), or ``{name: source}`` for domains
        the stream does not have yet — they join the stream first (``stream.add_domains``, at
        weight 0, from the next batch; needs a MixLoader), then the decision brings them in.
        ``recipe="probes"``: one probe per new domain (:meth:`run_phase`); ``"continual"``: the
        authors' continual-learning recipe (old/new probes, 9 data-fraction points).
        """
        if isinstance(names, Mapping):
            unknown = {k: v for k, v in names.items() if k not in self.domains}
            if unknown:
                current = self.stream.weights
                weights = {**current, **{k: 0.0 for k in unknown}}
                self.stream.add_domains(unknown, weights=weights)  # type: ignore[attr-defined]
            names = list(names)
        bad = [d for d in names if d not in self.domains]
        if bad or not names:
            raise ValueError(f"unknown domain(s) {bad}; known: {self.domains}")
        if recipe == "continual":
            return self.run_continual(list(names))
        if recipe != "probes":
            raise ValueError(f"recipe must be 'probes' or 'continual', got {recipe!r}")
        return self.run_phase(new=list(names))

    # ---------------------------------------------------------------- helpers
    def _evals(self, active: Sequence[str]) -> tuple[list[str], np.ndarray | None]:
        """Evaluation sets and their weights (None: the released plain mean)."""
        if self.target_mode:
            evals = list(self.val_batches)
        else:
            evals = sorted(set(active), key=self.domains.index)
            missing = [d for d in evals if d not in self.val_batches]
            if missing:
                raise ValueError(f"no val_batches for domain(s) {missing}; give one set per "
                                 f"active domain or named target sets")
        if self.target_weights is None:
            return evals, None
        return evals, np.array([float(self.target_weights.get(k, 0.0)) for k in evals])

    def _train_probe(self, ctx: Any, base: Any, mix: np.ndarray, seed: int) -> Any:
        counter = [0]
        adapter = ctx.lora(base=base, seed=seed, **self.lora)
        ctx.train_lora(adapter, _count(self.train_batches(to_dict(mix / mix.sum(), self.domains)),
                                       counter), self.lora_steps, self.lora_lr)
        self.probe_samples += counter[0]
        return adapter

    def _evaluate(self, ctx: Any, base: Any, deltas: Any, evals: Sequence[str]) -> list[float]:
        counter = [0]
        val = {d: _count(self.val_batches[d], counter) for d in evals}
        with ctx.applied(deltas, base):
            losses = _set_losses(ctx, val, base)
        self.eval_samples += counter[0]
        return [losses[d] for d in evals]

    def _n_proxies(self, n_comps: int) -> int:
        need = 2 * (n_comps + 1)
        if self.proxy_count is None:
            return default_proxy_count(n_comps)
        if self.proxy_count < need:
            warnings.warn(f"OP-Mix proxy_count={self.proxy_count} for {n_comps} components: each "
                          f"law has {n_comps + 1} parameters, so the fits are loosely "
                          f"determined; use >= {need} (default: proxy_count=None)", stacklevel=3)
        return self.proxy_count

    # --------------------------------------------------------------- decisions
    def run_phase(self, ctx: Any = None, new: Sequence[str] | None = None  # type: ignore[override]
                  ) -> dict[str, float] | None:
        """One OP-Mix decision; returns the pushed weights (None if unchanged)."""
        ctx = self.ctx if ctx is None else ctx
        w_old = self._weights.copy()
        active = [d for d, w in zip(self.domains, w_old) if w > 0]
        probes = list(new) if new is not None else list(active)
        leaves = sorted(set(active) | set(probes), key=self.domains.index)
        evals, ew = self._evals(leaves)
        comps = ["old"] + probes
        base = ctx.clone(frozen=True)
        adapters = []
        if self.old_probe:
            adapters.append(self._train_probe(ctx, base, w_old.copy(), self.seed + 10_000))
        for j, d in enumerate(probes):
            mix = (1 - self.probe_weight) * w_old
            mix[self.domains.index(d)] += self.probe_weight
            adapters.append(self._train_probe(ctx, base, mix, self.seed + j))
        rng = np.random.default_rng(self.seed + len(self.decisions))
        xs = rng.dirichlet(np.ones(len(comps)), size=self._n_proxies(len(comps)))
        table = [self._evaluate(ctx, base, ctx.merge(adapters, (x if self.old_probe else x[1:])
                                                     .tolist()), evals) for x in xs]
        y = np.asarray(table)
        laws = [fit_loglinear(xs, y[:, i], comps.index(d) if d in comps else None,
                              max_step=self.fit_steps, seed=self.seed)
                for i, d in enumerate(evals)]
        expand = np.zeros((self.K, len(comps)))
        expand[:, 0] = w_old
        for j, d in enumerate(probes, start=1):
            expand[self.domains.index(d), j] = 1.0
        keep = [self.domains.index(d) for d in leaves]
        if self.prior is None and self.old_probe:  # pretrain_opm.py: collapsed component prior
            k_old, n = len(active), len(probes)
            q = np.array([k_old / (k_old + n)] + [1.0 / (k_old + n)] * n)
            e_mat = np.eye(len(comps))
        else:
            q = np.ones(len(keep)) if self.prior is None else self.prior[keep]
            e_mat = expand[keep]
        x = propose_kl(np.stack([law.t for law in laws]), e_mat, q, self.kl_reg, weights=ew)
        w = scale_to_unit_sum(np.maximum(expand @ x, 0))
        logger.info("OP-Mix step %d: %d probes (%s), %d proxy mixtures evaluated on %s; "
                    "proposed %s", self.step, len(adapters), ", ".join(probes), len(xs),
                    ", ".join(evals), dict(zip(self.domains, np.round(w, 4).tolist())))
        self.decisions.append({
            "step": self.step, "recipe": "old_probe" if self.old_probe else "probes",
            "components": comps, "evals": evals, "x": x.tolist(),
            "weights": w.tolist(), "candidates": xs.tolist(), "val_losses": y.tolist(),
            "laws": [{"c": law.c, "t": law.t.tolist(), "loss": law.loss} for law in laws]})
        return self._push(w)

    def run_continual(self, new: Sequence[str], ctx: Any = None) -> dict[str, float] | None:
        """The continual-learning recipe (see the module docstring); returns pushed weights."""
        ctx = self.ctx if ctx is None else ctx
        w_old = self._weights.copy()
        if w_old.sum() <= 0:
            raise ValueError("the continual recipe needs a current mixture with weight > 0")
        w_new = np.zeros(self.K)
        w_new[[self.domains.index(d) for d in new]] = 1.0 / len(new)
        active = [d for d, w in zip(self.domains, w_old) if w > 0]
        leaves = sorted(set(active) | set(new), key=self.domains.index)
        evals, ew = self._evals(leaves)
        base = ctx.clone(frozen=True)
        pw = self.probe_weight
        old = self._train_probe(ctx, base, pw * w_old + (1 - pw) * w_new, self.seed + 10_000)
        fresh = self._train_probe(ctx, base, (1 - pw) * w_old + pw * w_new, self.seed)
        es = np.array(CONTINUAL_POINTS)
        table = []
        for e in es:
            a = (e - 0.1) / 0.8
            table.append(self._evaluate(ctx, base, ctx.merge([old, fresh], [1 - a, a]), evals))
        y = np.asarray(table)
        xs = np.stack([1 - es, es], axis=1)          # data-fraction coordinates
        own = {d: (1 if d in new else 0) for d in leaves}
        laws = [fit_loglinear(xs, y[:, i], own.get(d), max_step=self.fit_steps, seed=self.seed)
                for i, d in enumerate(evals)]
        expand = np.stack([w_old / w_old.sum(), w_new], axis=1)
        keep = [self.domains.index(d) for d in leaves]
        q = (0.5 * expand[keep, 0] + 0.5 * expand[keep, 1]) if self.prior is None \
            else self.prior[keep]
        x = propose_kl(np.stack([law.t for law in laws]), expand[keep], q, self.kl_reg,
                       weights=ew)
        w = scale_to_unit_sum(np.maximum(expand @ x, 0))
        logger.info("OP-Mix step %d: continual recipe for new domain(s) %s, new-data share %.3g; "
                    "proposed %s", self.step, ", ".join(new), float(x[1]),
                    dict(zip(self.domains, np.round(w, 4).tolist())))
        self.decisions.append({
            "step": self.step, "recipe": "continual", "components": ["old", "new"],
            "new": list(new), "evals": evals, "x": x.tolist(), "weights": w.tolist(),
            "candidates": xs.tolist(), "val_losses": y.tolist(),
            "laws": [{"c": law.c, "t": law.t.tolist(), "loss": law.loss} for law in laws]})
        return self._push(w)

    def budget(self) -> dict[str, float]:
        """Side compute of all decisions next to the training run so far."""
        train = int(self.stream.consumed_samples)
        side = 3.0 * self.probe_samples + self.eval_samples
        return {"probe_train_samples": self.probe_samples, "eval_samples": self.eval_samples,
                "train_samples": train, "decisions": len(self.decisions),
                "compute_ratio": side / (3.0 * train) if train else float("inf")}

    # no per-domain arrays: decisions are records by name, so a domain-set change keeps them
    domain_state: ClassVar[Mapping[str, str | float] | None] = {}

    def _state(self) -> dict:
        return {"decisions": self.decisions, "probe_samples": self.probe_samples,
                "eval_samples": self.eval_samples}

    def _load_state(self, state: Mapping) -> None:
        self.decisions = list(state["decisions"])
        self.probe_samples = int(state["probe_samples"])
        self.eval_samples = int(state["eval_samples"])
