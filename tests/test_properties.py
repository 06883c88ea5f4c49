"""Property-based: random small architectures converted with every scheme that supports them.

Each test draws conv/pool/linear stacks from :func:`architectures` (restricted where a scheme
cannot represent a layer) and checks every population against the torch layer applied to the
values the previous population *actually* carried, so the per-layer bound of the scheme is
tested without the slack of errors compounding from earlier layers; where a scheme is exact the
end-to-end output is compared too.

``ttfs``: a two-stage neuron is off by at most half a step of its code (``lambda / (2 T)``), a
max-pool neuron is exact, and the output membrane equals the output layer applied to the last
hidden values.

``rate`` (reset by subtraction, analog input, ``maxpool_tau=None``): a layer's normalised drive
over its window is ``Q(k)`` (charge up to the threshold check of step ``k``, in units of the
threshold) and ``a = Q(T - 1) / T = layer(carried) / lambda``. One spike per step at most and
``v = Q(k) - n(k)`` give ``n <= max(0, max_k Q(k))``, and at the last check ``v < 1`` (or the
neuron fired in every step since its last silent check), so ``n > min(Q(T - 1), T) - 1 - E``.
``E`` bounds how far ``Q`` strays from the straight line ``(k + 1) a``: ``E = sum_j |W~_ij| D_j``
with ``D_j`` the largest distance of source ``j``'s running spike count from its own straight line
(0 for the constant analog input, below 1 for a regular train). So per layer
``clip(a, 0, 1) - (1 + E) / T < n / T <= clip(a, 0, 1) + E / T``: the ``1 / T`` sampling error
of Rueckauer et al.'s Eq. 6 exactly for the first layer (``E = 0``), widened by the timing jitter
of the spike trains it reads in deeper layers. Errors compound through the layers: with ``B`` the
bound on ``|carried - ANN|`` (ANN units), ``B_l = |W_l| B_(l-1) + lambda_l (1 + E) / T`` (max-pool:
the pool's largest ``B``), and the output differs from the ANN by at most ``|W_L| B_(L-1)``. The
limited max-pool gate with ``d = 1`` fires exactly ``max_j n_j`` times (exact), and the output
accumulator is the output layer applied to the carried rates (float rounding only).

``tdsnn``: spike times are compared exactly, in integer steps, with ``T(A) = ceil(L ln(A + 1))``
of the layer applied to the codes the previous population sent, and with
:func:`brianconv.schemes.tdsnn.emulate` end to end; the decoded value ``G - 1`` is ReLU rounded up
on the logarithmic grid, ``0 <= G - 1 - ReLU(A) < (ReLU(A) + 1)(exp(1 / L) - 1)``. A max-pool
neuron carries exactly the largest input code; the output equals the output layer applied to the
codes (float rounding only).

``amos`` (no max-pooling: the scheme rejects it): each ReLU unit with ``K`` neurons and range
``alpha`` sends ``y`` with ``0 <= ReLU(z) - y <= alpha 2^-K`` for ``z <= alpha`` (and ``alpha (1 -
2^-K)`` above), every neuron fires at most once per image, and the outputs equal the numpy
reference :meth:`brianconv.schemes.amos.AMOS.reference` (float rounding only).
"""

import dataclasses

import numpy as np
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_amos import _hidden as _amos_hidden
from test_amos import _unit
from test_rate import _counts
from test_tdsnn import _steps

import brianconv
from brianconv.schemes.amos import sent_values
from brianconv.schemes.tdsnn import code_value, emulate, spike_step

T = 8
SLACK = 1e-9
T_RATE = 64       # rate: image period in steps
L_TDSNN = 4.0     # tdsnn: leak constant in steps
K_AMOS = 4        # amos: neurons per ReLU unit (K^2 synapses per ANN connection)
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def architectures(draw, pools=(nn.MaxPool2d, nn.AvgPool2d)):
    """A conv/pool/linear stack with random shapes, strides and paddings, and a matching input.

    ``pools`` are the pooling layers that may follow a convolution (a scheme without max-pooling
    passes ``(nn.AvgPool2d,)``).
    """
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
            pool = draw(st.sampled_from(list(pools)))
            layers.append(pool(2))
            size //= 2
    features = channels * size * size
    hidden = draw(st.integers(2, 6))
    layers += [nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, draw(st.integers(2, 4)))]
    seed = draw(st.integers(0, 2 ** 16))
    return layers, input_channels, input_size, seed


