"""Mixing controllers: algorithms that retune a MixStream's weights from training feedback.

One controller type per module; see :mod:`mixstream.controllers.base` for the interface.
"""

from .acodm import ACODM
from .ado import ADO
from .aioli import Aioli
from .base import Controller, GradRequest, Requirements, StreamLike
from .doremi import DoReMi
from .fastmix import FastMix
from .feedback import StepFeedback
from .odm import ODM
from .opmix import OPMix
from .schedule import Schedule
from .sizes import proportional_weights, temperature_weights, unimax_weights
from .static import StaticMixture

__all__ = [
    "ACODM", "ADO", "Aioli", "Controller", "DoReMi", "FastMix", "GradRequest", "ODM", "OPMix", "Requirements",
    "Schedule", "StaticMixture", "StepFeedback", "StreamLike", "proportional_weights",
    "temperature_weights", "unimax_weights",
]
