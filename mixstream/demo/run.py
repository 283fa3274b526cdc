"""The end-to-end demo: uniform mixture vs an online controller on the sample corpus.

1. build shards from the corpus (:mod:`.corpus`);
2. train the tiny GPT for ``seconds`` with the uniform mixture (``StaticMixture``, logged);
3. train a fresh copy (same seed, same number of steps) with ODM or ADO;
4. print per-domain validation losses side by side and plot both runs' mixtures and losses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..controllers import ADO, ODM, StaticMixture
from ..controllers.base import Controller
from ..observe import MixLogger
from ..validation import Validator
from .corpus import DemoData, build
from .model import GPTConfig, TinyGPT
from .train import TrainResult, sequence_loss, train

CONTROLLERS = ("odm", "ado")


@dataclass
class DemoConfig:
    workdir: str = "mixstream-demo"
    corpus: str | None = None
    controller: str = "odm"
    seconds: float = 60.0
    batch_size: int = 16
    seq_len: int = 128
    vocab_size: int = 2048
    lr: float = 3e-3
    warmup_steps: int = 10
    evals: int = 4              # validation points per run (the last one at the end)
    val_rows: int = 32
    num_workers: int = 0
    seed: int = 0
    model: dict[str, Any] = field(default_factory=dict)  # extra GPTConfig fields


@dataclass
class RunResult:
    name: str
    steps: int
    seconds: float
    tokens_per_second: float
    val: dict[str, float]
    final_weights: dict[str, float]
    log: str


def make_controller(name: str, stream: Any, log: MixLogger, steps_hint: int) -> Controller:
    """The demo's controller settings, scaled to a run of about ``steps_hint`` steps."""
    if name == "odm":
        return ODM(stream, warmup=max(5, steps_hint // 10), observer=log)
    if name == "ado":
        every = max(10, steps_hint // 8)
        return ADO(stream, prior="uniform", start_step=every, update_interval=every,
                   ignore_steps=max(2, every // 4), smoothing_window=11, subsample=1,
                   observer=log)
    raise ValueError(f"unknown demo controller {name!r}; choose from {CONTROLLERS}")


def _lr_schedule(lr: float, warmup: int) -> Callable[[torch.optim.Optimizer, int], None]:
    def set_lr(opt: torch.optim.Optimizer, step: int) -> None:
        for g in opt.param_groups:
            g["lr"] = lr * min(1.0, (step + 1) / max(1, warmup))
    return set_lr


def run_one(cfg: DemoConfig, data: DemoData, name: str, *, chunks: list[int] | None,
            say: Callable[[str], None]) -> tuple[RunResult, list[int]]:
    """Train one model; ``chunks`` = steps per evaluation interval (None: split ``seconds``)."""
    from mixstream import MixLoader, MixStream

    torch.manual_seed(cfg.seed)
    model = TinyGPT(GPTConfig(vocab_size=data.vocab_size, seq_len=cfg.seq_len, **cfg.model))
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    stream = MixStream(data.shard_dirs, seed=cfg.seed)
    loader = MixLoader(stream, batch_size=cfg.batch_size, num_workers=cfg.num_workers)
    log_path = Path(cfg.workdir) / f"{name}.jsonl"
    log = MixLogger(log_path, append=False, log_every=1)
    steps_hint = sum(chunks) if chunks else 100
    mixer = (StaticMixture(stream, observer=log) if name == "uniform"
             else make_controller(name, stream, log, steps_hint))
    val_batches = {d: [{"input_ids": torch.from_numpy(rows[i:i + 32].astype("int64"))}
                       for i in range(0, len(rows), 32)] for d, rows in data.val.items()}
    validate = Validator(sequence_loss, model, val_batches, data.domains)
    sched = _lr_schedule(cfg.lr, cfg.warmup_steps)
    it = iter(loader)
    done: list[int] = []
    total = TrainResult()
    n_chunks = len(chunks) if chunks else cfg.evals
    val: dict[str, float] = {}
    for c in range(n_chunks):
        res = train(model, opt, it, seconds=None if chunks else cfg.seconds / n_chunks,
                    max_steps=chunks[c] if chunks else None, mixer=mixer,
                    lr_schedule=lambda o, s: sched(o, s + total.steps))
        done.append(res.steps)
        total.steps += res.steps
        total.seconds += res.seconds
        total.tokens += res.tokens
        val = validate()
        log.on_validation(total.steps, val)
        say(f"  [{name}] step {total.steps:4d}  {total.seconds:5.1f}s  "
            f"val mean {sum(val.values()) / len(val):.3f}")
    log.close()
    result = RunResult(name, total.steps, total.seconds, total.tokens_per_second, val,
                       mixer.weights, str(log_path))
    return result, done


def format_table(runs: list[RunResult]) -> str:
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


def run_demo(cfg: DemoConfig, say: Callable[[str], None] = print) -> list[RunResult]:
    if cfg.controller not in CONTROLLERS:
        raise ValueError(f"unknown demo controller {cfg.controller!r}; choose from {CONTROLLERS}")
    Path(cfg.workdir).mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    data = build(cfg.workdir, corpus=cfg.corpus, vocab_size=cfg.vocab_size, seq_len=cfg.seq_len,
                 val_rows=cfg.val_rows)
    say(f"corpus: {len(data.domains)} domains, "
        + ", ".join(f"{d} {data.tokens[d] // 1000}k" for d in data.domains)
        + f" training tokens; BPE vocab {data.vocab_size} ({time.perf_counter() - t0:.1f}s)")
    n_params = TinyGPT(GPTConfig(vocab_size=data.vocab_size, seq_len=cfg.seq_len,
                                 **cfg.model)).num_params()
    say(f"model: TinyGPT {n_params / 1e6:.2f}M parameters, seq {cfg.seq_len}, "
        f"batch {cfg.batch_size}")
    base, chunks = run_one(cfg, data, "uniform", chunks=None, say=say)
    online, _ = run_one(cfg, data, cfg.controller, chunks=chunks, say=say)
    say("")
    say(f"per-domain validation loss (nats/token) after {base.steps} steps each "
        f"({base.tokens_per_second:.0f} / {online.tokens_per_second:.0f} tokens/s):")
    say(format_table([base, online]))
    return [base, online]
