"""mixstream against its peers and the physical limit, all in one run on the same data (issue #6).

    bash benchmarks/setup_peers.sh            # once: the peers' own virtual environments
    python benchmarks/bench.py                # ~15-20 min on 2 cores; --quick for a smoke run

Every configuration runs in a fresh process (``benchmarks/run_one.py``), with the page cache
warmed first by reading the files it will use (so: *warm cache*). Rounds are interleaved (each
round runs every configuration once, in a rotated order) and each figure is the median of the
rounds with min-max; every ratio is taken within one round and then summarised the same way.
Results: ``benchmarks/results/peers.json``, ``peers.md`` and ``peers_*.png``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (  # noqa: E402
    REPO,
    RESULTS,
    WORK,
    data_dir,
    dump,
    iid_reference,
    machine,
    summary,
    warm_files,
)
from benchmarks.loaders import FILES  # noqa: E402  (what each loader reads)

HERE = os.path.dirname(os.path.abspath(__file__))
VENV = os.environ.get("MIXSTREAM_BENCH_VENV", "/work/venv-bench")
VENV_MOSAIC = os.environ.get("MIXSTREAM_BENCH_VENV_MOSAIC", "/work/venv-bench-mosaic")
MOSAIC = ("mosaic_raw", "mosaic_zstd")
PEERS = ("torchdata", "litdata", "hf_map", "hf_interleave", "mosaic_raw", "mosaic_zstd")

LABELS = {
    "memmap_rows": "plain loop: random rows from np.memmap + default collate",
    "memmap_rows_dl": "same rows through a DataLoader (IterableDataset, collate)",
    "memmap_batches": "plain loop: pre-gathered 32-row batches from np.memmap",
    "dl_ceiling": "DataLoader ceiling: worker yields one prebuilt batch",
    "dl_ceiling_copy": "DataLoader ceiling, a fresh copy of the batch each time",
    "mixstream": "mixstream, batched (MixLoader)",
    "mixstream_sample": "mixstream, per-sample + default collate",
    "mixstream_arrow": "mixstream, batched, Arrow IPC shards (uncompressed)",
    "mixstream_arrow_sample": "mixstream, per-sample, Arrow IPC shards (uncompressed)",
    "mixstream_arrow_i64": "mixstream, batched, Arrow shards, tokens widened to int64 (default)",
    "mixstream_lists": "mixstream, batched, Parquet+zstd shards with token lists (parquet_lists=True)",
    "mixstream_arrow_w1024": "mixstream, batched, Arrow shards, shuffle_window=1024 (default 8192)",
    "mixstream_threads": "mixstream, batched, reader threads (workers = threads)",
    "mixstream_arrow_threads": "mixstream, batched, Arrow shards, reader threads (workers = threads)",
    "torchdata": "torchdata.nodes MultiNodeWeightedSampler, one 32-row gather per batch (+ thread ParallelMapper)",
    "torchdata_proc": "torchdata.nodes, ParallelMapper method='process'",
    "torchdata_rows": "torchdata.nodes, per-sample row reads + default collate",
    "litdata": "litdata CombinedStreamingDataset + StreamingDataLoader",
    "hf_map": "HF datasets map-style + WeightedRandomSampler",
    "hf_interleave": "HF datasets interleave_datasets (iterable)",
    "mosaic_raw": "mosaicml-streaming StreamingDataset, MDS raw",
    "mosaic_zstd": "mosaicml-streaming StreamingDataset, MDS zstd",
}


def python_for(loader: str, default: str | None = None) -> str | None:
    if loader in MOSAIC:
        py = os.path.join(VENV_MOSAIC, "bin", "python")
    else:
        py = default or os.path.join(VENV, "bin", "python")
    return py if os.path.exists(py) else None


def run(mode: str, loader: str, python: str, timeout: float = 300, **kw: Any) -> dict:
    """One fresh process of run_one.py; returns its JSON (or an error record)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [python, os.path.join(HERE, "run_one.py"), mode, "--loader", loader, "--out", out]
    for k, v in kw.items():
        if v is not None:
            cmd += [f"--{k}", str(v)]
    env = dict(os.environ, PYTHONPATH=REPO, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    log_path = out + ".log"
    try:
        with open(log_path, "w") as logf:  # a file, not a pipe: stray workers cannot block us
            subprocess.run(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, timeout=timeout)
        with open(out) as f:
            res = json.load(f)
        if not res.get("ok"):
            with open(log_path) as f:
                res["log_tail"] = f.read()[-1500:]
    except subprocess.TimeoutExpired:
        res = {"loader": loader, "ok": False, "error": f"timed out after {timeout} s"}
    except (OSError, json.JSONDecodeError) as e:
        res = {"loader": loader, "ok": False, "error": f"no result ({type(e).__name__}: {e})"}
    finally:
        for path in (out, log_path):
            if os.path.exists(path):
                os.remove(path)
    res["process_s"] = time.perf_counter() - t0
    return res


# -- throughput matrix ----------------------------------------------------------------------------
def run_matrix(configs: list[tuple[str, int]], rounds: int, seconds: float, root: str,
               python: str | None = None, log=print) -> list[dict]:
    """Interleaved rounds over ``configs``; returns every run (with its round number)."""
    runs = []
    for r in range(rounds):
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        for loader, nw in order:
            py = python_for(loader, python)
            if py is None:
                runs.append({"loader": loader, "workers": nw, "round": r, "ok": False,
                             "error": "environment not installed (benchmarks/setup_peers.sh)"})
                continue
            sub = FILES.get(loader)
            warm = warm_files(os.path.join(root, sub)) if sub else 0.0
            res = run("throughput", loader, py, workers=nw, seconds=seconds, root=root)
            res.update(round=r, warm_cache_read_s=warm)
            runs.append(res)
            sps = res.get("samples_per_s")
            log(f"  round {r} {loader:17s} nw={nw}: "
                + (f"{sps:10.0f} samples/s" if sps else f"FAILED {res.get('error', '')[:200]}"))
    return runs


def aggregate(runs: list[dict], ratios: dict[str, tuple[tuple[str, int], tuple[str, int]]]) -> dict:
    """Median (min-max) per configuration, and within-round ratios."""
    by: dict[tuple[str, int], list[dict]] = {}
    for r in runs:
        by.setdefault((r["loader"], r["workers"]), []).append(r)
    table = {}
    for (loader, nw), rs in by.items():
        ok = [r for r in rs if r.get("ok")]
        row: dict[str, Any] = {"loader": loader, "workers": nw, "runs": len(rs), "ok_runs": len(ok)}
        if not ok:
            row["error"] = rs[0].get("error")
        for key in ("samples_per_s", "tokens_per_s", "cpu_s_per_M_samples", "cpu_us_per_sample",
                    "peak_rss_main_mb", "peak_rss_tree_mb", "pss_tree_mb", "peak_anon_tree_mb",
                    "first_batch_s"):
            row[key] = summary([r[key] for r in ok if key in r])
        fid = [r["fidelity"] for r in ok if "fidelity" in r]
        for key in ("err_1k", "err_1k_max_window", "err_10k"):
            row[key] = summary([f.get(key) for f in fid])
        row["tag_mismatches"] = sum(r.get("tag_mismatches") or 0 for r in ok) if ok else None
        row["dtype"] = ok[0].get("dtype") if ok else None
        table[f"{loader}@{nw}"] = row
    out_ratios = {}
    rounds = sorted({r["round"] for r in runs})
    for name, (a, b) in ratios.items():
        vals = []
        for rd in rounds:
            ra = [r for r in runs if (r["loader"], r["workers"]) == a and r["round"] == rd and r.get("ok")]
            rb = [r for r in runs if (r["loader"], r["workers"]) == b and r["round"] == rd and r.get("ok")]
            if ra and rb:
                vals.append(ra[0]["samples_per_s"] / rb[0]["samples_per_s"])
        out_ratios[name] = {"a": f"{a[0]}@{a[1]}", "b": f"{b[0]}@{b[1]}", **summary(vals),
                            "per_round": vals}
    return {"table": table, "ratios": out_ratios}


# -- other figures --------------------------------------------------------------------------------
def latency_runs(root: str, python: str | None, log=print) -> list[dict]:
    out = []
    for nw in (0, 2, 4):
        res = run("latency", "mixstream", python_for("mixstream", python), workers=nw, root=root)
        out.append(res)
        log(f"  latency mixstream nw={nw}: declared {res.get('declared_lag_samples')} observed "
            f"{res.get('observed_lag_samples')} samples")
    return out


NO_WEIGHT_API = {
    "torchdata": "no API: MultiNodeWeightedSampler reads its weights only in reset(); a change "
                 "would need reset(), which restarts the 1000-draw batch (torchdata 0.11)",
    "litdata": "no API: CombinedStreamingDataset deep-copies the weights into each worker's "
               "iterator at iter() (maintainers: not propagated to workers, litData PR #318)",
    "hf_interleave": "no API: probabilities live in each worker's pickled copy (HF datasets #7387)",
    "hf_map": "WeightedRandomSampler draws all indices at __iter__ (torch.multinomial); mutating "
              "sampler.weights takes effect at the next epoch only",
    "mosaic_raw": "no API: Stream proportions are resolved once in StreamingDataset.__init__ and "
                  "the epoch's sample order is built at __iter__",
    "mosaic_zstd": "as mosaic_raw",
}


def resume_runs(root: str, python: str | None, rounds: int, at: int, log=print) -> dict:
    """Time from nothing to the first batch, fresh vs resumed at sample ``at`` (nw=0; mixstream
    also nw=2). Checkpoints are made once per loader, in their own process."""
    targets = [("mixstream", 0), ("mixstream", 2), ("torchdata", 0), ("litdata", 0),
               ("mosaic_raw", 0), ("hf_interleave", 0)]
    hf_at = int(os.environ.get("MIXSTREAM_BENCH_HF_RESUME_AT", "20000"))
    states: dict[tuple[str, int], dict] = {}
    tmp = tempfile.mkdtemp(prefix="bench-resume-")
    for loader, nw in targets:
        py = python_for(loader, python)
        if py is None:
            states[(loader, nw)] = {"ok": False, "error": "environment not installed"}
            continue
        n = hf_at if loader == "hf_interleave" else at
        path = os.path.join(tmp, f"{loader}-{nw}.pt")
        res = run("checkpoint", loader, py, timeout=600, workers=nw, at=n, state=path, root=root)
        res["path"] = path
        if res.get("ok") and not res.get("supported", True):
            res = {"ok": False, "error": "no checkpoint API"}
        states[(loader, nw)] = res
        log(f"  checkpoint {loader} nw={nw} at {n}: {res.get('how', res.get('error'))} "
            f"({res.get('make_s', 0):.1f} s)")
    out: dict[str, Any] = {}
    for _ in range(rounds):
        for (loader, nw), st in states.items():
            if not st.get("ok"):
                continue
            py = python_for(loader, python)
            sub = FILES.get(loader)
            if sub:
                warm_files(os.path.join(root, sub))
            fresh = run("resume", loader, py, workers=nw, root=root)
            res = run("resume", loader, py, workers=nw, root=root, state=st["path"])
            row = out.setdefault(f"{loader}@{nw}", {"checkpoint": {k: st.get(k) for k in
                                                                  ("at", "how", "make_s", "state_bytes")},
                                                   "fresh": [], "resumed": [], "errors": []})
            for key, rr in (("fresh", fresh), ("resumed", res)):
                if rr.get("ok"):
                    row[key].append(rr["first_batch_s"])
                else:
                    row["errors"].append(rr.get("error"))
    for row in out.values():
        row["fresh_s"] = summary(row.pop("fresh"))
        row["resumed_s"] = summary(row.pop("resumed"))
    for (loader, nw), st in states.items():
        if not st.get("ok"):
            out[f"{loader}@{nw}"] = {"error": st.get("error")}
    out["hf_map@0"] = {"not_measured": "a plain DataLoader with WeightedRandomSampler has no "
                                       "state_dict; torchdata's StatefulDataLoader could "
                                       "fast-forward the sampler (not part of this comparison)"}
    if "mosaic_zstd@0" not in out:
        out["mosaic_zstd@0"] = {"not_measured": "same resume path as mosaic_raw (position in "
                                                "the epoch), plus decompressing the shards"}
    return out


def scaling_runs(python: str | None, rounds: int, seconds: float, log=print) -> dict:
    """Per-sample cost with 4/64/1024 domains; RSS with the corpus 1x and 10x."""
    res: dict[str, Any] = {"domains": {}, "corpus": {}}
    roots = {}
    for k in (4, 64, 1024):
        roots[k] = os.path.join(WORK, f"domains-{k}")
    py = python_for("mixstream", python)
    for _ in range(rounds):
        for k, root in roots.items():
            if not os.path.exists(os.path.join(root, ".done")):
                continue
            warm_files(os.path.join(root, "native"))
            rr = run("throughput", "mixstream", py, workers=0, seconds=seconds, root=root)
            res["domains"].setdefault(str(k), []).append(rr)
            log(f"  scaling domains={k}: {rr.get('us_per_sample', float('nan')):.2f} us/sample")
        for scale in (1, 10):
            root = data_dir(scale)
            if not os.path.exists(os.path.join(root, "native", ".done")):
                continue
            for nw in (0, 2):
                warm_files(os.path.join(root, "native"))
                rr = run("throughput", "mixstream", py, workers=nw, seconds=seconds, root=root)
                res["corpus"].setdefault(f"x{scale}@{nw}", []).append(rr)
                log(f"  scaling corpus x{scale} nw={nw}: peak RSS tree "
                    f"{rr.get('peak_rss_tree_mb', float('nan')):.0f} MiB")
    summ: dict[str, Any] = {"domains": {}, "corpus": {}}
    for k, rs in res["domains"].items():
        ok = [r for r in rs if r.get("ok")]
        summ["domains"][k] = {key: summary([r[key] for r in ok]) for key in
                              ("us_per_sample", "cpu_us_per_sample", "samples_per_s",
                               "peak_rss_tree_mb")}
        summ["domains"][k]["err_1k"] = summary([r["fidelity"].get("err_1k") for r in ok])
        if not ok:
            summ["domains"][k]["error"] = rs[0].get("error")
    for k, rs in res["corpus"].items():
        ok = [r for r in rs if r.get("ok")]
        summ["corpus"][k] = {key: summary([r[key] for r in ok]) for key in
                             ("peak_rss_main_mb", "peak_rss_tree_mb", "pss_tree_mb",
                              "peak_anon_tree_mb", "rss_file_tree_mb", "samples_per_s")}
        if not ok:
            summ["corpus"][k]["error"] = rs[0].get("error")
    return summ


# -- corpus ---------------------------------------------------------------------------------------
def ensure_corpus(samples: int, scale10: bool, domains: tuple[int, ...], log=print,
                  python: str | None = None, formats: str | None = None, mds: bool = True) -> None:
    env = dict(os.environ, PYTHONPATH=REPO, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    corpus = os.path.join(HERE, "corpus.py")
    py = python_for("mixstream", python)
    t0 = time.perf_counter()
    cmd = [py, corpus, "build", "--samples", str(samples)]
    if formats:
        cmd += ["--formats", formats]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    pym = python_for("mosaic_raw")
    if pym and mds:
        subprocess.run([pym, corpus, "mds", "--samples", str(samples)], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if scale10:
        subprocess.run([py, corpus, "build", "--samples", str(samples), "--scale", "10",
                        "--formats", "native"], env=env, check=True, stdout=subprocess.DEVNULL)
    for k in domains:
        subprocess.run([py, corpus, "domains", "--count", str(k), "--samples", str(min(samples, 131072))],
                       env=env, check=True, stdout=subprocess.DEVNULL)
    log(f"corpus ready ({time.perf_counter() - t0:.0f} s)")


def git_state() -> dict:
    def g(*a):
        try:
            return subprocess.run(["git", "-C", REPO, *a], capture_output=True, text=True).stdout.strip()
        except OSError:
            return ""
    return {"commit": g("rev-parse", "HEAD"),
            "dirty_core_files": [line[3:] for line in g("status", "--porcelain", "mixstream").splitlines()]}


def versions(python: str | None, mosaic: bool = False) -> dict:
    if python is None:
        return {}
    mods = ["torch", "numpy"] + (["streaming"] if mosaic else
                                 ["torchdata", "litdata", "datasets", "pyarrow"])
    code = ("import importlib, json\nout={}\nfor m in %r:\n try:\n  out[m]=importlib.import_module(m)"  # noqa: UP031
            ".__version__\n except Exception as e: out[m]='n/a'\nprint(json.dumps(out))" % mods)
    try:
        p = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=120)
        return json.loads(p.stdout.strip().splitlines()[-1])
    except Exception:
        return {}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.5)
    ap.add_argument("--samples", type=int, default=262_144, help="corpus size (samples)")
    ap.add_argument("--quick", action="store_true", help="tiny corpus, 1 round, 1 s (smoke test)")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: "
                    "throughput,latency,resume,scaling,plots")
    ap.add_argument("--loaders", default="", help="only these loaders (comma-separated)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.samples = 1, 1.0, 16_384
        os.environ.setdefault("MIXSTREAM_BENCH_HF_RESUME_AT", "2000")
    skip = set(filter(None, args.skip.split(",")))
    t_start = time.perf_counter()
    root = data_dir()
    log = lambda s: print(s, flush=True)  # noqa: E731
    ensure_corpus(args.samples, "scaling" not in skip, () if "scaling" in skip else (4, 64, 1024), log)
    result: dict[str, Any] = {
        "issue": 6, "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(), "git": git_state(),
        "note": "shared 2-core machine, other jobs running: noisy; warm page cache (every file "
                "of a configuration is read just before its process starts); each figure is "
                "the median of the rounds (min-max); ratios are taken within one round",
        "workload": {"domains": 4, "weights": [0.4, 0.3, 0.2, 0.1], "seq": 512,
                     "dtype": "uint16", "batch": 32, "samples": args.samples,
                     "rounds": args.rounds, "seconds_per_run": args.seconds,
                     "fidelity_window": "first 10k samples of each run (also its warm-up)"},
        "versions": {"bench_venv": versions(python_for("mixstream")),
                     "mosaic_venv": versions(python_for("mosaic_raw"), mosaic=True)},
        "iid_reference": {"err_1k": iid_reference(1000), "err_10k": iid_reference(10_000)},
    }
    only = set(filter(None, args.loaders.split(",")))
    if "throughput" not in skip:
        loaders = ["memmap_rows", "memmap_batches", "mixstream", "mixstream_sample",
                   "mixstream_arrow", *PEERS]
        configs = [(x, nw) for nw in (0, 2) for x in loaders]
        configs += [("memmap_rows_dl", 0), ("torchdata_rows", 0), ("dl_ceiling", 2),
                    ("dl_ceiling_copy", 2), ("torchdata_proc", 2)]
        if only:
            configs = [c for c in configs if c[0] in only]
        log(f"throughput: {len(configs)} configurations x {args.rounds} rounds")
        runs = run_matrix(configs, args.rounds, args.seconds, root, log=log)
        ratios = {
            "mixstream_batched_vs_memmap_batches@0": (("mixstream", 0), ("memmap_batches", 0)),
            "mixstream_batched_vs_memmap_rows@0": (("mixstream", 0), ("memmap_rows", 0)),
            "mixstream_batched_vs_torchdata@0": (("mixstream", 0), ("torchdata", 0)),
            "mixstream_batched_vs_torchdata_rows@0": (("mixstream", 0), ("torchdata_rows", 0)),
            "mixstream_sample_vs_memmap_rows@0": (("mixstream_sample", 0), ("memmap_rows", 0)),
            "mixstream_batched_vs_dl_ceiling@2": (("mixstream", 2), ("dl_ceiling", 2)),
            "mixstream_batched_vs_dl_ceiling_copy@2": (("mixstream", 2), ("dl_ceiling_copy", 2)),
            "mixstream_sample_vs_dl_ceiling@2": (("mixstream_sample", 2), ("dl_ceiling", 2)),
            "mixstream_batched_vs_torchdata_thread@2": (("mixstream", 2), ("torchdata", 2)),
        }
        ratios.update({
            "mixstream_arrow_vs_memmap_rows@0": (("mixstream_arrow", 0), ("memmap_rows", 0)),
            "mixstream_arrow_vs_memmap_batches@0": (("mixstream_arrow", 0), ("memmap_batches", 0)),
            "mixstream_arrow_vs_torchdata@0": (("mixstream_arrow", 0), ("torchdata", 0)),
            "mixstream_arrow_vs_dl_ceiling@2": (("mixstream_arrow", 2), ("dl_ceiling", 2)),
            "mixstream_arrow_vs_torchdata_thread@2": (("mixstream_arrow", 2), ("torchdata", 2)),
        })
        for p in PEERS[1:]:
            ratios[f"mixstream_batched_vs_{p}@0"] = (("mixstream", 0), (p, 0))
            ratios[f"mixstream_batched_vs_{p}@2"] = (("mixstream", 2), (p, 2))
        result["throughput"] = aggregate(runs, ratios)
        result["throughput"]["labels"] = LABELS
        result["runs"] = runs
        dump(result, os.path.join(RESULTS, "peers.json"))
    if "latency" not in skip:
        log("weight-update latency")
        result["weight_update_latency"] = {
            "mixstream": latency_runs(root, None, log),
            "peers_not_measurable": NO_WEIGHT_API,
        }
        dump(result, os.path.join(RESULTS, "peers.json"))
    if "resume" not in skip:
        log("time to resume")
        result["resume"] = resume_runs(root, None, args.rounds, 10 ** 6 if not args.quick else 20_000, log)
        dump(result, os.path.join(RESULTS, "peers.json"))
    if "scaling" not in skip:
        log("scaling")
        result["scaling"] = scaling_runs(None, args.rounds, args.seconds, log)
    result["total_s"] = time.perf_counter() - t_start
    dump(result, os.path.join(RESULTS, "peers.json"))
    from benchmarks.report import write_peers_report

    write_peers_report(result, RESULTS, plots="plots" not in skip)
    log(f"done in {result['total_s'] / 60:.1f} min: {RESULTS}/peers.md")


if __name__ == "__main__":
    main()
