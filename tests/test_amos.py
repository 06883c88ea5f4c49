"""The amos scheme: closed-form ReLU units, trained units, pipelining, one spike per neuron, devices.

Bounds are derived from the code, not picked to pass. The ReLU unit with ``K`` neurons and range
``alpha`` sends ``alpha floor(x 2^K / alpha) 2^-K`` for ``0 <= x < alpha`` (a successive-approximation
A/D conversion), 0 below 0 and ``alpha (1 - 2^-K)`` above: ``0 <= ReLU(x) - y <= alpha 2^-K`` on
``(-inf, alpha]`` (Stöckl & Maass, Sec. 1.2). The output layer sums ``W y + b`` exactly, so the
Brian2 network must equal the numpy reference :meth:`AMOS.reference` up to float rounding.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import needs_compiler
from test_amos_units import GATES, PRODUCT_GRID, UNIT_MAX_ERROR, off_grid_bound

import brianconv
from brianconv.connectivity import connections_for
from brianconv.errors import ConversionError, InvalidValueError
from brianconv.schemes.amos import UNIT_DIR, load_unit, relu_unit, sent_values

K = 6
FLOAT_SLACK = 1e-9  # float rounding of the summed synaptic input (a threshold tie can fall on either side)


def _hidden(snn):
    return [p for p in snn.description.populations if p.role == "hidden"]


def _unit(snn, population):
    return snn.scheme.unit_for(snn.graph[population.layer], snn.calibration)


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    return model, torch.rand(40, 12)


def test_relu_unit_is_the_closed_form_a_d_converter():
    alpha = 2.5
    for k_neurons in (1, 4, 10):
        unit = relu_unit(k_neurons, alpha)
        x = np.linspace(-3, alpha, 20001)
        error = np.maximum(x, 0) - unit(x)
        assert np.all(error >= -FLOAT_SLACK) and np.all(error <= alpha * 2.0 ** -k_neurons + FLOAT_SLACK)
        assert np.all(unit(x[x < 0]) == 0)
        steps = np.floor(np.clip(x, 0, None) * 2 ** k_neurons / alpha)
        np.testing.assert_allclose(unit(x), np.minimum(steps, 2 ** k_neurons - 1) * alpha * 2.0 ** -k_neurons,
                                   atol=1e-12)
        assert np.all(unit.spikes(x).sum(axis=-1) <= k_neurons)
    assert relu_unit(10, 1.0).n_parameters == 75  # the paper's Table 3


def test_relu_layers_stay_within_alpha_2_to_the_minus_k(dense):
    model, x = dense
    snn = brianconv.convert(model, "amos", calibration=x, K=K)
    hidden = _hidden(snn)
    result = snn.simulate(x, device="numpy", spikes=[p.name for p in hidden])
    n = len(x)
    received = x.numpy().astype(np.float64)  # the input is analog: the first layer receives W x + b exactly
    for population in hidden:
        layer, unit = snn.graph[population.layer], _unit(snn, population)
        alpha = snn.calibration.scales[layer.name]
        z = received @ layer.weight.T + layer.bias
        sent, counts = sent_values(result, snn.description, population.name, unit, n)
        np.testing.assert_array_equal(sent, snn.scheme.population_values(snn.description, result, population.name))
        inside = z <= alpha
        error = np.maximum(z, 0) - sent
        assert np.all(error[inside] >= -FLOAT_SLACK)
        assert np.all(error[inside] <= alpha * 2.0 ** -K + FLOAT_SLACK)
        np.testing.assert_allclose(sent[~inside], alpha * (1 - 2.0 ** -K), atol=FLOAT_SLACK)
        assert counts.max() <= 1, "a neuron fired twice for one image"
        received = sent
    out = snn.graph.output
    np.testing.assert_allclose(result.outputs, received @ out.weight.T + out.bias, rtol=0, atol=FLOAT_SLACK)
    reference, _ = snn.scheme.reference(snn.graph, snn.calibration, x)
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=FLOAT_SLACK)


@pytest.fixture(scope="module")
def pooled_by_average():
    """A conv layer, average pooling folded into the next layer, a hidden and an output layer."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(3 * 3 * 3, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    return model, torch.rand(10, 2, 6, 6)


