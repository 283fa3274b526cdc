"""Integrity on read: corrupt bytes are an error naming file and domain, never data or an abort.

Every corruption here is chosen so that the reader before this check served it silently (or
aborted): a few bytes of token values flipped in place, file size unchanged. The errors must
reach the trainer's process through MixStream/MixLoader with 0 and 2 DataLoader workers.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixstream import MixLoader, MixStream
from mixstream.shards.writer import write_shards
from mixstream.sources import integrity
from mixstream.sources.base import ColumnSpec, Source, SourceError
from mixstream.sources.mds import MDSSource
from mixstream.sources.native import NativeSource
from mixstream.sources.parquet import relative_names
from mixstream.sources.resolve import Domain, open_source

FIXTURES = Path(__file__).parent / "fixtures" / "mds"
SEQ = 16
ROWS = 200
VICTIM_ROW = 10  # a row of the first block of the first shard


def tokens(n: int = ROWS) -> np.ndarray:
    ids = np.arange(n, dtype=np.int64)
    return ((ids[:, None] * 7 + np.arange(SEQ)[None, :]) % 60_000).astype(np.uint16)


def table(n: int = ROWS) -> pa.Table:
    tok = tokens(n)
    return pa.table({"id": np.arange(n, dtype=np.int64),
                     "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(tok.ravel()), SEQ)})


def make(kind: str, root: Path) -> tuple[str, Path]:
    """(spec for MixStream, the file to corrupt) of a one-domain corpus, uncompressed so that
    flipped token bytes decode to other tokens (compressed pages often fail loudly anyway)."""
    out = root / kind
    if kind in ("native-parquet", "native-arrow"):
        fmt = kind.split("-")[1]
        write_shards(table(), out, domain="a", rows_per_block=50, blocks_per_shard=2,
                     shard_format=fmt, compression=None, token_column="input_ids")
        return str(out), out / f"shard-00000.{fmt}"
    if kind == "parquet":  # a plain file with page checksums (Spark/parquet-mr write them)
        out.mkdir()
        pq.write_table(table(), out / "part-0.parquet", row_group_size=50, compression="none",
                       use_dictionary=False, write_page_checksum=True)
        return str(out / "part-0.parquet"), out / "part-0.parquet"
    assert kind == "mds"  # mosaic's own bytes, raw shards with sha256 + xxh128 recorded
    shutil.copytree(FIXTURES / "ragged", out)
    return str(out), out / "shard.00000.mds"


def flip_token_bytes(kind: str, path: Path) -> None:
    """XOR the low byte of four token values of one sample, in place (same size)."""
    data = bytearray(path.read_bytes())
    if kind == "mds":
        want = json.loads((FIXTURES / "ragged" / "expected.json").read_text())["samples"][0]
        values = np.asarray(want["input_ids"]["values"], dtype="<i4")
        pattern, item = values[:8].tobytes(), 4
    else:
        row = tokens()[VICTIM_ROW]
        # plain Parquet stores uint16 as INT32; native Parquet (byte columns) and Arrow IPC
        # as uint16
        dtype = "<i4" if kind == "parquet" else "<u2"
        pattern, item = row.astype(dtype).tobytes(), np.dtype(dtype).itemsize
    pos = bytes(data).find(pattern)
    assert pos >= 0 and bytes(data).find(pattern, pos + 1) < 0, "token bytes not found once"
    for k in (1, 2, 4, 6):
        data[pos + k * item] ^= 0x01
    path.write_bytes(bytes(data))


def expected_rows(kind: str, batch: dict) -> None:
    """Every delivered sample is the one its id names (no corrupt token ever delivered)."""
    if kind == "mds":
        return
    ids = batch["id"].numpy()
    assert (batch["input_ids"].numpy() == tokens()[ids]).all(), "corrupt tokens were served"


KINDS = ["native-parquet", "native-arrow", "parquet", "mds"]


@pytest.fixture(autouse=True)
def _fresh_cache():
    integrity.forget_verified()
    yield
    integrity.forget_verified()


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("kind", KINDS)
def test_flipped_bytes_are_an_error_naming_file_and_domain(kind, workers, tmp_path):
    spec, victim = make(kind, tmp_path)
    flip_token_bytes(kind, victim)
    columns = ["input_ids", "score"] if kind == "mds" else None
    stream = MixStream({"web": spec}, shuffle=False, columns=columns, seed=0)
    with pytest.raises(SourceError) as info:
        for i, batch in enumerate(MixLoader(stream, batch_size=8, num_workers=workers)):
            expected_rows(kind, batch)
            assert i < 3 * ROWS, "no error after several epochs"
    msg = str(info.value)
    assert "domain 'web'" in msg and victim.name in msg, msg
    assert "corrupt" in msg


def test_clean_files_read_as_before(tmp_path):
    """The checks pass on intact data of every format, and the data is unchanged."""
    for kind in KINDS:
        spec, _ = make(kind, tmp_path)
        a, b = open_source(spec), open_source(spec, verify=False)
        for j in range(len(a.block_sizes)):
            x, y = a.read_block(j), b.read_block(j)
            assert x.keys() == y.keys()
            if kind != "mds":
                assert (x["input_ids"] == y["input_ids"]).all()


# --------------------------------------------------------------------- switch and cost


def test_verify_false_skips_the_hash(tmp_path):
    """verify=False serves the bytes as they are (the caller's choice); True refuses them."""
    spec, victim = make("native-parquet", tmp_path)
    flip_token_bytes("native-parquet", victim)
    got = NativeSource(spec, verify=False).read_block(0)["input_ids"]
    assert not (got == tokens()[:50]).all()
    with pytest.raises(SourceError, match=r"shard-00000.parquet: sha256 .* differs"):
        Domain("web", spec, verify=True).read_block(0)
    assert Domain("web", spec, verify=False).read_block(1) is not None


def test_mixstream_verify_switch(tmp_path):
    """MixStream(verify=...) reaches the sources: off, the (corrupt) bytes are served."""
    spec, victim = make("native-parquet", tmp_path)
    flip_token_bytes("native-parquet", victim)
    batch = next(iter(MixLoader(MixStream({"web": spec}, shuffle=False, verify=False),
                                batch_size=16)))
    assert not (batch["input_ids"].numpy() == tokens()[batch["id"].numpy()]).all()
    with pytest.raises(SourceError, match="sha256"):
        next(iter(MixLoader(MixStream({"web": spec}, shuffle=False), batch_size=16)))


@pytest.mark.parametrize("kind", ["native-parquet", "native-arrow", "mds"])
def test_each_file_is_hashed_once_per_process(kind, tmp_path, monkeypatch):
    spec, _ = make(kind, tmp_path)
    calls: list[str] = []
    real = integrity.hasher

    def counting(algo):
        calls.append(algo)
        return real(algo)

    monkeypatch.setattr(integrity, "hasher", counting)
    for _ in range(2):  # a second source on the same files: no new hashing either
        src = open_source(spec)
        for _epoch in range(3):
            for j in range(len(src.block_sizes)):
                src.read_block(j)
    files = 2 if kind.startswith("native") else len(src.block_sizes)
    assert len(calls) == files, calls
    assert set(calls) == {"sha256" if kind.startswith("native") else "xxh128"}


def test_a_window_hashes_its_new_shards_together(tmp_path, monkeypatch):
    """Domain.prefetch (called with every block of a window) checks the window's unchecked
    shards on several threads; the reads then hash nothing; a corrupt one fails there."""
    out = tmp_path / "four"
    write_shards(table(), out, domain="a", rows_per_block=25, blocks_per_shard=2)
    calls: list[str] = []
    real = integrity.hasher
    monkeypatch.setattr(integrity, "hasher", lambda algo: calls.append(algo) or real(algo))
    dom = Domain("web", str(out))
    dom.prefetch(range(len(dom.block_sizes)))
    assert len(calls) == 4
    for j in range(len(dom.block_sizes)):
        dom.read_block(j)
    assert len(calls) == 4
    integrity.forget_verified()
    flip = out / "shard-00002.parquet"
    data = bytearray(flip.read_bytes())
    data[100] ^= 0x10
    flip.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"domain 'web': .*shard-00002.parquet: sha256"):
        Domain("web", str(out)).prefetch(range(8))


