"""Regenerate ``tests/fixtures/mds`` with mosaicml-streaming's own ``MDSWriter``.

The shard bytes in the fixtures come from the real library
(``streaming.base.format.mds.writer.MDSWriter``), so that ``tests/test_mds.py`` checks
mixstream's native MDS reader against the format as the library writes it, not against our
reading of it. Beside each dataset, ``expected.json`` holds the original sample values and the
writer arguments, so the tests need neither the library nor its pins.

Run it with a separate virtual environment (mosaicml-streaming 0.13 pins numpy<2.2,
transformers<5 and torchvision, which must not enter the project venv)::

    python3 -m venv /work/venv-mosaic
    /work/venv-mosaic/bin/pip install --no-deps mosaicml-streaming==0.13.0
    /work/venv-mosaic/bin/pip install torch==2.13.0 "numpy<2.2" "zstd<2" "xxhash<4" \\
        Brotli "python-snappy<1" Pillow typing_extensions tqdm
    /work/venv-mosaic/bin/python tools/make_mds_fixtures.py          # from the repo root

Why ``--no-deps`` and the import shim below: ``import streaming`` runs
``streaming/__init__.py``, which imports ``streaming.vision`` (torchvision) and the
StreamingDataLoader (transformers). With the CPU torch wheel, PyPI's torchvision cannot load its
compiled ops ("operator torchvision::nms does not exist"). The writer never touches either, so
:func:`import_mds_writer` registers ``streaming`` and ``streaming.base`` as bare packages (their
``__init__`` is skipped) and then imports the real writer, reader and ``merge_index`` modules
unchanged. Nothing is stubbed: every byte is written by the library's code.

Every fixture is also read back with the library's ``MDSReader`` and compared to the inputs,
so a wrong fixture cannot be produced silently.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import shutil
import sys
import types
from decimal import Decimal
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.join(HERE, "..", "tests", "fixtures", "mds")


def import_mds_writer() -> types.SimpleNamespace:
    """Import mosaicml-streaming's MDS writer/reader without its package ``__init__``."""
    spec = importlib.util.find_spec("streaming")
    if spec is None or spec.origin is None:
        sys.exit("mosaicml-streaming is not installed: see this script's docstring")
    root = os.path.dirname(spec.origin)
    for name, sub in (("streaming", root), ("streaming.base", os.path.join(root, "base"))):
        if name not in sys.modules:
            pkg = types.ModuleType(name)
            pkg.__path__ = [sub]
            sys.modules[name] = pkg
    from streaming._version import __version__
    from streaming.base.format.mds.reader import MDSReader
    from streaming.base.format.mds.writer import MDSWriter
    from streaming.base.util import merge_index

    return types.SimpleNamespace(
        MDSWriter=MDSWriter, MDSReader=MDSReader, merge_index=merge_index, version=__version__
    )


# ---------------------------------------------------------------- sample generators


def _words(rng: np.random.Generator, n: int) -> str:
    vocab = ["alpha", "beta", "gamma", "delta", "ünïcödé", "日本語", "emoji🙂", "", "x y"]
    return " ".join(vocab[int(i)] for i in rng.integers(0, len(vocab), n))


def tokens_samples(n: int, seed: int) -> list[dict[str, Any]]:
    """(a)/(b): fixed ``uint16[64]`` tokens, an int id and a text column."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        out.append(
            {
                "tokens": rng.integers(0, 2**16, 64, dtype=np.uint16),
                "id": int(rng.integers(-(2**62), 2**62)) if i % 7 == 3 else i,
                "text": _words(rng, int(rng.integers(0, 12))),
            }
        )
    return out


def packed_samples(n: int, seed: int) -> list[dict[str, Any]]:
    """(f): only fixed-size columns (packed tokens + loss mask + id): the all-fixed fast path."""
    rng = np.random.default_rng(seed)
    return [
        {
            "tokens": rng.integers(0, 2**32, 32, dtype=np.uint32),
            "mask": (rng.random(32) < 0.8).astype(np.uint8),
            "id": i,
        }
        for i in range(n)
    ]


def ragged_samples(n: int, seed: int) -> list[dict[str, Any]]:
    """(c): variable-length int32 tokens, json metadata, raw bytes and a float32 score."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(1, 200 if i % 10 == 0 else 30))
        out.append(
            {
                "input_ids": rng.integers(-(2**31), 2**31, length, dtype=np.int32),
                "meta": {"i": i, "src": ["web", "code"][i % 2], "tags": [1, 2.5, None, True]},
                "blob": rng.bytes(int(rng.integers(0, 20))),
                "score": np.float32(rng.standard_normal()),
            }
        )
    return out


