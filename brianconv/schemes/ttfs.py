"""Scheme ``"ttfs"``: the two-stage time-to-first-spike neuron with a charging current.

(Longer than the ~400 lines of a module: 71 of its 520 lines are this docstring, the model with its equations,
next to the equation table and the code that uses them; the code itself is 449 lines.)

After López-Randulfe, Reeb and Knoll, *Conversion of ConvNets to spiking neural networks with
less than one spike per neuron* (2022).

Code
----
A value ``x`` in ``[0, x_max]`` is one spike at ``t(x) = t_max / x_max * (x_max - x)`` (Eq. 1);
zero is no spike. Time is discrete: ``T = t_max / dt`` steps; a value is sent as the integer
``q = round(x / x_max * T)`` and the spike comes at step ``T - q`` of the sender's window.

Neuron (Eqs. 2-4)
-----------------
Each layer has a *silent stage* of ``T`` steps: every input spike switches on a constant
current ``W_ij * v_th_j / t_max`` (``v_th_j`` the sender's threshold, i.e. its activation scale
in volts), and the bias is a constant current ``b_i * v_unit / t_max``. At the end of the stage
``u_i = v_unit * (sum_j W_ij a_j + b_i)``: the ANN pre-activation in volts (``v_unit`` volts per
ANN unit, 1 mV by default). In the following *spiking stage* the input current is off and the
charging current ``I_ext = v_th / t_max`` drives ``u`` to the threshold; the neuron fires once,
after ``m = ceil(T (1 - u / v_th) - 1/2)`` steps, which encodes ``u / v_th`` rounded to the
nearest step with the input's code. ``u <= 0`` never reaches the threshold in time: that is the
ReLU, and the silence. ``v_th = lambda * v_unit`` where ``lambda`` is the layer's activation
scale from calibration, so values above ``lambda`` are clipped to the top of the code.
One layer's spiking stage is the next layer's silent stage.

Integration
-----------
``integration="clock"`` (default) integrates the equations above at every step, so a recorded
``v`` shows the two ramps of the paper's figure. ``integration="event"`` computes the same spikes
with work only where something happens: the silent stage's currents are constant, so an input
spike at local step ``k`` adds at once the charge its current will have delivered by the end of
the stage, ``W_ij v_th_j (T - k) / T``, and the bias adds ``b_i v_unit`` when the window opens; at
the end of the silent stage each neuron computes once the step ``T + m`` at which the charging
ramp reaches the threshold, and the threshold test is an integer comparison with it. Nothing is
integrated per step (no state updater); ``v`` holds the potential the silent stage ends on.
The two agree spike for spike except where ``u`` lies within rounding error of a half step.

Residual sums and concatenation
-------------------------------
A sum ``add(a, b)`` is a layer of two-stage neurons whose ``W`` is the identity: each term's
spikes switch on the current ``v_th_source / t_max`` (the sender's threshold, as for any layer),
the bias is 0, and the spiking stage re-encodes the sum with the sum's own scale; its error is
half a step of its code, ``lambda_add / (2 T)``, like any layer's. A concatenation has no
neurons: a layer reading it receives one projection per branch. A layer's window starts where
its latest input's output window starts; an input that sends earlier (a skip connection over
``k`` two-stage layers sends ``k T`` steps earlier) reaches it through synapses delayed by the
difference, so every input spike arrives in the reader's silent stage at the local step it
would from a single source. In a ResNet block the block's last Linear/Conv2d has no activation and
only the sum reads it (:func:`~.projections.folds_into_reader`, also a projection shortcut): it gets no
neurons; the sum receives its input projections composed with its weights (spikes carry their
sender's threshold, so the ANN weights need no normalisation) and its bias, and the delays align
the folded term's sources like any other term's. Delays are built for ``t_max``, so a network with skip connections
runs only at its built ``t_max``.

Clipped ReLU
------------
Values above ``lambda`` are clipped to the top of the code, so a ``clipped_relu`` layer (ReLU6,
``hardtanh(0, a)``) with ``lambda = a`` represents the clip exactly. The calibrated percentile
never exceeds ``a`` (the ANN clipped the values already) and is kept where it lies below ``a``
(:func:`~brianconv.schemes.base.limit_scales_to_clips`), as for any layer.

Max-pooling: the earliest spike in the window wins (a pool neuron fires one step after its
first input spike, once). Average pooling is linear and folded into the next projection.
The output layer only integrates: its membrane potential at the end of its silent stage,
divided by ``v_unit``, is the ANN logit (quantised), and the prediction is its argmax.

Time axis
---------
With ``pipeline=True`` (default) a new image enters every ``2 T`` steps: each layer is busy
with one image's silent and spiking stage while the others work on earlier/later images. With
``pipeline=False`` an image passes through all layers before the next enters.
"""