def test_a_replaced_file_is_hashed_again(tmp_path):
    spec, victim = make("native-parquet", tmp_path)
    NativeSource(spec).read_block(0)
    flip_token_bytes("native-parquet", victim)
    os.utime(victim, ns=(1, 1))  # a different mtime: a new file to the cache
    with pytest.raises(SourceError, match="differs"):
        NativeSource(spec).read_block(0)


# --------------------------------------------------------------------- Arrow IPC: no abort


def _negative_length(path: Path) -> None:
    """Set the sign bit of the token child array's length in the first batch's metadata: the
    old reader handed it to Arrow's Slice, whose fatal check aborted the process (SIGABRT)."""
    data = bytearray(path.read_bytes())
    node = struct.pack("<qq", 50 * SEQ, 0)  # FieldNode {length, null_count} of the values
    pos = bytes(data).find(node)
    assert pos >= 0
    data[pos + 7] ^= 0x80
    path.write_bytes(bytes(data))


def test_arrow_length_flip_is_an_error_not_an_abort(tmp_path):
    spec, victim = make("native-arrow", tmp_path)
    _negative_length(victim)
    code = textwrap.dedent(f"""
        from mixstream import MixLoader, MixStream
        from mixstream.sources.base import ColumnSpec, Source, SourceError
        from mixstream.sources.native import NativeSource
        stream = MixStream({{"web": NativeSource({spec!r}, verify=False)}}, shuffle=False)
        try:
            for _ in MixLoader(stream, batch_size=8):
                pass
        except SourceError as e:
            print("SOURCE-ERROR", e)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, f"reader died (rc {proc.returncode}): {proc.stderr[-800:]}"
    assert "SOURCE-ERROR" in proc.stdout and "domain 'web'" in proc.stdout
    assert victim.name in proc.stdout and "negative" in proc.stdout.lower() or "Invalid" in proc.stdout


def test_arrow_length_flip_with_workers(tmp_path):
    spec, victim = make("native-arrow", tmp_path)
    _negative_length(victim)
    stream = MixStream({"web": NativeSource(spec, verify=False)}, shuffle=False)
    with pytest.raises(SourceError, match=rf"(?s)domain 'web'.*{victim.name}"):
        for _ in MixLoader(stream, batch_size=8, num_workers=2):
            pass


def test_a_flipped_column_type_is_caught_without_the_hash(tmp_path):
    """verify=False: the schema in each block is checked against the manifest's."""
    spec, _ = make("native-arrow", tmp_path)
    manifest = json.loads((Path(spec) / "manifest.json").read_text())
    manifest["schema"]["input_ids"]["dtype"] = "int16"
    (Path(spec) / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(SourceError, match=r"differ from the manifest"):
        NativeSource(spec, verify=False).read_block(0)


# --------------------------------------------------------------------- MDS


def test_mds_hash_checked_by_default_and_structure_without_hashes(tmp_path):
    spec, victim = make("mds", tmp_path)
    flip_token_bytes("mds", victim)
    with pytest.raises(SourceError, match=r"shard.00000.mds: xxh128 .* differs"):
        MDSSource(spec).read_block(0)  # the fastest recorded hash
    MDSSource(spec).read_block(1)
    bad = MDSSource(spec, verify=False).read_block(0)  # the caller opted out: bytes as they are
    assert len(bad["input_ids"]) == 20


def test_compressed_mds_checks_the_compressed_file(tmp_path):
    root = tmp_path / "z"
    shutil.copytree(FIXTURES / "tokens_zstd", root)
    f = root / "shard.00001.mds.zstd"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x04
    f.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"shard.00001.mds.zstd: xxh3_64 .* differs"):
        MDSSource(root).read_block(1)


# --------------------------------------------------------------------- paths stay inside


def _shard_path(spec: str, path: str) -> None:
    m = json.loads((Path(spec) / "manifest.json").read_text())
    m["shards"][0]["path"] = path
    (Path(spec) / "manifest.json").write_text(json.dumps(m))


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "symlinked-dir"])
def test_manifest_paths_are_confined_to_their_folder(how, tmp_path):
    spec, _ = make("native-parquet", tmp_path / "mine")
    other = tmp_path / "other"
    write_shards(table(), other, domain="b", rows_per_block=50, blocks_per_shard=2,
                 compression=None)
    target = other / "shard-00000.parquet"
    if how == "dotdot":
        _shard_path(spec, "../../other/shard-00000.parquet")
    elif how == "absolute":
        _shard_path(spec, str(target))
    elif how == "symlink":
        os.remove(Path(spec) / "shard-00000.parquet")
        os.symlink(target, Path(spec) / "shard-00000.parquet")
    else:
        os.symlink(other, Path(spec) / "sub")
        _shard_path(spec, "sub/shard-00000.parquet")
    with pytest.raises(SourceError, match=r"manifest.json: shard path .*(outside|resolves)"):
        MixStream({"a": spec})