def _model_and_input(spec, n_images=6):
    """The drawn model (weights mostly positive, so that deeper layers are active) and its input.

    All parameters are drawn again from ``seed`` (the layers' own initialisation at draw time
    depends on the global random state, so a replayed example would get other biases).
    """
    layers, channels, size, seed = spec
    torch.manual_seed(seed)
    model = nn.Sequential(*layers).eval()
    for module in model:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.reset_parameters()
            nn.init.uniform_(module.weight, -0.6, 0.8)
    return model, torch.rand(n_images, channels, size, size)


@settings(max_examples=8, **SETTINGS)
@given(architectures())
def test_ttfs_matches_the_ann_layer_by_layer(spec):
    model, x = _model_and_input(spec)
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=T, percentile=100)
    spiking = [p.name for p in snn.description.populations if p.threshold and p.role != "input"]
    result = snn.simulate(x, device="numpy", spikes=spiking)
    carried = {snn.graph.input.name: _quantise(x.numpy().astype(np.float64), snn.calibration.scales[snn.graph.input.name])}
    for population in snn.description.populations[1:]:
        layer = snn.graph[population.layer]
        inputs = _inputs_of(snn, layer, carried)
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


@settings(max_examples=10, **SETTINGS)
@given(architectures())
def test_rate_matches_the_ann_within_the_sampling_error_of_each_layer(spec):
    model, x = _model_and_input(spec)
    snn = brianconv.convert(model, "rate", calibration=x, duration=T_RATE, percentile=100, maxpool_tau=None)
    n, graph, scales = len(x), snn.graph, snn.calibration.scales
    spiking = [p.name for p in snn.description.populations if p.role == "hidden"]
    result = snn.simulate(x, device="numpy", spikes=spiking)
    x64 = x.numpy().astype(np.float64)
    carried = {graph.input.name: x64}                 # analog input: the first layer reads x exactly
    jitter = {graph.input.name: np.zeros_like(x64)}   # D * lambda: running-count deviation, ANN units
    bound = {graph.input.name: np.zeros_like(x64)}    # B: bound on |carried - ANN|, ANN units
    ann = {graph.input.name: torch.as_tensor(x64)}
    for population in snn.description.populations[1:]:
        layer = graph[population.layer]
        inputs = _inputs_of(snn, layer, carried)
        with torch.no_grad():
            ann[layer.name] = layer.forward(_inputs_of(snn, layer, ann))
            drive = layer.pre_activation(inputs).numpy().reshape(n, -1)
        if population.role == "output":
            np.testing.assert_allclose(result.outputs, drive, rtol=0, atol=SLACK)
            spread = _abs_layer(snn, layer, bound).reshape(n, -1)
            assert np.all(np.abs(result.outputs - ann[layer.name].numpy().reshape(n, -1)) <= spread + SLACK)
            continue
        counts = _counts(result, population.name, n, population.size)
        source = snn.description.state.pool_sources.get(layer.name, layer.name)
        scale = scales[source]
        if layer.op == "maxpool":   # the limited gate with d = 1 fires max_j n_j times
            np.testing.assert_allclose(counts / T_RATE * scale, drive, rtol=0, atol=SLACK)
            with torch.no_grad():
                bound[layer.name] = layer.forward(_inputs_of(snn, layer, bound)).numpy()
        else:
            a = drive / scale
            e = _abs_layer(snn, layer, jitter).reshape(n, -1) / scale
            rate, target = counts / T_RATE, np.clip(a, 0, 1)
            assert np.all(rate > target - (1 + e) / T_RATE - SLACK)
            assert np.all(rate <= target + e / T_RATE + SLACK)
            spread = _abs_layer(snn, layer, bound).reshape(n, -1) + scale * (1 + e) / T_RATE
            bound[layer.name] = spread.reshape((n,) + layer.out_shape)
        values = snn.scheme.population_values(snn.description, result, population.name)
        assert np.all(np.abs(values - ann[layer.name].numpy().reshape(n, -1)) <= bound[layer.name].reshape(n, -1) + SLACK)
        carried[layer.name] = values.reshape((n,) + layer.out_shape)
        jitter[layer.name] = (_count_jitter(result, population.name, n, population.size) * scale).reshape(
            (n,) + layer.out_shape)


