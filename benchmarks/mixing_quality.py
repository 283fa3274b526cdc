"""Mixing quality on real text: the same tiny GPT trained from scratch with every mixing method.

    python benchmarks/mixing_quality.py [--steps 300] [--corpus DIR] [--methods uniform odm ...]

Methods: uniform, proportional (to training tokens), ODM, DoReMi (proxy on uniform sampling +
reference = the uniform run; target run on its averaged weights), ADO, AC-ODM (online, non-proxy;
one forced single-domain sequence per domain per step from single-domain MixStreams), FastMix
(search run with loss weights, target run on its final mixture), OP-Mix (uniform prefix of 20 %,
then one LoRA-probe decision) and the Data Mixing Laws proposal (fitted from K+2 short runs at
1/4 of the steps). Every run sees the same number of training sequences (``steps x batch``).

Reported per method: per-domain and average validation perplexity at the end, the step at which
the run first reaches the uniform run's final average perplexity (evaluated every
``eval_every`` steps), wall-clock of the run and extra compute (side runs / probes, in
training-sample equivalents). One JSON per method under ``benchmarks/results/mixing_quality/``
(finished methods are skipped; ``--fresh`` recomputes), then a table
(``mixing_quality.md``) and plot (``mixing_quality.png``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from mixstream import MixLoader, MixStream  # noqa: E402
from mixstream.controllers import ACODM, ADO, ODM, DoReMi, FastMix, OPMix, proportional_weights  # noqa: E402
from mixstream.controllers.acodm_batches import (  # noqa: E402
    ForcedDomainBatches,
    concat_batches,
    single_domain_streams,
)
from mixstream.demo.corpus import DemoData, build  # noqa: E402
from mixstream.demo.model import GPTConfig, TinyGPT, token_losses  # noqa: E402
from mixstream.demo.train import sequence_loss  # noqa: E402
from mixstream.laws import DataMixingLaw  # noqa: E402
from mixstream.model import ModelContext  # noqa: E402

RESULTS = os.path.join(HERE, "results")
METHODS = ("uniform", "proportional", "odm", "doremi", "ado", "acodm", "fastmix", "opmix", "dml")


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.out = os.path.join(RESULTS, "mixing_quality")
        os.makedirs(self.out, exist_ok=True)
        work = os.path.join(HERE, "work", "mixing_quality")
        self.data: DemoData = build(work, corpus=args.corpus, vocab_size=args.vocab,
                                    seq_len=args.seq, val_rows=args.val_rows)
        self.D = self.data.domains
        self.K = len(self.D)
        self.cfg = GPTConfig(vocab_size=self.data.vocab_size, seq_len=args.seq,
                             d_model=args.width, n_layer=args.layers, n_head=4)
        self.val = {d: [{"input_ids": torch.from_numpy(r[i:i + 16].astype("int64"))}
                        for i in range(0, len(r), 16)] for d, r in self.data.val.items()}

    # ------------------------------------------------------------------ pieces
    def model(self) -> TinyGPT:
        torch.manual_seed(self.a.seed)
        return TinyGPT(self.cfg)

    def stream(self, weights: dict[str, float] | None = None, seed: int | None = None
               ) -> tuple[MixStream, Any]:
        s = MixStream(self.data.shard_dirs, weights=weights,
                      seed=self.a.seed if seed is None else seed)
        return s, MixLoader(s, batch_size=self.a.batch)

    def evaluate(self, model: torch.nn.Module) -> dict[str, float]:
        model.eval()
        out = {}
        with torch.no_grad():
            for d, bs in self.val.items():
                out[d] = float(torch.cat([sequence_loss(model, b) for b in bs]).mean())
        model.train()
        return out

    def train(self, steps: int, *, weights: dict[str, float] | None = None,
              controller: Callable[[MixStream], Any] | None = None,
              step_hook: Callable[..., Any] | None = None, model: TinyGPT | None = None,
              loss_weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
              evals: bool = True, seed: int | None = None,
              forced: Any = None) -> dict[str, Any]:
        """Train ``steps`` steps; ``step_hook(ctrl, batch, per_seq)`` replaces plain feedback."""
        model = model or self.model()
        opt = torch.optim.AdamW(model.parameters(), lr=self.a.lr, betas=(0.9, 0.95),
                                weight_decay=0.1)
        stream, loader = self.stream(weights, seed)
        ctrl = controller(stream) if controller else None
        curve, t0, it = [], time.perf_counter(), iter(loader)
        forced_it = None if forced is None else iter(forced)
        for step in range(1, steps + 1):
            for g in opt.param_groups:
                g["lr"] = self.a.lr * min(1.0, step / 10)
            batch = next(it)
            if forced_it is not None:  # AC-ODM: one single-domain micro-batch per domain
                batch = concat_batches(next(forced_it) + [batch])
            tl = token_losses(model, torch.as_tensor(batch["input_ids"]))
            per_seq = tl.mean(1)
            dom = torch.as_tensor(batch["domain"])
            loss = loss_weights(dom, per_seq) if loss_weights else per_seq.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if ctrl is not None:
                if step_hook is not None:
                    step_hook(ctrl, batch, per_seq.detach(), tl.detach())
                else:
                    ctrl.feedback(dom, per_seq.detach())
            if evals and (step % self.a.eval_every == 0 or step == steps):
                v = self.evaluate(model)
                curve.append({"step": step, "val": v, "seconds": time.perf_counter() - t0})
        return {"model": model, "ctrl": ctrl, "curve": curve,
                "seconds": time.perf_counter() - t0, "stream": stream}

    # ---------------------------------------------------------------- methods
    def run(self, name: str) -> dict[str, Any]:
        S, B = self.a.steps, self.a.batch
        extra = 0.0  # side compute in training-sample equivalents
        info: dict[str, Any] = {}
        uniform = {d: 1.0 / self.K for d in self.D}
        if name == "uniform":
            r = self.train(S, weights=uniform)
        elif name == "proportional":
            tok = np.array([self.data.tokens[d] for d in self.D], dtype=np.float64)
            r = self.train(S, weights={d: float(x) for d, x in
                                       zip(self.D, proportional_weights(tok))})
        elif name == "odm":
            r = self.train(S, controller=lambda s: ODM(s, warmup=max(5, S // 10)))
        elif name == "ado":
            every = max(10, S // 8)
            r = self.train(S, controller=lambda s: ADO(
                s, prior="uniform", start_step=every, update_interval=every,
                ignore_steps=max(2, every // 4), smoothing_window=11, subsample=1))
        elif name == "doremi":
            ref = self.train(S, weights=uniform, evals=False)["model"]  # = the uniform run
            ref.eval()

            def hook(ctrl: Any, batch: Any, per_seq: Any, tl: Any) -> None:
                with torch.no_grad():
                    ref_tl = token_losses(ref, torch.as_tensor(batch["input_ids"]))
                ctrl.feedback(torch.as_tensor(batch["domain"]), tl, ref_loss=ref_tl)
            holder: dict[str, Any] = {}

            def make(s: MixStream) -> DoReMi:
                holder["c"] = DoReMi(s)
                return holder["c"]
            proxy = self.train(S, controller=make, step_hook=hook, evals=False,
                               loss_weights=lambda d, x: holder["c"].weighted_loss(d, x))
            w = proxy["ctrl"].final_weights()
            extra = 2 * S * B + S * B / 3  # reference run + proxy run + reference forwards
            info["searched_weights"] = w
            r = self.train(S, weights=w)
        elif name == "fastmix":
            holder = {}
            mixed_val = [{"input_ids": torch.cat([self.val[d][0]["input_ids"][:4]
                                                  for d in self.D])}]

            def make_fm(s: MixStream) -> FastMix:
                ctx = ModelContext(holder["m"], sequence_loss, self.D)
                holder["c"] = FastMix(s, ctx=ctx, val_batches=mixed_val, params="tok.weight",
                                      every=10)
                return holder["c"]
            holder["m"] = self.model()

            def fm_hook(ctrl: Any, batch: Any, per_seq: Any, tl: Any) -> None:
                ctrl.feedback(batch=batch, lr=self.a.lr)
            search = self.train(S, controller=make_fm, step_hook=fm_hook, model=holder["m"],
                                evals=False,
                                loss_weights=lambda d, x: holder["c"].weighted_loss(d, x))
            w = search["ctrl"].final_weights()
            extra = S * B + (S // 10) * (B + 4 * self.K)  # search run + hypergradient passes
            info["searched_weights"] = w
            r = self.train(S, weights=w)
        elif name == "acodm":
            forced = single_domain_streams(self.data.shard_dirs, seed=self.a.seed + 1)
            loaders = {d: MixLoader(s, batch_size=1) for d, s in forced.items()}
            main_b = max(1, B - self.K)
            blocks = [f"blocks.{i}.mlp.2.weight" for i in range(self.cfg.n_layer)]
            holder = {"m": self.model()}

            def make_ac(s: MixStream) -> ACODM:
                ctx = ModelContext(holder["m"], sequence_loss, self.D)
                return ACODM(s, total_steps=S, ctx=ctx, grad_params=blocks[-1:],
                             norm_params=blocks, hidden=128, layers=2, minibatch=16)

            def ac_hook(ctrl: Any, batch: Any, per_seq: Any, tl: Any) -> None:
                ctrl.feedback(torch.as_tensor(batch["domain"]), per_seq, batch=batch)
            a_batch = self.a.batch
            self.a.batch = main_b  # equal sequences per step: K forced + B - K mixed
            try:
                r = self.train(S, controller=make_ac, step_hook=ac_hook, model=holder["m"],
                               forced=ForcedDomainBatches(loaders, self.D))
            finally:
                self.a.batch = a_batch
            extra = S * self.K  # grads of one matrix per domain + agent: ~ K extra backwards
        elif name == "opmix":
            prefix = max(1, S // 5)
            holder = {"m": self.model()}

            def train_batches(mix: dict[str, float]) -> Any:
                return iter(self.stream(mix, seed=self.a.seed + 7)[1])

            def make_op(s: MixStream) -> OPMix:
                ctx = ModelContext(holder["m"], sequence_loss, self.D)
                holder["c"] = OPMix(s, ctx=ctx, train_batches=train_batches,
                                    val_batches={d: self.val[d][:1] for d in self.D},
                                    lora_steps=max(5, S // 10), lora_lr=2 * self.a.lr,
                                    rank=4, alpha=8, targets=["qkv", "proj", "mlp.0"],
                                    proxy_count=8, fit_steps=10, phases=[prefix])
                return holder["c"]
            r = self.train(S, weights=uniform, controller=make_op, model=holder["m"])
            b = holder["c"].budget()
            extra = 1.0 * b["probe_train_samples"] + b["eval_samples"] / 3
            info["budget"] = b
            info["searched_weights"] = holder["c"].weights
        elif name == "dml":
            short = max(10, S // 4)
            rng = np.random.default_rng(self.a.seed)
            mixes = np.vstack([np.full(self.K, 1 / self.K),
                               rng.dirichlet(np.ones(self.K), size=self.K + 1)])
            losses = []
            for m in mixes:
                rr = self.train(short, weights={d: float(x) for d, x in zip(self.D, m)},
                                evals=False)
                v = self.evaluate(rr["model"])
                losses.append([v[d] for d in self.D])
            law = DataMixingLaw().fit(mixes, np.asarray(losses), train_domains=self.D,
                                      val_domains=self.D)
            w = {d: float(x) for d, x in zip(self.D, law.propose())}
            extra = len(mixes) * short * B
            info["searched_weights"] = w
            r = self.train(S, weights=w)
        else:
            raise ValueError(f"unknown method {name!r}; choose from {METHODS}")
        final = r["curve"][-1]["val"]
        return {"method": name, "steps": S, "batch": B, "val": final,
                "ppl": {d: math.exp(v) for d, v in final.items()},
                "avg_ppl": float(np.mean([math.exp(v) for v in final.values()])),
                "curve": [{"step": c["step"], "avg_ppl": float(np.mean(
                    [math.exp(v) for v in c["val"].values()]))} for c in r["curve"]],
                "seconds": r["seconds"], "extra_samples": extra,
                "final_weights": r["stream"].weights, **info}


def steps_to_reach(curve: list[dict], target: float) -> int | None:
    for c in curve:
        if c["avg_ppl"] <= target:
            return int(c["step"])
    return None


def report(results: dict[str, dict], out_md: str, out_png: str) -> str:
    base = results.get("uniform")
    target = base["avg_ppl"] if base else None
    domains = list(next(iter(results.values()))["ppl"])
    head = "| method | " + " | ".join(domains) + " | avg ppl | vs uniform | steps to uniform " \
           "final | wall s | extra compute (x run) |"
    lines = [head, "|" + "---|" * (len(domains) + 6)]
    for name, r in results.items():
        rel = "" if target is None else f"{100 * (target - r['avg_ppl']) / target:+.1f}%"
        reach = None if target is None else steps_to_reach(r["curve"], target)
        run_samples = r["steps"] * r["batch"]
        lines.append(f"| {name} | " + " | ".join(f"{r['ppl'][d]:.1f}" for d in domains)
                     + f" | {r['avg_ppl']:.2f} | {rel} | {reach if reach else '-'} | "
                     f"{r['seconds']:.0f} | {r['extra_samples'] / run_samples:.2f} |")
    md = "\n".join(lines)
    with open(out_md, "w") as fh:
        fh.write("# Mixing quality (benchmarks/mixing_quality.py)\n\n" + md + "\n")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, r in results.items():
            ax.plot([c["step"] for c in r["curve"]], [c["avg_ppl"] for c in r["curve"]],
                    label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("average validation perplexity")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_png, dpi=110)
    except ImportError:
        pass
    return md


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--vocab", type=int, default=1024)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--val-rows", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=25)
    p.add_argument("--corpus", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--fresh", action="store_true")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    bench = Bench(a)
    results = {}
    for m in a.methods:
        path = os.path.join(bench.out, f"{m}.json")
        if os.path.exists(path) and not a.fresh:
            with open(path) as fh:
                results[m] = json.load(fh)
            print(f"{m}: done earlier (avg ppl {results[m]['avg_ppl']:.2f})")
            continue
        t0 = time.perf_counter()
        results[m] = bench.run(m)
        with open(path, "w") as fh:
            json.dump(results[m], fh, indent=1)
        print(f"{m}: avg ppl {results[m]['avg_ppl']:.2f} ({time.perf_counter() - t0:.0f}s)")
    print(report(results, os.path.join(RESULTS, "mixing_quality.md"),
                 os.path.join(RESULTS, "mixing_quality.png")))


if __name__ == "__main__":
    main()
