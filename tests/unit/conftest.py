"""Fixtures of the unit layer: a tiny native corpus (three domains, a few hundred rows)."""

from __future__ import annotations

import pytest
from conftest import domain_table, to_arrow

from mixstream.shards.writer import write_shards

TINY = {"a": 120, "b": 80, "c": 50}


def write_tiny(root, sizes: dict[str, int] = TINY, rows_per_block: int = 16) -> dict[str, str]:
    """Native shards of ``sizes`` under ``root``: ``{domain: path}`` (ids as in conftest)."""
    out = {}
    for i, (name, n) in enumerate(sizes.items()):
        path = root / name
        write_shards(to_arrow(domain_table(i, n)), path, domain=name,
                     rows_per_block=rows_per_block, blocks_per_shard=2, token_column="input_ids")
        out[name] = str(path)
    return out


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_tiny(tmp_path_factory.mktemp("tiny"))
