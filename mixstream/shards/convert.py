"""``mixstream-shard convert``: inputs → one shard directory per domain, in parallel, resumable.

1. Resolve the input groups (``--domain NAME=PATH`` or inputs + ``--domain-field``), take each
   group's schema from its first file and split the inputs into work units (the split does not
   depend on ``--workers``).
2. With ``--val-docs``, a reading-only pass over the units finds each domain's held-out
   documents (:mod:`.split`).
3. Run the units not finished by an earlier run (:mod:`.pool`, :mod:`.unit`); each writes its
   shards atomically (held-out documents to ``<domain>/val``) and the parent records it as
   done in ``<output>/.mixstream-shard/``.
4. Per domain (and held-out split), pack the units' leftover tokens (in unit order) into the
   last shards (:mod:`.assemble`), then write ``manifest.json`` (last). Same inputs and
   options ⇒ byte-identical shards.

Records are plain text, or instruction data (:mod:`.instruct`: prompt/response or chat
messages → ``input_ids`` + ``loss_mask``; packed rows also get ``document_ids``).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import pyarrow as pa

from ..sources.native.manifest import Manifest, save_manifest
from .assemble import assemble_domain
from .chat import ChatTemplate, load_chat_template
from .errors import InputError, ShardError
from .inputs import InputFile, WorkUnit, plan_units, resolve
from .instruct import DOCUMENT_IDS, LOSS_MASK
from .pool import run_units
from .progress import Progress
from .readers import ReadOptions
from .schemas import group_schema
from .shardfile import is_temp
from .split import VAL_DIR, ValSplit, val_key
from .tokenize import TokenizerInfo, cached_tokenizer
from .unit import (
    ConvertSettings,
    UnitResult,
    check_token_column,
    eos_after_documents,
    select_unit,
)
from .validate import DOMAIN_NAME, BadRecords
from .writer import ShardLayout

STATE_DIR = ".mixstream-shard"
FORMATS = ("parquet", "arrow", "mds")


@dataclass(frozen=True)
class ConvertOptions:
    output: str
    domains: tuple[tuple[str, str], ...] = ()  # (name, file/glob/dir); names may repeat
    inputs: tuple[str, ...] = ()  # with domain_field
    domain_field: str | None = None
    text_field: str = "text"
    drop: tuple[str, ...] = ()
    keep_text: bool = False
    tokenizer: str | None = None
    eos_token: str | None = None
    seq_len: int | None = None
    append_eos: bool = True
    token_column: str = "input_ids"
    output_format: str = "parquet"
    rows_per_block: int = 1024
    blocks_per_shard: int | None = 16
    shard_bytes: int | None = None
    compression: str | None = "zstd"
    block_bytes: int | None = 8 << 20
    parquet_lists: bool = False  # Parquet token columns as lists, not bytes (see ShardLayout)
    workers: int = 1
    chunk_bytes: int = 64 << 20
    read_bytes: int = 8 << 20
    sample_by: str = "document"
    skip_bad: bool = False
    progress: str = "auto"
    prompt_field: str | None = None  # instruction data: prompt/response records …
    response_field: str | None = None
    messages_field: str | None = None  # … or chat messages (needs a chat template)
    chat_template: str | None = None  # folder / tokenizer_config.json / .jinja; default: tokenizer's
    document_ids: bool = False  # packed plain text: also write document_ids
    val_docs: int | None = None  # held-out split: N documents per domain …
    val_fraction: float | None = None  # … or this fraction of the documents
    val_seed: int = 0


@dataclass
class ConvertReport:
    output: str
    stats: dict[str, dict[str, Any]]
    manifests: dict[str, Manifest] = field(default_factory=dict)
    bad: BadRecords = field(default_factory=lambda: BadRecords(True))
    ignored: list[str] = field(default_factory=list)
    units: int = 0
    resumed: int = 0
    seconds: float = 0.0


def _groups(o: ConvertOptions, ignored: list[str]) -> list[tuple[str | None, list[InputFile]]]:
    if bool(o.domains) == bool(o.domain_field):
        raise ShardError("give either --domain NAME=PATH (one or more) or input paths with "
                         "--domain-field FIELD")
    if o.domain_field:
        if not o.inputs:
            raise ShardError("--domain-field needs input paths")
        files = sorted({f for spec in o.inputs for f in resolve(spec, ignored)},
                       key=lambda f: f.path)
        return [(None, files)]
    merged: dict[str, list[InputFile]] = {}
    for name, spec in o.domains:
        if not DOMAIN_NAME.match(name):
            raise ShardError(f"--domain {name}={spec}: {name!r} is not a valid directory name "
                             f"(letters, digits, '.', '_', '-')")
        merged.setdefault(name, []).extend(resolve(spec, ignored))
    return [(name, list(dict.fromkeys(files))) for name, files in merged.items()]


def _check(o: ConvertOptions) -> TokenizerInfo | None:
    if o.output_format not in FORMATS:
        raise ShardError(f"--format {o.output_format!r}: use one of {FORMATS}")
    if o.output_format == "mds":
        from .mds import require_streaming

        require_streaming()
    if o.workers < 1:
        raise ShardError(f"--workers must be >= 1, got {o.workers}")
    if o.seq_len is not None and (o.tokenizer is None or o.seq_len < 2):
        raise ShardError("--seq-len needs --tokenizer and a length >= 2")
    if bool(o.prompt_field) != bool(o.response_field):
        raise ShardError("--prompt-field and --response-field go together")
    if o.messages_field and o.prompt_field:
        raise ShardError("give either --messages-field or --prompt-field/--response-field")
    instruct = bool(o.messages_field or o.prompt_field)
    if instruct and o.tokenizer is None:
        raise ShardError("instruction data (--prompt-field/--response-field, --messages-field) "
                         "needs --tokenizer: the loss mask is per token")
    if o.chat_template and not instruct:
        raise ShardError("--chat-template needs --messages-field or --prompt-field/"
                         "--response-field")
    if o.val_docs is not None and o.val_fraction is not None:
        raise ShardError("give either --val-docs or --val-fraction")
    if o.val_docs is not None and o.val_docs < 1:
        raise ShardError(f"--val-docs must be >= 1, got {o.val_docs}")
    if o.val_fraction is not None and not 0 < o.val_fraction < 1:
        raise ShardError(f"--val-fraction must be between 0 and 1 (exclusive), got "
                         f"{o.val_fraction}")
    if o.document_ids and not o.seq_len:
        raise ShardError("--document-ids needs --seq-len (unpacked rows hold one document)")
    if o.tokenizer is None:
        return None
    _, info = cached_tokenizer(o.tokenizer, o.eos_token)
    if o.seq_len and info.eos_id is None:
        raise InputError(o.tokenizer, "the tokenizer has no EOS token (needed between packed "
                         "documents)", "name one with --eos-token")
    return info


def _chat_template(o: ConvertOptions) -> ChatTemplate | None:
    """The template for chat records (default: the tokenizer's folder), or for prompt/response
    records when --chat-template is given."""
    if o.messages_field and not o.chat_template:
        assert o.tokenizer is not None
        folder = o.tokenizer if os.path.isdir(o.tokenizer) else os.path.dirname(o.tokenizer)
        return load_chat_template(folder or ".", o.tokenizer)
    if o.chat_template:
        return load_chat_template(o.chat_template, o.tokenizer)
    return None


def _fingerprint(o: ConvertOptions, units: list[WorkUnit], info: TokenizerInfo | None,
                 template: ChatTemplate | None = None) -> str:
    opts = asdict(o)
    for k in ("workers", "progress", "output"):
        opts.pop(k)
    files = sorted({(p.file.path, p.file.size, p.file.mtime_ns) for u in units for p in u.pieces})
    blob = json.dumps({"options": opts, "files": files, "units": len(units),
                       "tokenizer": info.sha256 if info else None,
                       "chat_template": template.sha256 if template else None,
                       "pyarrow": pa.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _write_json(path: str, data: Any) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _marker(state: str, index: int) -> str:
    return os.path.join(state, f"unit-{index:05d}.json")


def _finished(state: str, unit: WorkUnit, output: str) -> UnitResult | None:
    """The result of an earlier run of ``unit`` if all its shards are still in place."""
    path = _marker(state, unit.index)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        result = UnitResult.from_json(json.load(f))
    for domain, part in result.parts.items():
        for s in part.shards:
            p = os.path.join(output, domain, s["path"])
            if not os.path.exists(p) or os.path.getsize(p) != s["bytes"]:
                return None
        if part.directory and not os.path.exists(
                os.path.join(output, domain, part.directory, "index.json")):
            return None
    return result


def _prepare_output(o: ConvertOptions, fingerprint: str) -> str:
    if os.path.exists(o.output) and not os.path.isdir(o.output):
        raise ShardError(f"--output {o.output} is a file; give a folder")
    state = os.path.join(o.output, STATE_DIR)
    os.makedirs(state, exist_ok=True)
    plan = os.path.join(state, "plan.json")
    if os.path.exists(plan):
        with open(plan, encoding="utf-8") as f:
            old = json.load(f).get("fingerprint")
        if old != fingerprint:
            raise ShardError(f"{o.output} holds a conversion of other inputs or options; "
                             f"use a new --output, or delete {o.output} to start over")
    _write_json(plan, {"fingerprint": fingerprint, "options": asdict(o)})
    for name in os.listdir(o.output):  # temp files of shards a crash interrupted
        d = os.path.join(o.output, name)
        if os.path.isdir(d) and name != STATE_DIR:
            for sub in (d, os.path.join(d, VAL_DIR)):
                for n in os.listdir(sub) if os.path.isdir(sub) else ():
                    if is_temp(n):
                        os.remove(os.path.join(sub, n))
    return state


def convert(o: ConvertOptions, log: Callable[[str], None] | None = None) -> ConvertReport:
    """Run a conversion (see the module docstring); returns what was written."""
    t0 = time.perf_counter()
    say = log or (lambda m: print(m, file=sys.stderr, flush=True))
    info = _check(o)
    ignored: list[str] = []
    groups = _groups(o, ignored)
    if ignored:
        shown = ", ".join(ignored[:5]) + (f" … (+{len(ignored) - 5})" if len(ignored) > 5 else "")
        say(f"mixstream-shard: ignoring {len(ignored)} file(s) with unsupported names: {shown}")
    read = ReadOptions(o.read_bytes, o.sample_by, o.text_field)
    template = _chat_template(o)
    content: tuple[tuple[str, str], ...]
    if o.messages_field:
        content = ((o.messages_field, "--messages-field"),)
    elif o.prompt_field and o.response_field:
        content = ((o.prompt_field, "--prompt-field"), (o.response_field, "--response-field"))
    else:
        content = ((o.text_field, "--text-field"),)
    schemas = [group_schema(files, read, content, o.domain_field, o.drop)
               for _, files in groups]
    units = plan_units(groups, o.chunk_bytes)
    layout = ShardLayout("parquet" if o.output_format == "mds" else o.output_format,
                         o.rows_per_block, o.blocks_per_shard, o.shard_bytes, o.compression,
                         o.block_bytes, o.parquet_lists)
    s = ConvertSettings(
        output=os.path.abspath(o.output), layout=layout,
        schemas=tuple(sc for sc, _ in schemas), origins=tuple(orig for _, orig in schemas),
        output_format=o.output_format, text_field=o.text_field, domain_field=o.domain_field,
        drop=o.drop, keep_text=o.keep_text, tokenizer=o.tokenizer, eos_token=o.eos_token,
        seq_len=o.seq_len, append_eos=o.append_eos, token_column=o.token_column,
        skip_bad=o.skip_bad, read=read, prompt_field=o.prompt_field,
        response_field=o.response_field, messages_field=o.messages_field,
        chat_template=template, document_ids=o.document_ids)
    if o.val_docs is not None or o.val_fraction is not None:
        s = replace(s, val=ValSplit(o.val_seed, o.val_fraction, o.val_docs))
    check_token_column(s)
    state = _prepare_output(o, _fingerprint(o, units, info, template))
    if s.val is not None and s.val.docs is not None:
        s = replace(s, val=_val_cuts(s, units, state, o, say))

    results: dict[int, UnitResult] = {}
    for u in units:
        r = _finished(state, u, s.output)
        if r is not None:
            results[u.index] = r
    pending = [u for u in units if u.index not in results]
    piece_bytes = {u.index: sum(p.disk_bytes for p in u.pieces) for u in units}
    progress = Progress(sum(piece_bytes.values()), len(units), mode=o.progress,
                        done_bytes=sum(piece_bytes[i] for i in results), done_units=len(results))
    if results:
        say(f"mixstream-shard: resuming: {len(results)} of {len(units)} units already done")

    def done(_: WorkUnit, r: UnitResult) -> None:
        _write_json(_marker(state, r.index), r.to_json())
        results[r.index] = r

    try:
        run_units(pending, s, o.workers, progress, done)
    finally:
        progress.close()

    report = ConvertReport(o.output, {}, units=len(units), resumed=len(units) - len(pending),
                           ignored=ignored)
    for u in units:
        report.bad.merge(results[u.index].bad)
    domains: list[str] = []
    for u in units:
        for d in results[u.index].parts:
            if d not in domains:
                domains.append(d)
    if s.val is not None:
        _check_split(domains, s.val, results, units)
    for name, _ in groups:
        if name is not None and name not in domains:
            raise ShardError(f"domain {name!r}: no records in its inputs (empty input)")
    manifests = {}
    for d in domains:
        parts = [(u, results[u.index].parts[d]) for u in units if d in results[u.index].parts]
        name = d.split("/")[0]
        extra = _extra(o, s, info, groups, name)
        if s.val is not None:
            extra["split"] = "val" if d != name else "train"
            extra["val_split"] = s.val.to_json()
        report.stats[d], m = assemble_domain(d, parts, s, info, extra, name=name)
        if m is not None:
            manifests[d] = m
    for d, m in manifests.items():  # manifests last: a directory with one is complete
        save_manifest(m, os.path.join(s.output, d))
    report.manifests = manifests
    report.seconds = time.perf_counter() - t0
    _write_json(os.path.join(state, "report.json"),
                {"stats": report.stats, "skipped_records": report.bad.count,
                 "examples": report.bad.examples, "ignored_files": ignored})
    return report


def _val_cuts(s: ConvertSettings, units: list[WorkUnit], state: str, o: ConvertOptions,
              say: Callable[[str], None]) -> ValSplit:
    """``--val-docs N``: a pre-pass finds each domain's N smallest document hashes."""
    assert s.val is not None and s.val.docs is not None
    path = os.path.join(state, "val-cuts.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            cuts = json.load(f)
    else:
        say(f"mixstream-shard: choosing {s.val.docs} held-out documents per domain (a first "
            f"pass over the inputs)")
        found: dict[str, list[int]] = {}
        count: dict[str, int] = {}

        def done(_: WorkUnit, r: dict[str, tuple[int, list[int]]]) -> None:
            for d, (n, h) in r.items():
                found.setdefault(d, []).extend(h)
                count[d] = count.get(d, 0) + n

        size = sum(p.disk_bytes for u in units for p in u.pieces)
        progress = Progress(size, len(units), mode=o.progress)
        try:
            run_units(units, s, o.workers, progress, done, fn=select_unit)
        finally:
            progress.close()
        cuts = {}
        for d, hashes in sorted(found.items()):
            if count[d] <= s.val.docs:
                raise ShardError(f"domain {d!r}: --val-docs {s.val.docs} would hold out all of "
                                 f"its {count[d]} non-empty documents; use a smaller "
                                 f"--val-docs or --val-fraction")
            cuts[d] = sorted(hashes)[s.val.docs - 1]
        _write_json(path, cuts)
    return replace(s.val, cuts=tuple(sorted((d, int(c)) for d, c in cuts.items())))


def _check_split(keys: list[str], val: ValSplit, results: dict[int, UnitResult],
                 units: list[WorkUnit]) -> None:
    """Every domain has documents on both sides of the split."""
    docs: dict[str, int] = {}
    for u in units:
        for k, p in results[u.index].parts.items():
            docs[k] = docs.get(k, 0) + p.documents
    for d in sorted({k.split("/")[0] for k in keys}):
        rule = (f"--val-fraction {val.fraction}" if val.fraction is not None
                else f"--val-docs {val.docs}")
        if val_key(d) not in docs:
            raise ShardError(f"domain {d!r}: {rule} held out none of its {docs.get(d, 0)} "
                             f"documents; raise it (or use --val-docs)")
        if d not in docs:
            raise ShardError(f"domain {d!r}: {rule} held out all of its "
                             f"{docs[val_key(d)]} documents (identical documents are held "
                             f"out together); lower it")


def _extra(o: ConvertOptions, s: ConvertSettings, info: TokenizerInfo | None,
           groups: list[tuple[str | None, list[InputFile]]], domain: str) -> dict[str, Any]:
    """What the manifest's ``extra`` records about how ``domain`` was made."""
    files = [f for name, fs in groups if name in (None, domain) for f in fs]
    extra: dict[str, Any] = {
        "created_by": "mixstream-shard convert",
        "text_field": o.text_field,
        "record_format": ("chat" if s.messages_field else "prompt/response" if s.instruct
                          else "text"),
        "content_fields": list(s.content),
        "inputs": [spec for name, spec in o.domains if name == domain] or list(o.inputs),
        "input_files": len(files),
    }
    if o.domain_field:
        extra["domain_field"] = o.domain_field
    if info is not None:
        extra["tokenizer"] = info.to_json()
        extra["packing"] = "fixed" if o.seq_len else "document"
        extra["seq_len"] = o.seq_len
        extra["eos_id"] = info.eos_id
        extra["eos_appended"] = bool(info.eos_id is not None and eos_after_documents(s))
        extra["loss_mask"] = LOSS_MASK if s.instruct else None
        extra["document_ids"] = (DOCUMENT_IDS if o.seq_len and (s.instruct or s.document_ids)
                                 else None)
    if s.chat_template is not None:
        extra["chat_template"] = s.chat_template.to_json()
    return extra
