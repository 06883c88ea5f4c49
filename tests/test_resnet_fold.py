"""ResNet blocks in every scheme: linear layers folded into the residual sum.

A torch ResNet of two basic blocks (the second with a strided 1x1 projection shortcut, BatchNorm in
eval mode with non-trivial running statistics) traces to ``conv2`` and ``shortcut.0`` layers
without activation that only an ``add`` reads. :func:`~brianconv.schemes.base.folds_into_reader`
gives them no neurons: the sum receives their inputs' projections composed with their weights,
and their (BatchNorm-folded) biases in its own. Each population's decoded values are checked
against the scheme's own bound on the value computed, in float64, from the values its sources
decode to (the folded layers evaluated exactly):

* tdsnn: ``|G(A) - 1 - ReLU(A)| <= (ReLU(A) + 1)(e^(1/(2L)) - 1)`` inside the layer's window (the code
  rounded to the nearest step);
* amos: ``0 <= ReLU(x) - y <= alpha 2^-K`` for ``x <= alpha``, ``alpha (1 - 2^-K)`` above;
* ttfs: ``|y - clip(x, 0, lambda)| <= lambda / (2 T)`` (half a step of the code);
* rate: the sums' synapses have mixed signs (no one-window bound, ``tests/test_residual.py``), so
  their normalisation is checked exactly instead: every population's charge per step on the ANN's
  values is its pre-activation over its scale (Eq. 9); the simulation is checked where the IF
  bound holds (the stem's constant input, the output's integration).

Dropping the folded bias (or composing a projection at the wrong depth) breaks these bounds.
Simulations run on Brian2's runtime device with numpy code generation (``device="numpy"``), which
needs no Cython compilation.
"""

import numpy as np
import pytest
import torch
from test_residual import T_RATE, T_TTFS, _check_rate, _check_ttfs
from test_residual_timecodes import FLOAT_SLACK, _assert_reverse_code_bound, _linear_input
from torch import nn

import brianconv
from brianconv.errors import ConversionError
from brianconv.folding import fold_affine_layers
from brianconv.graph import LayerGraph, trace
from brianconv.schemes.amos import AMOS
from brianconv.schemes.base import (
    folds_into_reader,
    incoming_projections,
    population_names,
)
from brianconv.schemes.rate import Rate
from brianconv.schemes.tdsnn import TDSNN, emulate

L = 4.0
K = 5
SHAPE = (1, 8, 8)


def _bn(channels, generator):
    """BatchNorm2d in eval mode with non-trivial running statistics and affine parameters."""
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.3, 0.3, generator=generator)
        bn.running_var.uniform_(0.5, 2.0, generator=generator)
        bn.weight.uniform_(0.6, 1.4, generator=generator)
        bn.bias.uniform_(-0.4, 0.6, generator=generator)
    return bn


class _Block(nn.Module):
    def __init__(self, c_in, c_out, stride, generator):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = _bn(c_out, generator)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = _bn(c_out, generator)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else \
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _bn(c_out, generator))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class _ResNet(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        self.stem = nn.Sequential(nn.Conv2d(1, 3, 3, 1, 1), nn.ReLU())
        self.block1 = _Block(3, 3, 1, generator)
        self.block2 = _Block(3, 4, 2, generator)
        self.pool = nn.AvgPool2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.pool(self.block2(self.block1(self.stem(x)))).flatten(1))


FOLDED = ("block1.conv2", "block2.conv2", "block2.shortcut.0")
HIDDEN = ("stem.0", "block1.conv1", "add", "block2.conv1", "add_1")


def _images(n=6, seed=1):
    return np.random.default_rng(seed).uniform(size=(n,) + SHAPE)


def _graph():
    return fold_affine_layers(trace(_ResNet().eval(), SHAPE))


