"""Module docstrings as ``--help`` text: the reST markup that reads well in the API reference
(````code````, ``:class:`~mixstream.X```, ``**bold**``, ``Examples::``) stripped for a terminal.

Why not argparse's default formatter: it reflows every paragraph into one, which scrambles the
command examples; the help keeps the docstring's own line breaks instead
(:data:`FORMATTER`).
"""

from __future__ import annotations

import argparse
import re
import textwrap

#: keeps the description's line breaks (the docstrings are already wrapped)
FORMATTER = argparse.RawDescriptionHelpFormatter

_ROLE = re.compile(r":(?:py:)?[a-z]+:`(~?)([^`]+)`")
_LITERAL = re.compile(r"``(.+?)``", re.S)
_BOLD = re.compile(r"\*\*(.+?)\*\*", re.S)


def _role(m: re.Match[str]) -> str:
    tilde, target = m.groups()
    return target.lstrip(".").rsplit(".", 1)[-1] if tilde else target.lstrip(".")


def plain(doc: str) -> str:
    """``doc`` without reST markup: roles -> their target (``~`` -> the last name), literals
    and bold -> their text, a ``::`` that opens a literal block -> ``:``."""
    text = textwrap.dedent(doc).strip("\n")
    first, _, rest = text.partition("\n")  # a docstring's first line is not indented
    text = first.strip() + ("\n" + textwrap.dedent(rest) if rest else "")
    text = _ROLE.sub(_role, text)
    text = _LITERAL.sub(r"\1", text)
    text = _BOLD.sub(r"\1", text)
    text = re.sub(r" ?::$", ":", text, flags=re.M)
    return text

