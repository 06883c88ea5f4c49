"""Scheme ``"rate"``: rate-coded integrate-and-fire conversion with the tools of Rueckauer et al.

(Longer than the ~400 lines of a module: 111 of its 582 lines are this docstring, the model with its equations,
next to the equation table and the code that uses them; the code itself is 471 lines.)

After Rueckauer, Lungu, Hu and Pfeiffer, *Theory and tools for the conversion of analog to spiking
convolutional neural networks* (arXiv:1612.04052, 2016). Equation numbers below are those of that
arXiv version.

Code
----
An ANN activation ``a`` of layer ``l`` is represented by the firing rate of an integrate-and-fire
(IF) neuron: ``a / lambda_l`` spikes per step, where ``lambda_l`` is the layer's activation scale
(data-based normalisation, below). Rates are measured over an image period of ``T = duration``
steps of ``dt``, so the maximum rate is ``r_max = 1 / dt`` and a value is known to ``1 / T``.

Neuron (Eqs. 2-3)
-----------------
Every step a hidden neuron adds the charge ``z_i = v_unit * (sum_j W~_ij * theta * S_j + b~_i)``
to its membrane potential ``v`` (volts): ``S_j`` is 1 if input ``j`` spiked in the step, ``theta
= v_th / v_unit`` is the threshold in ANN units (1 by default), ``W~`` and ``b~`` the normalised
weights and bias. A spike carries ``v_th`` volts (the sender's threshold) times the weight; the
bias is the constant current ``I_bias = b~ * v_unit / dt`` (volt/second), and in the first layer
the input image is the constant current ``I_in = sum_j W~_ij x_j / lambda_0 * v_unit / dt``
(``input="analog"``). The neuron spikes when ``v >= v_th`` and is then reset

* by subtraction, ``v <- v - v_th`` (Eq. 3, ``reset="subtract"``): for a constant input the
  spike count after ``T`` steps is ``floor(T * a / (lambda * theta))`` (clipped to ``T``), so the
  rate is ReLU of the pre-activation with a sampling error in ``[0, 1 / T)`` (Eq. 6); or
* to zero, ``v <- 0`` (Eq. 2, ``reset="zero"``): the charge above the threshold is lost, one spike
  takes ``ceil(v_th / z)`` steps and the rate ``1 / ceil(1 / a~)`` falls below ``a~`` (Eq. 5).

Data-based normalisation (Eq. 9): ``W~_l = W_l * lambda_(l-1) / lambda_l`` and ``b~_l = b_l /
lambda_l`` with ``lambda_l`` the ``percentile``-th percentile (100: the maximum) of the layer's
positive activations on the calibration data (:func:`brianconv.calibration.normalised_parameters`);
BatchNorm is already folded into ``W, b`` by the layer graph. As every spike carries its sender's
threshold, giving layer ``l`` the threshold ``v_unit * lambda'_l / lambda_l`` is the same as
normalising with ``lambda'_l``: run-time ``scales=`` re-normalise a compiled network.

Input
-----
``input="analog"`` (default): the input population does not spike in the usual sense; at the
start of each image every non-zero pixel sends one event that sets the first layer's constant
input current (``q_in``, charge per step) to ``sum_j W~_ij x_j / lambda_0 * v_unit``. Its spike
count is therefore the number of non-zero pixels, and its synaptic operations are the
multiply-accumulates of that one-time current set-up.
``input="poisson"``: pixel ``j`` spikes in each step with probability ``min(x_j / lambda_0, 1)``
(rate ``x_j / lambda_0 * r_max``) and each spike carries ``v_unit``. The random numbers come from
:func:`uniform_hash`, a counter-based generator (the SplitMix64 finaliser applied to ``seed``,
the image's index in the whole input, neuron index and step): no Brian2 random state is involved,
so the spike trains are identical on every device, for every batch size and number of workers,
and in every run with the same ``seed``.

Max-pooling (Sec. 3)
--------------------
Each neuron that feeds a max-pool keeps an exponentially weighted running estimate of its
rate, ``r_j(t) = d * r_j(t-1) + S_j(t)`` with ``d = exp(-dt / maxpool_tau)`` (``maxpool_tau=None``:
``d = 1``, the spike count since the image began). A pool neuron is a gate: it passes a spike of
input ``j`` (fires once, one step later) only if ``r_j`` is the highest estimate among its inputs
at that step. With ``maxpool_limit=True`` (default) it also drops spikes that would push its own
estimate (same rule) above the leader's; without it, inputs whose estimates alternate in the
lead both pass and the pool fires faster than any input (for ``d = 1`` the limited gate fires
exactly ``max_j n_j`` times: the max of the input spike counts).

Average pooling
---------------
``avgpool="population"``: a pool that reads a spiking layer is a population of IF neurons
receiving its window with weight ``1 / A`` (``A`` the pool area) and its source's threshold; it
passes on ``lambda floor(sum_j n_j / A) / T``, the average of its inputs' values less an error in
``[0, lambda / T)`` (one more ``1 / T`` quantisation per pool; :mod:`.rate_pooling`), and the
reader's input events fall by about ``A``. ``avgpool="fold"``: the pool is linear and is composed
into the next projection (:func:`brianconv.connectivity.compose`), exact but ``A`` times the
events.

Residual sums and concatenation
-------------------------------
A sum ``add(a, b)`` (a residual connection) is a population of IF neurons like any layer: each
term reaches it through one-to-one synapses of weight ``lambda_source / lambda_add`` (Eq. 9 with
the identity as ``W``), its bias is 0, and the neuron's ReLU (or clipped ReLU) is the sum's
activation. Its charge over a window is ``Q = sum_s lambda_s n_s / lambda_add`` (``n_s`` the
terms' spike counts), all of it non-negative, so ``v`` never falls below 0 and, with reset by
subtraction, the count is ``floor(Q)`` unless the neuron is still above threshold at the end of
the window (saturated): its value ``lambda_add * n / T`` is the sum of the terms' values minus an
error in ``[0, lambda_add / T)``, the bound of Eq. 6. A concatenation has no neurons: a layer
reading it receives one projection per branch, the columns of its weight that read that branch.
Every projection is normalised with the scale of its own source population, ``W lambda_source /
lambda_layer``: branches and terms keep their own scales. In a ResNet block the block's last
Linear/Conv2d has no activation and only the sum reads it (:func:`~.projections.folds_into_reader`, also a
projection shortcut): it gets no neurons, and the sum receives its input projections composed with
its weights, normalised the same way, and its bias divided by ``lambda_add``. Such a sum is an IF
layer with mixed-sign weights like any convolution: its charge can be negative and the bound above
does not hold. A layer whose inputs come from different depths (a skip connection) starts its
window one step after its deepest input; the synapses from a shallower source are delayed by the
difference of depths, so that step ``k`` of every source's window is integrated in step ``k`` of
the reader's, as for a single source.

Clipped ReLU
------------
A rate saturates at one spike per step, i.e. at the scale ``lambda``: a ``clipped_relu`` layer
(ReLU6, ``hardtanh(0, a)``, ``clamp(0, a)``) with ``lambda = a`` represents the clip exactly. The
calibrated percentile of already clipped values never exceeds ``a`` and equals it once more than
``100 - percentile`` % of the positive activations reach the clip; below that, the percentile is
kept (:func:`~brianconv.schemes.base.limit_scales_to_clips`): values in ``(lambda, a]`` saturate
at ``lambda``, the percentile's usual trade of rare large values for resolution.

Output
------
The output layer only integrates (no threshold): ``v`` accumulates ``z`` like a hidden neuron.
Its variable ``y = v * lambda_L / (v_unit * k)`` after ``k`` steps is the time-averaged
potential in ANN units, the SNN's estimate of the logits, recorded at every step
(``simulate(..., trace=True)`` gives the accuracy at every step from one run); the prediction is
its argmax at the readout step.

Time axis
---------
All state (potentials, input currents, rate estimates) is reset for each image, and every
population of an image has the same image period. A spike emitted in step ``t`` reaches the next
layer's membrane during step ``t`` (Brian2 runs synapses after thresholds), so that layer can
respond in step ``t + 1``: each spiking population's window therefore starts one step after its
source's (``window_start`` = its depth), and step ``k`` of a layer's window integrates step ``k``
of its source's window. Because input for step 0 of a window arrives during the previous step, the
reset of a window happens in the last step of the previous window (before synapses), in the
custom event ``"update"``, which also applies the spike reset (so that reset to zero does not erase
input that arrived in the same step).
"""

