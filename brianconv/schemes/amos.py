"""Scheme ``"amos"``: at most one spike per neuron, every ANN gate replaced by K threshold neurons.

After Stöckl and Maass, *Recognizing images with at most one spike per neuron* (2020). Equation
numbers below are the paper's.

The AMOS unit (Eqs. 2-6)
------------------------
A gate ``f`` with input ``x = sum_j W_ij a_j + b_i`` is replaced by ``K`` McCulloch-Pitts
neurons. Neuron ``k`` (0-based here, ``k = 0 ... K-1``) outputs

    ``z_k = Theta(c_k x - H_k - T_k)``,  ``H_k = sum_{m<k} h_km z_m``      (Eqs. 2, 4)

and the unit sends ``y = sum_k d_k z_k`` (times the next layer's weight, Eq. 5) to the next
layer, so the next layer's neuron ``k'`` receives ``W_ij d_k c_k'`` from neuron ``k`` of unit
``j``. Parameters are held in a :class:`Unit`:

* ReLU, closed form (Sec. 1.2), scaled to ``(-inf, alpha]`` with ``alpha`` the layer's
  calibrated activation scale: ``c_k = 1``, ``T_k = d_k = h_{k'k} = alpha 2^-(k+1)``. The unit
  is a successive-approximation A/D converter: ``y = alpha floor(x 2^K / alpha) 2^-K`` for
  ``0 <= x < alpha`` (so ``0 <= ReLU(x) - y < alpha 2^-K``), 0 for ``x < 0`` and
  ``alpha (1 - 2^-K)`` above ``alpha``: the error is at most ``alpha 2^-K`` on ``(-inf, alpha]``.
* Sigmoid (K = 8) and SiLU/Swish (K = 12): trained by backpropagation with a triangle-shaped
  pseudo-derivative (``benchmarks/train_amos_units.py``) on ``x`` in ``[-8, 8]`` and shipped as
  ``brianconv/data/amos_<gate>.npz`` with their measured errors; they work on ANN units directly
  (no scaling). Outside the training domain their output stays at its edge value.

Neurons and time
----------------
Neurons are memoryless threshold gates evaluated once per image, in volts: ``v`` is the input
delivered during the previous step plus the constant ``v_rest = c_k b_i v_unit`` (the bias part
of ``c_k x``), and the neuron fires when ``v >= theta = T_k v_unit`` in its evaluation step. A
custom event ``clear`` restores ``v = v_rest`` in every step before the synapses deliver, so no
state carries over from one step to the next. Neuron ``k`` of layer ``l`` evaluates image ``n`` at
step ``S_l + n P + k`` (``P`` the image period); a spike sent in step ``s`` over a delay of ``D``
steps is read in step ``s + D + 1``. Hence:

* inhibition from neuron ``m`` to neuron ``k > m`` of the same unit: delay ``k - m - 1``;
* neuron ``k_s`` of the source layer to neuron ``k_t`` of the target: delay ``K_s - 1 + k_t - k_s``,
  with ``S_l = S_{l-1} + K_s``: every layer adds ``K`` steps of latency;
* the output layer is not an AMOS unit: it only sums ``W y + b`` (delay ``K_s - 1 - k_s``) and its
  ``v / v_unit`` at the end of step ``S_out + n P`` is the logit of image ``n``.

The input is analog, as the paper's first layer receives the image itself: input neuron ``i``
(one per pixel) sends one event per image if its value is non-zero, and the synapse to neuron
``k_t`` of the first layer (delay ``k_t``, weight ``W c_kt``) adds the value times the weight
(``S_1 = 1``). Brian2 reads a pre-synaptic variable when the spike is delivered, so each input
neuron keeps the values of its last ``K_1`` steps (``x_0 ... x_(K_1 - 1)``) and a synapse with
delay ``D`` reads ``x_D``, the value at the time the spike was sent.

Because no neuron keeps state between images, the network is pipelined (``pipeline=True``,
default): a new image enters every step (``P = 1``), and ``N`` images take ``N + sum_l K_l`` steps.
With ``pipeline=False`` an image passes through all layers before the next enters
(``P = S_out + 1``); the outputs are identical.

Spike attribution: neuron ``k`` answers image ``n`` ``lag = k`` steps after the image's window starts
(with ``P = 1``: in window ``n + k``). :meth:`AMOS.evaluation_lags` tells the simulation, so
monitored spikes (``SimulationResult.spikes``) carry their true image, and
:meth:`AMOS.population_values` / :func:`sent_values` decode them exactly for every image. The
per-image counts ``SimulationResult.spike_counts`` come from counters read at window edges: with
``P = 1`` those of hidden populations are shifted per neuron (their sum over a run is right except
for the last ``K - 1`` images, whose late spikes fall after the last window); with
``pipeline=False`` they are exact.

Populations: why one population of ``K n`` neurons per layer
-----------------------------------------------------------
Each layer is one ``NeuronGroup`` of ``K * n`` neurons, neuron ``k * n + i`` being neuron ``k`` of
unit ``i``, with per-neuron ``theta``, ``v_rest`` and ``lag`` (the step of its window in which it
evaluates: ``k``; ``2 k`` and ``2 k + 1`` in max-pools). Spikes between AMOS neurons carry a delay
per synapse (:attr:`~brianconv.description.Projection.delay_steps` as an array), so a layer needs
one feedforward and one inhibitory ``Synapses`` object, not one per ``(k_s, k_t)`` pair. Relays
(the input and dendrites) are the exception: their payload ``x_D`` depends on the delay ``D``, so
they get one projection per delay. Every ``Synapses`` object is several C++ files to compile:
this keeps the build time of a net with products (K = 40) in minutes.

Wiring
------
``wiring="auto"`` (default) picks ``"dendrite"`` for a net that max-pools (the only wiring that
computes a max-pool) and the paper's wiring otherwise (:func:`resolve_wiring`), so a model that
converts with an explicit wiring gets the same network from the default.

``wiring="paper"``: the paper's unit sends every source neuron's spike to every
target neuron of the unit at its own delay, so a layer with ``F`` ANN connections gets
``K_s K_t F`` synapses (``K^2`` times the ANN). :func:`synapse_count` computes it before building.

``wiring="dendrite"``: every target neuron of a unit receives the same sum ``sum W d_ks z`` (times
its own ``c_k``), so the sum is formed once, in a *dendrite* (one per unit, ``role="helper"``,
:data:`DENDRITE_EQUATIONS`): it integrates ``x = W y + b`` in volts like the output layer and
relays it one step later, as the payload of one event, to the unit's K neurons over synapses of
weight ``c_k`` and delay ``k`` (the same buffer mechanism as the input relay). A layer then
needs ``K_s F + K_t n`` synapses instead of ``K_s K_t F`` and one more step of latency; every
neuron still computes ``Theta(c_k x - H_k - T_k)`` on the same ``x``, so unit outputs are
identical (up to float rounding of the sum). Without an event (``x = 0``; for ReLU units
``x <= 0``) the neurons see ``x = 0``, which is exact. The AMOS neurons keep binary spikes and
at most one spike each; the dendrite's events are graded (counted as the helper's spikes).

Max-pooling (``wiring="dendrite"``)
-----------------------------------
A max-pool of ReLU units is computed exactly on their binary code. The ReLU unit is a
successive-approximation converter: bit ``k`` is ``[x - H_k >= T_k]`` with ``H_k`` from the
bits above it. Because ``x -> [x - H >= T]`` is monotone, bit ``k`` of the pool's maximum is
``OR_j [x_j - H_k >= T_k]`` with ``H_k`` from the *pool's* bits. So each (member ``j``, pool
``p``) pair gets K *candidate* neurons (the pooled layer's population: candidate ``k`` of pair
``e`` tests ``x_j - H_k >= T_k`` at lag ``2 k``, reading the dendrite of unit ``j``), and each
pool unit K neurons (pool neuron ``k`` fires at lag ``2 k + 1`` if any of its candidates ``k``
fired: weight 1, threshold 1/2) whose spikes inhibit the candidates ``k' > k`` of the same pool
by ``h_k'k``. The pool sends ``y(max_j x_j) = max_j y(x_j)``: the ANN's max-pool of the quantised
ReLU, no approximation. A max-pooled layer takes ``2 K`` steps instead of ``K``; neurons still
fire at most once per image. (Spikes of the candidates show the comparisons; decode the pool.)

Products (squeeze-and-excitation)
---------------------------------
A ``mul`` layer (:mod:`brianconv.graph`: two layers multiplied element-wise, or a map times one
gate per channel) becomes a layer of trained product units (K = 40, two inputs, Eq. 7), wired
like any unit layer from the neurons of *both* factors; its window starts after the later factor
has answered, and the delays (``S_t + lag_t - 1 - S_s - lag_s``) align the two. The unit was
trained on ``[-1, 1]^2``: its inputs are divided by the largest value each factor's units can send
(``alpha`` for ReLU units, the trained unit's largest output for sigmoid/SiLU,
:func:`_largest_sent`), and its output multiplied by both, so the product stays inside the
domain and its error is at most the unit's recorded maximum error times the two ranges.

That error is large where one factor spans a wide range: a ReLU map with ``alpha`` = 32 whose
typical values are near 3 gets an absolute error near 1 (``small_cnn_se`` loses 29 pp with it,
``benchmarks/results/amos_mnist_se_trained.txt``). ``product="code"`` multiplies the codes
instead: the factors already send binary codes ``y_a = sum d_a z_a`` and ``y_b = sum d_b z_b``, so
``y_a y_b = sum_{ka,kb} d_a[ka] d_b[kb] z_a[ka] z_b[kb]``: one coincidence neuron per pair
``(ka, kb)`` (weights 1 from both, threshold 3/2, :class:`CodeProduct`) fires iff both fired and
sends ``d_a[ka] d_b[kb]``. ``K_a K_b`` neurons per element (80 for ReLU K = 10 times sigmoid
K = 8, against 40), no trained parameters, no error beyond the factors' own codes, one step.

Residual sums and concatenation
-------------------------------
A residual ``add`` is a layer of units whose input is the sum of both terms' unit outputs
(identity weights): with ``wiring="dendrite"`` one dendrite sums both, with the paper's wiring
every neuron of both terms reaches the sum's neurons. Each term arrives over its own delays
(``S_t + lag_t - 1 - S_s - lag_s``, as for the two factors of a product), so a shallow term waits
for a deep one. Its units are those of its activation (ReLU; an ``add`` without activation of
non-negative terms is a ReLU unit too) and its error that of the unit on the exact sum. A ``cat``
has no units: each reader receives one projection per branch, at the branch's delays. A max-pool
of an ``add`` with ReLU works like that of a Linear/Conv2d layer. A Linear/Conv2d layer without
activation that only sums read (a ResNet block's second convolution and projection shortcut,
:func:`~.base.folds_into_reader`) has no units either: the sum's units receive its input
projections composed with its weights and its bias in their own, so they code the exact sum.

Clipped ReLU
------------
``min(max(x, 0), a)`` (ReLU6, hardtanh(0, a)) is the closed-form ReLU unit with
``alpha = min(lambda, a)``: the unit sends ``alpha (1 - 2^-K)`` above ``alpha``, so with
``alpha = a`` (the calibration reaches the clip) its error is at most ``a 2^-K`` for every ``x``.

Supported: Linear, Conv2d, average pooling (folded into the next projection), max-pooling of a
ReLU layer (dendrite wiring), products of two unit layers, residual sums, channel concatenation,
ReLU / clipped ReLU / sigmoid / SiLU on hidden layers, a Linear or Conv2d output layer without
activation.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from brian2 import ms

from ..connectivity import make_connections, one_to_one
from ..description import Kind, NetworkDescription, Population, Projection
from ..errors import ConversionError, DataNotFoundError, InvalidValueError
from .base import (
    RunSetup,
    Scheme,
    carries_non_negative,
    clip_of,
    incoming_projections,
    merged_by_source,
    population_names,
    register,
)
from .options import Options, SchemeState, dt_option, option, percentile_option, v_unit_option

__all__ = ["AMOS", "Unit", "relu_unit", "resolve_wiring", "product_unit", "load_unit", "sent_values", "synapse_count",
           "NEURON_EQUATIONS", "INPUT_EQUATIONS", "DENDRITE_EQUATIONS", "OUTPUT_EQUATIONS", "UNIT_DIR", "WIRINGS",
           "PRODUCTS", "CodeProduct", "code_product"]

#: ``"paper"``: every source neuron of a unit to every neuron of each target unit (``K_s K_t F``
#: synapses); ``"dendrite"``: to one dendrite per target unit, which relays the sum (``K_s F + K_t n``);
#: ``"auto"``: ``"dendrite"`` where the graph needs it, else ``"paper"`` (:func:`resolve_wiring`).
WIRINGS = ("auto", "paper", "dendrite")
#: How a ``mul`` layer is computed: ``"trained"``, the paper's trained two-input unit (K = 40);
#: ``"code"``, coincidence neurons multiplying the factors' spike codes exactly (:class:`CodeProduct`).
PRODUCTS = ("trained", "code")

#: Folder of the trained unit files ``amos_<gate>.npz``.
UNIT_DIR = Path(__file__).resolve().parents[1] / "data"

#: A McCulloch-Pitts neuron of an AMOS unit. ``v`` (volt): ``c_k x - H_k`` of the image it
#: evaluates next, i.e. the synaptic input delivered in the previous step plus ``v_rest``.
NEURON_EQUATIONS = """
v : volt                      # c_k x - H_k in volts (v_unit volts per ANN unit)
v_rest : volt (constant)      # c_k b_i v_unit: the bias part, restored every step
theta : volt (constant)       # threshold T_k v_unit
lag : integer (constant)      # steps from its window start to its evaluation (k, or 2k / 2k+1 in max-pools)
"""
#: A neuron evaluates image ``n`` at step ``window_start + n period_steps + lag`` only.
EVALUATES = ("t_in_timesteps >= window_start + lag and "
             "(t_in_timesteps - window_start - lag) % period_steps == 0")
NEURON_THRESHOLD = EVALUATES + " and v >= theta"

#: Input neurons relay the analog input: neuron ``i`` sends one event per image (if its value is
#: non-zero) whose payload is the value ``x_now`` of the image it belongs to. A synapse with a
#: delay of ``D`` steps reads the payload ``x_D``: the value ``D`` steps back, kept in the
#: neuron's buffer ``x_0 ... x_(D_max)`` (shifted every step by the ``shift`` event), because Brian2
#: reads pre-synaptic variables when a spike is delivered, not when it is sent.
INPUT_EQUATIONS = """
x_now = stimulus(((t_in_timesteps - window_start) // period_steps) * period_steps * dt, i) : 1  # ANN units
"""
INPUT_THRESHOLD = "started == 1 and local_step == 0 and x_now > 0"


#: A dendrite sums the input ``x = W y + b`` of its unit's K neurons once per image (volts, like
#: the output layer) and relays it to them as the payload of one event, read through the buffer
#: ``x_0 ... x_(D_max)`` like the input's. Only with ``wiring="dendrite"``.
DENDRITE_EQUATIONS = """
v : volt                      # W y + b of the image it relays next (v_unit volts per ANN unit)
v_rest : volt (constant)      # b v_unit
x_now = v / v_unit : 1        # the value it relays
"""
DENDRITE_THRESHOLD = "started == 1 and local_step == 0 and v {compare} 0 * volt"


#: The output layer sums ``W y + b`` (volts) of one image per step and never spikes.
OUTPUT_EQUATIONS = """
v : volt                      # W y + b of the image whose input was delivered in this step
v_rest : volt (constant)      # b v_unit
"""
#: Every step, before the synapses deliver: forget the last step's input.
CLEAR = ("i >= 0", "v = v_rest")
ON_PRE = "v_post += w"
SYNAPSE_MODEL = "w : volt (constant)"


@dataclass
class Unit:
    """Parameters of one AMOS unit (Eqs. 2-6), in ANN units.

    Attributes
    ----------
    c, T, d : np.ndarray, shape (K,)
        Input weights, thresholds and output weights (``c`` is ``(K, 2)`` for two-input units).
    h : np.ndarray, shape (K, K)
        Inhibition: ``h[k, m]`` for ``m < k`` is subtracted from neuron ``k`` when neuron ``m``
        fired (zero on and above the diagonal).
    gate : str
        What it approximates (``"relu"``, ``"sigmoid"``, ``"silu"``, ``"product"``).
    scale : float, tuple or None
        The range it was scaled to: ``alpha`` of a ReLU unit, the two input scales of a product
        unit (:func:`product_unit`), None for units used as trained.
    """

    c: np.ndarray
    T: np.ndarray
    d: np.ndarray
    h: np.ndarray
    gate: str = ""
    scale: object = None
    domain: tuple = None

    @property
    def K(self):
        return len(self.T)

    @property
    def n_parameters(self):
        """Free parameters as counted in the paper's Table 3: c, T, d and the K(K-1)/2 inhibitions."""
        return int(np.size(self.c) + self.K * 2 + self.K * (self.K - 1) // 2)

    def spikes(self, x):
        """``z``, shape ``(..., K)``, for inputs ``x`` of shape ``(...)`` (or ``(..., 2)``)."""
        x = np.asarray(x, dtype=np.float64)
        drive = x[..., None] * self.c if np.ndim(self.c) == 1 else x @ self.c.T
        z = np.zeros(drive.shape)
        for k in range(self.K):
            inhibition = z[..., :k] @ self.h[k, :k]
            z[..., k] = drive[..., k] - inhibition >= self.T[k]
        return z

    def __call__(self, x):
        """The unit's output ``y = sum_k d_k z_k`` (Eq. 6)."""
        return self.spikes(x) @ self.d

    def largest_output(self):
        """``max |y|`` over the unit's input domain (a trained one-input unit keeps its edge values
        outside it), on a grid of 20,001 points."""
        if self.domain is None or np.ndim(self.c) != 1:
            raise InvalidValueError(f"The {self.gate!r} unit has no one-dimensional input domain to bound its "
                                    "output on.")
        return float(np.max(np.abs(self(np.linspace(*self.domain, 20001)))))


def relu_unit(K, alpha):
    """The closed-form ReLU unit with ``K`` neurons on ``(-inf, alpha]`` (error at most ``alpha 2^-K``)."""
    powers = alpha * 2.0 ** -(np.arange(K) + 1.0)
    return Unit(c=np.ones(K), T=powers.copy(), d=powers.copy(), h=np.tril(np.tile(powers, (K, 1)), -1), gate="relu",
                scale=float(alpha))


def product_unit(scales, folder=None):
    """The trained product unit for inputs of ranges ``scales = (s_a, s_b)``: it sees ``a / s_a`` and ``b / s_b``
    (in its training domain ``[-1, 1]^2`` for ``|a| <= s_a``, ``|b| <= s_b``) and its output is scaled by
    ``s_a s_b``."""
    unit = load_unit("product", folder)
    s_a, s_b = (float(s) for s in scales)
    return Unit(c=unit.c / np.array([s_a, s_b]), T=unit.T, d=unit.d * s_a * s_b, h=unit.h, gate="product",
                scale=(s_a, s_b))


def load_unit(gate, folder=None):
    """The trained unit ``amos_<gate>.npz`` (``gate`` in ``"sigmoid"``, ``"silu"``, ``"product"``)."""
    path = Path(folder or UNIT_DIR) / f"amos_{gate}.npz"
    if not path.is_file():
        raise DataNotFoundError(f"No trained AMOS unit for {gate!r} at {path}; train it with "
                                f"'python benchmarks/train_amos_units.py {gate}'.")
    with np.load(path) as data:
        return Unit(c=data["c"], T=data["T"], d=data["d"], h=np.tril(data["h"], -1), gate=gate,
                    domain=tuple(float(v) for v in data["domain"]))


@dataclass
class CodeProduct(Unit):
    """The exact product of two factors' codes by coincidence neurons (``product="code"``).

    Neuron ``(ka, kb)`` (index ``ka K_b + kb``) receives weight 1 from neuron ``ka`` of factor ``a``
    and from neuron ``kb`` of factor ``b``, threshold 3/2: it fires iff both fired, and sends
    ``d_a[ka] d_b[kb]``, so the layer sends ``(sum d_a z_a)(sum d_b z_b) = y_a y_b`` exactly.
    """

    factors: tuple = ()

    def __call__(self, pair):
        """``y_a y_b`` for the factors' sent values, shape ``(..., 2)``."""
        pair = np.asarray(pair, dtype=np.float64)
        return pair[..., 0] * pair[..., 1]


def code_product(unit_a, unit_b):
    """The :class:`CodeProduct` of the factors' units (``K_a K_b`` neurons)."""
    K = unit_a.K * unit_b.K
    return CodeProduct(c=np.ones((K, 2)), T=np.full(K, 1.5), d=np.outer(unit_a.d, unit_b.d).ravel(), h=np.zeros((K, K)),
                       gate="product_code", scale=((unit_a.gate, unit_a.K, unit_a.scale),
                                                   (unit_b.gate, unit_b.K, unit_b.scale)),
                       factors=(unit_a, unit_b))


def resolve_wiring(wiring, graph):
    """The wiring used for ``graph``: ``wiring`` itself unless it is ``"auto"``.

    ``"auto"`` means ``"dendrite"`` when the graph has a max-pool (its candidate neurons read the
    pooled units' dendrites; the paper's wiring cannot compute it) and ``"paper"`` otherwise. The
    synapse count is deliberately not a criterion: the paper's wiring stays the default wherever it
    works, so the default network of a model does not depend on its size.

    Parameters
    ----------
    wiring : {"auto", "paper", "dendrite"}
    graph : brianconv.graph.LayerGraph

    Returns
    -------
    str
        ``"paper"`` or ``"dendrite"``.
    """
    if wiring != "auto":
        return wiring
    return "dendrite" if any(layer.op == "maxpool" for layer in graph) else "paper"


def _gate(layer):
    """The unit that replaces ``layer``'s activation: a clipped ReLU is a ReLU unit (its range ends at the
    clip), an ``add`` without activation sums non-negative values and is a ReLU unit too."""
    if layer.activation == "clipped_relu" or (layer.op == "add" and layer.activation is None):
        return "relu"
    return layer.activation


def _units_layer(graph, name):
    """The layer whose units send what layer ``name`` sends: itself, or the layer a max-pool pools."""
    layer = graph[name]
    return graph[layer.inputs[0]] if layer.op == "maxpool" else layer


def _largest_sent(unit):
    """Largest ``|value|`` a layer of these units sends: ``alpha`` for ReLU units, a trained unit's largest output."""
    return unit.scale if unit.gate == "relu" else unit.largest_output()


def _unit(gate, K, scale, unit_dir):
    """The closed-form ReLU unit (``K`` neurons on ``(-inf, scale]``), the product unit for input ranges
    ``scale``, or the trained unit of ``gate``."""
    if gate == "relu":
        return relu_unit(K, scale)
    if gate == "product":
        return product_unit(scale, unit_dir)
    if gate == "product_code":
        return code_product(*(_unit(*factor, unit_dir) for factor in scale))
    return load_unit(gate, unit_dir)


@dataclass(frozen=True)
class AMOSOptions(Options):
    """Options of :class:`AMOS` (see its docstring)."""

    K: int = option(10, integer=True, minimum=1, maximum=52)  # 52: the float64 resolution of the ReLU unit
    percentile: float = percentile_option(100.0)
    pipeline: bool = option(True, choices=(True, False))
    dt: object = dt_option(0.1 * ms)
    v_unit: object = v_unit_option()
    unit_dir: str = None
    wiring: str = option("auto", choices=WIRINGS)
    product: str = option("trained", choices=PRODUCTS)


@dataclass(frozen=True)
class AMOSState(SchemeState):
    """What :class:`AMOS` needs after ``describe``: the options and scales, the ``wiring`` used and ``units``
    (``population -> (gate, K, scale)`` of every population of units that a layer reads, to rebuild its
    :class:`Unit`)."""

    wiring: str
    units: dict


@register
class AMOS(Scheme):
    """AMOS conversion: each gate becomes K McCulloch-Pitts neurons with at most one spike each.

    Options
    -------
    K : int
        Neurons per ReLU unit (10, as in the paper's CIFAR runs); trained units have their own K.
    percentile : float
        Percentile of each layer's calibration activations used as its ReLU range ``alpha``
        (100: the maximum, nothing is clipped).
    pipeline : bool
        A new image every step (True) or one image through the whole network at a time.
    dt : brian2 time
        Simulation step (0.1 ms).
    v_unit : brian2 voltage
        Volts per ANN unit (1 mV).
    unit_dir : str or None
        Folder with trained ``amos_<gate>.npz`` files (default: the package's data folder).
    product : {"trained", "code"}
        ``mul`` layers: the paper's trained product unit (K = 40, inputs scaled into its domain) or
        ``K_a K_b`` coincidence neurons per element that multiply the factors' codes exactly.
    wiring : {"auto", "paper", "dendrite"}
        ``"paper"``: each source neuron sends to each neuron of every target unit (``K_s K_t``
        synapses per ANN connection); ``"dendrite"``: to the target unit's dendrite, which sums
        ``x`` once and relays it to the unit's K neurons (``K_s`` per ANN connection, one step more
        latency per layer, identical unit outputs). Max-pooling needs ``"dendrite"``. ``"auto"``
        (default): ``"dendrite"`` if the net max-pools, else ``"paper"`` (:func:`resolve_wiring`).
    """

    name = "amos"
    needs_nonnegative_input = True
    activations = frozenset({"relu", "clipped_relu", "sigmoid", "silu"})
    ops = frozenset({"input", "linear", "conv", "avgpool", "maxpool", "mul", "add", "cat"})
    Options = AMOSOptions
    folds_linear_layers = True

    # -- checks ----------------------------------------------------------------------------
    def check(self, graph):
        super().check(graph)
        for layer in graph:
            if layer.op == "maxpool":
                self._check_max_pool(graph, layer)
            if layer.op == "mul":
                self._check_product(graph, layer)
            if layer.op in ("add", "cat"):
                self._check_sum(graph, layer)
            clip_of(layer)  # a clipped ReLU must name its upper end
        for layer in graph:
            if layer.op == "avgpool" and layer.activation is not None:
                raise ConversionError(f"amos: layer {layer.name!r} applies {layer.activation!r} after pooling.")
        if graph.output.op not in ("linear", "conv") or graph.output.activation is not None:
            raise ConversionError(f"amos: the output layer {graph.output.name!r} must be Linear or Conv2d without "
                                  "activation (its logits are read from the membrane).")

    def _check_max_pool(self, graph, layer):
        pooled = graph[layer.inputs[0]]
        if resolve_wiring(self.options.wiring, graph) != "dendrite":
            raise ConversionError(f"amos: max-pooling ({layer.name!r}) needs wiring='dendrite' or 'auto' (the pool's "
                                  "candidate neurons read their unit's dendrite).")
        if not (pooled.is_weighted or pooled.op == "add") or _gate(pooled) != "relu" or pooled is graph.output:
            raise ConversionError(f"amos: max-pooling {layer.name!r} must directly follow a hidden Linear/Conv2d layer "
                                  f"with ReLU (or a residual add), not {pooled.op!r} with {pooled.activation!r}: the "
                                  "pool compares the bits of ReLU units.")
        if layer.activation not in (None, "relu"):
            raise ConversionError(f"amos: layer {layer.name!r} applies {layer.activation!r} after max-pooling.")
        readers = [other.name for other in graph if pooled.name in other.inputs]
        if readers != [layer.name]:
            raise ConversionError(f"amos: layer {pooled.name!r} feeds {readers}; a max-pooled layer can feed only "
                                  "its max-pool.")

    def _check_product(self, graph, layer):
        if layer.activation is not None or layer is graph.output:
            raise ConversionError(f"amos: the product {layer.name!r} must be a hidden layer without activation.")
        for name in layer.inputs:
            factor = graph[name]
            if not (factor.op == "maxpool" or (factor.is_weighted and factor.activation in self.activations)):
                raise ConversionError(f"amos: product {layer.name!r} reads {name!r} ({factor.op}); both factors "
                                      "must be layers of ReLU/sigmoid/SiLU units or their max-pool.")

    def _check_sum(self, graph, layer):
        """A residual ``add`` is a layer of units fed by both terms; a ``cat`` only routes its branches."""
        if layer.op == "cat" and layer.activation not in (None, "relu"):
            raise ConversionError(f"amos: concatenation {layer.name!r} applies {layer.activation!r}; a concatenation "
                                  "has no units of its own. Apply the activation before concatenating.")
        needs_non_negative = layer.activation is None if layer.op == "add" else layer.activation == "relu"
        sources_non_negative = all(carries_non_negative(graph, name, True) for name in layer.inputs)
        if needs_non_negative and not sources_non_negative:
            raise ConversionError(f"amos: {layer.op} {layer.name!r} without its own ReLU units reads values that can "
                                  f"be negative ({layer.inputs}); an {layer.op} of them must be followed by ReLU "
                                  "(add) or read ReLU outputs only (cat).")

    # -- units -------------------------------------------------------------------------------
    def unit_for(self, layer, calibration, graph=None):
        """The :class:`Unit` that replaces the activation of ``layer``.

        For a ``mul`` layer (``graph`` needed): the product unit, its inputs scaled by the largest
        value each factor's units can send, so they stay in its domain; with ``product="code"``
        the coincidence neurons of the factors' codes.
        """
        if layer.op == "mul":
            factors = [self.unit_for(_units_layer(graph, name), calibration) for name in layer.inputs]
            if self.options.product == "code":
                return code_product(*factors)
            return _unit("product", None, [_largest_sent(unit) for unit in factors], self.options.unit_dir)
        gate, scale = _gate(layer), calibration.scales[layer.name]
        if clip_of(layer) is not None:  # the ReLU unit on (-inf, alpha] sends alpha (1 - 2^-K) above alpha
            scale = min(scale, clip_of(layer))
        return _unit(gate, int(self.options.K), scale, self.options.unit_dir)

    # -- description -----------------------------------------------------------------------
    def describe(self, graph, calibration):
        o = self.options
        wiring = resolve_wiring(o.wiring, graph)
        v_unit, dendrites = o.v_unit, wiring == "dendrite"
        names = population_names(graph)
        net = _Wiring(v_unit)
        inp = graph.input
        input_population = net.add_relay(Population(
            names[inp.name], inp.size, INPUT_EQUATIONS, threshold=INPUT_THRESHOLD, reset="",
            layer=inp.name, shape=tuple(inp.out_shape), role="input", kind=Kind.INPUT), start=0)
        senders = {input_population.name: input_population}
        pooled = {layer.inputs[0] for layer in graph if layer.op == "maxpool"}
        for layer, incoming in incoming_projections(graph, names):
            name = names[layer.name]
            if layer.op != "mul":  # the two factors of a product stay apart (two ports), even from one layer
                incoming = merged_by_source(incoming)
            inputs = [(senders[source], connections) for source, connections in incoming]
            bias = layer.neuron_bias()
            if layer is graph.output:  # every input at its own delay, aligned to the last one
                net.add(Population(name, layer.size, OUTPUT_EQUATIONS, events={"clear": CLEAR},
                                   values=dict(v_rest=bias * v_unit), layer=layer.name, shape=layer.out_shape,
                                   role="output", kind=Kind.OUTPUT),
                        start=max(sender.last_step for sender, _ in inputs))
                for sender, connections in inputs:
                    net.feedforward(sender, name, connections, lags=np.ones(1, dtype=int), gains=np.ones(1))
                continue
            if layer.op == "mul":  # both factors' neurons, at aligned delays
                unit = self.unit_for(layer, calibration, graph)
                senders[name] = (net.coincidences(inputs, name, layer, unit) if o.product == "code"
                                 else net.unit_layer(inputs, name, layer, unit, bias, ports=True))
                continue
            if layer.op == "maxpool":
                pooled_layer = graph[layer.inputs[0]]
                (sender, connections), = inputs
                senders[name] = net.max_pool(sender, pooled_layer, names[pooled_layer.name], name, layer,
                                             connections, self.unit_for(pooled_layer, calibration))
                continue
            unit = self.unit_for(layer, calibration)
            if dendrites:  # one dendrite sums every input (both terms of an add, every concatenated branch)
                sender = net.dendrite(inputs, name, layer, bias, relu=unit.gate == "relu")
                if layer.name in pooled:  # the max-pool builds this layer's neurons
                    senders[name] = sender
                    continue
                inputs, bias = [(sender, one_to_one(layer.size))], np.zeros(layer.size)
            senders[name] = net.unit_layer(inputs, name, layer, unit, bias)
        period = 1 if o.pipeline else max(net.starts.values()) + 1
        return NetworkDescription(
            scheme=self.name, populations=net.finished_populations(), projections=net.projections, dt=o.dt,
            period_steps=period, input_population=input_population.name, output_population=names[graph.output.name],
            output_variable="v", output_unit=v_unit, readout_step=0,
            state=AMOSState(self.options, dict(calibration.scales), wiring,
                            {name: (s.unit.gate, s.unit.K, s.unit.scale) for name, s in senders.items()
                             if s.unit is not None}))

    def reference(self, graph, calibration, x, keep=None, chunk=256):
        """The function the AMOS network computes, in numpy float64 (no Brian2).

        Parameters
        ----------
        keep : iterable of str, optional
            Layers whose values to return (default: all; a large net's values for many images
            take gigabytes: pass ``keep=()`` for the outputs only).
        chunk : int
            Images evaluated at a time (a unit's spikes take ``K`` values per neuron and image).

        Returns
        -------
        outputs : np.ndarray, shape (N, n_outputs)
        values : dict
            ``layer name -> (N, *out_shape)``: what each kept layer sends (unit outputs ``y``).
        """
        x = graph.check_input(x)
        graph = graph
        units = {layer.name: self.unit_for(layer, calibration, graph) for layer in graph.layers[1:]
                 if _has_units(layer)}
        names = [layer.name for layer in graph] if keep is None else list(keep)
        outputs, kept = [], {name: [] for name in names}
        for i in range(0, len(x), chunk):
            part = _reference_values(graph, units, x[i:i + chunk])
            outputs.append(part[graph.output.name].reshape(len(x[i:i + chunk]), -1))
            for name in names:
                kept[name].append(part[name])
        return np.concatenate(outputs), {name: np.concatenate(parts) for name, parts in kept.items()}

    # -- runs --------------------------------------------------------------------------------
    def setup(self, description):
        """No run-time parameters: thresholds are part of the built units."""
        starts = {p.name: p.window_start for p in description.populations}
        return RunSetup({}, starts, readout_step=0, parameters={})

    def evaluation_lags(self, description, population):
        """Neuron ``k`` of a unit answers ``k`` steps after its image's window starts."""
        p = description.population(population)
        return np.asarray(p.values["lag"]) if p.kind is Kind.UNITS else None

    def population_unit(self, description, population):
        """The :class:`Unit` of a hidden population (rebuilt from the description)."""
        p = description.population(population)
        if population not in description.state.units:
            raise InvalidValueError(f"{population!r} ({p.role}) is not a layer of AMOS units that the next layer "
                                    "reads; "
                                    f"those are {sorted(description.state.units)}.")
        gate, K, alpha = description.state.units[population]
        return _unit(gate, K, alpha, description.state.options.unit_dir)

    def population_values(self, description, result, population):
        """What a hidden population sends, ``y = sum_k d_k z_k`` per unit, shape ``(N, n_units)``.

        Needs ``simulate(..., spikes=[population])``.
        """
        if population not in result.spikes:
            raise InvalidValueError(f"Simulate with spikes=[{population!r}] to decode {population!r}.")
        unit = self.population_unit(description, population)
        return sent_values(result, description, population, unit, result.n_images)[0]


def _reference_values(graph, units, x):
    """What every layer sends for the images ``x``: torch float64 for the linear parts, the units for the gates."""
    def sent(layer, pre, inputs):
        if layer.op == "mul":  # the product unit of the two inputs (Eq. 7)
            return units[layer.name](np.stack([inputs[0].reshape((-1,) + tuple(layer.out_shape)).numpy(),
                                               layer.broadcast(inputs[1]).numpy()], axis=-1))
        z = pre.numpy()
        return units[layer.name](z) if layer.name in units else z

    return graph.forward(x, record=True, activation=sent)[1]


def _has_units(layer):
    """Whether ``layer`` sends through AMOS units (its activation's, a product's or a residual sum's)."""
    return layer.op in ("mul", "add") or (layer.activation is not None and layer.op != "cat")


def sent_values(result, description, population, unit, n_images):
    """What an AMOS population sends, ``y = sum_k d_k z_k`` per unit, shape (n_images, n_units), from its
    monitored spikes (``simulate(..., spikes=[population])``), and the spike count of every neuron and image.

    The simulation attributes each spike to the image its neuron evaluated
    (:meth:`AMOS.evaluation_lags`), so every image is complete, pipelined or not.
    """
    image, neuron, _ = result.spikes[population]
    size = description.population(population).size
    n = size // unit.K
    image = np.asarray(image)
    keep = (image >= 0) & (image < n_images)
    image, neuron = image[keep], np.asarray(neuron)[keep]
    counts = np.zeros((n_images, size), dtype=np.int64)
    np.add.at(counts, (image, neuron), 1)
    values = np.zeros((n_images, n))
    np.add.at(values, (image, neuron % n), unit.d[neuron // n])
    return values, counts


@dataclass
class _Sender:
    """A population that feeds the next layer: neuron ``k n + i`` is neuron ``k`` of unit ``i``.

    ``unit`` is None for relays (the input and dendrites): one neuron per unit whose events carry
    the value as payload. ``lags[k]``: steps between the window start and neuron ``k``'s evaluation.
    """

    name: str
    n: int
    start: int
    lags: np.ndarray
    unit: Unit = None

    @property
    def d(self):
        return np.ones(1) if self.unit is None else self.unit.d

    @property
    def last_step(self):
        """Step (for image 0) at which its last neuron answers."""
        return self.start + int(self.lags.max())


class _Wiring:
    """Collects the populations and projections of an AMOS network, layer by layer.

    A spike sent in step ``s`` over a delay of ``D`` steps is read by a unit neuron or a dendrite
    in step ``s + D + 1`` (and by the output at the end of step ``s + D``), so a neuron evaluated
    ``lag_t`` steps into a window starting at ``S_t`` hears a source neuron of lag ``lag_s``
    (window ``S_s``) over a delay of ``S_t + lag_t - 1 - S_s - lag_s`` steps.
    """

    def __init__(self, v_unit):
        self.v_unit = v_unit
        self.populations, self.projections, self.starts = [], [], {}
        self.relay_delays = {}

    def add(self, population, start):
        population.window_start = self.starts[population.name] = int(start)
        self.populations.append(population)
        return population

    def add_relay(self, population, start):
        """A relay population (input or dendrite); its value buffer is sized once all its synapses exist."""
        self.add(population, start)
        self.relay_delays[population.name] = 1
        return _Sender(population.name, population.size, int(start), np.zeros(1, dtype=int))

    def finished_populations(self):
        """The populations, relays given the value buffer ``x_0 ... x_(D_max)`` their synapses read."""
        for population in self.populations:
            if population.name in self.relay_delays:
                buffer, shift = _relay_buffer(self.relay_delays[population.name])
                population.equations += buffer
                clear = "\nv = v_rest" if population.role != "input" else ""
                population.events = {"shift": ("i >= 0", shift + clear)}
        return self.populations

    def feedforward(self, sender, target, connections, lags, gains):
        """Every neuron of every source unit to every neuron of its target units.

        Weight ``W d_ks c_kt`` (volts per ANN unit). One projection with a delay per synapse, except
        from a relay, whose events carry the value ``x_D`` of the delay ``D``: one projection per delay.
        """
        start = self.starts[target]
        delays = start + lags[None, :] - 1 - sender.start - sender.lags[:, None]  # (K_s, K_t)
        factors = sender.d[:, None] * gains[None, :]
        if delays.min() < 0:
            raise AssertionError(f"{sender.name} -> {target}: negative delay (window starts wrong)")
        groups = [(delay, [(ks, kt) for ks, kt in zip(*np.nonzero((delays == delay) & (factors != 0)))])
                  for delay in np.unique(delays)]
        if sender.unit is None:  # a relay's payload x_D depends on the delay: one projection per delay
            for delay, pairs in groups:
                if pairs:
                    self.relay_delays[sender.name] = max(self.relay_delays[sender.name], int(delay) + 1)
                    self._project(f"{sender.name}_to_{target}_d{delay}", sender, target, connections, pairs,
                                  factors, len(lags), f"v_post += w * x_{delay}_pre", int(delay))
            return
        pairs = [pair for _, group in groups for pair in group]
        if pairs:
            self._project(f"{sender.name}_to_{target}", sender, target, connections, pairs, factors, len(lags),
                          ON_PRE, _per_synapse([delays[pair] for pair in pairs], len(connections)))

    def _project(self, name, sender, target, connections, pairs, factors, K_t, on_pre, delay):
        """One projection: neuron ``ks`` of source unit ``i`` to neuron ``kt`` of target unit ``j`` for each pair."""
        pre = np.concatenate([ks * sender.n + connections.pre for ks, _ in pairs])
        post = np.concatenate([kt * connections.n_post + connections.post for _, kt in pairs])
        weight = np.concatenate([connections.weight * factors[ks, kt] for ks, kt in pairs])
        self.projections.append(Projection(
            name, sender.name, target,
            make_connections(pre, post, weight, len(sender.d) * sender.n, K_t * connections.n_post),
            model=SYNAPSE_MODEL, on_pre=on_pre, weight_unit=self.v_unit, delay_steps=delay))

    def dendrite(self, inputs, name, layer, bias, relu):
        """The dendrite of a layer's units: sums ``x = W y + b`` once per image and relays it to the K neurons.

        ``inputs``: ``[(sender, connections)]``, all summed (the terms of a residual ``add``, the
        branches of a concatenation), each over its own delay so that all arrive in the same step.
        For ReLU units only positive values are relayed (a unit given nothing computes ``f(0)``,
        which is 0 for ReLU and exact for every unit: no event means ``x = 0``).
        """
        relay = self.add_relay(Population(
            f"{name}_dendrite", layer.size, DENDRITE_EQUATIONS,
            threshold=DENDRITE_THRESHOLD.format(compare=">" if relu else "!="), reset="",
            values=dict(v_rest=bias * self.v_unit), layer=layer.name, shape=tuple(layer.out_shape), role="helper",
            kind=Kind.DENDRITE,
            namespace={"v_unit": self.v_unit}), start=max(sender.last_step for sender, _ in inputs) + 1)
        for sender, connections in inputs:
            self.feedforward(sender, relay.name, connections, lags=np.zeros(1, dtype=int), gains=np.ones(1))
        return relay

    def unit_neurons(self, name, n, unit, lags, bias, layer, shape, start, role="hidden"):
        """``K n`` McCulloch-Pitts neurons, neuron ``k n + i`` being neuron ``k`` of unit ``i``."""
        return self.add(Population(
            name, unit.K * n, NEURON_EQUATIONS, threshold=NEURON_THRESHOLD, reset="", events={"clear": CLEAR},
            values=dict(v_rest=np.outer(np.reshape(unit.c, (unit.K, -1))[:, 0], bias).ravel() * self.v_unit,
                        theta=np.repeat(unit.T, n) * self.v_unit, lag=np.repeat(lags, n)),
            layer=layer, shape=(unit.K,) + tuple(shape), role=role, kind=Kind.UNITS), start=start)

    def unit_layer(self, inputs, name, layer, unit, bias, ports=False):
        """A layer of AMOS units (Eqs. 2-6): neuron ``k`` answers ``k`` steps into the window.

        ``inputs``: ``[(sender, connections)]``. With ``ports``, input ``j`` feeds input ``j`` of a
        multi-input unit (the two factors of a product, Eq. 7); otherwise all inputs are summed into
        the unit's one input ``x`` (the terms of a residual ``add``, the branches of a concatenation).
        Each sender reaches every neuron over its own delays, aligned to the layer's window.
        """
        lags = np.arange(unit.K)
        start = max(sender.last_step for sender, _ in inputs) + 1
        self.unit_neurons(name, layer.size, unit, lags, bias, layer.name, layer.out_shape, start)
        gains = np.asarray(unit.c, dtype=float).reshape(unit.K, -1)
        for port, (sender, connections) in enumerate(inputs):
            self.feedforward(sender, name, connections, lags=lags, gains=gains[:, port if ports else 0])
        self._inhibition(name, name, unit, one_to_one(layer.size), lags, lags)
        return _Sender(name, layer.size, self.starts[name], lags, unit)

    def coincidences(self, inputs, name, layer, unit):
        """A :class:`CodeProduct` layer: neuron ``(ka, kb)`` of element ``i`` fires iff neuron ``ka`` of factor
        ``a`` and neuron ``kb`` of factor ``b`` fired for it; all evaluate one step after the later factor."""
        (a, conn_a), (b, conn_b) = inputs
        K_a, K_b, n = a.unit.K, b.unit.K, layer.size
        start = max(a.last_step, b.last_step) + 1
        self.unit_neurons(name, n, unit, np.zeros(unit.K, dtype=int), np.zeros(n), layer.name, layer.out_shape, start)
        for sender, connections, own in ((a, conn_a, lambda ka, kb: ka), (b, conn_b, lambda ka, kb: kb)):
            pairs = [(ka, kb) for ka in range(K_a) for kb in range(K_b)]
            pre = np.concatenate([own(ka, kb) * sender.n + connections.pre for ka, kb in pairs])
            post = np.concatenate([(ka * K_b + kb) * n + connections.post for ka, kb in pairs])
            delay = _per_synapse([start - 1 - sender.start - sender.lags[own(ka, kb)] for ka, kb in pairs],
                                 len(connections))
            self.projections.append(Projection(
                f"{sender.name}_to_{name}", sender.name, name,
                make_connections(pre, post, np.ones(len(pre)), len(sender.d) * sender.n, unit.K * n),
                model=SYNAPSE_MODEL, on_pre=ON_PRE, weight_unit=self.v_unit, delay_steps=delay))
        return _Sender(name, n, start, np.zeros(unit.K, dtype=int), unit)

    def max_pool(self, relay, pooled_layer, candidates, name, layer, windows, unit):
        """Max-pooling of ReLU units, exact on their binary code (see the module docstring).

        ``relay`` is the dendrite of ``pooled_layer`` and ``candidates`` the name of that layer's
        population; ``windows`` are the pool's (member, pool) pairs.
        Candidate ``k`` of pair ``e = (j, p)`` tests ``x_j - H_k >= T_k`` at lag ``2k`` with ``H_k``
        from the pool's own bits; pool neuron ``k`` of ``p`` fires at lag ``2k + 1`` if any of its
        candidates ``k`` did: ``z_k(max_j x_j)``, because ``x -> z_k(x - H) `` is monotone.
        """
        K, n_pairs, n_pool = unit.K, len(windows), windows.n_post
        start = relay.last_step + 1
        self.unit_neurons(candidates, n_pairs, unit, 2 * np.arange(K), np.zeros(n_pairs), pooled_layer.name,
                          (n_pairs,), start)
        self.feedforward(relay, candidates, make_connections(windows.pre, np.arange(n_pairs), np.ones(n_pairs),
                                                         windows.n_pre, n_pairs),
                         lags=2 * np.arange(K), gains=np.asarray(unit.c, dtype=float))
        pool_unit = Unit(c=np.ones(K), T=np.full(K, 0.5), d=unit.d, h=np.zeros((K, K)), gate=unit.gate)
        self.unit_neurons(name, n_pool, pool_unit, 2 * np.arange(K) + 1, np.zeros(n_pool), layer.name,
                          layer.out_shape, start)
        members = make_connections(np.arange(n_pairs), windows.post, np.ones(n_pairs), n_pairs, n_pool)
        pre = np.concatenate([k * n_pairs + members.pre for k in range(K)])
        post = np.concatenate([k * n_pool + members.post for k in range(K)])
        self.projections.append(Projection(f"{candidates}_to_{name}", candidates, name,
                                           make_connections(pre, post, np.ones(len(pre)), K * n_pairs, K * n_pool),
                                           model=SYNAPSE_MODEL, on_pre=ON_PRE, weight_unit=self.v_unit))
        reverse = make_connections(windows.post, np.arange(n_pairs), np.ones(n_pairs), n_pool, n_pairs)
        self._inhibition(name, candidates, unit, reverse, 2 * np.arange(K) + 1, 2 * np.arange(K))
        return _Sender(name, n_pool, start, 2 * np.arange(K) + 1, unit)

    def _inhibition(self, source, target, unit, connections, source_lags, target_lags):
        """Neuron ``m`` of a unit's source to neuron ``k > m`` of its targets, weight ``-h[k, m]``: one
        projection with a delay per synapse (the inhibition must arrive just before neuron ``k`` evaluates)."""
        pairs = [(m, k) for k in range(unit.K) for m in range(k) if unit.h[k, m] != 0]
        if not pairs:
            return
        n_pre, n_post = connections.n_pre, connections.n_post
        pre = np.concatenate([m * n_pre + connections.pre for m, _ in pairs])
        post = np.concatenate([k * n_post + connections.post for _, k in pairs])
        weight = np.concatenate([-unit.h[k, m] * connections.weight for m, k in pairs])
        lag_gap = self.starts[target] - 1 - self.starts[source]
        delay = _per_synapse([lag_gap + target_lags[k] - source_lags[m] for m, k in pairs], len(connections))
        self.projections.append(Projection(
            f"{source}_inh" if source == target else f"{source}_to_{target}_inh", source, target,
            make_connections(pre, post, weight, unit.K * n_pre, unit.K * n_post),
            model=SYNAPSE_MODEL, on_pre=ON_PRE, weight_unit=self.v_unit, delay_steps=delay))


def _per_synapse(pair_delays, n_connections):
    """Delays of the pairs' synapses (``n_connections`` per pair): one int if they are all equal."""
    pair_delays = np.asarray(pair_delays, dtype=np.int64)
    if np.all(pair_delays == pair_delays[0]):
        return int(pair_delays[0])
    return np.repeat(pair_delays, n_connections)


def _relay_buffer(n_delays):
    """Equations of the value buffer ``x_0 ... x_(n_delays - 1)`` and the code that shifts it every step."""
    buffer = "\n".join(f"x_{D} : 1  # value {D} steps ago" for D in range(n_delays))
    shift = "\n".join([f"x_{D} = x_{D - 1}" for D in range(n_delays - 1, 0, -1)] + ["x_0 = x_now"])
    return buffer + "\n", shift


def synapse_count(description):
    """Synapses per projection kind of a description: ``{"feedforward": int, "inhibition": int}``."""
    counts = {"feedforward": 0, "inhibition": 0}
    for projection in description.projections:
        counts["inhibition" if "_inh" in projection.name else "feedforward"] += projection.n_synapses
    return counts
