"""Instruction data: prompt/response records or chat ``messages`` → one text per document plus
the character spans the loss is taken on, then token ids with a loss mask.

Records are checked (and chat templates rendered) while the reader still knows each row's
file and line; the result travels as two hidden columns (:data:`TEXT`, :data:`SPANS`) to the
tokenizer. The whole document is tokenized at once (as at inference, where the rendered
prompt is tokenized before the reply is generated) and a token is trained on (mask 1) when its
character range overlaps a span: every character of a reply is inside the loss, including a
token that starts in the prompt's trailing space and ends in the reply.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .chat import ChatTemplate, assistant_spans, clean_messages
from .errors import SKIP_HINT, InputError, RecordError
from .validate import BadRecords, Locate, drop_rows

TEXT = "__mixstream_text"  # the document's text (rendered conversation, or prompt + response)
SPANS = "__mixstream_spans"  # flat [start, end, start, end, …] character offsets
HIDDEN = (TEXT, SPANS)
LOSS_MASK = "loss_mask"
DOCUMENT_IDS = "document_ids"


def _string(table: pa.Table, name: str, where: str, flag: str) -> pa.ChunkedArray:
    col = table.column(name)
    if pa.types.is_large_string(col.type) or pa.types.is_null(col.type):
        col = col.cast(pa.string())
    elif not pa.types.is_string(col.type):
        raise InputError(where, f"field {name!r} holds {col.type}, not text", f"choose it with "
                         f"{flag}")
    return col


def _need(table: pa.Table, names: tuple[str, ...], where: str) -> None:
    missing = [n for n in names if n not in table.column_names]
    if missing:
        raise InputError(where, f"no field {missing[0]!r} (fields: "
                         f"{', '.join(table.column_names)})", "choose the instruction fields "
                         "with --prompt-field/--response-field or --messages-field")


def prepare_pairs(table: pa.Table, prompt: str, response: str, where: str, locate: Locate,
                  bad: BadRecords, tpl: ChatTemplate | None = None) -> pa.Table:
    """Rows with a string prompt and response, plus :data:`TEXT` and :data:`SPANS`: the two
    concatenated, or with ``tpl`` a user turn and an assistant turn rendered by the template."""
    _need(table, (prompt, response), where)
    p = _string(table, prompt, where, "--prompt-field")
    r = _string(table, response, where, "--response-field")
    missing = np.flatnonzero(pc.or_(pc.is_null(p), pc.is_null(r)).to_numpy(
        zero_copy_only=False))
    for row in missing:
        field = prompt if not p[int(row)].is_valid else response
        bad.add(RecordError(locate(int(row)), f"record has no {field!r} field",
                            f"choose the fields with --prompt-field/--response-field, "
                            f"{SKIP_HINT}"))
    kept = np.arange(table.num_rows)
    if len(missing):
        keep = drop_rows(pa.table({"p": p, "r": r}), missing.tolist())
        table = drop_rows(table, missing.tolist())
        p, r = keep.column("p"), keep.column("r")
        kept = np.delete(kept, missing)
    if tpl is not None:
        chats = pa.table({"m": pa.array([[{"role": "user", "content": a},
                                          {"role": "assistant", "content": b}]
                                         for a, b in zip(p.to_pylist(), r.to_pylist())]),
                          "row": pa.array(np.arange(table.num_rows))})
        rendered = prepare_chat(chats, "m", tpl, where, lambda i: locate(int(kept[i])), bad)
        table = table.take(rendered.column("row"))
        return table.append_column(TEXT, rendered.column(TEXT)).append_column(
            SPANS, rendered.column(SPANS))
    text = pc.binary_join_element_wise(p, r, "")
    start = pc.utf8_length(p).to_numpy(zero_copy_only=False).astype(np.int64)
    end = start + pc.utf8_length(r).to_numpy(zero_copy_only=False).astype(np.int64)
    spans = pa.FixedSizeListArray.from_arrays(pa.array(np.stack([start, end], 1).ravel()), 2)
    return (table.append_column(TEXT, text)
            .append_column(SPANS, spans.cast(pa.list_(pa.int64()))))


def prepare_chat(table: pa.Table, messages: str, tpl: ChatTemplate, where: str,
                 locate: Locate, bad: BadRecords) -> pa.Table:
    """Rows whose conversation renders, plus :data:`TEXT` and :data:`SPANS`."""
    _need(table, (messages,), where)
    texts: list[str] = []
    spans: list[list[int]] = []
    dropped: list[int] = []
    for row, value in enumerate(table.column(messages).to_pylist()):
        try:
            msgs = clean_messages(value, locate(row), SKIP_HINT)
            text, sp = assistant_spans(tpl, msgs, locate(row), SKIP_HINT)
        except RecordError as e:
            bad.add(e)
            dropped.append(row)
            continue
        texts.append(text)
        spans.append([x for s in sp for x in s])
    table = drop_rows(table, dropped)
    return (table.append_column(TEXT, pa.array(texts, pa.string()))
            .append_column(SPANS, pa.array(spans, pa.list_(pa.int64()))))


def encode_masked(tok: Any, texts: list[str], spans: list[list[int]],
                  dtype: np.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(values, lengths, loss_mask)``: token ids of ``texts`` (no special tokens added) and
    1 on each token whose character range overlaps one of the document's spans."""
    encodings = tok.encode_batch(texts, add_special_tokens=False)  # with offsets
    lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=len(texts))
    total = int(lengths.sum())
    values = np.empty(total, dtype=dtype)
    mask = np.zeros(total, dtype=np.uint8)
    pos = 0
    for e, flat in zip(encodings, spans):
        n = len(e.ids)
        if n:
            values[pos:pos + n] = e.ids
            off = np.asarray(e.offsets, dtype=np.int64).reshape(n, 2)
            hit = np.zeros(n, dtype=bool)
            for s, t in zip(flat[0::2], flat[1::2]):
                hit |= (off[:, 1] > s) & (off[:, 0] < t)
            mask[pos:pos + n] = hit
        pos += n
    return values, lengths, mask


def content_fields(prompt: str | None, response: str | None, messages: str | None,
                   text: str) -> tuple[str, ...]:
    """The fields that hold a record's content in this mode."""
    if messages:
        return (messages,)
    if prompt and response:
        return (prompt, response)
    return (text,)
