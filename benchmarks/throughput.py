"""MixStream samples/s and tokens/s against the raw limit measured in the same run (issue #2, 9).

    python benchmarks/throughput.py [--rounds 5] [--seconds 3]      # project venv is enough

Workload: 4 domains of 512 uint16 tokens per sample (mixstream native Parquet shards written by
``mixstream.write_shards``), weights 0.4/0.3/0.2/0.1, batch 32; ``num_workers`` 0 and 2; both
MixLoader modes (batched, and ``batched=False`` with the default collate). The raw limits:

* ``memmap_rows``: a plain loop slicing random rows from ``np.memmap``, default collate per 32;
* ``memmap_batches``: a plain loop yielding pre-gathered 32-row batches (one fancy index);
* ``dl_ceiling``: DataLoader with 2 workers that yield one prebuilt batch over and over (the
  inter-process ceiling); ``dl_ceiling_copy`` yields a fresh copy each time.

Writes ``benchmarks/results/throughput.json`` and ``throughput.md``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.bench import LABELS, aggregate, ensure_corpus, git_state, run_matrix  # noqa: E402
from benchmarks.common import RESULTS, data_dir, dump, machine  # noqa: E402
from benchmarks.report import write_throughput_report  # noqa: E402

CONFIGS = [("memmap_rows", 0), ("memmap_rows_dl", 0), ("memmap_batches", 0), ("mixstream", 0),
           ("mixstream_sample", 0), ("mixstream_arrow", 0), ("mixstream_arrow_sample", 0),
           ("memmap_rows", 2), ("memmap_batches", 2), ("dl_ceiling", 2),
           ("dl_ceiling_copy", 2), ("mixstream", 2), ("mixstream_sample", 2),
           ("mixstream_arrow", 2), ("mixstream_arrow_threads", 2), ("mixstream_threads", 2),
           ("mixstream_arrow_i64", 0), ("mixstream_arrow_i64", 2)]
RATIOS = {
    "arrow threads@2 / arrow batched@2 (processes)": (("mixstream_arrow_threads", 2),
                                                      ("mixstream_arrow", 2)),
    "parquet threads@2 / parquet batched@2 (processes)": (("mixstream_threads", 2),
                                                          ("mixstream", 2)),
    "arrow int64@0 / arrow uint16@0": (("mixstream_arrow_i64", 0), ("mixstream_arrow", 0)),
    "arrow int64@2 / arrow uint16@2": (("mixstream_arrow_i64", 2), ("mixstream_arrow", 2)),
    "arrow batched@0 / memmap_rows@0": (("mixstream_arrow", 0), ("memmap_rows", 0)),
    "arrow batched@0 / memmap_batches@0": (("mixstream_arrow", 0), ("memmap_batches", 0)),
    "arrow per-sample@0 / memmap_rows_dl@0": (("mixstream_arrow_sample", 0), ("memmap_rows_dl", 0)),
    "arrow batched@2 / dl_ceiling@2": (("mixstream_arrow", 2), ("dl_ceiling", 2)),
    "arrow batched@2 / dl_ceiling_copy@2": (("mixstream_arrow", 2), ("dl_ceiling_copy", 2)),
    "batched@0 / memmap_rows@0": (("mixstream", 0), ("memmap_rows", 0)),
    "batched@0 / memmap_batches@0": (("mixstream", 0), ("memmap_batches", 0)),
    "per-sample@0 / memmap_rows@0": (("mixstream_sample", 0), ("memmap_rows", 0)),
    "per-sample@0 / memmap_rows_dl@0": (("mixstream_sample", 0), ("memmap_rows_dl", 0)),
    "batched@2 / dl_ceiling@2": (("mixstream", 2), ("dl_ceiling", 2)),
    "batched@2 / dl_ceiling_copy@2": (("mixstream", 2), ("dl_ceiling_copy", 2)),
    "per-sample@2 / dl_ceiling@2": (("mixstream_sample", 2), ("dl_ceiling", 2)),
    "per-sample@2 / memmap_rows@2": (("mixstream_sample", 2), ("memmap_rows", 2)),
}


def goals(agg: dict) -> list[dict]:
    r = agg["ratios"]

    def med(name):
        return r[name]["median"]

    out = []
    for name, goal, threshold in (
        ("arrow batched@0 / memmap_rows@0", "batched (Arrow shards), num_workers=0: >= 70% of the random-row memmap loop", 0.7),
        ("arrow batched@2 / dl_ceiling@2", "batched (Arrow shards), 2 workers: >= 90% of the DataLoader ceiling", 0.9),
        ("batched@0 / memmap_rows@0", "batched, num_workers=0: >= 70% of the random-row memmap loop", 0.7),
        ("per-sample@0 / memmap_rows@0", "per-sample, num_workers=0: >= 70% of the random-row memmap loop", 0.7),
        ("batched@0 / memmap_batches@0", "batched, num_workers=0: >= 70% of pre-gathered memmap batches", 0.7),
        ("batched@2 / dl_ceiling@2", "batched, 2 workers: close to (>= 90% of) the DataLoader ceiling", 0.9),
        ("per-sample@2 / dl_ceiling@2", "per-sample, 2 workers: >= 90% of the DataLoader ceiling", 0.9),
    ):
        m = med(name)
        out.append({"goal": goal, "ratio": name,
                    "measured": "—" if m is None else f"{m:.2f} ({r[name]['min']:.2f}–{r[name]['max']:.2f})",
                    "met": m is not None and m >= threshold})
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
    ensure_corpus(args.samples, False, (), python=py, formats="native", mds=False)
    root = data_dir()
    runs = run_matrix(CONFIGS, args.rounds, args.seconds, root, python=py)
    agg = aggregate(runs, RATIOS)
    agg["labels"] = LABELS
    result = {
        "issue": "2/9", "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(), "git": git_state(),
        "note": "shared 2-core machine, other jobs running: noisy; warm page cache; every "
                "configuration in a fresh process; rounds interleaved; medians (min-max); "
                "ratios within one round",
        "workload": {"domains": 4, "weights": [0.4, 0.3, 0.2, 0.1], "seq": 512,
                     "dtype": "uint16", "batch": 32, "samples": args.samples,
                     "rounds": args.rounds, "seconds_per_run": args.seconds,
                     "format": "mixstream native shards, 1024-row blocks: Parquet+zstd ('mixstream*') "
                               "and uncompressed Arrow IPC ('mixstream_arrow*')"},
        "throughput": agg, "runs": runs,
    }
    result["goals"] = goals(agg)
    dump(result, os.path.join(RESULTS, "throughput.json"))
    write_throughput_report(result, RESULTS)
    print(open(os.path.join(RESULTS, "throughput.md")).read())


if __name__ == "__main__":
    main()
