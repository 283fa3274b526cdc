"""``mixstream`` command: one sub-command per module, each exposing ``add_parser(subparsers)``.

A sub-command module registers itself with ``parser.set_defaults(func=...)``; ``func(args)``
returns the process exit code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys

# module name -> sub-command(s) it registers
SUBCOMMAND_MODULES = ("mixstream.cli.plot", "mixstream.cli.laws", "mixstream.cli.demo")


def package_version() -> str:
    """The installed distribution's version (the CLI is the top layer: it does not import the
    package root for ``mixstream.__version__``, which pyproject.toml's version equals)."""
    return importlib.metadata.version("mixstream")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mixstream", description="Mixture-aware streaming data loading for PyTorch "
        "language-model training: plot a run's mixture, fit data mixing laws, run the demo. "
        "Shards are written by mixstream-shard.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # the sub-command is not part of this build
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