def test_pipelined_equals_one_by_one_with_conv_and_average_pooling(pooled_by_average):
    model, x = pooled_by_average
    piped = brianconv.convert(model, "amos", calibration=x, K=4)
    serial = brianconv.convert(model, "amos", calibration=x, K=4, pipeline=False)
    d = piped.description
    assert d.period_steps == 1 < serial.description.period_steps
    # N images take N + sum of the layers' K steps (input relay: 1 step; output: read in the same step)
    assert d.duration_steps(len(x)) == len(x) + 1 + 4 + 4 - 1
    names = [p.name for p in d.populations if p.threshold]
    a = piped.simulate(x, device="numpy", spikes=names)
    b = serial.simulate(x, device="numpy", spikes=names)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    for population in _hidden(piped):
        unit = _unit(piped, population)
        values_a, counts_a = sent_values(a, d, population.name, unit, len(x))
        values_b, counts_b = sent_values(b, serial.description, population.name, unit, len(x))
        np.testing.assert_array_equal(counts_a, counts_b)
        np.testing.assert_array_equal(values_a, values_b)
        assert counts_a.max() <= 1
        # one-by-one windows hold whole images: the window counts are the spikes per image
        np.testing.assert_array_equal(b.spike_counts[population.name], counts_b.sum(axis=1))
    image, neuron, _ = b.spikes["input"]
    assert np.bincount(image * 1000 + neuron).max() <= 1
    reference, _ = piped.scheme.reference(piped.graph, piped.calibration, x)
    np.testing.assert_allclose(b.outputs, reference, rtol=0, atol=FLOAT_SLACK)


@pytest.mark.skipif(not all((UNIT_DIR / f"amos_{g}.npz").is_file() for g in GATES), reason="units not trained")
def test_sigmoid_and_silu_layers_match_the_reference_and_their_unit_error():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(5, 6), nn.Sigmoid(), nn.Linear(6, 4), nn.SiLU(), nn.Linear(4, 2)).eval()
    x = torch.rand(12, 5)
    snn = brianconv.convert(model, "amos", calibration=x)
    hidden = _hidden(snn)
    assert [_unit(snn, p).K for p in hidden] == [8, 12]
    result = snn.simulate(x, device="numpy", spikes=[p.name for p in hidden])
    reference, values = snn.scheme.reference(snn.graph, snn.calibration, x)
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=FLOAT_SLACK)
    received = x.numpy().astype(np.float64)
    for population in hidden:
        layer, unit = snn.graph[population.layer], _unit(snn, population)
        sent, counts = sent_values(result, snn.description, population.name, unit, len(x))
        np.testing.assert_allclose(sent, values[layer.name], atol=FLOAT_SLACK)
        assert counts.max() <= 1
        z = received @ layer.weight.T + layer.bias   # the unit's input, inside its training domain here
        assert np.all((z >= unit.domain[0]) & (z <= unit.domain[1]))
        assert np.max(np.abs(sent - GATES[layer.activation](z))) <= off_grid_bound(layer.activation) + FLOAT_SLACK
        received = sent


def _pooled_cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(3 * 3 * 3, 5), nn.ReLU(), nn.Linear(5, 3)).eval()


@pytest.mark.parametrize("pipeline", [True, False])
def test_max_pool_sends_the_unit_code_of_the_window_maximum(pipeline):
    """Pool neuron k fires iff some candidate k fired: the pool sends ``y(max_j x_j) = max_j y(x_j)`` exactly."""
    model = _pooled_cnn(3)
    x = torch.rand(12, 2, 6, 6)
    snn = brianconv.convert(model, "amos", calibration=x, K=K, wiring="dendrite", pipeline=pipeline)
    d = snn.description
    names = [p.name for p in d.populations if p.threshold]
    result = snn.simulate(x, device="numpy", spikes=names)
    conv, pool = snn.graph.layers[1], snn.graph.layers[2]
    unit = snn.scheme.unit_for(conv, snn.calibration)
    with torch.no_grad():
        z = torch.nn.functional.conv2d(x.double(), torch.as_tensor(conv.weight), torch.as_tensor(conv.bias), padding=1)
    expected = torch.nn.functional.max_pool2d(torch.as_tensor(unit(z.numpy())), 2).reshape(len(x), -1).numpy()
    sent = snn.scheme.population_values(d, result, "maxpool_2")
    np.testing.assert_allclose(sent, expected, rtol=0, atol=FLOAT_SLACK)
    assert np.mean(sent > 0) > 0.3, "too few active pools for a meaningful test"
    for name in names[1:]:
        per_image = np.bincount(result.spikes[name][0] * d.population(name).size + result.spikes[name][1])
        assert per_image.max() <= 1, f"{name}: a neuron fired twice for one image"
    reference, _ = snn.scheme.reference(snn.graph, snn.calibration, x)
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=FLOAT_SLACK)
    with pytest.raises(InvalidValueError, match="maxpool_2"):
        snn.scheme.population_values(d, result, "conv_0")  # the candidates: the pool sends the layer's code
    assert pool.op == "maxpool"


