"""MixStream end to end over http:// and s3:// (moto), and the cache shared by processes.

Same seed, same batches as from local disk, for native shards, plain Parquet (row groups by
range reads) and MDS directories; DataLoader workers and a second process share one cache
directory without downloading any shard twice.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from remote_servers import RangeHTTPServer

from mixstream import MixLoader, MixStream
from mixstream.remote.config import CACHE_ENV, RemoteConfig
from mixstream.remote.store import get_store
from mixstream.sources.parquet import ParquetSource

MDS = Path(__file__).parent / "fixtures" / "mds"
W = {"a": 0.5, "b": 0.3, "c": 0.2}


@pytest.fixture(scope="module")
def http_root(corpus):
    return Path(corpus["native"]["a"]).parents[1]


@pytest.fixture(scope="module")
def http(http_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("http")
    (root / "corpus").symlink_to(http_root)
    (root / "mds").symlink_to(MDS)
    with RangeHTTPServer(root) as srv:
        yield srv


@pytest.fixture(scope="module")
def s3(http_root):
    pytest.importorskip("moto", reason="the S3 tests need moto[server] (pip install -e '.[dev]')")
    pytest.importorskip("s3fs", reason="the S3 tests need s3fs (pip install -e '.[dev]')")
    from remote_servers import S3Server

    with pytest.MonkeyPatch.context() as mp, S3Server() as srv:
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_ENDPOINT_URL", srv.endpoint)  # read by botocore, so by s3fs
        srv.upload(http_root, "bucket", "corpus")
        srv.upload(MDS / "tokens_raw", "bucket", "mds/tokens_raw")
        srv.upload(MDS / "tokens_zstd", "bucket", "mds/tokens_zstd")
        yield srv


def base_url(scheme: str, request: pytest.FixtureRequest) -> str:
    if scheme == "http":
        return str(request.getfixturevalue("http").url)
    request.getfixturevalue("s3")
    return "s3://bucket"


def domains(fmt: str, root: str, corpus, cfg: RemoteConfig | None) -> dict:
    if fmt == "native":
        return {d: f"{root}/corpus/native/{d}" if root else corpus["native"][d] for d in W}
    if fmt == "parquet":  # sources built here, to force row-group range reads
        return {d: ParquetSource(f"{root}/corpus/parquet/{d}/*.parquet", remote=cfg) if root
                else corpus["parquet"][d] for d in W}
    assert fmt == "mds"
    return {d: f"{root}/mds/{d}" if root else str(MDS / d) for d in ("tokens_raw", "tokens_zstd")}


def batches(spec: dict, workers: int, n: int = 12) -> list[dict]:
    stream = MixStream(spec, seed=3, shuffle_window=100)
    out = []
    for i, b in enumerate(MixLoader(stream, batch_size=16, num_workers=workers)):
        out.append(b)
        if i + 1 == n:
            break
    return out


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k, v in w.items():
            if isinstance(v, torch.Tensor):
                assert torch.equal(g[k], v), k
            else:
                assert g[k] == v, k


@pytest.mark.parametrize("scheme", ["http", "s3"])
@pytest.mark.parametrize("fmt", ["native", "parquet", "mds"])
def test_mixstream_over_url_gives_the_local_batches(scheme, fmt, request, corpus, tmp_path,
                                                    monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # URL strings use the default config
    cfg = RemoteConfig(cache_dir=str(tmp_path / "cache"), whole_file_max_bytes=0)
    root = base_url(scheme, request)
    workers = 2 if fmt == "native" else 0  # worker processes read through the cache too
    want = batches(domains(fmt, "", corpus, None), workers)
    got = batches(domains(fmt, root, corpus, cfg), workers)
    assert_same(got, want)
    files = list(Path(tmp_path, "cache", "data").iterdir())
    assert files  # it really went through the cache
    if fmt == "parquet":
        assert all("@" in p.name for p in files)  # only byte ranges, never whole files


def test_cache_is_shared_by_workers_and_processes_without_double_downloads(http, corpus,
                                                                           tmp_path, monkeypatch):
    """2 DataLoader workers + a second process read the same shards at the same time."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    go, ready = tmp_path / "go", tmp_path / "ready"
    urls = {d: f"{http.url}/corpus/native/{d}" for d in W}
    script = textwrap.dedent(f"""
        import os, time, numpy as np
        from mixstream.sources.native import NativeSource
        srcs = [NativeSource(u) for u in {list(urls.values())!r}]
        open({str(ready)!r}, "w").close()
        deadline = time.time() + 20
        while not os.path.exists({str(go)!r}) and time.time() < deadline:
            time.sleep(0.01)
        for s in srcs:
            for i in np.random.default_rng(1).permutation(len(s.block_sizes)):
                s.read_block(int(i))
        from mixstream.remote.store import get_store
        print(get_store(srcs[0].remote).stats["downloads"])
    """)
    http.clear()
    http.delay = 0.1  # every GET takes a while: downloads overlap
    try:
        proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        stream = MixStream(urls, weights=W, seed=5, shuffle_window=64, on_exhausted="stop")
        loader = MixLoader(stream, batch_size=25, num_workers=2)
        deadline = time.time() + 30
        while not ready.exists() and time.time() < deadline and proc.poll() is None:
            time.sleep(0.01)
        go.touch()
        while http.gets(".parquet") == 0 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.005)  # the second process is downloading its first shard: start ours
        ids = np.concatenate([b["id"].numpy() for b in loader])
        out, err = proc.communicate(timeout=60)
    finally:
        http.delay = 0.0
    assert proc.returncode == 0, err.decode()[-2000:]
    assert int(out.decode().split()[-1]) > 0  # the second process did take part
    assert len(ids) > 1000
    gets = {p: n for p, n in http.get_counts(".parquet").items() if "/native/" in p}
    manifests = {d: json.loads((Path(corpus["native"][d]) / "manifest.json").read_text())
                 for d in W}
    assert len(gets) == sum(len(m["shards"]) for m in manifests.values())
    assert set(gets.values()) == {1}, gets  # nobody downloaded a shard twice
    want = {s["sha256"] for m in manifests.values() for s in m["shards"]}
    got = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (cache / "data").iterdir()}
    assert sorted(got.values()) == sorted(want), got  # and nothing in the cache is corrupt
    assert not list((cache / "tmp").iterdir())


def test_mixstream_under_a_cache_limit_still_gives_the_local_batches(http, corpus, tmp_path):
    shard = (Path(corpus["native"]["a"]) / "shard-00000.parquet").stat().st_size
    cfg = RemoteConfig(cache_dir=str(tmp_path / "c"), cache_limit_bytes=2 * shard)
    from mixstream.sources.native import NativeSource

    spec = {d: NativeSource(f"{http.url}/corpus/native/{d}", remote=cfg) for d in W}
    t = time.perf_counter()
    assert_same(batches(spec, 0, n=40), batches(dict(corpus["native"]), 0, n=40))
    assert time.perf_counter() - t < 20
    cache = get_store(cfg).cache
    assert cache.evicted > 0
    # a file being read when the limit was last enforced stays (soft limit); once unpinned it goes
    assert cache.usage() <= cfg.cache_limit_bytes + shard
    deadline = time.time() + 5  # (a background window load may still hold its pin)
    while True:
        cache.evict()
        if cache.usage() <= cfg.cache_limit_bytes:
            break
        assert time.time() < deadline, "an unpinned file was not evicted"
        time.sleep(0.05)
