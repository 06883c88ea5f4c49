"""Residual sums, channel concatenation and clipped ReLU in the rate and ttfs schemes.

Every hidden layer's decoded values are compared with the layer's ANN forward pass applied to the
*decoded* values of its inputs, within the bound the scheme's code gives for one layer; the
output is compared exactly (both schemes' outputs integrate their inputs without rounding). The
graphs have a skip connection over two convolutions (a sum of a depth-1 and a depth-3 layer) and
readers of concatenations of branches of different depth, so every check depends on the delays
that align the branches in time.

ttfs: a value is sent as ``q = round(x / lambda * T)`` steps, so a layer's spiking value differs
from its ANN value on its decoded inputs, clipped to ``[0, lambda]``, by at most half a step,
``lambda / (2 T)``.

rate (reset by subtraction): a layer driven by the analog input integrates a constant charge
``a = z / lambda`` per step and fires ``n = min(floor(T a), T)`` times (Eq. 6). A layer whose
every charge is non-negative (a sum: one-to-one weights ``lambda_s / lambda_add``, no bias; a
conv with non-negative weights and bias) has ``v >= 0`` throughout, so ``n <= Q`` for its
window's charge ``Q = T z / lambda``, and ``n = floor(Q)`` unless it still fires in the window's
last step (saturation). Layers with mixed-sign weights reading spike trains have no such
one-window bound (Rueckauer et al.'s transient) and are only checked through their readers.
"""

import numpy as np
import pytest
import skip_graphs
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from skip_graphs import conv, linear, skip_graph

import brianconv
from brianconv import schemes
from brianconv.errors import ConversionError, InvalidValueError
from brianconv.graph import Layer, LayerGraph
from brianconv.simulation import SpikingNetwork

T_RATE = 64
T_TTFS = 16
DEVICE = "numpy"   # no code to compile (a fresh CI venv misses the Cython cache, keyed per interpreter)
FLOAT_SLACK = 1e-9   # rounding of membrane sums: a count or a spike step can differ only at an exact tie
SHAPE = (2, 5, 5)


# ---------------------------------------------------------------------------------------------
# graphs
# ---------------------------------------------------------------------------------------------

