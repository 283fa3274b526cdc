"""The ``.npy`` folder format (mixstream.sources.npy), end to end through MixStream.

It is also the proof that a format is one module plus one registry line: nothing else in the
library knows about it."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from mixstream import MixLoader, MixStream, SourceError
from mixstream.sources import registry
from mixstream.sources.npy import NpySource
from mixstream.sources.resolve import open_source

SEQ = 8


def write_folder(path, files: list[int], *, base: int, dtype=np.uint16) -> np.ndarray:
    """Files of ``[rows, SEQ]`` arrays whose first token is a unique sample id; returns all rows."""
    path.mkdir(parents=True, exist_ok=True)
    rows, next_id = [], base
    for i, n in enumerate(files):
        a = np.zeros((n, SEQ), dtype=dtype)
        a[:, 0] = np.arange(next_id, next_id + n)
        a[:, 1:] = (np.arange(n)[:, None] * 7 + np.arange(1, SEQ)) % 1000
        next_id += n
        np.save(path / f"part-{i:03d}.npy", a)
        rows.append(a)
    return np.concatenate(rows)


@pytest.fixture
def folders(tmp_path):
    a = write_folder(tmp_path / "a", [40, 0, 24, 64], base=0)
    b = write_folder(tmp_path / "b", [52, 52], base=10_000)
    return {"a": str(tmp_path / "a"), "b": str(tmp_path / "b")}, {"a": a, "b": b}


def test_a_folder_of_npy_files_is_detected_and_counted_from_headers(folders):
    paths, rows = folders
    src = open_source(paths["a"])
    assert isinstance(src, NpySource)
    assert src.block_sizes.tolist() == [40, 24, 64]  # the empty file is no block
    assert src.schema["input_ids"].describe() == "uint16[8]"
    assert src.stats()["tokens"] == 128 * SEQ
    assert np.array_equal(np.concatenate([src.read_block(i)["input_ids"] for i in range(3)]),
                          rows["a"])


def test_one_epoch_delivers_every_sample_exactly_once(folders):
    paths, rows = folders  # one domain of both folders: 232 samples, 29 full batches
    stream = MixStream({"ab": [paths["a"], paths["b"]]}, seed=3, shuffle_window=32,
                       mix_block=16, on_exhausted="stop")
    seen = []
    for batch in MixLoader(stream, batch_size=8):
        seen.extend(map(tuple, batch["input_ids"].tolist()))
    want = list(map(tuple, np.concatenate([rows["a"], rows["b"]]).tolist()))
    assert len(seen) == len(want) == 232
    assert Counter(seen) == Counter(want)


def _run(paths, total, state=None, stop_at=None):
    stream = MixStream(paths, weights={"a": 0.3, "b": 0.7}, seed=11, shuffle_window=32,
                       mix_block=16)
    loader = MixLoader(stream, batch_size=8)
    if state is not None:
        stream.load_state_dict(state)
    out, step = [], stream.consumed_batches
    for batch in loader:
        out.append(batch["input_ids"][:, 0].tolist())
        step += 1
        if step == stop_at:
            return out, json.loads(json.dumps(stream.state_dict()))
        if step >= total:
            break
    return out, None


def test_resume_continues_exactly(folders):
    paths, _ = folders
    full, _ = _run(paths, 60)  # 480 samples: both domains wrap into their second epoch
    assert len(full) == 60
    for k in (13, 37):
        _, state = _run(paths, 60, stop_at=k)
        rest, _ = _run(paths, 60, state=state)
        assert rest == full[k:], f"resume at batch {k} diverged"


def test_a_token_stream_is_cut_into_samples(tmp_path):
    tokens = np.arange(10 * SEQ, dtype=np.int32)
    np.save(tmp_path / "stream.npy", tokens)
    with pytest.raises(SourceError, match=r"stream\.npy: a 1-D token stream needs a sample "
                                          r"length.*seq_len="):
        open_source(str(tmp_path / "stream.npy"))
    src = NpySource(tmp_path / "stream.npy", seq_len=SEQ, block_rows=4)
    assert src.block_sizes.tolist() == [4, 4, 2]
    got = np.concatenate([src.read_block(i)["input_ids"] for i in range(3)])
    assert np.array_equal(got, tokens.reshape(10, SEQ))
    with pytest.raises(SourceError, match=r"80 tokens is not a multiple of seq_len=7"):
        NpySource(tmp_path / "stream.npy", seq_len=7)


def test_bad_files_are_clear_errors(tmp_path):
    write_folder(tmp_path / "t", [30], base=0)
    f = tmp_path / "t" / "part-000.npy"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(SourceError, match=r"part-000\.npy: not a readable \.npy file"):
        open_source(str(tmp_path / "t"))
    np.save(tmp_path / "f.npy", np.zeros((3, 4), np.float32))
    with pytest.raises(SourceError, match=r"f\.npy: dtype float32 is not an integer type"):
        open_source(str(tmp_path / "f.npy"))


def test_a_folder_with_other_files_is_not_npy(folders, tmp_path):
    paths, _ = folders
    (tmp_path / "a" / "notes.txt").write_text("x")
    loc = registry.locate(paths["a"])
    assert registry.detect(loc).name == "parquet"  # the fallback, which then finds no parquet
    with pytest.raises(SourceError, match=r"no \*\.parquet files"):
        open_source(paths["a"])


def test_npy_source_pickles_without_its_mappings(folders):
    import pickle

    paths, rows = folders
    src = open_source(paths["b"])
    src.read_block(1)
    clone = pickle.loads(pickle.dumps(src))
    assert len(pickle.dumps(src)) < 4096  # no array data travels to workers
    assert np.array_equal(clone.read_block(1)["input_ids"], rows["b"][52:])