def test_dendrite_wiring_sends_the_same_values_with_fewer_synapses(pooled_by_average):
    model, x = pooled_by_average
    paper = brianconv.convert(model, "amos", calibration=x, K=4)
    dendrite = brianconv.convert(model, "amos", calibration=x, K=4, wiring="dendrite")
    names = [name for name in paper.description.state.units]
    a = paper.simulate(x, device="numpy", spikes=names)
    b = dendrite.simulate(x, device="numpy", spikes=names)
    np.testing.assert_allclose(a.outputs, b.outputs, rtol=0, atol=FLOAT_SLACK)
    for name in names:
        np.testing.assert_array_equal(paper.scheme.population_values(paper.description, a, name),
                                      dendrite.scheme.population_values(dendrite.description, b, name))
    # K_s K_t F feedforward synapses against K_s F + K_t n: conv (from the input, K_s = 1), linear
    # (the average pool folded in: 4 conv neurons per input), output (K_t = 1); inhibition n K (K - 1) / 2
    conv_f, linear_f, output_f = len(connections_for(paper.graph.layers[1])[0]), 27 * 4 * 5, 5 * 3
    inhibition = (108 + 5) * 4 * 3 // 2
    assert paper.description.n_synapses == 4 * conv_f + 4 * 4 * linear_f + 4 * output_f + inhibition
    assert dendrite.description.n_synapses == (conv_f + 4 * 108 + 4 * linear_f + 4 * 5 + 4 * output_f + inhibition)
    # one more step per layer for the dendrite
    assert dendrite.description.depth_steps == paper.description.depth_steps + 2


class _GatedCNN(nn.Module):
    """A conv map gated per channel by a squeeze-and-excitation block: sigmoid units and product units."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.squeeze, self.pool = nn.AdaptiveAvgPool2d(1), nn.AvgPool2d(2)
        self.reduce, self.expand = nn.Linear(4, 2), nn.Linear(2, 4)
        self.fc = nn.Linear(4 * 2 * 2, 3)

    def forward(self, x):
        a = torch.relu(self.conv(x))
        s = torch.sigmoid(self.expand(torch.relu(self.reduce(self.squeeze(a).flatten(1)))))
        return self.fc(self.pool(a * s.view(-1, 4, 1, 1)).flatten(1))


def test_squeeze_excitation_gate_is_a_layer_of_product_units():
    """The product unit reads both factors' spikes at aligned delays and stays within its trained error."""
    torch.manual_seed(0)
    model = _GatedCNN().eval()
    x = torch.rand(10, 1, 8, 8)
    snn = brianconv.convert(model, "amos", calibration=x, K=K)
    d = snn.description
    names = list(d.state.units)
    assert [d.state.units[name][0] for name in names] == ["relu", "relu", "sigmoid", "product"]
    result = snn.simulate(x, device="numpy", spikes=names)
    reference, values = snn.scheme.reference(snn.graph, snn.calibration, x)
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=FLOAT_SLACK)
    conv, gate, product = (snn.scheme.population_values(d, result, name) for name in (names[0], names[2], names[3]))
    exact = conv.reshape(len(x), 4, 16) * gate[:, :, None]   # the product of what the two factors send
    unit = snn.scheme.population_unit(d, names[3])
    s_a, s_b = unit.scale
    # scaled by what the factors can send: alpha of the ReLU units, the sigmoid unit's largest output
    assert s_a == snn.calibration.scales["conv"] and s_b == load_unit("sigmoid").largest_output()
    assert np.all(conv <= s_a) and np.all(np.abs(gate) <= s_b)
    # the unit sees a / s_a and s / s_b, inside its domain [-1, 1]^2; its error scales with s_a s_b
    grid_slack = 2 * 2 / (PRODUCT_GRID - 1)  # |d(ab)| <= |a| db + |b| da over one step of the test grid
    assert np.max(np.abs(product - exact.reshape(len(x), -1))) <= (UNIT_MAX_ERROR["product"] + grid_slack) * s_a * s_b
    np.testing.assert_allclose(product, values["mul"].reshape(len(x), -1), rtol=0, atol=FLOAT_SLACK)
    # the product units evaluate once both factors have answered
    starts = {p.name: p.window_start for p in d.populations}
    assert starts[names[3]] == starts[names[2]] + 8  # the gate's last neuron (K = 8) answers at its lag 7


