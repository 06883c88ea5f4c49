"""The network description: what a coding scheme produces and the builder turns into Brian2.

A description is plain data: populations (size, equation strings, threshold, reset, values),
projections (index arrays, weights, ``on_pre`` code) and a time axis. Nothing here imports
Brian2's devices; :mod:`brianconv.builder` does that. Keeping the description separate means it
can be printed, saved (``brianconv convert``), hashed for the build cache and inspected in tests.

Time axis
---------
Time runs in integer steps of ``dt``. Image ``n`` of a batch enters the input population at
step ``n * period_steps``. Every population has a ``window_start``: the step at which its
window for image 0 begins, so its window for image ``n`` is
``[window_start + n * period_steps, window_start + (n + 1) * period_steps)``. All spikes a
population emits for image ``n`` fall inside that window, which is how spike counts are
attributed to images. Each population gets the shared variables ``window_start``,
``period_steps``, ``local_step`` (the step inside its current window) and ``started`` (1 once its
first window has begun); see :data:`TIME_AXIS_EQUATIONS`.
"""

import contextlib
import contextvars
import dataclasses
import hashlib
import json
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum

import numpy as np
from brian2 import Quantity, second

__all__ = ["Population", "Projection", "NetworkDescription", "Kind", "Membrane", "SpikeSchedule", "TIME_AXIS_EQUATIONS"]

#: Shared time-axis variables added to every population's equations (integers, no units):
#: ``window_start`` (step where this population's window for image 0 begins),
#: ``period_steps`` (steps between images), ``local_step`` (0 ... period_steps - 1 inside
#: the current window) and ``started`` (0 before the first window, then 1).
TIME_AXIS_EQUATIONS = """
window_start : integer (constant, shared)
period_steps : integer (constant, shared)
local_step = (t_in_timesteps - window_start) % period_steps : integer (shared)
started = int(t_in_timesteps >= window_start) : integer (shared)
"""


@dataclass(frozen=True)
class SpikeSchedule:
    """A population whose neurons fire at a step computed in advance (closed-form spike times).

    Within local steps ``first <= local_step < last`` of each window the population's threshold is
    true exactly where ``local_step == variable`` (besides conditions shared by all its neurons), and
    nothing writes ``variable`` in those steps. C++ standalone builds then sort the neurons by their
    step once per window instead of testing every neuron at every step
    (:func:`brianconv.builder.generated.scheduled_thresholds`); the spikes are the same, in the same
    order. The runtime device ignores it and tests the threshold as written.

    Attributes
    ----------
    variable : str
        Integer per-neuron variable: the local step of the neuron's spike (outside the range: none).
    first, last : str
        Shared integer expressions of the population's variables (e.g. ``"T_steps"``): the steps
        of the window in which the schedule holds.
    """

    variable: str
    first: str
    last: str


@dataclass(frozen=True)
class Membrane:
    """What a population's neurons are, for the perturbation knobs (:mod:`brianconv.perturbations`).

    A scheme sets it on the populations of spiking neurons that a biophysical perturbation can act
    on (not on inputs, readouts, gates or helper neurons).

    Attributes
    ----------
    variable : str
        The membrane potential (volts).
    threshold : str or None
        The variable the firing condition compares ``variable`` with (volts, shared or per neuron);
        None where the threshold is a constant (e.g. 0 V).
    reference : brian2.Quantity or None
        The voltage that relative knobs (``sigma_v`` given as a plain number) scale, where
        ``threshold`` is None.
    integrates : bool
        True when the membrane keeps its value from one step to the next (a leak acts on it);
        False for memoryless threshold gates cleared every step.
    """

    variable: str = "v"
    threshold: str = None
    reference: object = None
    integrates: bool = True

class Kind(str, Enum):
    """What a population computes, so that schemes and tools need not read its equations or values.

    ``INPUT``: the stimulus; ``NEURON``: the neurons of a hidden layer (one or more per ANN unit);
    ``SUM``: those of a residual sum where a scheme treats them apart; ``MAXPOOL``: a spiking
    max-pool; ``OUTPUT``: the output layer; ``TICK`` and ``BIAS``: tdsnn's ticking and bias
    neurons; ``DENDRITE``: an amos dendrite (relays a unit's summed input); ``UNITS``: the
    McCulloch-Pitts neurons of amos units (each evaluates at its own ``lag``).
    """

    INPUT = "input"
    NEURON = "neuron"
    SUM = "sum"
    MAXPOOL = "maxpool"
    OUTPUT = "output"
    TICK = "tick"
    BIAS = "bias"
    DENDRITE = "dendrite"
    UNITS = "units"