@settings(max_examples=10, **SETTINGS)
@given(architectures())
def test_tdsnn_spike_times_are_T_of_the_layer_exactly(spec):
    model, x = _model_and_input(spec)
    snn = brianconv.convert(model, "tdsnn", calibration=x, L=L_TDSNN)
    n, graph, state = len(x), snn.graph, snn.description.state
    hidden = [p for p in snn.description.populations if p.role == "hidden"]
    result = snn.simulate(x, device="numpy", spikes=[p.name for p in hidden])
    emulated, emulated_steps = emulate(graph, x, L_TDSNN, t_out=state.t_out)
    x64 = x.numpy().astype(np.float64)
    carried = {graph.input.name: code_value(spike_step(x64, L_TDSNN, state.t_out[graph.input.name]), L_TDSNN)}
    growth = np.exp(1 / L_TDSNN) - 1
    for population in snn.description.populations[1:]:
        if population.role == "helper":
            continue
        layer = graph[population.layer]
        with torch.no_grad():
            a = layer.pre_activation(_inputs_of(snn, layer, carried)).numpy().reshape(n, -1)
        if population.role == "output":
            np.testing.assert_allclose(result.outputs, a, rtol=0, atol=SLACK)
            np.testing.assert_allclose(result.outputs, emulated[layer.name].reshape(n, -1), rtol=0, atol=SLACK)
            continue
        if layer.op == "maxpool":   # fires one step after its latest input: the largest code, exactly
            steps = _steps(result, population.name, n, layer.size, 1)
            np.testing.assert_allclose(code_value(steps, L_TDSNN), a, rtol=0, atol=SLACK)
        else:
            steps = _steps(result, population.name, n, layer.size, population.values["T_il"] + 1)
            raw = L_TDSNN * np.log(np.maximum(a, 0) + 1)
            tie = np.abs(raw - np.rint(raw)) < 1e-9     # ceil at an exact integer: rounding decides
            expected = spike_step(a, L_TDSNN, population.values["T_out"])
            assert np.all((steps == expected) | tie)
            decoded, relu = code_value(steps, L_TDSNN), np.maximum(a, 0)
            coded = steps < population.values["T_out"]   # not cut at the end of the code
            assert np.all(decoded - relu >= -SLACK)
            assert np.all((decoded - relu)[coded] < (relu[coded] + 1) * growth + SLACK)
        np.testing.assert_array_equal(steps, emulated_steps[layer.name].reshape(n, -1))
        carried[layer.name] = code_value(steps, L_TDSNN).reshape((n,) + layer.out_shape)


@settings(max_examples=8, **SETTINGS)
@given(architectures(pools=(nn.AvgPool2d,)))
def test_amos_relu_units_stay_within_alpha_2_to_the_minus_K(spec):
    model, x = _model_and_input(spec)
    snn = brianconv.convert(model, "amos", calibration=x, K=K_AMOS)
    n, graph = len(x), snn.graph
    result = snn.simulate(x, device="numpy", spikes=[p.name for p in _amos_hidden(snn)])
    carried = {graph.input.name: x.numpy().astype(np.float64)}   # analog input: W x + b exactly
    for population in snn.description.populations[1:]:
        layer = graph[population.layer]
        with torch.no_grad():
            z = layer.pre_activation(_inputs_of(snn, layer, carried)).numpy().reshape(n, -1)
        if population.role == "output":
            np.testing.assert_allclose(result.outputs, z, rtol=0, atol=SLACK)
            continue
        unit, alpha = _unit(snn, population), snn.calibration.scales[layer.name]
        sent, counts = sent_values(result, snn.description, population.name, unit, n)
        assert counts.max() <= 1, "a neuron fired twice for one image"
        inside = z <= alpha
        error = np.maximum(z, 0) - sent
        assert np.all(error[inside] >= -SLACK)
        assert np.all(error[inside] <= alpha * 2.0 ** -K_AMOS + SLACK)
        np.testing.assert_allclose(sent[~inside], alpha * (1 - 2.0 ** -K_AMOS), rtol=0, atol=SLACK)
        carried[layer.name] = sent.reshape((n,) + layer.out_shape)
    reference, _ = snn.scheme.reference(graph, snn.calibration, x)
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=SLACK)


def _quantise(values, scale):
    return np.floor(np.clip(values / scale, 0, 1) * T + 0.5) * scale / T


def _inputs_of(snn, layer, carried):
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


def _abs_layer(snn, layer, deviations):
    """``|W|`` of a weighted layer (no bias) applied to non-negative per-input deviations, numpy."""
    absolute = dataclasses.replace(layer, weight=np.abs(layer.weight), bias=np.zeros_like(layer.bias),
                                   activation=None)
    with torch.no_grad():
        return absolute.pre_activation(_inputs_of(snn, layer, deviations)).numpy()


def _count_jitter(result, population, n_images, size):
    """``D``: the largest distance of each neuron's running spike count from the line ``(k + 1) n / T``."""
    image, neuron, local = result.spikes[population]
    per_step = np.zeros((n_images, size, T_RATE))
    np.add.at(per_step, (image, neuron, local), 1)
    running = np.cumsum(per_step, axis=-1)
    line = np.arange(1, T_RATE + 1) * running[..., -1:] / T_RATE
    return np.max(np.abs(running - line), axis=-1)
