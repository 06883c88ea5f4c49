"""Scheme ``"tdsnn"``: leaky integrate-and-fire neurons, reverse coding and ticking neurons.

(Longer than the ~400 lines of a module: 126 of its 627 lines are this docstring, the model with its equations,
next to the equation table and the code that uses them; the code itself is 501 lines.)

After Zhang, Zhou, Zhi, Du and Chen, *TDSNN: From deep neural networks to deep spike neural
networks with temporal-coding* (AAAI 2019).
Equation numbers below are the paper's.

Code (reverse coding, Eq. 10)
-----------------------------
The stronger the value, the *later* the single spike: a value ``x >= 0`` is one spike at step
``T(x) = ceil(L * ln(x + 1))`` of the sender's output window; negative values are sent as 0
(step 0). Every neuron fires exactly once per image. A spike at step ``t`` stands for the value
``G = exp(t / L)`` (Eq. 11): ``G(x) = exp(ceil(L ln(x + 1)) / L)`` for ``x >= 0`` and 1 for
``x < 0``, so ``G(x) - 1`` is ReLU(x) rounded *up* on a logarithmic grid:
``x <= G(x) - 1 < (x + 1) * exp(1 / L) - 1``. Each layer's code is cut at ``T_out = T(lambda)``
with ``lambda`` the largest (``percentile``) value of the layer on the calibration data; larger
values fire at ``T_out``.

Rounding to the nearest step (``rounding`` option)
-------------------------------------------------
Rounding up is an error of one sign: on average ``G(x) - 1`` is about ``(x + 1) / (2L)`` above
ReLU(x) (6 % at L = 8), and a network without retraining adds that bias layer after layer. In a
ResNet with nine coded layers (input, stem, three blocks of a convolution and a sum) the logits
come out several steps too large and 3.5 % of MNIST images change class at L = 8 (``resnet_bn``
of the gallery: 96.1 % against the ANN's 99.0 %). ``rounding="nearest"`` (default) sends
``T(x) = ceil(L ln(x + 1) - 1/2)``, the nearest step of the grid: the error lies in
``[(x + 1)(e^(-1/(2L)) - 1), (x + 1)(e^(1/(2L)) - 1))``, half as wide and of either sign
(:func:`code_error_bounds`), and ``resnet_bn`` converts with 98.9 % (L = 8, 2,000 images). The
neuron is the paper's: a layer integrates ``A' = r (A + 1) - 1`` with ``r = exp(-1/(2L))`` (its
weights and bias times ``r``, the bias less ``1 - r``), and Eq. 7 sends ``T(A') = ceil(L ln(A + 1)
- 1/2)``; the input neurons compute the same from the pixel. ``rounding="up"`` is Eq. 10 as
printed (for a model trained with the paper's G, ``TDSNNActivation(L, rounding="up")``).

Neuron (Eqs. 2-4)
-----------------
Leaky IF in discrete time, ``dV/dt = -V / L + sum_i w_i I_i(t)`` (Eq. 2) with ``I_i`` a unit
pulse at each input spike: in Brian2, ``dv/dt = -v / tau`` with ``tau = L * dt`` (``L`` in steps,
``dt`` the step; integrated exactly, ``v <- v * exp(-1 / L)`` per step) and every input spike adds
its weight to ``v`` (volts: ``v_unit`` volts per ANN unit, 1 mV by default). Weights are the ANN
weights *negated* (``w_i = -W_i * v_unit``), so after the last input (step ``T_il``, the end of the
inputs' window) the potential is (Eq. 4 and 8)

    ``P = -v_unit * exp(-T_il / L) * A``,  ``A = sum_i W_i G(x_i) + b``.

Ticking neuron (Eqs. 5-9)
-------------------------
Until ``T_il`` the neurons are inhibited (their threshold is gated off). From step ``T_il + 1``
a ticking neuron (a real population of size 1, role ``"helper"``) fires at every step, ``T_out``
times, with the weight ``w_tick = (1 - exp(-1/L)) * exp(-T_il / L) * v_unit`` (Eq. 9) onto every
neuron of the layer; the threshold is 0 (Eq. 7). A neuron fires when ``v >= 0``, after ``T_o``
ticks, the smallest ``k >= 0`` with ``-P exp(-k/L) <= w_tick * sum_{j=1..k} exp(-(k-j)/L)``:

    ``T_o = ceil(L * ln(-P * (1 - exp(-1/L)) / w_tick + 1)) = ceil(L * ln(A + 1)) = T(A)``  (Eq. 7, 10).

(Eq. 5 as printed sums the ticks from ``t = 0``; its solution Eq. 6/7 counts them from
``t = 1``, which is what the network does.) Neurons with ``A <= 0`` have ``v >= 0`` at release
and fire at once (value 0). A neuron fires once; afterwards it ignores the ticks (the paper's
"very long self-inhibitory period"). Its spike comes at step ``T_il + 1 + T_o`` of its window
(the threshold sees ``v`` of the previous step), so its output window starts ``T_il + 1`` steps
after its input window: step ``T_o`` of the output window carries ``G = exp(T_o / L)``.

Bias (paper: "a bias neuron with value 1 encoded by T(1)")
----------------------------------------------------------
Each weighted layer has a bias neuron (population of size 1, role ``"helper"``) that fires at
step ``T(1) = ceil(L ln 2)`` of the layer's input window. It carries ``G(1) = exp(T(1) / L)``, so
its weights are ``-b / G(1)``: the bias enters ``A`` exactly.

The constant offset of G (``offset`` option)
--------------------------------------------
Because ``G(x) ~ x + 1``, a layer of the paper computes ``A = W G(x) + b ~ W ReLU(x) + b + W 1``.
``offset="fold"`` (default) subtracts the offset in the bias, ``b' = b - sum_i W_i`` (per neuron,
over its actual synapses, so zero padding is exact), and the network computes ``A = W (G(x) - 1)
+ b``: a plain ReLU model converts without retraining, with ReLU replaced by the quantised
ReLU ``G(x) - 1`` (error in ``[0, (x + 1)(exp(1/L) - 1))`` per value, see
:class:`brianconv.nn.TDSNNActivation`). ``offset="keep"`` is the paper verbatim: ``A = W G(x) +
b``, for a model trained with ``G`` in place of ReLU (``TDSNNActivation(L, subtract_one=False)``).

Max-pooling
-----------
Threshold ``N`` (the pooling window's number of inputs), unit weights, no leak, no ticking
neuron: a pool neuron fires one step after its last input spike, i.e. with the latest = largest
input (reverse code). Average pooling is linear and folded into the next projection.

Residual sums, concatenation, clipped ReLU
------------------------------------------
A residual ``add`` is a hidden layer like a convolution, with identity weights from both terms
(their codes ``G - 1`` are summed, the offset folded as for any layer): it sends
``G(A) - 1`` of ``A = y_a + y_b``, one more quantisation step. The terms usually leave at
different steps (the deeper branch later): a layer's window starts with its latest input, and
each earlier source reaches it over a synaptic delay equal to the difference, so every code
arrives aligned and Eq. 8 holds for the whole sum. A sum lies exactly on the code's grid
whenever one term is 0; rounded up, that is where the code changes step, so its neurons break
such ties downwards (:data:`SUM_THRESHOLD`; rounded to the nearest step it is mid-step).
A ``cat`` has no neurons: each reader gets one projection per branch, delayed the same way.
Every value a layer carries is ``>= 0``, so an ``add`` or ``cat`` without activation is exact.

A Linear/Conv2d layer without activation that only sums read (the second convolution of a ResNet
block, BatchNorm folded in, and its 1x1 projection shortcut; :func:`~.base.folds_into_reader`)
has no neurons: the sum receives its input projections composed with its weights, and its bias
in the sum's bias neuron, so the sum codes ``G(A) - 1`` of the exact ``A = W2 y1 + b2 + y_skip``.
Its term then leaves from the folded layer's source (one layer shallower), and the delays align
it as any other term.

A clipped ReLU ``min(max(x, 0), a)`` (ReLU6, hardtanh(0, a)) is the same neuron with its window
ending at ``T(a)`` at the latest (``lambda`` is taken on the clipped values): inputs above ``a``
fire at the window's end and carry ``G(T(a)) - 1``, within the code's bound of ``a``.

Each layer's window ends at ``T_out = T(lambda)``, ``lambda`` the ``percentile`` of the values the
layer computes in the coded network on the calibration data (:func:`emulate`; BatchNorm is
folded into the layer before), so a layer carrying values up to 13 gets the 21 steps (L = 8)
it needs.

Output
------
The output layer integrates like the others but has no threshold: its potential at ``T_il``
gives the logits ``A = -P exp(T_il / L) / v_unit`` (Eq. 8), decoded at the end of step ``T_il``.

Time axis
---------
With ``pipeline=True`` (default) a new image enters every ``max(T_il + T_out + 2)`` steps and
each layer works on its own image; with ``pipeline=False`` an image passes through all layers
before the next enters. Every population resets at the start of its window (event
``window_start``).
"""

