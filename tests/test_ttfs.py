"""The ttfs scheme: single neuron, layer exactness, max-pool, bias, devices, pipelining.

Error bounds are derived from the code, not picked to pass: a value is sent as
``q = round(x / lambda * T)`` steps, so one layer's spiking value differs from ``ReLU(z)``
(clipped at its scale ``lambda``) by at most half a step, ``lambda / (2 T)``.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from brian2 import mV
from conftest import needs_compiler

import brianconv
from brianconv.errors import InvalidValueError

T = 16
FLOAT_SLACK = 1e-9  # rounding of the membrane sum (a tie can land on either side)


def _quantise(values, scale, steps=T):
    return np.floor(np.clip(values / scale, 0, 1) * steps + 0.5) * scale / steps


def _decoded(result, population, scale, n_images, size, steps=T):
    """Values carried by a hidden population's spikes: spike at step m of its output window = (T - m) / T."""
    image, neuron, local = result.spikes[population]
    values = np.zeros((n_images, size))
    values[image, neuron] = (steps - (local - steps)) / steps * scale
    return values


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)).eval()
    x = torch.rand(30, 12)
    return model, x


def test_single_neuron_follows_the_two_stage_trajectory():
    """One input, one neuron: the silent stage ramps with slope w * v_th_in / t_max, then the charge."""
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1)).eval()
    with torch.no_grad():
        model[0].weight.fill_(0.8)
        model[0].bias.fill_(0.1)
        model[2].weight.fill_(1.0)
        model[2].bias.fill_(0.0)
    x = torch.tensor([[0.75]])
    snn = brianconv.convert(model, "ttfs", calibration=torch.tensor([[1.0]]), t_max=T, percentile=100)
    hidden = snn.description.populations[1].name
    result = snn.simulate(x, device="numpy", spikes=["input", hidden], states={hidden: (["v"], [0])})
    v = result.states[hidden]["v"][0, :, 0] / float(mV)
    q_in = int(np.floor(0.75 * T + 0.5))                    # input sends q = 12 of 16 steps
    _, _, in_step = result.spikes["input"]
    assert list(in_step) == [T - q_in]
    # silent stage: bias ramp from step 1, input ramp from the step after the input spike
    w, b = snn.graph.layers[1].weight[0, 0], snn.graph.layers[1].bias[0]  # 0.8 and 0.1 as float32
    steps = np.arange(1, T + 1)
    expected = b * steps / T + w * 1.0 * np.clip(steps - (T - q_in), 0, None) / T
    np.testing.assert_allclose(v[1:T + 1], expected, rtol=0, atol=1e-12)
    u = expected[-1]                                       # = 0.8 * 12/16 + 0.1 = 0.7 (ANN units)
    scale = snn.calibration.scales[snn.graph.layers[1].name]  # 0.9: the max over the calibration input
    m = int(np.ceil(T * (1 - u / scale) - 0.5))
    _, _, spike_step = result.spikes[hidden]
    assert list(spike_step) == [T + m]
    # after the spike the neuron is reset and stays silent for the rest of the window
    assert np.all(v[T + m:2 * T] == 0)


