"""The ``mixstream-shard`` command: help, convert, index, inspect, verify, MDS, progress."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixstream.cli.shard import main
from mixstream.shards.index import index_directory
from mixstream.shards.progress import Progress
from mixstream.sources.native import NativeSource
from mixstream.sources.native.manifest import load_manifest

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "corpus_sample")


@pytest.mark.parametrize("command", ["convert", "index", "inspect", "verify"])
def test_help_on_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: mixstream-shard {command}")


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "convert" in capsys.readouterr().out


def test_convert_inspect_verify(tmp_path, capsys):
    out = tmp_path / "shards"
    rc = main(["convert", "--domain", f"code={SAMPLE}/code_*.jsonl.gz", "--domain",
               f"bible={SAMPLE}/scripture.jsonl.gz", "-o", str(out), "--rows-per-block", "8",
               "--progress", "log"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "mixstream-shard: " in cap.err and "MB/s" in cap.err  # plain log line, not a bar
    assert cap.out.splitlines()[0].split() == ["domain", "format", "shards", "documents",
                                               "samples", "tokens", "MB"]
    m = load_manifest(str(out / "code"))
    assert m.extra["input_files"] == 3  # code_c, code_go, code_python
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "bible" in text and "code: source: str, text: str" in text
    assert main(["inspect", "--json", str(out / "bible")]) == 0
    assert json.loads(capsys.readouterr().out)[0]["domain"] == "bible"
    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out.count(": OK") == 2
    # corrupt one byte of a shard, then remove another shard
    shard = out / "code" / m.shards[0].path
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    assert main(["verify", str(out / "code")]) == 1
    assert "sha256 differs from the manifest" in capsys.readouterr().out
    os.remove(out / "code" / m.shards[-1].path)
    assert main(["verify", "--no-checksum", str(out / "code")]) == 1
    res = capsys.readouterr().out
    assert f"{m.shards[-1].path}: missing" in res and "sha256" not in res


def test_bad_input_exits_2_with_message(tmp_path, capsys):
    rc = main(["convert", "--domain", f"x={tmp_path}/none/*.jsonl", "-o", str(tmp_path / "o")])
    assert rc == 2
    assert "none/*.jsonl: matches no files" in capsys.readouterr().err
    rc = main(["convert", "--domain", f"x={SAMPLE}/scripture.jsonl.gz", "-o",
               str(tmp_path / "o"), "--tokenizer", str(tmp_path / "missing-tok")])
    assert rc == 2
    assert "missing-tok: tokenizer not found" in capsys.readouterr().err
    rc = main(["convert", "-o", str(tmp_path / "o"), f"{SAMPLE}/scripture.jsonl.gz"])
    assert rc == 2
    assert "--domain-field" in capsys.readouterr().err


def test_mds_without_streaming_says_how_to_install(tmp_path, capsys):
    try:
        import streaming  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("mosaicml-streaming is installed here; the message path cannot be reached")
    rc = main(["convert", "--domain", f"x={SAMPLE}/scripture.jsonl.gz", "-o",
               str(tmp_path / "o"), "--format", "mds"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "--format mds needs mosaicml-streaming" in err
    assert "pip install mosaicml-streaming" in err and "--format parquet" in err
    assert not (tmp_path / "o").exists()


def _engine_output(root, schema_change=False):
    """Parquet laid out like Spark / DuckDB write it: part files, sub-folders, _SUCCESS."""
    (root / "lang=en").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, sub in enumerate(["", "lang=en/", ""]):
        n = 300 + 50 * i
        lens = rng.integers(1, 40, size=n)
        ids = pa.array([rng.integers(0, 50000, size=k).tolist() for k in lens],
                       type=pa.list_(pa.int32() if schema_change and i == 2 else pa.int64()))
        table = pa.table({"input_ids": ids, "doc": np.arange(n)})
        pq.write_table(table, root / f"{sub}part-{i:05d}-c0ffee.snappy.parquet",
                       row_group_size=128, compression="snappy")
    (root / "_SUCCESS").write_bytes(b"")
    pq.write_table(pa.table({"input_ids": pa.array([], pa.list_(pa.int64())),
                             "doc": pa.array([], pa.int64())}), root / "part-00009-empty.parquet")


def test_index_engine_written_parquet(tmp_path, capsys):
    root = tmp_path / "web"
    _engine_output(root)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.parquet")}
    assert main(["index", str(root), "--token-column", "input_ids", "--checksum"]) == 0
    assert "skipped 1 empty Parquet file(s): part-00009-empty.parquet" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.parquet")} == before  # untouched
    m = load_manifest(str(root))
    assert m.domain == "web"
    assert [s.path for s in m.shards] == ["lang=en/part-00001-c0ffee.snappy.parquet",
                                          "part-00000-c0ffee.snappy.parquet",
                                          "part-00002-c0ffee.snappy.parquet"]
    assert [s.blocks for s in m.shards][1] == [128, 128, 44]
    total = sum(len(x) for p in before for x in pq.read_table(p).column("input_ids").to_pylist())
    assert m.num_tokens == total == m.stats["tokens"]
    assert m.stats["samples"] == 300 + 350 + 400
    assert main(["verify", str(root)]) == 0
    src = NativeSource(str(root))
    assert src.num_samples == 1050 and len(src.block_sizes) == 3 + 3 + 4


def test_index_rejects_mixed_schemas(tmp_path):
    root = tmp_path / "web"
    _engine_output(root, schema_change=True)
    from mixstream.shards.errors import InputError

    with pytest.raises(InputError, match=r"part-00002-c0ffee.snappy.parquet: schema differs "
                       r"from lang=en/part-00001-c0ffee.snappy.parquet in column\(s\) \['input_ids'\]"):
        index_directory(str(root))
    with pytest.raises(InputError, match="no Parquet files"):
        index_directory(str(tmp_path), pattern="*.nothing")


def test_progress_log_and_bar():
    buf = io.StringIO()
    p = Progress(2_000_000, 4, mode="log", stream=buf, interval=0.0)
    p.update(docs=10, tokens=5000, nbytes=1_000_000)
    p.unit_done()
    p.close()
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("mixstream-shard: 10 docs, 5.0k tokens, 1.0/2.0 MB")
    assert "units 1/4" in lines[-1]
    buf = io.StringIO()
    p = Progress(2_000_000, 4, mode="bar", stream=buf)
    p.update(docs=10, tokens=5000, nbytes=1_000_000)
    p.close()
    assert "docs=10 tokens=5.0k" in buf.getvalue() and "B/s" in buf.getvalue()


def test_mds_output_when_streaming_is_installed(tmp_path):
    pytest.importorskip("streaming", reason="mosaicml-streaming is not installed (optional)")
    from mixstream.sources.mds import MDSSource

    src = f"{SAMPLE}/scripture.jsonl.gz"
    assert main(["convert", "--domain", f"b={src}", "-o", str(tmp_path / "mds"), "--format",
                 "mds", "--progress", "off"]) == 0
    assert main(["convert", "--domain", f"b={src}", "-o", str(tmp_path / "pq"),
                 "--progress", "off"]) == 0
    mds = MDSSource(str(tmp_path / "mds" / "b"))
    native = NativeSource(str(tmp_path / "pq" / "b"))
    assert mds.num_samples == native.num_samples
    assert mds.read_block(0)["text"] == native.read_block(0)["text"][: len(mds.read_block(0)["text"])]
