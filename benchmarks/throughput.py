"""MixStream throughput, start-up and memory against the limits measured in the same run (issue #12).

    python benchmarks/throughput.py [--rounds 3] [--seconds 3]      # project venv + torchdata

Workload: 4 domains of 512 uint16 tokens per sample (mixstream native shards written by
``mixstream.write_shards``), weights 0.4/0.3/0.2/0.1, batch 32; ``num_workers`` 0 and 2; both
MixLoader modes (batched, and ``batched=False`` with the default collate); reader threads. The
limits and peers:

* ``memmap_rows``: a plain loop slicing random rows from ``np.memmap``, default collate per 32;
* ``memmap_batches``: a plain loop yielding pre-gathered 32-row batches (one fancy index) — with
  2 workers, the DataLoader's gather ceiling;
* ``dl_ceiling``: DataLoader with 2 workers that yield one prebuilt batch over and over (the
  inter-process ceiling); ``dl_ceiling_copy`` yields a fresh copy each time;
* ``torchdata``: torchdata.nodes' weighted sampler with its thread ``ParallelMapper`` (2 threads);
* ``mixstream_lists``: Parquet shards with token lists (``parquet_lists=True``, the layout before
  byte columns), against ``mixstream`` (bytes) and ``mixstream_arrow`` (Arrow IPC).

Start-up (benchmarks/startup.py): import, construction and first batch in fresh processes, for
the 4-domain corpus and a 1,024-domain one. Writes ``benchmarks/results/throughput.json`` and
``throughput.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench import LABELS, aggregate, ensure_corpus, git_state, run_matrix  # noqa: E402
from benchmarks.common import RESULTS, WORK, data_dir, dump, machine  # noqa: E402
from benchmarks.report import write_throughput_report  # noqa: E402
from benchmarks.startup import measure  # noqa: E402

CONFIGS = [("memmap_rows", 0), ("memmap_rows_dl", 0), ("memmap_batches", 0), ("mixstream", 0),
           ("mixstream_lists", 0), ("mixstream_sample", 0), ("mixstream_arrow", 0),
           ("mixstream_arrow_sample", 0), ("mixstream_arrow_i64", 0), ("mixstream_arrow_w1024", 0),
           ("memmap_rows", 2), ("memmap_batches", 2), ("dl_ceiling", 2),
           ("dl_ceiling_copy", 2), ("mixstream", 2), ("mixstream_sample", 2),
           ("mixstream_arrow", 2), ("mixstream_arrow_threads", 2), ("mixstream_threads", 2),
           ("mixstream_arrow_threads", 1),
           ("mixstream_arrow_i64", 2), ("torchdata", 2)]
RATIOS = {
    "arrow batched@2 / memmap_batches@2": (("mixstream_arrow", 2), ("memmap_batches", 2)),
    "parquet batched@2 / memmap_batches@2": (("mixstream", 2), ("memmap_batches", 2)),
    "arrow threads@2 / arrow batched@2 (processes)": (("mixstream_arrow_threads", 2),
                                                      ("mixstream_arrow", 2)),
    "parquet threads@2 / parquet batched@2 (processes)": (("mixstream_threads", 2),
                                                          ("mixstream", 2)),
    "arrow 1 reader thread / arrow batched@2 (processes)": (("mixstream_arrow_threads", 1),
                                                            ("mixstream_arrow", 2)),
    "arrow threads@2 / arrow 1 reader thread": (("mixstream_arrow_threads", 2),
                                                ("mixstream_arrow_threads", 1)),
    "arrow threads@2 / torchdata threads@2": (("mixstream_arrow_threads", 2), ("torchdata", 2)),
    "parquet threads@2 / torchdata threads@2": (("mixstream_threads", 2), ("torchdata", 2)),
    "parquet batched@0 / arrow batched@0": (("mixstream", 0), ("mixstream_arrow", 0)),
    "parquet lists@0 / arrow batched@0": (("mixstream_lists", 0), ("mixstream_arrow", 0)),
    "parquet batched@0 / parquet lists@0": (("mixstream", 0), ("mixstream_lists", 0)),
    "arrow window 1024@0 / arrow window 8192@0": (("mixstream_arrow_w1024", 0),
                                                  ("mixstream_arrow", 0)),
    "arrow int64@0 / arrow uint16@0": (("mixstream_arrow_i64", 0), ("mixstream_arrow", 0)),
    "arrow int64@2 / arrow uint16@2": (("mixstream_arrow_i64", 2), ("mixstream_arrow", 2)),
    "arrow batched@0 / memmap_rows@0": (("mixstream_arrow", 0), ("memmap_rows", 0)),
    "arrow batched@0 / memmap_batches@0": (("mixstream_arrow", 0), ("memmap_batches", 0)),
    "arrow per-sample@0 / memmap_rows_dl@0": (("mixstream_arrow_sample", 0), ("memmap_rows_dl", 0)),
    "arrow batched@2 / dl_ceiling@2": (("mixstream_arrow", 2), ("dl_ceiling", 2)),
    "batched@0 / memmap_rows@0": (("mixstream", 0), ("memmap_rows", 0)),
    "per-sample@0 / memmap_rows_dl@0": (("mixstream_sample", 0), ("memmap_rows_dl", 0)),
    "per-sample@2 / dl_ceiling@2": (("mixstream_sample", 2), ("dl_ceiling", 2)),
}


def _med(table: dict, key: str, field: str) -> float | None:
    row = table.get(key) or {}
    return (row.get(field) or {}).get("median")


def goals(agg: dict, startup: dict) -> list[dict]:
    """Issue #12's goals: within-round throughput ratios, and medians for CPU, memory and
    start-up (each measured in fresh processes in this run)."""
    r, t = agg["ratios"], agg["table"]
    out = []

    def add(goal: str, measured: float | None, ok: bool, shown: str | None = None) -> None:
        out.append({"goal": goal, "measured": "—" if measured is None else
                    (shown or f"{measured:.2f}"), "met": measured is not None and ok})

    for name, goal, threshold in (
        ("arrow batched@2 / memmap_batches@2", "1. 2 workers, Arrow shards: >= 0.9x the gather ceiling", 0.9),
        ("parquet batched@2 / memmap_batches@2", "1. 2 workers, Parquet+zstd shards: >= 0.9x the gather ceiling", 0.9),
        ("arrow threads@2 / arrow batched@2 (processes)", "2. 2 reader threads >= 3x 2 worker processes (Arrow)", 3.0),
        ("parquet threads@2 / parquet batched@2 (processes)", "2. 2 reader threads >= 3x 2 worker processes (Parquet+zstd)", 3.0),
        ("arrow threads@2 / torchdata threads@2", "2. 2 reader threads >= torchdata's thread mapper (Arrow)", 1.0),
        ("parquet threads@2 / torchdata threads@2", "2. 2 reader threads >= torchdata's thread mapper (Parquet+zstd)", 1.0),
        ("parquet batched@0 / arrow batched@0", "4. Parquet+zstd >= 0.8x Arrow shards, num_workers=0", 0.8),
    ):
        m = r[name]["median"]
        add(goal, m, m is not None and m >= threshold,
            None if m is None else f"{m:.2f} ({r[name]['min']:.2f}–{r[name]['max']:.2f})")
    for key in ("mixstream_arrow@2", "mixstream@2"):
        a, b = _med(t, key, "cpu_us_per_sample"), _med(t, "memmap_batches@2", "cpu_us_per_sample")
        q = None if a is None or b is None else a / b
        add(f"1. CPU per sample ({key}) within 1.3x the gather ceiling's (medians)", q,
            q is not None and q <= 1.3, None if q is None else f"{q:.2f} ({a:.1f} vs {b:.1f} µs)")
    for name, label in (("parquet_4", "Parquet+zstd, verify on (default)"),
                        ("arrow_4", "Arrow, verify on")):
        v = startup.get(name, {}).get("after_import_s", {}).get("median")
        add(f"3. first batch after import, 4 domains, {label}: < 0.3 s", v,
            v is not None and v < 0.3, None if v is None else f"{v:.3f} s")
    many = startup.get("parquet_1024", {})
    per = many.get("construct_ms_per_domain", {}).get("median")
    add("3. 1,024 domains: construction well under ~1 ms per domain", per,
        per is not None and per < 0.5, None if per is None else
        f"{per:.3f} ms/domain; first batch {many['first_batch_s']['median']:.3f} s")
    for key in ("mixstream_arrow@0", "mixstream@0", "mixstream_arrow_w1024@0"):
        a, b = _med(t, key, "peak_anon_tree_mb"), _med(t, "memmap_rows@0", "peak_anon_tree_mb")
        d = None if a is None or b is None else a - b
        add(f"3. anonymous RSS at num_workers=0 ({key}) within 64 MB of the memmap loop", d,
            d is not None and d <= 64, None if d is None else f"+{d:.0f} MB ({a:.0f} vs {b:.0f})")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--samples", type=int, default=262_144)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.samples = 1, 1.0, 16_384
    py = sys.executable
    load = os.getloadavg()[0]
    ensure_corpus(args.samples, False, (1024,), python=py, formats="native", mds=False)
    root = data_dir()
    startup = measure({"parquet_4": (os.path.join(root, "native"), True),
                       "parquet_4_noverify": (os.path.join(root, "native"), False),
                       "arrow_4": (os.path.join(root, "native_arrow"), True),
                       "parquet_1024": (os.path.join(WORK, "domains-1024", "native"), True)},
                      args.rounds, py)
    runs = run_matrix(CONFIGS, args.rounds, args.seconds, root, python=py)
    agg = aggregate(runs, RATIOS)
    agg["labels"] = LABELS
    result = {
        "issue": "12", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(), "git": git_state(),
        "note": f"shared 2-core VM, load average {load:.2f} at the start; warm page cache; "
                "every configuration in a fresh process; rounds interleaved; medians (min-max); "
                "ratios within one round",
        "workload": {"domains": 4, "weights": [0.4, 0.3, 0.2, 0.1], "seq": 512,
                     "dtype": "uint16", "batch": 32, "samples": args.samples,
                     "rounds": args.rounds, "seconds_per_run": args.seconds,
                     "format": "mixstream native shards, 1024-row blocks: Parquet+zstd ('mixstream*') "
                               "and uncompressed Arrow IPC ('mixstream_arrow*')"},
        "throughput": agg, "runs": runs, "startup": startup,
    }
    result["goals"] = goals(agg, startup)
    dump(result, os.path.join(RESULTS, "throughput.json"))
    write_throughput_report(result, RESULTS)
    print(open(os.path.join(RESULTS, "throughput.md")).read())


if __name__ == "__main__":
    main()
