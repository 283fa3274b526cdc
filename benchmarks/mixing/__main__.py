"""``python -m benchmarks.mixing run --all`` (or ``run noise target ...``; ``--smoke`` for a tiny
configuration). Results: ``benchmarks/results/mixing/{<diagnostic>.md,.png,.json}`` and
``summary.md``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from .diagnostics import ORDER, SMOKE, Scale, build
from .methods import METHODS
from .report import analyse, plot, summary, table, targets
from .runner import cpu_note, run_problem

ROOT = Path(__file__).resolve().parents[2]


def _git() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "mixstream"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + (" (mixstream/ had uncommitted changes)" if dirty else "")
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.mixing", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run diagnostics and write tables/plots")
    r.add_argument("diagnostics", nargs="*", help=f"any of {ORDER} (default: all)")
    r.add_argument("--all", action="store_true", help="every diagnostic")
    r.add_argument("--seeds", type=int, default=5)
    r.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--smoke", action="store_true", help="tiny configuration (seconds; CI)")
    r.add_argument("--steps", type=int, default=None, help="override the synthetic steps")
    r.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "mixing"))
    r.add_argument("--out", default=None,
                   help="default benchmarks/results/mixing (smoke: under the work folder)")
    r.add_argument("--fresh", action="store_true", help="ignore cached job results")
    r.add_argument("--redo", nargs="+", default=None, choices=list(METHODS),
                   help="rerun only these methods in cached results (after a controller fix)")
    r.add_argument("--quiet", action="store_true")
    a = ap.parse_args(argv)
    names = list(ORDER) if a.all or not a.diagnostics else a.diagnostics
    sc = SMOKE if a.smoke else Scale()
    if a.steps:
        sc = Scale(**{**sc.__dict__, "steps": a.steps})
    seeds = list(range(a.seeds))
    torch.set_num_threads(1)
    work = Path(a.work) / ("smoke" if a.smoke else "full")
    out = Path(a.out) if a.out else (work / "report" if a.smoke
                                     else ROOT / "benchmarks" / "results" / "mixing")
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    note = cpu_note()
    parts = []
    for name in names:
        t0 = time.perf_counter()
        p = build(name, work, sc, seeds)
        res = run_problem(p, seeds, a.methods, work, workers=a.workers, fresh=a.fresh,
                          verbose=not a.quiet, redo=a.redo)
        an = analyse(p, res)
        md = table(p, res, an)
        (out / f"{name}.md").write_text(md)
        (out / f"{name}.json").write_text(json.dumps(
            {"analysis": an, "results": res, "scale": sc.__dict__}, default=float))
        try:
            plot(p, res, an, out / f"{name}.png")
        except ImportError:
            pass
        parts.append((p, an, res))
        print(md, flush=True)
        print(f"[{name}: {time.perf_counter() - t0:.0f}s wall]", flush=True)
    wall = time.perf_counter() - t_all
    text = ("# Mixing diagnostics: summary\n\n"
            f"`python -m benchmarks.mixing run {' '.join(sys.argv[2:] if argv is None else argv[1:])}`"
            f" — {wall / 60:.1f} min wall on {note}; mixstream at {_git()}.\n\n"
            "Cells: Δ test loss vs uniform (nats/token, mean ± 95 % CI over paired seeds) and "
            "the fraction of the oracle's gain (best static mixture of a sweep, chosen on dev "
            "loss). ✓ = the paper's predicted gain is measured (CI excludes 0) with the weights "
            "on the right side of the known answer; ✗ = predicted but not measured; (lim.) = "
            "a documented limitation of the method, observed. Uniform's row: its test loss.\n\n"
            + summary([(p, an) for p, an, _ in parts])
            + "\n## Issue 15 targets\n\n" + targets(parts))
    if len(parts) == len(ORDER) or a.smoke:
        (out / "summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
