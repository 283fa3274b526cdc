"""Bad input gets a clear error naming the file, the domain and the fix — in the main process."""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import domain_table, to_arrow

from mixstream import MixLoader, MixStream, SourceError
from mixstream.shards.writer import write_shards


def native_dir(tmp_path, name="a", n=200):
    path = tmp_path / name
    write_shards(to_arrow(domain_table(0, n)), path, domain=name, rows_per_block=50,
                 blocks_per_shard=2)
    return path


def test_missing_path_names_domain_and_path(tmp_path):
    with pytest.raises(SourceError, match=r"domain 'x'.*nowhere.*no such file"):
        MixStream({"x": str(tmp_path / "nowhere")})


def test_glob_matching_nothing(tmp_path):
    with pytest.raises(SourceError, match=r"no file matches"):
        MixStream({"x": str(tmp_path / "*.parquet")})


def test_truncated_shard_is_reported_up_front(tmp_path):
    path = native_dir(tmp_path)
    shard = sorted(p for p in os.listdir(path) if p.endswith(".parquet"))[0]
    with open(path / shard, "r+b") as f:
        f.truncate(100)
    with pytest.raises(SourceError, match=rf"{shard}.*truncated"):
        MixStream({"a": str(path)})


def test_corrupt_shard_raises_in_main_process_with_workers(tmp_path):
    path = native_dir(tmp_path)
    shard = sorted(p for p in os.listdir(path) if p.endswith(".parquet"))[0]
    size = os.path.getsize(path / shard)
    with open(path / shard, "r+b") as f:  # same size, garbage pages
        f.seek(4)
        f.write(b"\xff" * (size - 200))
    stream = MixStream({"a": str(path)}, shuffle=False)
    with pytest.raises(SourceError, match=rf"(?s)domain .a.: .*{shard}.*corrupt"):
        for _ in MixLoader(stream, batch_size=8, num_workers=2):
            pass


def test_unreadable_manifest(tmp_path):
    path = native_dir(tmp_path)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(SourceError, match=r"manifest.json.*unreadable"):
        MixStream({"a": str(path)})


