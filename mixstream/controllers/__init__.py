"""Mixing controllers: algorithms that retune a MixStream's weights from training feedback.

One controller type per module; see :mod:`mixstream.controllers.base` for the interface.
"""

from .ado import ADO
from .aioli import Aioli
from .base import Controller, GradRequest, Requirements, StreamLike
from .doremi import DoReMi
from .feedback import StepFeedback
from .odm import ODM
from .schedule import Schedule
from .sizes import proportional_weights, temperature_weights, unimax_weights
from .static import StaticMixture

__all__ = [
    "ADO", "Aioli", "Controller", "DoReMi", "GradRequest", "ODM", "Requirements",
    "Schedule", "StaticMixture", "StepFeedback", "StreamLike", "proportional_weights",
    "temperature_weights", "unimax_weights",
]
