"""Scheme ``"amos"``: at most one spike per neuron, every ANN gate replaced by K threshold neurons.

After Stöckl and Maass, *Recognizing images with at most one spike per neuron* (2020;
``../shared/papers/stoeckl-maass-amos.txt``). Equation numbers below are the paper's.

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

Spike attribution: neuron ``k`` answers image ``n`` ``k`` steps after the image's window starts
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
unit ``i``, with per-neuron ``theta``, ``v_rest`` and ``k``. Brian2 delays are homogeneous per
``Synapses`` object here (:attr:`~brianconv.description.Projection.delay_steps`), and a delay
depends only on ``k_t - k_s``, so the feedforward synapses of a layer are grouped into
``K_s + K_t - 1`` projections (one per delay) and the inhibition into ``K - 1``: about ``3 K``
Brian2 objects per layer instead of ``K^2 + K (K - 1) / 2`` (one population per ``k``, one
projection per pair). Every ``Synapses`` object is several C++ files to compile, so this is what
bounds the build time; thresholds are per-neuron values, so trained units need nothing special.
With per-synapse delays in the description, each layer would need only two projections.

Cost: the paper's unit sends every source neuron's spike to every target neuron of the unit at
its own delay, so a layer with ``F`` ANN connections gets ``K_s K_t F`` synapses (``K^2`` times
the ANN). This is what makes one image per step possible with memoryless neurons; it limits the
simulated network size (:func:`synapse_count` computes it before building).

Supported: Linear, Conv2d, average pooling (folded into the next projection), ReLU / sigmoid /
SiLU on hidden layers, a Linear or Conv2d output layer without activation. Max-pooling is not
(yet) supported.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from brian2 import mV, ms

from ..calibration import calibrate
from ..connectivity import Connections
from ..description import NetworkDescription, Population, Projection
from ..errors import ConversionError, DataNotFoundError, InvalidValueError
from .base import RunSetup, Scheme, population_names, projected_layers, register

__all__ = ["AMOS", "Unit", "relu_unit", "load_unit", "sent_values", "synapse_count",
           "NEURON_EQUATIONS", "INPUT_EQUATIONS", "OUTPUT_EQUATIONS", "UNIT_DIR"]

#: Folder of the trained unit files ``amos_<gate>.npz``.
UNIT_DIR = Path(__file__).resolve().parents[1] / "data"

#: A McCulloch-Pitts neuron of an AMOS unit. ``v`` (volt): ``c_k x - H_k`` of the image it
#: evaluates next, i.e. the synaptic input delivered in the previous step plus ``v_rest``.
NEURON_EQUATIONS = """
v : volt                      # c_k x - H_k in volts (v_unit volts per ANN unit)
v_rest : volt (constant)      # c_k b_i v_unit: the bias part, restored every step
theta : volt (constant)       # threshold T_k v_unit
k : integer (constant)        # position of the neuron in its unit, 0 ... K-1
"""
#: Neuron ``k`` evaluates image ``n`` at step ``window_start + n period_steps + k`` only.
EVALUATES = ("t_in_timesteps >= window_start + k and "
             "(t_in_timesteps - window_start - k) % period_steps == 0")
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


def input_equations(n_delays):
    """Equations and ``shift`` event code of an input population whose synapses use delays ``0 ... n_delays - 1``."""
    buffer = "\n".join(f"x_{D} : 1  # value {D} steps ago" for D in range(n_delays))
    shift = "\n".join([f"x_{D} = x_{D - 1}" for D in range(n_delays - 1, 0, -1)] + ["x_0 = x_now"])
    return INPUT_EQUATIONS + buffer + "\n", ("i >= 0", shift)


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
    """

    c: np.ndarray
    T: np.ndarray
    d: np.ndarray
    h: np.ndarray
    gate: str = ""

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


def relu_unit(K, alpha):
    """The closed-form ReLU unit with ``K`` neurons on ``(-inf, alpha]`` (error at most ``alpha 2^-K``)."""
    powers = alpha * 2.0 ** -(np.arange(K) + 1.0)
    return Unit(c=np.ones(K), T=powers.copy(), d=powers.copy(), h=np.tril(np.tile(powers, (K, 1)), -1), gate="relu")


def load_unit(gate, folder=None):
    """The trained unit ``amos_<gate>.npz`` (``gate`` in ``"sigmoid"``, ``"silu"``, ``"product"``)."""
    path = Path(folder or UNIT_DIR) / f"amos_{gate}.npz"
    if not path.is_file():
        raise DataNotFoundError(f"No trained AMOS unit for {gate!r} at {path}; train it with "
                                f"'python benchmarks/train_amos_units.py {gate}'.")
    with np.load(path) as data:
        return Unit(c=data["c"], T=data["T"], d=data["d"], h=np.tril(data["h"], -1), gate=gate)