from dataclasses import dataclass

import numpy as np
from brian2 import ms

from ..calibration import Calibration, activation_scale
from ..description import Kind, Membrane, NetworkDescription, Population, Projection
from ..errors import ConversionError, InvalidValueError
from .base import RunSetup, Scheme, clip_of, register
from .options import Options, SchemeState, dt_option, option, percentile_option, v_unit_option
from .projections import folds_into_reader, incoming_projections, merged_by_source, population_names

__all__ = ["TDSNN", "spike_step", "code_value", "emulate", "INPUT_EQUATIONS", "NEURON_EQUATIONS",
           "OUTPUT_EQUATIONS", "TICK_EQUATIONS", "BIAS_EQUATIONS", "MAXPOOL_EQUATIONS"]

#: Shared by the LIF populations: leak constant and the two ends of the window.
_LIF = """
L_steps : 1 (constant, shared)        # leak constant L, in steps of dt
tau = L_steps * dt : second (shared)  # membrane time constant of Eq. 2
T_il : integer (constant, shared)     # step of the input window after which the inhibition ends
"""

#: Input neurons: pixel ``x`` of the current image fires once at step ``T(x) = ceil(L ln(x + 1) - rho)``
#: (Eq. 10 with the rounding point ``rho``) of the window, at most ``T_out`` (values above the
#: calibration maximum are clipped).
INPUT_EQUATIONS = """
L_steps : 1 (constant, shared)
T_out : integer (constant, shared)    # last step of the code
rounding_point : 1 (constant, shared) # rho: 0 rounds ln(x + 1) up to the grid (Eq. 10), 0.5 to the nearest step
image = (t_in_timesteps - window_start) // period_steps : integer (shared)
x = stimulus(image * period_steps * dt, i) : 1    # input value (>= 0)
t_x = clip(int(ceil(L_steps * log(x + 1) - rounding_point)), 0, T_out) : integer
"""
INPUT_THRESHOLD = "started == 1 and local_step == t_x"