class Residual(nn.Module):
    """x0 = relu(conv0(x)); y = relu(relu(conv2(relu(conv1(x0)))) + x0): the skip spans two convs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(3)
        self.conv0 = nn.Conv2d(2, 3, 3, padding=1)
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.out = nn.Linear(3 * 5 * 5, 4)
        with torch.no_grad():
            self.conv1.bias.add_(0.2)
            self.conv2.bias.add_(0.2)

    def forward(self, x):
        x0 = F.relu(self.conv0(x))
        y = F.relu(F.relu(self.conv2(F.relu(self.conv1(x0)))) + x0)
        return self.out(torch.flatten(y, 1))


def _residual_graph():
    return brianconv.graph.trace(Residual().eval(), SHAPE)


def _concat_graph():
    """c0 (depth 1) -> c1 (depth 2); r reads cat(c1, c0); the output reads cat(r, c0): branches of depth 3 and 1."""
    rng = np.random.default_rng(4)
    x = Layer("x", "input", [], SHAPE, SHAPE)
    c0 = conv("c0", "x", SHAPE, 3, rng)
    c1 = conv("c1", "c0", c0.out_shape, 2, rng)
    cat1 = skip_graphs.cat("cat1", c1, c0)
    r = conv("r", "cat1", cat1.out_shape, 3, rng, kernel=1, positive=True)
    cat2 = skip_graphs.cat("cat2", r, c0)
    out = linear("out", "cat2", cat2.size, 4, rng)
    return LayerGraph([x, c0, c1, cat1, r, cat2, out])


def _clipped_graph(x):
    """c0: clipped ReLU whose clip most activations reach; c1 (reads c0): a clip none reaches."""
    rng = np.random.default_rng(5)
    inp = Layer("x", "input", [], SHAPE, SHAPE)
    c0 = conv("c0", "x", SHAPE, 3, rng, activation="clipped_relu", clip=1.0)
    with torch.no_grad():
        z0 = c0.pre_activation(torch.as_tensor(x, dtype=torch.float64)).numpy()
    c0.params["clip"] = float(np.percentile(z0[z0 > 0], 60))          # 40 % of the positive values are clipped
    c1 = conv("c1", "c0", c0.out_shape, 2, rng, activation="clipped_relu", clip=1e3, positive=True)
    out = linear("out", "c1", c1.size, 3, rng)
    return LayerGraph([inp, c0, c1, out])


def _inputs(n, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, size=(n,) + SHAPE)


def _convert(graph, method, x, **options):
    """:func:`brianconv.convert` for a layer graph built by hand (the tracer does not emit ``cat`` yet)."""
    scheme = schemes.get(method)(**options)
    scheme.check(graph)
    x = graph.check_input(x)
    scheme.check_input(x)
    calibration = scheme.calibrate(graph, x)
    return SpikingNetwork(graph, scheme, calibration, scheme.describe(graph, calibration))


def _populations(snn):
    """``layer name -> population name`` for every layer with neurons."""
    return {p.layer: p.name for p in snn.description.populations}


def _layer_inputs(snn, layer, values):
    return [torch.as_tensor(values[name]) for name in layer.inputs]


# ---------------------------------------------------------------------------------------------
# ttfs
# ---------------------------------------------------------------------------------------------

def _ttfs_errors(snn, result):
    """Per hidden layer, the largest ``|decoded - clip(ANN(decoded inputs), 0, lambda)|`` over the
    half-step bound ``lambda / (2 T)``; and the output's largest deviation from ``W decoded + b``."""
    populations, T = _populations(snn), result.parameters["t_max"]
    values, excess = {}, {}
    for layer in snn.graph:
        if layer.op == "input":
            values[layer.name] = snn.scheme.population_values(snn.description, result, populations[layer.name])
            continue
        with torch.no_grad():
            inputs = _layer_inputs(snn, layer, values)
            expected = layer.forward(*inputs).reshape(len(inputs[0]), -1).numpy()
        if layer.name not in populations:          # folded (cat): its readers see the branches as they are
            values[layer.name] = expected.reshape((-1,) + layer.out_shape)
        elif layer is snn.graph.output:
            excess["output"] = np.max(np.abs(result.outputs - expected))
        else:
            scale = snn.calibration.scales[layer.name]
            decoded = snn.scheme.population_values(snn.description, result, populations[layer.name])
            excess[layer.name] = np.max(np.abs(decoded - np.clip(expected, 0, scale))) - scale / (2 * T)
            values[layer.name] = decoded.reshape((-1,) + layer.out_shape)
    return excess


def _check_ttfs(snn, result):
    excess = _ttfs_errors(snn, result)
    assert excess.pop("output") < 1e-9, "the output integrates W x + b of the decoded inputs exactly"
    for name, value in excess.items():
        assert value <= FLOAT_SLACK, f"layer {name!r} is off by more than half a step ({value:.3g} beyond)"


@pytest.mark.parametrize("integration, pipeline", [("clock", True), ("event", True), ("clock", False),
                                                   ("event", False)])
def test_ttfs_residual_block_every_layer_within_half_a_step(integration, pipeline):
    graph, x = _residual_graph(), _inputs(6)
    snn = _convert(graph, "ttfs", x, t_max=T_TTFS, percentile=100, integration=integration, pipeline=pipeline)
    populations = _populations(snn)
    add = next(layer for layer in graph if layer.op == "add")
    skip, = [q for q in snn.description.projections if q.target == populations[add.name] and q.delay_steps]
    assert skip.source == populations["conv0"] and skip.delay_steps == 2 * T_TTFS   # over two two-stage layers
    result = snn.simulate(x, device=DEVICE, spikes=list(populations.values())[:-1])
    _check_ttfs(snn, result)
    assert np.any(snn.scheme.population_values(snn.description, result, populations[add.name]) > 0)
    # pipelined: a new image every 2 T steps, each population busy 2 T per image
    assert snn.description.period_steps == (2 * T_TTFS if pipeline else
                                            max(p.window_start for p in snn.description.populations) + 2 * T_TTFS)


