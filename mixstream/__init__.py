"""mixstream: mixture-aware streaming data loading for PyTorch language-model training."""

from .loader import MixLoader
from .plan.mixture import LateWeightChangeError
from .sources.base import Ragged, Source, SourceError
from .stream import MixStream

__all__ = ["MixStream", "MixLoader", "LateWeightChangeError", "Ragged", "Source", "SourceError"]
__version__ = "0.1.0"
