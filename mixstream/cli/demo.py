"""``mixstream demo``: does an online controller beat the uniform mixture? Measured, with a CI.

Builds shards from the packaged sample corpus (byte-level BPE trained on the fly) plus domains of
random tokens (scraped garbage), trains a small GPT with the uniform mixture and with FastMix
(or ADO, ODM) from the same seeds, prints the paired difference of the mean validation loss
over the text domains with its 95 % interval, and plots seed 0's two runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .text import FORMATTER, plain


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..demo.run import DemoConfig, run_demo
    from .plot import plot_logs

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.steps <= 0:
        raise SystemExit("mixstream demo: --steps must be > 0")
    if args.seeds <= 0:
        raise SystemExit("mixstream demo: --seeds must be > 0")
    cfg = DemoConfig(workdir=args.workdir, corpus=args.corpus, controller=args.controller,
                     seeds=args.seeds, steps=args.steps, noise_domains=args.noise_domains,
                     batch_size=args.batch_size, seq_len=args.seq_len,
                     vocab_size=args.vocab_size, lr=args.lr, evals=args.evals,
                     num_workers=args.num_workers, seed=args.seed)
    try:
        runs = run_demo(cfg)
    except ValueError as e:
        raise SystemExit(f"mixstream demo: {e}") from None
    out = Path(args.output) if args.output else Path(args.workdir) / "mix.png"
    first = runs[:2]
    plot_logs([r.log for r in first], out, realised=True,
              titles=[f"{r.name}, seed {r.seed} ({r.steps} steps)" for r in first])
    print(f"\nlogs: {Path(args.workdir) / '*.jsonl'}\nplot: {out}")
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="uniform mixture vs FastMix/ADO/ODM on the sample corpus, "
                              "paired seeds, with a 95%% CI", description=plain(__doc__),
                              formatter_class=FORMATTER)
    p.add_argument("--controller", choices=("fastmix", "ado", "odm"), default="fastmix")
    p.add_argument("--steps", type=int, default=300, help="training steps per run")
    p.add_argument("--seeds", type=int, default=5, help="paired seeds (uniform and controller)")
    p.add_argument("--noise-domains", type=int, default=2,
                   help="domains of random tokens added to the corpus (0: text only)")
    p.add_argument("--workdir", default="mixstream-demo", help="shards, logs and plot go here")
    p.add_argument("--corpus", default=None,
                   help="folder of <domain>.jsonl(.gz) files (default: the packaged sample)")
    p.add_argument("-o", "--output", default=None, help="plot file (default WORKDIR/mix.png)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--vocab-size", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--evals", type=int, default=3, help="validation points per run")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.set_defaults(func=_run)
