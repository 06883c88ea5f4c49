"""A NIR graph as a :class:`~brianconv.description.NetworkDescription` (read by the one builder).

(Longer than the ~400 lines of a module, 502 lines of which 22 are this docstring: each NIR node
type's mapping to Brian2 equations sits next to the others it is composed with.)

Nodes without state (Affine, Linear, Scale, Conv2d, Flatten, SumPool2d, AvgPool2d, Delay) get
no neurons: like average pooling in the coding schemes, they are composed
(:func:`brianconv.connectivity.compose`) into the projections between the populations of the
nodes with state (IF, LIF, LI, I, CubaLIF, CubaLI, Threshold), the Input and the Output. Their
biases become the constant input ``b`` of the population they reach.

Order of operations inside a step ``t`` (Brian2's schedule)
-----------------------------------------------------------
1. ``before_groups``: a population whose window ended in step ``t - 1`` resets its state to 0.
2. ``groups``: the neuron equations advance by ``dt`` with the input ``b + I`` held constant.
3. ``thresholds``: ``v > v_th`` emits spikes.
4. ``before_synapses``: ``I = 0``; then the synapses add this step's spikes to their targets' ``I``.
5. ``resets``: ``v - v_th`` (subtraction) or ``v_reset``.

A spike of step ``t`` is integrated by its target in step ``t + 1``, so the population of a
node at depth ``k`` (``k`` stateful nodes after the input) has its window start at step ``k``:
step ``s`` of every window is the discrete frameworks' step ``s``, in which a signal crosses the
whole feed-forward network. Projections that skip depths get the missing steps as a delay;
recurrent edges (back to an earlier node) keep their one-step latency, like snnTorch's RLeaky.
"""

import keyword
from dataclasses import dataclass

import numpy as np
from brian2 import second, volt

from ..connectivity import compose, conv2d, linear, make_connections, one_to_one, pool2d
from ..description import NetworkDescription, Population, Projection
from ..errors import ConversionError, InvalidValueError
from ..schemes.options import SchemeState
from . import equations as eq

__all__ = ["SUPPORTED", "NODE_HANDLERS", "describe_graph", "brian_name"]


@dataclass
class _Term:
    """Part of a signal: the values ``connections`` make from ``source``'s output, ``delay`` steps late."""

    source: str
    connections: object
    delay: int = 0


@dataclass
class _Signal:
    """The signal on an edge: a sum of terms plus a constant (bias), with its per-sample shape."""

    terms: list
    bias: np.ndarray
    shape: tuple

    @property
    def size(self):
        return int(np.prod(self.shape))

    def map(self, connections, bias=None, shape=None):
        """This signal after the linear map ``connections`` (and ``bias``), with the new ``shape``."""
        terms = [_Term(t.source, compose(t.connections, connections), t.delay) for t in self.terms]
        new_bias = connections.apply(self.bias[None, :])[0]
        if bias is not None:
            new_bias = new_bias + bias
        return _Signal(terms, new_bias, tuple(shape))


# ---------------------------------------------------------------------------------------------
# node handlers: signal in -> signal out
# ---------------------------------------------------------------------------------------------

def _affine(node, signal, options):
    weight = _numpy(node.weight)
    if weight.ndim != 2:
        raise ConversionError(f"Affine/Linear weight of shape {weight.shape}: only 2-D weights are supported.")
    if weight.shape[1] != signal.size:
        raise ConversionError(f"Affine/Linear expects {weight.shape[1]} inputs but receives {signal.size} "
                              f"(shape {signal.shape}).")
    bias = _numpy(node.bias) if getattr(node, "bias", None) is not None else None
    return signal.map(linear(weight), bias, (weight.shape[0],))


def _scale(node, signal, options):
    n = signal.size
    scale = _broadcast(node.scale, n, "scale", "Scale")
    return signal.map(make_connections(np.arange(n), np.arange(n), scale, n, n), None, signal.shape)


def _conv2d(node, signal, options):
    weight = _numpy(node.weight)
    in_shape = _image_shape(signal.shape, "Conv2d")
    kernel = weight.shape[2:]
    stride, dilation = _pair(node.stride), _pair(node.dilation)
    padding = _padding(node.padding, kernel, dilation)
    out_hw = [(in_shape[k + 1] + 2 * padding[k] - dilation[k] * (kernel[k] - 1) - 1) // stride[k] + 1
              for k in range(2)]
    out_shape = (weight.shape[0], *out_hw)
    connections = conv2d(weight, in_shape, out_shape, stride, padding, dilation, int(node.groups))
    bias = np.repeat(_numpy(node.bias), out_hw[0] * out_hw[1]) if node.bias is not None else None
    return signal.map(connections, bias, out_shape)


