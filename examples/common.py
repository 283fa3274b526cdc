"""Shared by the examples: real text as token shards, and a trace of what a run trained on.

Data: three domains of the packaged sample corpus (``mixstream/data/sample_corpus``), tokenized
as UTF-8 bytes (ids 0-255, 256 = end of text; no tokenizer to train or download), packed into
rows of ``SEQ_LEN`` tokens and written with ``mixstream.write_shards``.

Trace (for the resume tests in tests/test_examples.py): one JSON line per trained micro-batch
with a hash of its tokens, its domain ids and sample indices, the loss and the stream's
weights, written and flushed before the next batch, so a run killed with SIGKILL leaves every
line of what it trained on.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mixstream.demo.corpus import corpus_files, read_texts
from mixstream.shards.writer import write_shards

DOMAINS = ("code_python", "literature", "multilingual")
SEQ_LEN = 64
VOCAB = 257  # bytes + end of text
EOT = 256
MAX_BYTES = 200_000  # per domain: enough for thousands of rows, quick to write


def build_shards(root: str | os.PathLike[str]) -> dict[str, str]:
    """``{domain: shard dir}`` under ``root``; built once (safe when several ranks race)."""
    root = Path(root)
    files = corpus_files()
    out = {}
    for d in DOMAINS:
        target = root / d
        out[d] = str(target)
        if (target / "manifest.json").exists():
            continue
        ids: list[int] = []
        for text in read_texts(files[d]):
            ids.extend(text.encode("utf-8"))
            ids.append(EOT)
            if len(ids) >= MAX_BYTES:
                break
        n = len(ids) // SEQ_LEN
        rows = np.asarray(ids[: n * SEQ_LEN], dtype=np.uint16).reshape(n, SEQ_LEN)
        tmp = root / f".{d}.tmp{os.getpid()}"
        write_shards({"input_ids": rows}, tmp, domain=d, token_column="input_ids",
                     rows_per_block=64, overwrite=True)
        try:
            os.replace(tmp, target)  # atomic: another rank may have won the race
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not (target / "manifest.json").exists():
                raise
    return out


class Trace:
    """Appends one JSON line per trained micro-batch to ``path`` (``None``: does nothing)."""

    def __init__(self, path: str | None, rank: int = 0) -> None:
        self.rank = rank
        self._fh = None
        if path:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(p.with_name(f"{p.stem}.rank{rank}{p.suffix}"), "a")

    def batch(self, step: int, batch: dict[str, Any], loss: float, weights: dict[str, float]
              ) -> None:
        if self._fh is None:
            return
        tokens = batch["input_ids"].detach().cpu().long().contiguous().numpy()
        rec = {"step": int(step), "rank": self.rank,
               "tokens": hashlib.sha256(tokens.tobytes()).hexdigest(),
               "shape": list(tokens.shape),
               "domain": batch["domain"].cpu().tolist(), "index": batch["index"].cpu().tolist(),
               "loss": float(loss), "weights": weights}
        self._fh.write(json.dumps(rec) + "\n")
        self._fh.flush()


def die() -> None:
    """SIGKILL this process: no cleanup, no atexit, no final checkpoint (the resume tests)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def example_parser(doc: str, *, grad_accum: bool = True) -> argparse.ArgumentParser:
    """The arguments every example takes (the tests drive all three the same way)."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--out", required=True, help="output dir (checkpoints, mix log)")
    p.add_argument("--data", help="shard dir (default: OUT/shards; built on first use)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--save-every", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=8)
    if grad_accum:
        p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--trace", help="JSON lines of every trained batch (tests)")
    p.add_argument("--mixlog", help="MixLogger file (default: OUT/mix.jsonl)")
    p.add_argument("--kill-at", type=int, help="SIGKILL after this optimizer step (tests)")
    return p
