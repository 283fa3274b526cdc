"""Instruction data through ``mixstream-shard convert``: prompt/response and chat records →
``input_ids`` + ``loss_mask`` (+ ``document_ids`` when packed), read back through MixStream."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mixstream.cli.shard import main
from mixstream.shards.convert import ConvertOptions, convert
from mixstream.shards.errors import InputError, RecordError, ShardError
from mixstream.shards.verify import verify_domain
from mixstream.sources.native import read_shard
from mixstream.sources.native.manifest import load_manifest

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi "
         "rho sigma tau upsilon phi chi psi omega question answer what is the why how").split()


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> str:
    """A tiny local tokenizer folder: tokenizer.json + tokenizer_config.json with a ChatML
    template (nothing downloaded)."""
    from tokenizers import ByteLevelBPETokenizer

    d = tmp_path_factory.mktemp("tok")
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator([" ".join(WORDS)] * 50 + ["héllo wörld ünïcode"] * 5,
                            vocab_size=400, min_frequency=1,
                            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                            show_progress=False)
    tok.save(str(d / "tokenizer.json"))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "chat_template": CHATML}))
    return str(d)


def tokenizer(tok_dir):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))


def phrase(rng: np.random.Generator, n: int) -> str:
    return " ".join(rng.choice(WORDS, size=n))


def pairs(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"id": i, "prompt": f"{phrase(rng, int(rng.integers(1, 12)))} {i}?",
             "response": f" {phrase(rng, int(rng.integers(1, 15)))} {i}."} for i in range(n)]


def chats(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        msgs = [{"role": "system", "content": f"be brief {i}"}] if i % 3 == 0 else []
        for t in range(1 + i % 3):
            msgs.append({"role": "user", "content": f"{phrase(rng, 4)} {i}.{t}?"})
            msgs.append({"role": "assistant", "content": f"{phrase(rng, 5)} {i}.{t}"})
        out.append({"messages": msgs})
    return out


def write_jsonl(path, recs) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return str(path)


def run(out, **kw):
    kw.setdefault("progress", "off")
    return convert(ConvertOptions(output=str(out), **kw))


def rows(domain_dir, *columns) -> dict[str, list]:
    m = load_manifest(str(domain_dir))
    out: dict[str, list] = {c: [] for c in columns}
    for s in m.shards:
        t = read_shard(domain_dir, s.path)
        for c in columns:
            out[c].extend(t.column(c).to_pylist())
    return out


def test_prompt_response_unpacked(tmp_path, tok_dir):
    recs = pairs(40)
    recs[5]["prompt"] = "héllo wörld "  # multi-byte characters; the prompt ends in a space
    recs[5]["response"] = "ünïcode answer"
    src = write_jsonl(tmp_path / "sft.jsonl", recs)
    rep = run(tmp_path / "out", domains=(("sft", src),), tokenizer=tok_dir,
              prompt_field="prompt", response_field="response")
    tok = tokenizer(tok_dir)
    eos = tok.token_to_id("<|endoftext|>")
    got = rows(tmp_path / "out" / "sft", "input_ids", "loss_mask", "id")
    assert got["id"] == list(range(40))  # other fields kept, content fields dropped
    for r, ids, mask in zip(recs, got["input_ids"], got["loss_mask"]):
        assert ids == tok.encode(r["prompt"] + r["response"], add_special_tokens=False).ids + [eos]
        assert len(mask) == len(ids) and mask[-1] == 1  # EOS is trained on
        first = mask.index(1)
        assert set(mask[first:]) == {1} and set(mask[:first]) <= {0}
        trained = tok.decode(ids[first:-1])
        assert trained.endswith(r["response"]) and r["prompt"].endswith(
            trained[: len(trained) - len(r["response"])])  # at most the straddling space
        assert tok.decode(ids[:first]) + trained == r["prompt"] + r["response"]
    m = load_manifest(str(tmp_path / "out" / "sft"))
    assert m.extra["record_format"] == "prompt/response" and m.extra["loss_mask"] == "loss_mask"
    assert m.schema["loss_mask"].dtype == "uint8" and "prompt" not in m.schema
    assert rep.stats["sft"]["documents"] == 40 and verify_domain(str(tmp_path / "out" / "sft")) == []


def documents(tok_dir, recs, mode: str) -> list[tuple[list[int], list[int]]]:
    """Expected (tokens, mask) per document, computed independently of the converter."""
    tok = tokenizer(tok_dir)
    eos = tok.token_to_id("<|endoftext|>")
    out = []
    for r in recs:
        if mode == "pairs":
            p = tok.encode(r["prompt"] + r["response"], add_special_tokens=False)
            cut = len(r["prompt"])
            mask = [int(e > cut) for _, e in p.offsets] + [1]
            out.append((p.ids + [eos], mask))
        else:
            ids, mask = [], []
            for m in r["messages"]:
                head = tok.encode(f"<|im_start|>{m['role']}\n", add_special_tokens=False).ids
                body = tok.encode(f"{m['content']}<|im_end|>\n", add_special_tokens=False).ids
                ids += head + body
                mask += [0] * len(head) + [int(m["role"] == "assistant")] * len(body)
            out.append((ids, mask))
    return out


def check_packed(domain_dir, docs, seq_len: int, dropped: int) -> None:
    """Every row segment (a run of equal document_ids) is a piece of one document that starts
    at the document's start unless it opens the row and ends at its end unless it closes the
    row; together the segments hold every document token once (but the dropped tail). In the
    domain's tail shard, where the units' leftovers meet, a segment may also continue a
    document begun in an earlier row."""
    m = load_manifest(str(domain_dir))
    covered = 0
    for s in m.shards:
        t = read_shard(domain_dir, s.path).to_pydict()
        tail = s.path.startswith("shard-tail")
        for ids, mask, dids in zip(t["input_ids"], t["loss_mask"], t["document_ids"]):
            assert len(ids) == len(mask) == len(dids) == seq_len
            assert dids[0] == 0 and all(b - a in (0, 1) for a, b in zip(dids, dids[1:]))
            cuts = [0] + [i for i in range(1, seq_len) if dids[i] != dids[i - 1]] + [seq_len]
            for k, (a, b) in enumerate(zip(cuts, cuts[1:])):
                n = b - a
                hits = [(d, o) for d, (toks, msk) in enumerate(docs)
                        for o in range(len(toks) - n + 1)
                        if toks[o:o + n] == ids[a:b] and msk[o:o + n] == mask[a:b]
                        and (k == 0 or o == 0 or tail)
                        and (b == seq_len or o + n == len(toks))]
                assert hits, f"{s.path}: segment {k} of a row is not a piece of any document"
                covered += n
    assert covered == sum(len(t) for t, _ in docs) - dropped


@pytest.mark.parametrize("mode", ["pairs", "chat"])
def test_packed_instruction_data_keeps_document_boundaries(tmp_path, tok_dir, mode):
    recs = pairs(60) if mode == "pairs" else chats(30)
    src = write_jsonl(tmp_path / "in.jsonl", recs)
    kw = (dict(prompt_field="prompt", response_field="response") if mode == "pairs"
          else dict(messages_field="messages"))
    # several units (each leaves a partial row for the domain's tail) and two workers
    rep = run(tmp_path / "out", domains=(("d", src),), tokenizer=tok_dir, seq_len=48,
              chunk_bytes=1500, rows_per_block=4, workers=2, **kw)
    assert rep.units > 3
    m = load_manifest(str(tmp_path / "out" / "d"))
    assert m.schema["document_ids"].kind == "fixed" and m.schema["loss_mask"].width == 48
    assert m.extra["document_ids"] == "document_ids"
    check_packed(tmp_path / "out" / "d", documents(tok_dir, recs, mode), 48,
                 rep.stats["d"]["dropped_tokens"])
    one = run(tmp_path / "one", domains=(("d", src),), tokenizer=tok_dir, seq_len=48,
              chunk_bytes=1500, rows_per_block=4, workers=1, **kw)
    assert one.stats == rep.stats
    assert rows(tmp_path / "one" / "d", "document_ids") == rows(tmp_path / "out" / "d",
                                                                "document_ids")


def test_chat_rendering_matches_transformers(tmp_path, tok_dir):
    transformers = pytest.importorskip("transformers")
    from mixstream.shards.chat import assistant_spans, load_chat_template, render

    tpl = load_chat_template(tok_dir)
    hf = transformers.PreTrainedTokenizerFast(
        tokenizer_file=os.path.join(tok_dir, "tokenizer.json"), chat_template=CHATML)
    for rec in chats(6):
        msgs = rec["messages"]
        assert render(tpl, msgs) == hf.apply_chat_template(msgs, tokenize=False)
        assert render(tpl, msgs[:1], True) == hf.apply_chat_template(
            msgs[:1], tokenize=False, add_generation_prompt=True)
        text, spans = assistant_spans(tpl, msgs, "x", "")
        assert [text[a:b] for a, b in spans] == [f"{m['content']}<|im_end|>\n" for m in msgs
                                                 if m["role"] == "assistant"]


def test_prompt_response_through_a_chat_template(tmp_path, tok_dir):
    recs = pairs(5)
    src = write_jsonl(tmp_path / "in.jsonl", recs)
    run(tmp_path / "out", domains=(("d", src),), tokenizer=tok_dir, prompt_field="prompt",
        response_field="response", chat_template=os.path.join(tok_dir, "tokenizer_config.json"))
    got = rows(tmp_path / "out" / "d", "input_ids", "loss_mask")
    as_chat = [{"messages": [{"role": "user", "content": r["prompt"]},
                             {"role": "assistant", "content": r["response"]}]} for r in recs]
    want = documents(tok_dir, as_chat, "chat")
    eos = tokenizer(tok_dir).token_to_id("<|endoftext|>")
    assert got["input_ids"] == [t + [eos] for t, _ in want]
    assert got["loss_mask"] == [m + [1] for _, m in want]


def test_bad_instruction_records(tmp_path, tok_dir):
    recs = [{"prompt": "a", "response": "b"}, {"prompt": "c"}, {"prompt": None, "response": "d"}]
    src = write_jsonl(tmp_path / "p.jsonl", recs)
    kw = dict(tokenizer=tok_dir, prompt_field="prompt", response_field="response")
    with pytest.raises(RecordError, match=r"p.jsonl:2: record has no 'response' field"):
        run(tmp_path / "o1", domains=(("d", src),), **kw)
    rep = run(tmp_path / "o2", domains=(("d", src),), skip_bad=True, **kw)
    assert rep.bad.count == 2 and "p.jsonl:3: record has no 'prompt' field" in rep.bad.examples[1]
    convs = [{"messages": [{"role": "user", "content": "hi"}]},
             {"messages": [{"role": "user", "content": "hi"},
                           {"role": "assistant", "content": "yo"}]},
             {"messages": []}]
    src = write_jsonl(tmp_path / "c.jsonl", convs)
    with pytest.raises(RecordError, match=r"c.jsonl:1: no assistant message"):
        run(tmp_path / "o3", domains=(("d", src),), tokenizer=tok_dir, messages_field="messages")
    rep = run(tmp_path / "o4", domains=(("d", src),), tokenizer=tok_dir,
              messages_field="messages", skip_bad=True)
    assert rep.bad.count == 2 and rep.stats["d"]["documents"] == 1
    # a template that rewrites earlier turns cannot locate the assistant turns
    (tmp_path / "odd.jinja").write_text("{{ messages | length }}{% for m in messages %}"
                                        "{{ m['content'] }}{% endfor %}")
    one = write_jsonl(tmp_path / "c2.jsonl", convs[1:2])
    with pytest.raises(RecordError, match=r"c2.jsonl:1: the chat template does not render"):
        run(tmp_path / "o5", domains=(("d", one),), tokenizer=tok_dir, messages_field="messages",
            chat_template=str(tmp_path / "odd.jinja"))


def test_option_errors(tmp_path, tok_dir):
    src = write_jsonl(tmp_path / "p.jsonl", pairs(3))
    with pytest.raises(ShardError, match="go together"):
        run(tmp_path / "a", domains=(("d", src),), tokenizer=tok_dir, prompt_field="prompt")
    with pytest.raises(ShardError, match="needs --tokenizer"):
        run(tmp_path / "b", domains=(("d", src),), prompt_field="prompt",
            response_field="response")
    with pytest.raises(ShardError, match="--document-ids needs --seq-len"):
        run(tmp_path / "c", domains=(("d", src),), tokenizer=tok_dir, document_ids=True)
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "tokenizer.json").write_bytes(open(os.path.join(tok_dir, "tokenizer.json"), "rb").read())
    with pytest.raises(InputError, match="holds no chat template"):
        run(tmp_path / "d", domains=(("d", src),), tokenizer=str(bare), messages_field="messages")
    with pytest.raises(InputError, match=r"p.jsonl: no field 'messages' in the first records"):
        run(tmp_path / "e", domains=(("d", src),), tokenizer=tok_dir, messages_field="messages")
    (tmp_path / "broken.jinja").write_text("{% for m in messages %}")
    with pytest.raises(InputError, match=r"broken.jinja:1: chat template syntax error"):
        run(tmp_path / "f", domains=(("d", src),), tokenizer=tok_dir, prompt_field="prompt",
            response_field="response", chat_template=str(tmp_path / "broken.jinja"))


def test_plain_text_document_ids(tmp_path, tok_dir):
    recs = [{"text": phrase(np.random.default_rng(i), 3 + i % 7)} for i in range(50)]
    src = write_jsonl(tmp_path / "t.jsonl", recs)
    rep = run(tmp_path / "out", domains=(("t", src),), tokenizer=tok_dir, seq_len=32,
              document_ids=True, chunk_bytes=600)
    tok = tokenizer(tok_dir)
    eos = tok.token_to_id("<|endoftext|>")
    total = sum(len(tok.encode(r["text"], add_special_tokens=False).ids) + 1 for r in recs)
    got = rows(tmp_path / "out" / "t", "input_ids", "document_ids")
    m = load_manifest(str(tmp_path / "out" / "t"))
    assert set(m.schema) == {"input_ids", "document_ids"} and rep.units > 1
    assert sum(len(r) for r in got["input_ids"]) == total - rep.stats["t"]["dropped_tokens"]
    for ids, dids in zip(got["input_ids"], got["document_ids"]):  # ids change after each EOS
        for i in range(1, len(ids)):
            assert (dids[i] != dids[i - 1]) == (ids[i - 1] == eos)


def test_batches_carry_loss_mask_and_document_ids(tmp_path, tok_dir):
    from mixstream import MixLoader, MixStream
    from mixstream.losses import batch_losses, per_sequence_tokens

    a = write_jsonl(tmp_path / "a.jsonl", pairs(80, seed=1))
    b = write_jsonl(tmp_path / "b.jsonl", chats(40, seed=2))
    out = tmp_path / "shards"
    run(out, domains=(("a", a),), tokenizer=tok_dir, seq_len=32, prompt_field="prompt",
        response_field="response", rows_per_block=8)
    assert main(["convert", "--domain", f"b={b}", "-o", str(tmp_path / "shards2"),
                 "--tokenizer", tok_dir, "--seq-len", "32", "--messages-field", "messages",
                 "--rows-per-block", "8", "--progress", "off"]) == 0
    stored = {}
    for name, d in (("a", out / "a"), ("b", tmp_path / "shards2" / "b")):
        got = rows(d, "input_ids", "loss_mask", "document_ids")
        for ids, mask, dids in zip(got["input_ids"], got["loss_mask"], got["document_ids"]):
            stored[(name, tuple(ids))] = (mask, dids)
    stream = MixStream({"a": str(out / "a"), "b": str(tmp_path / "shards2" / "b")},
                       weights={"a": 0.5, "b": 0.5}, seed=3)
    loader = MixLoader(stream, batch_size=8, num_workers=0)
    names = stream.domains
    seen = 0
    for step, batch in enumerate(loader):
        if step == 6:
            break
        ids, mask, dids = batch["input_ids"], batch["loss_mask"], batch["document_ids"]
        assert ids.shape == mask.shape == dids.shape == (8, 32)
        for i in range(8):
            key = (names[int(batch["domain"][i])], tuple(ids[i].tolist()))
            assert key in stored
            assert mask[i].tolist() == stored[key][0] and dids[i].tolist() == stored[key][1]
            seen += 1
        logits = torch.randn(8, 32, 400)
        loss, tokens = batch_losses(logits, batch)
        assert tokens.tolist() == per_sequence_tokens(
            ids, loss_mask=mask, document_ids=dids).tolist()
        assert bool((tokens < mask.sum(1) + 1).all()) and bool(torch.isfinite(loss).all())
    assert seen == 48


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=1, max_size=30), st.integers(2, 12),
       st.lists(st.integers(1, 6), min_size=1, max_size=8))
def test_packing_keeps_tokens_masks_and_boundaries_aligned(lengths, seq_len, calls):
    """pack() called on any split of the documents (as units and chunks do) gives the rows of
    the whole stream; document_ids change exactly where a document starts."""
    from mixstream.shards.pack import document_ids, document_starts, pack

    lengths = np.asarray(lengths, dtype=np.int64)
    total = int(lengths.sum())
    values = np.arange(total, dtype=np.uint32)
    mask = (values % 3 == 0).astype(np.uint8)
    starts = document_starts(lengths)
    assert starts.sum() == (lengths > 0).sum()
    carry = [np.empty(0, np.uint32), np.empty(0, np.uint8), np.empty(0, np.uint8)]
    rows: list[list[np.ndarray]] = [[], [], []]
    docs = np.cumsum(np.asarray(calls)) % (len(lengths) + 1)
    cuts = sorted({0, len(lengths), *docs.tolist()})
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    for a, b in zip(cuts, cuts[1:]):
        lo, hi = offsets[a], offsets[b]
        for k, arr in enumerate((values, mask, starts)):
            r, carry[k] = pack(carry[k], arr[lo:hi], seq_len)
            rows[k].append(r)
    tok, msk, st_rows = (np.concatenate(r) if r else np.empty((0, seq_len)) for r in rows)
    k = total // seq_len
    assert tok.shape == msk.shape == st_rows.shape == (k, seq_len)
    np.testing.assert_array_equal(tok.ravel(), values[: k * seq_len])
    np.testing.assert_array_equal(msk.ravel(), mask[: k * seq_len])
    np.testing.assert_array_equal(carry[0], values[k * seq_len:])
    ids = document_ids(st_rows)
    assert ids.dtype == np.uint16 and (ids[:, 0] == 0).all() if k else True
    for r in range(k):
        for i in range(1, seq_len):
            assert (ids[r, i] != ids[r, i - 1]) == bool(starts[r * seq_len + i])
