"""The cost of integrity on read (issue 10): hashing speed, first-batch latency, throughput.

    python benchmarks/integrity_cost.py [--rounds 5] [--batches 1500] [--workers 0 2]

Corpus: 4 domains of native shards written by ``write_shards`` (2048 uint16 tokens per sample,
1024-row blocks, 8 blocks per shard: ~32 MB Parquet/zstd or Arrow shards, 2 shards a domain),
weights 0.4/0.3/0.2/0.1, batch 32, default shuffle window (8192); throughput over the 1500
batches after the first (~73% of the corpus, so most shards are opened inside the timed part). Per round and format, verify
on and off are run back to back in random order, each after dropping the per-process cache of
checked files (page cache warm for both: the difference is CPU, not disk). Reports the paired
differences with a 95% t-interval over the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from mixstream import MixLoader, MixStream  # noqa: E402
from mixstream.shards.writer import write_shards  # noqa: E402
from mixstream.sources import integrity  # noqa: E402
from mixstream.sources.native import NativeSource  # noqa: E402

SEQ, ROWS_PER_BLOCK, BLOCKS_PER_SHARD, SHARDS = 2048, 1024, 8, 2
WEIGHTS = {"d0": 0.4, "d1": 0.3, "d2": 0.2, "d3": 0.1}


def corpus(root: str, fmt: str) -> dict[str, str]:
    out = {}
    for i, name in enumerate(WEIGHTS):
        d = os.path.join(root, fmt, name)
        if not os.path.exists(os.path.join(d, "manifest.json")):
            n = ROWS_PER_BLOCK * BLOCKS_PER_SHARD * SHARDS
            rng = np.random.default_rng(i)
            tok = rng.integers(0, 50_000, (n, SEQ), dtype=np.uint16)
            write_shards({"input_ids": tok}, d, domain=name, rows_per_block=ROWS_PER_BLOCK,
                         blocks_per_shard=BLOCKS_PER_SHARD, shard_format=fmt,
                         token_column="input_ids")
        out[name] = d
    return out


def run(paths: dict[str, str], verify: bool, workers: int, batches: int, seed: int) -> tuple:
    integrity.forget_verified()
    t0 = time.perf_counter()
    stream = MixStream({k: NativeSource(p, verify=verify) for k, p in paths.items()},
                       weights=WEIGHTS, seed=seed)
    it = iter(MixLoader(stream, batch_size=32, num_workers=workers))
    next(it)
    first = time.perf_counter() - t0
    t1 = time.perf_counter()
    for _ in range(batches):
        next(it)
    rate = batches * 32 / (time.perf_counter() - t1)
    del it
    return first, rate


def ci(x: list[float]) -> str:
    a = np.asarray(x)
    if len(a) < 2:
        return f"{a.mean():.3f}"
    from scipy import stats

    h = stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a))
    return f"{a.mean():.3f} ± {h:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--root", default=os.path.join(os.path.dirname(__file__), "work", "integrity"))
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=1500)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--formats", nargs="+", default=["parquet", "arrow"])
    args = ap.parse_args()
    report: dict = {}
    for fmt in args.formats:
        paths = corpus(args.root, fmt)
        shard = os.path.join(paths["d0"], sorted(f for f in os.listdir(paths["d0"])
                                                  if f.startswith("shard-"))[0])
        size = os.path.getsize(shard)
        integrity.hash_file(shard)  # warm the page cache
        t = time.perf_counter()
        integrity.hash_file(shard)
        mbs = size / (time.perf_counter() - t) / 1e6
        print(f"{fmt}: shard {size / 1e6:.1f} MB, sha256 {mbs:.0f} MB/s", flush=True)
        report[fmt] = {"shard_mb": size / 1e6, "sha256_mb_s": mbs}
        for workers in args.workers:
            firsts: dict[bool, list[float]] = {True: [], False: []}
            rates: dict[bool, list[float]] = {True: [], False: []}
            for r in range(args.rounds):
                order = [True, False]
                random.Random(r).shuffle(order)
                for v in order:
                    f, s = run(paths, v, workers, args.batches, seed=r)
                    firsts[v].append(f)
                    rates[v].append(s)
            d_first = [a - b for a, b in zip(firsts[True], firsts[False])]
            ratio = [a / b for a, b in zip(rates[True], rates[False])]
            row = {"first_batch_s_verify": ci(firsts[True]), "first_batch_s_off": ci(firsts[False]),
                   "first_batch_extra_s": ci(d_first), "samples_s_verify": ci(rates[True]),
                   "samples_s_off": ci(rates[False]), "throughput_ratio": ci(ratio)}
            report[fmt][f"workers={workers}"] = row
            print(fmt, f"workers={workers}", json.dumps(row, indent=1), flush=True)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
