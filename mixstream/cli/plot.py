"""``mixstream plot run.jsonl [run2.jsonl ...] -o mix.png``: the mixture and losses over training.

One column per log (as written by :class:`mixstream.observe.MixLogger`): the sampling weights
as a stacked area (top), optionally the realised per-domain share of samples (middle,
``--realised``), and the per-domain training loss EMA with validation losses as markers
(bottom).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..observe import read_log
from .text import FORMATTER, plain


def mixture_series(recs: Sequence[dict], x: str = "step") -> tuple[list[str], np.ndarray,
                                                                   np.ndarray]:
    """Step function of the sampling weights: (domains, xs [N], weights [N, K])."""
    wrec = [r for r in recs if r.get("event") == "weights" and r.get("kind", "sampling") in
            ("initial", "sampling")]
    if not wrec:
        raise ValueError("the log has no 'weights' records; was an observer passed to the "
                         "controller?")
    initial = next((r for r in wrec if r.get("kind") == "initial"), None)
    rest = [r for r in wrec if r.get("kind") != "initial"]
    key = "from_sample" if x == "samples" else "step"
    rest.sort(key=lambda r: r[key])
    domains = list((initial or rest[0])["weights"])
    first = [initial] if initial is not None else []
    xs = [0.0 if r is initial else float(r[key]) for r in first + rest]
    ws = [[float(r["weights"].get(d, 0.0)) for d in domains] for r in first + rest]
    last = max([xs[-1]] + [float(r["samples" if x == "samples" else "step"])
                           for r in recs if r.get("event") == "step"])
    xs.append(last)
    ws.append(ws[-1])
    return domains, np.asarray(xs), np.asarray(ws)


def _plot_run(axes: Any, recs: list[dict], title: str, x: str, realised: bool) -> None:
    domains, xs, ws = mixture_series(recs, x)
    colors = [f"C{i % 10}" for i in range(len(domains))]
    ax = axes[0]
    ax.stackplot(xs, ws.T, labels=domains, colors=colors, step="post", alpha=0.85)
    ax.set_ylim(0, 1)
    ax.set_xlim(xs[0], xs[-1] if xs[-1] > xs[0] else xs[0] + 1)
    ax.set_ylabel("sampling weight")
    ax.set_title(title)
    steps = [r for r in recs if r.get("event") == "step"]
    sx = np.asarray([r["samples" if x == "samples" else "step"] for r in steps], dtype=float)
    row = 1
    if realised:
        counts = np.asarray([[r["counts"].get(d, 0) for d in domains] for r in steps], float)
        if len(counts):
            win = max(1, len(counts) // 50)
            kern = np.ones(win)
            sm = np.stack([np.convolve(c, kern, mode="same") for c in counts.T], axis=1)
            share = sm / np.maximum(sm.sum(1, keepdims=True), 1e-12)
            axes[row].stackplot(sx, share.T, colors=colors, alpha=0.85)
        axes[row].set_ylim(0, 1)
        axes[row].set_ylabel("realised share")
        row += 1
    ax = axes[row]
    for d, c in zip(domains, colors, strict=True):
        pts = [(xx, r["loss_ema"][d]) for xx, r in zip(sx, steps, strict=True)
               if d in r.get("loss_ema", {})]
        if pts:
            ax.plot(*zip(*pts, strict=True), color=c, label=d, lw=1.2)
    vals = [r for r in recs if r.get("event") == "validation"]
    if vals and x == "step":
        for d, c in zip(domains, colors, strict=True):
            pts = [(r["step"], r["loss"][d]) for r in vals if d in r["loss"]]
            if pts:
                ax.plot(*zip(*pts, strict=True), ls="none", marker="o", ms=3, color=c)
    ax.set_ylabel("train loss (EMA)" + (", val (dots)" if vals and x == "step" else ""))
    ax.legend(loc="upper right", fontsize=7, ncol=2 if len(domains) > 4 else 1, framealpha=0.7)
    ax.set_xlabel("global samples" if x == "samples" else "step")
    ax.grid(alpha=0.3)


def plot_logs(paths: Sequence[str | Path], out: str | Path, *, x: str = "step",
              realised: bool = False, titles: Sequence[str] | None = None) -> Path:
    """Draw one column per JSONL log into ``out`` (PNG/PDF/SVG by extension)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 3 if realised else 2
    fig, axes = plt.subplots(rows, len(paths), figsize=(6 * len(paths), 2.6 * rows),
                             squeeze=False, sharex="col")
    for j, p in enumerate(paths):
        title = titles[j] if titles else Path(p).stem
        _plot_run(axes[:, j], read_log(p), title, x, realised)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _run(args: argparse.Namespace) -> int:
    for p in args.logs:
        if not Path(p).is_file():
            raise SystemExit(f"mixstream plot: no such log file {p!r}")
    try:
        out = plot_logs(args.logs, args.output, x=args.x, realised=args.realised,
                        titles=args.title)
    except ValueError as e:
        raise SystemExit(f"mixstream plot: {e}") from None
    print(f"wrote {out}")
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("plot", help="plot the mixture and per-domain losses of run logs",
                              description=plain(__doc__), formatter_class=FORMATTER)
    p.add_argument("logs", nargs="+", help="JSONL logs written by mixstream.observe.MixLogger")
    p.add_argument("-o", "--output", default="mix.png", help="image file (default mix.png)")
    p.add_argument("--x", choices=("step", "samples"), default="step",
                   help="x axis: optimizer step or global samples")
    p.add_argument("--realised", action="store_true",
                   help="add a row with the realised per-domain share of samples")
    p.add_argument("--title", action="append", help="column title (repeat per log)")
    p.set_defaults(func=_run)