def _pool(average):
    def handler(node, signal, options):
        in_shape = _image_shape(signal.shape, "pooling")
        kernel, stride, padding = _pair(node.kernel_size), _pair(node.stride), _pair(node.padding)
        out_hw = [(in_shape[k + 1] + 2 * padding[k] - kernel[k]) // stride[k] + 1 for k in range(2)]
        out_shape = (in_shape[0], *out_hw)
        return signal.map(pool2d(in_shape, out_shape, kernel, stride, padding, average=average), None, out_shape)
    return handler


def _flatten(node, signal, options):
    shape = signal.shape
    start = node.start_dim % len(shape) if shape else 0
    end = node.end_dim % len(shape) if shape else 0
    new_shape = shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:]
    return _Signal(signal.terms, signal.bias, new_shape)


def _delay(node, signal, options):
    delay = _numpy(node.delay).ravel()
    steps = np.rint(delay / float(options.dt / second)).astype(int)
    if len(np.unique(steps)) > 1:
        raise ConversionError("Delay with different delays per element is not supported (only one delay per node).")
    if not np.allclose(steps * float(options.dt / second), delay, rtol=1e-6, atol=1e-12):
        raise ConversionError(f"Delay {delay[0]} s is not a multiple of dt = {options.dt}; choose dt to divide it.")
    return _Signal([_Term(t.source, t.connections, t.delay + int(steps[0])) for t in signal.terms], signal.bias,
                   signal.shape)


#: NIR class name -> handler of a node without state (the dispatch table; anything else raises).
NODE_HANDLERS = {"Affine": _affine, "Linear": _affine, "Scale": _scale, "Conv2d": _conv2d,
                 "SumPool2d": _pool(average=False), "AvgPool2d": _pool(average=True), "Flatten": _flatten,
                 "Delay": _delay}
#: Every NIR node type this importer reads.
SUPPORTED = ("Input", "Output", *NODE_HANDLERS, *eq.MODELS)


# ---------------------------------------------------------------------------------------------
# the description
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class NIRState(SchemeState):
    """An imported graph's options (``scales`` is empty) and ``node_names``: NIR node -> population name."""

    node_names: dict


def describe_graph(graph, options):
    """The :class:`NetworkDescription` of a NIR graph.

    Parameters
    ----------
    graph : nir.NIRGraph
    options : brianconv.nir.network.NIROptions
        ``dt``, ``steps`` (image period), ``frames`` (1 or ``steps``), ``v_unit``, ``method``,
        ``reset`` and ``input_shape`` (see :func:`brianconv.nir.from_nir`).
    """
    nodes, edges = dict(graph.nodes), [tuple(e) for e in graph.edges]
    _check_types(nodes)
    inputs = [name for name, node in nodes.items() if _kind(node) == "Input"]
    outputs = [name for name, node in nodes.items() if _kind(node) == "Output"]
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConversionError(f"The NIR graph has inputs {inputs} and outputs {outputs}; brianconv reads graphs with "
                              "exactly one Input and one Output node.")
    source, sink = inputs[0], outputs[0]
    order = _topological_order(source, nodes, edges)
    position = {name: k for k, name in enumerate(order)}
    names = _population_names(nodes)
    input_shape = tuple(options.input_shape) if options.input_shape else _input_shape(graph, source, edges)
    signals = _Signals(nodes, edges, source, input_shape, options)
    depth = {source: 0}
    populations = [_input_population(names[source], source, input_shape, options)]
    received = {}
    for name in (n for n in order if _kind(nodes[n]) in eq.MODELS):
        signal = signals.into_neurons(name)
        forward = [depth[t.source] for t in signal.terms if position[t.source] < position[name]]
        depth[name] = 1 + max(forward, default=0)
        received[name] = signal
        populations.append(_neuron_population(names[name], name, nodes[name], signal.shape, signal.bias, options))
    output_signal = signals.incoming(sink)
    output_population, output_variable = _output(names, nodes, sink, output_signal, depth, populations)
    projections = []
    for name, signal in received.items():
        projections += _projections(names, name, signal, depth, position, source, accumulate=False)
    if output_variable == "y":
        projections += _projections(names, sink, output_signal, depth, position, source, accumulate=True)
    for population in populations:
        population.window_start = depth[population.layer]
    return NetworkDescription(
        scheme="nir", populations=populations, projections=projections, dt=options.dt,
        period_steps=int(options.steps), input_population=populations[0].name,
        output_population=output_population, output_variable=output_variable,
        output_unit=options.v_unit if output_variable == "v" else 1.0, readout_step=int(options.steps) - 1,
        state=NIRState(options, {}, names))