class _DefaultsForLaterFields:
    """Unpickling gives fields added since a network was saved (a population's ``regular``,
    ``refractory``, ``membrane``, ``kind``; a projection's ``namespace``, ``before_run``; a description's
    ``perturbations``) their defaults, so every reader can use the attributes directly.

    Brian2 functions in a ``namespace`` (the counter-based draws) cannot be pickled: they are
    saved as the module and name they are defined under, and looked up again when loaded.
    """

    def __getstate__(self):
        state = dict(self.__dict__)
        if state.get("namespace"):
            state["namespace"] = {key: _FunctionReference.of(value) for key, value in state["namespace"].items()}
        return state

    def __setstate__(self, state):
        for f in fields(self):
            if f.name not in state:
                state[f.name] = f.default_factory() if f.default is MISSING else f.default
        if state.get("namespace"):
            state["namespace"] = {key: value.resolve() if isinstance(value, _FunctionReference) else value
                                  for key, value in state["namespace"].items()}
        self.__dict__.update(state)


@dataclass(frozen=True)
class _FunctionReference:
    """A module-level Brian2 ``Function`` by its module and name (what a pickle stores instead)."""

    module: str
    name: str

    @classmethod
    def of(cls, value):
        """The reference of ``value`` if it is a Brian2 function defined in a module, else ``value``."""
        python = getattr(value, "pyfunc", None)
        if python is None or getattr(value, "implementations", None) is None:
            return value
        python = getattr(python, "_orig_func", python)  # under Brian2's check_units wrapper
        return cls(python.__module__, python.__name__)

    def resolve(self):
        import importlib

        return getattr(importlib.import_module(self.module), self.name)


@dataclass
class Population(_DefaultsForLaterFields):
    """A group of neurons: becomes one ``brian2.NeuronGroup``.

    Attributes
    ----------
    name : str
        Unique, a valid Python identifier (also the Brian2 object's name).
    size : int
        Number of neurons.
    equations : str
        Brian2 model equations (the time axis of :data:`TIME_AXIS_EQUATIONS` is added by the builder).
    threshold, reset : str or None
        Brian2 threshold condition and reset code.
    events : dict
        Custom events ``name -> (condition, code)`` or ``name -> (condition, code, slot)``: the
        condition is tested in the ``thresholds`` slot and the code runs in ``slot`` (a Brian2
        schedule slot, ``before_synapses`` by default).
    values : dict
        Initial values ``variable -> scalar or array`` (Brian2 quantities where the variable has units).
    window_start : int
        Step at which the window for image 0 begins (see the module docstring).
    layer : str or None
        The :class:`~brianconv.graph.Layer` it represents.
    shape : tuple
        Shape of the layer's output, for plots (neurons ordered as ``reshape(-1)``).
    role : str
        ``"input"``, ``"hidden"``, ``"output"`` or ``"helper"``.
    method : str
        Brian2 integration method.
    namespace : dict
        External constants and functions used in the equations.
    membrane : Membrane or None
        Set on spiking neurons that biophysical perturbations act on.
    regular : dict
        Code run every step, ``name -> (code, slot)`` (Brian2 ``run_regularly``).
    refractory : str or None
        Brian2 refractoriness (an expression giving the refractory period).
    kind : Kind or None
        What the population computes (:class:`Kind`; None where a scheme does not say).
    spike_schedule : SpikeSchedule or None
        Set where the threshold compares the step with a spike step computed in advance.
    """

    name: str
    size: int
    equations: str
    threshold: str = None
    reset: str = None
    events: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    window_start: int = 0
    layer: str = None
    shape: tuple = None
    role: str = "hidden"
    method: str = "euler"
    namespace: dict = field(default_factory=dict)
    membrane: Membrane = None
    regular: dict = field(default_factory=dict)
    refractory: str = None
    kind: Kind = None
    spike_schedule: SpikeSchedule = None

    @property
    def full_equations(self):
        return TIME_AXIS_EQUATIONS + self.equations


