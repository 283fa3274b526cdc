"""Demo data: the packaged sample corpus -> byte-level BPE -> packed token shards per domain.

Each ``<domain>.jsonl.gz`` (or ``.jsonl``) file of the corpus folder is one domain, one JSON
document per line with a ``"text"`` field. A byte-level BPE tokenizer is trained on the fly
with 🤗 ``tokenizers``; documents are tokenized, joined with an end-of-text token and packed
into rows of ``seq_len + 1`` tokens. The first ``val_rows`` rows of every domain are held out
for validation, the rest are written as mixstream shards (``write_shards``).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EOT = "<|endoftext|>"
PACKAGED = Path(__file__).resolve().parent.parent / "data" / "sample_corpus"


def corpus_files(folder: str | Path | None = None) -> dict[str, Path]:
    """``{domain: file}`` for the ``*.jsonl.gz`` / ``*.jsonl`` files of ``folder``."""
    root = Path(folder) if folder is not None else PACKAGED
    if not root.is_dir():
        raise ValueError(f"corpus folder {root} does not exist; pass --corpus DIR with one "
                         f"<domain>.jsonl(.gz) file per domain")
    files: dict[str, Path] = {}
    for p in sorted(root.iterdir()):
        for suffix in (".jsonl.gz", ".jsonl"):
            if p.name.endswith(suffix):
                files[p.name[: -len(suffix)]] = p
    if len(files) < 2:
        raise ValueError(f"{root} has {len(files)} domain file(s); the demo needs at least two "
                         f"<domain>.jsonl(.gz) files")
    return files


def read_texts(path: Path) -> list[str]:
    opener: Any = gzip.open if path.name.endswith(".gz") else open
    texts = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                texts.append(str(json.loads(line)["text"]))
            except (json.JSONDecodeError, KeyError) as e:
                raise ValueError(f"{path}:{i}: expected a JSON object with a 'text' field "
                                 f"({e})") from None
    if not texts:
        raise ValueError(f"{path}: no documents")
    return texts


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer with ``EOT`` as its only special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def tokenize_and_pack(tok: Any, texts: list[str], seq_len: int) -> np.ndarray:
    """Token rows ``[n, seq_len + 1]`` (uint16): documents joined by ``EOT``; tail dropped."""
    eot = tok.token_to_id(EOT)
    ids: list[int] = []
    for enc in tok.encode_batch(texts):
        ids.extend(enc.ids)
        ids.append(eot)
    width = seq_len + 1
    n = len(ids) // width
    return np.asarray(ids[: n * width], dtype=np.uint16).reshape(n, width)


@dataclass
class DemoData:
    domains: list[str]
    shard_dirs: dict[str, str]
    val: dict[str, np.ndarray]   # held-out rows per domain
    tokens: dict[str, int]       # training tokens per domain
    vocab_size: int


def build(workdir: str | Path, *, corpus: str | Path | None = None, vocab_size: int = 2048,
          seq_len: int = 128, val_rows: int = 32, noise_domains: int = 0,
          seed: int = 0) -> DemoData:
    """Tokenize the corpus and write one shard directory per domain under ``workdir``.

    ``noise_domains`` adds that many domains of uniformly random token ids (``noise1``, ...),
    each as large as the biggest real domain: scraped garbage that no model can learn, the
    simplest case where the mixture matters. They have no validation rows (the demo's target is
    the mean validation loss over the real domains).
    """
    from ..shards.writer import write_shards

    files = corpus_files(corpus)
    texts = {d: read_texts(p) for d, p in files.items()}
    tok = train_tokenizer([t for ts in texts.values() for t in ts], vocab_size)
    work = Path(workdir)
    dirs, val, tokens = {}, {}, {}
    for d, ts in texts.items():
        rows = tokenize_and_pack(tok, ts, seq_len)
        if len(rows) < 2 * val_rows:
            raise ValueError(f"domain {d!r} has only {len(rows)} rows of {seq_len + 1} tokens; "
                             f"lower --val-rows or --seq-len")
        val[d] = rows[:val_rows]
        train = rows[val_rows:]
        out = work / "shards" / d
        write_shards({"input_ids": train}, out, domain=d, token_column="input_ids",
                     rows_per_block=64, overwrite=True)
        dirs[d] = str(out)
        tokens[d] = int(train.size)
    names = list(texts)
    if noise_domains:
        rng = np.random.default_rng(seed)
        n_rows = max(tokens.values()) // (seq_len + 1)
        for i in range(1, noise_domains + 1):
            d = f"noise{i}"
            rows = rng.integers(0, tok.get_vocab_size(), size=(n_rows, seq_len + 1),
                                dtype=np.uint16)
            out = work / "shards" / d
            write_shards({"input_ids": rows}, out, domain=d, token_column="input_ids",
                         rows_per_block=64, overwrite=True)
            dirs[d] = str(out)
            tokens[d] = int(rows.size)
            names.append(d)
    tok.save(str(work / "tokenizer.json"))
    return DemoData(names, dirs, val, tokens, tok.get_vocab_size())
