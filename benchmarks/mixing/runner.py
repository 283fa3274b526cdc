"""Run a diagnostic: the oracle sweep, DML's sample runs, then every method on every seed.

Jobs run in ``workers`` forked processes (the built problem is inherited, not pickled). Each
finished job is cached as JSON under the work folder, so an interrupted suite resumes; the
committed results are written by :mod:`.report`.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .methods import METHODS, Shared, dml_fit
from .problem import Problem
from .trainer import RunOut, train

_P: Problem | None = None   # the problem of the running diagnostic (inherited by forked workers)
_CFG: dict[str, Any] = {}


def _summary(p: Problem, r: RunOut) -> dict[str, Any]:
    w = r.weights
    pts = np.linspace(0, len(w) - 1, min(60, len(w))).round().astype(int)
    return {"test": r.test, "dev": r.dev, "target_test": p.target_loss(r.test),
            "target_dev": p.target_loss(r.dev), "stat": p.stat(w, p.domains),
            "stat_end": p.stat(w[-max(1, len(w) // 10):], p.domains),
            "mean_weights": dict(zip(p.domains, w.mean(0).tolist())),
            "final_weights": dict(zip(p.domains, w[-1].tolist())),
            "trajectory": {"steps": (pts + 1).tolist(), "weights": w[pts].tolist()},
            "seconds": r.seconds}


def _job(job: tuple[str, Any]) -> tuple[tuple[str, Any], dict[str, Any]]:
    assert _P is not None
    p = _P
    torch.set_num_threads(1)
    kind, arg = job
    t0 = time.perf_counter()
    try:
        if kind == "sweep":
            seed = int(arg)
            out = {}
            for label, sched in p.sweep:
                r = train(p, seed, schedule=sched)
                out[label] = _summary(p, r)
            return job, {"sweep": out, "seconds": time.perf_counter() - t0}
        if kind == "dmlfit":
            return job, {"dml": dml_fit(p), "seconds": time.perf_counter() - t0}
        seed = int(arg)
        sh = Shared()
        sh.dml = _CFG.get("dml", {})
        res: dict[str, Any] = dict(_CFG.get("keep", {}).get(seed, {}))
        methods = [m for m in _CFG["methods"] if m not in res]
        if ("doremi" in methods or "proportional" in methods) and "uniform" not in methods:
            methods.insert(0, "uniform")    # DoReMi's reference / proportional's twin
        for m in sorted(methods, key=lambda m: m != "uniform"):
            t1 = time.perf_counter()
            mo = METHODS[m](p, seed, sh)
            s = _summary(p, mo.run)
            s.update(extra=mo.extra, method_seconds=mo.seconds, info=mo.info)
            res[m] = s
            if _CFG.get("verbose"):
                print(f"    [{p.name} seed {seed}] {m:12s} target {s['target_test']:.4f}  "
                      f"stat {s['stat']:.3f}  {time.perf_counter() - t1:.1f}s", flush=True)
        return job, {"methods": res, "seconds": time.perf_counter() - t0}
    except Exception:  # keep the traceback: a worker's error must not vanish
        return job, {"error": traceback.format_exc()}


def _path(work: Path, p: Problem, job: tuple[str, Any]) -> Path:
    return work / "results" / p.name / f"{job[0]}_{job[1]}.json"


def run_problem(p: Problem, seeds: list[int], methods: list[str], work: Path, *,
                workers: int = 2, fresh: bool = False, verbose: bool = True,
                redo: list[str] | None = None) -> dict[str, Any]:
    """All jobs of one diagnostic; returns ``{"sweep": {seed: ...}, "methods": {seed: ...},
    "dml": ...}``. ``redo``: rerun only these methods inside cached seed jobs (e.g. after a
    controller fix), keeping the other methods' cached results."""
    global _P
    _P = p
    _CFG.clear()
    _CFG.update(methods=methods, verbose=verbose)

    def run(jobs: list[tuple[str, Any]]) -> dict[tuple[str, Any], dict]:
        done: dict[tuple[str, Any], dict] = {}
        todo = []
        for j in jobs:
            f = _path(work, p, j)
            if f.exists() and not fresh:
                done[j] = json.loads(f.read_text())
            else:
                todo.append(j)
        def keep(j: tuple[str, Any], o: dict) -> None:
            if "error" in o:
                raise RuntimeError(f"{p.name} job {j} failed:\n{o['error']}")
            f = _path(work, p, j)
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps(o))      # cached as soon as it finishes
            done[j] = o
        if workers > 1 and len(todo) > 1:
            ctx = mp.get_context("fork")
            with ctx.Pool(min(workers, len(todo))) as pool:
                for j, o in pool.imap_unordered(_job, todo, chunksize=1):
                    keep(j, o)
        else:
            for j in todo:
                keep(*_job(j))
        return done

    first: list[tuple[str, Any]] = [("sweep", s) for s in seeds]
    if "dml" in methods:
        first.insert(0, ("dmlfit", 0))
    a = run(first)
    if "dml" in methods:
        _CFG["dml"] = a[("dmlfit", 0)]["dml"]
    if redo:
        keep = {}
        for s in seeds:
            f = _path(work, p, ("methods", s))
            if f.exists():
                cached = json.loads(f.read_text())["methods"]
                keep[s] = {m: v for m, v in cached.items() if m not in redo}
                f.unlink()
        _CFG["keep"] = keep
        if "dml" in redo:
            _path(work, p, ("dmlfit", 0)).unlink(missing_ok=True)
            a.update(run([("dmlfit", 0)]))
            _CFG["dml"] = a[("dmlfit", 0)]["dml"]
    b = run([("methods", s) for s in seeds])
    return {"sweep": {s: a[("sweep", s)]["sweep"] for s in seeds},
            "methods": {s: b[("methods", s)]["methods"] for s in seeds},
            "dml": _CFG.get("dml"),
            "job_seconds": sum(v["seconds"] for v in list(a.values()) + list(b.values()))}


def cpu_note() -> str:
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return f"{os.cpu_count()} cores, load {load:.1f} at the start"
