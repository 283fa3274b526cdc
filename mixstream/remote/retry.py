"""Retries with exponential backoff and full jitter for transient remote errors.

Hand-written because no layer below does it uniformly: fsspec's HTTP filesystem retries
nothing, s3fs/gcsfs each retry their own subset, and a truncated body that the server reported
as complete is only caught by our size/checksum check, above every client library. A dependency
(tenacity) for one loop was not worth it.
"""

from __future__ import annotations

import errno
import random
import time
from collections.abc import Callable
from typing import TypeVar

from ..errors import DownloadCorrupt, MixstreamError, RemoteError

T = TypeVar("T")

TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT,
                    errno.EPIPE, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN}
#: exception class names (anywhere in the MRO) of client libraries that mean "try again":
#: aiohttp (fsspec HTTP), botocore (s3fs), google-auth/requests (gcsfs), azure-core (adlfs)
TRANSIENT_NAMES = {
    "ClientPayloadError", "ServerDisconnectedError", "ClientConnectionError", "ClientOSError",
    "ServerTimeoutError", "ContentLengthError", "TransferEncodingError",
    "ReadTimeoutError", "ConnectTimeoutError", "EndpointConnectionError", "IncompleteReadError",
    "ResponseStreamingError", "ConnectionClosedError", "ChunkedEncodingError",
    "ServiceRequestError", "ServiceResponseError", "TransportError",
}  # fmt: skip


__all__ = ["DownloadCorrupt", "RemoteError", "describe", "is_transient", "with_retries"]


def status_of(exc: BaseException) -> int | None:
    """HTTP status carried by a client exception, if any."""
    for attr in ("status", "status_code", "code"):
        v = getattr(exc, attr, None)
        if isinstance(v, int) and 100 <= v < 600:
            return v
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):  # botocore ClientError
        v = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return v if isinstance(v, int) else None
    return None


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt: timeouts, resets, 5xx/408/429, truncated or corrupt bodies."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                        ImportError)):
        return False
    if isinstance(exc, (TimeoutError, ConnectionError, DownloadCorrupt)):
        return True
    status = status_of(exc)
    if status is not None:
        return status >= 500 or status in (408, 429)
    if any(cls.__name__ in TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and is_transient(cause)


def describe(exc: BaseException) -> str:
    text = str(exc).strip() or repr(exc)
    return f"{type(exc).__name__}: {text[:300]}"


def with_retries(fn: Callable[[], T], url: str, *, attempts: int, backoff: float,
                 max_backoff: float, what: str = "read",
                 sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``, retried on transient errors; then :class:`RemoteError` naming ``url``.

    ``FileNotFoundError`` (callers word it), ``ImportError`` (a missing backend) and our own
    errors (a :class:`~mixstream.errors.SourceError`, a nested :class:`RemoteError`) propagate
    at once; other non-transient errors (no permission, no
    credentials, 4xx) become a :class:`RemoteError` at once.
    """
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if isinstance(exc, (FileNotFoundError, ImportError)) or (
                    isinstance(exc, MixstreamError) and not isinstance(exc, DownloadCorrupt)):
                raise  # already worded (a SourceError, a nested RemoteError)
            if not is_transient(exc):
                raise RemoteError(
                    f"{url}: {what} failed ({describe(exc)}); not a transient error, so not "
                    f"retried: check the URL, credentials and RemoteConfig(storage_options=...)"
                ) from exc
            if attempt == attempts:
                raise RemoteError(
                    f"{url}: {what} failed after {attempts} attempt(s), last error {describe(exc)}; "
                    f"check that the server is reachable and serves this file, or allow more "
                    f"attempts with RemoteConfig(retries=...) or a longer RemoteConfig(timeout=...)"
                ) from exc
            sleep(random.uniform(0, min(max_backoff, backoff * 2 ** (attempt - 1))))
    raise AssertionError("unreachable")