import warnings
from dataclasses import dataclass

import numpy as np
from brian2 import ms

from ..calibration import activation_scale, calibrate
from ..description import Kind, Membrane, NetworkDescription, Population, Projection, SpikeSchedule, stored_weights
from ..errors import AccuracyWarning, ConversionError, InvalidValueError
from .base import RunSetup, Scheme, check_branch_activations, limit_scales_to_clips, register
from .options import Options, SchemeState, dt_option, option, percentile_option, positive_number, v_unit_option
from .projections import FOLDED_OPS, folds_into_reader, incoming_projections, merged_by_source, population_names

__all__ = ["TTFS", "INPUT_EQUATIONS", "NEURON_EQUATIONS", "OUTPUT_EQUATIONS", "MAXPOOL_EQUATIONS",
           "NEURON_EVENT_EQUATIONS", "OUTPUT_EVENT_EQUATIONS", "MAXPOOL_EVENT_EQUATIONS"]

#: Shared by every TTFS population: the stage length in steps and the scale of the values it sends.
_COMMON = """
T_steps : integer (constant, shared)  # t_max in steps of dt
t_max = T_steps * dt : second (shared)
v_th : volt (constant, shared)        # threshold = activation scale lambda * v_unit
"""

#: Input neurons: pixel ``x`` of the current image (from the TimedArray ``stimulus``) becomes one
#: spike at step ``T - q`` of the window, ``q = round(x / x_max * T)``; ``x = 0`` sends no spike.
#: The shared test ``local_step < T_steps`` (implied by the others) comes first: Brian2 hoists it, and
#: C++ standalone builds skip the neuron loop in the other steps (:mod:`brianconv.builder.generated`).
INPUT_EQUATIONS = _COMMON + """
image = (t_in_timesteps - window_start) // period_steps : integer (shared)
x = stimulus(image * period_steps * dt, i) : 1    # input value, in [0, x_max]
q = clip(int(x / x_max * T_steps + 0.5), 0, T_steps) : integer
x_max : 1 (constant, shared)
"""
INPUT_THRESHOLD = "started == 1 and local_step < T_steps and local_step == T_steps - q and q > 0"

#: Two-stage neuron. Silent stage: steps 1..T of the window integrate the input and bias
#: currents. Spiking stage: steps T+1..2T integrate the charging current ``v_th / t_max``
#: until the single spike. ``I_syn`` (V/s) is the summed current of the inputs that have spiked.
NEURON_EQUATIONS = _COMMON + """
dv/dt = started * (silent * (I_syn + I_bias) + spiking * (1 - fired) * v_th / t_max) : volt
silent = int(local_step >= 1 and local_step <= T_steps) : integer (shared)
spiking = int(local_step > T_steps and local_step <= 2 * T_steps) : integer (shared)
I_syn : volt / second                 # input current: sum of W_ij * v_th_j / t_max over spiked inputs
I_bias = b * v_unit / t_max : volt / second
b : 1 (constant)                      # the ANN bias
fired : 1                             # 1 once the neuron has spiked in this window
"""
#: Fire once in the spiking stage when ``v`` reaches the threshold (less half a step of the
#: charging ramp, so that the spike time rounds rather than truncates).
NEURON_THRESHOLD = ("started == 1 and local_step >= T_steps and local_step < 2 * T_steps and fired == 0 "
                    "and v >= v_th * (1 - 0.5 / T_steps)")
NEURON_RESET = "v = 0 * volt\nfired = 1"
WINDOW_START = "started == 1 and local_step == 0"

#: Output neurons integrate the silent stage only; ``v / v_unit`` is the ANN output.
OUTPUT_EQUATIONS = _COMMON + """
dv/dt = started * silent * (I_syn + I_bias) : volt
silent = int(local_step >= 1 and local_step <= T_steps) : integer (shared)
I_syn : volt / second
I_bias = b * v_unit / t_max : volt / second
b : 1 (constant)
"""

