"""brianconv: convert trained PyTorch networks into Brian2 spiking networks.

>>> import brianconv
>>> "ttfs" in brianconv.available_methods()
True

The data path: torch model -> :mod:`~brianconv.graph` (layer graph) -> :mod:`~brianconv.folding`
(affine layers and the input shift folded into weighted layers) -> :mod:`~brianconv.calibration` -> a coding scheme in :mod:`~brianconv.schemes` ->
:mod:`~brianconv.description` -> :mod:`~brianconv.builder` (Brian2 objects, runtime or C++
standalone) -> :class:`~brianconv.simulation.SimulationResult`.
"""

from . import errors
from .bias_correction import correct_biases
from .errors import ConversionError
from .schemes import available as available_methods
from .simulation import SimulationResult, SpikingNetwork, convert, load_network
from .sweep import SweepTable, sweep

__version__ = "0.1.0"
__all__ = ["convert", "correct_biases", "load_network", "sweep", "SweepTable", "SpikingNetwork", "SimulationResult",
           "ConversionError", "errors", "available_methods", "__version__"]