def misc_samples(n: int, seed: int) -> list[dict[str, Any]]:
    """(e): every non-image encoding once: numeric scalars, str_* and ndarray variants, pkl."""
    rng = np.random.default_rng(seed)
    out = []
    dyn_dtypes = ["uint8", "int16", "float64", "int64", "float16", "uint32"]
    for i in range(n):
        dt = dyn_dtypes[i % len(dyn_dtypes)]
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 300 if i == 5 else 4)))
        dyn = (rng.standard_normal(shape) * 100).astype(dt)
        out.append(
            {
                "u8": np.uint8(rng.integers(0, 2**8)),
                "u16": np.uint16(rng.integers(0, 2**16)),
                "u32": np.uint32(rng.integers(0, 2**32)),
                "u64": np.uint64(rng.integers(0, 2**63)) * np.uint64(2) + np.uint64(i % 2),
                "i8": np.int8(rng.integers(-(2**7), 2**7)),
                "i16": np.int16(rng.integers(-(2**15), 2**15)),
                "i32": np.int32(rng.integers(-(2**31), 2**31)),
                "i64": np.int64(rng.integers(-(2**63), 2**63 - 1)),
                "f16": np.float16(rng.standard_normal()),
                "f32": np.float32(rng.standard_normal()),
                "f64": float(rng.standard_normal()),
                "s_int": int(rng.integers(-(2**62), 2**62)) * 10 ** (i % 5),
                "s_float": float(rng.standard_normal()) * 10.0 ** int(rng.integers(-5, 5)),
                "s_dec": Decimal(f"{int(rng.integers(-(10**6), 10**6))}.{i:03d}"),
                "any_arr": dyn,
                "mat": rng.standard_normal((2, 3)).astype(np.float32),
                "obj": {"i": i, "t": (i, "x"), "s": {i}},
            }
        )
    return out


# ---------------------------------------------------------------- expected.json


def to_jsonable(value: Any, encoding: str) -> Any:
    """The original value in a form the tests can compare exactly."""
    if encoding.startswith("ndarray"):
        return {
            "dtype": value.dtype.name,
            "shape": list(value.shape),
            "values": value.ravel().tolist(),
        }
    if encoding in {"bytes", "pkl"}:
        data = value if encoding == "bytes" else __import__("pickle").dumps(value)
        return base64.b64encode(data).decode("ascii")
    if encoding == "str_decimal":
        return str(value)
    if encoding in {"float16", "float32", "float64"}:
        return float(value)
    if encoding in {"uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"}:
        return int(value)
    return value  # int, str, str_int, str_float, json


def write_dataset(
    lib: types.SimpleNamespace,
    out: str,
    columns: dict[str, str],
    samples: list[dict[str, Any]],
    samples_from: str | None = None,
    **writer_kwargs: Any,
) -> None:
    """Write ``samples`` with the real MDSWriter, check them with MDSReader, save expected.json.

    ``samples_from`` names a sibling fixture whose expected.json already holds these samples
    (keeps the committed fixtures small).
    """
    if os.path.exists(out):
        shutil.rmtree(out)
    with lib.MDSWriter(out=out, columns=columns, **writer_kwargs) as writer:
        for s in samples:
            writer.write(s)
    check_with_library_reader(lib, out, samples)
    expected: dict[str, Any] = {"writer": {"columns": columns, **writer_kwargs}}
    if samples_from:
        expected["samples_from"] = samples_from
    else:
        expected["samples"] = [
            {k: to_jsonable(s[k], columns[k]) for k in sorted(columns)} for s in samples
        ]
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def check_with_library_reader(lib: types.SimpleNamespace, root: str, samples: list[dict]) -> None:
    """Decode every sample with mosaicml-streaming's MDSReader and compare to the inputs."""
    import zstd  # noqa: F401  (the library's own decompressor, via its compression module)
    from streaming.base.compression import decompress

    with open(os.path.join(root, "index.json")) as f:
        shards = json.load(f)["shards"]
    got = []
    for info in shards:
        reader = lib.MDSReader.from_json(root, "", info)
        reader.validate(allow_unsafe_types=True)
        raw_path = os.path.join(root, info["raw_data"]["basename"])
        tmp = None
        if not os.path.exists(raw_path):  # compressed only: decompress like Stream does
            with open(os.path.join(root, info["zip_data"]["basename"]), "rb") as f:
                data = decompress(info["compression"], f.read())
            tmp = raw_path
            with open(tmp, "wb") as f:
                f.write(data)
        try:
            got += [reader.decode_sample(reader.get_sample_data(i)) for i in range(info["samples"])]
        finally:
            if tmp:
                os.remove(tmp)
    assert len(got) == len(samples), (len(got), len(samples))
    for a, b in zip(got, samples, strict=True):
        for k, v in b.items():
            if isinstance(v, np.ndarray):
                assert a[k].dtype == v.dtype and np.array_equal(a[k], v), k
            else:
                assert a[k] == v, (k, a[k], v)