#: Hidden LIF neuron (Eq. 2): leak ``tau = L dt``; inputs and ticks jump ``v`` (volts).
#: ``t_o`` is the step in the output window; the threshold 0 is active from ``t_o = 0`` (the end
#: of the inhibition) and the code is cut at ``T_out``.
NEURON_EQUATIONS = _LIF + """
dv/dt = -v / tau : volt
T_out : integer (constant, shared)
t_o = local_step - T_il - 1 : integer (shared)
fired : 1                             # 1 once the neuron has spiked in this window
"""
NEURON_THRESHOLD = "started == 1 and fired == 0 and t_o >= 0 and (v >= 0 * volt or t_o >= T_out)"
NEURON_RESET = "fired = 1"

#: A residual sum ``A = (G_a - 1) + (G_b - 1)`` lies exactly on the code's grid ``exp(k / L) - 1``
#: whenever one term is 0, where ``v`` reaches 0 exactly at tick ``k`` and float rounding would pick
#: ``k`` or ``k + 1`` at random. The sum's neurons fire at ``v >= -tie_margin`` instead, with
#: ``tie_margin = TIE * exp(-(T_il + T_out) / L) * v_unit``: ``v_k >= -m`` is
#: ``exp(k / L) - 1 >= A - TIE exp((k - T_out) / L)``, so ties go to ``k`` (the exact code) and only
#: inputs within ``TIE`` (ANN units) above a grid point fire one step early. (That is ``rounding="up"``;
#: rounded to the nearest step, the code changes half-way between grid points and the margin moves nothing.)
TIE = 1e-10
SUM_EQUATIONS = NEURON_EQUATIONS + """tie_margin : volt (constant, shared)  # ties of the code go down
"""
SUM_THRESHOLD = "started == 1 and fired == 0 and t_o >= 0 and (v >= -tie_margin or t_o >= T_out)"

#: Output layer: the same leaky integration without a threshold; ``v`` at ``T_il`` is read (Eq. 8).
OUTPUT_EQUATIONS = _LIF + """
dv/dt = -v / tau : volt
"""

#: Ticking neuron (one per layer): fires at steps ``T_il + 1 ... T_il + T_out`` of the layer's window.
TICK_EQUATIONS = """
T_il : integer (constant, shared)
T_out : integer (constant, shared)
"""
TICK_THRESHOLD = "started == 1 and local_step > T_il and local_step <= T_il + T_out"