@dataclass
class Projection(_DefaultsForLaterFields):
    """Synapses from one population to another: becomes one ``brian2.Synapses``.

    Attributes
    ----------
    name, source, target : str
        Projection name and the names of the source and target populations.
    connections : brianconv.connectivity.Connections
        Index arrays and weights.
    model : str
        Synaptic equations; the weight variable is ``w``.
    on_pre : str
        Code run for every synapse of a spiking source neuron.
    weight_unit : brian2.Quantity or float
        Unit multiplying ``connections.weight`` when it is stored in ``w``.
    delay_steps : int or np.ndarray
        Transmission delay in steps (0: effect in the same step, read by the target one step later):
        one for all synapses, or one per synapse (int array in the order of ``connections``).
    namespace : dict
        External functions used in ``on_pre`` (perturbed networks).
    before_run : tuple
        ``(variable, expression)`` pairs assigned on the synapses, in order, before every run and
        after the run-time values are set (``sigma_delay``'s jitter: perturbed networks). A
        projection with them stores its delays per synapse, reset to ``delay_steps`` first.
    """

    name: str
    source: str
    target: str
    connections: object
    model: str = "w : 1 (constant)"
    on_pre: str = ""
    weight_unit: object = 1.0
    delay_steps: int = 0
    namespace: dict = field(default_factory=dict)
    before_run: tuple = ()

    def __post_init__(self):
        self.connections = stored_weights(self.connections)

    @property
    def n_synapses(self):
        return len(self.connections)


#: The dtype projections made inside :func:`weights_stored_as` store their weights in (None: as given).
_STORED_WEIGHT_DTYPE = contextvars.ContextVar("stored_weight_dtype", default=None)


def stored_weights(connections):
    """``connections`` with its weights in the dtype of :func:`weights_stored_as` (the same object when
    they are already, or outside it). A scheme that keeps its final weights before it makes their
    projections calls it early, so that it never holds them in float64 all at once."""
    dtype = _STORED_WEIGHT_DTYPE.get()
    if dtype is None or connections.weight.dtype == dtype:
        return connections
    return dataclasses.replace(connections, weight=connections.weight.astype(dtype))  # rounded once


@contextlib.contextmanager
def weights_stored_as(dtype):
    """Every :class:`Projection` created inside keeps ``connections.weight`` as ``dtype`` (None: as
    given): a float32 network holds 4 bytes per weight from the moment each projection exists, so
    that converting it never holds all of its weights in float64."""
    token = _STORED_WEIGHT_DTYPE.set(None if dtype is None else np.dtype(dtype))
    try:
        yield
    finally:
        _STORED_WEIGHT_DTYPE.reset(token)