def _unit(gate, K, alpha, unit_dir):
    """The closed-form ReLU unit (``K`` neurons on ``(-inf, alpha]``) or the trained unit of ``gate``."""
    return relu_unit(K, alpha) if gate == "relu" else load_unit(gate, unit_dir)


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
    """

    name = "amos"
    activations = frozenset({"relu", "sigmoid", "silu"})
    ops = frozenset({"input", "linear", "conv", "avgpool"})
    defaults = dict(K=10, percentile=100.0, pipeline=True, dt=0.1 * ms, v_unit=1 * mV, unit_dir=None)

    def validate_options(self):
        super().validate_options()
        o = self.options
        if int(o["K"]) != o["K"] or not 1 <= o["K"] <= 52:
            raise InvalidValueError(f"K is a number of neurons per unit and must be an integer in [1, 52] "
                                    f"(float64 resolution), got {o['K']!r}.")

    # -- checks ----------------------------------------------------------------------------
    def check(self, graph):
        for layer in graph:
            if layer.op == "maxpool":
                raise ConversionError(f"amos: max-pooling ({layer.name!r}) is not supported yet; use average "
                                      "pooling (it is folded into the next layer's synapses).")
        super().check(graph)
        for layer in graph:
            if layer.op == "avgpool" and layer.activation is not None:
                raise ConversionError(f"amos: layer {layer.name!r} applies {layer.activation!r} after pooling.")
        if graph.output.op not in ("linear", "conv") or graph.output.activation is not None:
            raise ConversionError(f"amos: the output layer {graph.output.name!r} must be Linear or Conv2d without "
                                  "activation (its logits are read from the membrane).")

    def check_input(self, x):
        if np.min(x) < 0:
            raise InvalidValueError(f"amos codes the input with AMOS ReLU units on [0, x_max] and cannot carry the "
                                    f"negative inputs found (minimum {np.min(x):.3g}); use non-negative inputs.")

    def calibrate(self, graph, x):
        return calibrate(graph, x, self.options["percentile"])

    # -- units -------------------------------------------------------------------------------
    def unit_for(self, layer, calibration):
        """The :class:`Unit` that replaces the activation of ``layer``."""
        return _unit(layer.activation, int(self.options["K"]), calibration.scales[layer.name], self.options["unit_dir"])

    # -- description -----------------------------------------------------------------------
    def describe(self, graph, calibration):
        o = self.options
        v_unit = o["v_unit"]
        names = population_names(graph)
        inp = graph.input
        first = next(layer for layer in graph.layers[1:] if layer.is_weighted)
        n_delays = 1 if first is graph.output else self.unit_for(first, calibration).K
        equations, shift = input_equations(n_delays)
        populations = [Population(
            names[inp.name], inp.size, equations, threshold=INPUT_THRESHOLD, reset="", events={"shift": shift},
            layer=inp.name, shape=tuple(inp.out_shape), role="input")]
        projections = []
        units = {names[inp.name]: None}
        starts = {names[inp.name]: 0}
        for layer, source, connections in projected_layers(graph, names):
            name = names[layer.name]
            src_unit, n = units[source], layer.size
            bias = np.repeat(layer.bias, n // len(layer.bias))
            if layer is graph.output:
                populations.append(Population(
                    name, n, OUTPUT_EQUATIONS, events={"clear": CLEAR}, values=dict(v_rest=bias * v_unit),
                    layer=layer.name, shape=layer.out_shape, role="output"))
                target_unit = None
                starts[name] = starts[source] + (src_unit.K - 1 if src_unit else 0)
            else:
                target_unit = self.unit_for(layer, calibration)
                K = target_unit.K
                populations.append(Population(
                    name, K * n, NEURON_EQUATIONS, threshold=NEURON_THRESHOLD, reset="", events={"clear": CLEAR},
                    values=dict(v_rest=np.outer(target_unit.c, bias).ravel() * v_unit,
                                theta=np.repeat(target_unit.T, n) * v_unit, k=np.repeat(np.arange(K), n)),
                    layer=layer.name, shape=(K,) + tuple(layer.out_shape)))
                projections += _inhibition(name, target_unit, n, v_unit)
                units[name] = target_unit
                starts[name] = starts[source] + (src_unit.K if src_unit else 1)
            projections += _feedforward(source, name, connections, src_unit, target_unit, v_unit)
        for population in populations:
            population.window_start = starts[population.name]
        period = 1 if o["pipeline"] else max(starts.values()) + 1
        return NetworkDescription(
            scheme=self.name, populations=populations, projections=projections, dt=o["dt"], period_steps=period,
            input_population=populations[0].name, output_population=populations[-1].name, output_variable="v",
            output_unit=v_unit, readout_step=0,
            options=dict(self.options, scales=dict(calibration.scales),
                         units={name: (u.gate, u.K) for name, u in units.items() if u is not None}))

    def reference(self, graph, calibration, x):
        """The function the AMOS network computes, in numpy float64 (no Brian2).

        Returns
        -------
        outputs : np.ndarray, shape (N, n_outputs)
        values : dict
            ``layer name -> (N, *out_shape)``: what each layer sends (unit outputs ``y``).
        """
        import torch

        values = {graph.input.name: graph.check_input(x)}
        for layer in graph.layers[1:]:
            with torch.no_grad():
                z = layer.pre_activation(*(torch.as_tensor(values[name]) for name in layer.inputs)).numpy()
            values[layer.name] = z if layer.activation is None else self.unit_for(layer, calibration)(z)
        return values[graph.output.name].reshape(len(values[graph.input.name]), -1), values

    # -- runs --------------------------------------------------------------------------------
    def setup(self, description):
        """No run-time parameters: thresholds are part of the built units."""
        starts = {p.name: p.window_start for p in description.populations}
        return RunSetup({}, starts, readout_step=0, parameters={})

    def evaluation_lags(self, description, population):
        """Neuron ``k`` of a unit answers ``k`` steps after its image's window starts."""
        p = description.population(population)
        return np.asarray(p.values["k"]) if "k" in p.values else None

    def population_unit(self, description, population):
        """The :class:`Unit` of a hidden population (rebuilt from the description)."""
        p = description.population(population)
        if population not in description.options["units"]:
            raise InvalidValueError(f"{population!r} is the {p.role} population, not a layer of AMOS units.")
        gate, K = description.options["units"][population]
        return _unit(gate, K, description.options["scales"][p.layer], description.options["unit_dir"])

    def population_values(self, description, result, population):
        """What a hidden population sends, ``y = sum_k d_k z_k`` per unit, shape ``(N, n_units)``.

        Needs ``simulate(..., spikes=[population])``.
        """
        if population not in result.spikes:
            raise InvalidValueError(f"Simulate with spikes=[{population!r}] to decode {population!r}.")
        unit = self.population_unit(description, population)
        return sent_values(result, description, population, unit, result.n_images)[0]


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


