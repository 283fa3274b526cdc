"""Controller overhead per training step, as a fraction of a tiny-model training step.

    python benchmarks/controllers.py [--steps 200] [--domains 6 22] [--threads 1]

Measured in one run: (1) the median time of a training step of the demo's TinyGPT (2.2M
parameters, batch 16 x 128 tokens, AdamW, CPU); (2) for every controller, the time of
``mixer.feedback(...)`` on a real ``MixStream`` + ``MixLoader`` (aggregation, the update, and
``stream.set_weights`` whenever the weights change), with the controller in its active phase.
Loader time is not counted (it is the same with or without a controller).

Costs that are part of an algorithm rather than of the controller are reported separately,
amortised per step: ADO's law refit (on a 10 000-step history, every ``update_interval`` = 1000
steps), Aioli's validation passes ((K * lp_rounds + 1) per ``update_steps`` = 250 steps, each
a forward pass over 32 held-out sequences per domain), DoReMi's reference-model forward
(excluded; about a third of a step). Goal: controller overhead < 1 % of a step.
Results: ``benchmarks/results/controllers.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from mixstream import MixLoader, MixStream  # noqa: E402
from mixstream.controllers import ADO, ODM, Aioli, DoReMi, Schedule, StaticMixture  # noqa: E402
from mixstream.demo.model import GPTConfig, TinyGPT, token_losses  # noqa: E402
from mixstream.demo.train import sequence_loss  # noqa: E402
from mixstream.observe import MixLogger  # noqa: E402
from mixstream.validation import Validator  # noqa: E402

RESULTS = os.path.join(HERE, "results")
BATCH, SEQ, VOCAB = 16, 128, 2048


def model_step_time(steps: int) -> tuple[float, TinyGPT]:
    torch.manual_seed(0)
    model = TinyGPT(GPTConfig(vocab_size=VOCAB, seq_len=SEQ))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, VOCAB, (BATCH, SEQ + 1))
    times = []
    for i in range(steps + 3):
        t = time.perf_counter()
        loss = token_losses(model, x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 3:
            times.append(time.perf_counter() - t)
    return statistics.median(times), model


def write_domains(root: str, k: int) -> dict[str, str]:
    from mixstream.shards.writer import write_shards

    rng = np.random.default_rng(0)
    dirs = {}
    for i in range(k):
        d = f"d{i:02d}"
        rows = rng.integers(0, VOCAB, (256, SEQ + 1), dtype=np.uint16)
        write_shards({"input_ids": rows}, os.path.join(root, d), domain=d,
                     token_column="input_ids", rows_per_block=64)
        dirs[d] = os.path.join(root, d)
    return dirs


def fake_losses(step: int, dom: torch.Tensor, per_token: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(step)
    base = 3.0 + dom.double() * 0.1 + 2.0 / (1 + step) ** 0.3
    if per_token:
        return base[:, None] + 0.1 * torch.rand(len(dom), SEQ, generator=g, dtype=torch.float64)
    return base + 0.1 * torch.rand(len(dom), generator=g, dtype=torch.float64)


Spec = tuple[str, Callable[[MixStream, int], Any], int, bool]


def specs(logdir: str) -> list[Spec]:
    """(name, factory(stream, K), priming steps, per-token losses)."""
    def aioli(s: MixStream, k: int) -> Aioli:
        val = {d: 3.0 for d in s.domains}
        return Aioli(s, validate=lambda: val, update_steps=max(250, 4 * k * 4 + 1))

    def ado(s: MixStream, k: int) -> ADO:
        return ADO(s, prior="uniform", start_step=40, update_interval=40, ignore_steps=5,
                   smoothing_window=31)

    return [
        ("StaticMixture", lambda s, k: StaticMixture(s), 0, False),
        ("Schedule (linear, push every step)",
         lambda s, k: Schedule(s, [(0, np.ones(k)), (10**6, np.arange(1, k + 1))],
                               interpolate="linear"), 0, False),
        ("ODM", lambda s, k: ODM(s, warmup=0), 5, False),
        ("ODM + MixLogger (JSONL)",
         lambda s, k: ODM(s, warmup=0, observer=MixLogger(os.path.join(logdir, f"odm{k}.jsonl"),
                                                          append=False)), 5, False),
        ("DoReMi (per-token, + weighted_loss)", lambda s, k: DoReMi(s), 5, True),
        ("ADO (policy step; refit separate)", ado, 45, False),
        ("Aioli (bookkeeping; validation separate)", aioli, 5, False),
    ]


def time_controller(dirs: dict[str, str], factory: Callable[[MixStream, int], Any], prime: int,
                    per_token: bool, steps: int) -> list[float]:
    stream = MixStream(dirs, seed=0)
    loader = MixLoader(stream, batch_size=BATCH, num_workers=0)
    ctrl = factory(stream, len(dirs))
    it = iter(loader)
    out = []
    for i in range(prime + steps):
        if isinstance(ctrl, ADO) and i == prime:
            ctrl.update_interval = 10**9   # refits are timed separately
        batch = next(it)
        dom = batch["domain"]
        loss = fake_losses(i, dom, per_token)
        t = time.perf_counter()
        if per_token:
            ctrl.feedback(dom, loss, ref_loss=loss - 0.5)
            ctrl.weighted_loss(dom, loss)
        else:
            ctrl.feedback(dom, loss)
        if i >= prime:
            out.append(time.perf_counter() - t)
    if getattr(ctrl, "observer", None) is not None:
        ctrl.observer.close()
    return out


def refit_seconds(k: int, history: int = 10_000) -> float:
    """One ADO refit on a synthetic ``history``-step loss curve with default settings."""
    class _S:  # the minimum stream ADO needs (no loader: only the refit is timed)
        domains = [f"d{i:02d}" for i in range(k)]
        weights = {d: 1.0 / k for d in domains}
        consumed_batches = consumed_samples = 0

        def set_weights(self, w: Any) -> int:
            return 0

        def domain_stats(self) -> dict:
            return {d: {"samples": 1, "tokens": None, "bytes": None, "documents": None}
                    for d in self.domains}

        def attach(self, obj: Any) -> None:
            pass

    ado = ADO(_S(), prior="uniform")
    rng = np.random.default_rng(0)
    n = np.arange(1, history + 1) * BATCH
    losses = (2.0 + 8.0 * n[:, None] ** -0.3 * (1 + np.arange(k)[None] / k)
              + rng.normal(0, 0.02, (history, k)))
    for row in losses:
        ado.counts.append(np.bincount(np.arange(BATCH) % k, minlength=k))
        ado.losses.append(row)
    t = time.perf_counter()
    assert ado.refit()
    return time.perf_counter() - t


def eval_seconds(model: TinyGPT, k: int) -> float:
    rows = torch.randint(0, VOCAB, (32, SEQ + 1))
    batches = {f"d{i:02d}": [{"input_ids": rows}] for i in range(k)}
    v = Validator(sequence_loss, model, batches, list(batches))
    v()
    t = time.perf_counter()
    v()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="timed feedback calls per controller")
    ap.add_argument("--model-steps", type=int, default=10)
    ap.add_argument("--domains", type=int, nargs="+", default=[6, 22])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    step_s, model = model_step_time(args.model_steps)
    print(f"model step: {step_s * 1e3:.1f} ms (TinyGPT {model.num_params() / 1e6:.2f}M, "
          f"batch {BATCH}x{SEQ}, {args.threads} thread(s))")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.domains:
            dirs = write_domains(os.path.join(tmp, f"k{k}"), k)
            refit = refit_seconds(k)
            ev = eval_seconds(model, k)
            for name, factory, prime, per_token in specs(tmp):
                ts = time_controller(dirs, factory, prime, per_token, args.steps)
                mean = statistics.fmean(ts)
                extra, extra_note = 0.0, ""
                if name.startswith("ADO"):
                    extra, extra_note = refit / 1000, f"refit {refit:.2f}s / 1000 steps"
                elif name.startswith("Aioli"):
                    per_round = k * 4 + 1
                    extra = per_round * ev / max(250, 4 * k * 4 + 1)
                    extra_note = f"{per_round} evals x {ev * 1e3:.0f} ms / round"
                row = {"controller": name, "domains": k, "feedback_us_mean": mean * 1e6,
                       "feedback_us_median": statistics.median(ts) * 1e6,
                       "feedback_us_p99": float(np.percentile(ts, 99)) * 1e6,
                       "fraction_of_step": mean / step_s,
                       "algorithm_extra_per_step_s": extra,
                       "algorithm_extra_fraction": extra / step_s, "extra_note": extra_note}
                rows.append(row)
                print(f"K={k:3d} {name:42s} {mean * 1e6:8.0f} us  {100 * mean / step_s:6.3f} %"
                      + (f"   + {100 * extra / step_s:.2f} % ({extra_note})" if extra else ""))
    result = {"model_step_s": step_s, "model_params": model.num_params(), "batch": BATCH,
              "seq": SEQ, "threads": args.threads, "steps": args.steps,
              "torch": torch.__version__, "python": platform.python_version(),
              "machine": platform.machine(), "cpus": os.cpu_count(),
              "loadavg_1min_at_end": os.getloadavg()[0], "rows": rows}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "controllers.json"), "w") as fh:
        json.dump(result, fh, indent=1)
    with open(os.path.join(RESULTS, "controllers.md"), "w") as fh:
        fh.write(markdown(result))
    print(f"wrote {RESULTS}/controllers.json and .md")
    return 0


def markdown(r: dict) -> str:
    lines = [
        "# Controller overhead per training step",
        "",
        f"Tiny-model step (TinyGPT {r['model_params'] / 1e6:.2f}M params, batch {r['batch']} x "
        f"{r['seq']}, AdamW, CPU, {r['threads']} thread(s), torch {r['torch']}): "
        f"**{r['model_step_s'] * 1e3:.1f} ms** (median; {r['cpus']} CPUs, 1-min load average "
        f"{r['loadavg_1min_at_end']:.1f} at the end: the machine was shared). Controller time = `mixer.feedback()` "
        f"(+ `weighted_loss` for DoReMi) on a real MixStream/MixLoader, mean of {r['steps']} "
        "steps in the active phase. Algorithm costs outside the controller (ADO refits, Aioli "
        "validation passes) are amortised per step in the last columns. Command: "
        "`python benchmarks/controllers.py`.",
        "",
        "| controller | K | feedback µs (mean / p99) | % of step | algorithm extra % | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for row in r["rows"]:
        lines.append(f"| {row['controller']} | {row['domains']} | "
                     f"{row['feedback_us_mean']:.0f} / {row['feedback_us_p99']:.0f} | "
                     f"{100 * row['fraction_of_step']:.3f} | "
                     f"{100 * row['algorithm_extra_fraction']:.2f} | {row['extra_note']} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
