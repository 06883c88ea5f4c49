"""Layer-wise bias correction (:mod:`brianconv.bias_correction`): the change it makes is the one derived
from the rate code's exact first-layer counts, it touches nothing else, and it halves every rate layer's
mean error. (ttfs and tdsnn round values to the nearest time step: a bias change below half a step moves
no spike, so no fraction of their error can be promised. The gallery measures what it does for them on
real models.)"""

import numpy as np
import pytest
import torch
import torch.nn as nn

import brianconv
from brianconv.bias_correction import channel_means, correctable_layers
from brianconv.calibration import normalised_parameters
from brianconv.errors import InvalidValueError

T = 32
DEVICE = "numpy"   # nothing to compile, as in test_rate
OPTIONS = {"rate": dict(duration=T, percentile=100)}


def _dense(widths, seed):
    torch.manual_seed(seed)
    layers = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    model = nn.Sequential(*layers[:-1]).eval()
    with torch.no_grad():
        model[0].bias.add_(0.2)   # most first-layer neurons active
    return model, torch.rand(24, widths[0])


def _first_layer_counts(drive):
    """The rate code's count for a constant normalised drive ``a~`` (Rueckauer et al., Eq. 6): floor(T a~), clipped."""
    return np.clip(np.floor(T * drive), 0, T)


def test_rate_first_layer_change_is_the_mean_error_of_the_exact_counts():
    """Two corrections of the first hidden layer of a rate network, derived by hand from its exact counts
    ``floor(T z / lambda)``: each adds ``mean_n(min(a, lambda) - lambda * count / T)`` to the bias (ANN units)."""
    model, x = _dense((12, 10, 4), seed=3)
    snn = brianconv.convert(model, "rate", calibration=x, **OPTIONS["rate"])
    (population, layer), = correctable_layers(snn)
    scale = snn.calibration.scales[layer]
    weight, bias = normalised_parameters(snn.graph, snn.calibration)[layer]
    drive = x.double().numpy() / snn.calibration.scales[snn.graph.input.name] @ weight.T + bias   # z / lambda
    target = np.clip(drive, 0, 1) * scale
    expected = np.zeros(drive.shape[1])
    for _ in range(2):
        change = np.mean(target - scale * _first_layer_counts(drive + expected / scale) / T, axis=0)
        expected += change
    assert np.mean(np.abs(expected) > 0) >= 0.5, "most units of the test layer need an error to correct"

    corrected = brianconv.correct_biases(snn, x, iterations=2, device=DEVICE)

    np.testing.assert_allclose(corrected.bias_corrections[layer], expected, rtol=0, atol=1e-12)
    before, after = snn.description.population(population), corrected.description.population(population)
    np.testing.assert_allclose(after.values["b"] - before.values["b"], expected / scale, rtol=0, atol=1e-12)
    unchanged = [(p.name, key) for p in snn.description.populations for key in p.values
                 if not (p.name == population and key == "b")]
    for name, key in unchanged:
        np.testing.assert_array_equal(np.asarray(corrected.description.population(name).values[key]),
                                      np.asarray(snn.description.population(name).values[key]))
    for old, new in zip(snn.description.projections, corrected.description.projections):
        np.testing.assert_array_equal(old.connections.weight, new.connections.weight)
    assert snn.graph is corrected.graph and snn.described_graph[layer].bias is not corrected.described_graph[layer].bias


def _mean_errors(snn, x, layers):
    """Per-unit mean error ``min(a, lambda) - carried`` (ANN units) of each correctable layer on ``x``."""
    result = snn.simulate(x, device=DEVICE, spikes=[population for population, _ in layers])
    _, activations = snn.graph.forward(x.numpy(), record=True)
    errors = {}
    for population, layer in layers:
        target = np.minimum(activations[layer], snn.calibration.scales[layer])
        errors[layer] = channel_means(target - snn.values(result, population).reshape(target.shape))
    return errors


def _corrected_errors(method):
    """Mean errors per unit of both hidden layers of a 3-layer MLP before and after two corrections each."""
    model, x = _dense((12, 16, 12, 4), seed=5)
    snn = brianconv.convert(model, method, calibration=x, **OPTIONS[method])
    layers = correctable_layers(snn)
    assert [layer for _, layer in layers] == ["0", "2"]
    corrected = brianconv.correct_biases(snn, x, device=DEVICE)
    np.testing.assert_array_equal(corrected.simulate(x, device=DEVICE).ann_outputs,
                                  snn.simulate(x, device=DEVICE).ann_outputs)
    return _mean_errors(snn, x, layers), _mean_errors(corrected, x, layers)


def test_rate_correction_halves_every_layers_mean_error():
    """Rate: afterwards the summed absolute mean error of each layer on the calibration inputs is at most
    half what it was. The count ``floor(T a~)`` errs by ``[0, 1)`` step, ``-1/2`` on average over the
    images; the correction removes that mean and leaves a zero-centred rounding error whose mean over
    24 images spreads by about ``step / sqrt(12 * 24)``, 6 % of a step."""
    before, after = _corrected_errors("rate")
    for layer in before:
        assert np.sum(np.abs(before[layer])) > 0
        assert np.sum(np.abs(after[layer])) <= 0.5 * np.sum(np.abs(before[layer])), layer


def test_a_corrected_network_corrected_again_adds_up_its_changes():
    model, x = _dense((12, 10, 4), seed=3)
    snn = brianconv.convert(model, "rate", calibration=x, **OPTIONS["rate"])
    once = brianconv.correct_biases(snn, x, iterations=1, device=DEVICE)
    twice = brianconv.correct_biases(once, x, iterations=1, device=DEVICE)
    both = brianconv.correct_biases(snn, x, iterations=2, device=DEVICE)
    np.testing.assert_allclose(twice.bias_corrections["0"], both.bias_corrections["0"], rtol=0, atol=1e-12)


def test_misuse_is_named():
    model, x = _dense((12, 10, 4), seed=3)
    snn = brianconv.convert(model, "rate", calibration=x, **OPTIONS["rate"])
    with pytest.raises(InvalidValueError, match="images must be a positive integer"):
        brianconv.correct_biases(snn, x, images=0, device=DEVICE)
    with pytest.raises(InvalidValueError, match="iterations must be a positive integer"):
        brianconv.correct_biases(snn, x, iterations=0, device=DEVICE)
    single = brianconv.convert(nn.Sequential(nn.Linear(12, 4)).eval(), "rate", calibration=x, **OPTIONS["rate"])
    with pytest.raises(InvalidValueError, match="no hidden population"):
        brianconv.correct_biases(single, x, device=DEVICE)