#: Spiking max-pool: a pool neuron fires one step after the first spike in its window, once.
MAXPOOL_EQUATIONS = _COMMON + """
n_in : 1       # input spikes received in this window
fired : 1
"""
MAXPOOL_THRESHOLD = "started == 1 and n_in > 0 and fired == 0"

ON_PRE = "I_syn_post += w * v_th_pre / t_max_pre"

#: ``integration="event"``: hidden neuron. ``v`` is the potential at the end of the silent stage
#: implied by the inputs received so far; ``fire_step`` the local step of the window's spike.
NEURON_EVENT_EQUATIONS = _COMMON + """
v : volt                              # silent-stage potential: the charge the input currents deliver by its end
b : 1 (constant)                      # the ANN bias
fire_step : integer                   # local step of the spike (-1: none in this window)
ramp_steps = ceil(T_steps * (1 - v / v_th) - 0.5) : 1   # charging steps from v to the threshold (rounded)
"""
#: At the end of the silent stage (after the synapses of its last step): the spike step, if the
#: charging ramp reaches the threshold within the spiking stage (``ramp_steps < T``).
STAGE_END = "started == 1 and local_step == T_steps - 1"
SCHEDULE_SPIKE = "fire_step = int(ramp_steps < T_steps) * (T_steps + int(clip(ramp_steps, 0, T_steps)) + 1) - 1"
#: ``integration="event"``: hidden and max-pool neurons fire at their scheduled step. The shared
#: test of the stage comes first: Brian2 hoists it out of the neuron loop, so in the other half of
#: the window no neuron's scheduled step is compared (same spikes, less threshold work).
#: A hidden neuron's step lies in its spiking stage (``T <= fire_step < 2 T``, or -1: none), a
#: max-pool's in its first ``T + 1`` steps (one step after an input spike of the source's
#: spiking stage; ``period_steps``: none).
FIRE_IN_SPIKING_STAGE = "started == 1 and local_step >= T_steps and local_step == fire_step"
FIRE_IN_POOL_WINDOW = "started == 1 and local_step <= T_steps and local_step == fire_step"
#: A hidden neuron's ``fire_step`` is written when its window opens and at the end of its silent
#: stage, never in the spiking stage: C++ standalone builds sort the neurons by it once per window.
SPIKING_STAGE_SCHEDULE = SpikeSchedule("fire_step", first="T_steps", last="2 * T_steps")

#: ``integration="event"``: output neuron, read at the end of its silent stage.
OUTPUT_EVENT_EQUATIONS = _COMMON + """
v : volt                              # silent-stage potential: the charge the input currents deliver by its end
b : 1 (constant)
"""

#: ``integration="event"``: a max-pool neuron fires one step after its first input spike.
MAXPOOL_EVENT_EQUATIONS = _COMMON + """
fire_step : integer                   # local step of the spike (period_steps: none yet)
"""
#: The earliest input wins: ``fire_step`` becomes the step after it (``clip`` is a minimum here).
MAXPOOL_EVENT_ON_PRE = "fire_step_post = clip(fire_step_post, 0, local_step_post + 1)"

#: ``integration="event"``: an input spike at local step ``k`` of the silent stage adds the charge
#: of its current ``w v_th_pre / t_max`` over the ``T - k`` steps left.
ON_PRE_EVENT = "v_post += w * v_th_pre * clip(T_steps_post - local_step_post, 0, T_steps_post) / T_steps_post"


@dataclass(frozen=True)
class TTFSOptions(Options):
    """Options of :class:`TTFS` (see its docstring)."""

    t_max: int = option(32, integer=True, minimum=1)
    dt: object = dt_option(0.1 * ms)
    percentile: float = percentile_option(99.9)
    threshold: str = option("percentile", choices=("percentile", "max", "search"))
    v_unit: object = v_unit_option()
    pipeline: bool = option(True, choices=(True, False))
    search_percentiles: tuple = (99.0, 99.5, 99.9, 99.99, 100.0)
    integration: str = option("clock", choices=("clock", "event"))

    def validate(self):
        for p in self.search_percentiles:
            percentile_option(p).metadata["rule"].checked(self.scheme, "search_percentiles", p)