@pytest.mark.parametrize("wiring", ["paper", "dendrite"])
def test_coincidence_neurons_multiply_the_factors_codes_exactly(wiring):
    """product="code": neuron (ka, kb) fires iff both factor neurons fired, so the layer sends y_a y_b."""
    torch.manual_seed(0)
    model = _GatedCNN().eval()
    x = torch.rand(10, 1, 8, 8)
    snn = brianconv.convert(model, "amos", calibration=x, K=K, product="code", wiring=wiring)
    d = snn.description
    names = list(d.state.units)
    result = snn.simulate(x, device="numpy", spikes=names)
    conv, gate, product = (snn.scheme.population_values(d, result, name) for name in (names[0], names[2], names[3]))
    exact = (conv.reshape(len(x), 4, 16) * gate[:, :, None]).reshape(len(x), -1)
    np.testing.assert_allclose(product, exact, rtol=0, atol=FLOAT_SLACK)
    assert np.mean(product > 0) > 0.3, "too few non-zero products for a meaningful test"
    image, neuron, _ = result.spikes[names[3]]
    unit = snn.scheme.population_unit(d, names[3])
    assert unit.K == K * 8 and np.bincount(image * d.population(names[3]).size + neuron).max() <= 1
    # every coincidence neuron that fired had both of its factor neurons fire for that image
    ka, kb, element = neuron // 64 // 8, neuron // 64 % 8, neuron % 64  # neuron (ka * 8 + kb) * 64 + element
    fired_a = set(zip(*result.spikes[names[0]][:2]))
    fired_b = set(zip(*result.spikes[names[2]][:2]))
    assert all((i, a * 64 + e) in fired_a and (i, b * 4 + e // 16) in fired_b
               for i, a, b, e in zip(image, ka, kb, element))
    reference, _ = snn.scheme.reference(snn.graph, snn.calibration, x)
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=FLOAT_SLACK)
    with torch.no_grad():  # the ANN, up to the ReLU and sigmoid codes only
        deviation = np.abs(result.outputs - model(x).numpy())
    assert np.all(deviation <= _gated_cnn_bound(model, snn.calibration.scales) + FLOAT_SLACK)


def _gated_cnn_bound(model, scales):
    """Bound on ``|SNN - ANN|`` per output of :class:`_GatedCNN` with exact code products, shape (3,).

    Each ReLU unit is within ``alpha 2^-K`` of ReLU (inputs below alpha: calibrated on the same
    images); the squeeze averages, a Linear layer multiplies by ``|W|``; the sigmoid unit adds its
    own error to ``sigma' <= 1/4`` times its input's; ``|a s - a^ s^| <= e_a |s| + |a^| e_s`` with
    ``|s| <= 1`` and ``a^ <= alpha_conv``; the average pool keeps the bound per channel.
    """
    alpha, step = scales["conv"], 2.0 ** -K
    weight = {name: np.abs(getattr(model, name).weight.detach().numpy().astype(np.float64))
              for name in ("reduce", "expand", "fc")}
    e_conv = alpha * step                                    # every conv element and their average
    e_reduce = weight["reduce"] @ np.full(4, e_conv) + scales["reduce"] * step
    e_gate = weight["expand"] @ e_reduce / 4 + off_grid_bound("sigmoid")
    e_product = e_conv + alpha * e_gate                      # per channel, (4,)
    return weight["fc"] @ np.repeat(e_product, 4)            # fc reads channel-major (4 channels x 2 x 2)