def test_symlinks_inside_the_folder_are_fine(tmp_path):
    spec, _ = make("native-parquet", tmp_path)
    os.rename(Path(spec) / "shard-00000.parquet", Path(spec) / "real.parquet")
    os.symlink("real.parquet", Path(spec) / "shard-00000.parquet")
    assert NativeSource(spec).read_block(0)["input_ids"].shape == (50, SEQ)


def test_mds_symlink_escape(tmp_path):
    root = tmp_path / "m"
    shutil.copytree(FIXTURES / "ragged", root)
    os.remove(root / "shard.00001.mds")
    os.symlink(FIXTURES / "ragged" / "shard.00001.mds", root / "shard.00001.mds")
    with pytest.raises(SourceError, match=r"index.json: shard path 'shard.00001.mds' resolves"):
        MDSSource(root)


# --------------------------------------------------------------------- fingerprints


def _copy(src: str, dst: Path) -> str:
    if os.path.isdir(src):
        shutil.copytree(src, dst)
        return str(dst)
    dst.mkdir(parents=True)
    shutil.copy(src, dst / os.path.basename(src))
    return str(dst / os.path.basename(src))


@pytest.mark.parametrize("kind", KINDS + ["hf", "glob"])
def test_fingerprint_is_stable_across_copies_and_changes_with_a_shard(kind, tmp_path):
    if kind == "hf":
        import datasets

        spec = str(tmp_path / "hf")
        datasets.Dataset(table()).save_to_disk(spec)
    elif kind == "glob":
        d = tmp_path / "g"
        d.mkdir()
        pq.write_table(table().slice(0, 100), d / "p0.parquet", row_group_size=50)
        pq.write_table(table().slice(100), d / "p1.parquet", row_group_size=50)
        spec = str(d / "*.parquet")
    else:
        spec, _ = make(kind, tmp_path)
    fp = Domain("web", spec).fingerprint()
    assert len(fp) == 16 and int(fp, 16) >= 0
    assert Domain("web", spec).fingerprint() == fp  # stable across calls and objects
    if kind == "glob":
        copy = tmp_path / "copy"
        shutil.copytree(tmp_path / "g", copy)
        spec2 = str(copy / "*.parquet")
    else:
        spec2 = _copy(spec, tmp_path / "elsewhere" / "deep")
    top = Path(spec2).parent if kind in ("glob", "parquet") else Path(spec2)
    for f in top.rglob("*"):
        os.utime(f, ns=(5, 5))  # mtimes do not count
    assert Domain("web", spec2).fingerprint() == fp
    assert Domain("other", spec2).fingerprint() != fp  # the name is part of it
    # change one shard (rewritten with different data, same layout) and the index with it
    changed = table()
    changed = changed.set_column(0, "id", pa.array(np.arange(ROWS, dtype=np.int64) + 1))
    if kind in ("native-parquet", "native-arrow"):
        write_shards(changed, spec2, domain="a", rows_per_block=50, blocks_per_shard=2,
                     shard_format=kind.split("-")[1], compression=None, overwrite=True)
    elif kind == "parquet":
        pq.write_table(changed, spec2, row_group_size=50, compression="none")
    elif kind == "glob":
        pq.write_table(changed.slice(100), copy / "p1.parquet", row_group_size=50)
    elif kind == "hf":
        import datasets

        shutil.rmtree(spec2)
        datasets.Dataset(changed).save_to_disk(spec2)
    else:  # MDS: another fixture's shard 0 entry (different bytes and hashes)
        index = json.loads((Path(spec2) / "index.json").read_text())
        index["shards"][0]["raw_data"]["hashes"]["sha256"] = "0" * 64
        (Path(spec2) / "index.json").write_text(json.dumps(index))
    assert Domain("web", spec2).fingerprint() != fp


