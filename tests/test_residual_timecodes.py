"""Residual additions, channel concatenation and clipped ReLU in the time codes (tdsnn, amos).

Graphs are built by hand from :class:`~brianconv.graph.Layer` records: an ``add`` of a shallow and
a deep branch (their codes leave at different steps and must reach the sum aligned), a ``cat`` of
two branches of different depth, average pooling of the concatenation and an output reading it.

Bounds are the schemes' own:

* tdsnn: a layer with input ``A`` (computed from the values its sources' spikes decode to) sends
  ``G(A) - 1`` with ``|G(A) - 1 - ReLU(A)| <= (ReLU(A) + 1)(e^(1/(2L)) - 1)`` (the code rounded to
  the nearest step, :func:`~brianconv.schemes.tdsnn.code_error_bounds`) inside its window; the
  spike steps equal the coded network :func:`~brianconv.schemes.tdsnn.emulate`.
* amos: a ReLU unit layer with input ``x`` (from its sources' decoded unit outputs) sends ``y``
  with ``0 <= ReLU(x) - y <= alpha 2^-K`` for ``x <= alpha`` and ``alpha (1 - 2^-K)`` above.

A misaligned term (a delay off by one step) changes the sum and breaks these bounds.
"""

import numpy as np
import pytest
import torch

from brianconv.errors import ConversionError
from brianconv.graph import Layer, LayerGraph
from brianconv.schemes.amos import AMOS
from brianconv.schemes.base import population_names
from brianconv.schemes.tdsnn import TDSNN, code_error_bounds, code_value, emulate, spike_step
from brianconv.simulation import SpikingNetwork

FLOAT_SLACK = 1e-9
L = 4.0
K = 5
SHAPE = (1, 6, 6)


def _conv(name, source, in_shape, c_out, rng, activation="relu", params=None):
    weight = rng.normal(scale=0.6, size=(c_out, in_shape[0], 3, 3))
    geometry = dict(kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1)
    return Layer(name, "conv", [source], in_shape, (c_out,) + in_shape[1:], weight, rng.normal(scale=0.2, size=c_out),
                 geometry | (params or {}), activation)


def _residual_graph(seed=0, add_activation="relu"):
    """x -> a; a -> b -> c; add(a, c); d from x; cat(add, d) -> avgpool -> linear output."""
    rng = np.random.default_rng(seed)
    a = _conv("a", "x", SHAPE, 3, rng)
    b = _conv("b", "a", a.out_shape, 3, rng)
    c = _conv("c", "b", b.out_shape, 3, rng)
    add = Layer("add", "add", ["a", "c"], a.out_shape, a.out_shape, activation=add_activation)
    d = _conv("d", "x", SHAPE, 2, rng)
    cat = Layer("cat", "cat", ["add", "d"], add.out_shape, (5, 6, 6), params=dict(axis=0, sizes=(add.size, d.size)))
    pool = Layer("pool", "avgpool", ["cat"], (5, 6, 6), (5, 3, 3),
                 params=dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0), count_include_pad=True))
    out = Layer("out", "linear", ["pool"], (5, 3, 3), (4,), rng.normal(scale=0.5, size=(4, 45)), rng.normal(size=4))
    return LayerGraph([Layer("x", "input", [], SHAPE, SHAPE), a, b, c, add, d, cat, pool, out])


def _convert(scheme, graph, x):
    """What ``brianconv.convert`` does after tracing (the graph's forward pass taught ``cat``, for the ANN outputs)."""
    graph = graph
    scheme.check(graph)
    calibration = scheme.calibrate(graph, x)
    return SpikingNetwork(graph, scheme, calibration, scheme.describe(graph, calibration))


def _images(n=6, seed=1):
    return np.random.default_rng(seed).uniform(size=(n,) + SHAPE)


def _assert_reverse_code_bound(carried, relu, t_out, L, label, rounding="nearest"):
    """tdsnn's decoded value ``G - 1`` against ``ReLU`` within :func:`code_error_bounds` wherever the code
    is not cut at ``T_out``; returns that mask (shape of ``relu``)."""
    inside = spike_step(relu, L, rounding=rounding) <= t_out
    low, high = code_error_bounds(relu[inside], L, rounding)
    error = carried[inside] - relu[inside]
    assert np.all(error >= low - FLOAT_SLACK), label
    assert np.all(error < high + FLOAT_SLACK), label
    return inside


