"""End-to-end ``convert`` on the committed real-corpus sample and generated edge cases."""

from __future__ import annotations

import gzip
import hashlib
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mixstream.shards import convert as convert_mod
from mixstream.shards.convert import ConvertOptions, convert
from mixstream.shards.errors import InputError, RecordError, ShardError
from mixstream.shards.tokenize import encode, load_tokenizer
from mixstream.shards.verify import verify_domain
from mixstream.sources.native import read_shard
from mixstream.sources.native.manifest import load_manifest

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "corpus_sample")
DOMAINS = ("code_c", "code_go", "code_python", "dictionary", "literature", "manpages",
           "multilingual", "scripture")


def records(domain: str) -> list[dict]:
    with gzip.open(os.path.join(SAMPLE, f"{domain}.jsonl.gz"), "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def run(out, **kw) -> convert_mod.ConvertReport:
    kw.setdefault("progress", "off")
    return convert(ConvertOptions(output=str(out), **kw))


def digests(root) -> dict[str, str]:
    out = {}
    for d, _, files in os.walk(root):
        if ".mixstream-shard" in d:
            continue
        for n in files:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def read_column(domain_dir, column):
    m = load_manifest(str(domain_dir))
    return [v for s in m.shards
            for v in read_shard(domain_dir, s.path).column(column).to_pylist()]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> str:
    from tokenizers import ByteLevelBPETokenizer

    d = tmp_path_factory.mktemp("tok")
    tok = ByteLevelBPETokenizer()
    texts = [r["text"] for dom in DOMAINS for r in records(dom)[:20]]
    tok.train_from_iterator(texts, vocab_size=1000, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tok.save(str(d / "tokenizer.json"))
    return str(d / "tokenizer.json")


def test_corpus_sample_untokenized(tmp_path):
    rep = run(tmp_path, domains=tuple((d, os.path.join(SAMPLE, f"{d}.jsonl.gz"))
                                      for d in DOMAINS), rows_per_block=16, blocks_per_shard=4)
    assert sorted(rep.manifests) == sorted(DOMAINS)
    for d in DOMAINS:
        m = load_manifest(str(tmp_path / d))
        recs = records(d)
        assert m.stats["documents"] == m.num_samples == len(recs)
        assert m.stats["text_bytes"] == sum(len(r["text"].encode()) for r in recs)
        assert m.token_column is None and m.stats["tokens"] is None
        for s in m.shards:  # every block is one Parquet row group
            pf = pq.ParquetFile(tmp_path / d / s.path)
            assert [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)] == s.blocks
        assert read_column(tmp_path / d, "text") == [r["text"] for r in recs]
        assert read_column(tmp_path / d, "source") == [r["source"] for r in recs]
        assert verify_domain(str(tmp_path / d)) == []


def test_packed_tokens_are_the_documents_in_order(tmp_path, tokenizer):
    recs = records("scripture") + records("code_go")
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    rep = run(tmp_path / "out", domains=(("mix", str(path)),), tokenizer=tokenizer, seq_len=128,
              chunk_bytes=20_000, rows_per_block=32)
    assert rep.units > 3
    m = rep.manifests["mix"]
    assert m.schema["input_ids"].describe() == "uint16[128]"
    assert m.shards[-1].path.startswith("shard-tail")
    rows = np.concatenate([read_shard(tmp_path / "out" / "mix", s.path).column(
        "input_ids").combine_chunks().flatten().to_numpy() for s in m.shards])
    # expected: each unit packs its own documents; leftovers of all units form the tail
    tok, info = load_tokenizer(tokenizer)
    per_unit: list[list[int]] = []
    from mixstream.shards.inputs import plan_units, resolve

    for u in plan_units([("mix", resolve(str(path)))], 20_000):
        p = u.pieces[0]
        data = path.read_bytes()
        start = p.start if p.start == 0 or data[p.start - 1] == 10 else data.find(b"\n", p.start) + 1
        stop = data.find(b"\n", p.stop - 1) + 1 if p.stop else len(data)
        texts = [json.loads(line)["text"] for line in data[start:stop].splitlines()]
        ids: list[int] = []
        for t in texts:
            ids += encode(tok, [t], info.dtype)[0].tolist() + [info.eos_id]
        per_unit.append(ids)
    body = [x for ids in per_unit for x in ids[: len(ids) // 128 * 128]]
    tail = [x for ids in per_unit for x in ids[len(ids) // 128 * 128:]]
    expected = body + tail[: len(tail) // 128 * 128]
    assert rows.tolist() == expected
    assert m.stats["tokens"] == len(expected) == m.num_samples * 128
    assert m.stats["dropped_tokens"] == len(tail) % 128
    assert m.extra["tokenizer"]["vocab_size"] == 1000 and m.extra["seq_len"] == 128


def test_one_sequence_per_document(tmp_path, tokenizer):
    src = os.path.join(SAMPLE, "manpages.jsonl.gz")
    rep = run(tmp_path / "a", domains=(("man", src),), tokenizer=tokenizer)
    m = rep.manifests["man"]
    assert m.schema["input_ids"].describe() == "uint16[*]"
    assert set(m.schema) == {"source", "input_ids"}
    tok, info = load_tokenizer(tokenizer)
    recs = records("manpages")
    got = read_column(tmp_path / "a" / "man", "input_ids")
    assert len(got) == len(recs)
    for r, ids in zip(recs[:5], got[:5], strict=True):
        assert ids[-1] == info.eos_id and tok.decode(ids[:-1]) == r["text"]
    assert m.stats["tokens"] == sum(len(x) for x in got)
    rep = run(tmp_path / "b", domains=(("man", src),), tokenizer=tokenizer, keep_text=True,
              append_eos=False, drop=("source",))
    assert list(rep.manifests["man"].schema) == ["text", "input_ids"]
    assert read_column(tmp_path / "b" / "man", "input_ids")[0] == got[0][:-1]


@pytest.mark.slow
def test_workers_do_not_change_the_shards(tmp_path, tokenizer):
    doms = tuple((d, os.path.join(SAMPLE, f"{d}.jsonl.gz")) for d in DOMAINS[:4])
    kw = dict(domains=doms, tokenizer=tokenizer, seq_len=64, rows_per_block=8)
    run(tmp_path / "w1", workers=1, **kw)
    run(tmp_path / "w2", workers=2, **kw)
    one, two = digests(tmp_path / "w1"), digests(tmp_path / "w2")
    assert one == two and len(one) > 8


def test_interrupted_run_resumes_to_identical_output(tmp_path, tokenizer, monkeypatch):
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records("dictionary")),
                    encoding="utf-8")
    kw = dict(domains=(("dict", str(path)),), tokenizer=tokenizer, seq_len=32,
              chunk_bytes=8_000, rows_per_block=16)
    ref = run(tmp_path / "ref", **kw)
    from mixstream.shards import pool

    real = pool.run_unit
    calls = []

    def crashing(unit, s, report=None):
        if unit.index == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C or a killed job half-way
        calls.append(unit.index)
        return real(unit, s, report)

    monkeypatch.setattr(pool, "run_unit", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "out", **kw)
    assert not (tmp_path / "out" / "dict" / "manifest.json").exists()
    (tmp_path / "out" / "dict" / ".shard-00003-00000.parquet.tmp-999").write_bytes(b"half")
    monkeypatch.setattr(pool, "run_unit", real)
    again = run(tmp_path / "out", **kw)
    assert again.resumed == 3 == len(calls)
    assert digests(tmp_path / "out") == digests(tmp_path / "ref")
    assert ref.units == again.units > 4
    with pytest.raises(ShardError, match="other inputs or options; use a new --output"):
        run(tmp_path / "out", **{**kw, "seq_len": 16})


def _write_all_formats(tmp_path, recs):
    import datasets

    table = pa.Table.from_pylist(recs)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs).encode()
    (tmp_path / "a.jsonl").write_bytes(lines)
    (tmp_path / "b.jsonl.gz").write_bytes(gzip.compress(lines))
    import zstandard

    (tmp_path / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    (tmp_path / "d.json").write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "e.json").write_bytes(lines)  # JSON Lines under a .json name
    pq.write_table(table, tmp_path / "f.parquet", row_group_size=7)
    import pyarrow.csv as pcsv

    pcsv.write_csv(table, tmp_path / "g.csv")
    datasets.Dataset(table).save_to_disk(str(tmp_path / "h_hf"))
    return ["a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.json", "e.json", "f.parquet", "g.csv",
            "h_hf"]


def test_every_input_format_gives_the_same_records(tmp_path):
    recs = [{"text": t, "n": i} for i, t in enumerate(
        ["plain", "ünïcödé — 漢字 — עברית — 🙂🙂", "line\nbreaks\r\nand \"quotes\", commas",
         "", "x" * 50_000, "tab\there"])]
    names = _write_all_formats(tmp_path, recs)
    rep = run(tmp_path / "out", domains=tuple((n.split(".")[0].replace("_", ""),
                                               str(tmp_path / n)) for n in names))
    assert len(rep.manifests) == len(names)
    for d, m in rep.manifests.items():
        assert read_column(tmp_path / "out" / d, "text") == [r["text"] for r in recs], d
        assert read_column(tmp_path / "out" / d, "n") == list(range(len(recs))), d
        assert m.stats["empty_documents"] == 1


def test_text_files(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "a.txt").write_text("first line\nsecond line\n\nnew paragraph\n")
    (tmp_path / "t" / "b.txt.gz").write_bytes(gzip.compress("ünï\n".encode()))
    rep = run(tmp_path / "doc", domains=(("t", str(tmp_path / "t")),))
    assert read_column(tmp_path / "doc" / "t", "text") == [
        "first line\nsecond line\n\nnew paragraph\n", "ünï\n"]
    rep = run(tmp_path / "line", domains=(("t", str(tmp_path / "t")),), sample_by="line")
    assert read_column(tmp_path / "line" / "t", "text") == [
        "first line", "second line", "", "new paragraph", "ünï"]
    assert rep.stats["t"]["empty_documents"] == 1


def test_domain_field(tmp_path):
    recs = [{"text": f"doc {i}", "lang": ["en", "de", "fr"][i % 3]} for i in range(30)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep = run(tmp_path / "out", inputs=(str(tmp_path / "in.jsonl"),), domain_field="lang",
              drop=("lang",))
    assert sorted(rep.manifests) == ["de", "en", "fr"]
    assert read_column(tmp_path / "out" / "de", "text") == [f"doc {i}" for i in range(1, 30, 3)]
    assert list(rep.manifests["de"].schema) == ["text"]
    (tmp_path / "bad.jsonl").write_text('{"text": "a", "lang": "en"}\n{"text": "b", '
                                        '"lang": "../etc"}\n{"text": "c"}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:2: domain '../etc' is not a valid"):
        run(tmp_path / "o2", inputs=(str(tmp_path / "bad.jsonl"),), domain_field="lang")
    rep = run(tmp_path / "o3", inputs=(str(tmp_path / "bad.jsonl"),), domain_field="lang",
              skip_bad=True)
    assert rep.bad.count == 2 and list(rep.manifests) == ["en"]
    assert rep.bad.examples[1].endswith("bad.jsonl:3: record has no 'lang' field (--domain-field)")


def test_bad_input_errors_name_file_and_line(tmp_path, tokenizer):
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a"}\n' * 3)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a"}\n{"text": "b"}\n{"text": "c",\n{"txt": "d"}\n{"text": "e"}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:3: malformed JSON.*--skip-bad"):
        run(tmp_path / "o1", domains=(("d", str(bad)),))
    rep = run(tmp_path / "o2", domains=(("d", str(bad)),), skip_bad=True)
    assert rep.bad.count == 2
    assert rep.bad.examples[1] == f"{bad}:4: record has no 'text' field"
    assert read_column(tmp_path / "o2" / "d", "text") == ["a", "b", "e"]
    extra = tmp_path / "extra.jsonl"
    extra.write_text('{"text": "x"}\n{"text": "y", "meta": 1}\n')
    with pytest.raises(RecordError, match=r"extra.jsonl:2: field 'meta' is not among the fields "
                       r"of .*good.jsonl \(text\); drop it with --drop meta"):
        run(tmp_path / "o2b", domains=(("d", str(good)), ("d", str(extra))))
    rep = run(tmp_path / "o2c", domains=(("d", str(good)), ("d", str(extra))), drop=("meta",))
    assert read_column(tmp_path / "o2c" / "d", "text") == ["a", "a", "a", "x", "y"]
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"text": "a", "id": 1}\n{"id": 2}\n')
    with pytest.raises(RecordError, match=r"missing.jsonl:2: record has no 'text' field"):
        run(tmp_path / "o3", domains=(("d", str(missing)),))
    with pytest.raises(InputError, match=r"good.jsonl: no field 'body' in the first records"):
        run(tmp_path / "o4", domains=(("d", str(good)),), text_field="body")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="empty.jsonl: no records in any input file"):
        run(tmp_path / "o5", domains=(("d", str(empty)),))
    with pytest.raises(RecordError, match=r"empty.jsonl: no records \(empty input\)"):
        run(tmp_path / "o6", domains=(("d", str(good)), ("d", str(empty))))
    rep = run(tmp_path / "o7", domains=(("d", str(good)), ("d", str(empty))), skip_bad=True)
    assert rep.bad.count == 1 and rep.stats["d"]["documents"] == 3
    with pytest.raises(InputError, match=r"nope/tok.json: tokenizer not found"):
        run(tmp_path / "o8", domains=(("d", str(good)),), tokenizer=str(tmp_path / "nope/tok.json"))
    with pytest.raises(ShardError, match="no samples.*shorter --seq-len"):
        run(tmp_path / "o9", domains=(("d", str(good)),), tokenizer=tokenizer, seq_len=4096)


def test_huge_document_and_small_read_buffer(tmp_path, tokenizer):
    huge = "In the beginning " * 200_000  # 3.4 MB on one line
    recs = [{"text": "small"}, {"text": huge}, {"text": "tail"}]
    (tmp_path / "h.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    rep = run(tmp_path / "out", domains=(("h", str(tmp_path / "h.jsonl")),),
              read_bytes=64 << 10, chunk_bytes=1 << 20)
    assert rep.units == 4  # byte ranges; three of them start inside the huge line
    assert read_column(tmp_path / "out" / "h", "text") == [r["text"] for r in recs]


def test_read_through_native_source(tmp_path, tokenizer):
    from mixstream.sources.native import NativeSource

    lit = os.path.join(SAMPLE, "literature.jsonl.gz")
    run(tmp_path / "text", domains=(("lit", lit),), rows_per_block=4)
    src = NativeSource(str(tmp_path / "text" / "lit"))
    recs = records("literature")
    assert src.num_samples == len(recs)
    texts = [t for i in range(len(src.block_sizes)) for t in src.read_block(i)["text"]]
    assert texts == [r["text"] for r in recs]
    blocks = {}
    for fmt in ("parquet", "arrow"):
        run(tmp_path / fmt, domains=(("lit", lit),), tokenizer=tokenizer, seq_len=256,
            rows_per_block=8, output_format=fmt)
        src = NativeSource(str(tmp_path / fmt / "lit"))
        blocks[fmt] = np.concatenate([src.read_block(i)["input_ids"]
                                      for i in range(len(src.block_sizes))])
        assert blocks[fmt].dtype == np.uint16 and blocks[fmt].shape[1] == 256
        assert src.tokens_per_sample() == 256
    np.testing.assert_array_equal(blocks["parquet"], blocks["arrow"])


def test_conversion_is_offline_without_touching_the_process(tmp_path, monkeypatch):
    """Reading inputs through ``datasets`` (JSON arrays, text files, save_to_disk folders) makes
    no Hub request, and leaves os.environ and the library's settings as they were (the old
    reader set HF_*_OFFLINE for the whole process)."""
    import datasets
    import datasets.load
    from datasets.utils import logging as dlog

    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # an online process
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", True)
    requests: list[tuple] = []
    monkeypatch.setattr(datasets.load, "get_session",
                        lambda *a, **k: requests.append(a) or pytest.fail("Hub request"))
    verbosity, bars_off = dlog.get_verbosity(), datasets.utils.are_progress_bars_disabled()
    recs = [{"text": f"doc {i}", "n": i} for i in range(5)]
    names = _write_all_formats(tmp_path, recs)
    (tmp_path / "t.txt").write_text("one\ntwo\n")
    env = dict(os.environ)
    rep = run(tmp_path / "out", domains=(("arr", str(tmp_path / "d.json")),
                                         ("hf", str(tmp_path / names[-1])),
                                         ("txt", str(tmp_path / "t.txt"))))
    assert set(rep.manifests) == {"arr", "hf", "txt"}
    assert read_column(tmp_path / "out" / "arr", "n") == list(range(5))
    assert dict(os.environ) == env
    assert requests == []
    assert datasets.config.HF_HUB_OFFLINE is False
    assert datasets.config.HF_UPDATE_DOWNLOAD_COUNTS is True
    assert dlog.get_verbosity() == verbosity
    assert datasets.utils.are_progress_bars_disabled() == bars_off
