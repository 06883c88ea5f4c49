"""The AMOS scheme: options, checks, description and runs (see :mod:`brianconv.schemes.amos`)."""

from dataclasses import dataclass

import numpy as np
from brian2 import ms

from ...connectivity import one_to_one
from ...description import Kind, NetworkDescription, Population
from ...errors import ConversionError, InvalidValueError
from ..base import RunSetup, Scheme, carries_non_negative, clip_of, register
from ..options import Options, SchemeState, dt_option, option, percentile_option, v_unit_option
from ..projections import incoming_projections, merged_by_source, population_names
from .reference import _has_units, _reference_values, sent_values
from .units import _largest_sent, _unit, code_product
from .wiring import CLEAR, INPUT_EQUATIONS, INPUT_THRESHOLD, OUTPUT_EQUATIONS, WIRINGS, _Wiring, resolve_wiring

__all__ = ["AMOS", "AMOSOptions", "AMOSState", "PRODUCTS"]

#: How a ``mul`` layer is computed: ``"trained"``, the paper's trained two-input unit (K = 40);
#: ``"code"``, coincidence neurons multiplying the factors' spike codes exactly (:class:`CodeProduct`).
PRODUCTS = ("trained", "code")


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

    def unsupported_perturbations(self):
        """AMOS neurons are memoryless gates: their potential is cleared every step."""
        return {"tau_m": "AMOS neurons are memoryless threshold gates whose potential is cleared every step "
                         "(the CLEAR event); a leak has nothing to act on."}

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