import logging
import warnings
from dataclasses import dataclass, replace

import numpy as np
from brian2 import (
    have_same_dimensions,
    ms,
    volt,
)

from ..calibration import calibrate, normalised_parameters
from ..description import Kind, Membrane, NetworkDescription, Population, Projection
from ..errors import AccuracyWarning, ConversionError, InvalidValueError
from ..graph import LayerGraph
from .base import (
    RunSetup,
    Scheme,
    check_branch_activations,
    limit_scales_to_clips,
    register,
)
from .options import (
    Options,
    SchemeState,
    dt_option,
    option,
    percentile_option,
    positive_number,
    v_unit_option,
)
from .poisson import uniform_hash
from .projections import (
    folds_into_reader,
    incoming_projections,
    merged_by_source,
    population_names,
)
from .rate_pooling import spiking_avgpools

__all__ = ["Rate", "uniform_hash", "INPUT_ANALOG_EQUATIONS", "INPUT_POISSON_EQUATIONS", "NEURON_EQUATIONS",
           "AVGPOOL_EQUATIONS", "RATE_ESTIMATE_EQUATIONS", "MAXPOOL_EQUATIONS", "OUTPUT_EQUATIONS"]

# ---------------------------------------------------------------------------------------------
# equations
# ---------------------------------------------------------------------------------------------

