"""Shared pieces of the benchmarks: the workload, paths, and /proc accounting (no psutil needed).

The workload (issue #6): 4 domains of 512 uint16 tokens per sample, weights 0.4/0.3/0.2/0.1,
batch 32. Every sample carries a 3-token header written by :mod:`benchmarks.corpus`
(``tokens[0]`` = domain id, ``tokens[1:3]`` = row number, high and low 16 bits), so the realised
mixture and duplicates can be read from the payload of *any* loader, tagged or not.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
WORK = os.environ.get("MIXSTREAM_BENCH_WORK", os.path.join(HERE, "work"))
RESULTS = os.path.join(HERE, "results")

SEQ = 512
BATCH = 32
WEIGHTS = (0.4, 0.3, 0.2, 0.1)
DOMAINS = ("web", "code", "books", "math")
VOCAB = 50257
HEADER = 3
SEED = 0
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def data_dir(scale: int = 1) -> str:
    return os.path.join(WORK, "data" if scale == 1 else f"data-x{scale}")


def domain_sizes(total: int, weights: tuple[float, ...] = WEIGHTS) -> list[int]:
    """Domain sizes proportional to the weights, so every domain runs out at about the same time."""
    sizes = [int(round(total * w)) for w in weights]
    sizes[0] += total - sum(sizes)
    return sizes


# -- /proc accounting ---------------------------------------------------------------------------
def children(pid: int) -> list[int]:
    """All descendants of ``pid`` (DataLoader workers and anything they started)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        out.extend(kids)
        todo.extend(kids)
    return out


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of one process (all its threads)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK
    except (OSError, IndexError):
        return 0.0


def tree_cpu(pid: int | None = None) -> dict[int, float]:
    pid = pid or os.getpid()
    return {p: cpu_seconds(p) for p in [pid] + children(pid)}


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU used between two :func:`tree_cpu` snapshots (processes born in between count fully)."""
    return sum(v - before.get(p, 0.0) for p, v in after.items())


def status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def anon_mb(pid: int | None = None) -> float:
    """Anonymous resident memory (RssAnon) of the process tree now, MiB: heap and buffers, not
    the page cache of memory-mapped files."""
    pid = pid or os.getpid()
    return sum(status_kb(p, "RssAnon") for p in [pid] + children(pid)) / 1024


def memory(pid: int | None = None) -> dict[str, float]:
    """Peak RSS of the main process, sum of peak RSS over the process tree, and PSS now (MiB)."""
    pid = pid or os.getpid()
    procs = [pid] + children(pid)
    return {
        "peak_rss_main_mb": status_kb(pid, "VmHWM") / 1024,
        "peak_rss_tree_mb": sum(status_kb(p, "VmHWM") for p in procs) / 1024,
        "pss_tree_mb": sum(pss_kb(p) for p in procs) / 1024,
        "rss_file_tree_mb": sum(status_kb(p, "RssFile") for p in procs) / 1024,
        "processes": len(procs),
    }


def warm_files(path: str) -> float:
    """Read every file under ``path`` once so the page cache is warm; returns seconds taken."""
    t0 = time.perf_counter()
    buf = bytearray(1 << 22)
    for root, _, files in os.walk(path):
        for name in files:
            try:
                with open(os.path.join(root, name), "rb", buffering=0) as f:
                    while f.readinto(buf):
                        pass
            except OSError:
                pass
    return time.perf_counter() - t0


# -- statistics ---------------------------------------------------------------------------------
def summary(values: list[float]) -> dict[str, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def mix_errors(domains: list[int], weights: tuple[float, ...] = WEIGHTS) -> dict[str, Any]:
    """Max per-domain |share - weight| over the first 1k and 10k samples (and over every 1k
    window of the first 10k)."""
    import numpy as np

    d = np.asarray(domains, dtype=np.int64)
    w = np.asarray(weights)
    out: dict[str, Any] = {"samples": int(len(d))}

    def err(x: np.ndarray) -> float:
        return float(np.abs(np.bincount(x, minlength=len(w))[: len(w)] / len(x) - w).max())

    if len(d) >= 1000:
        out["err_1k"] = err(d[:1000])
        wins = [err(d[i : i + 1000]) for i in range(0, min(len(d), 10_000) - 999, 1000)]
        out["err_1k_max_window"] = max(wins)
    if len(d) >= 10_000:
        out["err_10k"] = err(d[:10_000])
    return out


def iid_reference(n: int, trials: int = 2000, seed: int = 1) -> float:
    """Median max per-domain share error of i.i.d. draws over ``n`` samples."""
    import numpy as np

    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, WEIGHTS, size=trials)
    return float(np.median(np.abs(counts / n - np.asarray(WEIGHTS)).max(axis=1)))


def dump(obj: Any, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=False)
        f.write("\n")


def machine() -> dict[str, Any]:
    import platform

    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/loadavg") as f:
            info["loadavg_at_start"] = f.read().split()[:3]
    except OSError:
        pass
    return info