class _Signals:
    """The signal on every edge of a NIR graph, as terms from populations (memoised)."""

    def __init__(self, nodes, edges, source, input_shape, options):
        self.nodes, self.options, self.source = nodes, options, source
        self.predecessors = {name: [a for a, b in edges if b == name] for name in nodes}
        self.shapes = {source: input_shape}
        self.shapes.update({name: _neuron_shape(node) for name, node in nodes.items() if _kind(node) in eq.MODELS})
        self.memo = {}

    def output_of(self, name, visiting=()):
        """The signal a node outputs (stateful nodes and the input output their own spikes/values)."""
        if name in self.memo:
            return self.memo[name]
        kind = _kind(self.nodes[name])
        if name == self.source or kind in eq.MODELS:
            if self.shapes[name] is None:
                raise ConversionError(f"Node {name!r} has scalar parameters and is read before its input is known "
                                      "(a loop); give its parameters one value per neuron.")
            n = int(np.prod(self.shapes[name]))
            self.memo[name] = _Signal([_Term(name, one_to_one(n))], np.zeros(n), self.shapes[name])
            return self.memo[name]
        if name in visiting:
            raise ConversionError(f"Node {name!r} is on a loop without a neuron; every loop needs a stateful node.")
        self.memo[name] = NODE_HANDLERS[kind](self.nodes[name], self.incoming(name, visiting + (name,)), self.options)
        return self.memo[name]

    def incoming(self, name, visiting=()):
        """The sum of the signals on the edges into ``name``."""
        if not self.predecessors[name]:
            raise ConversionError(f"Node {name!r} has no incoming edge.")
        parts = [self.output_of(source, visiting) for source in self.predecessors[name]]
        sizes = {p.size for p in parts}
        if len(sizes) > 1:
            raise ConversionError(f"Node {name!r} sums inputs of different sizes {sorted(sizes)}.")
        return _Signal([t for p in parts for t in p.terms], sum(p.bias for p in parts), parts[0].shape)

    def into_neurons(self, name):
        """The input of stateful node ``name``; fixes its shape (scalar or flat parameters take the input's)."""
        signal = self.incoming(name)
        shape = self.shapes[name]
        if shape is None or (signal.size == int(np.prod(shape)) and len(signal.shape) > len(shape)):
            self.shapes[name] = shape = signal.shape   # keeps a feature map's (C, H, W) order
            if name in self.memo:
                self.memo[name].shape = shape
        if signal.size != int(np.prod(shape)):
            raise ConversionError(f"Node {name!r} has {int(np.prod(shape))} neurons but receives {signal.size} values.")
        for term in signal.terms:
            kind = _kind(self.nodes[term.source])
            if term.source != self.source and not eq.MODELS[kind].spiking:
                raise ConversionError(f"Node {name!r} reads the {kind} node {term.source!r}, which does not spike; "
                                      "only the Output may read LI/I/CubaLI nodes (their v).")
        return _Signal(signal.terms, signal.bias, shape)


def _output(names, nodes, output, signal, depth, populations):
    """The output population and variable: an accumulator of spikes, or the state of an LI/I/CubaLI."""
    sources = {t.source for t in signal.terms}
    analog = [s for s in sources if _kind(nodes[s]) in eq.MODELS and not eq.MODELS[_kind(nodes[s])].spiking]
    if analog:
        only = len(signal.terms) == 1 and not np.any(signal.bias)
        term = signal.terms[0]
        identity = only and np.array_equal(term.connections.pre, term.connections.post) and \
            np.all(term.connections.weight == 1) and len(term.connections) == term.connections.n_post
        if not identity:
            raise ConversionError(f"The Output node {output!r} reads non-spiking nodes {sorted(analog)} through a "
                                  "linear map; connect the LI/I/CubaLI node to the Output directly.")
        return names[term.source], "v"
    depth[output] = max(depth[s] for s in sources) if sources else 0
    populations.append(Population(
        names[output], signal.size, eq.OUTPUT_EQUATIONS,
        events={"new_image": ("last == 1", "y = 0", "before_groups"), "bias": ("True", "y = y + b", "before_synapses")},
        values=dict(b=signal.bias.copy()), layer=output, shape=signal.shape, role="output"))
    return names[output], "y"