@dataclass(frozen=True)
class TTFSState(SchemeState):
    """What :class:`TTFS` needs after ``describe``: the options and scales, the ``layout`` (``[(population,
    sources, kind)]`` in graph order, to place windows for another ``t_max``), the input layer's name and
    whether skip connections are ``delayed`` (then only the built ``t_max`` runs)."""

    layout: list
    input_layer: str
    delayed: bool


@register
class TTFS(Scheme):
    """Time-to-first-spike conversion with the two-stage neuron (at most one spike per neuron).

    Options
    -------
    t_max : int
        Stage length in steps of ``dt`` (the paper's ``t_max``); resolution ``x_max / t_max``.
    dt : brian2 time
        Simulation step (0.1 ms).
    percentile : float
        Percentile of the calibration activations that sets each layer's threshold
        ``v_th = lambda * v_unit`` (99.9; 100 = the maximum).
    threshold : {"percentile", "max", "search"}
        ``"search"`` picks, for each layer in turn, the percentile in ``search_percentiles`` that
        minimises the RMSE between that layer's quantised spiking value and the ANN (simulated
        exactly in numpy on the calibration data).
    v_unit : brian2 voltage
        Volts per ANN activation unit (1 mV).
    pipeline : bool
        Accept a new image every ``2 t_max`` steps (True) or one image at a time.
    integration : {"clock", "event"}
        Integrate the two-stage neuron at every step (``v`` traces show both ramps) or compute
        the same spikes event by event (faster; see the module docstring).
    """

    name = "ttfs"
    needs_nonnegative_input = True
    activations = frozenset({"relu", "clipped_relu"})
    ops = Scheme.ops | {"add", "cat"}
    folds_linear_layers = True
    Options = TTFSOptions

    # -- checks ----------------------------------------------------------------------------
    def check(self, graph):
        super().check(graph)
        self.check_pooling_and_output(graph)
        check_branch_activations(graph, self.name, input_non_negative=self.needs_nonnegative_input)
        for layer in graph:
            if layer.op == "maxpool" and graph[layer.inputs[0]].op == "cat":
                raise ConversionError(f"ttfs: max-pooling {layer.name!r} directly after a concatenation is not "
                                      "supported; max-pool each branch before concatenating.")

    # -- calibration -----------------------------------------------------------------------
    def calibrate(self, graph, x):
        """Activation scales: percentile, maximum or error-minimising search (see the options)."""
        percentile = 100.0 if self.options.threshold == "max" else self.options.percentile
        calibration = calibrate(graph, x, percentile)
        if self.options.threshold == "search":
            _search_scales(graph, x, calibration, int(self.options.t_max), self.options.search_percentiles)
        limit_scales_to_clips(graph, calibration)
        for name, fraction in calibration.clipped.items():
            if fraction > 0.01 and graph[name] is not graph.output and not folds_into_reader(graph, graph[name]):
                warnings.warn(f"ttfs: {100 * fraction:.1f} % of layer {name!r}'s calibration activations exceed its "
                              "threshold and will be clipped.", AccuracyWarning, stacklevel=3)
        _warn_coarse_code(graph, x, calibration, int(self.options.t_max))
        return calibration

    # -- description -----------------------------------------------------------------------
    def describe(self, graph, calibration):
        o = self.options
        T = int(o.t_max)
        v_unit = o.v_unit
        names = population_names(graph)
        populations, projections, layout = [], [], []
        x_max = calibration.scales[graph.input.name]
        populations.append(Population(
            names[graph.input.name], graph.input.size, INPUT_EQUATIONS, threshold=INPUT_THRESHOLD, reset="",
            values=dict(T_steps=T, x_max=x_max, v_th=x_max * v_unit), layer=graph.input.name,
            shape=graph.input.out_shape, role="input", kind=Kind.INPUT))
        layout.append((names[graph.input.name], (), "input"))
        readers = []
        for layer, incoming in incoming_projections(graph, names):
            name = names[layer.name]
            kind = "maxpool" if layer.op == "maxpool" else "output" if layer is graph.output else "neuron"
            scale = calibration.scales[layer.name] * v_unit
            population, on_pre = _layer_population(o.integration, kind, name, layer, scale, T, v_unit)
            populations.append(population)
            # the weights as the projections will store them (ttfs uses them unscaled)
            incoming = [(source, stored_weights(connections)) for source, connections in merged_by_source(incoming)]
            readers.append((name, kind, incoming, on_pre))
            layout.append((name, tuple(source for source, _ in incoming), kind))
        starts = _window_starts(layout, T)
        delays = _input_delays(layout, T)
        for name, kind, incoming, on_pre in readers:
            for source, connections in incoming:
                projections.append(Projection(f"{source}_to_{name}", source, name, connections,
                                              model="" if kind == "maxpool" else "w : 1 (constant)", on_pre=on_pre,
                                              delay_steps=delays[source, name]))
        for population in populations:
            population.window_start = starts[population.name]
        period = 2 * T if o.pipeline else max(starts.values()) + 2 * T
        return NetworkDescription(
            scheme=self.name, populations=populations, projections=projections, dt=o.dt, period_steps=period,
            input_population=populations[0].name, output_population=populations[-1].name, output_variable="v",
            output_unit=v_unit, readout_step=T,
            state=TTFSState(self.options, dict(calibration.scales), layout, graph.input.name, any(delays.values())))

    # -- runs --------------------------------------------------------------------------------
    def setup(self, description, t_max=None, scales=None, threshold_scale=1.0):
        """Run-time values: stage length ``t_max`` (steps, at most the built one) and thresholds.

        Parameters
        ----------
        t_max : int, optional
            Stage length for this run; must fit the built image period.
        scales : dict, optional
            ``layer name -> activation scale lambda`` (ANN units) overriding the calibrated ones;
            the threshold becomes ``lambda * v_unit``.
        threshold_scale : float
            Multiplies every hidden layer's threshold (1: the calibrated thresholds).
        """
        threshold_scale = positive_number("threshold_scale", threshold_scale)
        state = description.state
        T = int(state.options.t_max if t_max is None else t_max)
        layout = state.layout
        starts = _window_starts(layout, T)
        period = description.period_steps
        needed = 2 * T if state.options.pipeline else max(starts.values()) + 2 * T
        if T < 1 or needed > period:
            raise InvalidValueError(f"t_max={t_max} does not fit the built network (t_max <= {state.options.t_max}); "
                                    "convert again with a larger t_max to sweep higher values.")
        if state.delayed and T != state.options.t_max:
            raise InvalidValueError(f"t_max={t_max}: this network's skip connections are delayed by multiples of the "
                                    f"built t_max={state.options.t_max}, so it runs only at that t_max; convert again "
                                    "with the t_max to simulate.")
        unknown = set(scales or {}) - set(state.scales)
        if unknown:
            raise InvalidValueError(f"Unknown layer(s) {sorted(unknown)} in scales; "
                                    f"layers: {sorted(state.scales)}.")
        all_scales = _run_scales(description, scales, threshold_scale)
        if any(not s > 0 for s in all_scales.values()):
            raise InvalidValueError("Every activation scale (threshold) must be > 0.")
        by_population = _scale_per_population(description, all_scales)
        values = {}
        for population in description.populations:
            values[(population.name, "T_steps")] = T
            values[(population.name, "window_start")] = starts[population.name]
            values[(population.name, "v_th")] = by_population[population.name] * state.options.v_unit
        return RunSetup(values, starts, readout_step=T,
                        parameters=dict(t_max=T, scales=scales or {}, threshold_scale=threshold_scale))

    def population_values(self, description, result, population):
        """Values carried by ``population``'s spikes (needs ``simulate(..., spikes=[population])``).

        A spike at step ``m`` of the population's output window is ``(T - m) / T`` times its scale;
        the output window starts ``T`` steps into a two-stage neuron's window, one step into a
        pool's and at once for the input.
        """
        if population not in result.spikes:
            raise InvalidValueError(f"Simulate with spikes=[{population!r}] to decode {population!r}.")
        T = result.parameters["t_max"]
        p = description.population(population)
        offset = _emit_offset(p.kind.value, T)
        scales = _run_scales(description, result.parameters.get("scales"),
                             result.parameters.get("threshold_scale", 1.0))
        scale = _scale_per_population(description, scales)[population]
        values = np.zeros((result.n_images, p.size))
        image, neuron, local = result.spikes[population]
        values[image, neuron] = (T - (local - offset)) / T * scale
        return values

    def stage_marks(self, description, setup, population):
        """The silent | spiking boundary (``T``) and the end of the spiking stage (``2 T``) of a neuron."""
        kind = description.population(population).kind.value
        T = setup.parameters["t_max"]
        if kind == "neuron":
            return [(T, "silent | spiking"), (2 * T, "end of spiking stage")]
        if kind == "output":
            return [(T, "readout")]
        return []

    def unsupported_perturbations(self):
        """With ``integration="event"`` no membrane is integrated step by step: the neuron knobs have nothing
        to act on."""
        if self.options.integration != "event":
            return {}
        reason = ("integration='event' computes each spike time in closed form, with no membrane integrated "
                  "step by step; convert with integration='clock' to perturb the neurons.")
        return {knob: reason for knob in ("tau_m", "t_ref", "sigma_v", "sigma_th")}