def test_dense_layer_spike_times_encode_relu_within_half_a_step(dense):
    model, x = dense
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=T, percentile=100)
    hidden = snn.description.populations[1].name
    result = snn.simulate(x, device="numpy", spikes=[hidden])
    layer = snn.graph.layers[1]
    scale, in_scale = snn.calibration.scales[layer.name], snn.calibration.scales[snn.graph.input.name]
    x_q = _quantise(x.numpy().astype(np.float64), in_scale)
    z = x_q @ layer.weight.T + layer.bias
    decoded = _decoded(result, hidden, scale, len(x), layer.size)
    # exact: the layer's own rounding only (against its quantised input)
    assert np.max(np.abs(decoded - np.clip(np.maximum(z, 0), 0, scale))) <= scale / (2 * T) + FLOAT_SLACK
    # the neuron's rounding is to the nearest step, half up (written out here, not the library's helper):
    # every value equals it except where the membrane sum lies within float rounding of a half step
    steps = np.clip(np.maximum(z, 0) / scale, 0, 1) * T
    nearest = np.floor(steps + 0.5) * scale / T
    at_a_tie = np.abs(steps - np.floor(steps) - 0.5) < 1e-9
    assert not np.any((np.abs(decoded - nearest) > FLOAT_SLACK) & ~at_a_tie)
    # against the exact ANN value: add the input's rounding carried through |W|
    z_exact = x.numpy() @ layer.weight.T + layer.bias
    bound = scale / (2 * T) + np.abs(layer.weight).sum(axis=1) * in_scale / (2 * T)
    assert np.all(np.abs(decoded - np.clip(np.maximum(z_exact, 0), 0, scale)) <= bound + FLOAT_SLACK)
    # ReLU and sparsity: no spike where z <= 0 (beyond the half step)
    assert np.all(decoded[z <= -scale / (2 * T)] == 0)
    # the output layer reads its membrane: W2 * decoded + b2, exactly
    out_layer = snn.graph.layers[2]
    np.testing.assert_allclose(result.outputs, decoded @ out_layer.weight.T + out_layer.bias, atol=1e-9)


def test_conv_and_maxpool_layers(build_root):
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=1, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(3 * 3 * 3, 5)).eval()
    x = torch.rand(12, 2, 6, 6)
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=T, percentile=100)
    conv, pool = (p.name for p in snn.description.populations[1:3])
    result = snn.simulate(x, device="numpy", spikes=[conv, pool])
    layer = snn.graph.layers[1]
    scale = snn.calibration.scales[layer.name]
    x_q = _quantise(x.numpy().astype(np.float64), snn.calibration.scales[snn.graph.input.name])
    with torch.no_grad():
        z = layer.pre_activation(torch.as_tensor(x_q)).numpy().reshape(len(x), -1)
    conv_values = _decoded(result, conv, scale, len(x), layer.size)
    assert np.max(np.abs(conv_values - np.clip(np.maximum(z, 0), 0, scale))) <= scale / (2 * T) + FLOAT_SLACK
    # max-pool: one step after the earliest spike of each window, i.e. exactly the max of the code
    image, neuron, local = result.spikes[pool]
    pooled = np.zeros((len(x), 27))
    pooled[image, neuron] = (T - (local - 1)) / T * scale
    expected = torch.nn.functional.max_pool2d(torch.as_tensor(conv_values.reshape(len(x), 3, 6, 6)), 2)
    np.testing.assert_allclose(pooled, expected.reshape(len(x), -1).numpy(), atol=1e-12)
    assert np.all(np.bincount(image * 27 + neuron) <= 1), "a pool neuron fired twice for one image"


def test_every_neuron_fires_at_most_once_and_pipelining_changes_nothing(dense):
    model, x = dense
    kwargs = dict(calibration=x, t_max=T)
    piped = brianconv.convert(model, "ttfs", pipeline=True, **kwargs)
    serial = brianconv.convert(model, "ttfs", pipeline=False, **kwargs)
    assert piped.description.period_steps == 2 * T < serial.description.period_steps
    names = [p.name for p in piped.description.populations if p.threshold]
    a = piped.simulate(x, device="numpy", spikes=names)
    b = serial.simulate(x, device="numpy", spikes=names)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    for name in names:
        np.testing.assert_array_equal(a.spike_counts[name], b.spike_counts[name])
        image, neuron, _ = a.spikes[name]
        assert np.bincount(image * 1000 + neuron).max() <= 1
        assert np.all(a.spike_counts[name] <= a.neurons[name])
    # the counts of the helper counter equal the monitored spikes, and ops equal spikes x fan-out
    fan_out = piped.description.fan_out()
    for name in names:
        image, neuron, _ = a.spikes[name]
        np.testing.assert_array_equal(np.bincount(image, minlength=len(x)), a.spike_counts[name])
        ops = np.bincount(image, weights=fan_out[name][neuron], minlength=len(x))
        np.testing.assert_array_equal(ops, a.synaptic_ops_per_population[name])


