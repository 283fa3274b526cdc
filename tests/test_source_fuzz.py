"""Malformed manifests and MDS index.json files: only SourceError (naming the file) escapes.

Real index files are mutated (wrong types, missing keys, negative and huge numbers, nested
junk, paths leaving the folder); the source is then built and every block read. Anything but
success or a :class:`SourceError` that names the index file is a failure.
``MIXSTREAM_FUZZ_EXAMPLES`` raises the example count (default 150 per test, derandomized for
CI; with the variable set, each run draws new examples).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mixstream.shards.writer import write_shards
from mixstream.sources.base import SourceError
from mixstream.sources.mds import MDSSource
from mixstream.sources.native import NativeSource
from mixstream.sources.resolve import Domain

FIXTURES = Path(__file__).parent / "fixtures" / "mds"
EXAMPLES = int(os.environ.get("MIXSTREAM_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                derandomize="MIXSTREAM_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**70), 2**70), st.sampled_from([-1, 0, 1, 2**31, 2**48, 2**63, 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["", "..", "../x", "/etc/passwd", "a/../../b", "shard-00001.parquet",
                     "shard.00001.mds", "zstd", "gz:9", "ndarray:uint16:64", "int", "str",
                     "parquet", "arrow", "mds", "fixed", "ragged", "uint16", "\x00"]),
)
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)


def paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into a JSON tree (the root excluded)."""
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in items:
        out.append((*prefix, k))
        out.extend(paths(v, (*prefix, k)))
    return out


@st.composite
def mutated(draw: st.DrawFn, original: Any) -> Any:
    obj = json.loads(json.dumps(original))
    for _ in range(draw(st.integers(1, 3))):
        where = paths(obj)
        if not where:
            break
        path = draw(st.sampled_from(where))
        parent = obj
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        op = draw(st.sampled_from(["replace", "replace", "delete", "number", "wrap", "add"]))
        if op == "delete":
            del parent[key]
        elif op == "number":
            parent[key] = draw(st.sampled_from([-1, -(2**40), 2**48, 2**63, 2**64 + 3, 10**30,
                                                0, 1.5, True]))
        elif op == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"x": parent[key]}]))
        elif op == "add" and isinstance(parent[key], dict):
            parent[key][draw(st.text(max_size=6))] = draw(junk)
        else:
            parent[key] = draw(junk)
    return obj


def exercise(build: Any, index_name: str) -> None:
    try:
        src = build()
        for j in range(min(len(src.block_sizes), 4)):
            src.read_block(j)
        assert (np.asarray(src.block_sizes) >= 0).all()
    except SourceError as e:
        assert index_name in str(e) or "shard" in str(e) or "domain" in str(e), str(e)


# --------------------------------------------------------------------- native manifests


@pytest.fixture(scope="module", params=["parquet", "arrow"])
def native(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp(f"fuzz-{request.param}") / "d"
    tok = (np.arange(300 * 8) % 5000).astype(np.uint16)
    table = pa.table({"id": np.arange(300, dtype=np.int64), "text": [f"t{i}" for i in range(300)],
                      "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(tok), 8)})
    write_shards(table, root, domain="a", rows_per_block=40, blocks_per_shard=3,
                 shard_format=request.param, token_column="input_ids")
    return root, json.loads((root / "manifest.json").read_text())


@FUZZ
@given(data=st.data())
def test_mutated_manifests_raise_only_source_error(native, data):
    root, original = native
    manifest = data.draw(mutated(original))
    (root / "manifest.json").write_text(json.dumps(manifest))
    try:
        exercise(lambda: Domain("a", str(root), verify=data.draw(st.booleans())), "manifest.json")
    finally:
        (root / "manifest.json").write_text(json.dumps(original))


@FUZZ
@given(text=st.binary(max_size=64), cut=st.integers(0, 4000))
def test_damaged_manifest_bytes_raise_only_source_error(native, text, cut):
    root, original = native
    raw = json.dumps(original).encode()
    (root / "manifest.json").write_bytes(raw[:cut] + text + raw[cut + len(text):])
    try:
        exercise(lambda: NativeSource(str(root)), "manifest.json")
    finally:
        (root / "manifest.json").write_text(json.dumps(original))


# --------------------------------------------------------------------- MDS index.json


@pytest.fixture(scope="module", params=["tokens_zstd", "ragged", "misc", "packed"])
def mds(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp(f"fuzz-mds-{request.param}") / "d"
    shutil.copytree(FIXTURES / request.param, root)
    return root, json.loads((root / "index.json").read_text())


@FUZZ
@given(data=st.data())
def test_mutated_mds_indexes_raise_only_source_error(mds, data):
    root, original = mds
    index = data.draw(mutated(original))
    (root / "index.json").write_text(json.dumps(index))
    try:
        exercise(lambda: MDSSource(root, allow_unsafe_types=True,
                                   verify=data.draw(st.booleans())), "index.json")
    finally:
        (root / "index.json").write_text(json.dumps(original))
