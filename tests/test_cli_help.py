"""``--help`` of both CLIs renders (a stray ``%`` crashed ``mixstream --help``) as plain text."""

from __future__ import annotations

import argparse
import re

import pytest

from mixstream import __version__
from mixstream.cli import main as cli_main
from mixstream.cli import shard as cli_shard
from mixstream.cli.text import plain

MARKUP = re.compile(r"``|\*\*\w[^*\n]*\*\*|:(?:class|func|meth|mod|data|attr|exc):`|::$|`[^`\s]+`_?",
                    re.M)


def _parsers(parser: argparse.ArgumentParser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


@pytest.mark.parametrize("build", [cli_main.build_parser, cli_shard.build_parser],
                         ids=["mixstream", "mixstream-shard"])
def test_every_help_page_renders_without_markup(build):
    pages = {p.prog: p.format_help() for p in _parsers(build())}
    assert len(pages) > 3
    bad = {prog: MARKUP.findall(text) for prog, text in pages.items() if MARKUP.search(text)}
    assert not bad


@pytest.mark.parametrize("build,prog", [(cli_main.build_parser, "mixstream"),
                                        (cli_shard.build_parser, "mixstream-shard")])
def test_version_and_help_exit_cleanly(build, prog, capsys):
    for flag in ("--version", "--help"):
        with pytest.raises(SystemExit) as e:
            build().parse_args([flag])
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{prog} {__version__}\n") and f"usage: {prog}" in out


def test_plain_strips_rest_markup():
    doc = """``mixstream x``: see :class:`~mixstream.observe.MixLogger` and
    :func:`mixstream.laws.fit_two_domain` (**not** :mod:`.table`).

    Examples::

        mixstream x --flag
    """
    assert plain(doc) == ("mixstream x: see MixLogger and\nmixstream.laws.fit_two_domain "
                          "(not table).\n\nExamples:\n\n    mixstream x --flag")

