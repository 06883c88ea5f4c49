"""Converted networks and their simulation results: the names users import from one place.

:func:`convert` (:mod:`brianconv.conversion`) turns a torch model into a :class:`SpikingNetwork`
(:mod:`brianconv.network`), which simulates any number of inputs on Brian2's runtime or C++
standalone device (batches: :mod:`brianconv.batches`) and returns a :class:`SimulationResult`
(:mod:`brianconv.results`).
"""

from .conversion import convert, load_network
from .network import SpikingNetwork
from .results import SimulationResult

__all__ = ["convert", "load_network", "SpikingNetwork", "SimulationResult"]
