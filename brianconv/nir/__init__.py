"""The NIR bridge: import NIR graphs into brianconv and export rate-converted networks to NIR.

NIR, the Neuromorphic Intermediate Representation (https://neuroir.org), describes spiking
networks in continuous time; snnTorch, Norse, sinabs and Rockpool read and write it. This
subpackage needs the optional extra: ``pip install brianconv[nir]``. The core of brianconv
does not import :mod:`nir`.

* :func:`from_nir` turns a ``nir.NIRGraph`` (or a ``.nir`` file) into a :class:`NIRNetwork`
  simulated by brianconv's one builder (runtime or C++ standalone, compiled once per number of
  steps), one population per stateful NIR node, named after it.
* :func:`to_nir` writes a network converted with the ``rate`` scheme as a ``nir.NIRGraph``.

Discretisation: how ``dt`` relates to the discrete frameworks
-------------------------------------------------------------
NIR's neurons are ODEs; brianconv integrates them with Brian2 in steps of ``dt`` (forward Euler
by default, ``method="exact"`` for the exponential solution), holding each node's input
constant during a step.

* **Spike amplitude.** A spike is the signal value 1 during the step in which it is emitted (an
  area of ``dt``), which is what the discrete frameworks compute: a weight ``w`` on a spike adds
  ``w`` to the input of that step. (Reading a spike as a Dirac impulse of area 1 instead would
  multiply every synaptic effect by ``1 / dt``.)
* **Leak.** With Euler, ``v <- v + dt / tau * ((v_leak - v) + r I)``, i.e. ``v <- beta v + (1 -
  beta) (v_leak + r I)`` with ``beta = 1 - dt / tau``: snnTorch's ``Leaky`` exports ``tau = dt /
  (1 - beta)`` and ``r = tau / dt`` (with its own ``dt = 1e-4`` s), so importing with that same
  ``dt`` gives ``v <- beta v + I``, its update exactly. sinabs' ``LIF`` decays with ``exp(-dt /
  tau)``: use ``method="exact"`` (its input is not multiplied by ``1 - beta`` either, so ``r``
  must be ``tau / dt`` as well).
* **IF.** ``dv/dt = r I`` has no time constant, so ``dt`` scales the input: one step adds ``dt r
  I``. sinabs' ``IAF`` (exported with ``r = 1``) adds ``I`` per step, i.e. it is NIR's IF with
  ``dt = 1 s``.
* **Threshold and reset.** A spike is emitted when ``v > v_threshold`` (strictly, as in NIR,
  snnTorch and ``Threshold``; sinabs and the ``rate`` scheme use ``>=``: values exactly at the
  threshold differ). NIR 1.0 resets by subtraction, ``v <- v - v_threshold`` (sinabs'
  ``MembraneSubtract``, snnTorch's ``reset_mechanism="subtract"``); NIR 1.1 nodes carry
  ``v_reset`` and reset to it (snnTorch's ``"zero"``). ``reset="auto"`` follows the node;
  ``reset="subtract"`` or ``"value"`` overrides it (snnTorch exports ``v_reset = 0`` even for its
  default subtracting neurons).
* **Latency.** Within one step the discrete frameworks pass a signal through the whole
  feed-forward network; in Brian2 a spike reaches its target's integration one step later. The
  population of a node ``k`` stateful nodes deep therefore starts its window ``k`` steps after
  the input, and ``result.spikes`` counts steps from each window's start: step ``s`` there is the
  framework's step ``s``. snnTorch's default ``reset_delay=True`` applies a reset one step late
  (not NIR's dynamics); export with ``reset_delay=False`` for step-exact agreement.
* **State** starts at 0 for every input sample (``v``, synaptic currents).

>>> import brianconv.nir
>>> "LIF" in brianconv.nir.SUPPORTED and "Conv2d" in brianconv.nir.SUPPORTED
True
"""

from ..errors import MissingExtraError
from .importer import SUPPORTED
from .network import NIRNetwork

__all__ = ["from_nir", "to_nir", "SUPPORTED", "NIRNetwork", "require_nir", "MissingExtraError"]


def require_nir():
    """Import and return the :mod:`nir` package, or raise a clear error naming the extra."""
    try:
        import nir
    except ImportError as exc:
        raise MissingExtraError("The NIR bridge needs the 'nir' package: pip install brianconv[nir]") from exc
    return nir


def from_nir(graph_or_path, dt, steps=None, v_unit=None, method="euler", reset="auto", input_shape=None):
    """Import a NIR graph as a network simulated by brianconv.

    Parameters
    ----------
    graph_or_path : nir.NIRGraph or str or Path
        The graph, or a file written by ``nir.write``.
    dt : brian2.Quantity
        Time step (seconds). Use the ``dt`` the graph was written for (snnTorch and Norse:
        ``1e-4 * second``; sinabs' IAF: ``1 * second``); see the module docstring.
    steps : int, optional
        Default number of steps per input for :meth:`NIRNetwork.simulate`.
    v_unit : brian2.Quantity, optional
        Volts per NIR voltage unit (default 1 mV).
    method : {"euler", "exact"}
        Integration of the neuron ODEs during a step (input held constant).
    reset : {"auto", "subtract", "value"}
        ``auto``: reset to the node's ``v_reset`` if it has one (NIR >= 1.1), else subtract the
        threshold (NIR 1.0).
    input_shape : tuple, optional
        Shape of one input sample, when the Input node's shape includes batch or time axes that
        cannot be told apart.

    Returns
    -------
    NIRNetwork

    Raises
    ------
    brianconv.errors.ConversionError
        For node types with no brianconv equivalent (named) and graphs it cannot wire.
    """
    from brian2 import mV

    nir = require_nir()
    graph = nir.read(graph_or_path) if isinstance(graph_or_path, (str, bytes)) or hasattr(graph_or_path, "__fspath__") \
        else graph_or_path
    options = dict(dt=dt, v_unit=v_unit if v_unit is not None else 1 * mV, method=method, reset=reset,
                   input_shape=input_shape)
    return NIRNetwork(graph, steps=steps, **options)


def to_nir(snn):
    """The ``nir.NIRGraph`` of a network converted with the ``rate`` scheme (see :mod:`.exporter`)."""
    from .exporter import export

    return export(snn, require_nir())