#: Each layer's neuron model, by integration and kind of layer: equations, threshold, reset, the
#: code run when a window opens, other events, initial values besides ``T_steps``, ``v_th`` and
#: ``b``, the ``on_pre`` of the projection into it and the spike schedule, if any.
_CLEAR_CURRENT = "v = 0 * volt\nI_syn = 0 * volt / second"
_MODELS = {
    ("clock", "maxpool"): dict(equations=MAXPOOL_EQUATIONS, threshold=MAXPOOL_THRESHOLD, reset="fired = 1",
                               window_start="n_in = 0\nfired = 0", on_pre="n_in_post += 1"),
    ("clock", "neuron"): dict(equations=NEURON_EQUATIONS, threshold=NEURON_THRESHOLD, reset=NEURON_RESET,
                              window_start=_CLEAR_CURRENT + "\nfired = 0", on_pre=ON_PRE),
    ("clock", "output"): dict(equations=OUTPUT_EQUATIONS, threshold=None, reset=None, window_start=_CLEAR_CURRENT,
                              on_pre=ON_PRE),
    ("event", "maxpool"): dict(equations=MAXPOOL_EVENT_EQUATIONS, threshold=FIRE_IN_POOL_WINDOW, reset="",
                               window_start="fire_step = period_steps", initial=dict(fire_step=-1),
                               on_pre=MAXPOOL_EVENT_ON_PRE),
    ("event", "neuron"): dict(equations=NEURON_EVENT_EQUATIONS, threshold=FIRE_IN_SPIKING_STAGE, reset="",
                              window_start="v = b * v_unit\nfire_step = -1", initial=dict(fire_step=-1),
                              events={"stage_end": (STAGE_END, SCHEDULE_SPIKE, "after_synapses")},
                              on_pre=ON_PRE_EVENT, schedule=SPIKING_STAGE_SCHEDULE),
    ("event", "output"): dict(equations=OUTPUT_EVENT_EQUATIONS, threshold=None, reset=None,
                              window_start="v = b * v_unit", on_pre=ON_PRE_EVENT),
}