def test_the_rule_folds_the_linear_layers_that_only_sums_read():
    graph = _graph()
    assert [layer.name for layer in graph if folds_into_reader(graph, layer)] == list(FOLDED)
    names = population_names(graph)
    yielded = {layer.name: (layer, incoming) for layer, incoming in incoming_projections(graph, names)}
    assert not set(FOLDED) & set(yielded)
    # block2's sum reads conv2 from block2.conv1's population and the shortcut from block1's sum
    layer, incoming = yielded["add_1"]
    assert [source for source, _ in incoming] == [names["block2.conv1"], names["add"]]
    x = torch.as_tensor(_images(3))
    # the sum's input is the composed projections of its sources plus its folded bias, exactly
    values = {}
    with torch.no_grad():
        values["x"] = x
        for node in graph.layers[1:]:
            values[node.name] = node.forward(*(values[name] for name in node.inputs))
    expected = graph["add_1"].pre_activation(values["block2.conv2"], values["block2.shortcut.0"]).numpy()
    layer_of = {population: name for name, population in names.items()}
    got = sum(c.apply(values[layer_of[source]].numpy().reshape(3, -1)) for source, c in incoming)
    np.testing.assert_allclose(got + layer.neuron_bias(), expected.reshape(3, -1), rtol=0, atol=1e-12)
    assert np.abs(layer.neuron_bias() - graph["add_1"].neuron_bias()).max() > 0.1, "the folded biases matter"


def test_a_scheme_that_does_not_fold_names_the_construct():
    class NoFold(Rate):
        folds_linear_layers = False

    with pytest.raises(ConversionError, match="'block1.conv2' .* feeds only residual additions"):
        NoFold().check(_graph())


def _ann_values(graph, x):
    """Every layer's float64 ANN output on ``x``, ``layer name -> (N, size)``."""
    _, values = graph.forward(x, record=True)
    return {name: np.asarray(value).reshape(len(x), -1) for name, value in values.items()}


def test_rate_sums_receive_the_folded_layers_normalised_for_their_sources():
    """Every population's per-step charge, on the ANN's own input values, is its pre-activation over its scale.

    For each population ``p``: ``sum over projections C (a_source / lambda_source) + b~ = z_p / lambda_p``
    (Eq. 9) with ``a`` the ANN values and ``z_p`` the layer's ANN pre-activation; for a sum, ``z``
    includes the folded convolutions and their BatchNorm-folded biases. Exact up to float rounding.
    """
    x = _images(4)
    snn = brianconv.convert(_ResNet().eval(), "rate", calibration=x, duration=8)
    graph, description, scales = snn.graph, snn.description, snn.calibration.scales
    assert not set(FOLDED) & {p.layer for p in description.populations}
    values = _ann_values(graph, x)
    layer_of = {p.name: p.layer for p in description.populations}
    for population in description.populations[1:]:
        charge = np.tile(population.values["b"], (len(x), 1))
        for projection in (q for q in description.projections if q.target == population.name):
            source = layer_of[projection.source]
            charge = charge + projection.connections.apply(values[source] / scales[source])
        layer = graph[population.layer]
        inputs = [torch.as_tensor(values[name].reshape((len(x),) + graph[name].out_shape)) for name in layer.inputs]
        with torch.no_grad():
            z = layer.pre_activation(*inputs).reshape(len(x), -1).numpy()
        np.testing.assert_allclose(charge, z / scales[layer.name], rtol=0, atol=1e-12, err_msg=layer.name)


def test_rate_resnet_blocks_simulate_to_the_if_bounds():
    """The stem (constant analog input) fires floor(T a) times exactly; the output integrates the decoded sums."""
    x = _images()
    snn = brianconv.convert(_ResNet().eval(), "rate", calibration=x, duration=T_RATE, percentile=100)
    names = population_names(snn.graph)
    result = snn.simulate(x, device="numpy", spikes=[names[name] for name in HIDDEN])
    _check_rate(snn, result, x, checked=["stem.0"])
    assert all(result.spike_counts[names[name]].sum() > 0 for name in ("add", "add_1"))