def _linear_input(graph, layer, decoded, n):
    """The layer's input before its activation, from the values its sources decode to (cat/avgpool followed)."""
    values = {}

    def value(name):
        if name not in values:
            source = graph[name]
            if name in decoded or source.op == "input":
                values[name] = torch.as_tensor(decoded[name]).reshape((n,) + tuple(source.out_shape))
            else:  # folded: cat or average pooling
                values[name] = source.pre_activation(*(value(parent) for parent in source.inputs))
        return values[name]

    with torch.no_grad():
        return layer.pre_activation(*(value(name) for name in layer.inputs)).numpy().reshape(n, -1)


# -- tdsnn ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("pipeline", [True, False])
def test_tdsnn_residual_sum_and_concatenation_are_exact_to_the_code(pipeline):
    graph = _residual_graph()
    x = _images()
    snn = _convert(TDSNN(L=L, pipeline=pipeline), graph, x)
    names = population_names(graph)
    hidden = [names[name] for name in ("a", "b", "c", "add", "d")]
    result = snn.simulate(x, device="numpy", spikes=hidden)
    coded, _ = emulate(graph, x, L, t_out=snn.description.state.t_out)
    decoded = {"x": code_value(spike_step(x, L, snn.description.state.t_out["x"]), L)}
    for name in ("a", "b", "c", "add", "d"):
        population = snn.description.population(names[name])
        carried = snn.scheme.population_values(snn.description, result, population.name)
        assert np.all(result.spike_counts[population.name] == population.size), "every neuron fires once"
        np.testing.assert_allclose(carried, coded[name].reshape(len(x), -1), rtol=0, atol=1e-12)
        a = _linear_input(graph, graph[name], decoded, len(x))
        inside = _assert_reverse_code_bound(carried, np.maximum(a, 0), population.values["T_out"], L, name)
        assert inside.mean() > 0.9
        decoded[name] = carried
    out = graph.output
    expected = _linear_input(graph, out, decoded, len(x))
    np.testing.assert_allclose(result.outputs, expected, rtol=0, atol=FLOAT_SLACK)
    # the two terms of the sum left at different steps: the shallow one waits for the deep one
    delays = {q.source: q.delay_steps for q in snn.description.projections if q.target == names["add"]}
    window = {p.name: p.window_start for p in snn.description.populations}
    assert delays[names["c"]] == 0 and delays[names["a"]] == window[names["add"]] - window[names["b"]] > 0


def test_tdsnn_rejects_what_it_cannot_carry():
    graph = _residual_graph()
    layers = list(graph)
    cat = layers[6]
    layers[6] = Layer(cat.name, cat.op, cat.inputs, cat.in_shape, cat.out_shape, params=dict(cat.params, clip=1.0),
                      activation="clipped_relu")
    with pytest.raises(ConversionError, match="concatenation 'cat' applies 'clipped_relu'"):
        TDSNN().check(LayerGraph(layers))
    pool = Layer("mp", "maxpool", ["cat"], (5, 6, 6), (5, 3, 3),
                 params=dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0)))
    avg = Layer("avg", "avgpool", ["d"], (2, 6, 6), (2, 6, 6),
                params=dict(kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), count_include_pad=True))
    layers = list(graph)[:6] + [avg, Layer("cat", "cat", ["add", "avg"], (3, 6, 6), (5, 6, 6),
                                           params=dict(axis=0, sizes=(108, 72))), pool,
                                Layer("out", "linear", ["mp"], (5, 3, 3), (2,), np.ones((2, 45)), np.zeros(2))]
    with pytest.raises(ConversionError, match="max-pooling 'mp' reads .* through average pooling"):
        _convert(TDSNN(L=L), LayerGraph(layers), _images(2))


# -- amos ----------------------------------------------------------------------------------------