#: Step flags shared by every population: first and last step of the current window.
_STEPS = """
first = int(local_step == 0) : integer (shared)
last = int(local_step == period_steps - 1) : integer (shared)
"""

#: Input, ``input="analog"``: the normalised pixel ``x = x_image / lambda_0`` of the current image.
#: A non-zero pixel emits one event at step 0 of its window; the synapse sets the first layer's
#: input charge per step, ``q_in += w * x * v_th`` (``v_th = v_unit`` here).
INPUT_ANALOG_EQUATIONS = _STEPS + """
v_th : volt (constant, shared)      # charge per unit of normalised input (v_unit)
x_scale : 1 (constant, shared)      # input scale lambda_0
image = (t_in_timesteps - window_start) // period_steps : integer (shared)
x_now = stimulus(image * period_steps * dt, i) / x_scale : 1
x : 1                               # x_now, held for the synapses
"""
INPUT_ANALOG_THRESHOLD = "started == 1 and first == 1 and x_now != 0"

#: Input, ``input="poisson"``: spike with probability ``p = clip(x_image / lambda_0, 0, 1)`` per
#: step (rate ``p / dt``), from the counter-based uniform number ``u``; a spike carries ``v_th``.
INPUT_POISSON_EQUATIONS = _STEPS + """
v_th : volt (constant, shared)      # charge one input spike carries (v_unit)
x_scale : 1 (constant, shared)
seed : integer (constant, shared)
first_image : integer (constant, shared)  # index of the batch's first image in the whole input
image = (t_in_timesteps - window_start) // period_steps : integer (shared)
x_now = clip(stimulus(image * period_steps * dt, i) / x_scale, 0, 1) : 1
u = uniform_hash(seed, first_image + image, i, local_step) : 1
"""
INPUT_POISSON_THRESHOLD = "started == 1 and u < x_now"

#: Integrate-and-fire neuron: per step ``v += z``, ``z = I dt`` with the bias and analog input
#: currents ``I = (b * v_unit + q_in) / dt`` plus the synaptic jumps ``w * v_th_pre`` (on_pre).
#: ``fired`` is the threshold condition (evaluated again by the ``update`` event).
NEURON_EQUATIONS = _STEPS + """
dv/dt = started * (b * v_unit + q_in) / dt : volt
v_th : volt (constant, shared)      # threshold, and the charge one spike carries (times w)
b : 1 (constant)                    # normalised bias b / lambda
q_in : volt                         # analog input charge per step (first layer only, else 0)
zero_reset : integer (constant, shared)   # 0: reset by subtraction, 1: reset to zero
fired = int(started == 1 and v >= v_th) : integer
"""
NEURON_THRESHOLD = "started == 1 and v >= v_th"
#: Average-pool neuron (``avgpool="population"``; which pools get one and the error bound:
#: :mod:`.rate_pooling`): an IF neuron without bias or state updater. ``v`` (volts) is the charge
#: received in this window less the thresholds of the spikes sent, ``w = 1 / A`` times the
#: sender's threshold per input spike (``on_pre``); ``v_th`` is the source layer's threshold, so
#: the pool's rate is its inputs' average rate. Reset and window reset as for the hidden neurons.
AVGPOOL_EQUATIONS = _STEPS + """v : volt                            # charge of this window, less v_th per spike sent
v_th : volt (constant, shared)      # the source layer's threshold: the pool carries its scale
zero_reset : integer (constant, shared)   # 0: reset by subtraction, 1: reset to zero
fired = int(started == 1 and v >= v_th) : integer
"""
#: Spike reset, ``v - v_th`` (subtraction) or ``0`` (zero), and the window reset in the last step
#: of a window (multiplications by exactly 0 or 1).
RESET_CODE = "v = (v - v_th * fired * (1 - zero_reset)) * (1 - fired * zero_reset) * (1 - last)"
UPDATE_CONDITION = "fired == 1 or last == 1"

