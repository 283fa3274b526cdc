"""The end-to-end demo: does an online controller beat the uniform mixture, by how much, how sure?

Scenario: the packaged sample corpus (six real-text domains) plus ``noise_domains`` domains of
random tokens — scraped garbage, as large as the biggest real domain. Uniform sampling spends a
quarter of the compute on text that cannot be learned; the target is the mean validation loss
over the real domains. For each of ``seeds`` paired seeds (same initial model, same per-domain
sample order) the demo trains

1. the uniform mixture (``StaticMixture``, logged), and
2. the same model with an online controller (default FastMix, online: its mixture follows the
   alignment of each domain's gradient with a dev batch of the text domains) for the same
   number of steps,

then prints the per-seed losses, the mean difference with its 95 % t interval, and per-domain
losses; ``mixstream demo`` plots seed 0's two runs. The benchmark suite
(``benchmarks/mixing``) measures every controller on this and five other diagnostics.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..controllers import ADO, ODM, FastMix, StaticMixture
from ..controllers.base import Controller
from ..observe import MixLogger
from ..validation import Validator
from .corpus import DemoData, build
from .model import GPTConfig, TinyGPT
from .train import TrainResult, sequence_loss, train

CONTROLLERS = ("fastmix", "ado", "odm")
# t quantiles (0.975) for the demo's CI; scipy is not a dependency of the demo.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228}


@dataclass
class DemoConfig:
    workdir: str = "mixstream-demo"
    corpus: str | None = None
    controller: str = "fastmix"
    seeds: int = 5
    steps: int = 300
    noise_domains: int = 2
    batch_size: int = 16
    seq_len: int = 32
    vocab_size: int = 512
    lr: float = 3e-3
    warmup_steps: int = 15
    evals: int = 3              # validation points per run (the last one at the end)
    val_rows: int = 32
    dev_rows: int = 16          # held-out rows per text domain for FastMix's target (not val)
    num_workers: int = 0
    seed: int = 0               # first seed; seeds are seed, seed+1, ...
    model: dict[str, Any] = field(default_factory=lambda: {"d_model": 64, "n_layer": 2,
                                                           "n_head": 4})


@dataclass
class RunResult:
    name: str
    steps: int
    seconds: float
    tokens_per_second: float
    val: dict[str, float]
    final_weights: dict[str, float]
    log: str
    seed: int = 0


def make_controller(name: str, stream: Any, log: MixLogger, steps_hint: int, *,
                    model: torch.nn.Module | None = None,
                    dev: dict[str, Any] | None = None) -> Controller:
    """The demo's controller settings, scaled to a run of ``steps_hint`` steps.

    FastMix runs online (``apply_to="sampling"``): every 4 steps its softmax(z) mixture is
    updated from the alignment of each domain's gradient with the gradient of a dev batch of the
    text domains (``dev``: rows never used for validation).
    """
    if name == "odm":
        return ODM(stream, warmup=max(5, steps_hint // 25), observer=log)
    if name == "ado":
        every = max(10, steps_hint // 8)
        return ADO(stream, prior="uniform", start_step=every, update_interval=every,
                   ignore_steps=max(2, every // 4), smoothing_window=11, subsample=1,
                   observer=log)
    if name == "fastmix":
        from ..model import ModelContext
        if model is None or not dev:
            raise ValueError("the demo's FastMix needs the model and dev rows")
        # dev batches of 4 rows per text domain, cycled one per outer update
        n = min(len(r) for r in dev.values()) // 4
        val = [{"input_ids": torch.cat([torch.as_tensor(r[4 * i:4 * i + 4]).long()
                                        for r in dev.values()])} for i in range(max(1, n))]
        ctx = ModelContext(model, sequence_loss, list(stream.domains))
        # The gradient signal is taken on the last block's MLP output matrix: TinyGPT's LM head
        # is tied to the embedding, whose gradient would need a full backward per domain.
        last = f"blocks.{len(getattr(model, 'blocks', [])) - 1}.mlp.2.weight"
        return FastMix(stream, ctx=ctx, val_batches=val, params=last, every=4, lr=0.05,
                       apply_to="sampling", observer=log)
    raise ValueError(f"unknown demo controller {name!r}; choose from {CONTROLLERS}")


def _lr_schedule(lr: float, warmup: int, total: int) -> Callable[[torch.optim.Optimizer, int],
                                                                  None]:
    """Linear warm-up, then cosine decay to 10 %: without a decay the final loss mostly
    reflects the last batches' noise, which would swamp a mixture effect."""
    def set_lr(opt: torch.optim.Optimizer, step: int) -> None:
        if step < warmup:
            f = (step + 1) / max(1, warmup)
        else:
            p = min(1.0, (step - warmup) / max(1, total - warmup))
            f = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p))
        for g in opt.param_groups:
            g["lr"] = lr * f
    return set_lr