@pytest.mark.parametrize("integration", ["clock", "event"])
def test_ttfs_readers_of_concatenations_of_different_depths(integration):
    graph, x = _concat_graph(), _inputs(6, seed=1)
    snn = _convert(graph, "ttfs", x, t_max=T_TTFS, percentile=100, integration=integration)
    populations = _populations(snn)
    delays = {(q.source, q.target): q.delay_steps for q in snn.description.projections}
    assert delays[populations["c0"], populations["r"]] == T_TTFS         # c1 is one layer deeper than c0
    assert delays[populations["c0"], populations["out"]] == 2 * T_TTFS   # r is two layers deeper
    result = snn.simulate(x, device=DEVICE, spikes=list(populations.values())[:-1])
    _check_ttfs(snn, result)


def test_ttfs_without_the_skip_delays_the_check_fails():
    """Fault injection: the same networks with the delays dropped violate the half-step bound."""
    for graph, x in ((_residual_graph(), _inputs(6)), (_concat_graph(), _inputs(6, seed=1))):
        snn = _convert(graph, "ttfs", x, t_max=T_TTFS, percentile=100)
        for projection in snn.description.projections:
            projection.delay_steps = 0
        result = snn.simulate(x, device=DEVICE, spikes=list(_populations(snn).values())[:-1])
        excess = _ttfs_errors(snn, result)
        assert max(excess.values()) > 0.1


def test_ttfs_clipped_relu_is_the_top_of_the_code():
    x = _inputs(8, seed=2)
    graph = _clipped_graph(x)
    snn = _convert(graph, "ttfs", x, t_max=T_TTFS, percentile=99)
    scales = snn.calibration.scales
    assert scales["c0"] == graph["c0"].params["clip"]                   # the clip is reached: lambda = a exactly
    assert scales["c1"] < graph["c1"].params["clip"]                    # never reached: the percentile is kept
    result = snn.simulate(x, device=DEVICE, spikes=list(_populations(snn).values())[:-1])
    _check_ttfs(snn, result)
    populations = _populations(snn)
    carried = snn.scheme.population_values(snn.description, result, populations["x"])
    with torch.no_grad():
        ann = graph["c0"].forward(torch.as_tensor(carried.reshape((-1,) + SHAPE))).reshape(len(x), -1).numpy()
    c0 = snn.scheme.population_values(snn.description, result, populations["c0"])
    top = ann == scales["c0"]                                           # clipped by the ANN
    assert np.mean(top) > 0.05 and np.all(c0[top] == scales["c0"]), "clipped values are sent at the top of the code"