#: Added to neurons that feed a max-pool: the running rate estimate ``r(t) = d r(t-1) + S(t)``.
RATE_ESTIMATE_EQUATIONS = """
r : 1                               # running rate estimate (spikes, exponentially weighted)
decay : 1 (constant, shared)        # d = exp(-dt / maxpool_tau), 1 for the plain count
"""
RATE_ESTIMATE_CODE = "r = decay * r * (1 - first) + fired"

#: Spiking max-pool gate: ``m`` is the highest estimate among inputs that spiked in the last
#: step (0: none), ``m_all`` the highest estimate among all inputs one step earlier, ``r_out``
#: the pool's own estimate. The leader spiked iff ``m >= d * m_all``.
MAXPOOL_EQUATIONS = _STEPS + """
v_th : volt (constant, shared)      # charge one spike carries (the source layer's threshold)
decay : 1 (constant, shared)
limit : integer (constant, shared)  # 1: never outpace the leader's estimate
m : 1
m_all : 1
r_out : 1
passed = int(started == 1 and m > 0 and m >= decay * m_all and (limit == 0 or decay * r_out + 1 <= m)) : integer
"""
MAXPOOL_THRESHOLD = "passed == 1"
MAXPOOL_UPDATE = """
r_out = (decay * r_out + passed) * (1 - last)
m_all = (m * int(m > decay * m_all) + decay * m_all * int(m <= decay * m_all)) * (1 - last)
m = 0
"""
#: On a source spike: keep the highest estimate of this step's spikers.
MAXPOOL_ON_PRE = "m_post = m_post * int(m_post >= r_pre) + r_pre * int(r_pre > m_post)"

#: Output accumulator: integrates like a hidden neuron, never fires; ``y`` (ANN units) is the
#: time-averaged potential after ``local_step + 1`` steps, set before the step's synapses.
OUTPUT_EQUATIONS = _STEPS + """
dv/dt = started * (b * v_unit + q_in) / dt : volt
b : 1 (constant)
q_in : volt
scale : 1 (constant, shared)        # lambda_L
y : 1                               # decoded output: v * lambda_L / (v_unit * steps so far)
"""
OUTPUT_UPDATE = """
y = v * scale / (v_unit * (local_step + 1))
v = v * (1 - last)
q_in = q_in * (1 - last)
"""

#: Analog inputs above this factor times the calibrated input scale ``lambda_0`` raise an AccuracyWarning: a value
#: ``x`` drives the first layer like ``x / lambda_0`` calibrated inputs, so at twice the calibrated range the first
#: layer's rates saturate where the calibration data reached its scale (images in 0..255 after 0..1: 255 times).
INPUT_RANGE_FACTOR = 2.0

ON_PRE = "v_post += w * v_th_pre"
ANALOG_ON_PRE = "q_in_post += w * x_pre * v_th_pre"


class _GateOrderFilter(logging.Filter):
    """Drop Brian2's order-dependence warning for :data:`MAXPOOL_ON_PRE` only.

    Brian2 warns about any synaptic statement that reads and writes a postsynaptic variable; the
    gate's statement takes a maximum, which does not depend on the order of the spikes.
    """

    def filter(self, record):
        return "int(m_post >= r_pre)" not in record.getMessage()


_brian2_codegen_logger = logging.getLogger("brian2.codegen.generators.base")
if not any(isinstance(f, _GateOrderFilter) for f in _brian2_codegen_logger.filters):
    _brian2_codegen_logger.addFilter(_GateOrderFilter())


# ---------------------------------------------------------------------------------------------
# the scheme
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RateOptions(Options):
    """Options of :class:`Rate` (see its docstring)."""

    duration: int = option(200, integer=True, minimum=1)
    dt: object = dt_option(1 * ms)
    reset: str = option("subtract", choices=("subtract", "zero"))
    input: str = option("analog", choices=("analog", "poisson"))
    percentile: float = percentile_option(99.9)
    v_unit: object = v_unit_option()
    maxpool_tau: object = option(20 * ms, unit=ms, optional=True)
    maxpool_limit: bool = option(True, choices=(True, False))
    seed: int = option(0, integer=True, minimum=0, maximum=2 ** 31 - 1)
    avgpool: str = option("fold", choices=("population", "fold"))


