"""Build the benchmark corpus once, in every loader's native format, from the same tokens.

    python benchmarks/corpus.py build [--samples N] [--scale K]   # npy, native, hf, litdata
    python benchmarks/corpus.py mds                               # MDS raw + zstd (mosaic venv)
    python benchmarks/corpus.py domains --count 64                # scaling corpora (native only)

Layout under ``benchmarks/work/data`` (git-ignored):

* ``all.npy``          uint16 [N, 512], domain-major (the plain ``np.memmap`` baselines, torchdata)
* ``native/<domain>``   mixstream shards (``mixstream.write_shards``: Parquet, zstd, 1024-row blocks)
* ``native_lists/<domain>`` the same with ``parquet_lists=True`` (token lists, not bytes)
* ``native_arrow/<domain>`` the same as uncompressed Arrow IPC shards (memory-mapped, zero-copy)
* ``hf/<domain>``       Hugging Face ``Dataset.save_to_disk`` (Arrow, 8 shards)
* ``litdata/<domain>``  ``litdata.optimize`` with ``TokensLoader`` (its LLM-pretraining format)
* ``mds_raw/<domain>``, ``mds_zstd/<domain>``  mosaicml-streaming ``MDSWriter``
  (``ndarray:uint16:512``; zstd level 3)
* ``meta.json``         sizes, offsets, weights

Tokens are uniform random ids below 50257 (random tokens barely compress: zstd gains ~2%, real
text would gain more); each sample's first 3 tokens are a header (domain, row >> 16, row & 0xffff).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.common import (  # noqa: E402
    DOMAINS,
    HEADER,
    SEQ,
    VOCAB,
    WEIGHTS,
    data_dir,
    domain_sizes,
)

DEFAULT_SAMPLES = 262_144
FORMATS = ("npy", "native", "hf", "litdata")


def domain_rows(d: int, start: int, stop: int, seed: int = 0) -> np.ndarray:
    """Rows ``[start, stop)`` of domain ``d``: deterministic random tokens plus the header."""
    rng = np.random.default_rng([seed, d, start])
    out = rng.integers(0, VOCAB, size=(stop - start, SEQ), dtype=np.uint16)
    rows = np.arange(start, stop, dtype=np.int64)
    out[:, 0] = d
    out[:, 1] = rows >> 16
    out[:, 2] = rows & 0xFFFF
    return out


def write_meta(root: str, sizes: list[int], names: list[str], weights: list[float]) -> dict:
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    meta = {"domains": names, "sizes": sizes, "offsets": offsets, "weights": weights,
            "seq": SEQ, "header": HEADER, "total": int(sum(sizes))}
    with open(os.path.join(root, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return meta


def load_meta(root: str) -> dict:
    with open(os.path.join(root, "meta.json")) as f:
        return json.load(f)


def _done(path: str) -> bool:
    return os.path.exists(os.path.join(path, ".done"))


def _mark(path: str, seconds: float) -> None:
    with open(os.path.join(path, ".done"), "w") as f:
        f.write(f"{seconds:.2f}\n")


def build_npy(root: str, meta: dict) -> None:
    path = os.path.join(root, "all.npy")
    if os.path.exists(path):
        return
    mm = np.lib.format.open_memmap(path + ".tmp", mode="w+", dtype=np.uint16,
                                   shape=(meta["total"], SEQ))
    for d, (off, n) in enumerate(zip(meta["offsets"], meta["sizes"])):
        for a in range(0, n, 65536):
            b = min(n, a + 65536)
            mm[off + a : off + b] = domain_rows(d, a, b)
    mm.flush()
    del mm
    os.replace(path + ".tmp", path)


def _domain_table(mm: np.ndarray, off: int, n: int):
    import pyarrow as pa

    tok = np.ascontiguousarray(mm[off : off + n])
    return pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(tok.ravel()), SEQ)})


def build_native(root: str, meta: dict) -> None:
    from mixstream.shards.writer import write_shards
    from mixstream.sources.native import load_manifest

    out = os.path.join(root, "native")
    first = os.path.join(out, meta["domains"][0])
    if _done(out) and load_manifest(first).byte_columns and _done(os.path.join(root, "native_lists")):
        return  # (a corpus from before byte columns is rebuilt)
    t0 = time.perf_counter()
    mm = np.load(os.path.join(root, "all.npy"), mmap_mode="r")
    for name, off, n in zip(meta["domains"], meta["offsets"], meta["sizes"]):
        table = _domain_table(mm, off, n)
        write_shards(table, os.path.join(out, name), domain=name,
                     rows_per_block=1024, blocks_per_shard=16, token_column="input_ids",
                     overwrite=True)
        # the same as Parquet list columns (parquet_lists=True, the layout before byte columns)
        write_shards(table, os.path.join(root, "native_lists", name), domain=name,
                     rows_per_block=1024, blocks_per_shard=16, token_column="input_ids",
                     overwrite=True, parquet_lists=True)
        # the same data as uncompressed Arrow IPC shards: memory-mapped, zero-copy blocks
        write_shards(table, os.path.join(root, "native_arrow", name), domain=name,
                     shard_format="arrow", compression=None, rows_per_block=1024,
                     blocks_per_shard=16, token_column="input_ids", overwrite=True)
    _mark(out, time.perf_counter() - t0)
    _mark(os.path.join(root, "native_lists"), time.perf_counter() - t0)


def build_hf(root: str, meta: dict) -> None:
    import datasets

    out = os.path.join(root, "hf")
    if _done(out):
        return
    t0 = time.perf_counter()
    datasets.disable_progress_bars()
    mm = np.load(os.path.join(root, "all.npy"), mmap_mode="r")
    for name, off, n in zip(meta["domains"], meta["offsets"], meta["sizes"]):
        ds = datasets.Dataset(_domain_table(mm, off, n))
        ds.save_to_disk(os.path.join(out, name), num_shards=8)
    _mark(out, time.perf_counter() - t0)


def _litdata_rows(span: tuple[str, int, int]):
    import torch

    path, a, b = span
    mm = np.load(path, mmap_mode="r")
    for row in np.asarray(mm[a:b]):
        yield torch.from_numpy(row.copy())


def build_litdata(root: str, meta: dict) -> None:
    from litdata import TokensLoader, optimize

    out = os.path.join(root, "litdata")
    if _done(out):
        return
    t0 = time.perf_counter()
    path = os.path.join(root, "all.npy")
    for name, off, n in zip(meta["domains"], meta["offsets"], meta["sizes"]):
        step = 8192
        spans = [(path, off + a, off + min(n, a + step)) for a in range(0, n, step)]
        optimize(fn=functools.partial(_litdata_rows), inputs=spans,
                 output_dir=os.path.join(out, name), chunk_size=SEQ * 2048,
                 item_loader=TokensLoader(), num_workers=1, mode="overwrite")
    _mark(out, time.perf_counter() - t0)


def build_mds(root: str, meta: dict) -> None:
    """Needs mosaicml-streaming (run with the mosaic venv's python)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(__file__)), "tools"))
    try:
        from make_mds_fixtures import import_mds_writer
    except ImportError as e:  # pragma: no cover
        raise SystemExit("tools/make_mds_fixtures.py not found") from e
    lib = import_mds_writer()
    mm = np.load(os.path.join(root, "all.npy"), mmap_mode="r")
    for kind, compression in (("mds_raw", None), ("mds_zstd", "zstd")):
        out = os.path.join(root, kind)
        if _done(out):
            continue
        t0 = time.perf_counter()
        for name, off, n in zip(meta["domains"], meta["offsets"], meta["sizes"]):
            d = os.path.join(out, name)
            shutil.rmtree(d, ignore_errors=True)
            with lib.MDSWriter(out=d, columns={"input_ids": f"ndarray:uint16:{SEQ}"},
                               compression=compression, size_limit=1 << 26) as w:
                for a in range(0, n, 8192):
                    for row in np.asarray(mm[off + a : off + min(n, a + 8192)]):
                        w.write({"input_ids": row})
        _mark(out, time.perf_counter() - t0)


def build_domains(count: int, total: int) -> str:
    """A native-only corpus of ``count`` domains (the per-sample-cost scaling runs)."""
    from mixstream.shards.writer import write_shards

    root = os.path.join(os.path.dirname(data_dir()), f"domains-{count}")
    if _done(root):
        return root
    os.makedirs(root, exist_ok=True)
    sizes = [total // count] * count
    names = [f"d{i:04d}" for i in range(count)]
    rng = np.random.default_rng(count)
    weights = (rng.dirichlet(np.ones(count)) * 0.5 + 0.5 / count).tolist()
    import pyarrow as pa

    for i, (name, n) in enumerate(zip(names, sizes)):
        tok = domain_rows(i % 65536, 0, n)
        table = pa.table({"input_ids": pa.FixedSizeListArray.from_arrays(pa.array(tok.ravel()), SEQ)})
        write_shards(table, os.path.join(root, "native", name), domain=name,
                     rows_per_block=min(1024, n), blocks_per_shard=16, token_column="input_ids",
                     overwrite=True)
    write_meta(root, sizes, names, weights)
    _mark(root, 0.0)
    return root


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    b.add_argument("--scale", type=int, default=1, help="corpus size multiple (RSS scaling)")
    b.add_argument("--formats", default=",".join(FORMATS))
    m = sub.add_parser("mds")
    m.add_argument("--samples", type=int, default=DEFAULT_SAMPLES)
    dm = sub.add_parser("domains")
    dm.add_argument("--count", type=int, required=True)
    dm.add_argument("--samples", type=int, default=131_072)
    args = ap.parse_args(argv)

    if args.cmd == "domains":
        print(build_domains(args.count, args.samples))
        return
    scale = getattr(args, "scale", 1)
    root = data_dir(scale)
    os.makedirs(root, exist_ok=True)
    total = args.samples * scale
    meta_path = os.path.join(root, "meta.json")
    if os.path.exists(meta_path) and load_meta(root)["total"] != total:
        raise SystemExit(f"{root} holds a corpus of another size; delete it first")
    meta = write_meta(root, domain_sizes(total), list(DOMAINS), list(WEIGHTS))
    t0 = time.perf_counter()
    build_npy(root, meta)
    if args.cmd == "mds":
        build_mds(root, meta)
    else:
        formats = args.formats.split(",")
        for fmt, fn in (("native", build_native), ("hf", build_hf), ("litdata", build_litdata)):
            if fmt in formats:
                fn(root, meta)
    print(f"corpus {root} ready ({time.perf_counter() - t0:.1f} s)")


if __name__ == "__main__":
    main()