def test_bias_alone_drives_the_neuron():
    """A zero input still produces the ReLU of the bias: the bias is a current, not an input spike."""
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU(), nn.Linear(2, 2)).eval()
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.copy_(torch.tensor([0.5, -0.5]))
    calibration = torch.rand(5, 3)
    snn = brianconv.convert(model, "ttfs", calibration=calibration, t_max=T, percentile=100)
    hidden = snn.description.populations[1].name
    result = snn.simulate(torch.zeros(2, 3), device="numpy", spikes=[hidden])
    decoded = _decoded(result, hidden, 0.5, 2, 2)
    np.testing.assert_allclose(decoded, [[0.5, 0.0], [0.5, 0.0]])


def test_thresholds_and_t_max_change_at_run_time(dense):
    model, x = dense
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=T, percentile=100)
    full = snn.simulate(x, device="numpy")
    coarse = snn.simulate(x, device="numpy", t_max=4)
    assert coarse.parameters["t_max"] == 4
    error_full = np.sqrt(np.mean((full.outputs - full.ann_outputs) ** 2))
    error_coarse = np.sqrt(np.mean((coarse.outputs - coarse.ann_outputs) ** 2))
    assert error_coarse > error_full
    hidden_layer = snn.graph.layers[1].name
    low = snn.simulate(x, device="numpy", scales={hidden_layer: snn.calibration.scales[hidden_layer] / 4})
    assert low.spike_counts[snn.description.populations[1].name].sum() >= full.spike_counts[
        snn.description.populations[1].name].sum()
    with pytest.raises(InvalidValueError, match="t_max"):
        snn.simulate(x, device="numpy", t_max=T + 1)
    with pytest.raises(InvalidValueError, match="Unknown layer"):
        snn.simulate(x, device="numpy", scales={"nope": 1.0})


def test_small_cnn_on_bundled_mnist_matches_the_ann():
    from brianconv import datasets, models
    x, y = datasets.load_sample(limit=40)
    calibration, _ = datasets.load_sample("train")
    snn = brianconv.convert(models.load("small_cnn"), "ttfs", calibration=calibration, t_max=32)
    result = snn.simulate(x, labels=y, device="numpy")
    # measured (this test, 2026-12-02): 40 of 40 images agree; margin: one image may flip
    assert result.agreement >= 39 / 40
    assert result.spikes_per_neuron < 1.0
    assert np.all(result.synaptic_ops > 0)


class _SkipNet(nn.Module):
    """Max and average pooling, a residual sum and a concatenation whose branches differ in depth
    (skip projections delayed by ``T`` per layer skipped): 1x12x12 -> 3."""

    def __init__(self):
        super().__init__()
        self.c0, self.c1 = nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.c2, self.l1, self.l2 = nn.Conv2d(8, 6, 2), nn.Linear(6, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.c0(x)), 2)                     # 4x3x3
        r = F.relu(self.c1(h) + h)                                    # residual sum, skip one layer deep
        z = F.avg_pool2d(F.relu(self.c2(torch.cat([r, h], 1))), 2)  # concatenation of depths 3 and 2
        return self.l2(F.relu(self.l1(z.flatten(1))))


