"""Normalised inputs and affine layers: the input shift and affine maps folded exactly into weighted layers.

A model trained on mean/std-normalised inputs (negative background) converts with every scheme:
the network receives ``x - low >= 0`` and the first weighted layers carry the shift in their
biases, one per neuron for a padded conv (:mod:`brianconv.folding`). Folding is checked in
float64 against the original graph (``EXACT``: only float rounding of sums of order 10). The
spiking networks are checked against each scheme's own reference where one exists (tdsnn's
``emulate``, amos' ``reference``: float rounding, ``FLOAT_SLACK`` as in their tests), ttfs' first
layer within half a step of its quantised input (as in tests/test_ttfs.py), and every scheme's
prediction against the ANN's.
"""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import brianconv
from brianconv import folding
from brianconv.errors import (
    AccuracyWarning,
    ConversionError,
    InvalidValueError,
    ShapeError,
)
from brianconv.folding import (
    InputShift,
    fold_affine_layers,
    fold_input_shift,
    input_shift_for,
)
from brianconv.graph import Layer, LayerGraph, trace
from brianconv.schemes.tdsnn import emulate

EXACT = 1e-12
FLOAT_SLACK = 1e-9
MEAN, STD = np.array([0.2, 0.5]), np.array([0.3, 0.25])  # two channels normalised differently


def _normalised_images(n, seed):
    """``n`` two-channel 6 x 6 images: pixels in [0, 1] with a zero background, normalised per channel."""
    rng = np.random.default_rng(seed)
    pixels = rng.random((n, 2, 6, 6)) * (rng.random((n, 2, 6, 6)) > 0.3)
    pixels[:, :, 0, 0], pixels[:, :, 0, 1] = 0.0, 1.0  # every image spans [0, 1]: no clipping between data sets
    return torch.as_tensor((pixels - MEAN[:, None, None]) / STD[:, None, None], dtype=torch.float32)


