"""An imported NIR graph as a network that :class:`~brianconv.simulation.SpikingNetwork` simulates.

:class:`NIRScheme` plays the part of a coding scheme (``describe``, ``setup``, the default
``decode``) for one number of steps; :class:`NIRNetwork` keeps one compiled
:class:`~brianconv.simulation.SpikingNetwork` per ``(steps, input form)``, so a network is
compiled once per image period and re-run with new inputs through ``run_args``.
"""

from dataclasses import dataclass

import numpy as np

from ..calibration import Calibration
from ..description import NetworkDescription
from ..errors import InvalidValueError, ShapeError
from ..schemes.base import RunSetup, Scheme
from ..schemes.options import Options, v_unit_option
from ..simulation import SpikingNetwork
from .importer import check_dt, check_steps, check_voltage, describe_graph

__all__ = ["NIRScheme", "NIRNetwork"]


@dataclass(frozen=True)
class NIROptions(Options):
    """Options of an imported NIR graph (see :func:`brianconv.nir.from_nir`)."""

    dt: object = None
    steps: int = 1
    frames: int = 1
    v_unit: object = v_unit_option()
    method: str = "euler"
    reset: str = "auto"
    input_shape: tuple = None

    def validate(self):
        check_dt(self.dt)
        check_steps(self.steps)
        check_voltage(self.v_unit)
        if self.frames not in (1, self.steps):
            raise InvalidValueError(f"frames must be 1 (input held) or steps={self.steps}, got {self.frames!r}.")
        if self.method not in ("euler", "exact"):
            raise InvalidValueError(f"method must be 'euler' (beta = 1 - dt/tau, like snnTorch and Norse) or "
                                    f"'exact' (beta = exp(-dt/tau), like sinabs), got {self.method!r}.")
        if self.reset not in ("auto", "subtract", "value"):
            raise InvalidValueError(f"reset must be 'auto' (the node's v_reset if it has one, else subtraction), "
                                    f"'subtract' or 'value', got {self.reset!r}.")


class NIRScheme(Scheme):
    """The "scheme" of an imported NIR graph: NIR's equations, no code to decode.

    Options: ``dt``, ``steps``, ``frames``, ``v_unit``, ``method``, ``reset``, ``input_shape``
    (see :func:`brianconv.nir.from_nir`). Not registered: it is built by ``from_nir`` only.
    """

    name = "nir"
    Options = NIROptions

    def __init__(self, graph, **options):
        self.graph = graph
        super().__init__(**options)

    def check(self, graph):
        """Checked while describing (unsupported nodes raise ConversionError)."""

    def describe(self, graph=None, calibration=None):
        return describe_graph(self.graph, self.options)

    def setup(self, description, **parameters):
        if parameters:
            raise InvalidValueError(f"An imported NIR network has no run-time parameters; got {sorted(parameters)}. "
                                    "Its only run option is steps=.")
        starts = {p.name: p.window_start for p in description.populations}
        return RunSetup({}, starts, readout_step=description.period_steps - 1,
                        parameters=dict(steps=description.period_steps, frames=self.options.frames))


class _Inputs:
    """What :class:`SpikingNetwork` needs from a layer graph: input checks and (absent) ANN outputs."""

    def __init__(self, n_values, n_outputs):
        self.n_values = n_values
        self.n_outputs = n_outputs

    def check_input(self, x):
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if x.shape[1] != self.n_values:
            raise ShapeError(f"Input rows have {x.shape[1]} values; expected {self.n_values}.")
        if not np.all(np.isfinite(x)):
            raise InvalidValueError("Input holds NaN/Inf values.")
        return x

    def forward(self, x, record=False, chunk=256):
        """There is no ANN: NaN outputs (``result.ann_outputs``)."""
        return np.full((len(x), self.n_outputs), np.nan)


