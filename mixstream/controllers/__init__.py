"""Mixing controllers: algorithms that retune a MixStream's weights from training feedback.

One controller type per module; see :mod:`mixstream.controllers.base` for the interface.
Names are imported lazily: ``from mixstream.controllers import ODM`` loads ODM's modules only,
not the model-aware controllers and their dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

_EXPORTS = {
    "ACODM": ".acodm",
    "ADO": ".ado",
    "Aioli": ".aioli",
    "Controller": ".base",
    "GradRequest": ".base",
    "Requirements": ".base",
    "StreamLike": ".base",
    "DoReMi": ".doremi",
    "FastMix": ".fastmix",
    "StepFeedback": "..feedback",
    "ODM": ".odm",
    "OPMix": ".opmix",
    "Schedule": ".schedule",
    "proportional_weights": ".sizes",
    "temperature_weights": ".sizes",
    "unimax_weights": ".sizes",
    "StaticMixture": ".static",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from ..feedback import StepFeedback  # noqa: F401
    from .acodm import ACODM  # noqa: F401
    from .ado import ADO  # noqa: F401
    from .aioli import Aioli  # noqa: F401
    from .base import Controller, GradRequest, Requirements, StreamLike  # noqa: F401
    from .doremi import DoReMi  # noqa: F401
    from .fastmix import FastMix  # noqa: F401
    from .odm import ODM  # noqa: F401
    from .opmix import OPMix  # noqa: F401
    from .schedule import Schedule  # noqa: F401
    from .sizes import proportional_weights, temperature_weights, unimax_weights  # noqa: F401
    from .static import StaticMixture  # noqa: F401

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