def test_manifest_block_counts_must_add_up(tmp_path):
    path = native_dir(tmp_path)
    data = json.loads((path / "manifest.json").read_text())
    data["shards"][0]["blocks"][0] += 1
    (path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(SourceError, match=r"block sizes sum"):
        MixStream({"a": str(path)})


def test_schema_differs_between_files_of_a_domain(tmp_path):
    d = tmp_path / "p"
    d.mkdir()
    pq.write_table(to_arrow(domain_table(0, 20)), d / "one.parquet")
    pq.write_table(pa.table({"id": np.arange(5), "text": ["x"] * 5}), d / "two.parquet")
    with pytest.raises(SourceError, match=r"two.parquet.*schema differs"):
        MixStream({"p": str(d)})


def test_schema_differs_between_sources_of_a_domain(tmp_path):
    a = native_dir(tmp_path, "a")
    other = tmp_path / "o.parquet"
    pq.write_table(pa.table({"text": ["x"] * 5}), other)
    with pytest.raises(SourceError, match=r"domain 'mix'.*must share a schema"):
        MixStream({"mix": [str(a), str(other)]})


def test_unsupported_file_type(tmp_path):
    f = tmp_path / "data.jsonl"
    f.write_text('{"text": "hi"}\n')
    with pytest.raises(SourceError, match=r"mixstream-shard convert"):
        MixStream({"x": str(f)})


@pytest.mark.parametrize(
    "weights, message",
    [
        ({"a": float("nan"), "b": 1.0}, r"'a' is nan"),
        ({"a": -1.0, "b": 1.0}, r"'a' is negative"),
        ({"a": 0.0, "b": 0.0}, r"all weights are zero"),
        ({"a": 1.0, "zz": 1.0}, r"unknown domain\(s\) \['zz'\]"),
        ({"a": 1.0}, r"missing for domain\(s\) \['b'\]"),
        ([1.0, 2.0, 3.0], r"3 weights for 2 domains"),
        ({"a": "x", "b": 1.0}, r"'a' is not a number"),
    ],
)
def test_bad_weights(tmp_path, weights, message):
    paths = {"a": str(native_dir(tmp_path, "a")), "b": str(native_dir(tmp_path, "b"))}
    with pytest.raises(ValueError, match=message):
        MixStream(paths, weights=weights)
    stream = MixStream(paths)
    MixLoader(stream, batch_size=4)
    with pytest.raises(ValueError, match=message):
        stream.set_weights(weights)


def test_weight_change_in_the_prefetched_past_is_refused(tmp_path):
    stream = MixStream({"a": str(native_dir(tmp_path, "a")), "b": str(native_dir(tmp_path, "b"))})
    loader = MixLoader(stream, batch_size=4, num_workers=2)
    it = iter(loader)
    next(it)
    with pytest.raises(ValueError, match=r"from_batch=2 may already be prefetched"):
        stream.set_weights({"a": 1, "b": 0}, from_batch=2)
    assert stream.set_weights({"a": 1, "b": 0}, from_batch=9) == 9 * 4


def test_late_weight_change_in_a_worker_raises_not_diverges(tmp_path):
    """A change published behind a worker's frontier (bypassing set_weights' own check, as a
    buggy caller could) makes the worker fail loudly instead of producing different data."""
    stream = MixStream({"a": str(native_dir(tmp_path, "a")), "b": str(native_dir(tmp_path, "b"))})
    loader = MixLoader(stream, batch_size=4, num_workers=1, prefetch_factor=4)
    it = iter(loader)
    next(it)
    time.sleep(1.0)  # the worker runs ahead to its prefetch depth (else sample 4 is not late yet)
    stream._plan.channel.write_tail([(4, np.array([1.0, 0.0]))])  # sample 4 is already produced
    with pytest.raises(RuntimeError, match=r"weight change for sample 4 arrived after"):
        for _ in range(10):
            next(it)


def test_checkpoint_from_other_data_is_refused(tmp_path):
    a, b = str(native_dir(tmp_path, "a")), str(native_dir(tmp_path, "b", n=150))
    stream = MixStream({"a": a, "b": b})
    it = iter(MixLoader(stream, batch_size=4))
    for _ in range(3):
        next(it)
    state = stream.state_dict()
    other = MixStream({"a": a, "b": a})  # b's sizes are a prefix of a's, its files are not b's
    with pytest.raises(ValueError, match=r"may only grow by shards appended"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match=r"seed=0 but this stream has 5"):
        MixStream({"a": a, "b": b}, seed=5).load_state_dict(state)
    resumed = MixStream({"a": a, "b": b})
    resumed.load_state_dict(state)
    with pytest.raises(ValueError, match=r"after 12 samples.*batch_size 5"):
        MixLoader(resumed, batch_size=5)


def test_domain_copy_shares_nothing(tmp_path):
    """Two domains may point at copies of the same data; a renamed copy is still readable."""
    a = native_dir(tmp_path, "a")
    shutil.copytree(a, tmp_path / "copy")
    MixStream({"a": str(a), "copy": str(tmp_path / "copy")})


def test_one_root_exception_and_a_network_error_is_not_a_value_error():
    import mixstream
    from mixstream.errors import DownloadCorrupt, MixstreamError, RemoteError
    from mixstream.shards.errors import InputError, ShardError

    assert mixstream.MixstreamError is MixstreamError and mixstream.RemoteError is RemoteError
    assert issubclass(SourceError, MixstreamError) and issubclass(SourceError, ValueError)
    assert issubclass(RemoteError, MixstreamError) and issubclass(RemoteError, OSError)
    assert not issubclass(RemoteError, ValueError) and not issubclass(RemoteError, SourceError)
    assert issubclass(DownloadCorrupt, OSError) and not issubclass(DownloadCorrupt, ValueError)
    assert issubclass(ShardError, MixstreamError) and issubclass(InputError, ValueError)
    with pytest.raises(MixstreamError, match="domain 'x'"):
        MixStream({"x": "/nowhere/at/all"})