#: Bias neuron (one per layer): the value 1, one spike at step ``T(1) = ceil(L ln 2)`` of the window.
BIAS_EQUATIONS = """
T_bias : integer (constant, shared)
"""
BIAS_THRESHOLD = "started == 1 and local_step == T_bias"

#: Max-pool neuron: unit weights, no leak, threshold ``N`` (its number of inputs; half a unit lower
#: so that a sum of ``N`` unit steps in floating point reaches it).
MAXPOOL_EQUATIONS = """
v : volt
n_inputs : 1 (constant)               # N: inputs of the pooling window
fired : 1
"""
MAXPOOL_THRESHOLD = "started == 1 and fired == 0 and v >= (n_inputs - 0.5) * v_unit"

WINDOW_START = "started == 1 and local_step == 0"
_RESET = "v = 0 * volt\nfired = 0"
ON_PRE = "v_post += w"
TICK_ON_PRE = "v_post += (1 - fired_post) * w"
_SYNAPSE_MODEL = "w : volt (constant)"


#: ``rounding -> rho``: where between two steps of the grid ``L ln(x + 1)`` is rounded up (Eq. 10: ``rho = 0``).
ROUNDING_POINTS = {"nearest": 0.5, "up": 0.0}


def spike_step(x, L, max_step=None, rounding="nearest"):
    """The reverse code: ``T(x) = ceil(L ln(x + 1) - rho)`` for ``x >= 0`` and 0 for ``x < 0``.

    ``rounding="up"`` (``rho = 0``) is Eq. 10 as printed; ``"nearest"`` (``rho = 1/2``, the
    default) rounds ``L ln(x + 1)`` to the nearest integer (see :func:`code_error_bounds`).

    Parameters
    ----------
    x : array
    L : float
        Leak constant in steps.
    max_step : int, optional
        Clip at this step (the end of the layer's code).
    rounding : {"nearest", "up"}

    Returns
    -------
    np.ndarray of int64
    """
    log_value = L * np.log(np.maximum(np.asarray(x, dtype=np.float64), 0) + 1)
    steps = np.maximum(np.ceil(log_value - ROUNDING_POINTS[rounding]), 0).astype(np.int64)
    return steps if max_step is None else np.minimum(steps, max_step)


def code_value(steps, L, offset="fold"):
    """The value a spike at ``steps`` carries: ``exp(t / L)`` (Eq. 11), less 1 with ``offset="fold"``."""
    g = np.exp(np.asarray(steps, dtype=np.float64) / L)
    return g - 1 if offset == "fold" else g


def code_error_bounds(relu, L, rounding="nearest"):
    """Bounds of the code's error ``G(x) - 1 - ReLU(x)`` for values ``relu = ReLU(x)`` inside the window.

    ``T = ceil(L ln(x + 1) - rho)`` puts ``T / L - ln(x + 1)`` in ``[-rho / L, (1 - rho) / L)``, so

        ``(ReLU(x) + 1)(exp(-rho / L) - 1) <= G(x) - 1 - ReLU(x) < (ReLU(x) + 1)(exp((1 - rho) / L) - 1)``

    (values in ``(0, exp(rho / L) - 1]`` send step 0, the value 0, within the lower bound).
    ``"up"``: ``[0, (ReLU + 1)(e^(1/L) - 1))``, always upwards (13 % of ``x + 1`` at L = 8);
    ``"nearest"``: at most ``(ReLU + 1)(e^(1/(2L)) - 1)`` either way (6.45 % at L = 8).

    Returns
    -------
    (low, high) : arrays of the shape of ``relu`` (ANN units); ``high`` is exclusive.
    """
    rho = ROUNDING_POINTS[rounding]
    growth = np.asarray(relu, dtype=np.float64) + 1
    return growth * (np.exp(-rho / L) - 1), growth * (np.exp((1 - rho) / L) - 1)


@dataclass(frozen=True)
class TDSNNOptions(Options):
    """Options of :class:`TDSNN` (see its docstring)."""

    L: float = option(8.0, greater_than=0)
    dt: object = dt_option(0.1 * ms)
    percentile: float = percentile_option(100.0)
    offset: str = option("fold", choices=("fold", "keep"))
    rounding: str = option("nearest", choices=tuple(ROUNDING_POINTS))
    v_unit: object = v_unit_option()
    pipeline: bool = option(True, choices=(True, False))


