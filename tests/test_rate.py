"""The rate scheme: IF exactness, reset modes, Poisson input, max-pool gate, normalisation, devices.

Bounds are derived from the code, not picked to pass. A layer with normalised input ``a`` per
step (constant analog current) and reset by subtraction has ``v(T) = T a - n v_th`` with
``0 <= v < v_th`` while ``0 <= a <= 1``, so its spike count is ``n = floor(T a)``: the rate ``n / T``
is ``a`` minus a sampling error in ``[0, 1 / T)`` (Rueckauer et al., Eq. 6). Reset to zero loses
the charge above threshold: one spike per ``ceil(1 / a)`` steps, ``n = floor(T / ceil(1 / a))``.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
from brian2 import ms, mV
from conftest import needs_compiler

import brianconv
from brianconv.calibration import normalised_parameters
from brianconv.errors import AccuracyWarning, ConversionError, InvalidValueError
from brianconv.schemes.rate import uniform_hash

T = 64
DEVICE = "numpy"   # no code to compile: Cython caches per interpreter, so a fresh CI venv would compile every code object
FLOAT_SLACK = 1e-9   # rounding of the membrane sums (a count can differ only at an exact tie)


def _counts(result, population, n_images, size):
    """Spike count of every neuron for every image, shape (n_images, size)."""
    image, neuron, _ = result.spikes[population]
    counts = np.zeros((n_images, size), dtype=np.int64)
    np.add.at(counts, (image, neuron), 1)
    return counts


def _first_layer_input(snn, x):
    """The normalised drive of the first layer per step: W~ x / lambda_0 + b~ (ANN units of the layer)."""
    layer = snn.graph.layers[1]
    weight, bias = normalised_parameters(snn.graph, snn.calibration)[layer.name]
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1) / snn.calibration.scales[snn.graph.input.name]
    return x @ weight.T + bias


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)).eval()
    with torch.no_grad():
        model[0].bias.add_(0.3)   # most hidden neurons active, some above the scale
    x = torch.rand(8, 12)
    return model, x


@pytest.fixture(scope="module")
def dense_subtract(dense):
    model, x = dense
    snn = brianconv.convert(model, "rate", calibration=x[:4], duration=T, percentile=100)
    hidden = snn.description.populations[1].name
    return snn, snn.simulate(x, device=DEVICE, spikes=[hidden], trace=True, states={hidden: (["v"], [0, 1])})


def test_first_layer_rates_are_relu_within_one_over_T(dense, dense_subtract):
    _, x = dense
    snn, result = dense_subtract
    hidden = snn.description.populations[1].name
    a = _first_layer_input(snn, x.numpy())
    assert np.any(a > 1) and np.any(a < 0), "the test needs saturated and silent neurons"
    rate = _counts(result, hidden, len(x), 10) / T
    target = np.clip(a, 0, 1)                                  # ReLU, saturating at r_max = 1 / dt
    error = target - rate
    assert np.all(error > -FLOAT_SLACK) and np.all(error < 1 / T + FLOAT_SLACK)
    assert np.all(rate[a <= 0] == 0) and np.all(rate[a >= 1] == 1)
    # the exact count: floor(T a)
    inside = (a > 0) & (a < 1) & (np.abs(T * a - np.rint(T * a)) > 1e-6)
    np.testing.assert_array_equal(rate[inside] * T, np.floor(T * a[inside]))


def test_single_neuron_trajectory_and_output_accumulator(dense, dense_subtract):
    """v after k + 1 steps is (k + 1) z - v_th * spikes so far; the output integrates spikes exactly."""
    _, x = dense
    snn, result = dense_subtract
    hidden = snn.description.populations[1].name
    a = _first_layer_input(snn, x.numpy())
    v = result.states[hidden]["v"] / float(mV)                 # (images, T, 2), recorded at the end of steps
    image, neuron, step = result.spikes[hidden]
    for n in range(len(x)):
        for column, index in enumerate([0, 1]):
            if not 0 < a[n, index] < 1:
                continue
            spiked = np.zeros(T)
            spiked[step[(image == n) & (neuron == index)]] = 1
            expected = np.arange(1, T + 1) * a[n, index] - np.cumsum(spiked)
            expected[-1] = 0.0                                  # window reset in the last step
            np.testing.assert_allclose(v[n, :, column], expected, rtol=0, atol=1e-12)
    # output: y(T) = lambda_L * (W~ n / T + b~), exactly what its synapses delivered
    out = snn.graph.layers[2]
    weight, bias = normalised_parameters(snn.graph, snn.calibration)[out.name]
    counts = _counts(result, hidden, len(x), 10)
    expected = snn.calibration.scales[out.name] * (counts / T @ weight.T + bias)
    np.testing.assert_allclose(result.outputs, expected, rtol=1e-12, atol=1e-12)
    # the trace is the running average: step k holds (k + 1) steps of input
    np.testing.assert_array_equal(result.output_trace[:, -1], result.outputs)
    # operations up to step k: the input's one-time events (step 0) plus each hidden spike
    # at or before step k times its fan-out (4 output neurons)
    input_ops = result.synaptic_ops_per_population["input"]
    expected = np.stack([input_ops[n] + 4 * np.array([np.sum((image == n) & (step <= k)) for k in range(T)])
                         for n in range(len(x))])
    np.testing.assert_array_equal(result.synaptic_ops_trace, expected)
    np.testing.assert_array_equal(result.synaptic_ops_trace[:, -1], result.synaptic_ops)


def test_reset_to_zero_loses_the_charge_above_threshold(dense, dense_subtract):
    model, x = dense
    _, sub = dense_subtract
    snn = brianconv.convert(model, "rate", calibration=x[:4], duration=T, percentile=100, reset="zero")
    hidden = snn.description.populations[1].name
    zero = snn.simulate(x, device=DEVICE, spikes=[hidden])
    a = _first_layer_input(snn, x.numpy())
    n_zero = _counts(zero, hidden, len(x), 10)
    n_sub = _counts(sub, hidden, len(x), 10)
    assert np.all(n_zero <= n_sub)
    active = (a > 0) & (a < 1) & (np.abs(1 / np.maximum(a, 1e-9) - np.rint(1 / np.maximum(a, 1e-9))) > 1e-6)
    assert np.sum(n_zero[active] < n_sub[active]) > active.sum() // 2, "reset to zero should lose spikes"
    np.testing.assert_array_equal(n_zero[active], np.floor(T / np.ceil(1 / a[active])))
    np.testing.assert_array_equal(n_zero[a >= 1], T)
    # the reset is also a run-time parameter of a compiled network
    snn_sub, _ = dense_subtract
    switched = snn_sub.simulate(x, device=DEVICE, spikes=[hidden], reset="zero")
    assert switched.parameters["reset"] == "zero"
    np.testing.assert_array_equal(_counts(switched, hidden, len(x), 10), n_zero)
    np.testing.assert_array_equal(switched.outputs, zero.outputs)


def test_poisson_input_converges_to_the_analog_rates(dense):
    """With Poisson input the hidden rate is the analog rate plus a zero-mean error.

    The charge a hidden neuron receives over T steps is sum_j W~_ij n_j + T b~_i with n_j ~
    Binomial(T, x~_j): mean T a_i, variance s_i^2 = T sum_j W~_ij^2 x~_j (1 - x~_j). With reset by
    subtraction the count is the floor of the running maximum of that charge, which for a drift
    well inside (0, 1) (4 sigma from the edges) ends at the final charge. So each rate is within
    4.5 sigma_i = 4.5 s_i / T plus 1 / T of the analog rate, and their mean difference within 4
    standard errors plus 1 / T.
    """
    model, x = dense
    steps = 512
    snn = brianconv.convert(model, "rate", calibration=x[:4], duration=steps, percentile=100, input="poisson")
    hidden = snn.description.populations[1].name
    result = snn.simulate(x, device=DEVICE, spikes=["input", hidden])
    xs = x.numpy().astype(np.float64) / snn.calibration.scales[snn.graph.input.name]
    # the input spike counts are Binomial(T, x~)
    n_in = _counts(result, "input", len(x), 12)
    p = np.clip(xs, 0, 1)
    z = (n_in - steps * p) / np.sqrt(steps * p * (1 - p) + 1e-12)
    assert np.max(np.abs(z)) < 4.5 and abs(z.mean()) < 4 / np.sqrt(z.size)
    # the hidden rates converge to the analog ones
    a = _first_layer_input(snn, x.numpy())
    weight, _ = normalised_parameters(snn.graph, snn.calibration)[snn.graph.layers[1].name]
    sigma = np.sqrt(steps * (p * (1 - p)) @ (weight ** 2).T) / steps
    inside = (a > 4 * sigma + 0.05) & (a < 1 - 4 * sigma - 0.05)
    assert inside.sum() >= 20
    rate = _counts(result, hidden, len(x), 10) / steps
    difference = rate[inside] - np.clip(a[inside], 0, 1)
    assert abs(difference.mean()) <= 4 * np.sqrt(np.sum(sigma[inside] ** 2)) / inside.sum() + 1 / steps
    assert np.all(np.abs(difference) <= 4.5 * sigma[inside] + 1 / steps)
    # reproducible: the same seed gives the same spikes, another seed other spikes
    again = snn.simulate(x, device=DEVICE, spikes=["input"])
    np.testing.assert_array_equal(_counts(again, "input", len(x), 12), n_in)
    other = snn.simulate(x, device=DEVICE, spikes=["input"], seed=7)
    assert other.parameters["seed"] == 7 and not np.array_equal(_counts(other, "input", len(x), 12), n_in)
    # the stream belongs to the image's index in the input, not its place in a batch: other
    # batch sizes give the same spikes, and one image repeated in two batches gets fresh noise
    batched = snn.simulate(x, device=DEVICE, spikes=["input"], batch_size=3)
    np.testing.assert_array_equal(_counts(batched, "input", len(x), 12), n_in)
    repeated = snn.simulate(torch.cat([x[:1], x[:1]]), device=DEVICE, spikes=["input"], batch_size=1)
    first, second = _counts(repeated, "input", 2, 12)
    assert first.sum() > 0 and not np.array_equal(first, second)


def test_uniform_hash_is_uniform_and_decorrelated():
    steps = np.arange(20000)
    u = uniform_hash(3, 1, 5, steps)
    assert np.all((u >= 0) & (u < 1))
    counts = np.histogram(u, bins=10, range=(0, 1))[0]
    chi2 = np.sum((counts - 2000) ** 2 / 2000)
    assert chi2 < 27.9                                         # p = 0.001 at 9 degrees of freedom
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 4 / np.sqrt(len(u))
    neighbour = uniform_hash(3, 1, 6, steps)
    assert abs(np.corrcoef(u, neighbour)[0, 1]) < 4 / np.sqrt(len(u))


@pytest.fixture(scope="module")
def pool_net():
    """1x1 identity convolution (its rates are the pixels), 2x2 max-pooling, a linear readout."""
    model = nn.Sequential(nn.Conv2d(1, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 3)).eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[0].bias.zero_()
    rng = np.random.default_rng(0)
    levels = np.array([1.0, 0.71, 0.43, 0.18])                 # four distinct rates in every pool
    x = np.zeros((6, 1, 4, 4), dtype=np.float32)
    for n in range(len(x)):
        for py in range(2):
            for px in range(2):
                x[n, 0, 2 * py:2 * py + 2, 2 * px:2 * px + 2] = rng.permutation(levels).reshape(2, 2)
    return model, torch.as_tensor(x)


def _pool_windows():
    """Conv neuron indices of each of the four pools (4x4 map, 2x2 windows)."""
    return [[(2 * py + dy) * 4 + 2 * px + dx for dy in range(2) for dx in range(2)]
            for py in range(2) for px in range(2)]


def _estimates(spikes, decay):
    """r(k) = d r(k-1) + S(k) for spike trains (..., T), in the same float operations as the network."""
    r = np.zeros(spikes.shape)
    previous = np.zeros(spikes.shape[:-1])
    for k in range(spikes.shape[-1]):
        previous = decay * previous * (1 - int(k == 0)) + spikes[..., k]
        r[..., k] = previous
    return r


def _trains(result, population, n_images, size, steps=T):
    image, neuron, local = result.spikes[population]
    trains = np.zeros((n_images, size, steps))
    trains[image, neuron, local] = 1
    return trains


@pytest.mark.parametrize("tau, limit", [(None, True), (20 * ms, True), (20 * ms, False)])
def test_maxpool_gate_passes_the_leading_input(pool_net, tau, limit):
    model, x = pool_net
    snn = brianconv.convert(model, "rate", calibration=x, duration=T, percentile=100, maxpool_tau=tau,
                            maxpool_limit=limit)
    conv, pool = (p.name for p in snn.description.populations[1:3])
    result = snn.simulate(x, device=DEVICE, spikes=[conv, pool])
    decay = snn.description.state.decay
    inputs = _trains(result, conv, len(x), 16)
    outputs = _trains(result, pool, len(x), 4)
    levels = np.floor(T * np.array([1.0, 0.71, 0.43, 0.18]) + FLOAT_SLACK)
    np.testing.assert_array_equal(np.sort(np.unique(inputs.sum(-1))), np.sort(levels))
    for p, window in enumerate(_pool_windows()):
        trains = inputs[:, window]                              # (images, 4, T)
        r = _estimates(trains, decay)
        leader_spiked = np.any((trains == 1) & (r >= r.max(axis=1, keepdims=True)), axis=1)
        fired = outputs[:, p] == 1
        # the gate passes only spikes of an input with the highest running estimate
        assert not np.any(fired & ~leader_spiked)
        if not limit:
            np.testing.assert_array_equal(fired, leader_spiked)
        counts, max_count = fired.sum(-1), trains.sum(-1).max(-1)
        if limit:
            # every window holds a rate-1 input: it spikes in every step, so its estimate is the
            # highest for any decay and the gate passes one spike per step, the max of the counts
            np.testing.assert_array_equal(counts, max_count)
        else:
            assert np.all(counts >= max_count)


def test_normalisation_percentile_sets_the_scales(dense):
    model, _ = dense
    calibration = torch.rand(200, 12)
    full = brianconv.convert(model, "rate", calibration=calibration, duration=T, percentile=100)
    with pytest.warns(AccuracyWarning, match="saturate"):
        robust = brianconv.convert(model, "rate", calibration=calibration, duration=T, percentile=90)
    _, activations = full.graph.forward(calibration, record=True)
    for snn, p in ((full, 100), (robust, 90)):
        for layer in snn.graph:
            values = activations[layer.name][activations[layer.name] > 0]
            expected = values.max() if p == 100 else np.percentile(values, p)
            assert snn.calibration.scales[layer.name] == pytest.approx(expected, rel=1e-12)
    hidden = full.graph.layers[1].name
    assert robust.calibration.scales[hidden] < full.calibration.scales[hidden]
    # W~ = W lambda_(l-1) / lambda_l and b~ = b / lambda_l on the synapses and the neurons
    for snn in (full, robust):
        s = snn.calibration.scales
        for k, layer in enumerate(snn.graph.layers[1:]):
            connections = snn.description.projections[k].connections
            np.testing.assert_allclose(connections.dense(), layer.weight * s[layer.inputs[0]] / s[layer.name])
            np.testing.assert_allclose(snn.description.populations[k + 1].values["b"], layer.bias / s[layer.name])
    # 90 % of the calibration activations fit below the scale: about 10 % of them saturate
    a = _first_layer_input(robust, calibration.numpy())
    saturated = np.mean(a[a > 0] > 1)
    assert 0.09 <= saturated <= 0.11


def test_run_time_scales_renormalise_a_compiled_network(dense):
    """scales={layer: lambda'} at run time gives the spikes of a network normalised with lambda'."""
    model, x = dense
    calibration = torch.rand(200, 12)
    with pytest.warns(AccuracyWarning, match="saturate"):
        robust = brianconv.convert(model, "rate", calibration=calibration, duration=T, percentile=90)
    full = brianconv.convert(model, "rate", calibration=calibration, duration=T, percentile=100)
    hidden_layer = full.graph.layers[1].name
    hidden = full.description.populations[1].name
    built = robust.simulate(x, device=DEVICE, spikes=[hidden])
    rescaled = full.simulate(x, device=DEVICE, spikes=[hidden],
                             scales={hidden_layer: robust.calibration.scales[hidden_layer]})
    a = _first_layer_input(robust, x.numpy())
    for result in (built, rescaled):
        rate = _counts(result, hidden, len(x), 10) / T
        error = np.clip(a, 0, 1) - rate
        assert np.all(error > -FLOAT_SLACK) and np.all(error < 1 / T + FLOAT_SLACK)
    # the two differ only by the rounding of W lambda_0 / lambda_1 against a threshold ratio
    assert np.sum(_counts(built, hidden, len(x), 10) != _counts(rescaled, hidden, len(x), 10)) <= 2
    np.testing.assert_allclose(rescaled.outputs, built.outputs, atol=2 * np.abs(
        full.graph.layers[2].weight).sum(axis=1).max() * robust.calibration.scales[hidden_layer] / T)
    with pytest.raises(InvalidValueError, match="scales"):
        full.simulate(x, device=DEVICE, scales={full.graph.layers[2].name: 1.0})
    with pytest.raises(InvalidValueError, match="> 0"):
        full.simulate(x, device=DEVICE, scales={hidden_layer: 0.0})


def test_threshold_and_readout_steps_at_run_time(dense, dense_subtract):
    _, x = dense
    snn, full = dense_subtract
    hidden = snn.description.populations[1].name
    half = snn.simulate(x, device=DEVICE, spikes=[hidden], v_th=2 * mV)
    a = _first_layer_input(snn, x.numpy())
    rate = _counts(half, hidden, len(x), 10) / T
    target = np.clip(a / 2, 0, 1)                               # rates scale as v_unit / v_th
    assert np.all(target - rate > -FLOAT_SLACK) and np.all(target - rate < 1 / T + FLOAT_SLACK)
    assert half.parameters["v_th"] == 2 * mV
    # the decoded outputs keep their ANN units (each spike carries the sender's threshold): a hidden
    # value is 2 lambda n / T, within 2 lambda / T of ReLU (plus what lies above 2 lambda), and the
    # output accumulator adds |W_out| times that
    scale = snn.calibration.scales[snn.graph.layers[1].name]
    hidden_error = 2 * scale / T + scale * np.maximum(a - 2, 0)
    bound = hidden_error @ np.abs(snn.graph.layers[2].weight).T
    assert np.all(np.abs(half.outputs - half.ann_outputs) <= bound + FLOAT_SLACK)
    scaled = snn.simulate(x, device=DEVICE, spikes=[hidden], threshold_scale=2.0)   # the sweep/CLI name
    np.testing.assert_array_equal(_counts(scaled, hidden, len(x), 10), _counts(half, hidden, len(x), 10))
    # population_values decodes rates back into ANN units: spikes / T * lambda * v_th / v_unit
    for result, factor in ((full, 1.0), (half, 2.0), (scaled, 2.0)):
        values = snn.scheme.population_values(snn.description, result, hidden)
        np.testing.assert_allclose(values, _counts(result, hidden, len(x), 10) / T * scale * factor, rtol=1e-12)
    with pytest.raises(InvalidValueError, match="analog"):
        snn.scheme.population_values(snn.description, snn.simulate(x, device=DEVICE, spikes=["input"]), "input")
    early = snn.simulate(x, device=DEVICE, steps=16)
    np.testing.assert_array_equal(early.outputs, full.output_trace[:, 15])
    assert early.parameters["steps"] == 16
    with pytest.raises(InvalidValueError, match="steps"):
        snn.simulate(x, device=DEVICE, steps=T + 1)
    with pytest.raises(InvalidValueError, match="v_th"):
        snn.simulate(x, device=DEVICE, v_th=-1 * mV)
    with pytest.raises(InvalidValueError, match="seed"):
        snn.simulate(x, device=DEVICE, seed=3)
    with pytest.raises(InvalidValueError, match="reset"):
        snn.simulate(x, device=DEVICE, reset="none")
    with pytest.raises(InvalidValueError, match="threshold_scale"):
        snn.simulate(x, device=DEVICE, threshold_scale=0)


def test_options_are_checked(dense):
    model, x = dense
    for bad in (dict(reset="none"), dict(input="spikes"), dict(duration=0), dict(percentile=0),
                dict(maxpool_tau=-1 * ms), dict(maxpool_tau=20), dict(dt=1.0), dict(v_unit=1 * ms), dict(seed=-1),
                dict(seed=1.5), dict(nope=1)):
        with pytest.raises(InvalidValueError):
            brianconv.convert(model, "rate", calibration=x, **bad)
    poisson = brianconv.convert(model, "rate", calibration=x - 0.5, input="poisson")  # rates: the input is shifted
    assert poisson.input_shift.low.min() < 0 and not np.any(poisson.input_shift.low > 0)
    with pytest.warns(AccuracyWarning):                              # a hidden layer saturates a little
        analog = brianconv.convert(model, "rate", calibration=x - 0.5)   # analog input carries negative values
    assert analog.description.scheme == "rate"
    pooled_input = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 2)).eval()
    with pytest.raises(ConversionError, match="max-pooling"):
        brianconv.convert(pooled_input, "rate", calibration=torch.rand(3, 1, 4, 4))


def test_small_cnn_accuracy_over_time_on_bundled_mnist():
    from brianconv import datasets, models
    x, y = datasets.load_sample(limit=100)
    calibration, _ = datasets.load_sample("train")
    snn = brianconv.convert(models.load("small_cnn"), "rate", calibration=calibration)
    result = snn.simulate(x, labels=y, device=DEVICE, trace=True)
    agreement = np.mean(result.output_trace.argmax(-1) == result.ann_predictions[:, None], axis=0)
    assert result.agreement >= 0.97
    assert agreement[-1] == result.agreement
    # accuracy grows with time and has settled at the end
    assert agreement[-1] >= agreement[49] >= agreement[9]
    assert agreement[-50:].min() >= agreement[-1] - 0.02
    assert result.spikes_per_neuron > 1 and np.all(result.synaptic_ops > 0)


@needs_compiler
@pytest.mark.standalone
def test_runtime_and_standalone_give_identical_spikes(pool_net, build_root):
    model, x = pool_net
    x = torch.cat([x, x.flip(-1)])
    snn = brianconv.convert(model, "rate", calibration=x, duration=T, input="poisson", seed=5)
    names = [p.name for p in snn.description.populations if p.threshold]
    runtime = snn.simulate(x, device=DEVICE, spikes=names, batch_size=4, trace=True)
    standalone = snn.simulate(x, device="cpp_standalone", spikes=names, batch_size=4, n_workers=2,
                              build_root=build_root, trace=True)
    np.testing.assert_array_equal(runtime.output_trace, standalone.output_trace)
    np.testing.assert_array_equal(runtime.synaptic_ops_trace, standalone.synaptic_ops_trace)
    for name in names:
        np.testing.assert_array_equal(runtime.spike_counts[name], standalone.spike_counts[name])
        np.testing.assert_array_equal(runtime.synaptic_ops_per_population[name],
                                      standalone.synaptic_ops_per_population[name])
        for a, b in zip(runtime.spikes[name], standalone.spikes[name], strict=True):
            np.testing.assert_array_equal(np.sort(a), np.sort(b))
    # a run-time seed reaches the compiled program without recompiling
    reseeded = snn.simulate(x, device="cpp_standalone", spikes=names, batch_size=4, build_root=build_root, seed=6)
    assert not reseeded.timing["compiled"]
    assert not np.array_equal(reseeded.spike_counts["input"], standalone.spike_counts["input"])
