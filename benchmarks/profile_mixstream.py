"""Profile MixStream at num_workers=0 (batched or per-sample) with pyinstrument.

    python benchmarks/profile_mixstream.py [--per-sample] [--batches 3000]

Writes ``benchmarks/results/profile_<mode>.txt`` (pyinstrument's call tree, time per frame
with file:line) — where the per-batch time goes when a goal is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import RESULTS, data_dir  # noqa: E402
from benchmarks.loaders import build  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-sample", action="store_true")
    ap.add_argument("--batches", type=int, default=3000)
    ap.add_argument("--root", default=data_dir())
    ap.add_argument("--name", default=None, help="output suffix (default: the mode)")
    args = ap.parse_args(argv)
    from pyinstrument import Profiler

    bench = build("mixstream_sample" if args.per_sample else "mixstream", args.root, 0, 0)
    it = bench.batches()
    for _ in range(300):  # warm-up: reservoirs filled
        next(it)
    prof = Profiler(interval=0.0002)
    prof.start()
    t0 = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    dt = time.perf_counter() - t0
    prof.stop()
    mode = "per_sample" if args.per_sample else "batched"
    text = prof.output_text(unicode=True, color=False, show_all=False, timeline=False)
    head = (f"MixStream {mode}, num_workers=0, corpus {os.path.basename(args.root)}: {args.batches} batches of 32 in {dt:.3f} s = "
            f"{1e6 * dt / args.batches:.1f} us/batch, {1e6 * dt / args.batches / 32:.2f} us/sample "
            f"(under the profiler)\n\n")
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"profile_{args.name or mode}.txt")
    with open(path, "w") as f:
        f.write(head + text)
    print(head + text)


if __name__ == "__main__":
    main()
