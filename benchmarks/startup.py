"""Time to the first batch in a fresh process (issue #12, item 3).

    python benchmarks/startup.py ROOT [--no-verify]     # one measurement, JSON on stdout

``ROOT`` holds one folder per domain (``benchmarks/work/data/native``, ``native_arrow``, or a
``domains-1024/native`` scaling corpus). Timed: ``import mixstream`` (which imports torch),
``MixStream(...)`` (manifests, sizes: the per-domain cost), and ``MixLoader`` + ``next(iter())``
(first windows read, checked and decoded). :func:`measure` runs this in fresh processes, rounds
interleaved; throughput.py reports the medians.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import summary  # noqa: E402


def one(root: str, verify: bool) -> dict:
    t0 = time.perf_counter()
    from mixstream import MixLoader, MixStream

    t1 = time.perf_counter()
    names = sorted(d for d in os.listdir(root) if not d.startswith("."))
    stream = MixStream({n: os.path.join(root, n) for n in names}, verify=verify, token_dtype=None)
    t2 = time.perf_counter()
    next(iter(MixLoader(stream, batch_size=32)))
    t3 = time.perf_counter()
    return {"domains": len(names), "verify": verify, "import_s": t1 - t0, "construct_s": t2 - t1,
            "first_batch_s": t3 - t2, "after_import_s": t3 - t1,
            "construct_ms_per_domain": 1e3 * (t2 - t1) / len(names)}


def measure(cases: dict[str, tuple[str, bool]], rounds: int, python: str) -> dict[str, dict]:
    """``{name: (root, verify)}`` -> per name, the median and range of every timing."""
    here = os.path.abspath(__file__)
    runs: dict[str, list[dict]] = {name: [] for name in cases}
    for r in range(rounds):
        names = list(cases)
        for name in names[r % len(names):] + names[: r % len(names)]:
            root, verify = cases[name]
            cmd = [python, here, root] + ([] if verify else ["--no-verify"])
            env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(here)),
                       PYTHONWARNINGS="ignore")
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    result = {}
    for name, rs in runs.items():
        row: dict = {"domains": rs[0]["domains"], "verify": rs[0]["verify"], "runs": len(rs)}
        for key in ("import_s", "construct_s", "first_batch_s", "after_import_s",
                    "construct_ms_per_domain"):
            row[key] = summary([x[key] for x in rs])
        result[name] = row
    return result


if __name__ == "__main__":
    args = sys.argv[1:]
    print(json.dumps(one(args[0], "--no-verify" not in args)))