def _amos_layer_bounds(snn, graph, result, x, names, layers):
    """Every unit layer within its unit's bound, computed from its sources' decoded outputs."""
    decoded = {"x": x}
    for name in layers:
        population = names[name]
        sent = snn.scheme.population_values(snn.description, result, population)
        unit = snn.scheme.unit_for(graph[name], snn.calibration, graph)
        z = _linear_input(graph, graph[name], decoded, len(x))
        upper = np.minimum(np.maximum(z, 0), unit.scale)  # a clipped ReLU's own clip is alpha (or above it)
        inside = z <= unit.scale
        error = upper - sent
        assert np.all(error[inside] >= -FLOAT_SLACK)
        assert np.all(error[inside] <= unit.scale * 2.0 ** -unit.K + FLOAT_SLACK)
        np.testing.assert_allclose(sent[~inside], unit.scale * (1 - 2.0 ** -unit.K), atol=FLOAT_SLACK)
        decoded[name] = sent
    return decoded


@pytest.mark.parametrize("wiring,pipeline", [("paper", True), ("dendrite", True), ("dendrite", False)])
def test_amos_residual_sum_and_concatenation_stay_within_the_unit_bound(wiring, pipeline):
    graph = _residual_graph()
    x = _images()
    snn = _convert(AMOS(K=K, wiring=wiring, pipeline=pipeline), graph, x)
    names = population_names(graph)
    layers = ("a", "b", "c", "add", "d")
    result = snn.simulate(x, device="numpy", spikes=[names[name] for name in layers])
    decoded = _amos_layer_bounds(snn, graph, result, x, names, layers)
    full = graph
    np.testing.assert_allclose(result.outputs, _linear_input(full, full.output, decoded, len(x)), rtol=0,
                               atol=FLOAT_SLACK)
    reference, _ = snn.scheme.reference(graph, snn.calibration, x)
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=FLOAT_SLACK)
    for name in layers:
        image, neuron, _ = result.spikes[names[name]]
        size = snn.description.population(names[name]).size
        assert np.bincount(np.asarray(image) * size + neuron).max() <= 1, "a neuron fired twice for one image"


def test_amos_add_without_relu_of_signed_values_is_rejected():
    rng = np.random.default_rng(3)
    a = _conv("a", "x", SHAPE, 2, rng, activation="silu")
    b = _conv("b", "x", SHAPE, 2, rng)
    add = Layer("add", "add", ["a", "b"], a.out_shape, a.out_shape)
    out = Layer("out", "linear", ["add"], a.out_shape, (2,), np.ones((2, 72)), np.zeros(2))
    with pytest.raises(ConversionError, match="add 'add' without its own ReLU units reads values that can be negative"):
        AMOS().check(LayerGraph([Layer("x", "input", [], SHAPE, SHAPE), a, b, add, out]))
    cat = Layer("cat", "cat", ["a", "b"], a.out_shape, (4, 6, 6), params=dict(axis=0, sizes=(72, 72)),
                activation="sigmoid")
    out = Layer("out", "linear", ["cat"], (4, 6, 6), (2,), np.ones((2, 144)), np.zeros(2))
    with pytest.raises(ConversionError, match="concatenation 'cat' applies 'sigmoid'"):
        AMOS().check(LayerGraph([Layer("x", "input", [], SHAPE, SHAPE), a, b, cat, out]))


def _input_skip_graph():
    """add(x, conv(x)) with ReLU, max-pooled, then a linear output: the sum reads the input itself."""
    rng = np.random.default_rng(4)
    a = _conv("a", "x", SHAPE, 1, rng)
    add = Layer("add", "add", ["x", "a"], SHAPE, SHAPE, activation="relu")
    pool = Layer("mp", "maxpool", ["add"], SHAPE, (1, 3, 3), params=dict(kernel_size=(2, 2), stride=(2, 2),
                                                                           padding=(0, 0)))
    out = Layer("out", "linear", ["mp"], (1, 3, 3), (3,), rng.normal(size=(3, 9)), rng.normal(size=3))
    return LayerGraph([Layer("x", "input", [], SHAPE, SHAPE), a, add, pool, out])


