"""Remote sources over a real HTTP server on loopback: range reads, retries, the shared cache.

The server (tests/remote_servers.py) injects faults: 5xx, connection resets, bodies cut off
mid-transfer, short and corrupt bodies, slow responses.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import pickle
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from remote_servers import RangeHTTPServer

from mixstream import MixStream
from mixstream.remote.cache import BlockCache, Expect
from mixstream.remote.config import RemoteConfig
from mixstream.remote.retry import DownloadCorrupt, RemoteError
from mixstream.remote.store import get_store
from mixstream.sources.base import Ragged, SourceError
from mixstream.sources.mds import MDSSource
from mixstream.sources.native import NativeSource
from mixstream.sources.parquet import ParquetSource
from mixstream.sources.resolve import Domain, open_source

MDS_FIXTURES = Path(__file__).parent / "fixtures" / "mds"


@pytest.fixture(scope="module")
def served(corpus, tmp_path_factory):
    """One server for the module over {corpus, mds}; tests clear its counters and faults."""
    root = tmp_path_factory.mktemp("served")
    (root / "corpus").symlink_to(Path(corpus["native"]["a"]).parents[1])
    (root / "mds").symlink_to(MDS_FIXTURES)
    with RangeHTTPServer(root) as srv:
        yield srv


@pytest.fixture
def srv(served):
    served.clear()
    yield served
    served.clear()


@pytest.fixture
def cfg(tmp_path):
    return RemoteConfig(cache_dir=str(tmp_path / "cache"), backoff=0.01, max_backoff=0.05,
                        retries=4, timeout=5.0)


def same_blocks(a, b) -> None:
    assert list(a.block_sizes) == list(b.block_sizes)
    for i in range(len(a.block_sizes)):
        x, y = a.read_block(i), b.read_block(i)
        assert list(x) == list(y)
        for k in x:
            assert _equal(x[k], y[k]), (i, k)


def _equal(a, b) -> bool:
    if isinstance(a, Ragged):
        return np.array_equal(a.values[a.offsets[0]:a.offsets[-1]],
                              b.values[b.offsets[0]:b.offsets[-1]]) and \
            np.array_equal(np.diff(a.offsets), np.diff(b.offsets))
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return bool(a == b)


def shard_gets(srv: RangeHTTPServer, domain: str = "a") -> dict[str, int]:
    return srv.get_counts(".parquet") if domain is None else {
        p: n for p, n in srv.get_counts(".parquet").items() if f"/native/{domain}/" in p}


# ------------------------------------------------------------------ reading


def test_native_over_http_matches_local_and_downloads_each_shard_once(srv, cfg, corpus):
    src = open_source(f"{srv.url}/corpus/native/a", cfg)
    assert isinstance(src, NativeSource) and src.uri.startswith("http://")
    local = NativeSource(corpus["native"]["a"])
    same_blocks(src, local)
    same_blocks(src, local)  # second pass: all from the cache
    gets = shard_gets(srv)
    assert len(gets) == len(local.manifest.shards) and set(gets.values()) == {1}
    assert not srv.ranges  # small shards are fetched whole ...
    cache = get_store(cfg).cache  # ... and enter the cache only with the manifest's sha256
    want = {s.sha256 for s in local.manifest.shards}
    got = {hashlib.sha256(Path(p).read_bytes()).hexdigest()
           for p in Path(cache.root, "data").iterdir()}
    assert want == got


def test_parquet_row_groups_are_range_reads(srv, tmp_path, corpus):
    cfg = RemoteConfig(cache_dir=str(tmp_path / "c"), whole_file_max_bytes=0)
    src = open_source(f"{srv.url}/corpus/parquet/a/*.parquet", cfg)
    assert isinstance(src, ParquetSource) and len(src.files) == 2
    size = os.path.getsize(Path(corpus["parquet"]["a"]).parent / "part-0.parquet")
    footers = srv.gets(".parquet")
    assert footers == 2  # construction read two footers (tail ranges), nothing else
    before = get_store(cfg).stats["bytes"]
    src.read_block(3)
    assert 0 < get_store(cfg).stats["bytes"] - before < size / 4  # one row group, not the file
    same_blocks(src, ParquetSource(corpus["parquet"]["a"]))
    assert srv.gets(".parquet") == sum(srv.ranges.values())  # every GET was a Range request
    assert srv.gets(".parquet") == footers + len(src.block_sizes)


def test_small_parquet_files_are_fetched_whole(srv, cfg, corpus):
    src = ParquetSource(f"{srv.url}/corpus/parquet/b", remote=cfg)  # a directory URL
    same_blocks(src, ParquetSource(corpus["parquet"]["b"]))
    assert srv.gets(".parquet") == 2 and not srv.ranges


def test_mds_over_http_fetches_compressed_shards_checked_against_index(srv, cfg):
    for name in ("tokens_zstd", "tokens_raw"):
        src = open_source(f"{srv.url}/mds/{name}", cfg)
        assert isinstance(src, MDSSource)
        same_blocks(src, MDSSource(MDS_FIXTURES / name))
    assert srv.gets(".mds.zstd") == 4 and srv.gets(".mds") == 8  # no raw GET for zstd shards


def test_remote_sources_pickle_for_workers(srv, cfg):
    sources = [open_source(f"{srv.url}/{url}", cfg)
               for url in ("corpus/native/b", "corpus/parquet/b/*.parquet", "corpus/arrow/b")]
    sources.append(MDSSource(f"{srv.url}/mds/ragged", remote=cfg))
    for src in sources:
        same_blocks(pickle.loads(pickle.dumps(src)), src)


# ------------------------------------------------------------------ faults


@pytest.mark.parametrize("kind", ["503", "500", "reset", "truncate", "short", "corrupt"])
def test_transient_faults_are_retried(srv, cfg, corpus, kind):
    srv.inject(kind, "/native/c/shard-00001", times=2)
    src = NativeSource(f"{srv.url}/corpus/native/c", remote=cfg)
    same_blocks(src, NativeSource(corpus["native"]["c"]))
    assert srv.gets("/native/c/shard-00001") == 3
    # aiohttp itself retries a GET once when a reused keep-alive connection is reset
    assert get_store(cfg).stats["failed_requests"] == (2 if kind != "reset" else 1) or \
        get_store(cfg).stats["failed_requests"] == 2


def test_slow_response_times_out_then_succeeds(srv, tmp_path, corpus):
    cfg = RemoteConfig(cache_dir=str(tmp_path / "c"), timeout=0.3, backoff=0.01)
    srv.inject("slow", "/native/c/shard-00000", times=1, delay=1.5)
    src = NativeSource(f"{srv.url}/corpus/native/c", remote=cfg)
    t = time.perf_counter()
    src.read_block(0)
    assert time.perf_counter() - t < 1.4  # did not wait for the slow response
    assert srv.gets("/native/c/shard-00000") == 2


def test_persistent_failure_is_a_clear_error_after_bounded_attempts(srv, cfg):
    srv.inject("503", "/native/c/shard-00001", times=100)
    src = NativeSource(f"{srv.url}/corpus/native/c", remote=cfg)
    last = len(src.block_sizes) - 1
    with pytest.raises(RemoteError, match=r"native/c/shard-00001\.parquet: download failed "
                                          r"after 4 attempt\(s\).*503.*retries="):
        src.read_block(last)
    assert srv.gets("/native/c/shard-00001") == 4
    srv.clear()
    src.read_block(last)  # nothing was cached; works once the server is healthy


def test_permanent_http_error_is_not_retried(srv, cfg):
    srv.inject("403", "/native/c/shard-00000", times=100)
    src = NativeSource(f"{srv.url}/corpus/native/c", remote=cfg)
    with pytest.raises(RemoteError, match=r"native/c/shard-00000\.parquet: download failed "
                                          r"\(ClientResponseError: 403.*not retried: check the URL, "
                                          r"credentials"):
        src.read_block(0)
    assert srv.gets("/native/c/shard-00000") == 1


def test_corrupt_download_never_enters_the_cache(srv, cfg, corpus):
    srv.inject("corrupt", "/native/b/shard-00000", times=100)
    src = NativeSource(f"{srv.url}/corpus/native/b", remote=cfg)
    with pytest.raises(RemoteError, match=r"shard-00000\.parquet.*fails its sha256 check"):
        src.read_block(0)
    data = Path(cfg.cache_root, "data")
    assert not any("shard-00000" in p.name for p in data.iterdir())
    assert not list(Path(cfg.cache_root, "tmp").iterdir())  # no partial files left
    srv.clear()
    same_blocks(src, NativeSource(corpus["native"]["b"]))


def test_missing_remote_shard_and_manifest_are_clear_errors(tmp_path, cfg, corpus):
    shutil.copytree(corpus["native"]["a"], tmp_path / "a")
    (tmp_path / "a" / "shard-00001.parquet").unlink()
    with RangeHTTPServer(tmp_path) as server:
        src = NativeSource(f"{server.url}/a", remote=cfg)  # HTTP listings carry no sizes
        src.read_block(0)
        with pytest.raises(SourceError, match=r"a/shard-00001\.parquet: shard listed in .* is "
                                              r"missing.*restore it"):
            src.read_block(len(src.manifest.shards[0].blocks))
        with pytest.raises(SourceError, match=r"nothing: .*no \*\.parquet files under this URL"):
            MixStream({"x": f"{server.url}/nothing"})
        assert server.gets("shard-00001") == 1  # a 404 is not retried


def test_file_urls_are_local_paths(corpus):
    src = open_source("file://" + corpus["native"]["a"])
    assert isinstance(src, NativeSource) and src.remote is None
    same_blocks(src, NativeSource(corpus["native"]["a"]))


def test_default_cache_dir_is_fixed_when_the_config_is_made(tmp_path, monkeypatch):
    monkeypatch.setenv("MIXSTREAM_CACHE_DIR", str(tmp_path / "one"))
    cfg = RemoteConfig()
    monkeypatch.setenv("MIXSTREAM_CACHE_DIR", str(tmp_path / "two"))
    assert cfg.cache_root == str(tmp_path / "one")  # workers and late threads agree with it
    assert pickle.loads(pickle.dumps(cfg)).cache_root == str(tmp_path / "one")
    assert RemoteConfig().cache_root == str(tmp_path / "two")


def test_missing_backend_names_the_pip_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gcsfs", None)
    registry = importlib.import_module("fsspec.registry")._registry  # imported backends
    monkeypatch.delitem(registry, "gs", raising=False)
    monkeypatch.delitem(registry, "gcs", raising=False)
    with pytest.raises(ImportError, match=r"gs://bucket/web needs .*pip install 'mixstream\[gcs\]'"):
        MixStream({"web": "gs://bucket/web"})


# ------------------------------------------------------------------ cache


def _publish(cache: BlockCache, key: str, size: int) -> None:
    with cache.locked(key):
        cache.publish(key, lambda p: Path(p).write_bytes(b"x" * size), Expect(size), key)
    cache.evict(protect=key)


def test_cache_evicts_least_recently_used_but_never_a_pinned_file(tmp_path):
    cache = BlockCache(str(tmp_path), limit_bytes=250)
    _publish(cache, "aa", 100)
    _publish(cache, "bb", 100)
    pinned = cache.open("aa")  # in use, and older than bb
    os.utime(cache.path("aa"), (1, 1))
    _publish(cache, "cc", 100)  # over the limit: bb goes (aa is pinned)
    assert cache.open("bb") is None and pinned is not None
    assert os.path.exists(cache.path("aa")) and cache.usage() == 200
    pinned.close()
    _publish(cache, "dd", 100)  # now aa (least recently used, unpinned) goes
    assert not os.path.exists(cache.path("aa"))
    assert sorted(p.name for p in Path(tmp_path, "data").iterdir()) == ["cc", "dd"]


def test_cache_rejects_a_download_that_fails_its_checks(tmp_path):
    cache = BlockCache(str(tmp_path))
    good = hashlib.sha256(b"abc").hexdigest()
    with pytest.raises(DownloadCorrupt, match="says 4"):
        cache.publish("k", lambda p: Path(p).write_bytes(b"abc"), Expect(4), "u")
    with pytest.raises(DownloadCorrupt, match="sha256"):
        cache.publish("k", lambda p: Path(p).write_bytes(b"abd"), Expect(3, {"sha256": good}), "u")
    assert cache.open("k") is None and not list(Path(tmp_path, "tmp").iterdir())
    cache.publish("k", lambda p: Path(p).write_bytes(b"abc"), Expect(3, {"sha256": good}), "u")
    with cache.open("k") as pin:
        assert pin.read() == b"abc"


def test_cache_limit_holds_while_reading_a_domain(srv, tmp_path, corpus):
    shard = os.path.getsize(Path(corpus["native"]["a"]) / "shard-00000.parquet")
    cfg = RemoteConfig(cache_dir=str(tmp_path / "c"), cache_limit_bytes=int(shard * 1.5))
    src = NativeSource(f"{srv.url}/corpus/native/a", remote=cfg)
    local = NativeSource(corpus["native"]["a"])
    cache = get_store(cfg).cache
    for i in np.random.default_rng(0).permutation(len(src.block_sizes)):
        assert np.array_equal(src.read_block(i)["id"], local.read_block(i)["id"])
        assert cache.usage() <= cfg.cache_limit_bytes
    assert cache.evicted > 0


# ------------------------------------------------------------------ prefetch


def test_domain_prefetch_fetches_ahead_with_bounded_concurrency(srv, tmp_path, corpus):
    cfg = RemoteConfig(cache_dir=str(tmp_path / "c"), concurrency=2, whole_file_max_bytes=0)
    srv.delay = 0.1
    try:
        dom = Domain("a", f"{srv.url}/corpus/native/a", remote=cfg)
        store = get_store(cfg)
        blocks = list(range(len(dom.block_sizes)))
        t = time.perf_counter()
        dom.prefetch(blocks)
        waited = time.perf_counter() - t
        expected = len(blocks) + len(dom.sources[0].manifest.shards)  # row groups + footers
        deadline = time.time() + 10
        while (srv.gets(".parquet") < expected or store._inflight) and time.time() < deadline:
            time.sleep(0.02)
        fetched = time.perf_counter() - t
    finally:
        srv.delay = 0.0
    assert waited < 0.1 * len(blocks) / 2  # prefetch returns before the downloads finish
    assert fetched >= 0.1 * expected / 2 - 0.05  # ... which run two at a time
    assert srv.max_active <= 2
    gets = srv.gets(".parquet")
    local = NativeSource(corpus["native"]["a"])
    for b in blocks:
        assert np.array_equal(dom.read_block(b)["id"], local.read_block(b)["id"])
    assert srv.gets(".parquet") == gets  # every block came from the cache
    assert store.stats["downloads"] >= len(blocks)


def test_manifest_json_is_read_fresh_not_cached(srv, cfg):
    NativeSource(f"{srv.url}/corpus/native/a", remote=cfg)
    NativeSource(f"{srv.url}/corpus/native/a", remote=cfg)
    assert srv.gets("manifest.json") == 2
    assert json.loads(get_store(cfg).read_small(f"{srv.url}/corpus/native/a/manifest.json"))


# ------------------------------------------------------------------ format registry


@pytest.mark.parametrize("rel, fmt", [
    ("corpus/native/a", "mixstream"), ("corpus/arrow/b", "mixstream"),
    ("corpus/parquet/a", "parquet"), ("corpus/parquet/a/part-0.parquet", "parquet"),
    ("corpus/parquet/a/*.parquet", "parquet"), ("corpus/hf/a", "hf"),
    ("mds/tokens_raw", "mds"), ("npy", "npy")])
def test_a_url_is_detected_as_its_local_copy_is(srv, cfg, rel, fmt):
    """One detection per format, local and remote alike (the registry, not two if-chains)."""
    from mixstream.sources import registry

    npy = Path(srv.root, "npy")
    npy.mkdir(exist_ok=True)
    np.save(npy / "x.npy", np.zeros((4, 3), np.int32))
    local = Path(srv.root, rel) if "*" in rel else Path(srv.root, rel).resolve()
    assert registry.detect(registry.locate(str(local))).name == fmt
    assert registry.detect(registry.locate(f"{srv.url}/{rel}", cfg)).name == fmt
    if fmt in ("hf", "npy"):  # detected remotely, read only from local disk: a clear error
        with pytest.raises(SourceError, match=r"local disk"):
            open_source(f"{srv.url}/{rel}", cfg)


def test_a_network_failure_is_a_remote_error_naming_the_domain_not_a_value_error(srv, cfg):
    srv.inject("403", "/native/c/shard-00000", times=100)
    dom = Domain("c", f"{srv.url}/corpus/native/c", remote=cfg)
    with pytest.raises(RemoteError, match=r"domain 'c': .*shard-00000\.parquet: download "
                                          r"failed") as info:
        dom.read_block(0)
    assert isinstance(info.value, OSError) and not isinstance(info.value, ValueError)
