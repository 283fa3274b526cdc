"""Measure one loader configuration in this (fresh) process; the result goes to ``--out`` as JSON.

    python benchmarks/run_one.py throughput --loader mixstream --workers 0 --seconds 3 --out r.json
    python benchmarks/run_one.py latency    --loader mixstream --workers 2 --out r.json
    python benchmarks/run_one.py checkpoint --loader torchdata --at 1000000 --out state.pt
    python benchmarks/run_one.py resume     --loader torchdata --state state.pt --out r.json

throughput: time to the first batch; the first ``--fidelity`` samples (default 10k) are the
warm-up and give the realised mixture (read from each sample's header token); then batches are
counted for ``--seconds`` of wall time, with user+system CPU of this process and its workers
(from /proc) and peak RSS (VmHWM) of the process tree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import (  # noqa: E402
    BATCH,
    anon_mb,
    cpu_delta,
    data_dir,
    memory,
    mix_errors,
    tree_cpu,
)


def _load(name, root, workers, seed):
    from benchmarks.loaders import build

    return build(name, root, workers, seed)


def throughput(args) -> dict:
    from benchmarks.loaders import tokens_of

    t0 = time.perf_counter()
    bench = _load(args.loader, args.root, args.workers, args.seed)
    t_built = time.perf_counter()
    it = bench.batches()
    first = next(it)
    t_first = time.perf_counter()
    domains: list[int] = []
    tag_mismatch = 0
    x = tokens_of(first)
    seen = len(x)
    domains.extend(x[:, 0].tolist())
    while len(domains) < args.fidelity:
        b = next(it)
        x = tokens_of(b)
        head = x[:, 0].tolist()
        domains.extend(head)
        seen += len(x)
        if bench.domain_tag and isinstance(b, dict):
            tag = b[bench.domain_tag]
            tag = tag.tolist() if hasattr(tag, "tolist") else list(tag)
            if tag and isinstance(tag[0], str):
                names = bench.meta["domains"]
                tag = [names.index(t) for t in tag]
            tag_mismatch += sum(int(a != c) for a, c in zip(head, tag))
    t_warm = time.perf_counter()
    cpu0 = tree_cpu()
    n = 0
    batches = 0
    deadline = time.perf_counter() + args.seconds
    start = time.perf_counter()
    peak_anon = anon_mb()
    while True:
        b = next(it)
        n += len(tokens_of(b))
        batches += 1
        if batches % 8 == 0 and time.perf_counter() >= deadline:
            break
        if batches % 256 == 0:
            peak_anon = max(peak_anon, anon_mb())
    elapsed = time.perf_counter() - start
    peak_anon = max(peak_anon, anon_mb())
    cpu = cpu_delta(cpu0, tree_cpu())
    mem = memory()
    tokens = n * tokens_of(b).shape[1]
    out = {
        "loader": args.loader, "workers": args.workers,
        "samples_per_s": n / elapsed, "tokens_per_s": tokens / elapsed,
        "us_per_sample": 1e6 * elapsed / n,
        "cpu_s_per_M_samples": 1e6 * cpu / n, "cpu_us_per_sample": 1e6 * cpu / n,
        "cpu_utilisation": cpu / elapsed,
        "samples": n, "seconds": elapsed,
        "build_s": t_built - t0, "first_batch_s": t_first - t0, "warmup_s": t_warm - t_first,
        "batch_shape": list(tokens_of(b).shape), "dtype": str(tokens_of(b).dtype),
        "fidelity": mix_errors(domains[: args.fidelity], tuple(bench.weights)),
        "tag_mismatches": tag_mismatch if bench.domain_tag else None,
        "peak_anon_tree_mb": peak_anon,
        **mem,
    }
    bench.close()
    return out


def latency(args) -> dict:
    """Weight change to a one-hot on the last domain after ``--after`` batches: how many
    delivered samples after the call still follow the old weights."""
    from benchmarks.loaders import tokens_of

    bench = _load(args.loader, args.root, args.workers, args.seed)
    if not hasattr(bench, "set_weights"):
        return {"loader": args.loader, "workers": args.workers, "supported": False}
    it = bench.batches()
    pos = 0
    for _ in range(args.after):
        pos += len(tokens_of(next(it)))
    call_at = pos
    target = len(bench.weights) - 1
    new = [0.0] * len(bench.weights)
    new[target] = 1.0
    t0 = time.perf_counter()
    from_sample = bench.set_weights(new)
    call_s = time.perf_counter() - t0
    heads: list[int] = []
    index_ok = True
    for _ in range(args.follow):
        b = next(it)
        x = tokens_of(b)
        heads.extend(x[:, 0].tolist())
        if isinstance(b, dict) and "index" in b:
            idx = b["index"].tolist()
            index_ok &= idx == list(range(pos, pos + len(idx)))
        pos += len(x)
    old = [i for i, d in enumerate(heads) if d != target]
    lag = (old[-1] + 1) if old else 0
    return {"loader": args.loader, "workers": args.workers, "supported": True,
            "called_at_sample": call_at, "declared_from_sample": from_sample,
            "declared_lag_samples": from_sample - call_at, "observed_lag_samples": lag,
            "observed_lag_batches": lag / BATCH, "set_weights_us": call_s * 1e6,
            "index_tags_contiguous": index_ok,
            "prefetch_depth_batches": getattr(getattr(bench, "stream", None), "prefetch_depth", None)}


def checkpoint(args) -> dict:
    import torch

    bench = _load(args.loader, args.root, args.workers, args.seed)
    t0 = time.perf_counter()
    if hasattr(bench, "checkpoint_at"):
        state, how = bench.checkpoint_at(args.at), "computed from position (no data read)"
    elif hasattr(bench, "checkpoint_after"):
        state, how = bench.checkpoint_after(args.at), "by iterating"
    else:
        return {"loader": args.loader, "supported": False}
    torch.save(state, args.state)
    return {"loader": args.loader, "supported": True, "at": args.at, "how": how,
            "make_s": time.perf_counter() - t0, "state_bytes": os.path.getsize(args.state)}


def resume(args) -> dict:
    import torch

    from benchmarks.loaders import tokens_of

    t0 = time.perf_counter()
    bench = _load(args.loader, args.root, args.workers, args.seed)
    if args.state:
        state = torch.load(args.state, weights_only=False)
        bench.resume(state)
    first = next(bench.batches())
    dt = time.perf_counter() - t0
    out = {"loader": args.loader, "workers": args.workers, "resumed": bool(args.state),
           "first_batch_s": dt, "first_rows": tokens_of(first)[:4, :3].tolist()}
    bench.close()
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["throughput", "latency", "checkpoint", "resume"])
    ap.add_argument("--loader", required=True)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default=data_dir())
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--fidelity", type=int, default=10_000)
    ap.add_argument("--after", type=int, default=40, help="latency: batches before the change")
    ap.add_argument("--follow", type=int, default=40, help="latency: batches observed after")
    ap.add_argument("--at", type=int, default=1_000_000)
    ap.add_argument("--state", default=None)
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    try:
        res = globals()[args.mode](args)
        res["ok"] = True
    except Exception as e:  # reported, not raised: the orchestrator records why
        res = {"loader": args.loader, "workers": args.workers, "ok": False,
               "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    with open(args.out, "w") as f:
        json.dump(res, f)
    sys.stdout.flush()
    sys.stderr.flush()
    import signal

    from benchmarks.common import children

    for pid in children(os.getpid()):  # workers a loader left behind (they would hold our pipes)
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)  # do not wait for slow worker/thread teardown of some loaders


if __name__ == "__main__":
    main()
