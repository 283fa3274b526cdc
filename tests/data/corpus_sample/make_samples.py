"""Rebuild the committed corpus samples from a corpus built by build_corpus.sh.

    MAX_MB=2 /work/shared/corpus/build_corpus.sh /work/corpus-small
    python tests/data/corpus_sample/make_samples.py /work/corpus-small

Writes tests/data/corpus_sample/<domain>.jsonl.gz (8 domains, ~40 KB of text each) and
mixstream/data/sample_corpus/<domain>.jsonl.gz (6 domains, ~300 KB each) plus their
provenance in sources.json. The subset is deterministic: documents in file order (the
corpus files are already in a hash order), skipping documents longer than a cap, until the
domain has the target amount of text. gzip output has mtime 0, so re-running gives the same
bytes.
"""

from __future__ import annotations

import gzip
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
TEST_DOMAINS = ("code_python", "code_c", "code_go", "manpages", "dictionary", "scripture",
                "literature", "multilingual")
PACKAGE_DOMAINS = ("code_python", "tech_docs", "literature", "scripture", "dictionary",
                   "multilingual")


def subset(path: str, target: int, cap: int) -> list[dict]:
    out, total = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            n = len(rec["text"].encode("utf-8"))
            if n > cap:
                continue
            out.append({"text": rec["text"], "source": rec["source"]})
            total += n
            if total >= target:
                break
    return out


def write(records: list[dict], path: str) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                  mtime=0, compresslevel=9) as f:
        for rec in records:
            f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))


def build(corpus: str, out_dir: str, domains: tuple[str, ...], target: int, cap: int) -> None:
    with open(os.path.join(corpus, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    os.makedirs(out_dir, exist_ok=True)
    sources = {}
    for d in domains:
        recs = subset(os.path.join(corpus, f"{d}.jsonl"), target, cap)
        write(recs, os.path.join(out_dir, f"{d}.jsonl.gz"))
        sources[d] = {"documents": len(recs),
                      "text_bytes": sum(len(r["text"].encode()) for r in recs),
                      "license": manifest[d]["license"], "packages": manifest[d]["packages"]}
    with open(os.path.join(out_dir, "sources.json"), "w", encoding="utf-8") as f:
        json.dump(sources, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    corpus = sys.argv[1] if len(sys.argv) > 1 else "/work/corpus-small"
    build(corpus, HERE, TEST_DOMAINS, 40_000, 12_000)
    build(corpus, os.path.join(ROOT, "mixstream", "data", "sample_corpus"), PACKAGE_DOMAINS,
          300_000, 40_000)