@pytest.fixture(scope="module")
def padded_cnn():
    """A small CNN with a zero-padded first conv (random fixed weights), normalised data and its bounds."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(),
                          nn.Linear(36, 4)).eval()
    return model, _normalised_images(60, seed=1), _normalised_images(12, seed=2)


# ---------------------------------------------------------------------------------------------
# (a) the input shift folds exactly
# ---------------------------------------------------------------------------------------------

def test_shifted_graph_on_x_minus_low_equals_the_graph_on_x(padded_cnn):
    model, calibration, x = padded_cnn
    graph = trace(model, (2, 6, 6))
    shift = input_shift_for(graph.check_input(calibration))
    np.testing.assert_allclose(shift.low, -MEAN / STD, rtol=0, atol=1e-6)  # the background, per channel
    shifted = fold_input_shift(graph, shift.low)
    x = graph.check_input(x)
    np.testing.assert_allclose(shifted.forward(shift.apply(x)), graph.forward(x), rtol=0, atol=EXACT)
    conv = shifted.layers[1]
    assert conv.bias.shape == conv.out_shape == (4, 6, 6)  # per neuron: the padded border sees less shift
    assert not np.allclose(conv.bias[:, 0, 0], conv.bias[:, 2, 2])
    np.testing.assert_array_equal(conv.weight, graph.layers[1].weight)  # a shift leaves the weights
    assert graph.layers[1].bias.shape == (4,)  # the original graph is not modified


@pytest.mark.parametrize("conv", [{"padding": 2, "dilation": 2}, {"padding": 1, "stride": 2, "groups": 2},
                                  {"padding": 0}])
def test_shift_folds_into_strided_dilated_grouped_convs_and_through_pooling(conv):
    torch.manual_seed(4)
    model = nn.Sequential(nn.MaxPool2d(2, stride=1, padding=1), nn.AvgPool2d(1), nn.Conv2d(2, 4, 3, **conv),
                          nn.ReLU(), nn.Flatten(), nn.LazyLinear(3)).eval()
    x = _normalised_images(5, seed=3)
    model(x)  # materialise the lazy layer
    graph = trace(model, (2, 6, 6))
    low = np.array([-0.7, -2.0])
    shifted = fold_input_shift(graph, low)
    np.testing.assert_allclose(shifted.forward(x.double().numpy() - low[:, None, None]), graph.forward(x),
                               rtol=0, atol=EXACT)


def test_shift_folds_into_a_linear_first_layer_of_flattened_images():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(72, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    graph = trace(model, (2, 6, 6))
    x = _normalised_images(7, seed=4).double().numpy()
    low = np.array([-0.5, -1.5])
    shifted = fold_input_shift(graph, low)
    assert shifted.layers[1].bias.shape == (5,)
    np.testing.assert_allclose(shifted.forward(x - low[:, None, None]), graph.forward(x), rtol=0, atol=EXACT)
    assert fold_input_shift(graph, np.zeros(2)) is graph  # non-negative data: nothing changes


def test_input_read_by_padded_average_pooling_or_a_sum_is_rejected():
    model = nn.Sequential(nn.AvgPool2d(3, stride=1, padding=1), nn.Flatten(), nn.Linear(72, 3)).eval()
    with pytest.raises(ConversionError, match=r"input is read by layer '0' \(avgpool\).*Linear/Conv2d"):
        fold_input_shift(trace(model, (2, 6, 6)), np.array([-1.0, -1.0]))
    summed = LayerGraph([Layer("x", "input", [], (4,), (4,)),
                         Layer("fc", "linear", ["x"], (4,), (4,), np.eye(4), np.zeros(4)),
                         Layer("sum", "add", ["x", "fc"], (4,), (4,))])
    with pytest.raises(ConversionError, match=r"read by layer 'sum' \(add, the output\)"):
        fold_input_shift(summed, -np.ones(4))


# ---------------------------------------------------------------------------------------------
# (b) every scheme converts normalised data
# ---------------------------------------------------------------------------------------------

def _agreement(result):
    return float(np.mean(result.predictions == result.ann_predictions))


def test_non_negative_calibration_data_changes_nothing(padded_cnn):
    model, _, _ = padded_cnn
    x = torch.rand(20, 2, 6, 6)
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=16)
    assert snn.input_shift.is_identity and snn.described_graph is snn.graph
    assert brianconv.convert(model, "rate", calibration=x).input_shift is None  # analog input: no shift at all


def test_ttfs_first_layer_carries_the_per_neuron_bias(padded_cnn):
    """The padded conv's spikes encode ReLU of the shifted graph within half a step (tests/test_ttfs.py)."""
    model, calibration, x = padded_cnn
    t_max = 32
    snn = brianconv.convert(model, "ttfs", calibration=calibration, t_max=t_max, percentile=100)
    conv = snn.description.populations[1]
    result = snn.simulate(x, device="numpy", spikes=[conv.name])
    layer = snn.described_graph.layers[1]
    scale, in_scale = snn.calibration.scales[layer.name], snn.calibration.scales[snn.graph.input.name]
    shifted = snn.input_shift.apply(snn.graph.check_input(x))
    x_q = np.floor(np.clip(shifted / in_scale, 0, 1) * t_max + 0.5) * in_scale / t_max
    with torch.no_grad():
        z = layer.pre_activation(torch.as_tensor(x_q)).numpy().reshape(len(x), -1)
    image, neuron, local = result.spikes[conv.name]
    decoded = np.zeros((len(x), layer.size))
    decoded[image, neuron] = (t_max - (local - t_max)) / t_max * scale
    assert np.max(np.abs(decoded - np.clip(z, 0, scale))) <= scale / (2 * t_max) + FLOAT_SLACK
    assert _agreement(result) >= 0.9


def test_tdsnn_equals_its_emulation_of_the_shifted_graph(padded_cnn):
    model, calibration, x = padded_cnn
    L = 8.0
    snn = brianconv.convert(model, "tdsnn", calibration=calibration, L=L)
    result = snn.simulate(x, device="numpy")
    shifted = snn.input_shift.apply(snn.graph.check_input(x))
    values, _ = emulate(snn.described_graph, shifted, L, t_out=snn.description.state.t_out)
    np.testing.assert_allclose(result.outputs, values[snn.graph.output.name], rtol=0, atol=FLOAT_SLACK)
    assert _agreement(result) >= 0.9


def test_amos_equals_its_reference_on_the_shifted_graph(padded_cnn):
    model, calibration, x = padded_cnn
    snn = brianconv.convert(model, "amos", calibration=calibration, K=8)
    result = snn.simulate(x, device="numpy")
    shifted = snn.input_shift.apply(snn.graph.check_input(x))
    reference, _ = snn.scheme.reference(snn.described_graph, snn.calibration, shifted, keep=())
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=FLOAT_SLACK)
    assert _agreement(result) >= 0.9


