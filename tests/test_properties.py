"""Property-based: random small architectures converted with every scheme that supports them.

For ``ttfs`` each population's decoded values are checked layer by layer against the torch
layer applied to the values the previous population actually carried: a two-stage neuron is off
by at most half a step of its code (``lambda / (2 T)``), a max-pool neuron is exact, and the
output membrane equals the output layer applied to the last hidden values.
"""

import numpy as np
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import brianconv

T = 8
SLACK = 1e-9


@st.composite
def architectures(draw):
    """A conv/pool/linear stack with random shapes, strides and paddings, and a matching input."""
    channels = input_channels = draw(st.integers(1, 3))
    size = input_size = draw(st.integers(6, 10))
    layers = []
    for _ in range(draw(st.integers(1, 2))):
        out = draw(st.integers(1, 4))
        kernel = draw(st.integers(1, 3))
        stride = draw(st.integers(1, 2))
        padding = draw(st.integers(0, kernel // 2))
        new_size = (size + 2 * padding - kernel) // stride + 1
        if new_size < 2:
            break
        layers += [nn.Conv2d(channels, out, kernel, stride, padding), nn.ReLU()]
        channels, size = out, new_size
        if draw(st.booleans()) and size >= 2:
            pool = draw(st.sampled_from([nn.MaxPool2d, nn.AvgPool2d]))
            layers.append(pool(2))
            size //= 2
    features = channels * size * size
    hidden = draw(st.integers(2, 6))
    layers += [nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, draw(st.integers(2, 4)))]
    seed = draw(st.integers(0, 2 ** 16))
    return layers, input_channels, input_size, seed


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(architectures())
def test_ttfs_matches_the_ann_layer_by_layer(spec):
    layers, channels, size, seed = spec
    torch.manual_seed(seed)
    model = nn.Sequential(*layers).eval()
    for module in model:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.uniform_(module.weight, -0.6, 0.8)
    x = torch.rand(6, channels, size, size)
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=T, percentile=100)
    spiking = [p.name for p in snn.description.populations if p.threshold and p.role != "input"]
    result = snn.simulate(x, device="numpy", spikes=spiking)
    carried = {snn.graph.input.name: _quantise(x.numpy().astype(np.float64), snn.calibration.scales[snn.graph.input.name])}
    pending = {}  # average pools have no population: the next layer reads them through its projection
    for population in snn.description.populations[1:]:
        layer = snn.graph[population.layer]
        inputs = _inputs_of(snn, layer, carried, pending)
        with torch.no_grad():
            exact = layer.forward(inputs).numpy().reshape(len(x), -1)
        if population.role == "output":
            np.testing.assert_allclose(result.outputs, exact, atol=1e-9)
            continue
        values = snn.scheme.population_values(snn.description, result, population.name)
        scale = snn.calibration.scales[layer.name]
        if layer.op == "maxpool":
            np.testing.assert_allclose(values, exact, atol=SLACK)
        else:
            assert np.max(np.abs(values - np.clip(exact, 0, scale))) <= scale / (2 * T) + SLACK
        carried[layer.name] = values.reshape((len(x),) + layer.out_shape)


def _quantise(values, scale):
    return np.floor(np.clip(values / scale, 0, 1) * T + 0.5) * scale / T


def _inputs_of(snn, layer, carried, pending):
    """The tensor a layer reads: the carried values of its source, through average pools without neurons."""
    source = snn.graph[layer.inputs[0]]
    chain = []
    while source.name not in carried:
        chain.append(source)
        source = snn.graph[source.inputs[0]]
    value = torch.as_tensor(carried[source.name], dtype=torch.float64)
    with torch.no_grad():
        for pool in reversed(chain):
            value = pool.forward(value)
    return value
