"""``mixstream-shard``: corpora → mixstream shard directories (convert, index, inspect, verify).

Examples::

    mixstream-shard convert --domain web='data/web/*.jsonl.zst' --domain code=data/code.parquet \\
        --output shards/ --tokenizer tok/tokenizer.json --seq-len 2048 --workers 8
    mixstream-shard convert data/*.jsonl.gz --domain-field source --output shards/
    mixstream-shard convert --domain sft=chat.jsonl --messages-field messages \\
        --tokenizer tok/ --seq-len 2048 --output shards/       # input_ids, loss_mask, document_ids
    mixstream-shard convert --domain web=web/ --tokenizer tok/ --seq-len 2048 \\
        --val-docs 1000 --output shards/                      # + shards/web/val/
    mixstream-shard index spark_out/web --token-column input_ids
    mixstream-shard inspect shards/
    mixstream-shard verify shards/
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from ..errors import MixstreamError
from ..shards.errors import ShardError

EXIT_BAD_INPUT = 2
EXIT_MISMATCH = 1


def _domain(value: str) -> tuple[str, str]:
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {value!r}")
    return name, path


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert corpora into one shard directory per domain",
                       description="Convert JSON Lines (.jsonl/.json, also .gz/.zst), Parquet, "
                       "CSV, text files and HF save_to_disk folders into mixstream domain "
                       "directories: <output>/<domain>/{manifest.json, shard-*.parquet}. "
                       "Interrupted runs resume; the output does not depend on --workers.")
    p.add_argument("inputs", nargs="*", help="input files, globs or folders (with --domain-field)")
    p.add_argument("--domain", action="append", type=_domain, default=[], metavar="NAME=PATH",
                   help="a domain and its inputs (file, glob or folder); repeatable")
    p.add_argument("--domain-field", help="take each record's domain from this field")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--text-field", default="text", help="field holding the text (default: text)")
    p.add_argument("--drop", action="append", default=[], metavar="FIELD[,FIELD]",
                   help="fields not to keep; repeatable")
    p.add_argument("--keep-text", action="store_true",
                   help="keep the text beside the token ids (unpacked tokenized output)")
    t = p.add_argument_group("tokenization")
    t.add_argument("--tokenizer", help="tokenizer.json, a HF tokenizer folder, or a folder / "
                   "file of GPT-2 encoder.json + vocab.bpe")
    t.add_argument("--seq-len", type=int, help="pack tokens into rows of this length (EOS "
                   "between documents); without it: one token sequence per document")
    t.add_argument("--eos-token", help="EOS token (default: from the tokenizer)")
    t.add_argument("--no-eos", action="store_true",
                   help="no EOS after each document (unpacked plain text, or prompt/response "
                   "records)")
    t.add_argument("--token-column", default="input_ids", help="default: input_ids")
    t.add_argument("--document-ids", action="store_true",
                   help="packed plain text: also write a document_ids column (0, 1, 2 … per "
                   "row, changing at each document start) so attention can be masked per "
                   "document; instruction data always gets it when packed")
    i = p.add_argument_group(
        "instruction data",
        "Records with a prompt and a response, or chat messages, become input_ids plus a "
        "loss_mask column (1 on response / assistant tokens, 0 on the prompt); packed rows "
        "(--seq-len) also get document_ids. Prompt/response: the two are concatenated (or, "
        "with --chat-template, rendered as a user and an assistant turn), then EOS (trained "
        "on) unless --no-eos. Chat: rendered with the chat template; each assistant turn, "
        "with the template's end-of-turn text, is trained on; no EOS is added. "
        "mixstream.losses.per_sequence_loss honours both columns.")
    i.add_argument("--prompt-field", help="field holding the prompt (with --response-field)")
    i.add_argument("--response-field", help="field holding the response")
    i.add_argument("--messages-field", help="field holding chat messages "
                   "([{\"role\": …, \"content\": …}, …])")
    i.add_argument("--chat-template", metavar="PATH",
                   help="a tokenizer folder (tokenizer_config.json's chat_template or "
                   "chat_template.jinja), a tokenizer_config.json or a .jinja file; default "
                   "for --messages-field: the --tokenizer folder. Local files only")
    v = p.add_argument_group(
        "held-out split",
        "Hold out documents per domain for validation, written as a domain directory of its "
        "own beside the training data: OUTPUT/<domain>/val/ (manifest.json + shards; read it "
        "with MixStream or mixstream.validation like any domain directory; "
        "mixstream.shards.split.split_dirs(OUTPUT, 'val') lists them). Whole documents are "
        "held out (packing happens after the split, on each side), chosen by a hash of their "
        "content keyed by --val-seed: the same for any --workers or --chunk-mb, and exact "
        "duplicates land on the same side.")
    v.add_argument("--val-docs", type=int, metavar="N",
                   help="hold out N documents per domain (a first, reading-only pass finds "
                   "them)")
    v.add_argument("--val-fraction", type=float, metavar="F",
                   help="hold out about this fraction of each domain's documents (0 < F < 1)")
    v.add_argument("--val-seed", type=int, default=0, help="seed of the split (default 0)")
    o = p.add_argument_group("output layout")
    o.add_argument("--format", default="parquet", choices=("parquet", "arrow", "mds"),
                   help="shard format (mds needs mosaicml-streaming)")
    o.add_argument("--rows-per-block", type=int, default=1024,
                   help="rows per Parquet row group / Arrow record batch (default 1024)")
    o.add_argument("--block-mb", type=float, default=8,
                   help="also end a block once its rows hold this many MB (default 8; 0: off)")
    o.add_argument("--blocks-per-shard", type=int, default=16, help="default 16; 0: no limit")
    o.add_argument("--shard-mb", type=float, help="close a shard once it reaches this size")
    o.add_argument("--compression", default="zstd", help="default zstd; none to disable")
    o.add_argument("--parquet-lists", action="store_true",
                   help="store token columns of Parquet shards as lists (readable as lists by "
                        "other tools) instead of bytes (default; mixstream decodes them 3.6x "
                        "faster)")
    r = p.add_argument_group("running")
    r.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    r.add_argument("--chunk-mb", type=float, default=64,
                   help="input MB per work unit (default 64); changing it changes the shards")
    r.add_argument("--txt-sample-by", default="document", choices=("document", "paragraph", "line"),
                   help=".txt files: one document per file (default), paragraph or line")
    r.add_argument("--skip-bad", action="store_true",
                   help="skip bad records (malformed lines, missing text) and report the count")
    r.add_argument("--progress", default="auto", choices=("auto", "bar", "log", "off"))
    p.set_defaults(func=cmd_convert)


def cmd_convert(a: argparse.Namespace) -> int:
    from ..shards.convert import ConvertOptions, convert
    from ..shards.verify import summary

    opts = ConvertOptions(
        output=a.output, domains=tuple(a.domain), inputs=tuple(a.inputs),
        domain_field=a.domain_field, text_field=a.text_field,
        drop=tuple(x for d in a.drop for x in d.split(",") if x), keep_text=a.keep_text,
        tokenizer=a.tokenizer, eos_token=a.eos_token, seq_len=a.seq_len,
        append_eos=not a.no_eos, token_column=a.token_column, output_format=a.format,
        rows_per_block=a.rows_per_block, blocks_per_shard=a.blocks_per_shard or None,
        shard_bytes=int(a.shard_mb * 1e6) if a.shard_mb else None,
        compression=None if a.compression == "none" else a.compression,
        block_bytes=int(a.block_mb * (1 << 20)) or None, parquet_lists=a.parquet_lists,
        workers=a.workers,
        chunk_bytes=int(a.chunk_mb * (1 << 20)), sample_by=a.txt_sample_by,
        skip_bad=a.skip_bad, progress=a.progress, prompt_field=a.prompt_field,
        response_field=a.response_field, messages_field=a.messages_field,
        chat_template=a.chat_template, document_ids=a.document_ids, val_docs=a.val_docs,
        val_fraction=a.val_fraction, val_seed=a.val_seed)
    if a.inputs and a.domain:
        raise ShardError("give inputs either as --domain NAME=PATH or as paths with "
                         "--domain-field, not both")
    rep = convert(opts)
    if rep.manifests:
        train = [m for k, m in rep.manifests.items() if "/" not in k]
        val = {k: m for k, m in rep.manifests.items() if "/" in k}
        print(summary(train))
        if val:
            print(f"\nheld-out split ({', '.join(os.path.join(a.output, k) for k in val)}):")
            print(summary(list(val.values())))
    else:
        for d, st in rep.stats.items():
            print(f"{d}: {json.dumps(st)}")
    if rep.bad.count:
        print(f"skipped {rep.bad.count:,} bad record(s) (--skip-bad); first ones:")
        for e in rep.bad.examples:
            print(f"  {e}")
    resumed = f", {rep.resumed} resumed" if rep.resumed else ""
    print(f"wrote {a.output} ({rep.units} units{resumed}) in {rep.seconds:.1f} s")
    return 0


def _add_index(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("index", help="write manifest.json for Parquet written by another engine",
                       description="Index Parquet files that Spark, Ray Data, DuckDB or pandas "
                       "wrote: reads only the footers (row groups become blocks) and writes "
                       "DIR/manifest.json, without rewriting the data.")
    p.add_argument("directory")
    p.add_argument("--domain", help="domain name (default: the folder name)")
    p.add_argument("--token-column", help="count tokens in this list column")
    p.add_argument("--checksum", action="store_true",
                   help="also record sha256 of each file (reads all data)")
    p.add_argument("--pattern", default="**/*.parquet", help="default: **/*.parquet")
    p.set_defaults(func=cmd_index)


def cmd_index(a: argparse.Namespace) -> int:
    from ..shards.index import index_directory
    from ..shards.verify import summary

    m = index_directory(a.directory, domain=a.domain, token_column=a.token_column,
                        checksum=a.checksum, pattern=a.pattern,
                        log=lambda s: print(s, file=sys.stderr))
    print(summary([m]))
    return 0


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="print the manifest summary of domain directories",
                       description="Documents, samples, tokens, bytes and schema per domain. "
                       "Each DIR is a domain directory or a folder of them.")
    p.add_argument("dirs", nargs="+", metavar="DIR")
    p.add_argument("--json", action="store_true", help="print the manifests as JSON")
    p.set_defaults(func=cmd_inspect)


def cmd_inspect(a: argparse.Namespace) -> int:
    from ..shards.verify import domain_dirs, summary
    from ..sources.native.manifest import load_manifest

    manifests = [load_manifest(d) for d in domain_dirs(a.dirs)]
    if a.json:
        print(json.dumps([m.to_json() for m in manifests], indent=1))
    else:
        print(summary(manifests))
    return 0


def _add_verify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="check every shard against its manifest",
                       description="Checks that each shard exists with the recorded size, "
                       "checksum, blocks, schema and token count; exits 1 on any mismatch.")
    p.add_argument("dirs", nargs="+", metavar="DIR")
    p.add_argument("--no-checksum", action="store_true", help="skip the sha256 check")
    p.set_defaults(func=cmd_verify)


def cmd_verify(a: argparse.Namespace) -> int:
    from ..shards.verify import domain_dirs, verify_domain

    bad = 0
    for d in domain_dirs(a.dirs):
        problems = verify_domain(d, checksum=not a.no_checksum)
        print(f"{d}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
        for p in problems:
            print(f"  {p}")
        bad += len(problems)
    return EXIT_MISMATCH if bad else 0


def _version() -> str:
    from .. import __version__

    return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixstream-shard",
                                     description=__doc__.split("\n")[0].split(": ", 1)[1],
                                     epilog=__doc__.split("\n", 1)[1].replace("::", ":"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_convert, _add_index, _add_inspect, _add_verify):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_BAD_INPUT
    try:
        return int(args.func(args))
    except MixstreamError as e:  # ShardError, SourceError: worded for the user
        print(f"mixstream-shard: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("mixstream-shard: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
