"""Data shipped with mixstream: a small multi-domain sample of real text (see its README)."""

from __future__ import annotations

import os

SAMPLE_CORPUS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample_corpus")


def sample_corpus() -> dict[str, str]:
    """``{domain: path}`` of the shipped ``<domain>.jsonl.gz`` files, sorted by domain."""
    names = sorted(n for n in os.listdir(SAMPLE_CORPUS_DIR) if n.endswith(".jsonl.gz"))
    return {n[: -len(".jsonl.gz")]: os.path.join(SAMPLE_CORPUS_DIR, n) for n in names}