@needs_compiler
@pytest.mark.standalone
def test_runtime_and_standalone_give_identical_spikes(build_root):
    """Also the builder's delayed skip projections (test_residual checks their values on numpy)."""
    torch.manual_seed(3)
    model = _SkipNet().eval()
    x = torch.rand(10, 1, 12, 12)
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=T)
    assert {q.delay_steps for q in snn.description.projections if np.isscalar(q.delay_steps)} >= {T}  # skips
    names = [p.name for p in snn.description.populations if p.threshold]
    runtime = snn.simulate(x, device="numpy", spikes=names, batch_size=4)
    standalone = snn.simulate(x, device="cpp_standalone", spikes=names, batch_size=4, build_root=build_root)
    assert standalone.timing["compiled"]
    np.testing.assert_array_equal(runtime.outputs, standalone.outputs)
    for name in names:
        for a, b in zip(runtime.spikes[name], standalone.spikes[name]):
            np.testing.assert_array_equal(np.sort(a), np.sort(b))
        np.testing.assert_array_equal(runtime.synaptic_ops_per_population[name],
                                      standalone.synaptic_ops_per_population[name])
    # the same network again: no compilation, the cached program is reused; parallel shards agree
    again = brianconv.convert(model, "ttfs", calibration=x, t_max=T)
    program = again.program("cpp_standalone", 4, build_root=build_root)
    binary = program.directory / "main"
    before = binary.stat().st_mtime_ns
    sharded = again.simulate(x, device="cpp_standalone", spikes=names, batch_size=4, n_workers=3,
                             build_root=build_root)
    assert not sharded.timing["compiled"] and binary.stat().st_mtime_ns == before
    np.testing.assert_array_equal(sharded.outputs, standalone.outputs)
    for name in names:
        np.testing.assert_array_equal(sharded.spike_counts[name], standalone.spike_counts[name])
    # integration="event" compiled: the clock program's spikes, also with a run-time value (no recompiling;
    # the skips fix t_max: a run-time t_max on standalone is in test_builder's sweep)
    event = brianconv.convert(model, "ttfs", calibration=x, t_max=T, integration="event")
    for parameters in ({}, {"threshold_scale": 0.7}):
        a = again.simulate(x, device="cpp_standalone", spikes=names, batch_size=4, build_root=build_root, **parameters)
        b = event.simulate(x, device="cpp_standalone", spikes=names, batch_size=4, build_root=build_root, **parameters)
        assert _spike_sets(a, names) == _spike_sets(b, names)
        np.testing.assert_allclose(b.outputs, a.outputs, rtol=0, atol=1e-12)
        for name in names:
            np.testing.assert_array_equal(a.synaptic_ops_per_population[name], b.synaptic_ops_per_population[name])
    # those spikes came from the schedule of every hidden two-stage population (not a full scan)
    hidden = [p.name for p in event.description.populations if p.kind.value == "neuron"]
    program = event.program("cpp_standalone", 4, build_root=build_root)
    assert hidden and sorted(program.manifest["scheduled_thresholds"]) == sorted(hidden)


def _spike_sets(result, names):
    return {name: sorted(zip(*(a.tolist() for a in result.spikes[name]))) for name in names}


