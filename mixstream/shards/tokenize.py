"""Load a tokenizer from local files with 🤗 ``tokenizers`` and encode texts in batches.

Accepted paths: a ``tokenizer.json`` file; a Hugging Face tokenizer folder (``tokenizer.json``,
or ``vocab.json`` + ``merges.txt``); GPT-2-style ``encoder.json`` + ``vocab.bpe`` (the folder,
or the path of either file). ``encode_batch`` runs in Rust threads; token ids come back as one
flat numpy array plus per-document lengths.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InputError

EOS_CANDIDATES = ("<|endoftext|>", "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")
FORMATS = "a tokenizer.json, a Hugging Face tokenizer folder, or encoder.json + vocab.bpe"


@dataclass(frozen=True)
class TokenizerInfo:
    """What the manifest records about the tokenizer (and what workers need to load it)."""

    path: str
    kind: str  # tokenizer.json | vocab+merges
    files: tuple[str, ...]
    sha256: str
    vocab_size: int
    eos_id: int | None
    eos_token: str | None

    @property
    def dtype(self) -> np.dtype:
        """uint16 when every id fits, else uint32."""
        return np.dtype(np.uint16 if self.vocab_size <= 1 << 16 else np.uint32)

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "files": [os.path.basename(f) for f in
                self.files], "sha256": self.sha256, "vocab_size": self.vocab_size,
                "eos_id": self.eos_id, "eos_token": self.eos_token, "dtype": self.dtype.name}


def find_files(path: str) -> tuple[str, tuple[str, ...]]:
    """``(kind, files)`` for a tokenizer path; a clear error for anything else."""
    if not os.path.exists(path):
        raise InputError(path, "tokenizer not found (no such file or directory)",
                         f"--tokenizer takes {FORMATS}")
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    name = "" if os.path.isdir(path) else os.path.basename(path)
    pairs = (("encoder.json", "vocab.bpe"), ("vocab.json", "merges.txt"))
    if name == "tokenizer.json" or (name.endswith(".json") and name not in
                                    {p for pair in pairs for p in pair}):
        return "tokenizer.json", (path,)
    if not name and os.path.exists(os.path.join(folder, "tokenizer.json")):
        return "tokenizer.json", (os.path.join(folder, "tokenizer.json"),)
    for vocab, merges in pairs:
        if name in ("", vocab, merges):
            v, m = os.path.join(folder, vocab), os.path.join(folder, merges)
            if os.path.exists(v) and os.path.exists(m):
                return "vocab+merges", (v, m)
    raise InputError(path, "not a tokenizer I can load", f"--tokenizer takes {FORMATS}")


def _sha256(files: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for f in files:
        with open(f, "rb") as fh:
            h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def _build(kind: str, files: tuple[str, ...]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    try:
        if kind == "tokenizer.json":
            return Tokenizer.from_file(files[0])
        vocab, merges = models.BPE.read_file(files[0], files[1])
        tok = Tokenizer(models.BPE(vocab, merges))  # GPT-2 byte-level BPE
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        return tok
    except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception on bad files
        raise InputError(files[0], f"cannot load tokenizer ({e})",
                         f"--tokenizer takes {FORMATS}") from e


def _configured_eos(folder: str) -> str | None:
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                eos = json.load(f).get("eos_token")
            if isinstance(eos, dict):
                eos = eos.get("content")
            if isinstance(eos, str):
                return eos
    return None


def load_tokenizer(path: str, eos_token: str | None = None) -> tuple[Any, TokenizerInfo]:
    """The ``tokenizers.Tokenizer`` and its :class:`TokenizerInfo`.

    The EOS token is ``eos_token`` if given, else the folder's ``tokenizer_config.json``
    ``eos_token``, else the first of :data:`EOS_CANDIDATES` in the vocabulary.
    """
    kind, files = find_files(path)
    tok = _build(kind, files)
    configured = eos_token or _configured_eos(os.path.dirname(files[0]))
    candidates = (configured,) if configured else EOS_CANDIDATES
    eos_id, eos = None, None
    for cand in candidates:
        i = tok.token_to_id(cand)
        if i is not None:
            eos_id, eos = int(i), cand
            break
    if configured and eos_id is None:
        raise InputError(path, f"EOS token {configured!r} is not in the vocabulary",
                         "give an existing token with --eos-token")
    info = TokenizerInfo(os.path.abspath(path), kind, tuple(os.path.abspath(f) for f in files),
                         _sha256(files), int(tok.get_vocab_size(with_added_tokens=True)),
                         eos_id, eos)
    return tok, info


_CACHE: dict[tuple[str, str | None, int], tuple[Any, TokenizerInfo]] = {}


def cached_tokenizer(path: str, eos_token: str | None = None) -> tuple[Any, TokenizerInfo]:
    """:func:`load_tokenizer`, once per process and (path, eos_token, modification time)."""
    mtime = os.stat(path).st_mtime_ns if os.path.exists(path) else -1
    key = (os.path.abspath(path), eos_token, mtime)
    if key not in _CACHE:
        _CACHE[key] = load_tokenizer(path, eos_token)
    return _CACHE[key]


def encode(tok: Any, texts: list[str], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``texts``: ``(values, lengths)``, no special tokens added."""
    fast = getattr(tok, "encode_batch_fast", tok.encode_batch)
    ids = [e.ids for e in fast(texts, add_special_tokens=False)]
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    values = np.fromiter(itertools.chain.from_iterable(ids), dtype=dtype, count=int(lengths.sum()))
    return values, lengths
