"""Helpers for the multi-process (gloo) tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port on loopback that is free right now (for MASTER_PORT / init_method)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
