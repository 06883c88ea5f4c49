"""Coding schemes, registered by name.

A scheme is a subclass of :class:`~brianconv.schemes.base.Scheme` that turns a calibrated
:class:`~brianconv.graph.LayerGraph` into a :class:`~brianconv.description.NetworkDescription`
and decodes the recorded output. ``brianconv.convert(model, method=NAME)`` looks schemes up here.
"""

from . import (
    amos,  # noqa: F401  (registers "amos")
    rate,  # noqa: F401  (registers "rate")
    tdsnn,  # noqa: F401  (registers "tdsnn")
    ttfs,  # noqa: F401  (registers "ttfs")
)
from .base import RunSetup, Scheme, available, get, register, unregister
from .options import Options, SchemeState, dt_option, option, percentile_option, positive_number, v_unit_option

__all__ = ["Scheme", "RunSetup", "register", "unregister", "get", "available", "Options", "SchemeState", "option",
           "positive_number", "dt_option", "percentile_option", "v_unit_option"]