@pytest.mark.parametrize("pipeline", [True, False])
def test_amos_max_pool_of_a_sum_that_reads_the_input(pipeline):
    """The sum's units are the pool's candidates: the pool sends ``max_j y(x_j + a_j)`` exactly."""
    graph = _input_skip_graph()
    x = _images(8)
    snn = _convert(AMOS(K=K, pipeline=pipeline), graph, x)  # max-pooling: dendrite wiring by default
    assert snn.description.state.wiring == "dendrite"
    names = population_names(graph)
    result = snn.simulate(x, device="numpy", spikes=[names["a"], names["mp"]])
    decoded = _amos_layer_bounds(snn, graph, result, x, names, ("a",))
    unit = snn.scheme.unit_for(graph["add"], snn.calibration, graph)
    z = _linear_input(graph, graph["add"], decoded, len(x)).reshape((len(x),) + SHAPE)
    expected = torch.nn.functional.max_pool2d(torch.as_tensor(unit(z)), 2).reshape(len(x), -1).numpy()
    sent = snn.scheme.population_values(snn.description, result, names["mp"])
    np.testing.assert_allclose(sent, expected, rtol=0, atol=FLOAT_SLACK)
    assert np.mean(sent > 0) > 0.3, "too few active pools for a meaningful test"
    reference, _ = snn.scheme.reference(graph, snn.calibration, x)
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=FLOAT_SLACK)


def test_tdsnn_max_pool_of_a_sum_that_reads_the_input():
    graph = _input_skip_graph()
    x = _images(8)
    snn = _convert(TDSNN(L=L), graph, x)
    names = population_names(graph)
    result = snn.simulate(x, device="numpy", spikes=[names["add"], names["mp"]])
    coded, _ = emulate(graph, x, L, t_out=snn.description.state.t_out)
    for name in ("add", "mp"):
        carried = snn.scheme.population_values(snn.description, result, names[name])
        np.testing.assert_allclose(carried, coded[name].reshape(len(x), -1), rtol=0, atol=1e-12)
    np.testing.assert_allclose(result.outputs, coded["out"], rtol=0, atol=FLOAT_SLACK)


# -- clipped ReLU --------------------------------------------------------------------------------

def _clipped_graph(clip):
    """x -> conv with clipped ReLU (clip a) -> conv with ReLU -> linear output."""
    rng = np.random.default_rng(5)
    a = _conv("a", "x", SHAPE, 3, rng, activation="clipped_relu", params=dict(clip=clip))
    b = _conv("b", "a", a.out_shape, 2, rng)
    out = Layer("out", "linear", ["b"], b.out_shape, (3,), rng.normal(scale=0.3, size=(3, 72)), np.zeros(3))
    return LayerGraph([Layer("x", "input", [], SHAPE, SHAPE), a, b, out])


def test_tdsnn_clipped_relu_window_ends_at_the_clip():
    clip = 0.6
    graph = _clipped_graph(clip)
    x = _images(8)
    snn = _convert(TDSNN(L=L), graph, x)
    a = graph["a"].pre_activation(torch.as_tensor(code_value(spike_step(x, L, 100), L)))
    a = a.numpy().reshape(len(x), -1)
    assert a.max() > 2 * clip, "the test needs values above the clip"
    population = population_names(graph)["a"]
    assert snn.description.population(population).values["T_out"] == spike_step(clip, L)
    result = snn.simulate(x, device="numpy", spikes=[population])
    carried = snn.scheme.population_values(snn.description, result, population)
    # the code of min(A, a) (Eq. 10, 11), everywhere: values above the clip fire at T(a), the code of a
    inside = _assert_reverse_code_bound(carried, np.clip(a, 0, clip), spike_step(clip, L), L, "a")
    assert inside.all()


def test_amos_clipped_relu_is_a_relu_unit_ranging_to_the_clip():
    clip = 0.6
    graph = _clipped_graph(clip)
    x = _images(8)
    snn = _convert(AMOS(K=K), graph, x)
    unit = snn.scheme.unit_for(graph["a"], snn.calibration)
    assert unit.gate == "relu" and unit.scale == clip
    names = population_names(graph)
    result = snn.simulate(x, device="numpy", spikes=[names["a"], names["b"]])
    z = _linear_input(graph, graph["a"], {"x": x}, len(x))
    assert z.max() > 2 * clip, "the test needs values above the clip"
    sent = snn.scheme.population_values(snn.description, result, names["a"])
    error = np.clip(z, 0, clip) - sent  # everywhere, not only below alpha: alpha is the clip
    assert np.all(error >= -FLOAT_SLACK) and np.all(error <= clip * 2.0 ** -K + FLOAT_SLACK)
    _amos_layer_bounds(snn, graph, result, x, names, ("a", "b"))
