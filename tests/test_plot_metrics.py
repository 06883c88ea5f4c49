"""Plots (headless, checked for content) and operation counts."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import brianconv  # noqa: E402
from brianconv import metrics, plot  # noqa: E402
from brianconv.errors import InvalidValueError  # noqa: E402


@pytest.fixture(scope="module")
def simulated():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 6), nn.ReLU(),
                          nn.Linear(6, 3)).eval()
    x = torch.rand(16, 1, 6, 6)
    labels = model(x).argmax(1).numpy()
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=8, percentile=100)
    names = [p.name for p in snn.description.populations if p.threshold]
    hidden = snn.description.populations[1].name
    result = snn.simulate(x, labels=labels, device="numpy", spikes=names, states={hidden: (["v"], [0, 5, 7])},
                          trace=True)
    return snn, x, result


def test_membrane_traces_show_the_recorded_potentials(simulated):
    snn, _, result = simulated
    hidden = snn.description.populations[1]
    fig = plot.membrane_traces(result, hidden.name, image=2, threshold=float(hidden.values["v_th"]))
    ax = fig.axes[0]
    traces = [line for line in ax.lines if line.get_label().startswith("neuron")]
    assert [line.get_label() for line in traces] == ["neuron 0", "neuron 5", "neuron 7"]
    np.testing.assert_allclose(traces[1].get_ydata(), result.states[hidden.name]["v"][2, :, 1] * 1e3)
    assert ax.get_xlabel().startswith("time") and "mV" in ax.get_ylabel()
    # the stage boundaries the scheme reports, at T and 2T steps (dt = 0.1 ms, T = 8)
    assert result.stage_marks[hidden.name] == [(8, "silent | spiking"), (16, "end of spiking stage")]
    marks = [line.get_xdata()[0] for line in ax.lines if line.get_linestyle() == ":"]
    np.testing.assert_allclose(marks, [0.8, 1.6])
    assert {text.get_text().strip() for text in ax.texts} == {"silent | spiking", "end of spiking stage"}
    with pytest.raises(InvalidValueError, match="recorded"):
        plot.membrane_traces(result, snn.description.populations[2].name)


def test_tdsnn_traces_mark_the_inhibited_window_and_the_ticking_phase():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    x = torch.rand(3, 5)
    snn = brianconv.convert(model, "tdsnn", calibration=x, L=4.0)
    hidden = snn.description.populations[1]
    result = snn.simulate(x, device="numpy", states={hidden.name: (["v"], [0, 1])})
    t_il, t_out = int(hidden.values["T_il"]), int(hidden.values["T_out"])
    assert result.stage_marks[hidden.name] == [(t_il + 1, "inhibition ends: ticking"), (t_il + 1 + t_out, "end of code")]
    fig = plot.membrane_traces(result, hidden.name, threshold=0.0)
    marks = [line.get_xdata()[0] for line in fig.axes[0].lines if line.get_linestyle() == ":"]
    np.testing.assert_allclose(marks, [(t_il + 1) * result.dt * 1e3, (t_il + 1 + t_out) * result.dt * 1e3])


def test_raster_has_one_band_per_population_with_all_spikes(simulated):
    snn, _, result = simulated
    fig = plot.raster(result, image=3)
    ax = fig.axes[0]
    assert len(ax.get_yticklabels()) == len(result.spikes)
    plotted = sum(len(line.get_xdata()) for line in ax.lines if line.get_linestyle() == "None")
    assert plotted == sum(int(np.sum(result.spikes[n][0] == 3)) for n in result.spikes)


def test_accuracy_over_time_ends_at_the_final_accuracy(simulated):
    _, _, result = simulated
    fig = plot.accuracy_over_time(result)
    snn_line = fig.axes[0].lines[0]
    assert snn_line.get_ydata()[-1] == pytest.approx(100 * result.accuracy)


def test_correlation_panels_decode_the_spikes(simulated):
    snn, x, result = simulated
    fig = plot.activation_correlation(snn, result, x)
    hidden = [p.name for p in snn.description.populations if p.threshold and p.role != "input"]
    assert len(fig.axes) == len(hidden)
    values = snn.scheme.population_values(snn.description, result, hidden[0])
    layer = snn.graph[snn.description.population(hidden[0]).layer]
    scale, x_max, steps = snn.calibration.scales[layer.name], snn.calibration.scales[snn.graph.input.name], 8
    x_q = torch.as_tensor(np.floor(x.numpy() / x_max * steps + 0.5) * x_max / steps, dtype=torch.float64)
    expected = np.clip(layer.forward(x_q).numpy().reshape(len(x), -1), 0, scale)  # on the quantised input
    assert np.max(np.abs(values - expected)) <= scale / (2 * steps) + 1e-9


def test_layer_bars_and_costs(simulated):
    snn, x, result = simulated
    fig = plot.layer_bars(result)
    heights = [bar.get_height() for bar in fig.axes[1].patches]
    np.testing.assert_allclose(heights, [result.synaptic_ops_per_population[n].mean() for n in result.neurons])
    ann = metrics.ann_cost(snn.graph, x=x)
    assert ann.macs == 3 * 4 * 4 * 9 + 12 * 6 + 6 * 3  # valid 3x3 conv on 6x6: 16 outputs x 9 inputs per map
    rows = metrics.snn_cost(snn, result)
    assert sum(r.synaptic_ops for r in rows) == pytest.approx(result.synaptic_ops.mean())
    energy = metrics.efficiency(ann, rows)
    assert energy["factor"] == pytest.approx(ann.macs * metrics.ENERGY_PER_MAC /
                                             (result.synaptic_ops.mean() * metrics.ENERGY_PER_AC))


def test_ann_cost_counts_connections_not_padding():
    conv = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)).eval()
    cost = metrics.ann_cost(conv, (2, 5, 5))
    # interior outputs see 9 inputs, edges 6, corners 4: per channel pair 9*9 + 12*6 + 4*4 = 169 of 225
    assert cost.layers[0].macs == 2 * 4 * 169
    assert cost.layers[1].macs == 100 * 3 and cost.flops == 2 * cost.macs


def test_other_flops_and_active_fractions_are_counted_by_hand():
    """conv 1->2 (3x3 on 6x6): 32 outputs, 9 MACs each, a bias and a ReLU each; 2x2 max-pool: 8 outputs,
    3 comparisons each; linear 8->3: 24 MACs and 3 biases. Active fractions from the torch forward pass."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)).eval()
    x = torch.rand(20, 1, 6, 6) - 0.3
    cost = metrics.ann_cost(model, x=x)
    conv, pool, linear = cost.layers[0], cost.layers[1], cost.layers[-1]
    assert (conv.macs, conv.other_flops) == (32 * 9, 32 + 32)
    assert (pool.macs, pool.other_flops) == (0, 8 * 3)
    assert (linear.macs, linear.other_flops) == (24, 3)
    assert cost.other_flops == 64 + 24 + 3 and cost.flops == 2 * (32 * 9 + 24)
    with torch.no_grad():
        hidden = torch.relu(model[0](x))
        pooled = model[2](hidden)
    assert conv.active_fraction == pytest.approx(float((hidden > 0).double().mean()), abs=1e-12)
    assert pool.active_fraction == pytest.approx(float((pooled > 0).double().mean()), abs=1e-12)
    assert 0 < conv.active_fraction < 1


def test_sweep_table_and_plots(simulated):
    snn, x, result = simulated
    table = brianconv.sweep(snn, x, {"t_max": [2, 8], "threshold_scale": [0.5, 1.0]}, labels=result.labels,
                            device="numpy", progress=False)
    assert len(table) == 4 and table.columns[:2] == ["t_max", "threshold_scale"]
    assert table.column("rmse")[table.column("t_max") == 8].max() < table.column("rmse")[table.column("t_max") == 2].max()
    fig = plot.sweep_curves(table, "t_max", "rmse", hue="threshold_scale")
    assert len(fig.axes[0].lines) == 2
    fig = plot.sweep_heatmap(table, "t_max", "threshold_scale", "accuracy")
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (2, 2)
