"""Markdown tables and plots from the JSON that bench.py / throughput.py write."""

from __future__ import annotations

import os


def _f(x: float | None, digits: int = 0, scale: float = 1.0) -> str:
    if x is None:
        return "—"
    v = x * scale
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _mm(s: dict | None, digits: int = 0, scale: float = 1.0) -> str:
    """median (min–max)"""
    if not s or s.get("median") is None:
        return "—"
    if s.get("n", 0) <= 1:
        return _f(s["median"], digits, scale)
    return f"{_f(s['median'], digits, scale)} ({_f(s['min'], digits, scale)}–{_f(s['max'], digits, scale)})"


def _ratio(s: dict | None) -> str:
    if not s or s.get("median") is None:
        return "—"
    return f"{s['median']:.2f} ({s['min']:.2f}–{s['max']:.2f})"


def throughput_table(tp: dict, order: list[str], labels: dict[str, str]) -> list[str]:
    lines = ["| loader | workers | samples/s | tokens/s (M) | CPU-s / M samples | "
             "mix err 1k | mix err 10k | peak RSS main / tree (MiB) | anon RSS (MiB) | "
             "first batch (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key in order:
        row = tp["table"].get(key)
        if row is None:
            continue
        loader, nw = key.split("@")
        name = labels.get(loader, loader)
        if not row.get("ok_runs"):
            lines.append(f"| {name} | {nw} | failed: {str(row.get('error'))[:120]} | | | | | | | |")
            continue
        lines.append(
            f"| {name} | {nw} | {_mm(row['samples_per_s'])} | "
            f"{_mm(row['tokens_per_s'], 1, 1e-6)} | {_mm(row['cpu_s_per_M_samples'], 1)} | "
            f"{_f(row['err_1k']['median'], 4)} | {_f(row['err_10k']['median'], 4)} | "
            f"{_f(row['peak_rss_main_mb']['median'])} / {_f(row['peak_rss_tree_mb']['median'])} | "
            f"{_f((row.get('peak_anon_tree_mb') or {}).get('median'))} | "
            f"{_f(row['first_batch_s']['median'], 2)} |")
    return lines


def ratio_table(ratios: dict) -> list[str]:
    lines = ["| ratio (same round) | median (min–max) |", "|---|---|"]
    for _name, r in ratios.items():
        lines.append(f"| {r['a']} / {r['b']} | {_ratio(r)} |")
    return lines


def order_keys(tp: dict) -> list[str]:
    pref = ["memmap_rows", "memmap_rows_dl", "memmap_batches", "dl_ceiling", "dl_ceiling_copy",
            "mixstream", "mixstream_sample", "torchdata", "torchdata_rows", "torchdata_proc", "litdata", "hf_map",
            "hf_interleave", "mosaic_raw", "mosaic_zstd"]
    keys = list(tp["table"])
    return sorted(keys, key=lambda k: (int(k.split("@")[1]),
                                       pref.index(k.split("@")[0]) if k.split("@")[0] in pref else 99))


def plot_throughput(tp: dict, labels: dict, path: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in order_keys(tp) if tp["table"][k].get("ok_runs")]
    if not keys:
        return
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.42 * len(keys) + 1.5), sharey=True)
    ys = range(len(keys))
    names = [f"{k.split('@')[0]} (nw={k.split('@')[1]})" for k in keys]
    for ax, metric, xlabel, scale in ((axes[0], "samples_per_s", "samples/s (median, min–max)", 1),
                                     (axes[1], "cpu_s_per_M_samples", "CPU-s per million samples", 1)):
        med = [tp["table"][k][metric]["median"] * scale for k in keys]
        lo = [med[i] - tp["table"][k][metric]["min"] * scale for i, k in enumerate(keys)]
        hi = [tp["table"][k][metric]["max"] * scale - med[i] for i, k in enumerate(keys)]
        colors = ["tab:blue" if k.startswith("mixstream") else
                  ("tab:gray" if k.split("@")[0] in ("memmap_rows", "memmap_rows_dl", "memmap_batches",
                                                     "dl_ceiling", "dl_ceiling_copy") else "tab:orange")
                  for k in keys]
        ax.barh(list(ys), med, xerr=[lo, hi], color=colors)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(ys))
    axes[0].set_yticklabels(names)
    axes[0].invert_yaxis()
    fig.suptitle(title + " (blue: mixstream, gray: limits, orange: peers)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_fidelity(tp: dict, ref: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in order_keys(tp) if tp["table"][k].get("ok_runs")
            and tp["table"][k]["err_1k"]["median"] is not None
            and not k.startswith(("dl_ceiling",))]
    if not keys:
        return
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(keys) + 1.5))
    ys = list(range(len(keys)))
    e1 = [tp["table"][k]["err_1k"]["median"] for k in keys]
    e10 = [tp["table"][k]["err_10k"]["median"] or 0 for k in keys]
    ax.barh([y - 0.2 for y in ys], e1, height=0.4, label="first 1k samples")
    ax.barh([y + 0.2 for y in ys], e10, height=0.4, label="first 10k samples")
    ax.axvline(ref["err_1k"], ls="--", c="tab:blue", lw=0.8, label="i.i.d. median, 1k")
    ax.axvline(ref["err_10k"], ls="--", c="tab:orange", lw=0.8, label="i.i.d. median, 10k")
    ax.axvline(0.002, ls=":", c="k", lw=0.8, label="goal 1k (0.002)")
    ax.set_yticks(ys)
    ax.set_yticklabels([k.replace("@", " nw=") for k in keys])
    ax.invert_yaxis()
    ax.set_xlabel("max per-domain |share − weight|")
    ax.legend(fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_peers_report(result: dict, out_dir: str, plots: bool = True) -> None:
    lines = ["# mixstream vs peers (issue #6)", "",
             f"Run {result['date']}, commit `{result['git']['commit'][:10]}`"
             + (f" with uncommitted core changes in {', '.join(result['git']['dirty_core_files'])}"
                if result["git"].get("dirty_core_files") else "") + ".",
             f"Machine: {result['machine'].get('cpu', '?')}, {result['machine']['cpus']} CPUs, "
             f"load average at start {' '.join(result['machine'].get('loadavg_at_start', []))}.",
             f"**{result['note']}.**", "",
             f"Workload: {result['workload']}.", "",
             f"Versions: {result['versions']}.", ""]
    tp = result.get("throughput")
    if tp:
        lines += ["## Throughput, CPU, mixture error, memory", ""]
        lines += throughput_table(tp, order_keys(tp), tp.get("labels", {}))
        ref = result["iid_reference"]
        lines += ["", f"Mixture error = max over domains of |realised share − weight| over the first "
                  f"1k / 10k samples of each run. i.i.d. sampling gives a median of "
                  f"{ref['err_1k']:.4f} (1k) and {ref['err_10k']:.4f} (10k). "
                  "CPU = user+system seconds of the process and its DataLoader workers during "
                  "the timed part. Peak RSS tree = sum of VmHWM over the main process and its "
                  "workers (shared pages counted in each).", "",
                  "## Ratios (taken within each round)", ""]
        lines += ratio_table(tp["ratios"])
        lines.append("")
        if plots:
            plot_throughput(tp, tp.get("labels", {}), os.path.join(out_dir, "peers_throughput.png"),
                            "Same corpus, batch 32, 512 uint16 tokens")
            plot_fidelity(tp, ref, os.path.join(out_dir, "peers_fidelity.png"))
            lines += ["![throughput](peers_throughput.png)", "", "![fidelity](peers_fidelity.png)", ""]
    lat = result.get("weight_update_latency")
    if lat:
        lines += ["## Weight-update latency", "",
                  "`set_weights` to a one-hot on the last domain after 40 batches; counted: "
                  "delivered samples after the call that still follow the old weights.", "",
                  "| loader | workers | declared lag (samples) | observed lag (samples) | "
                  "= batches | prefetch depth (batches) | set_weights call (µs) |",
                  "|---|---|---|---|---|---|---|"]
        for r in lat["mixstream"]:
            if r.get("ok"):
                lines.append(f"| mixstream | {r['workers']} | {r['declared_lag_samples']} | "
                             f"{r['observed_lag_samples']} | {r['observed_lag_batches']:.0f} | "
                             f"{r['prefetch_depth_batches']} | {r['set_weights_us']:.0f} |")
            else:
                lines.append(f"| mixstream | {r.get('workers')} | failed: {r.get('error')} | | | | |")
        for name, why in lat["peers_not_measurable"].items():
            lines.append(f"| {name} | — | not measurable: {why} | | | | |")
        lines.append("")
    res = result.get("resume")
    if res:
        lines += ["## Time to resume", "",
                  "Wall time from a fresh process's first line of loader code to the first "
                  "batch: fresh start vs. loading a checkpoint taken at the sample shown.", "",
                  "| loader | at sample | checkpoint made | fresh start (s) | resumed (s) | state size (bytes) |",
                  "|---|---|---|---|---|---|"]
        for key, row in res.items():
            if "not_measured" in row:
                lines.append(f"| {key} | — | not measured: {row['not_measured']} | | | |")
            elif "error" in row:
                lines.append(f"| {key} | — | failed: {row['error']} | | | |")
            else:
                ck = row["checkpoint"]
                at = f"{ck['at']:,}" if ck.get("at") is not None else "—"
                lines.append(f"| {key} | {at} | {ck.get('how')} | {_mm(row['fresh_s'], 2)} | "
                             f"{_mm(row['resumed_s'], 2)} | {ck.get('state_bytes')} |")
        lines.append("")
    sc = result.get("scaling")
    if sc:
        lines += ["## Scaling (mixstream, batched)", "",
                  "| domains | µs per sample (wall) | CPU µs per sample | samples/s | mix err 1k | peak RSS tree (MiB) |",
                  "|---|---|---|---|---|---|"]
        for k, row in sc["domains"].items():
            if "error" in row:
                lines.append(f"| {k} | failed: {row['error']} | | | | |")
                continue
            lines.append(f"| {k} | {_mm(row['us_per_sample'], 2)} | {_mm(row['cpu_us_per_sample'], 2)} | "
                         f"{_mm(row['samples_per_s'])} | {_f(row['err_1k']['median'], 4)} | "
                         f"{_mm(row['peak_rss_tree_mb'])} |")
        lines += ["", "| corpus @ workers | peak RSS main (MiB) | peak RSS tree (MiB) | PSS tree (MiB) | "
                  "peak anonymous RSS tree (MiB) | file-backed RSS tree at end (MiB) | samples/s |",
                  "|---|---|---|---|---|---|---|"]
        for k, row in sc["corpus"].items():
            if "error" in row:
                lines.append(f"| {k} | failed: {row['error']} | | | | | |")
                continue
            lines.append(f"| {k} | {_mm(row['peak_rss_main_mb'])} | {_mm(row['peak_rss_tree_mb'])} | "
                         f"{_mm(row['pss_tree_mb'])} | {_mm(row.get('peak_anon_tree_mb'))} | "
                         f"{_mm(row.get('rss_file_tree_mb'))} | {_mm(row['samples_per_s'])} |")
        lines.append("")
    with open(os.path.join(out_dir, "peers.md"), "w") as f:
        f.write("\n".join(lines) + "\n")


def write_throughput_report(result: dict, out_dir: str) -> None:
    tp = result["throughput"]
    lines = ["# MixStream throughput, start-up and memory vs the limits (issue #12)", "",
             f"Run {result['date']}, commit `{result['git']['commit'][:10]}`"
             + (f" with uncommitted core changes in {', '.join(result['git']['dirty_core_files'])}"
                if result["git"].get("dirty_core_files") else "") + ".",
             f"**{result['note']}.**", "", f"Workload: {result['workload']}.", ""]
    lines += throughput_table(tp, order_keys(tp), tp.get("labels", {}))
    lines += ["", "## Ratios (same round)", ""] + ratio_table(tp["ratios"]) + [""]
    if result.get("startup"):
        lines += ["## Start-up (fresh processes, medians (min–max))", "",
                  "| corpus | domains | verify | import mixstream (s) | construct (s) | "
                  "first batch (s) | after import (s) |", "|---|---|---|---|---|---|---|"]
        for name, row in result["startup"].items():
            lines.append(f"| {name} | {row['domains']} | {row['verify']} | "
                         + " | ".join(_mm(row[k], 3) for k in (
                             "import_s", "construct_s", "first_batch_s", "after_import_s"))
                         + " |")
        lines.append("")
    goals = result.get("goals", [])
    if goals:
        lines += ["## Goals", "", "| goal | measured | met |", "|---|---|---|"]
        for g in goals:
            lines.append(f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else 'NO'} |")
        lines.append("")
    with open(os.path.join(out_dir, "throughput.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