class NIRNetwork:
    """A NIR graph imported into brianconv (see :func:`brianconv.nir.from_nir`).

    Attributes
    ----------
    graph : nir.NIRGraph
    options : dict
        The import options (``dt``, ``v_unit``, ``method``, ``reset``, ``input_shape``).
    input_shape : tuple
        Shape of one input sample (one frame).
    """

    def __init__(self, graph, steps=None, **options):
        self.graph = graph
        self.options = options
        self.default_steps = steps
        self._networks = {}
        probe = self.network(1, 1)  # checks the graph now: unsupported nodes raise here
        self.input_shape = tuple(probe.description.population(probe.description.input_population).shape)

    def __repr__(self):
        return f"<NIRNetwork {len(self.graph.nodes)} nodes, input shape {self.input_shape}>"

    def network(self, steps, frames=1):
        """The :class:`SpikingNetwork` for ``steps`` steps per input (built once, then reused)."""
        check_steps(steps)
        key = (int(steps), int(frames))
        if key not in self._networks:
            scheme = NIRScheme(self.graph, steps=int(steps), frames=int(frames), **self.options)
            description = scheme.describe()
            n_values = description.n_inputs * int(frames)
            description = _framed(description, int(frames))
            inputs = _Inputs(n_values, description.n_outputs)
            self._networks[key] = SpikingNetwork(inputs, scheme, Calibration({}, 100.0, 0), description)
        return self._networks[key]

    @property
    def description(self):
        """The network description for the default number of steps (for inspection)."""
        return self.network(self.default_steps or 1).description

    @property
    def population_names(self):
        """``NIR node name -> population name`` for the nodes that have a population (Brian2-safe names)."""
        return {p.layer: p.name for p in self.description.populations}

    def simulate(self, x, steps=None, device="cpp_standalone", **kwargs):
        """Simulate inputs ``x`` for ``steps`` steps each.

        Parameters
        ----------
        x : array or tensor, shape (N, *input_shape) or (N, T, *input_shape)
            One sample held for ``steps`` steps, or ``T`` frames, one per step (then ``steps``
            is ``T``).
        steps : int, optional
            Steps per sample (default: the ``steps`` given to ``from_nir``, or ``T``).
        device : {"cpp_standalone", "runtime", "cython", "numpy"}
        **kwargs
            Passed to :meth:`SpikingNetwork.simulate` (``spikes=``, ``states=``, ``trace=``,
            ``labels=``, ``batch_size=``, ``n_workers=``, ``build_root=``).

        Returns
        -------
        SimulationResult
            ``outputs``: the signal reaching the Output node summed over the ``steps`` (spike
            counts, through any Affine on the way) or, for an LI/I/CubaLI output, its ``v`` (NIR
            units) after the last step; ``spike_counts[name]`` per population (named after the
            NIR nodes); ``ann_outputs`` is NaN (there is no ANN).
        """
        x = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
        features = int(np.prod(self.input_shape))
        if x.ndim >= 2 and int(np.prod(x.shape[1:])) == features:
            frames = 1
            steps = steps or self.default_steps
            if steps is None:
                raise InvalidValueError("Pass steps= (the number of steps each input is held), or frames "
                                        "(N, T, *input_shape).")
        elif x.ndim >= 3 and int(np.prod(x.shape[2:])) == features:
            frames = x.shape[1]
            if steps not in (None, frames):
                raise InvalidValueError(f"x holds {frames} frames per sample; steps={steps} must be {frames} or None.")
            steps = frames
        else:
            raise ShapeError(f"x has shape {x.shape}; expected (N, {', '.join(map(str, self.input_shape))}) or "
                             f"(N, T, {', '.join(map(str, self.input_shape))}).")
        return self.network(steps, frames).simulate(x.reshape(len(x), -1), device=device, **kwargs)


def _framed(description, frames):
    """``description`` whose stimulus rows hold ``frames`` frames (``frames * n_inputs`` values)."""
    if frames == 1:
        return description
    framed = _FramedDescription(**{k: getattr(description, k) for k in description.__dataclass_fields__})
    framed.frames = frames
    return framed


class _FramedDescription(NetworkDescription):
    """A description whose stimulus row holds ``frames`` frames of the input population.

    The builder sizes the stimulus ``TimedArray`` by :attr:`n_inputs`; the input population
    reads frame ``local_step`` of its row (:data:`~brianconv.nir.equations.INPUT_EQUATIONS`).
    """

    frames = 1

    @property
    def n_inputs(self):
        return self.population(self.input_population).size * self.frames

    def fingerprint(self, batch_size):
        return super().fingerprint(batch_size) + f"f{self.frames}"