#: Kinds of populations that send a code (and have a ``T_out``).
_CODED = (Kind.INPUT, Kind.NEURON, Kind.SUM)


@dataclass(frozen=True)
class TDSNNState(SchemeState):
    """What :class:`TDSNN` needs after ``describe``: the options and scales, the bias neurons' spike step
    ``t_bias = T(1)`` and ``t_out`` (``layer -> T_out``, the end of each coded layer's code)."""

    t_bias: int
    t_out: dict


@register
class TDSNN(Scheme):
    """TDSNN conversion: leaky IF neurons, reverse coding, ticking and bias neurons (one spike per neuron).

    Options
    -------
    L : float
        Leak constant in steps of ``dt`` (``tau = L * dt``); the code's resolution is a factor
        ``exp(1 / L)`` per step.
    dt : brian2 time
        Simulation step (0.1 ms).
    percentile : float
        Percentile of each layer's calibration values (of the coded network) that sets the end of
        its code ``T_out = T(lambda)`` (100: the maximum; larger values are clipped).
    offset : {"fold", "keep"}
        Fold G's constant offset into the biases (plain ReLU models) or keep it (models trained
        with the paper's G), see the module docstring.
    rounding : {"nearest", "up"}
        Where a value between two steps of the code is sent: at the nearest step (default; error
        at most ``(x + 1)(e^(1/(2L)) - 1)`` either way) or at the later one (Eq. 10 as printed;
        always upwards, up to ``(x + 1)(e^(1/L) - 1)``), see the module docstring.
    v_unit : brian2 voltage
        Volts per ANN unit (1 mV).
    pipeline : bool
        Accept a new image as soon as every layer is free (True) or one image at a time.
    """

    name = "tdsnn"
    needs_nonnegative_input = True
    activations = frozenset({"relu", "clipped_relu"})
    ops = frozenset({"input", "linear", "conv", "avgpool", "maxpool", "add", "cat"})
    Options = TDSNNOptions
    folds_linear_layers = True

    # -- checks ----------------------------------------------------------------------------
    def check(self, graph):
        super().check(graph)
        self.check_pooling_and_output(graph)
        for layer in graph:
            clip_of(layer)  # a clipped ReLU must name its upper end
            folded = [name for name in layer.inputs if folds_into_reader(graph, graph[name])]
            if layer.op == "add" and layer.activation is None and folded:
                raise ConversionError(f"tdsnn: residual add {layer.name!r} has no activation but sums the folded "
                                      f"linear layer(s) {folded}, whose values can be negative; its neurons send "
                                      "ReLU of the "
                                      "sum. Apply ReLU after the addition (as in a ResNet block).")
            if layer.op == "cat" and layer.activation not in (None, "relu"):
                raise ConversionError(f"tdsnn: concatenation {layer.name!r} applies {layer.activation!r}; a "
                                      "concatenation has no neurons of its own and can only pass its inputs' codes "
                                      "on (ReLU of them is the identity). Apply the activation before concatenating.")

    # -- calibration -----------------------------------------------------------------------
    def calibrate(self, graph, x):
        """Each layer's ``lambda``: the percentile of its values in the coded network (:func:`emulate`)."""
        o = self.options
        scales = {}
        emulate(graph, x, o.L, o.offset, scales=scales, percentile=o.percentile, rounding=o.rounding)
        return Calibration(scales, float(o.percentile), len(x), {})

    # -- description -----------------------------------------------------------------------
    def describe(self, graph, calibration):
        o = self.options
        L = float(o.L)
        names = population_names(graph)
        net = _Network(L, o.v_unit, o.offset, o.rounding)
        t_input = int(spike_step(calibration.scales[graph.input.name], L, rounding=o.rounding))
        inp = names[graph.input.name]
        net.add(Population(inp, graph.input.size, INPUT_EQUATIONS, threshold=INPUT_THRESHOLD, reset="",
                           values=dict(L_steps=L, T_out=t_input, rounding_point=ROUNDING_POINTS[o.rounding]),
                           window_start=0, layer=graph.input.name,
                           shape=graph.input.out_shape, role="input", kind=Kind.INPUT),
                span=t_input + 1, code=_Code(t_input, 0))
        readout = None
        for layer, incoming in incoming_projections(graph, names):
            incoming = merged_by_source(incoming)
            name = names[layer.name]
            if layer.op == "maxpool":
                net.max_pool(name, layer, incoming)
            elif layer is graph.output:
                readout = net.integrating_layer(name, layer, incoming, output=True)
            else:
                t_out = int(spike_step(calibration.scales[layer.name], L, rounding=o.rounding))
                net.integrating_layer(name, layer, incoming, t_out=t_out, scale=calibration.scales[layer.name])
        populations = net.populations
        if o.pipeline:
            period = max(net.span.values())
        else:
            period = max(p.window_start + net.span[p.name] for p in populations)
        return NetworkDescription(
            scheme=self.name, populations=populations, projections=net.projections, dt=o.dt, period_steps=period,
            input_population=inp, output_population=names[graph.output.name], output_variable="v",
            output_unit=o.v_unit, readout_step=readout,
            state=TDSNNState(self.options, dict(calibration.scales), net.t_bias,
                             {p.layer: int(p.values["T_out"]) for p in populations if p.kind in _CODED}))

    # -- runs --------------------------------------------------------------------------------
    def setup(self, description):
        """No run-time parameters: the windows are those of the description."""
        starts = {p.name: p.window_start for p in description.populations}
        return RunSetup({}, starts, readout_step=description.readout_step, parameters={})

    def unsupported_perturbations(self):
        """The leak is the code (``tau = L dt``) and the threshold is 0 V."""
        return {"tau_m": "the membrane leak tau = L * dt is the code itself (Eq. 2, 10); convert with another L to "
                         "change it.",
                "sigma_th": "the neurons fire at v >= 0 V (Eq. 7), a threshold without a scale to mismatch; "
                            "perturb the membrane with sigma_v instead."}

    def population_values(self, description, result, population):
        """Values (ANN units) carried by the single spikes of ``population``, shape ``(N, size)``.

        A spike at step ``t`` of the population's output window carries ``code_value(t)``:
        ``exp(t / L) - 1`` with ``offset="fold"``, ``exp(t / L)`` with ``"keep"`` (Eq. 11). The
        output window of a hidden layer starts ``T_il + 1`` steps into its window, a max-pool's
        one step in, the input's at once. Needs ``simulate(..., spikes=[population])``.
        """
        p = description.population(population)
        if p.role in ("output", "helper"):
            raise InvalidValueError(f"{population!r} is a{'n output' if p.role == 'output' else ' helper'} "
                                    "population: it carries no coded value (the outputs are result.outputs).")
        if population not in result.spikes:
            raise InvalidValueError(f"Simulate with spikes=[{population!r}] to decode {population!r}.")
        if p.kind is Kind.INPUT:
            delay = 0
        elif p.kind is Kind.MAXPOOL:  # fires one step after its latest input
            delay = 1
        else:  # a hidden LIF layer or sum: its output window starts after the inhibition
            delay = int(p.values["T_il"]) + 1
        state = description.state
        image, neuron, local = result.spikes[population]
        values = np.zeros((result.n_images, p.size))
        values[image, neuron] = code_value(np.asarray(local) - delay, float(state.options.L), state.options.offset)
        return values

    def stage_marks(self, description, setup, population):
        """Inhibited window, ticking phase and end of the code of a hidden layer; the readout step."""
        p = description.population(population)
        if p.role == "output":
            return [(int(p.values["T_il"]), "readout")]
        if p.kind in (Kind.NEURON, Kind.SUM):
            t_il, t_out = int(p.values["T_il"]), int(p.values["T_out"])
            return [(t_il + 1, "inhibition ends: ticking"), (t_il + 1 + t_out, "end of code")]
        return []

    def decode(self, description, setup, records, n_images):
        """Logits ``A = -v(T_il) * exp(T_il / L) / v_unit`` of the output layer (Eq. 8)."""
        start = setup.window_starts[description.output_population]
        steps = start + np.arange(n_images) * description.period_steps + setup.readout_step
        gain = np.exp(setup.readout_step / float(description.state.options.L))
        return -records.output[steps] * gain / float(description.output_unit)


