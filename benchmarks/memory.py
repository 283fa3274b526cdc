"""Where MixStream's memory goes at num_workers=0: RSS and anonymous RSS by shuffle window, with
and without the background decode of the next window, and with glibc's mmap threshold fixed
(issue #12: RSS vs the memmap loop, or what it buys).

    .venv/bin/python benchmarks/memory.py        # corpus from benchmarks/corpus.py build

Each configuration runs in a fresh process: RSS after import, after 96k samples (3,000 batches
of 32; Arrow shards, 4 domains of 512 uint16 tokens), the peak, and anonymous RSS (heap, not
the page cache of mapped shards) after import and at the end. ``MALLOC_MMAP_THRESHOLD_=131072``
rows: glibc otherwise raises its mmap threshold after the first large free, so freed 8 MB window
buffers stay in the heap instead of going back to the OS. Writes ``benchmarks/results/memory.md``.
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
from benchmarks.common import RESULTS, data_dir  # noqa: E402

CHILD = r'''
import os, sys
from mixstream import MixLoader, MixStream
def status(key):
    return int(open("/proc/self/status").read().split(key + ":")[1].split()[0]) // 1024
root, window, prefetch = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
names = sorted(n for n in os.listdir(root) if not n.startswith("."))
base, anon0 = status("VmRSS"), status("RssAnon")
s = MixStream({n: os.path.join(root, n) for n in names}, seed=0, token_dtype=None,
              weights=dict(zip(names, [0.4, 0.3, 0.2, 0.1])), shuffle_window=window,
              prefetch=prefetch)
it = iter(MixLoader(s, batch_size=32))
for _ in range(3000):
    next(it)
print(base, status("VmRSS"), status("VmHWM"), anon0, status("RssAnon"))
'''


def main() -> None:
    root = os.path.join(data_dir(), "native_arrow")
    rows = ["# MixStream memory at num_workers=0 (benchmarks/memory.py)", "",
            "4 domains of 512 uint16 tokens (Arrow shards), weights 0.4/0.3/0.2/0.1, batch 32, "
            "3,000 batches; fresh process per row; MiB.", "",
            "| shuffle_window | prefetch | malloc | RSS after import | RSS after 96k samples | "
            "peak | anon after import | anon after 96k samples |",
            "|---|---|---|---|---|---|---|---|"]
    for window in (8192, 4096, 1024):
        for prefetch in (1, 0):
            for fixed in (False, True):
                env = dict(os.environ)
                if fixed:
                    env["MALLOC_MMAP_THRESHOLD_"] = "131072"
                out = subprocess.run([sys.executable, "-c", CHILD, root, str(window),
                                      str(prefetch)], capture_output=True, text=True,
                                     check=True, env=env).stdout.split()
                base, rss, peak, anon0, anon = (int(x) for x in out[-5:])
                rows.append(f"| {window} | {'on' if prefetch else 'off'} | "
                            f"{'mmap threshold 128 KiB' if fixed else 'default'} | {base} | {rss} | "
                            f"{peak} | {anon0} | {anon} |")
                print(rows[-1], flush=True)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "memory.md"), "w") as f:
        f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
