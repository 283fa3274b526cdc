"""Every mixing method as one function ``(problem, seed, ctx) -> MethodOut``.

Settings follow each paper's defaults scaled to a run of ``p.steps`` steps (warm-ups, update
intervals and probe lengths as fractions of the run); every deviation is listed in README.md.
Target-aware methods (Aioli, FastMix, OP-Mix, DML) see only the *dev* sets, as the diagnostic's
named, weighted target sets (``targets=`` / ``target_weights=``; no target set is a training
domain's shard); the reported loss is on the disjoint *test* sets.

``extra`` is side compute in run-equivalents (one run = ``steps x batch`` training sequences;
a forward-only sequence counts 1/3 of a training one).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from mixstream import MixLoader, MixStream
from mixstream.controllers import ACODM, ADO, ODM, Aioli, DoReMi, FastMix, OPMix
from mixstream.model import ModelContext

from .model import sequence_loss, token_losses
from .problem import Problem
from .trainer import Hooks, RunOut, evaluate, new_model, train


@dataclass
class MethodOut:
    run: RunOut
    extra: float = 0.0                  # side compute, run-equivalents
    seconds: float = 0.0                # wall-clock of everything the method needed
    info: dict[str, Any] = field(default_factory=dict)


class Shared:
    """Per-(problem, seed) cache: the uniform run (DoReMi's reference) and DML's law."""

    def __init__(self) -> None:
        self.uniform: dict[int, RunOut] = {}
        self.dml: dict[str, Any] = {}


def _mix(p: Problem, w: dict[str, float] | np.ndarray) -> dict[str, float]:
    if isinstance(w, dict):
        return {d: float(w[d]) for d in p.domains}
    return {d: float(x) for d, x in zip(p.domains, w)}


def _accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _dev_rows_count(p: Problem) -> int:
    return sum(len(p.dev[n]) for n in p.target)


# ------------------------------------------------------------------------ static baselines
def uniform(p: Problem, seed: int, sh: Shared) -> MethodOut:
    r = train(p, seed, schedule=[(0, p.uniform())])
    sh.uniform[seed] = r
    return MethodOut(r, 0.0, r.seconds)


def proportional(p: Problem, seed: int, sh: Shared) -> MethodOut:
    prop = p.proportional()
    if seed in sh.uniform and all(abs(prop[d] - 1 / p.K) < 1e-9 for d in p.domains):
        # equal domain sizes: proportional *is* uniform; the same run, not a second sample
        u = sh.uniform[seed]
        return MethodOut(u, 0.0, u.seconds, {"same_as": "uniform (equal sizes)"})
    r = train(p, seed, schedule=[(0, prop)])
    return MethodOut(r, 0.0, r.seconds)


# ------------------------------------------------------------------------ online, train loss
class _Plain(Hooks):
    def __init__(self, make: Callable[[MixStream, nn.Module], Any]) -> None:
        self._make = make

    def make(self, stream: MixStream, model: nn.Module) -> Any:
        return self._make(stream, model)


def odm(p: Problem, seed: int, sh: Shared) -> MethodOut:
    # Paper: 2000 warm-up steps of ~50k (4 %), smoothing 0.5, every step.
    r = train(p, seed, hooks=_Plain(lambda s, m: ODM(s, warmup=max(5, p.steps // 25))))
    return MethodOut(r, 0.0, r.seconds)


def ado(p: Problem, seed: int, sh: Shared) -> MethodOut:
    # Paper: refit every 1000 steps from step 1000 (of ~50k); here every run/8, from run/8;
    # prior = the domains' token shares (the paper's "empirical" prior).
    every = max(10, p.steps // 8)
    r = train(p, seed, hooks=_Plain(lambda s, m: ADO(
        s, prior="empirical", start_step=every, update_interval=every,
        ignore_steps=max(2, every // 4), smoothing_window=11, subsample=1)))
    return MethodOut(r, 0.0, r.seconds)


def aioli(p: Problem, seed: int, sh: Shared) -> MethodOut:
    # Six rounds per run, one LearnParams pass (lp_rounds 1) of lp_steps per domain (~1/4 of a
    # round). No EMA: the multiplicative update p <- p exp(eta sum_i w_i A_i) accumulates over
    # rounds. eta 10: the paper's eta = 1 is meant for hundreds of rounds; with six, the
    # normalised A (entries sum to 1) moves the weights by at most e^1 per round, and on
    # the noise diagnostic eta 1 left the noise weight at 0.48 (eta 5: 0.39, eta 10: 0.34).
    lp_steps = max(2, p.steps // (18 * p.K))
    update = max(p.K * lp_steps + 1, p.steps // 6)
    n_val = [0]

    def make(s: MixStream, m: nn.Module) -> Any:
        def validate() -> dict[str, float]:
            n_val[0] += 1
            return evaluate(m, {n: p.dev[n] for n in p.target})
        return Aioli(s, validate=validate, targets=dict(p.target), update_steps=update,
                     lp_rounds=1, lp_steps=lp_steps, eta=10.0, ema=None, seed=seed)
    r = train(p, seed, hooks=_Plain(make))
    extra = n_val[0] * _dev_rows_count(p) / 3 / (p.steps * p.batch)
    return MethodOut(r, extra, r.seconds, {"validations": n_val[0]})


# ------------------------------------------------------------------------ DoReMi (proxy)
class _DoReMiHooks(Hooks):
    def __init__(self, ref: nn.Module) -> None:
        self.ref = ref

    def make(self, stream: MixStream, model: nn.Module) -> Any:
        return DoReMi(stream, reference=self.ref, ref_loss_fn=lambda m, b: token_losses(
            m, torch.as_tensor(b["input_ids"]).long()))

    def loss(self, ctrl: Any, dom: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
        return ctrl.weighted_loss(dom, tok)

    def after(self, ctrl: Any, step: int, batch: dict, dom: torch.Tensor, tok: torch.Tensor,
              lr: float) -> None:
        ctrl.feedback(dom, tok, batch=batch)


def doremi(p: Problem, seed: int, sh: Shared) -> MethodOut:
    # Reference = the uniform run of the same seed (the paper's reference is trained on the
    # baseline mixture); proxy on uniform sampling with DoReMi's loss reweighting; target run on
    # the proxy's averaged weights. Extra: reference run + proxy run + reference forwards.
    ref = sh.uniform[seed]
    proxy = train(p, seed, hooks=_DoReMiHooks(ref.model), eval_sets=False,
                  schedule=[(0, p.uniform())])
    w = proxy.ctrl.final_weights()
    r = train(p, seed, schedule=[(0, _mix(p, w))])
    return MethodOut(r, 2 + 1 / 3, ref.seconds + proxy.seconds + r.seconds,
                     {"searched": _mix(p, w)})


# ------------------------------------------------------------------------ FastMix (proxy)
class _FastMixHooks(Hooks):
    def __init__(self, p: Problem, every: int, lr: float) -> None:
        self.p, self.every, self.lr = p, every, lr

    def make(self, stream: MixStream, model: nn.Module) -> Any:
        ctx = ModelContext(model, sequence_loss, self.p.domains)
        # one micro-batch per named target set per outer update (as released: one per loader)
        val = {n: [{"input_ids": self.p.dev[n][: self.p.batch]}] for n in self.p.target}
        return FastMix(stream, ctx=ctx, val_batches=val, target_weights=dict(self.p.target),
                       params="head.weight", every=self.every, lr=self.lr)

    def loss(self, ctrl: Any, dom: torch.Tensor, tok: torch.Tensor) -> torch.Tensor:
        return ctrl.weighted_loss(dom, tok)

    def after(self, ctrl: Any, step: int, batch: dict, dom: torch.Tensor, tok: torch.Tensor,
              lr: float) -> None:
        ctrl.feedback(dom, tok.mean(1), batch=batch, lr=lr)


def fastmix(p: Problem, seed: int, sh: Shared) -> MethodOut:
    # Search on a proxy run (uniform sampling, loss weights softmax(z)); the target run uses its
    # final mixture. Library defaults (every 5, Adam lr 0.05: p.steps/5 outer updates; the
    # released every 20 / lr 0.01 barely moves z in a run this short).
    every = 5
    search = train(p, seed, hooks=_FastMixHooks(p, every, 0.05), eval_sets=False,
                   schedule=[(0, p.uniform())])
    w = search.ctrl.final_weights()
    r = train(p, seed, schedule=[(0, _mix(p, w))])
    n_outer = p.steps // every
    # each outer step: a forward+backward of the step's batch on the head (~1 train step of that
    # batch) and of the dev batch
    extra = 1 + n_outer * (p.batch + p.batch * len(p.target)) / (p.steps * p.batch)
    return MethodOut(r, extra, search.seconds + r.seconds, {"searched": _mix(p, w)})


# ------------------------------------------------------------------------ AC-ODM (online)
class _ACODMHooks(Hooks):
    def __init__(self, p: Problem, seed: int) -> None:
        self.p, self.seed = p, seed
        self.forced: Iterator[dict] | None = None
        self.loaders: dict[str, Iterator[dict]] = {}

    def make(self, stream: MixStream, model: nn.Module) -> Any:
        for j, d in enumerate(self.p.domains):
            s = MixStream({d: self.p.shard_dirs[d]}, seed=self.seed + 1000 + j)
            self.loaders[d] = iter(MixLoader(s, batch_size=1))
        ctx = ModelContext(model, sequence_loss, self.p.domains)
        kw: dict[str, Any] = {}
        if _accepts(ACODM.__init__, "grad_source"):
            kw["grad_source"] = "backward"
        return ACODM(stream, total_steps=self.p.steps, ctx=ctx, grad_params=["fc2.weight"],
                     norm_params=["fc1.weight", "fc2.weight", "head.weight"], hidden=64,
                     layers=2, minibatch=16, seed=self.seed, **kw)

    def extra_batches(self) -> list[dict]:
        out = []
        for j, d in enumerate(self.p.domains):
            b = next(self.loaders[d])
            out.append({"input_ids": b["input_ids"],
                        "domain": torch.full((len(b["input_ids"]),), j, dtype=torch.long)})
        return out

    def backward(self, ctrl: Any, model: nn.Module, parts: list, total: torch.Tensor) -> None:
        rec = getattr(ctrl, "recorder", None)
        if rec is None or getattr(ctrl, "grad_source", "extra") != "backward":
            total.backward()
            return
        n = sum(t.shape[0] for _, t in parts)
        # the mixed batch first, then one backward per single-domain micro-batch, recorded
        parts[0][1].mean(1).sum().div(n).backward()
        for j, (_b, t) in enumerate(parts[1:]):
            with rec.record(j):
                t.mean(1).sum().div(n).backward()

    def after(self, ctrl: Any, step: int, batch: dict, dom: torch.Tensor, tok: torch.Tensor,
              lr: float) -> None:
        ctrl.feedback(dom, tok.mean(1), batch=batch)


def acodm(p: Problem, seed: int, sh: Shared) -> MethodOut:
    # One forced single-domain sequence per domain per step (the released 1 micro-batch per
    # domain) plus the mixed batch of p.batch - K sequences: equal sequences per step.
    q = Problem(**{**p.__dict__, "batch": max(1, p.batch - p.K)})
    h = _ACODMHooks(q, seed)
    r = train(q, seed, hooks=h)
    src = getattr(r.ctrl, "grad_source", "extra")
    # "backward": per-domain grads come from the training backward (a copy of one matrix per
    # micro-batch): ~0 extra; "extra": one forward + K partial backwards per step (~0.6 run).
    extra = 0.02 if src == "backward" else 0.6
    probe = {"init": acodm_reward_probe(p, new_model(p, seed), seed),
             "end": acodm_reward_probe(p, r.model, seed)}
    return MethodOut(r, extra, r.seconds, {"grad_source": src, "reward_probe": probe})


def acodm_reward_probe(p: Problem, model: nn.Module, seed: int, rows: int = 16
                       ) -> dict[str, Any]:
    """AC-ODM's released reward on ``model``, measured: per-domain mean-loss gradients of
    ``fc2.weight`` on ``rows`` sequences per domain, their Gram matrix, the reward
    ``clip(zscore(s), -3, 3)`` with ``s_k = sum_{j != k} <g_k, g_j>`` (why a controller trained on
    it moves where it does), and the mean gradient cosine within groups of domains."""
    from mixstream.controllers.acodm import acodm_rewards

    parts, doms = [], []
    for j, d in enumerate(p.domains):
        s = MixStream({d: p.shard_dirs[d]}, seed=seed + 77)
        b = next(iter(MixLoader(s, batch_size=rows)))
        parts.append(torch.as_tensor(b["input_ids"]).long())
        doms.append(torch.full((len(parts[-1]),), j, dtype=torch.long))
    ctx = ModelContext(model, sequence_loss, p.domains)
    g = ctx.domain_grads({"input_ids": torch.cat(parts), "domain": torch.cat(doms)},
                         ["fc2.weight"]).grads.double()
    gram = (g @ g.T).numpy()
    nrm = np.sqrt(np.diag(gram))
    cos = gram / np.outer(nrm, nrm)
    return {"reward": dict(zip(p.domains, acodm_rewards(gram).round(3).tolist())),
            "cosine": np.round(cos, 3).tolist()}


# ------------------------------------------------------------------------ OP-Mix
def opmix(p: Problem, seed: int, sh: Shared) -> MethodOut:
    prefix = max(1, p.steps // 5)      # the authors' 20 % uniform prefix
    holder: dict[str, Any] = {}
    # The named target sets (dev rows) with the target's weights; the authors' published entry
    # point (explicit old probe, collapsed prior); for a new domain the continual recipe.
    # (prefixed: OP-Mix reads a set named like a training domain as that domain's own set)
    val = {f"target:{n}": [{"input_ids": p.dev[n]}] for n in p.target}

    def train_batches(mix: dict[str, float]) -> Any:
        return iter(MixLoader(MixStream(p.shard_dirs, weights=mix, seed=seed + 7),
                              batch_size=p.batch))

    class H(Hooks):
        def make(self, stream: MixStream, model: nn.Module) -> Any:
            ctx = ModelContext(model, sequence_loss, p.domains)
            kw: dict[str, Any] = dict(ctx=ctx, train_batches=train_batches, val_batches=val,
                                      target_weights={f"target:{n}": w
                                                      for n, w in p.target.items()},
                                      old_probe=True,
                                      lora_steps=max(5, p.steps // 5), lora_lr=2 * p.lr,
                                      rank=4, alpha=8, targets=["fc1", "fc2"])
            if p.start_weights is None:
                kw["phases"] = [prefix]
            holder["c"] = OPMix(stream, **kw)
            if p.start_weights is not None:   # continual: the new domain(s) arrive now
                new = [d for d in p.domains if p.start_weights.get(d, 0) == 0]
                holder["c"].add_domains(new, recipe="continual")
            return holder["c"]
    r = train(p, seed, hooks=H(), schedule=[(0, p.start_weights or p.uniform())])
    b = holder["c"].budget()
    extra = (3.0 * b["probe_train_samples"] + b["eval_samples"]) / (3.0 * p.steps * p.batch)
    return MethodOut(r, extra, r.seconds, {"decisions": [
        {"step": d["step"], "components": d["components"], "x": d["x"],
         "weights": d["weights"], "law_t": [law["t"] for law in d["laws"]]}
        for d in holder["c"].decisions]})


# ------------------------------------------------------------------------ Data Mixing Laws
def dml_sample_mixtures(k: int, n: int, seed: int) -> np.ndarray:
    """The authors' design: mixtures on a halving grid with exact zeros (1/2, 1/4, ... shares),
    plus uniform; deterministic."""
    rng = np.random.default_rng(seed)
    out = [np.full(k, 1.0 / k)]
    levels = np.array([0, 1, 2, 4, 8])
    while len(out) < n:
        v = rng.choice(levels, size=k).astype(float)
        if v.sum() == 0:
            continue
        v /= v.sum()
        if not any(np.allclose(v, o) for o in out):
            out.append(v)
    return np.array(out)


DML_SEED = 12345  # the sample runs' seed: not one of the compared seeds


def dml_fit(p: Problem, seed: int = DML_SEED) -> dict[str, Any]:
    """Data Mixing Laws as the paper runs them, scaled down.

    ``2(K+2)`` sample mixtures (the authors' halving-grid design with zeros) are trained for 1/4
    of the steps at constant LR after warm-up (the step law's setting), each target dev set
    evaluated 6 times along the way; a step law ``L(s) = c + (s0/s)^a`` (shared ``a``) per
    (mixture, dev set) extrapolates to ``p.steps``; one explicit mixture law per dev set is
    fitted on the extrapolated losses, and ``propose`` minimises the target-weighted sum.
    """
    from mixstream.laws import DataMixingLaw, PowerLawSettings, fit_shared_alpha_power_law

    n = 2 * (p.K + 2)
    short = max(20, p.steps // 4)
    try:   # the authors' halving-grid design with zeros, as the library samples it
        from mixstream.laws import sample_mixtures
        mixes = np.asarray(sample_mixtures(p.domains, n, seed=seed))
    except ImportError:
        mixes = dml_sample_mixtures(p.K, n, seed)
    sets = list(p.target)
    curves, secs = [], 0.0
    every = max(1, short // 6)
    r = None
    for m in mixes:
        r = train(p, seed, schedule=[(0, _mix(p, m))], steps=short, const_lr=True,
                  curve_every=every, eval_sets=False)
        secs += r.seconds
        curves.append([[c[1][e] for e in sets] for c in r.curve])
    assert r is not None
    steps_x = np.array([c[0] for c in r.curve], dtype=np.float64)
    y = np.asarray(curves)                     # [mixtures, points, sets]
    settings = PowerLawSettings(0.05, 0, 20, tuple(np.linspace(0, np.log(p.steps), 8)),
                                tuple(np.linspace(0.3, 1.0, 6)), n_draws=4)
    pred = np.empty((n, len(sets)))
    step_law = True
    for j in range(len(sets)):
        try:
            law_s = fit_shared_alpha_power_law(steps_x, y[:, :, j].T, settings)
            pred[:, j] = np.asarray(law_s.predict(float(p.steps))).reshape(-1)
        except ValueError:
            pred[:, j], step_law = y[:, -1, j], False
    # 4 x 4 x 6 = 96 starts instead of the authors' 10 x 20 x 30 (a 6-domain fit with those
    # takes minutes here)
    law = DataMixingLaw(log_c_grid=tuple(np.linspace(-2, 1.5, 4)),
                        log_k_grid=tuple(np.linspace(-2, 1, 4)), n_random_t=6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        law = law.fit(mixes, pred, train_domains=p.domains, val_domains=sets)
        w = law.propose([p.target[e] for e in sets])
    loo_v = None
    if getattr(law, "loo_rmse", None) is not None:   # leave-one-out RMSE vs predicting the mean
        loo_v = {"rmse": np.asarray(law.loo_rmse).round(4).tolist(),
                 "baseline": np.asarray(law.loo_baseline).round(4).tolist()}
    fitted = law.predict(mixes)
    extra = n * short / p.steps + n * len(steps_x) * _dev_rows_count(p) / 3 / (p.steps * p.batch)
    return {"weights": _mix(p, w), "extra": extra, "seconds": secs, "mixtures": mixes.tolist(),
            "predicted": pred.tolist(), "fit_mae": float(np.abs(fitted - pred).mean()),
            "warnings": [str(c.message) for c in caught], "loo": loo_v,
            "step_law": step_law, "n": n, "short_steps": short}


def dml(p: Problem, seed: int, sh: Shared) -> MethodOut:
    fit = sh.dml
    r = train(p, seed, schedule=[(0, fit["weights"])])
    return MethodOut(r, fit["extra"], fit["seconds"] + r.seconds, {"searched": fit["weights"]})


METHODS: dict[str, Callable[[Problem, int, Shared], MethodOut]] = {
    "uniform": uniform, "proportional": proportional, "odm": odm, "doremi": doremi, "ado": ado,
    "aioli": aioli, "fastmix": fastmix, "acodm": acodm, "opmix": opmix, "dml": dml,
}
ONLINE = ("odm", "ado", "aioli", "acodm", "opmix")