def _projections(names, target, signal, depth, position, input_name, accumulate):
    """One projection per term of the signal into ``target``, delayed to align the windows.

    The delay of a feed-forward term is the number of depths it skips (so that step ``s`` of the
    target's window integrates step ``s`` of the source's window); a recurrent term (its source
    comes later in the graph order) keeps the one-step latency of a spike.
    """
    projections, used = [], set()
    for term in signal.terms:
        if len(term.connections) == 0:
            continue
        source = term.source
        recurrent = not accumulate and position[source] >= position[target]
        align = 0 if recurrent else depth[target] - depth[source] - (0 if accumulate else 1)
        base = f"{names[source]}_to_{names[target]}"
        name = base if base not in used else f"{base}_{len(used)}"
        used.add(name)
        on_pre = eq.INPUT_ON_PRE if source == input_name else eq.SPIKE_ON_PRE
        if accumulate:
            on_pre = on_pre.replace("I_post", "y_post")
        if term.delay:
            on_pre += " * " + _same_sample_gate(term.delay, accumulate)
        projections.append(Projection(name, names[source], names[target], term.connections, on_pre=on_pre,
                                      delay_steps=int(align + term.delay)))
    return projections


def _same_sample_gate(delay, accumulate):
    """Factor 1 for a delayed spike of the target's current sample, 0 for one of the previous sample.

    Samples run back to back: a spike emitted in the last ``delay`` steps of a sample would reach
    the next sample's window. A spike of source step ``s`` is delivered in the target's step
    ``s + delay - 1`` (``s + delay`` for the output accumulator, which counts in the step it
    receives), so spikes delivered outside ``[delay - 1, T - 2]`` (``[delay, T - 1]``) belong to
    the previous sample and are dropped.
    """
    if accumulate:
        return f"int(local_step_post >= {delay})"
    return f"int(local_step_post >= {delay - 1}) * int(local_step_post < period_steps_post - 1)"


def _input_population(name, node_name, shape, options):
    n = int(np.prod(shape))
    return Population(name, n, eq.INPUT_EQUATIONS, threshold=eq.INPUT_THRESHOLD, reset="",
                      events={"hold": ("True", eq.INPUT_HOLD, "before_synapses")},
                      values=dict(frames=int(options.frames), n_features=n), layer=node_name, shape=shape,
                      role="input")


def _neuron_population(name, node_name, node, shape, bias, options):
    kind = _kind(node)
    model = eq.MODELS[kind]
    n = int(np.prod(shape))
    values = dict(b=bias.copy())
    for field_name, (variable, unit_kind) in model.parameters.items():
        values[variable] = _parameter(node, field_name, n, unit_kind, options)
    events = {"clear": ("True", eq.CLEAR_INPUT, "before_synapses")}
    if model.state:
        events["new_image"] = ("last == 1", "\n".join(f"{v} = {v} * 0" for v in model.state), "before_groups")
    threshold, reset = None, None
    if kind == "Threshold":
        threshold, reset = "started == 1 and b + I > theta", ""
    elif model.spiking:
        threshold = eq.SPIKE_THRESHOLD
        v_reset = getattr(node, "v_reset", None)
        mode = options.reset
        if mode == "auto":
            mode = "subtract" if v_reset is None else "value"
        reset = eq.RESET_SUBTRACT if mode == "subtract" else eq.RESET_TO_VALUE
        values["v_reset"] = (_broadcast(v_reset, n, "v_reset", node_name) if v_reset is not None else np.zeros(n)) \
            * options.v_unit
    return Population(name, n, model.equations, threshold=threshold, reset=reset, events=events, values=values,
                      layer=node_name, shape=shape, method=options.method if kind != "Threshold" else "euler")


def _parameter(node, field_name, n, unit_kind, options):
    value = _broadcast(getattr(node, field_name), n, field_name, type(node).__name__)
    unit = {"voltage": options.v_unit, "time": second, "resistance": options.v_unit,
            "rate_resistance": options.v_unit / second, "number": 1.0}[unit_kind]
    if unit_kind == "time" and np.any(value <= 0):
        raise ConversionError(f"{type(node).__name__}.{field_name} must be > 0 (a time constant in seconds).")
    return value * unit


# ---------------------------------------------------------------------------------------------
# graph helpers
# ---------------------------------------------------------------------------------------------

def _kind(node):
    return type(node).__name__


def _check_types(nodes):
    for name, node in nodes.items():
        kind = _kind(node)
        if kind == "NIRGraph":
            raise ConversionError(f"Node {name!r} is a nested NIRGraph (e.g. snnTorch's RLeaky/RSynaptic); brianconv "
                                  "reads flat graphs: express the recurrence as edges of the top-level graph.")
        if kind not in SUPPORTED:
            raise ConversionError(f"NIR node {name!r} of type {kind!r} has no brianconv equivalent; supported types: "
                                  f"{', '.join(SUPPORTED)}.")