def _connections(pre, post, weight, n_pre, n_post):
    return Connections(np.ascontiguousarray(pre, dtype=np.int32), np.ascontiguousarray(post, dtype=np.int32),
                       np.ascontiguousarray(weight, dtype=np.float64), int(n_pre), int(n_post))


def _inhibition(name, unit, n, v_unit):
    """Neuron m -> neuron k > m of every unit, weight -h[k, m], delay k - m - 1: one projection per delay."""
    K, units = unit.K, np.arange(n)
    projections = []
    for delay in range(K - 1):
        pairs = [(m, m + 1 + delay) for m in range(K - 1 - delay) if unit.h[m + 1 + delay, m] != 0]
        if not pairs:
            continue
        pre = np.concatenate([m * n + units for m, _ in pairs])
        post = np.concatenate([k * n + units for _, k in pairs])
        weight = np.concatenate([np.full(n, -unit.h[k, m]) for m, k in pairs])
        projections.append(Projection(f"{name}_inh{delay}", name, name, _connections(pre, post, weight, K * n, K * n),
                                      model=SYNAPSE_MODEL, on_pre=ON_PRE, weight_unit=v_unit, delay_steps=delay))
    return projections


def _feedforward(source, target, connections, src_unit, target_unit, v_unit):
    """Source neuron k_s -> target neuron k_t, weight W d_ks c_kt, delay K_s - 1 + k_t - k_s (one projection per delay).

    For the output layer (``target_unit`` None) every ``k_s`` sends ``W d_ks`` with delay ``K_s - 1 - k_s``.
    From the input relay (``src_unit`` None) the value itself is the payload: weight ``W c_kt``, delay ``k_t``.
    """
    n_pre, n_post = connections.n_pre, connections.n_post
    Ks = 1 if src_unit is None else src_unit.K
    d_s = np.ones(1) if src_unit is None else src_unit.d
    K_t = 1 if target_unit is None else target_unit.K
    c_t = np.ones(1) if target_unit is None else target_unit.c
    shift = 0 if src_unit is None else Ks - 1
    projections = []
    for delay in range(Ks + K_t - 1):
        pairs = [(ks, kt) for kt in range(K_t) for ks in range(Ks)
                 if shift + kt - ks == delay and d_s[ks] * c_t[kt] != 0]
        if not pairs:
            continue
        pre = np.concatenate([ks * n_pre + connections.pre for ks, _ in pairs])
        post = np.concatenate([kt * n_post + connections.post for _, kt in pairs])
        weight = np.concatenate([connections.weight * d_s[ks] * c_t[kt] for ks, kt in pairs])
        on_pre = ON_PRE if src_unit is not None else f"v_post += w * x_{delay}_pre"
        projections.append(Projection(f"{source}_to_{target}_d{delay}", source, target,
                                      _connections(pre, post, weight, Ks * n_pre, K_t * n_post),
                                      model=SYNAPSE_MODEL, on_pre=on_pre, weight_unit=v_unit, delay_steps=delay))
    return projections


def synapse_count(description):
    """Synapses per projection kind of a description: ``{"feedforward": int, "inhibition": int}``."""
    counts = {"feedforward": 0, "inhibition": 0}
    for projection in description.projections:
        counts["inhibition" if projection.source == projection.target else "feedforward"] += projection.n_synapses
    return counts