def run_one(cfg: DemoConfig, data: DemoData, name: str, seed: int,
            say: Callable[[str], None], dev: dict[str, Any] | None = None) -> RunResult:
    """Train one model for ``cfg.steps`` steps from seed ``seed``; validate ``cfg.evals`` times."""
    from ..loader import MixLoader
    from ..stream import MixStream

    torch.manual_seed(seed)
    model = TinyGPT(GPTConfig(vocab_size=data.vocab_size, seq_len=cfg.seq_len, **cfg.model))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    stream = MixStream(data.shard_dirs, seed=seed)
    loader = MixLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    log_path = Path(cfg.workdir) / f"{name}_seed{seed}.jsonl"
    log = MixLogger(log_path, append=False, log_every=1)
    mixer = (StaticMixture(stream, observer=log) if name == "uniform"
             else make_controller(name, stream, log, cfg.steps, model=model, dev=dev))
    val_batches = {d: [{"input_ids": torch.from_numpy(rows[i:i + 32].astype("int64"))}
                       for i in range(0, len(rows), 32)] for d, rows in data.val.items()}
    validate = Validator(sequence_loss, model, val_batches, list(data.val))
    sched = _lr_schedule(cfg.lr, cfg.warmup_steps, cfg.steps)
    it = iter(loader)
    total = TrainResult()
    n_chunks = max(1, cfg.evals)
    bounds = [round(cfg.steps * (c + 1) / n_chunks) for c in range(n_chunks)]
    val: dict[str, float] = {}
    for b in bounds:
        res = train(model, opt, it, max_steps=b - total.steps, mixer=mixer,
                    lr_schedule=lambda o, s: sched(o, s + total.steps))
        total.steps += res.steps
        total.seconds += res.seconds
        total.tokens += res.tokens
        val = validate()
        log.on_validation(total.steps, val)
    say(f"  seed {seed} {name:>8}: {total.steps} steps {total.seconds:5.1f}s  "
        f"val mean {sum(val.values()) / len(val):.4f}")
    log.close()
    return RunResult(name, total.steps, total.seconds, total.tokens_per_second, val,
                     mixer.weights, str(log_path), seed)


def mean_ci(x: list[float]) -> tuple[float, float]:
    """Mean and 95 % t half-width (paired differences over seeds)."""
    n = len(x)
    m = sum(x) / n
    if n < 2:
        return m, float("nan")
    sd = math.sqrt(sum((v - m) ** 2 for v in x) / (n - 1))
    return m, T975.get(n - 1, 1.96) * sd / math.sqrt(n)


def format_results(runs: list[RunResult]) -> str:
    """Per-domain validation loss of each run, plus mean and worst domain."""
    domains = list(runs[0].val)
    w = max(12, max(len(d) for d in domains) + 2)
    head = f"{'domain':<{w}}" + "".join(f"{r.name:>10}" for r in runs)
    if len(runs) == 2:
        head += f"{'delta':>9}" + f"{'weight':>9}"
    lines = [head, "-" * len(head)]
    for d in domains:
        row = f"{d:<{w}}" + "".join(f"{r.val[d]:>10.3f}" for r in runs)
        if len(runs) == 2:
            row += f"{runs[1].val[d] - runs[0].val[d]:>+9.3f}{runs[1].final_weights[d]:>9.3f}"
        lines.append(row)
    lines.append("-" * len(head))
    for label, fn in (("mean", lambda v: sum(v) / len(v)), ("worst", max)):
        vals = [fn(list(r.val.values())) for r in runs]
        row = f"{label:<{w}}" + "".join(f"{v:>10.3f}" for v in vals)
        if len(runs) == 2:
            row += f"{vals[1] - vals[0]:>+9.3f}"
        lines.append(row)
    return "\n".join(lines)