def _topological_order(start, nodes, edges):
    """Nodes in depth-first post-order from ``start``, reversed (back edges of loops ignored)."""
    successors = {name: [b for a, b in edges if a == name] for name in nodes}
    seen, order, stack = {start}, [], [(start, iter(successors[start]))]
    while stack:
        node, children = stack[-1]
        child = next(children, None)
        if child is None:
            order.append(node)
            stack.pop()
        elif child not in seen:
            seen.add(child)
            stack.append((child, iter(successors[child])))
    unreachable = sorted(set(nodes) - seen)
    if unreachable:
        raise ConversionError(f"Nodes {unreachable} cannot be reached from the Input node.")
    return order[::-1]


def _input_shape(graph, name, edges):
    """The shape of one input sample: the Input node's shape without a leading batch (and time) axis."""
    shape = tuple(int(s) for s in np.asarray(graph.nodes[name].input_type["input"]).ravel())
    consumers = [graph.nodes[b] for a, b in edges if a == name]
    for node in consumers:
        if _kind(node) in ("Affine", "Linear") and _numpy(node.weight).ndim == 2:
            features = _numpy(node.weight).shape[1]
            if shape[-1:] == (features,):  # leading batch/time axes dropped
                return (features,)
        if _kind(node) == "Conv2d" and len(shape) > 3:
            return shape[-3:]
        if _kind(node) in eq.MODELS and _neuron_shape(node) is not None:
            return _neuron_shape(node)
    return shape


def _neuron_shape(node):
    """The shape of a stateful node from its parameters or declared input type; None if all its
    parameters are scalars and no type is declared (the incoming signal then decides)."""
    model = eq.MODELS[_kind(node)]
    sizes = [np.shape(_numpy(getattr(node, f))) for f in model.parameters]
    shape = max(sizes, key=lambda s: int(np.prod(s)))
    if int(np.prod(shape)) > 1:
        return tuple(int(s) for s in shape)
    declared = (node.input_type or {}).get("input")
    if declared is not None and np.size(declared) and int(np.prod(declared)) > 1:
        return tuple(int(s) for s in np.asarray(declared).ravel())
    return None


def _population_names(nodes):
    names = {}
    for name in nodes:
        base = brian_name(name)
        names[name] = base if base not in names.values() else f"{base}_{len(names)}"
    return names


def brian_name(name):
    """A valid Brian2 object name for a NIR node name (letters, digits and '_', not starting with a digit)."""
    safe = "".join(c if c.isalnum() or c == "_" else "_" for c in str(name))
    if not safe or not safe[0].isalpha():
        safe = "n" + safe
    return safe + "_" if keyword.iskeyword(safe) else safe


def _numpy(value):
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _broadcast(value, n, field_name, node_name):
    array = _numpy(value).ravel()
    if array.size == 1:
        return np.full(n, float(array[0]))
    if array.size != n:
        raise ConversionError(f"{node_name}.{field_name} has {array.size} values for {n} neurons.")
    return array.copy()


def _pair(value):
    array = np.asarray(value).ravel()
    return (int(array[0]), int(array[0])) if array.size == 1 else (int(array[0]), int(array[1]))


def _padding(padding, kernel, dilation):
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0)
        if any((dilation[k] * (kernel[k] - 1)) % 2 for k in range(2)):
            raise ConversionError("Conv2d padding='same' with an even kernel extent needs asymmetric padding, "
                                  "which is not supported; pad explicitly.")
        return tuple(dilation[k] * (kernel[k] - 1) // 2 for k in range(2))
    return _pair(padding)


def _image_shape(shape, what):
    if len(shape) != 3:
        raise ConversionError(f"{what} needs a (C, H, W) input, got shape {shape}.")
    return tuple(int(s) for s in shape)


def check_steps(steps):
    """Raise unless ``steps`` is an integer >= 1."""
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise InvalidValueError(f"steps is the number of time steps per input and must be an integer >= 1, "
                                f"got {steps!r}.")


def check_dt(dt):
    """Raise unless ``dt`` is a positive Brian2 time."""
    from brian2 import get_dimensions

    if not (get_dimensions(dt) == get_dimensions(second) and float(dt / second) > 0):
        raise InvalidValueError(f"dt must be a positive Brian2 time (e.g. 1e-4 * second, the dt the NIR graph was "
                                f"written for), got {dt!r}.")


def check_voltage(v_unit):
    from brian2 import get_dimensions

    if not (get_dimensions(v_unit) == get_dimensions(volt) and float(v_unit / volt) > 0):
        raise InvalidValueError(f"v_unit must be a positive voltage (e.g. 1 * mV), got {v_unit!r}.")