@pytest.mark.parametrize("options", [{"input": "poisson", "duration": 200}, {"duration": 100}])
def test_rate_converts_normalised_data(padded_cnn, options):
    """Poisson input codes rates >= 0: shifted. Analog input carries negatives: shifted only with input_range."""
    model, calibration, x = padded_cnn
    input_range = None if options.get("input") == "poisson" else (-MEAN / STD, (1 - MEAN) / STD)
    snn = brianconv.convert(model, "rate", calibration=calibration, input_range=input_range, **options)
    assert not snn.input_shift.is_identity
    result = snn.simulate(x, device="numpy")
    np.testing.assert_allclose(result.ann_outputs, snn.graph.forward(x), rtol=0, atol=0)  # the user's inputs
    assert _agreement(result) >= 0.8  # rate codes converge as 1/T (Poisson: 1/sqrt(T)); 12 images


# ---------------------------------------------------------------------------------------------
# (c) clipping and range warnings, (d) input_range validation
# ---------------------------------------------------------------------------------------------

def test_values_below_low_are_clipped_with_a_warning_giving_the_fraction():
    shift = InputShift(low=np.array([-1.0, -2.0]), high=np.array([1.0, 2.0]))
    x = np.zeros((2, 2, 2, 2))
    x[0, 0, 0, 0] = -1.5   # 1 of 16 values below its channel's bound
    x[1, 1, 1, 1] = -1.5   # above channel 1's bound -2: kept
    with pytest.warns(AccuracyWarning, match=r"6\.25 % of the input values lie below .* clipped"):
        shifted = shift.apply(x)
    assert shifted[0, 0, 0, 0] == 0.0 and shifted[1, 1, 1, 1] == 0.5
    x[0, 0, 0, 0] = -1.0 + 2.0 * folding.ABOVE_RANGE_FACTOR + 0.01  # just past low + 1.1 x the range (2)
    with pytest.warns(AccuracyWarning, match=r"6\.25 % of the input values exceed"):
        shift.apply(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        shift.apply(np.clip(x, -1.0, 1.0))  # inside the range: silent


def test_simulate_clips_inputs_below_the_calibrated_bound(padded_cnn):
    model, calibration, x = padded_cnn
    snn = brianconv.convert(model, "tdsnn", calibration=calibration, L=4.0)
    x = x[:2].clone()
    x[0, 1, 3, 3] = -5.0
    with pytest.warns(AccuracyWarning, match=r"0\.694 % of the input values lie below"):  # 1 of 144
        result = snn.simulate(x, device="numpy")
    np.testing.assert_allclose(result.ann_outputs, snn.graph.forward(x), rtol=0, atol=0)  # the ANN: unclipped


def test_rate_analog_inputs_far_above_the_calibrated_scale_warn_with_the_fraction():
    """Images in 0..255 simulated after calibrating on 0..1: every non-zero pixel exceeds the input scale."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    calibration = torch.rand(16, 4)
    snn = brianconv.convert(model, "rate", calibration=calibration, duration=4, percentile=100.0)
    x = calibration[:2].clone()
    x[0, 0] = 0.0   # 7 of 8 values exceed the scale (the maximum) once multiplied by 255
    with pytest.warns(AccuracyWarning, match=r"more than 2 times the calibrated input scale .* 87\.5 % of the input"):
        snn.simulate(255 * x, device="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", AccuracyWarning)
        snn.scheme.check_run_input(snn.description, 1.9 * x.numpy())  # within the stated factor: silent


@pytest.mark.parametrize("bad, match", [
    (1.0, "pair"), ((0.0, 1.0, 2.0), "pair"), ("ab", "pair"),
    ((0.0, [1.0, 2.0, 3.0]), r"high has shape \(3,\); give a scalar or one value per input channel \(2,\)"),
    (([[0.0]], 1.0), "low has shape"), ((float("nan"), 1.0), "finite"), ((0.0, "x"), "number"),
    ((1.0, 1.0), "low must be below high .* channel 0"), (([0.0, 2.0], 1.0), "channel 1 has low 2"),
])
def test_input_range_is_validated(bad, match):
    with pytest.raises(InvalidValueError, match=match):
        input_shift_for(np.zeros((3, 2, 4, 4)), bad)


def test_input_range_sets_the_bounds_per_channel_or_for_all(padded_cnn):
    model, calibration, _ = padded_cnn
    snn = brianconv.convert(model, "ttfs", calibration=calibration, input_range=([-0.7, -2.0], 3.5), t_max=8)
    np.testing.assert_array_equal(snn.input_shift.low, [-0.7, -2.0])
    np.testing.assert_array_equal(snn.input_shift.high, [3.5, 3.5])
    with pytest.raises(InvalidValueError, match="input_range"):
        brianconv.convert(model, "ttfs", calibration=calibration, input_range=(0.0, -1.0))


def test_the_scheme_check_names_input_range():
    scheme = brianconv.schemes.get("ttfs")()
    with pytest.raises(InvalidValueError, match=r"negative inputs \(minimum -0\.25\).*input_range"):
        scheme.check_input(np.array([[0.5, -0.25]]))
    brianconv.schemes.get("rate")().check_input(np.array([[-1.0]]))  # analog rate input carries negatives


# ---------------------------------------------------------------------------------------------
# (e) affine layers fold forward
# ---------------------------------------------------------------------------------------------

def _affine(name, source, shape, seed):
    rng = np.random.default_rng(seed)
    return Layer(name, "affine", [source], shape, shape,
                 params={"scale": rng.uniform(-2, 2, shape[0]), "shift": rng.normal(size=shape[0])})


def _conv(name, source, in_shape, c_out, seed, padding=1, groups=1, stride=1, dilation=1, activation="relu"):
    rng = np.random.default_rng(seed)
    size = tuple((n + 2 * padding - dilation * 2 - 1) // stride + 1 for n in in_shape[1:])
    geometry = {"kernel_size": (3, 3), "stride": (stride, stride), "padding": (padding, padding),
                "dilation": (dilation, dilation), "groups": groups}
    weight = rng.normal(size=(c_out, in_shape[0] // groups, 3, 3))
    return Layer(name, "conv", [source], in_shape, (c_out,) + size, weight, rng.normal(size=c_out), geometry,
                 activation)


def _affine_cnn(conv2=None):
    """input -> conv(ReLU) -> affine -> conv (padded) -> affine -> affine -> linear (flattened)."""
    conv2 = conv2 or {}
    first = _conv("c1", "x", (2, 6, 6), 4, seed=1)
    second = _conv("c2", "bn1", (4, 6, 6), 4, seed=2, **conv2)
    rng = np.random.default_rng(3)
    n = second.size
    return LayerGraph([Layer("x", "input", [], (2, 6, 6), (2, 6, 6)), first, _affine("bn1", "c1", (4, 6, 6), 4),
                       second, _affine("bn2", "c2", second.out_shape, 5), _affine("bn3", "bn2", second.out_shape, 6),
                       Layer("fc", "linear", ["bn3"], (n,), (3,), rng.normal(size=(3, n)), rng.normal(size=3))])


@pytest.mark.parametrize("conv2", [{}, {"padding": 2, "dilation": 2, "groups": 2}, {"stride": 2}, {"padding": 0}])
def test_affine_layers_fold_exactly_into_padded_convs_and_linear_layers(conv2):
    graph = _affine_cnn(conv2)
    folded = fold_affine_layers(graph)
    assert [layer.op for layer in folded] == ["input", "conv", "conv", "linear"]
    assert folded["c2"].inputs == ["c1"] and folded["fc"].inputs == ["c2"]
    x = np.random.default_rng(7).normal(size=(5, 2, 6, 6))
    np.testing.assert_allclose(folded.forward(x), graph.forward(x), rtol=0, atol=EXACT)
    padded = conv2.get("padding", 1) > 0
    assert folded["c2"].bias.shape == ((4,) + graph["c2"].out_shape[1:] if padded else (4,))
    assert [layer.op for layer in graph].count("affine") == 3  # the original is not modified
    # and the input shift on top of it
    low = np.array([-0.4, -1.3])
    np.testing.assert_allclose(fold_input_shift(folded, low).forward(x - low[:, None, None]), graph.forward(x),
                               rtol=0, atol=EXACT)


def test_convert_folds_affine_layers_right_after_tracing(monkeypatch):
    import brianconv.conversion

    graph = _affine_cnn()
    monkeypatch.setattr(brianconv.conversion, "trace", lambda model, shape: graph)
    x = np.random.default_rng(8).random((20, 2, 6, 6))
    snn = brianconv.convert(nn.Identity(), "ttfs", calibration=x, t_max=8)
    assert "affine" not in [layer.op for layer in snn.graph]
    np.testing.assert_allclose(snn.graph.forward(x), graph.forward(x), rtol=0, atol=EXACT)


def test_affine_before_pooling_or_with_activation_or_as_output_is_rejected():
    x = Layer("x", "input", [], (2, 4, 4), (2, 4, 4))
    pool = Layer("pool", "maxpool", ["bn"], (2, 4, 4), (2, 2, 2),
                 params={"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)})
    with pytest.raises(ConversionError, match=r"Affine layer 'bn' .* is read by layer 'pool' \(maxpool.*"
                                              r"Linear or Conv2d"):
        fold_affine_layers(LayerGraph([x, _affine("bn", "x", (2, 4, 4), 0), pool]))
    activated = _affine("bn", "x", (2, 4, 4), 0)
    activated.activation = "relu"
    with pytest.raises(ConversionError, match="'bn' .* applies 'relu'"):
        fold_affine_layers(LayerGraph([x, activated, _conv("c", "bn", (2, 4, 4), 2, seed=0)]))
    with pytest.raises(ConversionError, match="'bn' is the model's output"):
        fold_affine_layers(LayerGraph([x, _affine("bn", "x", (2, 4, 4), 0)]))
    wrong = Layer("bn", "affine", ["x"], (2, 4, 4), (2, 4, 4), params={"scale": np.ones(3), "shift": np.zeros(3)})
    with pytest.raises(ShapeError, match="one value per channel"):
        fold_affine_layers(LayerGraph([x, wrong, _conv("c", "bn", (2, 4, 4), 2, seed=0)]))


# ---------------------------------------------------------------------------------------------
# the per-neuron bias every scheme reads
# ---------------------------------------------------------------------------------------------

def test_neuron_bias_repeats_per_channel_values_and_keeps_per_neuron_values():
    layer = _conv("c", "x", (2, 4, 4), 3, seed=0)
    np.testing.assert_array_equal(layer.neuron_bias(), np.repeat(layer.bias, 16))
    per_neuron = np.arange(48.0).reshape(3, 4, 4)
    layer.bias = per_neuron
    np.testing.assert_array_equal(layer.neuron_bias(), np.arange(48.0))
    layer.bias = np.zeros(5)
    with pytest.raises(ShapeError, match=r"bias of shape \(5,\)"):
        layer.neuron_bias()


@pytest.mark.parametrize("pool", [torch.nn.MaxPool2d(2), torch.nn.AvgPool2d(3, stride=2, padding=1)])
def test_pooling_a_concatenation_pools_each_branch(pool):
    """pool(cat(a, b)) = cat(pool(a), pool(b)): the rewrite is exact and leaves every pool reading a branch."""
    from brianconv.folding import pool_branches_before_concatenation
    from brianconv.graph import trace

    class Inception(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b1, self.b2 = (torch.nn.Conv2d(c, 3, 3, padding=1) for c in (2, 2, 3))
            self.pool, self.fc = pool, torch.nn.Linear(6 * 4 * 4, 5)

        def forward(self, x):
            y = torch.cat([torch.relu(self.a(x)), torch.relu(self.b2(torch.relu(self.b1(x))))], 1)
            return self.fc(torch.relu(self.pool(y)).flatten(1))

    torch.manual_seed(0)
    graph = trace(Inception().eval(), (2, 8, 8))
    rewritten = pool_branches_before_concatenation(graph)
    x = torch.rand(4, 2, 8, 8)
    np.testing.assert_allclose(rewritten.forward(x), graph.forward(x), rtol=0, atol=1e-12)
    pools = [layer for layer in rewritten if layer.op in ("maxpool", "avgpool")]
    assert [rewritten[p.inputs[0]].op for p in pools] == ["conv", "conv"]
    assert rewritten["pool"].op == "cat" and rewritten["pool"].activation == "relu"
    assert "cat" not in rewritten.by_name  # read by the pool only: gone
    assert pool_branches_before_concatenation(rewritten) is rewritten
