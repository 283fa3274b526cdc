"""``mixstream demo``: train a tiny GPT on the sample corpus, uniform vs an online controller.

Builds shards from the packaged sample corpus (byte-level BPE trained on the fly), trains a
~2M-parameter model for ``--seconds`` with the uniform mixture and then for the same number of
steps with ODM (or ADO), prints per-domain validation losses and writes a plot of both runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _run(args: argparse.Namespace) -> int:
    import torch

    from ..demo.run import DemoConfig, run_demo
    from .plot import plot_logs

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.seconds <= 0:
        raise SystemExit("mixstream demo: --seconds must be > 0")
    cfg = DemoConfig(workdir=args.workdir, corpus=args.corpus, controller=args.controller,
                     seconds=args.seconds, batch_size=args.batch_size, seq_len=args.seq_len,
                     vocab_size=args.vocab_size, lr=args.lr, evals=args.evals,
                     num_workers=args.num_workers, seed=args.seed)
    try:
        runs = run_demo(cfg)
    except ValueError as e:
        raise SystemExit(f"mixstream demo: {e}") from None
    out = Path(args.output) if args.output else Path(args.workdir) / "mix.png"
    plot_logs([r.log for r in runs], out, realised=True,
              titles=[f"{r.name} ({r.steps} steps)" for r in runs])
    print(f"\nlogs: {', '.join(r.log for r in runs)}\nplot: {out}")
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="train a tiny GPT: uniform mixture vs ODM/ADO",
                              description=__doc__)
    p.add_argument("--controller", choices=("odm", "ado"), default="odm")
    p.add_argument("--seconds", type=float, default=60.0,
                   help="training time of the uniform run (the controller run gets as many steps)")
    p.add_argument("--workdir", default="mixstream-demo", help="shards, logs and plot go here")
    p.add_argument("--corpus", default=None,
                   help="folder of <domain>.jsonl(.gz) files (default: the packaged sample)")
    p.add_argument("-o", "--output", default=None, help="plot file (default WORKDIR/mix.png)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--evals", type=int, default=4, help="validation points per run")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_run)