def _layer_population(integration, kind, name, layer, v_th, T, v_unit):
    """Population of one layer (``kind``: "maxpool", "neuron" or "output") and the ``on_pre`` into it."""
    model = _MODELS[integration, kind]
    values = dict(T_steps=T, v_th=v_th, **model.get("initial", {}))
    if kind != "maxpool":
        values["b"] = layer.neuron_bias()
    population = Population(
        name, layer.size, model["equations"], threshold=model["threshold"], reset=model["reset"],
        events={"window_start": (WINDOW_START, model["window_start"]), **model.get("events", {})},
        values=values, layer=layer.name, shape=layer.out_shape, role="output" if kind == "output" else "hidden",
        kind=Kind(kind),
        namespace={} if kind == "maxpool" else {"v_unit": v_unit},
        membrane=Membrane("v", "v_th") if (integration, kind) == ("clock", "neuron") else None,
        spike_schedule=model.get("schedule"))
    return population, model["on_pre"]


def _emit_offset(kind, T):
    """Steps from the start of a population's window to the start of its output window."""
    return {"input": 0, "maxpool": 1, "neuron": T, "output": T}[kind]


def _sources(entry):
    """The source populations of a layout entry ``(name, sources, kind)`` (a name or None in older networks)."""
    sources = entry[1]
    return () if sources is None else (sources,) if isinstance(sources, str) else tuple(sources)