def test_fingerprint_of_a_user_source_uses_block_sizes_and_schema():
    """A Source written by a user (no file metadata): class, schema and block sizes."""

    class Mine(Source):
        uri = "mine"

        def __init__(self, sizes):
            self._sizes = np.asarray(sizes, dtype=np.int64)

        @property
        def block_sizes(self):
            return self._sizes

        @property
        def schema(self):
            return {"x": ColumnSpec("scalar", "int64")}

        def read_block(self, index):
            return {"x": np.zeros(int(self._sizes[index]), np.int64)}

    fp = Domain("u", Mine([3, 4])).fingerprint()
    assert Domain("u", Mine([3, 4])).fingerprint() == fp
    assert Domain("u", Mine([3, 5])).fingerprint() != fp
    assert Domain("u", [Mine([3]), Mine([4])]).fingerprint() != fp


def test_relative_names_of_urls_and_paths():
    assert relative_names(["s3://b/x/a/p.parquet", "s3://b/x/c/q.parquet"]) == [
        "a/p.parquet", "c/q.parquet"]
    assert relative_names(["/d/e/p.parquet"]) == ["p.parquet"]
    assert relative_names(["https://h/d/p.parquet", "https://h/d/q.parquet"]) == [
        "p.parquet", "q.parquet"]