@dataclass(frozen=True)
class RateState(SchemeState):
    """What :class:`Rate` needs after ``describe``: the options and scales, the max-pool gates' decay ``d``
    and ``pool_sources`` (``max-pool layer -> the layer it pools``, whose scale it carries)."""

    decay: float
    pool_sources: dict


@register
class Rate(Scheme):
    """Rate-coded IF conversion (Rueckauer et al.): reset by subtraction, analog input, p-norm.

    Options
    -------
    duration : int
        Image period in steps of ``dt`` (200): each image is simulated this long.
    dt : brian2 time
        Simulation step (1 ms), so the maximum rate is ``1 / dt``.
    reset : {"subtract", "zero"}
        Reset by subtraction of the threshold (default) or to zero.
    input : {"analog", "poisson"}
        Constant input current to the first layer (default) or Poisson spike trains.
    percentile : float
        Percentile of each layer's positive calibration activations used as its scale
        ``lambda`` (99.9; 100 = the maximum, "max-norm").
    v_unit : brian2 voltage
        Volts per normalised ANN unit (1 mV); the default threshold is ``v_th = v_unit``.
    maxpool_tau : brian2 time or None
        Time constant of the max-pool gates' rate estimates (20 ms); None: the spike count since
        the image began.
    maxpool_limit : bool
        The gate never lets the pool outpace its leading input's estimate (True).
    seed : int
        Seed of the Poisson input (0); a run-time parameter too.
    avgpool : {"population", "fold"}
        Average pooling after a spiking layer as its own IF population (about ``1 / A`` of the
        reader's input events, one more ``1 / T`` quantisation) or folded into the next projection.

    Run-time parameters (``simulate(..., v_th=, threshold_scale=, steps=, reset=, scales=, seed=)``),
    applied to the compiled network without rebuilding: see :meth:`setup`.
    """

    name = "rate"
    Options = RateOptions
    activations = frozenset({"relu", "clipped_relu"})
    ops = Scheme.ops | {"add", "cat"}
    folds_linear_layers = True

    # -- checks ----------------------------------------------------------------------------
    def check(self, graph):
        super().check(graph)
        self.check_pooling_and_output(graph)
        check_branch_activations(graph, self.name, input_non_negative=self.needs_nonnegative_input)
        for layer in graph:
            if layer.op == "maxpool":
                source = graph[layer.inputs[0]]
                if not (source.is_weighted or source.op == "add"):
                    raise ConversionError(f"rate: max-pooling {layer.name!r} must follow a Linear, Conv2d or sum "
                                          f"layer (its gate reads the spike rates of IF neurons), not {source.op!r}.")

    @property
    def needs_nonnegative_input(self):
        """Poisson inputs code values as spike rates (>= 0); analog inputs carry any value."""
        return self.options.input == "poisson"

    def check_run_input(self, description, x):
        """Warn (:class:`~brianconv.errors.AccuracyWarning`) when analog inputs exceed the calibrated input
        scale ``lambda_0`` by more than the factor :data:`INPUT_RANGE_FACTOR`, giving the
        fraction of values above ``lambda_0``: the first layer's rates saturate (clip) there, e.g. for images
        in 0..255 after calibrating on 0..1. Poisson inputs are shifted and checked by the input shift."""
        if self.options.input != "analog":
            return
        scale = description.state.scales[description.population(description.input_population).layer]
        if np.max(x) > INPUT_RANGE_FACTOR * scale:
            clipped = float(np.mean(x > scale))
            warnings.warn(f"rate: the inputs reach {np.max(x):.4g}, more than {INPUT_RANGE_FACTOR:g} times the "
                          f"calibrated input scale {scale:.4g}; {100 * clipped:.3g} % of the input values exceed it "
                          "and the first layer's rates saturate (clip) there. Scale the inputs as the calibration data "
                          "(e.g. both in 0..1), or convert with calibration data of the same range.",
                          AccuracyWarning, stacklevel=3)

    # -- calibration -----------------------------------------------------------------------
    def calibrate(self, graph, x):
        """Activation scales: the ``percentile`` of every layer's positive activations (Eq. 9), at most
        the clip of a clipped ReLU."""
        calibration = calibrate(graph, x, self.options.percentile)
        limit_scales_to_clips(graph, calibration)
        for name, fraction in calibration.clipped.items():
            layer = graph[name]
            if fraction > 0.01 and layer is not graph.output and layer.op != "input" and \
                    not folds_into_reader(graph, layer):  # a folded layer has no neurons to saturate
                warnings.warn(f"rate: {100 * fraction:.1f} % of layer {name!r}'s calibration activations exceed its "
                              "scale and will saturate at the maximum rate.", AccuracyWarning, stacklevel=3)
        return calibration

    # -- description -----------------------------------------------------------------------
    def describe(self, graph, calibration):
        o = self.options
        v_unit = o.v_unit
        decay = 1.0 if o.maxpool_tau is None else float(np.exp(-float(o.dt / o.maxpool_tau)))
        normalised = _normalised_graph(graph, calibration)
        names = population_names(graph)
        feeds_maxpool = {layer.inputs[0] for layer in graph if layer.op == "maxpool"}
        pooled = spiking_avgpools(graph) if o.avgpool == "population" else frozenset()
        analog = o.input == "analog"
        populations, projections, depth = [], [], {}

        inp = graph.input
        name = names[inp.name]
        values = dict(v_th=v_unit, x_scale=calibration.scales[inp.name])
        if analog:
            populations.append(Population(
                name, inp.size, INPUT_ANALOG_EQUATIONS, threshold=INPUT_ANALOG_THRESHOLD, reset="",
                events={"update": ("first == 1", "x = x_now")}, values=values, layer=inp.name,
                shape=inp.out_shape, role="input", kind=Kind.INPUT))
        else:
            values.update(seed=int(o.seed), first_image=0)
            populations.append(Population(
                name, inp.size, INPUT_POISSON_EQUATIONS, threshold=INPUT_POISSON_THRESHOLD, reset="",
                values=values, layer=inp.name, shape=inp.out_shape, role="input", kind=Kind.INPUT,
                namespace={"uniform_hash": uniform_hash}))
        depth[name] = 0
        layer_of = {population: layer for layer, population in names.items()}
        # concatenation and average pooling not in ``pooled`` are folded into their readers' projections
        for layer, incoming in incoming_projections(normalised, names, populated=pooled):
            name = names[layer.name]
            incoming = merged_by_source(incoming)
            depth[name] = max(depth[source] for source, _ in incoming) + 1
            if layer.op == "maxpool":
                (source, connections), = incoming
                populations.append(Population(
                    name, layer.size, MAXPOOL_EQUATIONS, threshold=MAXPOOL_THRESHOLD, reset="",
                    events={"update": ("True", MAXPOOL_UPDATE)},
                    values=dict(v_th=v_unit, decay=decay, limit=int(bool(o.maxpool_limit))),
                    layer=layer.name, shape=layer.out_shape, kind=Kind.MAXPOOL))
                projections.append(Projection(f"{source}_to_{name}", source, name, connections,
                                              model="", on_pre=MAXPOOL_ON_PRE))
                continue
            output = layer.name == graph.output.name
            bias = _normalised_bias(layer, calibration.scales)
            from_input = any(source == populations[0].name for source, _ in incoming)
            if layer.op == "avgpool":
                populations.append(Population(
                    name, layer.size, AVGPOOL_EQUATIONS, threshold=NEURON_THRESHOLD, reset="",
                    events={"update": (UPDATE_CONDITION, RESET_CODE)},
                    values=dict(v_th=v_unit, zero_reset=int(o.reset == "zero")), layer=layer.name,
                    shape=layer.out_shape, kind=Kind.NEURON))
            elif output:
                code = OUTPUT_UPDATE
                populations.append(Population(
                    name, layer.size, OUTPUT_EQUATIONS, events={"update": ("True", code)},
                    values=dict(b=bias, scale=calibration.scales[layer.name]), layer=layer.name,
                    shape=layer.out_shape, role="output", kind=Kind.OUTPUT,
                    namespace={"v_unit": v_unit}))
            else:
                equations, condition = NEURON_EQUATIONS, UPDATE_CONDITION
                code = ("q_in = q_in * (1 - last)\n" if analog and from_input else "") + RESET_CODE
                values = dict(v_th=v_unit, b=bias, zero_reset=int(o.reset == "zero"))
                if layer.name in feeds_maxpool:
                    equations += RATE_ESTIMATE_EQUATIONS
                    condition, code = "True", RATE_ESTIMATE_CODE + "\n" + code
                    values["decay"] = decay
                populations.append(Population(
                    name, layer.size, equations, threshold=NEURON_THRESHOLD, reset="",
                    events={"update": (condition, code)}, values=values, layer=layer.name,
                    shape=layer.out_shape, kind=Kind.NEURON, namespace={"v_unit": v_unit},
                    membrane=Membrane("v", "v_th")))
            for source, connections in incoming:
                on_pre = ANALOG_ON_PRE if analog and source == populations[0].name else ON_PRE
                connections = _normalised_for_source(connections, layer, layer_of[source], calibration.scales)
                projections.append(Projection(f"{source}_to_{name}", source, name, connections, on_pre=on_pre,
                                              delay_steps=depth[name] - 1 - depth[source]))
        for population in populations:
            population.window_start = depth[population.name]
        return NetworkDescription(
            scheme=self.name, populations=populations, projections=projections, dt=o.dt,
            period_steps=int(o.duration), input_population=populations[0].name,
            output_population=populations[-1].name, output_variable="y", output_unit=1.0,
            readout_step=int(o.duration) - 1,
            state=RateState(self.options, dict(calibration.scales), decay,
                            {layer.name: layer.inputs[0] for layer in graph
                             if layer.op == "maxpool" or layer.name in pooled}))

    # -- runs --------------------------------------------------------------------------------
    def setup(self, description, v_th=None, steps=None, seed=None, reset=None, scales=None, threshold_scale=1.0):
        """Run-time values: thresholds (layer scales), reset, readout step and Poisson seed.

        Parameters
        ----------
        v_th : brian2 voltage, optional
            Threshold of the hidden layers at their calibrated scale (default ``v_unit``). A spike
            carries its sender's threshold, so rates scale as ``v_unit / v_th`` while the decoded
            outputs keep their ANN units: lower thresholds answer sooner but saturate more (the
            paper's latency/accuracy trade-off of the normalisation scale).
        steps : int, optional
            Read the output after this many steps of the image period (default: all of it).
        seed : int, optional
            Seed of the Poisson input (``input="poisson"`` only).
        reset : {"subtract", "zero"}, optional
            Reset mode of this run (default: the ``reset`` option).
        scales : dict, optional
            ``layer name -> activation scale lambda`` (ANN units) replacing the calibrated scale
            of hidden Linear/Conv layers: that layer's threshold becomes ``v_th * lambda /
            lambda_calibrated``. Because every spike carries its sender's threshold, this is the
            same as normalising with ``lambda`` (Eq. 9) without rebuilding, e.g. max-norm scales on
            a network built with the 99.9th percentile. Max-pools follow their source layer.
        threshold_scale : float
            Multiplies every hidden layer's threshold (1: ``v_th``); the name the sweeps and the
            CLI use for all schemes.
        """
        state = description.state
        period = description.period_steps
        steps = period if steps is None else steps
        if isinstance(steps, bool) or int(steps) != steps or not 1 <= steps <= period:
            raise InvalidValueError(f"steps={steps!r} must be an integer in [1, {period}] (the built duration); "
                                    "convert again with a larger duration to read out later.")
        threshold = state.options.v_unit if v_th is None else v_th
        if not _positive(threshold, volt):
            raise InvalidValueError(f"v_th must be a positive voltage (e.g. 1 * mV), got {v_th!r}.")
        threshold_scale = positive_number("threshold_scale", threshold_scale)
        threshold = threshold * threshold_scale
        reset = state.options.reset if reset is None else reset
        if reset not in ("subtract", "zero"):
            raise InvalidValueError(f"reset must be 'subtract' or 'zero', got {reset!r}.")
        calibrated = state.scales
        hidden_layers = {p.layer for p in description.populations if p.role == "hidden"}
        weighted = hidden_layers - set(state.pool_sources)
        unknown = set(scales or {}) - weighted
        if unknown:
            raise InvalidValueError(f"scales can be set for the hidden Linear/Conv/sum layers {sorted(weighted)}; "
                                    f"not for {sorted(unknown)}.")
        if any(not (float(value) > 0) for value in (scales or {}).values()):
            raise InvalidValueError("Every activation scale in scales must be > 0.")
        ratio = {layer: float((scales or {}).get(layer, calibrated[layer])) / calibrated[layer]
                 for layer in hidden_layers}
        values = {}
        for population in description.populations:
            if population.role != "hidden":
                continue
            source = state.pool_sources.get(population.layer, population.layer)
            values[(population.name, "v_th")] = threshold * ratio[source]
            if population.kind is Kind.NEURON:
                values[(population.name, "zero_reset")] = int(reset == "zero")
        parameters = dict(v_th=threshold, steps=int(steps), reset=reset, scales=dict(scales or {}),
                          threshold_scale=float(threshold_scale))
        if state.options.input == "poisson":
            seed = state.options.seed if seed is None else seed
            _check_seed(seed)
            values[(description.input_population, "seed")] = int(seed)
            parameters["seed"] = int(seed)
            image_index_targets = ((description.input_population, "first_image"),)
        elif seed is not None:
            raise InvalidValueError("seed only applies to input='poisson'; this network has analog input.")
        else:
            image_index_targets = ()
        starts = {p.name: p.window_start for p in description.populations}
        return RunSetup(values, starts, readout_step=int(steps) - 1, parameters=parameters,
                        image_index_targets=image_index_targets)

    def population_values(self, description, result, population):
        """Values (ANN units) carried by a population's rates, shape ``(N, size)``.

        ``spikes / T * lambda * v_th / v_unit`` with ``T`` the image period and ``lambda`` the
        layer's scale in that run (a max-pool carries its source's); needs
        ``simulate(..., spikes=[population])``. The Poisson input gives ``spikes / T * lambda_0``.
        """
        if population not in result.spikes:
            raise InvalidValueError(f"Simulate with spikes=[{population!r}] to decode {population!r}.")
        state = description.state
        p = description.population(population)
        if p.role == "output":
            raise InvalidValueError(f"{population!r} is the output accumulator; its values are result.outputs.")
        if p.role == "input":
            if state.options.input == "analog":
                raise InvalidValueError("With input='analog' the input population sends one event per non-zero "
                                        "pixel, not a rate; its values are the input itself.")
            scale = state.scales[p.layer]
        else:
            layer = state.pool_sources.get(p.layer, p.layer)
            scale = (result.parameters.get("scales") or {}).get(layer, state.scales[layer])
            scale *= float(result.parameters["v_th"] / state.options.v_unit)
        image, neuron, _ = result.spikes[population]
        counts = np.zeros((result.n_images, p.size))
        np.add.at(counts, (image, neuron), 1)
        return counts / description.period_steps * scale


