"""``mixstream-shard convert`` corners: invalid UTF-8 in every input kind, and workers that
die with a parent killed by SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixstream.cli.shard import main
from mixstream.shards.convert import ConvertOptions, convert
from mixstream.shards.errors import InputError, RecordError

BAD = b"bad \xff\xfe here"


def run(tmp_path, path, out="out", **kw):
    kw.setdefault("progress", "off")
    return convert(ConvertOptions(output=str(tmp_path / out), domains=(("d", str(path)),), **kw))


def texts(tmp_path) -> list[str]:
    from mixstream.sources.native.manifest import load_manifest

    d = tmp_path / "out" / "d"
    m = load_manifest(str(d))
    return [t for s in m.shards for t in pq.read_table(d / s.path).column("text").to_pylist()]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> str:
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(["hello world, good text here"] * 20, vocab_size=300,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return str(path)


def write_inputs(tmp_path) -> dict[str, tuple[object, str]]:
    """One input per kind, the bad record second; ``(path, location of the bad record)``."""
    (tmp_path / "a.jsonl").write_bytes(b'{"text": "good"}\n{"text": "' + BAD + b'"}\n'
                                       b'{"text": "last"}\n')
    (tmp_path / "c.csv").write_bytes(b'text\ngood\n"' + BAD + b'"\nlast\n')
    (tmp_path / "t.txt").write_bytes(b"good\n" + BAD + b"\nlast\n")
    col = pa.array([b"good", BAD, b"last"], pa.binary()).cast(pa.string(), safe=False)
    pq.write_table(pa.table({"text": col}), tmp_path / "p.parquet")
    return {"jsonl": (tmp_path / "a.jsonl", "a.jsonl:2"),
            "csv": (tmp_path / "c.csv", "c.csv: record 3"),
            "txt": (tmp_path / "t.txt", "t.txt:2"),
            "parquet": (tmp_path / "p.parquet", "p.parquet: row 2")}


@pytest.mark.parametrize("kind", ["jsonl", "csv", "txt", "parquet"])
@pytest.mark.parametrize("tokenized", [False, True])
def test_invalid_utf8_is_a_bad_record(tmp_path, tokenizer, kind, tokenized):
    path, where = write_inputs(tmp_path)[kind]
    kw = {"tokenizer": tokenizer} if tokenized else {}
    if kind == "txt":
        kw["sample_by"] = "line"
    with pytest.raises(RecordError, match=rf"{where}: .*not valid UTF-8.*--skip-bad"):
        run(tmp_path, path, out="first", **kw)
    rep = run(tmp_path, path, skip_bad=True, keep_text=tokenized, **kw)
    assert rep.bad.count == 1 and where in rep.bad.examples[0]
    assert texts(tmp_path) == ["good", "last"]


def test_invalid_utf8_through_the_cli_names_file_and_line(tmp_path, capsys):
    path, where = write_inputs(tmp_path)["jsonl"]
    assert main(["convert", "--domain", f"d={path}", "-o", str(tmp_path / "o"),
                 "--progress", "off"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mixstream-shard: error: {path}:2: field 'text' is not valid UTF-8")
    assert "Traceback" not in err
    assert main(["convert", "--domain", f"d={path}", "-o", str(tmp_path / "o2"),
                 "--progress", "off", "--skip-bad"]) == 0
    assert "skipped 1 bad record(s)" in capsys.readouterr().out


def test_a_text_file_that_is_all_bad_says_so(tmp_path):
    (tmp_path / "t.txt").write_bytes(BAD)
    with pytest.raises(InputError, match=r"no readable records .*t.txt:1: not valid UTF-8"):
        run(tmp_path, tmp_path / "t.txt", skip_bad=True)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_when_the_parent_is_killed(tmp_path, tokenizer):
    for i in range(12):  # twelve units of real tokenization work
        (tmp_path / f"in{i}.jsonl").write_text('{"text": "hello world, good text here"}\n' * 4000)
    cmd = [sys.executable, "-m", "mixstream.cli.shard", "convert", "--domain",
           f"d={tmp_path}/in*.jsonl", "-o", str(tmp_path / "out"), "--tokenizer", tokenizer,
           "--workers", "2", "--chunk-mb", "0.05", "--progress", "off"]
    parent = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and parent.poll() is None:
            workers = [c for c in _children(parent.pid)
                       if b"spawn_main" in open(f"/proc/{c}/cmdline", "rb").read()]
            done = len(list((tmp_path / "out" / ".mixstream-shard").glob("unit-*.json")))
            if len(workers) >= 2 and done >= 2:  # the workers are past their start-up
                break
            time.sleep(0.02)
        assert len(workers) >= 2 and parent.poll() is None, "the run ended too soon"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.1)
        survivors = [w for w in workers if _alive(w)]
    finally:
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
    assert survivors == [], f"orphan workers survived the parent: {survivors}"
