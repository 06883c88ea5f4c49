"""Calibration: activation scales are percentiles of the positive activations, computed here
independently from the torch model, and the normalised parameters of Rueckauer et al. (2017)
turn every layer's activation into ``activation / lambda``.
"""

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn

from brianconv.calibration import activation_scale, calibrate, normalised_parameters
from brianconv.errors import AccuracyWarning, CalibrationError, InvalidValueError
from brianconv.graph import trace

EXACT = 1e-12  # float64 throughout: only summation order differs


@pytest.fixture
def cnn():
    """conv -> relu -> maxpool -> conv -> relu -> avgpool -> flatten -> linear -> relu -> linear."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(3, 4, 3),
                          nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4, 6), nn.ReLU(),
                          nn.Linear(6, 3)).eval().double()
    x = torch.rand(64, 1, 8, 8, dtype=torch.float64)
    return model, trace(model, (1, 8, 8)), x


def torch_activations(model, x):
    """Each module's output in the Sequential (float64), keyed by its index as a string."""
    out, values = x, {}
    with torch.no_grad():
        for name, module in model.named_children():
            out = module(out)
            values[name] = out.numpy()
    return values


# layer name in the graph -> index of the module whose output is that layer's activated output
LAYER_OUTPUT = {"0": "1", "2": "2", "3": "4", "5": "5", "7": "8", "9": "9"}


def expected_scale(values, percentile):
    positive = values[values > 0]
    return positive.max() if percentile == 100 else np.percentile(positive, percentile)


@pytest.mark.parametrize("percentile", [50.0, 90.0, 99.9, 100.0])
def test_scales_are_percentiles_of_the_positive_activations(cnn, percentile):
    model, graph, x = cnn
    calibration = calibrate(graph, x, percentile)
    assert calibration.percentile == percentile and calibration.n_samples == 64
    assert set(calibration.scales) == {layer.name for layer in graph}
    acts = torch_activations(model, x)
    for layer, module in LAYER_OUTPUT.items():
        if graph[layer].op in ("maxpool", "avgpool"):
            continue
        expected = expected_scale(acts[module], percentile)
        assert calibration.scales[layer] == pytest.approx(expected, rel=EXACT), layer
    assert calibration.scales[graph.input.name] == pytest.approx(expected_scale(x.numpy(), percentile), rel=EXACT)


def test_the_maximum_is_the_largest_activation(cnn):
    model, graph, x = cnn
    calibration = calibrate(graph, x, 100)
    acts = torch_activations(model, x)
    assert calibration.scales["7"] == pytest.approx(acts["8"].max(), rel=EXACT)
    assert all(fraction == 0 for fraction in calibration.clipped.values())


def test_pooling_layers_inherit_their_source_scale(cnn):
    _, graph, x = cnn
    calibration = calibrate(graph, x, 99.0)
    assert calibration.scales["2"] == calibration.scales["0"]  # max-pool after conv 0
    assert calibration.scales["5"] == calibration.scales["3"]  # avg-pool after conv 3
    # the average pool's own 99th percentile would be lower: inheritance is not a coincidence
    _, values = graph.forward(x, record=True)
    assert activation_scale(values["5"], 99.0) < calibration.scales["5"]


@pytest.mark.parametrize("percentile", [50.0, 99.0])
def test_clipped_fractions(cnn, percentile):
    model, graph, x = cnn
    calibration = calibrate(graph, x, percentile)
    acts = torch_activations(model, x)
    for layer, module in LAYER_OUTPUT.items():
        expected = np.mean(acts[module] > calibration.scales[layer])
        assert calibration.clipped[layer] == pytest.approx(expected, abs=EXACT), layer
    # the 50th percentile of the positive values clips about half of them
    positive = acts["1"][acts["1"] > 0]
    if percentile == 50.0:
        assert calibration.clipped["0"] * acts["1"].size == pytest.approx(positive.size / 2, abs=1)


def test_normalised_parameters(cnn):
    model, graph, x = cnn
    calibration = calibrate(graph, x, 99.0)
    params = normalised_parameters(graph, calibration)
    assert set(params) == {"0", "3", "7", "9"}
    s = calibration.scales
    for layer, source in [("0", graph.input.name), ("3", "2"), ("7", "5"), ("9", "7")]:
        weight, bias = params[layer]
        np.testing.assert_allclose(weight, graph[layer].weight * s[source] / s[layer], rtol=EXACT)
        np.testing.assert_allclose(bias, graph[layer].bias / s[layer], rtol=EXACT)
    assert s["2"] == s["0"] and s["5"] == s["3"]  # pools carry their source's scale

    # the normalised network, run in torch on x / lambda_input, gives every activation / lambda
    normalised = copy.deepcopy(model)
    with torch.no_grad():
        for layer, (weight, bias) in params.items():
            normalised[int(layer)].weight.copy_(torch.as_tensor(weight).reshape(normalised[int(layer)].weight.shape))
            normalised[int(layer)].bias.copy_(torch.as_tensor(bias))
    original = torch_activations(model, x)
    scaled = torch_activations(normalised, x / s[graph.input.name])
    for layer, module in LAYER_OUTPUT.items():
        np.testing.assert_allclose(scaled[module], original[module] / s[layer], rtol=1e-9, atol=1e-12)


def test_empty_or_missing_calibration_data():
    graph = trace(nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2)), (3,))
    with pytest.raises(CalibrationError, match="empty"):
        calibrate(graph, np.zeros((0, 3)))
    with pytest.raises(CalibrationError, match="calibration="):
        calibrate(graph, None)


@pytest.mark.parametrize("percentile", [0, -5, 100.5, 1000])
def test_percentile_out_of_range(percentile):
    graph = trace(nn.Sequential(nn.Linear(3, 2)), (3,))
    with pytest.raises(InvalidValueError, match=r"percentile must be in \(0, 100\]"):
        calibrate(graph, np.ones((4, 3)), percentile)


def test_a_never_active_layer_warns_and_gets_a_neutral_scale():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # inputs in [0, 1) can never overcome this
    graph = trace(model, (3,))
    with pytest.warns(AccuracyWarning, match="Layer '0' is never active on the 10 calibration samples"):
        calibration = calibrate(graph, torch.rand(10, 3))
    assert calibration.scales["0"] == 1.0 and calibration.clipped["0"] == 0.0


def test_an_active_network_does_not_warn(cnn, recwarn):
    _, graph, x = cnn
    calibrate(graph, x)
    assert not [w for w in recwarn if issubclass(w.category, AccuracyWarning)]


def test_activation_scale():
    values = np.array([[-3.0, 0.0, 1.0], [2.0, 3.0, 4.0]])
    assert activation_scale(values, 100) == 4.0
    assert activation_scale(values, 50) == 2.5  # median of 1, 2, 3, 4
    assert activation_scale(-values, 99) == 3.0  # only 3 is positive
    assert activation_scale(np.zeros(5)) == 1.0
