"""Chat templates from a local tokenizer folder, rendered with jinja2, and the character
spans of the assistant turns (what the loss mask covers).

Templates come from ``tokenizer_config.json`` (``chat_template``: a string, or a list of
``{"name", "template"}`` where ``default`` is used), ``chat_template.jinja`` or
``chat_template.json`` in the folder, or a template file. They are rendered the way
``transformers``' ``apply_chat_template`` renders them (a sandboxed jinja2 environment with
``trim_blocks``/``lstrip_blocks``, loop controls, a ``tojson`` that does not escape HTML,
``raise_exception``, ``strftime_now`` and the tokenizer's special tokens as variables;
``{% generation %}`` blocks are kept as plain content) so that training data matches what the
model sees at inference. jinja2 directly rather than ``transformers``: one code path whether or
not ``transformers`` is installed (jinja2 comes with torch); a test checks both agree.

Assistant spans come from rendering prefixes: turn ``i`` spans from the end of
``render(messages[:i], add_generation_prompt=True)`` to the end of ``render(messages[:i+1])``,
so the span holds the reply and the template's end-of-turn text. A template that does not
render prefixes as prefixes of the whole conversation is refused per record.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import InputError, RecordError

SPECIAL = ("bos_token", "eos_token", "unk_token", "pad_token", "sep_token", "cls_token",
           "mask_token")
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json", "tokenizer_config.json")


@dataclass(frozen=True)
class ChatTemplate:
    """A template's source and the variables it is rendered with (picklable)."""

    source: str
    origin: str  # the file it came from
    variables: tuple[tuple[str, str], ...] = ()  # special tokens: (name, text)

    @property
    def sha256(self) -> str:
        blob = json.dumps([self.source, list(self.variables)]).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "sha256": self.sha256}


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _from_config(path: str) -> str | None:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    tpl = data.get("chat_template")
    if isinstance(tpl, list):
        named = {t.get("name"): t.get("template") for t in tpl if isinstance(t, dict)}
        tpl = named.get("default")
    return tpl if isinstance(tpl, str) else None


def _special_tokens(folder: str) -> tuple[tuple[str, str], ...]:
    found: dict[str, str] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                data = json.load(f)
            for key in SPECIAL:
                text = _token_text(data.get(key))
                if text is not None:
                    found[key] = text
    return tuple(sorted(found.items()))


def load_chat_template(path: str, tokenizer: str | None = None) -> ChatTemplate:
    """The template named by ``path`` (a folder, a config/JSON file or a template file); the
    special tokens come from ``path``'s folder, else from the tokenizer's."""
    if not os.path.exists(path):
        raise InputError(path, "chat template not found (no such file or directory)",
                         "give a tokenizer folder with a chat_template, or a .jinja file")
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    source: str | None = None
    origin = path
    if os.path.isdir(path):
        for name in TEMPLATE_FILES:
            p = os.path.join(path, name)
            if not os.path.exists(p):
                continue
            source = _from_config(p) if name.endswith(".json") else open(
                p, encoding="utf-8").read()
            if source is not None:
                origin = p
                break
    elif path.endswith(".json"):
        source = _from_config(path)
    else:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    if not source:
        raise InputError(path, "holds no chat template (no \"chat_template\" in "
                         "tokenizer_config.json, no chat_template.jinja)",
                         "give a template file with --chat-template, or use --prompt-field/"
                         "--response-field without a template")
    variables = _special_tokens(folder)
    if not variables and tokenizer is not None:
        tfolder = tokenizer if os.path.isdir(tokenizer) else os.path.dirname(tokenizer)
        variables = _special_tokens(tfolder)
    tpl = ChatTemplate(source, os.path.abspath(origin), variables)
    compiled(tpl)  # syntax errors now, naming the file
    return tpl


_COMPILED: dict[str, Any] = {}


def compiled(tpl: ChatTemplate) -> Any:
    """The jinja2 template, compiled once per process."""
    key = tpl.sha256
    if key in _COMPILED:
        return _COMPILED[key]
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        """``{% generation %}…{% endgeneration %}`` (transformers' assistant markers): the body
        renders as is; spans come from prefix rendering instead."""

        tags = {"generation"}

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(
                lineno)

        def _body(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        template = env.from_string(tpl.source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise InputError(f"{tpl.origin}:{e.lineno}", f"chat template syntax error ({e.message})",
                         "fix the template") from e
    _COMPILED[key] = template
    return template


def render(tpl: ChatTemplate, messages: list[dict[str, Any]],
           add_generation_prompt: bool = False) -> str:
    return str(compiled(tpl).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                    **dict(tpl.variables)))


def clean_messages(value: Any, where: str, skip_hint: str) -> list[dict[str, Any]]:
    """Messages as plain dicts (keys that Arrow filled with null dropped), checked."""
    if not isinstance(value, list) or not value:
        raise RecordError(where, "messages must be a non-empty list of {role, content}",
                          skip_hint)
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(
                m.get("content"), str):
            raise RecordError(where, f"message {k + 1} needs a string 'role' and 'content' "
                              f"(got {m!r:.80})", skip_hint)
        out.append({key: v for key, v in m.items() if v is not None})
    if not any(m["role"] == "assistant" for m in out):
        raise RecordError(where, "no assistant message (nothing to train on)", skip_hint)
    return out


def assistant_spans(tpl: ChatTemplate, messages: list[dict[str, Any]], where: str,
                    skip_hint: str) -> tuple[str, list[tuple[int, int]]]:
    """``(text, [(start, end)])``: the rendered conversation and its assistant turns."""
    import jinja2

    try:
        text = render(tpl, messages)
        spans = []
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = render(tpl, messages[:i], add_generation_prompt=True)
            upto = render(tpl, messages[: i + 1])
            if not (text.startswith(upto) and upto.startswith(before)):
                raise RecordError(where, f"the chat template does not render the conversation "
                                  f"up to assistant turn {i + 1} as a prefix of the whole (it "
                                  f"rewrites earlier turns), so the turn cannot be located",
                                  f"use a template that renders prefixes as prefixes, "
                                  f"{skip_hint}")
            if len(upto) > len(before):
                spans.append((len(before), len(upto)))
    except jinja2.exceptions.TemplateError as e:
        raise RecordError(where, f"chat template {tpl.origin}: {e}", skip_hint) from e
    return text, spans