def _normalised_graph(graph, calibration):
    """``graph`` with normalised weights and biases, ``W~ = W lambda_in / lambda_l``, ``b~ = b / lambda_l`` (Eq. 9).

    A layer folded into the residual sums that read it (:func:`~.projections.folds_into_reader`: the
    last convolution of a ResNet block, a projection shortcut) has no neurons and so no scale of
    its own: it keeps its ANN weights and bias. The sum that reads it receives the folded layer's
    input projections composed with those weights, normalised for the population each one reads
    by :func:`_normalised_for_source`, and the bias in ANN units, normalised by
    :func:`_normalised_bias`.
    """
    params = normalised_parameters(graph, calibration)
    return LayerGraph([replace(layer, weight=params[layer.name][0], bias=params[layer.name][1])
                       if layer.name in params and not folds_into_reader(graph, layer) else layer
                       for layer in graph])


def _normalised_bias(layer, scales):
    """The per-step bias ``b~`` of ``layer``'s neurons, shape ``(size,)``, from a layer of the normalised graph.

    Weighted layers carry ``b / lambda`` already. A sum has no bias of its own; what it carries
    is the bias of the layers folded into it (:func:`_normalised_graph`), in ANN units: it is
    divided by the sum's scale here.
    """
    bias = layer.neuron_bias()
    return bias / scales[layer.name] if layer.op == "add" else bias


