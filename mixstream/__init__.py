"""mixstream: mixture-aware streaming data loading for PyTorch language-model training.

Top-level names are imported lazily, so that e.g. ``mixstream-shard`` and its worker processes
do not pay for importing torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "MixStream": "mixstream.stream",
    "MixLoader": "mixstream.loader",
    "Batch": "mixstream.batch",
    "LateWeightChangeError": "mixstream.plan.mixture",
    "Ragged": "mixstream.sources.base",
    "Source": "mixstream.sources.base",
    "SourceError": "mixstream.errors",
    "MixstreamError": "mixstream.errors",
    "RemoteError": "mixstream.errors",
    "write_shards": "mixstream.shards.writer",
    "RemoteConfig": "mixstream.remote.config",
}
__all__ = list(_EXPORTS)

if TYPE_CHECKING:
    from .batch import Batch  # noqa: F401
    from .errors import MixstreamError, RemoteError, SourceError  # noqa: F401
    from .loader import MixLoader  # noqa: F401
    from .plan.mixture import LateWeightChangeError  # noqa: F401
    from .remote.config import RemoteConfig  # noqa: F401
    from .shards.writer import write_shards  # noqa: F401
    from .sources.base import Ragged, Source  # noqa: F401
    from .stream import MixStream  # noqa: F401


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