# ---------------------------------------------------------------- the fixtures


PACKED = {"tokens": "ndarray:uint32:32", "mask": "ndarray:uint8:32", "id": "int"}
TOKENS = {"tokens": "ndarray:uint16:64", "id": "int", "text": "str"}
RAGGED = {"input_ids": "ndarray:int32", "meta": "json", "blob": "bytes", "score": "float32"}
MISC = {
    "u8": "uint8", "u16": "uint16", "u32": "uint32", "u64": "uint64",
    "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64",
    "f16": "float16", "f32": "float32", "f64": "float64",
    "s_int": "str_int", "s_float": "str_float", "s_dec": "str_decimal",
    "any_arr": "ndarray", "mat": "ndarray:float32:2,3", "obj": "pkl",
}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="fixture root (default: %(default)s)")
    args = ap.parse_args(argv)
    lib = import_mds_writer()
    root = os.path.abspath(args.out)
    os.makedirs(root, exist_ok=True)

    tokens = tokens_samples(120, seed=1)
    # (a) raw, several shards
    write_dataset(lib, os.path.join(root, "tokens_raw"), TOKENS, tokens, size_limit=6000)
    # (b) the same samples, zstd, with hashes (must be sorted)
    write_dataset(
        lib, os.path.join(root, "tokens_zstd"), TOKENS, tokens, "tokens_raw", size_limit=6000,
        compression="zstd:7", hashes=["md5", "sha1", "sha256", "xxh3_64", "xxh64"],
    )  # fmt: skip
    # (c) dynamic-shape ndarray + json + bytes + float32, raw, hashed
    write_dataset(
        lib, os.path.join(root, "ragged"), RAGGED, ragged_samples(70, seed=2),
        size_limit=5000, hashes=["sha256", "xxh128"],
    )  # fmt: skip
    # (d1) splits: <root>/train and <root>/val, each with its own index.json
    for split, n, seed in (("train", 40, 3), ("val", 12, 4)):
        write_dataset(
            lib, os.path.join(root, "splits", split), TOKENS, tokens_samples(n, seed),
            size_limit=4000,
        )  # fmt: skip
    # (d2) nested: two partitions merged by the library's merge_index into <root>/index.json
    merged = os.path.join(root, "merged")
    if os.path.exists(merged):
        shutil.rmtree(merged)
    parts = []
    for p, (n, seed) in enumerate(((20, 5), (15, 6))):
        part = os.path.join(merged, f"part{p}")
        write_dataset(lib, part, RAGGED, ragged_samples(n, seed), size_limit=3000)
        parts.append(os.path.join(part, "index.json"))
    lib.merge_index(parts, merged, keep_local=True)
    # (e) every other non-image encoding, bzip2-compressed, with a pickle column
    write_dataset(
        lib, os.path.join(root, "misc"), MISC, misc_samples(24, seed=7), size_limit=3000,
        compression="bz2", hashes=["sha1"],
    )  # fmt: skip
    # (f) fixed-size columns only
    write_dataset(lib, os.path.join(root, "packed"), PACKED, packed_samples(40, 8), size_limit=2500)
    with open(os.path.join(root, "VERSION"), "w") as f:
        f.write(f"written by mosaicml-streaming {lib.version} via tools/make_mds_fixtures.py\n")
    print(f"fixtures written to {root} by mosaicml-streaming {lib.version}")


if __name__ == "__main__":
    main()