def _window_starts(layout, T):
    """Window start of each population: where the output window of its latest source starts.

    Parameters
    ----------
    layout : list of (name, sources, kind)
        Populations in graph order with the populations they read and their kind.
    T : int
        Stage length in steps.

    Returns
    -------
    dict
        ``population -> step`` of its window for image 0.
    """
    starts, emits = {}, {}
    for entry in layout:
        name, kind, sources = entry[0], entry[2], _sources(entry)
        starts[name] = max((emits[source] for source in sources), default=0)
        emits[name] = starts[name] + _emit_offset(kind, T)
    return starts


def _input_delays(layout, T):
    """Synaptic delay (steps) of every projection ``(source, target)``: from the start of the source's
    output window to the start of the target's window (0 unless the target also reads a later source)."""
    starts = _window_starts(layout, T)
    kinds = {entry[0]: entry[2] for entry in layout}
    return {(source, entry[0]): int(starts[entry[0]] - starts[source] - _emit_offset(kinds[source], T))
            for entry in layout for source in _sources(entry)}


def _scale_per_population(description, scales):
    """Each population's scale: that of its layer, and a max-pool carries its source's (unchanged values)."""
    layers = {p.name: p.layer for p in description.populations}
    per_population = {}
    for entry in description.state.layout:
        name, kind = entry[0], entry[2]
        per_population[name] = per_population[_sources(entry)[0]] if kind == "maxpool" else scales[layers[name]]
    return per_population


def _run_scales(description, scales=None, threshold_scale=1.0):
    """Layer scales of one run: calibrated, overridden by ``scales``, hidden ones times ``threshold_scale``."""
    merged = dict(description.state.scales, **(scales or {}))
    return {name: value * (1.0 if name == description.state.input_layer else threshold_scale)
            for name, value in merged.items()}


def _warn_coarse_code(graph, x, calibration, T, limit=0.25):
    """Warn where ``t_max`` is too coarse: many positive activations round to "no spike"."""
    _, activations = graph.forward(x, record=True)
    for layer in graph.layers[:-1]:
        if _has_no_neurons(graph, layer):  # its values travel in its sources' codes
            continue
        values = activations[layer.name]
        positive = values[values > 0]
        if positive.size == 0:
            continue
        lost = float(np.mean(positive / calibration.scales[layer.name] * T < 0.5))
        if lost > limit:
            warnings.warn(f"ttfs: t_max={T} is coarse for layer {layer.name!r}: {100 * lost:.0f} % of its positive "
                          f"activations are below half a step ({calibration.scales[layer.name] / (2 * T):.3g}) and "
                          "send no spike. Increase t_max.", AccuracyWarning, stacklevel=4)


def _search_scales(graph, x, calibration, T, candidates):
    """Choose each hidden layer's scale among percentiles to minimise the quantised-value RMSE.

    The spiking value of a layer is simulated exactly in numpy: ``round(clip(a / lambda, 0, 1) * T)
    * lambda / T``, with the layer's inputs already quantised by the scales chosen upstream. Every
    layer with neurons of its own (weighted layers and sums) gets a scale; layers without neurons
    (:func:`_has_no_neurons`) pass their inputs' quantised values on unchanged,
    as their readers' synapses do.
    """
    _, exact = graph.forward(x, record=True)

    def quantised(layer, pre, inputs):
        value = layer.activate(pre).numpy()
        carried = layer is graph.output or _has_no_neurons(graph, layer)
        if (layer.is_weighted or layer.op == "add") and not carried:
            errors = {}
            for p in candidates:
                scale = activation_scale(exact[layer.name], p)
                errors[scale] = np.sqrt(np.mean((_quantise(value, scale, T) - exact[layer.name]) ** 2))
            calibration.scales[layer.name] = min(errors, key=errors.get)
            calibration.clipped[layer.name] = float(np.mean(exact[layer.name] > calibration.scales[layer.name]))
        elif layer.op in ("maxpool", "avgpool"):
            calibration.scales[layer.name] = calibration.scales[layer.inputs[0]]
        return value if carried else _quantise(value, calibration.scales[layer.name], T)

    graph.forward(x, record=True, activation=quantised)


def _has_no_neurons(graph, layer):
    """True for layers whose values travel in their sources' codes: :data:`~.projections.FOLDED_OPS` and linear
    layers folded into residual sums (:func:`~.projections.folds_into_reader`)."""
    return layer.op in FOLDED_OPS or folds_into_reader(graph, layer)


def _quantise(values, scale, T):
    return np.floor(np.clip(values / scale, 0, 1) * T + 0.5) * scale / T