def test_ttfs_skip_networks_run_at_their_built_t_max_only():
    graph, x = _residual_graph(), _inputs(2)
    snn = _convert(graph, "ttfs", x, t_max=T_TTFS)
    with pytest.raises(InvalidValueError, match="built t_max"):
        snn.scheme.setup(snn.description, t_max=T_TTFS // 2)
    snn.scheme.setup(snn.description, t_max=T_TTFS)


# ---------------------------------------------------------------------------------------------
# rate
# ---------------------------------------------------------------------------------------------

def _non_negative_charges(snn, population):
    """True if every synapse into ``population`` and its bias are >= 0 (so v >= 0 throughout)."""
    incoming = [q for q in snn.description.projections if q.target == population]
    bias = snn.description.population(population).values["b"]
    return all(np.all(q.connections.weight >= 0) for q in incoming) and np.all(bias >= 0)


def _rate_errors(snn, result, x):
    """Violations of the rate bounds of the module docstring, per checked layer (0: none).

    Returns ``{layer: (violation in spikes, fraction of neurons checked exactly)}`` and the
    output's largest deviation from ``W decoded + b``.
    """
    populations, T = _populations(snn), snn.description.period_steps
    values = {snn.graph.input.name: np.asarray(x, dtype=np.float64)}
    report, output_error = {}, None
    for layer in snn.graph.layers[1:]:
        with torch.no_grad():
            inputs = _layer_inputs(snn, layer, values)
            z = layer.pre_activation(*inputs).reshape(len(x), -1).numpy()
            forward = layer.forward(*inputs).numpy()
        if layer.name not in populations:
            values[layer.name] = forward
            continue
        if layer is snn.graph.output:
            output_error = np.max(np.abs(result.outputs - z))
            continue
        name, scale = populations[layer.name], snn.calibration.scales[layer.name]
        decoded = snn.scheme.population_values(snn.description, result, name)
        values[layer.name] = decoded.reshape((-1,) + layer.out_shape)
        n, Q = np.rint(decoded / scale * T), z / scale * T          # spike counts and window charge (thresholds)
        image, neuron, local = result.spikes[name]
        saturated = np.zeros(n.shape, dtype=bool)
        saturated[image[local == T - 1], neuron[local == T - 1]] = True
        if layer.inputs == [snn.graph.input.name]:                  # constant analog current: exact
            report[layer.name] = (_outside_floor(n, np.minimum(Q, T)), 1.0)
        elif _non_negative_charges(snn, name):                      # n <= min(Q, T); floor(Q) unless saturated
            over = np.max(n - np.minimum(Q, T)) - FLOAT_SLACK
            exact = ~saturated
            report[layer.name] = (max(over, _outside_floor(n[exact], Q[exact])), float(np.mean(exact)))
    return report, output_error


def _outside_floor(n, Q):
    """How far the counts ``n`` lie outside ``[floor(Q), floor(Q)]`` (either floor at an exact tie); 0 if inside."""
    low, high = np.floor(np.maximum(Q, 0) - FLOAT_SLACK), np.floor(np.maximum(Q, 0) + FLOAT_SLACK)
    return float(np.max(np.maximum(low - n, n - high), initial=0))


def _check_rate(snn, result, x, checked):
    report, output_error = _rate_errors(snn, result, x)
    assert output_error < 1e-9, "the output accumulator integrates W x + b of the decoded inputs exactly"
    assert sorted(report) == sorted(checked)
    for name, (violation, exact) in report.items():
        assert violation <= 0, f"layer {name!r} breaks the IF rate bound by {violation:.3g} spikes"
        assert exact > 0.5, f"layer {name!r}: most neurons should be checked exactly (not saturated)"


def test_rate_residual_block_sum_tracks_the_terms_within_one_over_T():
    graph, x = _residual_graph(), _inputs(6)
    snn = _convert(graph, "rate", x, duration=T_RATE, percentile=100)
    populations = _populations(snn)
    add = next(layer for layer in graph if layer.op == "add")
    scales = snn.calibration.scales
    into_add = {q.source: q for q in snn.description.projections if q.target == populations[add.name]}
    assert into_add[populations["conv0"]].delay_steps == 2 and into_add[populations["conv2"]].delay_steps == 0
    for term in add.inputs:   # one-to-one, normalised with each term's own scale (Eq. 9 with W = 1)
        np.testing.assert_array_equal(into_add[populations[term]].connections.weight, scales[term] / scales[add.name])
    result = snn.simulate(x, device=DEVICE, spikes=list(populations.values())[:-1])
    _check_rate(snn, result, x, checked=["conv0", add.name])
    assert [p.window_start for p in snn.description.populations] == [0, 1, 2, 3, 4, 5]


def test_rate_readers_of_concatenations_of_different_depths():
    graph, x = _concat_graph(), _inputs(6, seed=1)
    snn = _convert(graph, "rate", x, duration=T_RATE, percentile=100)
    populations = _populations(snn)
    delays = {(q.source, q.target): q.delay_steps for q in snn.description.projections}
    assert delays[populations["c0"], populations["r"]] == 1 and delays[populations["c0"], populations["out"]] == 2
    result = snn.simulate(x, device=DEVICE, spikes=list(populations.values())[:-1])
    _check_rate(snn, result, x, checked=["c0", "r"])


def test_rate_without_the_skip_delays_the_check_fails():
    """Fault injection: the same networks with the delays dropped violate the bounds."""
    for graph, x in ((_residual_graph(), _inputs(6)), (_concat_graph(), _inputs(6, seed=1))):
        snn = _convert(graph, "rate", x, duration=T_RATE, percentile=100)
        for projection in snn.description.projections:
            projection.delay_steps = 0
        result = snn.simulate(x, device=DEVICE, spikes=list(_populations(snn).values())[:-1])
        report, output_error = _rate_errors(snn, result, x)
        assert output_error > 1e-3 or max(v for v, _ in report.values()) > 0


def test_rate_clipped_relu_saturates_at_the_clip():
    x = _inputs(8, seed=2)
    graph = _clipped_graph(x)
    snn = _convert(graph, "rate", x, duration=T_RATE, percentile=99)
    scales = snn.calibration.scales
    assert scales["c0"] == graph["c0"].params["clip"]                   # the clip is reached: lambda = a exactly
    assert scales["c1"] < graph["c1"].params["clip"]                    # never reached: the percentile is kept
    result = snn.simulate(x, device=DEVICE, spikes=list(_populations(snn).values())[:-1])
    _check_rate(snn, result, x, checked=["c0", "c1"])
    c0 = snn.scheme.population_values(snn.description, result, _populations(snn)["c0"])
    with torch.no_grad():
        ann = graph["c0"].forward(torch.as_tensor(x)).reshape(len(x), -1).numpy()
    error = ann - c0                                                    # clamp(z, 0, a) within [0, a / T)
    assert np.all(error > -FLOAT_SLACK) and np.all(error < scales["c0"] / T_RATE + FLOAT_SLACK)
    assert np.all(c0[ann == scales["c0"]] == scales["c0"]), "clipped values fire at one spike per step"


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["rate", "ttfs"])
def test_activations_a_sum_or_concatenation_cannot_apply_are_rejected(method):
    rng = np.random.default_rng(6)
    x = Layer("x", "input", [], SHAPE, SHAPE)
    c0 = conv("c0", "x", SHAPE, 2, rng)
    cat = skip_graphs.cat("cat", c0, c0)
    cat.activation = "sigmoid"
    graph = LayerGraph([x, c0, cat, linear("out", "cat", cat.size, 3, rng)])
    with pytest.raises(ConversionError, match="sigmoid"):
        schemes.get(method)().check(graph)
    raw = Layer("raw", "add", ["x", "c0b"], SHAPE, SHAPE)
    c0b = conv("c0b", "x", SHAPE, 2, rng)
    graph = LayerGraph([x, c0b, raw, linear("out", "raw", raw.size, 3, rng)])
    if method == "rate":   # analog input may be negative: a sum without ReLU could be negative
        with pytest.raises(ConversionError, match="Apply ReLU after the sum"):
            schemes.get(method)().check(graph)
    else:                  # ttfs inputs are checked non-negative: the sum is too
        schemes.get(method)().check(graph)