def _mean_run(runs: list[RunResult]) -> RunResult:
    """Seed-mean of per-domain losses and final weights (for the per-domain table)."""
    n = len(runs)
    val = {d: sum(r.val[d] for r in runs) / n for d in runs[0].val}
    wts = {d: sum(r.final_weights[d] for r in runs) / n for d in runs[0].final_weights}
    return RunResult(runs[0].name, runs[0].steps, sum(r.seconds for r in runs),
                     sum(r.tokens_per_second for r in runs) / n, val, wts, runs[0].log)


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = print) -> list[RunResult]:
    """Uniform vs ``cfg.controller`` over ``cfg.seeds`` paired seeds; returns every run
    (uniform and controller alternating, seed by seed)."""
    if cfg.controller not in CONTROLLERS:
        raise ValueError(f"unknown demo controller {cfg.controller!r}; choose from {CONTROLLERS}")
    if cfg.seeds < 1 or cfg.steps < 1:
        raise ValueError(f"the demo needs seeds >= 1 and steps >= 1, got {cfg.seeds}, "
                         f"{cfg.steps}")
    Path(cfg.workdir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = build(cfg.workdir, corpus=cfg.corpus, vocab_size=cfg.vocab_size, seq_len=cfg.seq_len,
                 val_rows=cfg.val_rows + cfg.dev_rows, noise_domains=cfg.noise_domains,
                 seed=cfg.seed)
    # held-out rows: the first dev_rows per domain are FastMix's target, the rest validation
    dev = {d: rows[: cfg.dev_rows] for d, rows in data.val.items()}
    data.val = {d: rows[cfg.dev_rows:] for d, rows in data.val.items()}
    say(f"corpus: {len(data.val)} text domains + {cfg.noise_domains} noise domain(s) of random "
        f"tokens; " + ", ".join(f"{d} {data.tokens[d] // 1000}k" for d in data.domains)
        + f" training tokens; BPE vocab {data.vocab_size} ({time.perf_counter() - t0:.1f}s)")
    n_params = TinyGPT(GPTConfig(vocab_size=data.vocab_size, seq_len=cfg.seq_len,
                                 **cfg.model)).num_params()
    say(f"model: TinyGPT {n_params / 1e6:.2f}M parameters, seq {cfg.seq_len}, batch "
        f"{cfg.batch_size}, {cfg.steps} steps per run; target: mean validation loss over the "
        f"text domains; {cfg.seeds} paired seeds")
    runs: list[RunResult] = []
    for s in range(cfg.seed, cfg.seed + cfg.seeds):
        runs.append(run_one(cfg, data, "uniform", s, say))
        runs.append(run_one(cfg, data, cfg.controller, s, say, dev=dev))
    base, online = runs[0::2], runs[1::2]

    def mean_val(r: RunResult) -> float:
        return sum(r.val.values()) / len(r.val)
    diffs = [mean_val(o) - mean_val(b) for b, o in zip(base, online)]
    m, h = mean_ci(diffs)
    say("")
    say(f"per-domain validation loss (nats/token), mean of {cfg.seeds} seeds; "
        f"weight = {cfg.controller}'s final sampling weight:")
    say(format_results([_mean_run(base), _mean_run(online)]))
    say("")
    noise_w = sum(sum(v for d, v in r.final_weights.items() if d.startswith("noise"))
                  for r in online) / len(online)
    say(f"{cfg.controller} - uniform, mean validation loss over the text domains: "
        f"{m:+.4f} nats/token, 95 % CI [{m - h:+.4f}, {m + h:+.4f}] over {cfg.seeds} paired "
        f"seeds ({', '.join(f'{d:+.4f}' for d in diffs)}); final noise weight "
        f"{noise_w:.3f} (uniform: {cfg.noise_domains / len(data.domains):.3f})")
    if cfg.seeds >= 2:
        verdict = ("better than uniform" if m + h < 0 else "worse than uniform" if m - h > 0
                   else "not distinguishable from uniform at these seeds")
        say(f"verdict: {cfg.controller} is {verdict} (CI {'excludes' if m + h < 0 or m - h > 0 else 'includes'} 0)")
    return runs
