"""Remote storage: MixStream over a local HTTP server vs the same shards on local disk (issue #7).

    python benchmarks/remote.py [--samples 32768] [--batches 600] [--rounds 3] [--latency 0]

Workload: 4 domains (weights 0.4/0.3/0.2/0.1) of 512 uint16 tokens per sample, written by
``mixstream.write_shards`` (zstd Parquet, 1024-row blocks, 4 blocks per shard); MixLoader,
batch 32, 2 DataLoader workers. The same shard directories are read

* ``local``: from disk (page cache warm);
* ``http cold``: as ``http://127.0.0.1`` URLs through an empty cache directory (every shard is
  downloaded, checked against the manifest's sha256 and renamed into the cache);
* ``http warm``: the same URLs again, the cache now full (reads come from the cache files).

The server (tests/remote_servers.py) runs in its own process; ``--latency`` adds seconds to
every GET to mimic a remote store. Samples/s are measured after the first batch; time to first
batch includes building the MixStream (manifest reads). Goal: warm >= 80% of local.
Writes ``benchmarks/results/remote.json`` and ``remote.md``.
"""

from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import time
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
from benchmarks.common import (  # noqa: E402
    BATCH,
    DOMAINS,
    RESULTS,
    SEQ,
    WEIGHTS,
    WORK,
    domain_sizes,
    dump,
    machine,
)

WORKERS = 2
WINDOW = 2048  # samples per shuffle window: several window loads (downloads) per run
GOAL = 0.8
COLD_ROUNDS = 2


def build_corpus(root: str, total: int) -> dict[str, str]:
    """4 native domain directories (reused if already written with this size)."""
    from mixstream.shards.writer import write_shards

    out = {}
    for i, (name, n) in enumerate(zip(DOMAINS, domain_sizes(total))):
        path = os.path.join(root, name)
        out[name] = path
        if os.path.exists(os.path.join(path, "manifest.json")):
            continue
        rng = np.random.default_rng(i)
        tokens = rng.integers(0, 50257, size=(n, SEQ), dtype=np.uint16)
        write_shards({"input_ids": tokens}, path, domain=name, rows_per_block=1024,
                     blocks_per_shard=4, token_column="input_ids")
    return out


def _serve(root: str, latency: float, conn: Any) -> None:
    from remote_servers import RangeHTTPServer

    with RangeHTTPServer(root, delay=latency) as srv:
        conn.send(srv.url)
        conn.recv()  # until told to stop
        conn.send(srv.gets())


