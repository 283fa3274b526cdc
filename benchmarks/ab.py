"""Same-run A/B of two checkouts of mixstream: is a change a slowdown beyond noise?

    python benchmarks/ab.py --old /path/to/old/checkout [--rounds 5] [--seconds 3]

Each round runs every configuration once with the old and once with the new checkout (fresh
processes, order alternating between rounds, page cache warmed before each run), and reports
per configuration the median samples/s of each and the median of the within-round ratios
new/old. Both checkouts read the same corpus (``benchmarks/corpus.py build``), each measured
by its own ``benchmarks/run_one.py`` (which imports that checkout's library); the new harness
keeps the stored token dtype, as the old library did, so the same bytes move.
Writes ``benchmarks/results/ab.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
from benchmarks.bench import ensure_corpus  # noqa: E402
from benchmarks.common import RESULTS, data_dir, warm_files  # noqa: E402
from benchmarks.loaders import FILES  # noqa: E402

CONFIGS = [("mixstream_arrow", 0), ("mixstream", 0), ("mixstream_arrow", 2), ("mixstream", 2)]


def measure(tree: str, loader: str, workers: int, seconds: float, root: str) -> float | None:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    # each checkout's own harness: run_one.py puts its checkout first on sys.path, so the
    # library is that checkout's (a PYTHONPATH would lose to it)
    env = dict(os.environ, PYTHONPATH=tree, HF_DATASETS_OFFLINE="1",
               HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    script = os.path.join(tree, "benchmarks", "run_one.py")
    cmd = [sys.executable, script, "throughput", "--loader", loader,
           "--workers", str(workers), "--seconds", str(seconds), "--root", root, "--out", out]
    subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=600, cwd=tree)
    try:
        with open(out) as fh:
            res = json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None
    finally:
        os.unlink(out)
    return res.get("samples_per_s") if res.get("ok") else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--old", required=True, help="path of the other checkout (e.g. a worktree)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--samples", type=int, default=262_144)
    ap.add_argument("--configs", default=None,
                    help="comma list loader@workers (default: the four mixstream rows)")
    args = ap.parse_args()
    ensure_corpus(args.samples, False, (4,), mds=False, formats="npy,native",
                  python=sys.executable)
    root = data_dir()
    configs = CONFIGS if not args.configs else [
        (c.split("@")[0], int(c.split("@")[1])) for c in args.configs.split(",")]
    rows: dict[tuple[str, int], dict[str, list[float]]] = {}
    for r in range(args.rounds):
        for loader, nw in configs:
            pair = [("old", args.old), ("new", REPO)]
            if r % 2:
                pair.reverse()
            got = {}
            for label, tree in pair:
                warm_files(os.path.join(root, FILES[loader]))
                got[label] = measure(tree, loader, nw, args.seconds, root)
            rec = rows.setdefault((loader, nw), {"old": [], "new": [], "ratio": []})
            if got["old"] and got["new"]:
                rec["old"].append(got["old"])
                rec["new"].append(got["new"])
                rec["ratio"].append(got["new"] / got["old"])
            print(f"round {r} {loader} nw={nw}: old {got['old']} new {got['new']}", flush=True)
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    old = subprocess.run(["git", "-C", args.old, "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True).stdout.strip()
    lines = [f"# A/B: mixstream `{commit}` (new) against `{old}` (old)", "",
             f"Run {datetime.datetime.now().isoformat(timespec='seconds')}; {args.rounds} "
             f"interleaved rounds of {args.seconds} s per run, fresh process per run, warm page "
             f"cache; 4 domains, 512 uint16 tokens, batch 32 (token_dtype=None in both, so the "
             f"same bytes move). Shared 2-core machine: other jobs may be running.", "",
             "| loader | workers | old samples/s | new samples/s | new/old (median, min-max) |",
             "|---|---|---|---|---|"]
    for (loader, nw), rec in rows.items():
        if not rec["ratio"]:
            lines.append(f"| {loader} | {nw} | failed | failed | - |")
            continue
        lines.append(f"| {loader} | {nw} | {statistics.median(rec['old']):,.0f} | "
                     f"{statistics.median(rec['new']):,.0f} | "
                     f"{statistics.median(rec['ratio']):.3f} ({min(rec['ratio']):.3f}–"
                     f"{max(rec['ratio']):.3f}) |")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "ab.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
