"""The scheme contract by example (``tests/example_scheme.py``): registration, exactness, devices.

The example's neurons are non-leaky IF neurons with reset to zero and a constant drive ``a~ <= 1``
per step (normalised units): each spike takes ``ceil(theta / a~)`` steps, so after ``T`` steps a
hidden neuron has fired ``n = floor(T / ceil(theta / a~))`` times and carries ``n theta lambda /
T``. Since ``ceil(theta / a~) < theta / a~ + 1``, that value lies below ``lambda a~`` by less than
``lambda (a~^2 / (theta + a~) + theta / T) <= lambda (1 / (theta + 1) + theta / T)``: the bound the
outputs are checked against. The output integrates exactly: ``W2 h + b2`` of the decoded hidden ``h``.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import needs_compiler
from example_scheme import ExampleIF

import brianconv
from brianconv import schemes
from brianconv.errors import InvalidValueError

T, THETA = 64, 4.0


@pytest.fixture(scope="module")
def registered():
    """The example scheme, registered for this module only (``available_methods()`` elsewhere is unchanged)."""
    schemes.register(ExampleIF)
    yield ExampleIF.name
    schemes.unregister(ExampleIF.name)


@pytest.fixture(scope="module")
def mlp(registered):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    with torch.no_grad():
        model[0].bias.add_(0.2)   # most hidden neurons active
    x = torch.rand(6, 6)
    snn = brianconv.convert(model, registered, calibration=x, duration=T, threshold=THETA)
    return model, x.numpy().astype(np.float64), snn


def test_the_contract_is_enforced():
    class Incomplete(schemes.Scheme):
        name = "incomplete"

        def describe(self, graph, calibration):
            return None

    with pytest.raises(TypeError, match="setup"):
        Incomplete()
    with pytest.raises(TypeError, match="does not implement setup"):
        schemes.register(Incomplete)
    assert "incomplete" not in brianconv.available_methods()


def test_register_and_unregister():
    class Copy(ExampleIF):   # its own name: independent of the module's registration of ExampleIF
        name = "example_if_copy"

    assert Copy.name not in brianconv.available_methods()
    schemes.register(Copy)
    try:
        assert Copy.name in brianconv.available_methods() and schemes.get(Copy.name) is Copy
        with pytest.raises(ValueError, match="already registered"):
            schemes.register(type("Other", (Copy,), {}))
    finally:
        schemes.unregister(Copy.name)
    assert Copy.name not in brianconv.available_methods()
    assert ExampleIF.run_parameters() == ["threshold_scale"]


def test_counts_values_and_outputs_follow_the_if_neuron(mlp):
    model, x, snn = mlp
    hidden = snn.description.populations[1]
    result = snn.simulate(x, device="numpy", spikes=[hidden.name], batch_size=4)
    weight, bias = (p.detach().numpy().astype(np.float64) for p in model[0].parameters())
    scale = snn.calibration.scales[hidden.layer]
    drive = (x @ weight.T + bias) / scale                      # a~, at most 1 (max-norm on these images)
    assert drive.max() <= 1 and (drive > 0).mean() > 0.5
    steps_per_spike = np.ceil(THETA / np.where(drive > 0, drive, np.inf))
    expected = np.where(drive > 0, np.floor(T / np.maximum(steps_per_spike, 1)), 0)
    carried = snn.values(result, hidden.layer)                  # by layer name ...
    np.testing.assert_array_equal(carried, snn.values(result, hidden.name))   # ... or population name
    np.testing.assert_allclose(carried, expected * THETA * scale / T, rtol=1e-12)
    w2, b2 = (p.detach().numpy().astype(np.float64) for p in model[2].parameters())
    np.testing.assert_allclose(result.outputs, carried @ w2.T + b2, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(snn.values(result, snn.description.output_population), result.outputs)
    bound = np.abs(w2) @ np.full(len(bias), scale * (1 / (THETA + 1) + THETA / T))
    assert np.all(np.abs(result.outputs - result.ann_outputs) <= bound + 1e-9)


def test_unknown_run_time_parameter_lists_the_valid_ones(mlp):
    _, x, snn = mlp
    with pytest.raises(InvalidValueError, match="'theta'.*threshold_scale"):
        snn.simulate(x, device="numpy", theta=2)


@needs_compiler
@pytest.mark.standalone
def test_runtime_and_standalone_give_identical_spikes(mlp, build_root):
    _, x, snn = mlp
    names = [p.name for p in snn.description.populations if p.threshold]
    for threshold_scale in (1.0, 0.5):   # the run-time parameter reaches the compiled program through run_args
        runtime = snn.simulate(x, device="numpy", spikes=names, batch_size=4, threshold_scale=threshold_scale)
        standalone = snn.simulate(x, device="cpp_standalone", spikes=names, batch_size=4, n_workers=2,
                                  build_root=build_root, threshold_scale=threshold_scale)
        np.testing.assert_array_equal(runtime.outputs, standalone.outputs)
        for name in names:
            np.testing.assert_array_equal(runtime.spike_counts[name], standalone.spike_counts[name])
            for a, b in zip(runtime.spikes[name], standalone.spikes[name], strict=True):
                np.testing.assert_array_equal(np.sort(a), np.sort(b))
    assert not standalone.timing["compiled"]   # the second run re-used the binary