@dataclass(frozen=True)
class _Code:
    """Where a population's code lives: ``t_out`` its last step, ``start`` the step (image 0) its output
    window begins at (a spike at step ``t`` of that window carries ``G = exp(t / L)``)."""

    t_out: int
    start: int


class _Network:
    """Collects the populations and projections of a TDSNN network, layer by layer.

    Inputs of a layer can come from populations whose output windows start at different steps
    (residual branches of different depth, concatenated branches): the layer's window starts
    with the latest of them and the earlier ones reach it over a delay of the difference, so
    every code arrives aligned to the layer's window and Eq. 8 holds for the sum of all of them.
    """

    def __init__(self, L, v_unit, offset, rounding):
        self.L, self.v_unit, self.offset = L, v_unit, offset
        self.rounding_gain = np.exp(-ROUNDING_POINTS[rounding] / L)
        self.t_bias = int(spike_step(1.0, L, rounding="up"))  # any step works; the paper's T(1)
        self.populations, self.projections = [], []
        self.span, self.codes = {}, {}

    def add(self, population, span, code=None):
        """Add ``population``; ``span``: the steps its window needs; ``code``: its :class:`_Code` if it sends one."""
        self.populations.append(population)
        self.span[population.name] = span
        if code is not None:
            self.codes[population.name] = code
        return population

    def aligned(self, incoming):
        """Window start and input window end (``max T_out``) of a layer reading ``incoming``, and the delay of
        each source: ``[(source, connections, delay)]``."""
        start = max(self.codes[source].start for source, _ in incoming)
        t_src = max(self.codes[source].t_out for source, _ in incoming)
        return start, t_src, [(source, connections, start - self.codes[source].start)
                              for source, connections in incoming]

    def project(self, source, target, connections, on_pre=ON_PRE, delay=0):
        self.projections.append(Projection(f"{source}_to_{target}", source, target, connections,
                                           model=_SYNAPSE_MODEL, on_pre=on_pre, weight_unit=self.v_unit,
                                           delay_steps=int(delay)))

    def max_pool(self, name, layer, incoming):
        """Threshold ``N``, unit weights: fires one step after its latest (largest) input."""
        start, t_src, sources = self.aligned(incoming)
        for source, connections, _ in sources:
            if not np.all(connections.weight == 1):
                raise ConversionError(f"tdsnn: max-pooling {layer.name!r} reads {source!r} through average pooling; "
                                      "a max-pool neuron compares spike times and needs unit weights. Average-pool "
                                      "after the max-pool instead.")
        n_inputs = sum(np.bincount(c.post, minlength=layer.size) for _, c, _ in sources)
        self.add(Population(name, layer.size, MAXPOOL_EQUATIONS, threshold=MAXPOOL_THRESHOLD, reset="fired = 1",
                            events={"window_start": (WINDOW_START, _RESET)}, values=dict(n_inputs=n_inputs),
                            window_start=start, layer=layer.name, shape=layer.out_shape, kind=Kind.MAXPOOL,
                            namespace={"v_unit": self.v_unit}), span=t_src + 2, code=_Code(t_src, start + 1))
        for source, connections, delay in sources:
            self.project(source, name, connections, delay=delay)

    def integrating_layer(self, name, layer, incoming, t_out=None, output=False, scale=None):
        """A leaky layer (Eq. 2) with its bias neuron, and for hidden layers the ticking neuron (Eq. 9).

        A residual ``add`` is such a layer with identity weights from both terms; its neurons break
        ties of the code downwards (:data:`SUM_THRESHOLD`). A hidden layer integrates
        ``A' = r (A + 1) - 1`` (weights and bias times ``r = exp(-rho / L)``, bias less ``1 - r``),
        so that Eq. 7 sends ``T(A') = ceil(L ln(A + 1) - rho)``. Returns the readout step ``T_il``.
        """
        L = self.L
        start, t_src, sources = self.aligned(incoming)
        t_il = max(t_src, self.t_bias)
        bias = layer.neuron_bias()
        if self.offset == "fold":
            bias = bias - sum(np.bincount(c.post, weights=c.weight, minlength=layer.size) for _, c, _ in sources)
        gain = 1.0 if output else self.rounding_gain  # the output's potential is read, not coded
        bias = gain * bias + (gain - 1)
        if output:
            self.add(Population(name, layer.size, OUTPUT_EQUATIONS,
                                events={"window_start": (WINDOW_START, "v = 0 * volt")},
                                values=dict(L_steps=L, T_il=t_il), window_start=start, layer=layer.name,
                                shape=layer.out_shape, role="output", kind=Kind.OUTPUT, method="exact"),
                     span=t_il + 1)
        else:
            equations, threshold, values = NEURON_EQUATIONS, NEURON_THRESHOLD, dict(L_steps=L, T_il=t_il, T_out=t_out)
            kind = Kind.NEURON
            if layer.op == "add":
                equations, threshold, kind = SUM_EQUATIONS, SUM_THRESHOLD, Kind.SUM
                values["tie_margin"] = TIE * np.exp(-(t_il + t_out) / L) * self.v_unit
            reference = scale * np.exp(-t_il / L) * self.v_unit  # the potential of lambda ANN units at release
            self.add(Population(name, layer.size, equations, threshold=threshold, reset=NEURON_RESET,
                                events={"window_start": (WINDOW_START, _RESET)}, values=values, window_start=start,
                                layer=layer.name, shape=layer.out_shape, kind=kind, method="exact",
                                membrane=Membrane("v", None, reference=reference)),
                     span=t_il + t_out + 2, code=_Code(t_out, start + t_il + 1))
            tick = f"tick_{name}"
            self.add(Population(tick, 1, TICK_EQUATIONS, threshold=TICK_THRESHOLD, reset="",
                                values=dict(T_il=t_il, T_out=t_out), window_start=start, layer=layer.name, shape=(1,),
                                role="helper", kind=Kind.TICK), span=t_il + t_out + 1)
            w_tick = (1 - np.exp(-1 / L)) * np.exp(-t_il / L)  # Eq. 9
            self.project(tick, name, _all_to_all(1, layer.size, w_tick), on_pre=TICK_ON_PRE)
        bias_name = f"bias_{name}"
        self.add(Population(bias_name, 1, BIAS_EQUATIONS, threshold=BIAS_THRESHOLD, reset="",
                            values=dict(T_bias=self.t_bias), window_start=start, layer=layer.name, shape=(1,),
                            role="helper", kind=Kind.BIAS), span=self.t_bias + 1)
        self.project(bias_name, name, _all_to_all(1, layer.size, -bias / np.exp(self.t_bias / L)))
        for source, connections, delay in sources:
            negated = type(connections)(connections.pre, connections.post, -gain * connections.weight,
                                        connections.n_pre, connections.n_post)
            self.project(source, name, negated, delay=delay)
        return t_il