def _normalised_for_source(connections, layer, source_layer, scales):
    """A projection of the normalised graph, renormalised for the scale of the population it reads.

    The normalised graph scales a weighted layer by its first input's scale, ``W lambda_in /
    lambda_layer`` (Eq. 9), and leaves a sum's one-to-one weights at 1. Every projection needs
    ``W lambda_source / lambda_layer`` with the scale of its own source population: it differs for a
    branch of a concatenation and for each term of a sum. The factor is exactly 1 for a chain
    (average pooling carries its source's scale), so those weights are unchanged bit for bit.

    Parameters
    ----------
    connections : Connections
        The projection into ``layer`` from the population of ``source_layer``.
    layer : Layer
    source_layer : str
        Name of the layer whose population the projection reads.
    scales : dict
        Calibrated scales ``layer name -> lambda`` (ANN units).
    """
    reference = scales[layer.inputs[0]] if layer.is_weighted else scales[layer.name]
    factor = scales[source_layer] / reference
    return connections if factor == 1.0 else replace(connections, weight=connections.weight * factor)


def _positive(value, unit):
    """True if ``value`` is a Brian2 quantity with the dimensions of ``unit`` and positive."""
    return have_same_dimensions(value, unit) and float(value / unit) > 0


def _check_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2 ** 31:
        raise InvalidValueError(f"seed must be an integer in [0, 2**31), got {seed!r}.")
