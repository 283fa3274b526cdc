"""The library's exceptions, at the bottom of the layers (nothing here imports mixstream).

Every error mixstream raises on purpose is a :class:`MixstreamError`, so one ``except`` catches
them all. The second base says what kind of failure it is, for code that predates the root:

* :class:`SourceError` is also a ``ValueError``: bad data or configuration (a corrupt shard, a
  malformed manifest, a schema mismatch). Retrying does not help; the message names the file
  and the fix.
* :class:`RemoteError` is also an ``OSError``, deliberately *not* a ``ValueError``: a network
  read failed for good (after retries, or for a non-transient reason such as missing
  credentials). The data may be fine; the remote was not reachable.
"""

from __future__ import annotations


class MixstreamError(Exception):
    """Root of every exception mixstream raises on purpose."""


class SourceError(MixstreamError, ValueError):
    """Bad input in a source: names the file, the domain and the fix."""


class RemoteError(MixstreamError, OSError):
    """A remote read failed for good (after retries, or for a non-transient reason)."""


class DownloadCorrupt(MixstreamError, OSError):
    """A download's size or checksum differs from the manifest (truncated body, bad proxy ...).

    Transient: the retry loop tries again, and after the last attempt reports a
    :class:`RemoteError` caused by it."""