@pytest.mark.parametrize("pipeline", [True, False])
def test_default_wiring_is_dendrite_for_max_pools_and_the_papers_otherwise(pipeline):
    """``wiring="auto"`` builds exactly the network of the explicit wiring it stands for."""
    x = torch.rand(4, 1, 6, 6)
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2)).eval()
    plain = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 2)).eval()
    for model, wiring in ((pooled, "dendrite"), (plain, "paper")):
        default = brianconv.convert(model, "amos", calibration=x, K=3, pipeline=pipeline).description
        explicit = brianconv.convert(model, "amos", calibration=x, K=3, pipeline=pipeline, wiring=wiring).description
        assert default.fingerprint(2) == explicit.fingerprint(2)
        assert default.state.wiring == wiring


def test_unsupported_layers_and_inputs_are_rejected():
    x = torch.rand(4, 1, 6, 6)
    pooled = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2))
    with pytest.raises(ConversionError, match="wiring='dendrite'"):
        brianconv.convert(pooled, "amos", calibration=x, wiring="paper")
    with pytest.raises(ConversionError, match="must directly follow a hidden Linear/Conv2d layer with ReLU"):
        brianconv.convert(nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(9, 2)), "amos", calibration=x,
                          wiring="dendrite")
    with pytest.raises(InvalidValueError, match="wiring"):
        brianconv.convert(pooled, "amos", calibration=x, wiring="axon")
    with pytest.raises(ConversionError, match="output layer"):
        brianconv.convert(nn.Sequential(nn.Flatten(), nn.Linear(36, 2), nn.Sigmoid()), "amos", calibration=x)
    shifted = brianconv.convert(nn.Sequential(nn.Flatten(), nn.Linear(36, 2)), "amos", calibration=x - 0.5)
    assert shifted.input_shift.low[0] < 0  # negative inputs: shifted to x - low >= 0, folded into the Linear
    with pytest.raises(InvalidValueError, match="K"):
        brianconv.convert(nn.Sequential(nn.Flatten(), nn.Linear(36, 2)), "amos", calibration=x, K=0)


@needs_compiler
@pytest.mark.standalone
@pytest.mark.parametrize("wiring", ["paper", "dendrite", pytest.param("gated", marks=pytest.mark.long)])
def test_runtime_and_standalone_give_identical_spikes(build_root, wiring):
    """Kept small (K = 3, about 10 projections): every projection is several C++ files to compile.
    The dendrite net max-pools: candidates, pool neurons and their inhibition in both devices.
    "gated": a trained sigmoid unit (K = 8) and coincidence neurons (``product="code"``)."""
    torch.manual_seed(3)
    options = dict(K=3, wiring=wiring)
    if wiring == "paper":
        model, x = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval(), torch.rand(8, 6)
    elif wiring == "dendrite":
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)).eval()
        x = torch.rand(8, 1, 6, 6)
    else:
        if not (UNIT_DIR / "amos_sigmoid.npz").is_file():
            pytest.skip("the sigmoid unit is not trained (benchmarks/train_amos_units.py sigmoid)")
        model, x = _GatedCNN().eval(), torch.rand(8, 1, 8, 8)
        options = dict(K=3, wiring="dendrite", product="code")
    snn = brianconv.convert(model, "amos", calibration=x, **options)
    names = [p.name for p in snn.description.populations if p.threshold]
    runtime = snn.simulate(x, device="numpy", spikes=names, batch_size=11)
    standalone = snn.simulate(x, device="cpp_standalone", spikes=names, batch_size=11,
                              build_root=build_root)
    assert standalone.timing["compiled"]
    np.testing.assert_array_equal(runtime.outputs, standalone.outputs)
    for name in names:
        assert len(standalone.spikes[name][0]) > 0, f"{name} is silent: nothing compared"
        for a, b in zip(runtime.spikes[name], standalone.spikes[name]):
            np.testing.assert_array_equal(np.sort(a), np.sort(b))
