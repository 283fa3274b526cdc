"""Held-out validation split of ``mixstream-shard convert`` (--val-docs / --val-fraction)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from mixstream.cli.shard import main
from mixstream.shards.convert import ConvertOptions, convert
from mixstream.shards.errors import ShardError
from mixstream.shards.split import split_dirs
from mixstream.shards.verify import verify_domain
from mixstream.sources.native import read_shard
from mixstream.sources.native.manifest import load_manifest

WORDS = "red green blue cyan magenta yellow black white orange purple".split()


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> str:
    from tokenizers import ByteLevelBPETokenizer

    t = ByteLevelBPETokenizer()
    t.train_from_iterator([" ".join(WORDS) + " doc 0123456789"] * 30, vocab_size=300,
                          special_tokens=["<|endoftext|>"], show_progress=False)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    t.save(str(path))
    return str(path)


def corpus(tmp_path, name: str, n: int, seed: int = 0, files: int = 3) -> str:
    """``n`` distinct documents ("doc <i> …") over ``files`` files; returns a glob."""
    rng = np.random.default_rng(seed)
    d = tmp_path / name
    d.mkdir()
    recs = [{"text": f"doc {i} " + " ".join(rng.choice(WORDS, int(rng.integers(2, 9))))}
            for i in range(n)]
    for f in range(files):
        (d / f"part{f}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs[f::files]))
    return str(d / "*.jsonl")


def run(out, **kw):
    kw.setdefault("progress", "off")
    return convert(ConvertOptions(output=str(out), **kw))


def texts(domain_dir) -> list[str]:
    m = load_manifest(str(domain_dir))
    return [t for s in m.shards
            for t in read_shard(domain_dir, s.path).column("text").to_pylist()]


def test_fraction_split_by_document_deterministic_and_independent_of_workers(tmp_path):
    web = corpus(tmp_path, "web", 300)
    code = corpus(tmp_path, "code", 120, seed=1)
    doms = (("web", web), ("code", code))
    a = run(tmp_path / "a", domains=doms, val_fraction=0.2, val_seed=7)
    b = run(tmp_path / "b", domains=doms, val_fraction=0.2, val_seed=7, workers=2,
            chunk_bytes=2000, rows_per_block=8)
    run(tmp_path / "c", domains=doms, val_fraction=0.2, val_seed=8)
    assert b.units > a.units
    for d, n in (("web", 300), ("code", 120)):
        train, val = texts(tmp_path / "a" / d), texts(tmp_path / "a" / d / "val")
        assert not set(train) & set(val) and len(train) + len(val) == n
        assert 0.1 * n < len(val) < 0.3 * n
        assert set(texts(tmp_path / "b" / d / "val")) == set(val)  # workers, chunking
        assert set(texts(tmp_path / "c" / d / "val")) != set(val)  # another seed
        vm = load_manifest(str(tmp_path / "a" / d / "val"))
        assert vm.domain == d and vm.extra["split"] == "val"
        assert vm.extra["val_split"]["fraction"] == 0.2 and vm.extra["val_split"]["seed"] == 7
        assert load_manifest(str(tmp_path / "a" / d)).extra["split"] == "train"
        assert verify_domain(str(tmp_path / "a" / d / "val")) == []
    assert sorted(a.manifests) == ["code", "code/val", "web", "web/val"]
    assert split_dirs(str(tmp_path / "a"), "val") == {
        d: str(tmp_path / "a" / d / "val") for d in ("code", "web")}
    assert split_dirs(str(tmp_path / "a")) == {d: str(tmp_path / "a" / d) for d in ("code", "web")}


def test_val_docs_exact_count_and_duplicates_stay_together(tmp_path):
    src = corpus(tmp_path, "web", 200)
    dup = tmp_path / "web" / "part9.jsonl"  # every 10th document a second time, elsewhere
    dup.write_text("".join(json.dumps({"text": t}) + "\n"
                           for t in texts_of(tmp_path / "web")[::10]))
    rep = run(tmp_path / "o", domains=(("web", src),), val_docs=25, workers=2, chunk_bytes=1500)
    val = texts(tmp_path / "o" / "web" / "val")
    train = texts(tmp_path / "o" / "web")
    assert len(val) == 25 and not set(train) & set(val)  # copies counted, on one side
    assert len(set(val)) < 25  # (this seed holds out some duplicated documents)
    assert len(train) + len(val) == 220 and rep.stats["web/val"]["documents"] == len(val)
    again = run(tmp_path / "p", domains=(("web", src),), val_docs=25)
    assert set(texts(tmp_path / "p" / "web" / "val")) == set(val)
    assert again.stats["web"]["documents"] == len(train)


def texts_of(folder) -> list[str]:
    return [json.loads(line)["text"] for f in sorted(os.listdir(folder))
            for line in open(os.path.join(folder, f))]


def test_packed_split_never_cuts_a_document(tmp_path, tok):
    src = corpus(tmp_path, "web", 150)
    run(tmp_path / "o", domains=(("web", src),), tokenizer=tok, seq_len=16, document_ids=True,
        val_fraction=0.25, chunk_bytes=1500)
    from tokenizers import Tokenizer

    t = Tokenizer.from_file(tok)

    def doc_numbers(domain_dir) -> set[int]:
        m = load_manifest(str(domain_dir))
        ids = np.concatenate([np.asarray(read_shard(domain_dir, s.path)
                                         .column("input_ids").to_pylist()).ravel()
                              for s in m.shards])
        text = t.decode(ids.tolist(), skip_special_tokens=False)
        return {int(w.split()[0]) for w in text.split("doc ")[1:] if w.split()[0].isdigit()}

    train, val = doc_numbers(tmp_path / "o" / "web"), doc_numbers(tmp_path / "o" / "web" / "val")
    assert not train & val and len(val) > 10
    m = load_manifest(str(tmp_path / "o" / "web" / "val"))
    assert set(m.schema) == {"input_ids", "document_ids"}


def test_split_errors(tmp_path):
    src = corpus(tmp_path, "web", 10, files=1)
    with pytest.raises(ShardError, match="either --val-docs or --val-fraction"):
        run(tmp_path / "a", domains=(("web", src),), val_docs=2, val_fraction=0.1)
    with pytest.raises(ShardError, match="between 0 and 1"):
        run(tmp_path / "b", domains=(("web", src),), val_fraction=1.0)
    with pytest.raises(ShardError, match=r"domain 'web': --val-docs 10 would hold out all of "
                       r"its 10"):
        run(tmp_path / "c", domains=(("web", src),), val_docs=10)
    with pytest.raises(ShardError, match=r"domain 'web': --val-fraction 0.001 held out none of "
                       r"its 10 documents"):
        run(tmp_path / "d", domains=(("web", src),), val_fraction=0.001)


def test_cli_and_validation_read_the_split(tmp_path, tok, capsys):
    from mixstream import MixLoader, MixStream
    from mixstream.losses import batch_losses
    from mixstream.validation import per_domain_loss

    out = tmp_path / "shards"
    assert main(["convert", "--domain", f"web={corpus(tmp_path, 'web', 200)}", "--domain",
                 f"code={corpus(tmp_path, 'code', 200, seed=3)}", "-o", str(out),
                 "--tokenizer", tok, "--seq-len", "16", "--val-docs", "30", "--progress",
                 "off"]) == 0
    printed = capsys.readouterr().out
    assert f"held-out split ({out}/web/val, {out}/code/val)" in printed
    train = MixStream(split_dirs(str(out)), seed=0)
    assert train.domains == ["code", "web"]
    val = {d: MixLoader(MixStream({d: p}, shuffle=False, on_exhausted="stop"), batch_size=4)
           for d, p in split_dirs(str(out), "val").items()}

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(300, 8)
            self.out = torch.nn.Linear(8, 300)

        def forward(self, ids):
            return self.out(self.emb(ids))

    model = Tiny()
    losses = per_domain_loss(lambda m, b: batch_losses(m(b["input_ids"]), b), model, val,
                             ["code", "web"], max_batches=3)
    assert set(losses) == {"code", "web"}
    assert all(np.isfinite(v) and v > 0 for v in losses.values())


def test_split_with_domain_field_and_resume(tmp_path, monkeypatch):
    recs = [{"text": f"doc {i} " + WORDS[i % 10], "src": ("a", "b")[i % 2]} for i in range(160)]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    kw = dict(inputs=(str(tmp_path / "in.jsonl"),), domain_field="src", val_docs=8,
              chunk_bytes=1200)
    ref = run(tmp_path / "ref", **kw)
    assert sorted(ref.manifests) == ["a", "a/val", "b", "b/val"]
    assert ref.stats["a/val"]["documents"] == ref.stats["b/val"]["documents"] == 8
    from mixstream.shards import pool

    real, calls = pool.run_unit, []

    def crashing(unit, s, report=None):
        if unit.index == 2:
            raise KeyboardInterrupt
        calls.append(unit.index)
        return real(unit, s, report)

    monkeypatch.setattr(pool, "run_unit", crashing)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "out", **kw)
    assert (tmp_path / "out" / ".mixstream-shard" / "val-cuts.json").exists()
    monkeypatch.setattr(pool, "run_unit", real)
    again = run(tmp_path / "out", **kw)
    assert again.resumed == 2 and again.stats == ref.stats
    for d in ("a", "b"):
        assert texts(tmp_path / "out" / d / "val") == texts(tmp_path / "ref" / d / "val")