def run(spec: dict[str, str], batches: int) -> dict[str, float]:
    from mixstream import MixLoader, MixStream

    t0 = time.perf_counter()
    stream = MixStream(spec, weights=dict(zip(DOMAINS, WEIGHTS)), seed=0, shuffle_window=WINDOW)
    tc = time.perf_counter()
    it = iter(MixLoader(stream, batch_size=BATCH, num_workers=WORKERS))
    next(it)
    t1 = time.perf_counter()
    for _ in range(batches):
        next(it)
    t2 = time.perf_counter()
    del it
    return {"construct_s": tc - t0, "first_batch_s": t1 - t0,
            "samples_per_s": batches * BATCH / (t2 - t1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=32_768)
    ap.add_argument("--batches", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latency", type=float, default=0.0)
    args = ap.parse_args(argv)
    work = os.path.join(WORK, "remote")
    corpus = build_corpus(os.path.join(work, f"corpus-{args.samples}"), args.samples)
    corpus_bytes = sum(os.path.getsize(os.path.join(r, f)) for d in corpus.values()
                       for r, _, fs in os.walk(d) for f in fs)
    cache = os.path.join(work, "cache")
    os.environ["MIXSTREAM_CACHE_DIR"] = cache  # URL strings use the default RemoteConfig
    parent, child = mp.Pipe()
    server = mp.get_context("spawn").Process(target=_serve, daemon=True,
                                             args=(os.path.dirname(next(iter(corpus.values()))),
                                                   args.latency, child))
    server.start()
    url = parent.recv()
    remote = {d: f"{url}/{os.path.basename(p)}" for d, p in corpus.items()}
    runs: dict[str, list[dict[str, float]]] = {"local": [], "http cold": [], "http warm": []}
    try:
        run(corpus, 50)  # warm the page cache and imports
        for r in range(args.rounds):
            runs["local"].append(run(corpus, args.batches))
            if r < COLD_ROUNDS:
                shutil.rmtree(cache, ignore_errors=True)
                runs["http cold"].append(run(remote, args.batches))
            runs["http warm"].append(run(remote, args.batches))
            print(f"round {r}: " + ", ".join(f"{k} {v[-1]['samples_per_s']:,.0f}/s"
                                             for k, v in runs.items()), flush=True)
    finally:
        parent.send("stop")
        gets = parent.recv()
        server.join(10)
    med = {k: {m: statistics.median(x[m] for x in v) for m in v[0]} for k, v in runs.items()}
    ratios = [w["samples_per_s"] / loc["samples_per_s"]
              for w, loc in zip(runs["http warm"], runs["local"])]
    result = {
        "when": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "workload": {"domains": len(DOMAINS), "seq": SEQ, "dtype": "uint16", "batch": BATCH,
                     "shuffle_window": WINDOW,
                     "workers": WORKERS, "samples": args.samples, "batches_per_run": args.batches,
                     "rounds": args.rounds, "latency_s": args.latency,
                     "corpus_bytes": corpus_bytes, "shards": "zstd Parquet, 1024-row blocks, 4 per shard"},
        "runs": runs, "median": med, "server_gets": gets,
        "warm_over_local": {"median": statistics.median(ratios), "min": min(ratios),
                            "max": max(ratios)},
    }
    result["goal_met"] = result["warm_over_local"]["median"] >= GOAL
    dump(result, os.path.join(RESULTS, "remote.json"))
    write_md(result, os.path.join(RESULTS, "remote.md"))
    print(open(os.path.join(RESULTS, "remote.md")).read())


def write_md(res: dict[str, Any], path: str) -> None:
    w, r = res["workload"], res["warm_over_local"]
    lines = [
        "# Remote storage: HTTP vs local disk (issue #7 item 3)", "",
        f"Run {res['when']} on {res['machine'].get('cpu', '?')} ({res['machine']['cpus']} CPUs, "
        f"shared with other jobs: noisy). `python benchmarks/remote.py --samples {w['samples']} "
        f"--batches {w['batches_per_run']} --rounds {w['rounds']} --latency {w['latency_s']}`.", "",
        f"Workload: {w['domains']} domains, {w['seq']} {w['dtype']} tokens per sample, batch "
        f"{w['batch']}, shuffle window {w['shuffle_window']}, {w['workers']} DataLoader workers, {w['samples']:,} samples "
        f"({w['corpus_bytes'] / 2**20:.1f} MiB of {w['shards']}); HTTP server on 127.0.0.1 in "
        f"its own process, {w['latency_s']} s added per GET; {res['server_gets']} GETs in all.", "",
        "| run | samples/s (median) | time to first batch (s) | of which MixStream() (s) | runs |",
        "|---|---|---|---|---|",
    ]
    for name, runs in res["runs"].items():
        m = res["median"][name]
        lines.append(f"| {name} | {m['samples_per_s']:,.0f} | {m['first_batch_s']:.2f} | "
                     f"{m['construct_s']:.2f} | {len(runs)} |")
    per_round = ", ".join(f"{loc['samples_per_s']:,.0f} / {wm['samples_per_s']:,.0f}"
                          for loc, wm in zip(res["runs"]["local"], res["runs"]["http warm"]))
    lines += ["", f"Per round, local / http warm samples/s: {per_round}."]
    lines += ["", f"**http warm / local = {r['median']:.2f}** (median of per-round ratios; {r['min']:.2f}–"
                  f"{r['max']:.2f}); goal >= {GOAL}: {'met' if res['goal_met'] else 'NOT met'}.",
              "", "Cold = empty cache: every shard is downloaded, sha256-checked and renamed into "
                  "the cache by the worker that first needs it (other workers wait on its lock).", ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    main()