def test_ttfs_resnet_blocks_every_layer_within_half_a_step():
    """Folded layers evaluated exactly on the decoded inputs; every population within lambda / (2 T)."""
    x = _images()
    snn = brianconv.convert(_ResNet().eval(), "ttfs", calibration=x, t_max=T_TTFS, percentile=100)
    names = population_names(snn.graph)
    assert not set(FOLDED) & {p.layer for p in snn.description.populations}
    delays = {(q.source, q.target): q.delay_steps for q in snn.description.projections}
    # block1's sum reads conv2's source (block1.conv1, one stage deeper) and the stem, delayed by T
    assert delays[names["stem.0"], names["add"]] == T_TTFS and delays[names["block1.conv1"], names["add"]] == 0
    result = snn.simulate(x, device="numpy", spikes=[names[name] for name in ("x",) + HIDDEN])
    _check_ttfs(snn, result)
    assert all(result.spike_counts[names[name]].sum() > 0 for name in ("add", "add_1"))


@pytest.mark.parametrize("pipeline", [True, False])
def test_tdsnn_resnet_blocks_are_within_the_code_bound(pipeline):
    x = _images()
    snn = brianconv.convert(_ResNet().eval(), "tdsnn", calibration=x, L=L, pipeline=pipeline)
    graph, names = snn.graph, population_names(snn.graph)
    populations = {p.layer for p in snn.description.populations}
    assert not set(FOLDED) & populations
    result = snn.simulate(x, device="numpy", spikes=[names[name] for name in HIDDEN])
    coded, _ = emulate(graph, x, L, t_out=snn.description.state.t_out)
    decoded = {"x": coded["x"].reshape(len(x), -1)}
    for name in HIDDEN:
        population = snn.description.population(names[name])
        carried = snn.values(result, population.name)
        assert np.all(result.spike_counts[population.name] == population.size), "every neuron fires once"
        a = _linear_input(graph, graph[name], decoded, len(x))  # folded layers evaluated exactly
        relu = np.maximum(a, 0)
        inside = _assert_reverse_code_bound(carried, relu, population.values["T_out"], L, name)
        assert inside.mean() > 0.9
        np.testing.assert_allclose(carried, coded[name].reshape(len(x), -1), rtol=0, atol=1e-12)
        decoded[name] = carried
    np.testing.assert_allclose(result.outputs, _linear_input(graph, graph.output, decoded, len(x)), rtol=0,
                               atol=FLOAT_SLACK)


@pytest.mark.parametrize("wiring", ["paper", "dendrite"])
def test_amos_resnet_blocks_are_within_the_unit_bound(wiring):
    x = _images()
    snn = brianconv.convert(_ResNet().eval(), "amos", calibration=x, K=K, wiring=wiring)
    graph, names = snn.graph, population_names(snn.graph)
    assert not set(FOLDED) & {p.layer for p in snn.description.populations}
    result = snn.simulate(x, device="numpy", spikes=[names[name] for name in HIDDEN])
    decoded = {"x": x}
    for name in HIDDEN:
        sent = snn.values(result, names[name])
        unit = snn.scheme.unit_for(graph[name], snn.calibration, graph)
        z = _linear_input(graph, graph[name], decoded, len(x))
        inside = z <= unit.scale
        error = np.minimum(np.maximum(z, 0), unit.scale) - sent
        assert np.all(error[inside] >= -FLOAT_SLACK), name
        assert np.all(error[inside] <= unit.scale * 2.0 ** -unit.K + FLOAT_SLACK), name
        np.testing.assert_allclose(sent[~inside], unit.scale * (1 - 2.0 ** -unit.K), atol=FLOAT_SLACK)
        decoded[name] = sent
    np.testing.assert_allclose(result.outputs, _linear_input(graph, graph.output, decoded, len(x)), rtol=0,
                               atol=FLOAT_SLACK)
    reference, _ = snn.scheme.reference(graph, snn.calibration, x, keep=())
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=FLOAT_SLACK)


def test_a_sum_of_a_folded_layer_without_relu_is_rejected():
    """The sum's neurons send ReLU of the sum: without ReLU in the model a signed folded term would be cut."""
    graph = _graph()
    layers = [layer if layer.name != "add" else
              type(layer)(layer.name, layer.op, layer.inputs, layer.in_shape, layer.out_shape) for layer in graph]
    with pytest.raises(ConversionError, match="add 'add' has no activation but sums the folded"):
        TDSNN().check(LayerGraph(layers))
    with pytest.raises(ConversionError, match="add 'add' without its own ReLU units reads values that can be negative"):
        AMOS().check(LayerGraph(layers))