def test_optional_capabilities_have_defaults_on_every_source(tmp_path):
    """prefetch and stats are declared on Source: a minimal source gets working defaults, and
    Domain calls them without duck typing."""
    import numpy as np

    class Minimal(Source):
        uri = "minimal"

        @property
        def block_sizes(self):
            return np.array([3, 2], np.int64)

        @property
        def schema(self):
            return {"x": ColumnSpec("fixed", "int32", 4)}

        def read_block(self, index):
            return {"x": np.zeros((int(self.block_sizes[index]), 4), np.int32)}

        def tokens_per_sample(self):
            return 4.0

    dom = Domain("m", [Minimal(), Minimal()])
    dom.prefetch([0, 1, 3])  # the default is a no-op
    assert dom.stats() == {"samples": 10, "tokens": 40, "bytes": None, "documents": None}
    path = tmp_path / "n"
    write_shards(pa.table({"input_ids": pa.array([[1, 2]] * 6, pa.list_(pa.int32(), 2))}),
                 path, domain="n", rows_per_block=3, token_column="input_ids")
    stats = Domain("n", [str(path), str(path)]).stats()  # the manifest's counts, summed
    assert stats["samples"] == 12 and stats["tokens"] == 24 and stats["documents"] == 12
    assert stats["bytes"] == 2 * sum(os.path.getsize(p) for p in path.glob("*.parquet"))