def test_a_layer_reading_one_population_twice_gets_one_projection():
    rng = np.random.default_rng(7)
    x = Layer("x", "input", [], SHAPE, SHAPE)
    c0 = conv("c0", "x", SHAPE, 2, rng)
    cat = skip_graphs.cat("cat", c0, c0)
    graph = LayerGraph([x, c0, cat, linear("out", "cat", cat.size, 3, rng)])
    data = _inputs(4)
    for method, options in (("rate", dict(duration=8)), ("ttfs", dict(t_max=4))):
        snn = _convert(graph, method, data, **options)
        into_out = [q for q in snn.description.projections if q.target == _populations(snn)["out"]]
        assert len(into_out) == 1 and len(into_out[0].connections) == 3 * cat.size


# ---------------------------------------------------------------------------------------------
# random skip connections (property-based)
# ---------------------------------------------------------------------------------------------

@settings(max_examples=6, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(depth=st.integers(1, 3), join=st.sampled_from(["add", "cat"]), seed=st.integers(0, 2 ** 16))
def test_ttfs_random_skips_every_layer_within_half_a_step(depth, join, seed):
    graph, x = skip_graph(depth, join, seed, SHAPE), _inputs(4, seed=seed)
    snn = _convert(graph, "ttfs", x, t_max=T_TTFS, percentile=100)
    skip = {(q.source, q.target): q.delay_steps for q in snn.description.projections}
    populations = _populations(snn)
    reader = populations["join"] if join == "add" else populations["out"]
    assert skip[populations["c0"], reader] == depth * T_TTFS
    result = snn.simulate(x, device=DEVICE, spikes=list(populations.values())[:-1])
    _check_ttfs(snn, result)