def emulate(graph, x, L, offset="fold", t_out=None, scales=None, percentile=100.0, rounding="nearest"):
    """The coded network in float64 torch: what the SNN computes, layer by layer (:meth:`LayerGraph.forward`).

    Parameters
    ----------
    graph : brianconv.graph.LayerGraph
    x : array, shape (N, *input_shape)
    L : float
    offset : {"fold", "keep"}
    t_out : dict, optional
        ``layer -> T_out`` (end of each layer's code); from ``scales`` when omitted.
    scales : dict, optional
        Filled with ``layer -> lambda`` (the ``percentile`` of its values) when ``t_out`` is None.
    percentile : float
    rounding : {"nearest", "up"}
        The code's rounding (:func:`spike_step`).

    Returns
    -------
    values : dict
        ``layer -> np.ndarray (N, *out_shape)``: the carried value ``G`` (or ``G - 1`` for
        ``"fold"``) for hidden layers and the input, the logits ``A`` for the output layer.
    steps : dict
        ``layer -> spike steps`` (int array) for the input and every hidden layer.
    """
    scales = {} if scales is None else scales
    steps = {}

    def code(layer, raw):
        name, clip = layer.name, clip_of(layer)
        if t_out is not None:
            limit = t_out[name]
        else:  # a clipped ReLU's window ends at T(a) at the latest: the code carries min(A, a) exactly
            scales[name] = activation_scale(raw if clip is None else np.minimum(raw, clip), percentile)
            limit = int(spike_step(scales[name], L, rounding=rounding))
        steps[name] = spike_step(raw - TIE if layer.op == "add" else raw, L, limit, rounding)  # SUM_THRESHOLD
        return code_value(steps[name], L, offset)

    def carried(layer, pre, inputs):
        raw = pre.numpy()
        if layer.op == "input":
            return code(layer, raw)
        if folds_into_reader(graph, layer):  # no neurons: the sum reading it gets the exact linear value
            return raw
        if layer.op in ("maxpool", "avgpool", "cat"):  # act on the codes; G is monotonic, so max commutes
            if layer.op == "maxpool":
                steps[layer.name] = np.rint(L * np.log(raw + (1.0 if offset == "fold" else 0.0))).astype(np.int64)
            return raw
        return raw if layer is graph.output else code(layer, raw)

    _, values = graph.forward(x, record=True, activation=carried)
    return values, steps


def _all_to_all(n_pre, n_post, weight):
    from ..connectivity import make_connections
    pre, post = np.meshgrid(np.arange(n_pre), np.arange(n_post), indexing="ij")
    weight = np.broadcast_to(np.asarray(weight, dtype=np.float64), (n_pre, n_post))
    return make_connections(pre.ravel(), post.ravel(), weight.ravel(), n_pre, n_post)


