"""Held-out validation split per domain, by document, decided by a keyed hash of the content.

Each document's text (for instruction data: the rendered conversation) is hashed with BLAKE2b
keyed by the seed. ``--val-fraction F`` holds out every document whose hash falls in the first
``F`` of the hash range; ``--val-docs N`` holds out each domain's ``N`` documents with the
smallest hashes (a pre-pass over the inputs finds the cut). So the split

* never cuts a document (packing happens after the split, in each side separately),
* depends only on the content and the seed: not on workers, chunking, file order or the
  position of a document, and identical documents (exact duplicates) always land on the same
  side, so a duplicate cannot leak a validation document into training,
* is written beside the training data: ``<output>/<domain>/val/`` is a domain directory of
  its own (manifest, shards) that MixStream and :mod:`mixstream.validation` read like any
  other; :func:`split_dirs` lists them.

Empty documents always stay in the training split (where they are counted and dropped).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..sources.native.manifest import manifest_path

VAL_DIR = "val"
_RANGE = 1 << 64


@dataclass(frozen=True)
class ValSplit:
    """How documents are held out (picklable; travels to the workers)."""

    seed: int = 0
    fraction: float | None = None  # --val-fraction
    docs: int | None = None  # --val-docs
    cuts: tuple[tuple[str, int], ...] = ()  # --val-docs: per domain, the largest held-out hash

    def to_json(self) -> dict[str, object]:
        rule = {"fraction": self.fraction} if self.fraction is not None else {"docs": self.docs}
        return {"directory": VAL_DIR, "seed": self.seed, **rule,
                "by": "document content, BLAKE2b keyed by the seed"}

    def held_out(self, domain: str, texts: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Which of ``texts`` (one domain's documents) go to the validation split."""
        h = document_hashes(texts, self.seed)
        nonempty = pc.greater(pc.binary_length(texts), 0).to_numpy(zero_copy_only=False)
        if self.fraction is not None:
            return (h < np.uint64(int(self.fraction * _RANGE))) & nonempty
        cut = dict(self.cuts).get(domain)
        if cut is None:
            return np.zeros(len(h), dtype=bool)
        return (h <= np.uint64(cut)) & nonempty


def val_key(domain: str) -> str:
    """The output sub-path of ``domain``'s validation split."""
    return f"{domain}/{VAL_DIR}"


def document_hashes(texts: pa.ChunkedArray | pa.Array, seed: int) -> np.ndarray:
    """64-bit keyed BLAKE2b of each text's UTF-8 bytes (``uint64``)."""
    key = int(seed).to_bytes(16, "little", signed=True)
    values = texts.cast(pa.large_binary()).to_pylist()
    return np.fromiter((int.from_bytes(hashlib.blake2b(v or b"", digest_size=8, key=key)
                                       .digest(), "little") for v in values),
                       dtype=np.uint64, count=len(values))


def smallest(h: np.ndarray, n: int) -> list[int]:
    """The ``n`` smallest values of ``h``, sorted (what a pre-pass unit keeps)."""
    if len(h) > n:
        h = np.partition(h, n - 1)[:n]
    return sorted(int(x) for x in h)


def split_dirs(root: str, split: str = "train") -> dict[str, str]:
    """``{domain: directory}`` of a ``mixstream-shard convert`` output: the training
    directories (``split="train"``) or their held-out splits (``split="val"``)."""
    if split not in ("train", VAL_DIR):
        raise ValueError(f"split must be 'train' or {VAL_DIR!r}, got {split!r}")
    out: dict[str, str] = {}
    for name in sorted(os.listdir(root)):
        d = os.path.join(root, name)
        if name.startswith(".") or not os.path.exists(manifest_path(d)):
            continue
        path = d if split == "train" else os.path.join(d, VAL_DIR)
        if os.path.exists(manifest_path(path)):
            out[name] = path
    return out