@dataclass
class NetworkDescription(_DefaultsForLaterFields):
    """Everything needed to build and read a converted network.

    Attributes
    ----------
    scheme : str
        Name of the coding scheme that produced it.
    populations, projections : list
        :class:`Population` and :class:`Projection` objects; the first population is the input.
    dt : brian2.Quantity
        Simulation time step.
    period_steps : int
        Steps between two images (the image period).
    input_population, output_population : str
        Where the stimulus enters (through the TimedArray ``stimulus(t, i)`` of shape
        ``(batch + 1, n_inputs)``, read at ``image * period_steps * dt``) and where the result is read.
    output_variable : str
        Output variable recorded at every step (``when='end'``).
    output_unit : brian2.Quantity or float
        Dividing the recorded variable by this gives values in ANN units.
    readout_step : int or None
        Step inside the output window at which the decoded output is final (None: every step).
    state : brianconv.schemes.options.SchemeState or None
        What the scheme needs after :meth:`~brianconv.schemes.Scheme.describe` to set up runs and
        decode spikes: a frozen dataclass of the scheme's (e.g. ``TTFSState``) holding the options
        used, the calibrated ``scales`` and the scheme's own fields. Not part of :meth:`fingerprint`
        (populations and projections hold everything that is compiled).
    perturbations : tuple
        The perturbation knobs compiled into the equations (:mod:`brianconv.perturbations`).
    precision : str
        Storage of floating-point state variables and weights in the built network: ``"float64"``
        (default) or ``"float32"`` (Brian2's ``core.default_float_dtype``; half the weight memory,
        rounding of about 6e-8 relative instead of 1e-16; see :func:`brianconv.convert`).

    Run-time parameters are not stored here: the scheme's
    :meth:`~brianconv.schemes.Scheme.setup` turns them into the values of one run
    (:class:`~brianconv.schemes.RunSetup`).
    """

    scheme: str
    populations: list
    projections: list
    dt: Quantity
    period_steps: int
    input_population: str
    output_population: str
    output_variable: str = "v"
    output_unit: object = 1.0
    readout_step: int = None
    state: object = None
    perturbations: tuple = ()
    precision: str = "float64"

    def population(self, name):
        for population in self.populations:
            if population.name == name:
                return population
        raise KeyError(f"No population {name!r}; populations: {[p.name for p in self.populations]}")

    @property
    def n_inputs(self):
        return self.population(self.input_population).size

    @property
    def n_outputs(self):
        return self.population(self.output_population).size

    @property
    def depth_steps(self):
        """Steps from the first image's start to the end of the last population's first window."""
        return max(p.window_start for p in self.populations) + self.period_steps

    def duration_steps(self, batch_size):
        """Steps needed to simulate ``batch_size`` images one after the other."""
        return self.depth_steps + (batch_size - 1) * self.period_steps

    @property
    def n_neurons(self):
        return sum(p.size for p in self.populations)

    @property
    def n_synapses(self):
        return sum(p.n_synapses for p in self.projections)

    def fan_out(self):
        """Outgoing synapses per neuron, ``population name -> int array (size,)`` (all projections)."""
        counts = {p.name: np.zeros(p.size, dtype=np.int64) for p in self.populations}
        for projection in self.projections:
            counts[projection.source] += projection.connections.fan_out()
        return counts

    def fingerprint(self, batch_size):
        """A hash of everything that changes the compiled program (for the build cache)."""
        digest = hashlib.sha256()
        header = dict(scheme=self.scheme, dt=float(self.dt / second), period=self.period_steps,
                      batch=batch_size, inp=self.input_population, out=self.output_population,
                      var=self.output_variable)
        if self.precision != "float64":  # float64 descriptions keep the fingerprints they always had
            header["precision"] = self.precision
        digest.update(json.dumps(header, sort_keys=True).encode())
        for p in self.populations:
            digest.update(repr((p.name, p.size, p.equations, p.threshold, p.reset, sorted(p.events.items()),
                                p.window_start, p.method, sorted(p.namespace))).encode())
            if p.regular or p.refractory:  # only perturbed networks have these (unchanged fingerprints otherwise)
                digest.update(repr((sorted(p.regular.items()), p.refractory)).encode())
            if p.spike_schedule is not None:  # the standalone build sorts these neurons by spike step
                digest.update(repr(p.spike_schedule).encode())
            for key in sorted(p.values):
                digest.update(key.encode() + _bytes(p.values[key]))
        for q in self.projections:
            delay = q.delay_steps if np.isscalar(q.delay_steps) else "per synapse"
            digest.update(repr((q.name, q.source, q.target, q.model, q.on_pre, str(q.weight_unit),
                                delay)).encode())
            arrays = (q.connections.pre, q.connections.post, q.connections.weight)
            for array in arrays if np.isscalar(q.delay_steps) else arrays + (np.asarray(q.delay_steps, np.int64),):
                digest.update(np.ascontiguousarray(array).data)  # the same bytes, without a copy
            if q.before_run:  # only perturbed networks have these (unchanged fingerprints otherwise)
                digest.update(repr(q.before_run).encode())
        return digest.hexdigest()[:24]

    def summary(self):
        """A table of populations and projections (sizes, windows, synapses)."""
        lines = [f"{self.scheme} network: {self.n_neurons} neurons, {self.n_synapses} synapses, "
                 f"dt = {self.dt}, image period = {self.period_steps} steps"]
        for p in self.populations:
            lines.append(f"  population {p.name:<16} {p.size:>8} neurons  {p.role:<7} "
                         f"window starts at step {p.window_start}")
        for q in self.projections:
            lines.append(f"  projection {q.name:<16} {q.source} -> {q.target}: {q.n_synapses} synapses")
        return "\n".join(lines)


def _bytes(value):
    if isinstance(value, Quantity):
        return np.asarray(value).tobytes() + repr(value.dim).encode()
    return np.asarray(value).tobytes()
