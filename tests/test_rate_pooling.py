"""rate with ``avgpool="population"``: the pool's spike count is ``floor(sum_j n_j / A)`` exactly.

Bound (``brianconv.schemes.rate_pooling``): a pool neuron of area ``A`` receives ``s_t / A <= 1``
thresholds per step and resets by subtraction, so its potential stays in ``[0, 1)`` and after a
window of ``T`` steps its count is ``floor(sum_j n_j / A)`` of its inputs' counts ``n_j``: its
value is their average less an error in ``[0, lambda / T)``. Checked spike for spike on a tiny
network, together with the events it saves against the folded pool and the decoded output.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn

import brianconv
from brianconv.errors import InvalidValueError

T = 40
DEVICE = "numpy"   # tiny nets: no code to compile, cheap on a fresh CI machine
AREA = 4


def _counts(result, population, n_images, size):
    image, neuron, _ = result.spikes[population]
    counts = np.zeros((n_images, size), dtype=np.int64)
    np.add.at(counts, (image, neuron), 1)
    return counts


@pytest.fixture(scope="module")
def pooled_net():
    """Conv(1->2, 3x3) -> ReLU -> AvgPool(2) -> Linear(8 -> 3) on 6x6 inputs, fixed seed; both conversions."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        model[0].bias.add_(0.2)
    x = torch.rand(6, 1, 6, 6)
    pooled = brianconv.convert(model, "rate", calibration=x, duration=T, percentile=100, avgpool="population")
    folded = brianconv.convert(model, "rate", calibration=x, duration=T, percentile=100, avgpool="fold")
    conv, pool = (p.name for p in pooled.description.populations[1:3])
    return dict(model=model, x=x, pooled=pooled, folded=folded, conv=conv, pool=pool,
                result=pooled.simulate(x, device=DEVICE, spikes=[conv, pool]),
                folded_result=folded.simulate(x, device=DEVICE))


def _pool_windows():
    """Flat conv indices (2 channels x 4 x 4) of each of the 2 x 2 x 2 pool neurons' windows."""
    index = np.arange(32).reshape(2, 4, 4)
    return [index[c, 2 * i:2 * i + 2, 2 * j:2 * j + 2].ravel() for c in range(2) for i in range(2) for j in range(2)]


def test_pool_count_is_the_floor_of_the_mean_input_count(pooled_net):
    n = len(pooled_net["x"])
    inputs = _counts(pooled_net["result"], pooled_net["conv"], n, 32)
    pooled = _counts(pooled_net["result"], pooled_net["pool"], n, 8)
    expected = np.stack([inputs[:, window].sum(1) // AREA for window in _pool_windows()], axis=1)
    assert inputs.sum() > 0 and np.any(inputs % AREA != 0), "the test must exercise the remainder"
    np.testing.assert_array_equal(pooled, expected)


def test_pool_values_are_the_average_within_one_step_of_the_code(pooled_net):
    snn, result = pooled_net["pooled"], pooled_net["result"]
    conv_values = snn.scheme.population_values(snn.description, result, pooled_net["conv"])
    pool_values = snn.scheme.population_values(snn.description, result, pooled_net["pool"])
    average = np.stack([conv_values[:, window].mean(1) for window in _pool_windows()], axis=1)
    step = snn.calibration.scales[snn.graph.layers[1].name] / T
    error = average - pool_values
    assert np.all(error >= -1e-12) and np.all(error < step + 1e-12)


def test_pool_population_spends_fewer_events_than_the_folded_pool(pooled_net):
    pooled, folded = pooled_net["result"], pooled_net["folded_result"]
    conv = pooled_net["conv"]
    # the conv layer spikes the same either way (same inputs and window); its fan-out is 1 instead of 3
    np.testing.assert_array_equal(pooled.spike_counts[conv], folded.spike_counts[conv])
    np.testing.assert_array_equal(pooled.synaptic_ops_per_population[conv], pooled.spike_counts[conv])
    # folded: every conv spike reaches the 3 outputs; pooled: 1 event into the pool, and at most
    # (its window's spikes) / 4 pool spikes of 3 events each, so at most (1 + 3 / 4) / 3 of the events
    fan_out = 3
    pooled_events = pooled.synaptic_ops_per_population[pooled_net["pool"]] + pooled.synaptic_ops_per_population[conv]
    np.testing.assert_array_equal(folded.synaptic_ops_per_population[conv], fan_out * folded.spike_counts[conv])
    assert np.all(pooled_events <= (1 + fan_out / AREA) / fan_out * folded.synaptic_ops_per_population[conv])


def test_decoded_outputs_stay_within_the_extra_quantisation(pooled_net):
    """Output error of the pooled net minus that of the folded one is at most |W_out| * lambda / T per logit."""
    pooled, folded = pooled_net["result"], pooled_net["folded_result"]
    weight = np.abs(pooled_net["model"][4].weight.detach().numpy().astype(np.float64))
    step = pooled_net["pooled"].calibration.scales[pooled_net["pooled"].graph.layers[1].name] / T
    assert np.all(np.abs(pooled.outputs - folded.outputs) < weight.sum(1)[None, :] * step + 1e-9)


def test_avgpool_option_is_checked():
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    with pytest.raises(InvalidValueError, match="avgpool"):
        brianconv.convert(model, "rate", calibration=torch.rand(4, 4), avgpool="sum")


def test_only_pools_of_spiking_layers_get_neurons():
    """A pool of the (analog) input has no spikes to average: it stays folded into its reader."""
    model = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(2, 3)).eval()
    snn = brianconv.convert(model, "rate", calibration=torch.rand(4, 1, 8, 8), avgpool="population")
    pools = [p for p in snn.description.populations if snn.graph[p.layer].op == "avgpool"]
    assert [snn.graph[p.layer].inputs[0] for p in pools] == [snn.graph.layers[2].name]
    assert snn.description.state.pool_sources == {pools[0].layer: snn.graph.layers[2].name}
