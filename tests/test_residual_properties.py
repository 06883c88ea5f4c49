"""Property tests: random skip and concatenation graphs in rate, tdsnn and amos (ttfs: test_residual.py).

Each example is a graph of :func:`skip_graphs.skip_graph`: ``depth`` convolutions after ``c0``, then
an ``add`` (with ReLU) or a ``cat`` of the deepest one with ``c0``, and a linear readout, with
random seeded weights. Every layer that can be checked is compared with the layer's ANN forward
pass on the values its sources decode to, within the scheme's stated bound:

* rate (reset by subtraction, ``T`` steps): ``c0`` reads the constant analog input and fires
  exactly ``floor(T a)`` times; a sum (non-negative one-to-one charges) fires ``floor(Q)`` times
  unless saturated; the output integrates ``W decoded + b`` exactly (test_residual.py's checks);
* tdsnn: ``|G(A) - 1 - ReLU(A)| <= (ReLU(A) + 1)(e^(1/(2L)) - 1)`` inside the layer's window, and
  the spikes equal the coded network of :func:`~brianconv.schemes.tdsnn.emulate`;
* amos: ``0 <= ReLU(x) - y <= alpha 2^-K`` for ``x <= alpha``, ``alpha (1 - 2^-K)`` above.

An example counts only if every checked layer is active on some image (``assume``); hypothesis's
statistics (``pytest --hypothesis-show-statistics``) report how many examples were active. Runs on
Brian2's numpy runtime device; a few examples by default (``--hypothesis-profile`` for more).
"""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from skip_graphs import skip_graph
from test_residual import _check_rate, _convert
from test_residual_timecodes import FLOAT_SLACK, _amos_layer_bounds, _assert_reverse_code_bound, _linear_input

from brianconv.schemes.base import population_names
from brianconv.schemes.tdsnn import emulate

SHAPE = (1, 5, 5)
T_RATE = 32
L = 4.0
K = 5
DEVICE = "numpy"
GRAPHS = dict(depth=st.integers(1, 3), join=st.sampled_from(["add", "cat"]), seed=st.integers(0, 2 ** 16))
EXAMPLES = settings(max_examples=4, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def _inputs(seed, n=4):
    return np.random.default_rng(seed).uniform(0, 1, size=(n,) + SHAPE)


def _hidden(graph):
    """Names of the layers with neurons of their own, before the output (the convs, and a sum)."""
    return [layer.name for layer in graph.layers[1:-1] if layer.op != "cat"]


def _simulate(snn, graph, x):
    """Run on the numpy device, monitoring every hidden population; skip examples with a silent layer."""
    populations = population_names(graph)   # a layer's own population (not a helper such as tdsnn's bias)
    result = snn.simulate(x, device=DEVICE, spikes=[populations[name] for name in _hidden(graph)])
    active = all(result.spike_counts[populations[name]].sum() > 0 for name in _hidden(graph))
    event("every layer active" if active else "a silent layer (skipped)")
    assume(active)
    return result


@EXAMPLES
@given(**GRAPHS)
def test_rate_random_skips_within_the_if_bounds(depth, join, seed):
    graph, x = skip_graph(depth, join, seed, SHAPE), _inputs(seed)
    snn = _convert(graph, "rate", x, duration=T_RATE, percentile=100)
    result = _simulate(snn, graph, x)
    _check_rate(snn, result, x, checked=["c0"] + (["join"] if join == "add" else []))


@EXAMPLES
@given(**GRAPHS)
def test_tdsnn_random_skips_within_the_code_bound(depth, join, seed):
    graph, x = skip_graph(depth, join, seed, SHAPE), _inputs(seed)
    snn = _convert(graph, "tdsnn", x, L=L)
    result = _simulate(snn, graph, x)
    names = population_names(graph)
    coded, _ = emulate(graph, x, L, t_out=snn.description.state.t_out)
    decoded = {"x": coded["x"].reshape(len(x), -1)}
    for name in _hidden(graph):
        population = snn.description.population(names[name])
        carried = snn.values(result, population.name)
        relu = np.maximum(_linear_input(graph, graph[name], decoded, len(x)), 0)
        _assert_reverse_code_bound(carried, relu, population.values["T_out"], L, name)
        np.testing.assert_allclose(carried, coded[name].reshape(len(x), -1), rtol=0, atol=1e-12)
        decoded[name] = carried
    np.testing.assert_allclose(result.outputs, _linear_input(graph, graph.output, decoded, len(x)), rtol=0,
                               atol=FLOAT_SLACK)


@EXAMPLES
@given(**GRAPHS, wiring=st.sampled_from(["paper", "dendrite"]))
def test_amos_random_skips_within_the_unit_bound(depth, join, seed, wiring):
    graph, x = skip_graph(depth, join, seed, SHAPE), _inputs(seed)
    snn = _convert(graph, "amos", x, K=K, wiring=wiring)
    result = _simulate(snn, graph, x)
    decoded = _amos_layer_bounds(snn, graph, result, x, population_names(graph), _hidden(graph))
    np.testing.assert_allclose(result.outputs, _linear_input(graph, graph.output, decoded, len(x)), rtol=0,
                               atol=FLOAT_SLACK)


@pytest.mark.parametrize("method, options", [("rate", dict(duration=T_RATE, percentile=100)), ("tdsnn", dict(L=L)),
                                             ("amos", dict(K=K))])
def test_the_random_graphs_have_their_skip_delayed(method, options):
    """The property tests depend on the skip's delay: the join reads c0 later than the deep branch
    (amos delays each synapse by its neurons' lags too: every skip synapse is later than every deep one)."""
    graph = skip_graph(2, "add", 0, SHAPE)
    snn = _convert(graph, method, _inputs(0), **options)
    names = population_names(graph)
    delays = {(q.source, q.target): np.atleast_1d(q.delay_steps) for q in snn.description.projections}
    assert delays[names["c0"], names["join"]].min() > delays[names["c2"], names["join"]].max()