def test_event_integration_gives_the_clock_neurons_spikes():
    """integration="event" integrates nothing per step and still sends every spike at the same step
    (on C++ standalone: test_runtime_and_standalone_give_identical_spikes)."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(27, 6), nn.ReLU(), nn.Linear(6, 5)).eval()
    x = torch.rand(12, 2, 6, 6)
    for pipeline in (True, False):
        clock, event = (brianconv.convert(model, "ttfs", calibration=x, t_max=T, percentile=99, pipeline=pipeline,
                                          integration=integration) for integration in ("clock", "event"))
        assert all("/dt" not in p.equations for p in event.description.populations)
        names = [p.name for p in clock.description.populations if p.threshold]
        for parameters in ({}, {"t_max": 11, "threshold_scale": 0.7}):  # run-time values reach both
            a = clock.simulate(x, device="numpy", spikes=names, batch_size=8, **parameters)
            b = event.simulate(x, device="numpy", spikes=names, batch_size=8, **parameters)
            assert _spike_sets(a, names) == _spike_sets(b, names)
            np.testing.assert_allclose(b.outputs, a.outputs, rtol=0, atol=1e-12)
            for name in names:
                np.testing.assert_array_equal(a.synaptic_ops_per_population[name], b.synaptic_ops_per_population[name])
    with pytest.raises(InvalidValueError, match="integration"):
        brianconv.convert(model, "ttfs", calibration=x, integration="exact")


def test_threshold_search_minimises_each_layers_quantisation_error():
    """threshold="search" picks, layer by layer, the candidate scale with the smallest RMSE."""
    from brianconv.calibration import activation_scale

    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.rand(200, 12) ** 3  # skewed activations: the maximum is a poor scale
    candidates = (90.0, 99.0, 100.0)
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=8, threshold="search", search_percentiles=candidates)
    _, exact = snn.graph.forward(x, record=True)
    upstream = _quantise(exact[snn.graph.input.name], snn.calibration.scales[snn.graph.input.name], 8)
    for layer in snn.graph.layers[1:-1]:
        with torch.no_grad():
            value = layer.forward(torch.as_tensor(upstream)).numpy()
        errors = {p: np.sqrt(np.mean((_quantise(value, activation_scale(exact[layer.name], p), 8)
                                      - exact[layer.name]) ** 2)) for p in candidates}
        chosen = snn.calibration.scales[layer.name]
        best = min(errors, key=errors.get)
        assert chosen == pytest.approx(activation_scale(exact[layer.name], best))
        upstream = _quantise(value, chosen, 8)
    # and the search is at least as good as the maximum on the network output
    by_max = brianconv.convert(model, "ttfs", calibration=x, t_max=8, threshold="max")
    error_search = np.sqrt(np.mean((snn.simulate(x, device="numpy").outputs - exact[snn.graph.output.name]) ** 2))
    error_max = np.sqrt(np.mean((by_max.simulate(x, device="numpy").outputs - exact[snn.graph.output.name]) ** 2))
    assert error_search <= error_max


def test_overriding_a_conv_scale_moves_its_max_pool_too():
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 2)).eval()
    snn = brianconv.convert(model, "ttfs", calibration=torch.rand(10, 1, 6, 6), t_max=8)
    conv, pool = (p.name for p in snn.description.populations[1:3])
    setup = snn.scheme.setup(snn.description, scales={"0": 0.25})
    assert setup.values[(conv, "v_th")] == setup.values[(pool, "v_th")] == 0.25 * snn.description.state.options.v_unit


def test_warnings_for_coarse_codes_and_silent_layers(dense):
    from brianconv.errors import AccuracyWarning

    model, x = dense
    with pytest.warns(AccuracyWarning, match="t_max=1 is coarse"):
        brianconv.convert(model, "ttfs", calibration=x, t_max=1)
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=T)
    hidden_layer = snn.graph.layers[1].name
    with pytest.warns(AccuracyWarning, match="emitted no spike for 30 images"):
        snn.simulate(x, device="numpy", scales={hidden_layer: 1e6})  # a huge threshold silences the layer


def test_warning_names_neurons_the_ann_needs_that_never_spiked(dense):
    """A threshold far above the layer's activations silences it: every neuron whose activation
    reaches a tenth of the scale is reported, with the count; the calibrated run is quiet."""
    import warnings

    from brianconv.errors import AccuracyWarning

    model, x = dense
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=T, percentile=100)
    hidden = snn.description.populations[1].name
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        normal = snn.simulate(x, device="numpy", spikes=[hidden])
    layer = snn.graph.layers[1].name
    raised = snn.simulate(x, device="numpy", spikes=[hidden], threshold_scale=1.0)  # same thresholds: quiet
    assert raised.spike_counts[hidden].sum() == normal.spike_counts[hidden].sum()
    peak = snn.graph.forward(x, record=True)[1][layer].max(axis=0)
    expected = int(np.sum(peak >= 0.1 * snn.calibration.scales[layer]))
    assert expected > 0
    with pytest.warns(AccuracyWarning, match=rf"^{expected} of 10 neurons of population {hidden!r} never spiked in 30"):
        snn.simulate(x, device="numpy", spikes=[hidden], scales={layer: 40 * snn.calibration.scales[layer]})


def test_clipping_warning_gives_the_fraction_of_calibration_activations_above_the_threshold(dense):
    """At percentile 90 about a tenth of the positive activations exceed the scale: the warning gives
    that fraction over all of the layer's calibration values (zeros included), computed here in torch;
    at percentile 100 nothing is clipped and nothing is said."""
    import warnings

    from brianconv.errors import AccuracyWarning

    model, x = dense
    with torch.no_grad():
        hidden = torch.relu(model[0](x)).double().numpy()
    positive = hidden[hidden > 0]
    scale = np.percentile(positive, 90)
    fraction = np.mean(hidden > scale)
    assert fraction > 0.01
    with pytest.warns(AccuracyWarning, match=rf"ttfs: {100 * fraction:.1f} % of layer '0'.s calibration activations "
                                             "exceed its threshold and will be clipped"):
        brianconv.convert(model, "ttfs", calibration=x, t_max=T, percentile=90)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        brianconv.convert(model, "ttfs", calibration=x, t_max=T, percentile=100)
