"""The layer graph: tracing, BatchNorm folding, activations, conv geometry and the errors.

Every check compares the graph's float64 forward pass with the torch model itself: with the
float32 model to ``1e-5`` (float32 rounding of values of order 1) and with a float64 copy of the
model to ``1e-10`` (the graph must compute the same function, not merely a close one).
"""

import copy
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from brianconv.errors import ConversionError, InvalidValueError, ShapeError
from brianconv.graph import trace

FLOAT32_ATOL = 1e-5
FLOAT64_ATOL = 1e-10


def assert_matches_torch(graph, model, x):
    """The graph's forward equals the float32 model and, more tightly, its float64 copy."""
    with torch.no_grad():
        out32 = model(x).reshape(len(x), -1).numpy()
        out64 = copy.deepcopy(model).double()(x.double()).reshape(len(x), -1).numpy()
    ours = graph.forward(x)
    assert ours.dtype == np.float64 and ours.shape == out32.shape
    np.testing.assert_allclose(ours, out32, rtol=0, atol=FLOAT32_ATOL)
    np.testing.assert_allclose(ours, out64, rtol=0, atol=FLOAT64_ATOL)


def ops(graph):
    return [layer.op for layer in graph]


# ---------------------------------------------------------------------------------------------
# sequential and custom models
# ---------------------------------------------------------------------------------------------

def test_sequential_mlp_drops_flatten_dropout_identity():
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(12, 7), nn.ReLU(), nn.Identity(),
                          nn.Dropout(0.3), nn.Linear(7, 4)).eval()
    graph = trace(model, (3, 2, 2))
    assert ops(graph) == ["input", "linear", "linear"]
    assert [layer.activation for layer in graph] == [None, "relu", None]
    assert graph.input.out_shape == (3, 2, 2) and graph.output.out_shape == (4,)
    assert graph.layers[1].in_shape == (12,)
    np.testing.assert_array_equal(graph.layers[1].weight, model[2].weight.detach().double().numpy())
    assert_matches_torch(graph, model, torch.randn(9, 3, 2, 2))


def test_trace_puts_the_model_in_eval_mode():
    model = nn.Sequential(nn.Linear(5, 5), nn.ReLU(), nn.Dropout(0.9), nn.Linear(5, 2))
    assert model.training
    graph = trace(model, (5,))
    assert not model.training
    assert_matches_torch(graph, model, torch.randn(6, 5))  # dropout would make these differ


class Residual(nn.Module):
    """Functional ReLU, a residual sum, torch.flatten, x.view(x.size(0), -1) and pooling."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.conv3 = nn.Conv2d(4, 3, 3)
        self.maxpool = nn.MaxPool2d(2, padding=1)
        self.fc1 = nn.Linear(3 * 2 * 2, 6)
        self.fc2 = nn.Linear(6, 5)

    def forward(self, x):
        y = F.relu(self.conv1(x))
        z = self.conv2(y)
        x = F.relu(y + z)
        x = self.pool(x)
        x = torch.relu(self.conv3(x))
        x = self.maxpool(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x).relu()
        x = x.view(x.size(0), -1)
        return self.fc2(x)


def test_custom_forward_with_residual_and_functional_calls():
    model = Residual().eval()
    graph = trace(model, (2, 8, 8))
    assert ops(graph) == ["input", "conv", "conv", "add", "avgpool", "conv", "maxpool", "linear", "linear"]
    by_name = {layer.name: layer for layer in graph}
    assert by_name["conv1"].activation == "relu" and by_name["conv2"].activation is None
    add = graph.layers[3]
    assert add.activation == "relu" and add.inputs == ["conv1", "conv2"]
    assert by_name["conv3"].activation == "relu" and by_name["fc1"].activation == "relu"
    assert by_name["maxpool"].out_shape == (3, 2, 2) and by_name["fc1"].in_shape == (12,)
    assert graph.consumers("conv1") == [by_name["conv2"], add]
    assert_matches_torch(graph, model, torch.randn(5, 2, 8, 8))


class SqueezeExcite(nn.Module):
    """A conv map gated per channel by sigmoid(W2 relu(W1 global-average(map))), then a same-size product."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.other = nn.Conv2d(1, 4, 3, padding=1)
        self.squeeze = nn.AdaptiveAvgPool2d(1)
        self.reduce = nn.Linear(4, 2)
        self.expand = nn.Linear(2, 4)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        a = F.relu(self.conv(x))
        s = torch.sigmoid(self.expand(F.relu(self.reduce(self.squeeze(a).flatten(1)))))
        gated = a * s.view(-1, 4, 1, 1)
        return self.fc((gated * torch.sigmoid(self.other(x))).flatten(1))


def test_squeeze_excitation_products_and_adaptive_pooling():
    model = SqueezeExcite().eval()
    graph = trace(model, (1, 6, 6))
    assert ops(graph) == ["input", "conv", "avgpool", "linear", "linear", "mul", "conv", "mul", "linear"]
    squeeze, gate, other = graph["squeeze"], graph.layers[5], graph.layers[7]
    assert squeeze.params["kernel_size"] == (6, 6) and squeeze.out_shape == (4, 1, 1)
    assert gate.inputs == ["conv", "expand"] and gate.params["second_size"] == 4 and gate.out_shape == (4, 6, 6)
    assert other.params["second_size"] == 144
    assert_matches_torch(graph, model, torch.rand(5, 1, 6, 6))


def test_products_the_graph_cannot_represent_are_rejected():
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return self.fc(x) * 2.0

    with pytest.raises(ConversionError, match="product of two layer outputs"):
        trace(Scaled(), (4,))

    class SpatialGate(nn.Module):  # one value per pixel, broadcast over channels: not supported
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.a(x) * self.b(x)

    with pytest.raises(ShapeError, match="one value per channel"):
        trace(SpatialGate(), (1, 6, 6))
    with pytest.raises(ConversionError, match="divides the input size"):
        trace(nn.Sequential(nn.Conv2d(1, 2, 3), nn.AdaptiveAvgPool2d(4)), (1, 7, 7))


def test_view_and_reshape_with_shape_arithmetic():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            x = F.relu(self.conv(x))
            return self.fc(x.reshape(x.shape[0], -1))

    model = Net().eval()
    graph = trace(model, (1, 6, 6))
    assert ops(graph) == ["input", "conv", "linear"]
    assert_matches_torch(graph, model, torch.randn(4, 1, 6, 6))


def test_flat_input_reshaped_to_an_image_inside_forward():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fc = nn.Linear(2 * 3 * 3, 2)

        def forward(self, x):
            x = F.relu(self.conv(x.view(-1, 1, 5, 5)))
            return self.fc(x.flatten(1))

    model = Net().eval()
    graph = trace(model, (25,))
    assert graph.layers[1].in_shape == (1, 5, 5)
    assert_matches_torch(graph, model, torch.randn(3, 25))


def test_a_bare_layer_is_traced_as_a_one_layer_model():
    conv = nn.Conv2d(2, 3, 3, stride=2).eval()
    graph = trace(conv, (2, 7, 7))
    assert ops(graph) == ["input", "conv"]
    assert_matches_torch(graph, conv, torch.randn(3, 2, 7, 7))


def test_a_float64_model_is_traced():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 3 * 3, 2)).double().eval()
    graph = trace(model, (1, 5, 5))
    x = torch.randn(4, 1, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(graph.forward(x), expected, rtol=0, atol=FLOAT64_ATOL)


# ---------------------------------------------------------------------------------------------
# BatchNorm folding
# ---------------------------------------------------------------------------------------------

def _randomise_batchnorm(bn, affine=True):
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c))
        bn.running_var.copy_(torch.rand(c) * 1.5 + 0.5)
        if affine:
            bn.weight.copy_(torch.randn(c))
            bn.bias.copy_(torch.randn(c))


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_is_folded_into_linear_and_conv(affine):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, bias=False), nn.BatchNorm2d(3, affine=affine), nn.ReLU(),
                          nn.Flatten(), nn.Linear(3 * 4 * 4, 6), nn.BatchNorm1d(6, affine=affine), nn.ReLU(),
                          nn.Linear(6, 2)).eval()
    _randomise_batchnorm(model[1], affine)
    _randomise_batchnorm(model[5], affine)
    graph = trace(model, (2, 6, 6))
    assert ops(graph) == ["input", "conv", "linear", "linear"]
    assert [layer.activation for layer in graph] == [None, "relu", "relu", None]
    conv = graph.layers[1]
    assert not np.allclose(conv.weight, model[0].weight.detach().double().numpy())
    assert np.any(conv.bias != 0)  # the conv had no bias; the BatchNorm shift became one
    assert_matches_torch(graph, model, torch.randn(7, 2, 6, 6))


def test_batchnorm_on_the_input_becomes_an_affine_layer():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2)).eval()
    _randomise_batchnorm(model[0])
    graph = trace(model, (4,))
    assert ops(graph) == ["input", "affine", "linear"]
    assert graph["0"].params["scale"].shape == (4,) and graph["0"].params["shift"].shape == (4,)
    assert_matches_torch(graph, model, torch.randn(6, 4))


def test_batchnorm_without_running_statistics_is_rejected():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ConversionError, match="running statistics"):
        trace(model, (4,))


def test_reading_a_value_from_before_its_folded_batchnorm_is_rejected():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.bn = nn.BatchNorm1d(3)
            self.out = nn.Linear(3, 2)

        def forward(self, x):
            a = self.fc(x)
            return self.out(self.bn(a) + a)

    with pytest.raises(ConversionError, match="'fc' from before"):
        trace(Net(), (3,))


# ---------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation, name", [
    (nn.ReLU(), "relu"), (nn.ReLU(inplace=True), "relu"), (nn.Sigmoid(), "sigmoid"), (nn.SiLU(), "silu"),
    (nn.Tanh(), "tanh"), (nn.GELU(), "gelu"), (nn.ELU(), "elu"), (nn.LeakyReLU(), "leaky_relu"),
])
def test_activation_modules_are_recorded_by_type(activation, name):
    model = nn.Sequential(OrderedDict(hidden=nn.Linear(5, 4), act=activation, out=nn.Linear(4, 3))).eval()
    graph = trace(model, (5,))
    assert ops(graph) == ["input", "linear", "linear"]
    assert graph["hidden"].activation == name and graph["out"].activation is None
    assert_matches_torch(graph, model, torch.randn(8, 5))


@pytest.mark.parametrize("function, name", [
    (F.relu, "relu"), (torch.relu, "relu"), (torch.sigmoid, "sigmoid"), (F.silu, "silu"), (torch.tanh, "tanh"),
    (lambda v: v.sigmoid(), "sigmoid"), (lambda v: F.relu(v, inplace=True), "relu"),
])
def test_functional_activations_are_recorded(function, name):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = nn.Linear(5, 4)
            self.out = nn.Linear(4, 3)

        def forward(self, x):
            return self.out(function(self.hidden(x)))

    model = Net().eval()
    graph = trace(model, (5,))
    assert graph["hidden"].activation == name
    assert_matches_torch(graph, model, torch.randn(8, 5))


def test_softmax_on_the_output_is_dropped_and_recorded_as_the_head():
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), nn.Softmax(dim=-1)).eval()
    graph = trace(model, (5,))
    assert graph.head == "softmax" and graph.output.activation is None and "softmax" in graph.summary()
    assert_matches_torch(graph, model[:3], torch.randn(8, 5))  # the graph returns the logits


@pytest.mark.parametrize("activation", [nn.LeakyReLU(0.2), nn.ELU(alpha=0.5), nn.GELU(approximate="tanh")],
                         ids=["leaky_relu", "elu", "gelu"])
def test_activation_parameters_the_graph_cannot_apply_are_rejected(activation):
    model = nn.Sequential(nn.Linear(5, 4), activation, nn.Linear(4, 3))
    with pytest.raises(ConversionError, match=type(activation).__name__):
        trace(model, (5,))


def test_two_activations_in_a_row_are_rejected():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Sigmoid(), nn.Linear(3, 1))
    with pytest.raises(ConversionError, match="two activations"):
        trace(model, (3,))


def test_activation_on_the_input_is_rejected():
    model = nn.Sequential(nn.ReLU(), nn.Linear(3, 1))
    with pytest.raises(ConversionError, match="must follow a layer"):
        trace(model, (3,))


def test_reading_a_value_from_before_its_activation_is_rejected():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.out = nn.Linear(3, 2)

        def forward(self, x):
            a = self.fc(x)
            return self.out(a + F.relu(a))  # needs both the pre-activation and the activation of fc

    with pytest.raises(ConversionError, match="'fc' from before its activation"):
        trace(Net(), (3,))


# ---------------------------------------------------------------------------------------------
# convolution geometry and pooling
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, padding", [
    (dict(in_channels=2, out_channels=3, kernel_size=3), (0, 0)),
    (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2), (0, 0)),
    (dict(in_channels=2, out_channels=3, kernel_size=(3, 2), stride=(2, 1), padding=(2, 1)), (2, 1)),
    (dict(in_channels=2, out_channels=3, kernel_size=3, dilation=2, padding=1), (1, 1)),
    (dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1), (1, 1)),
    (dict(in_channels=3, out_channels=3, kernel_size=3, groups=3), (0, 0)),             # depthwise
    (dict(in_channels=3, out_channels=6, kernel_size=3, groups=3, stride=2), (0, 0)),   # depthwise, multiplier 2
    (dict(in_channels=2, out_channels=3, kernel_size=5, padding="same"), (2, 2)),
    (dict(in_channels=2, out_channels=3, kernel_size=3, dilation=2, padding="same"), (2, 2)),
    (dict(in_channels=2, out_channels=3, kernel_size=3, padding="valid"), (0, 0)),
], ids=["plain", "stride", "rect-stride-pad", "dilation", "groups", "depthwise", "depthwise-x2", "same",
        "same-dilated", "valid"])
def test_conv_geometry(kwargs, padding):
    conv = nn.Conv2d(**kwargs)
    channels = kwargs["in_channels"]
    model = nn.Sequential(conv, nn.ReLU(), nn.Flatten()).eval()
    graph = trace(model, (channels, 9, 8))
    layer = graph.layers[1]
    assert layer.op == "conv" and layer.params["padding"] == padding
    assert layer.params["groups"] == conv.groups and layer.params["stride"] == conv.stride
    assert layer.params["dilation"] == conv.dilation
    assert layer.out_shape == tuple(model[0](torch.zeros(1, channels, 9, 8)).shape[1:])
    assert_matches_torch(graph, model, torch.randn(4, channels, 9, 8))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel:UserWarning")  # torch, while tracing
def test_same_padding_with_an_even_kernel_is_rejected():
    with pytest.raises(ConversionError, match="even kernel"):
        trace(nn.Sequential(nn.Conv2d(1, 2, 4, padding="same")), (1, 8, 8))


def test_non_zero_padding_mode_is_rejected():
    with pytest.raises(ConversionError, match="reflect"):
        trace(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect")), (1, 8, 8))


@pytest.mark.parametrize("pool", [
    nn.AvgPool2d(2), nn.AvgPool2d(3, stride=2, padding=1),
    nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
    nn.MaxPool2d(2), nn.MaxPool2d(3, stride=2, padding=1), nn.MaxPool2d((2, 3), stride=(1, 2)),
], ids=["avg", "avg-pad", "avg-pad-exclude", "max", "max-pad", "max-rect"])
def test_pooling_layers(pool):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), pool, nn.Flatten()).eval()
    graph = trace(model, (1, 9, 9))
    assert graph.layers[2].op == ("maxpool" if isinstance(pool, nn.MaxPool2d) else "avgpool")
    assert_matches_torch(graph, model, torch.randn(4, 1, 9, 9))


@pytest.mark.parametrize("pool", [nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(2, dilation=2),
                                  nn.AvgPool2d(2, divisor_override=3)], ids=["ceil", "dilated", "divisor"])
def test_unsupported_pooling_options(pool):
    with pytest.raises(ConversionError, match=type(pool).__name__):
        trace(nn.Sequential(nn.Conv2d(1, 2, 3), pool), (1, 9, 9))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module, input_shape", [
    (nn.LSTM(4, 3), (5, 4)),
    (nn.Upsample(scale_factor=2), (1, 4, 4)),
    (nn.ConvTranspose2d(1, 2, 3), (1, 4, 4)),
], ids=["LSTM", "Upsample", "ConvTranspose2d"])
def test_unsupported_modules_are_named_with_their_type(module, input_shape):
    model = nn.Sequential(OrderedDict(mystery=module))
    with pytest.raises(ConversionError) as info:
        trace(model, input_shape)
    message = str(info.value)
    assert "'mystery'" in message and type(module).__name__ in message
    assert "Supported:" in message and "Conv2d" in message


def test_unsupported_function_is_named():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return torch.abs(self.fc(x))

    with pytest.raises(ConversionError, match="'abs'"):
        trace(Net(), (3,))


def test_a_model_returning_a_tuple_is_rejected():
    class TwoHeads(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 2)
            self.b = nn.Linear(3, 2)

        def forward(self, x):
            return self.a(x), self.b(x)

    with pytest.raises(ConversionError, match="single tensor"):
        trace(TwoHeads(), (3,))


def test_something_that_is_not_a_module_is_rejected():
    with pytest.raises(ConversionError, match="function"):
        trace(lambda x: x, (3,))


def test_data_dependent_control_flow_is_reported():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else x

    with pytest.raises(ConversionError, match="Branchy"):
        trace(Branchy(), (3,))


@pytest.mark.parametrize("where", ["weight", "bias", "running_mean"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_parameters_are_rejected(where, value):
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        if where == "running_mean":
            model[1].running_mean[0] = value
        else:
            getattr(model[0], where)[1] = value
    with pytest.raises(InvalidValueError, match="NaN"):
        trace(model, (3,))


@pytest.mark.filterwarnings("ignore:invalid value encountered in sqrt:RuntimeWarning")
def test_negative_running_variance_is_caught_after_folding():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        model[1].running_var[0] = -1.0
    with pytest.raises(InvalidValueError, match="running variance"):
        trace(model, (3,))


@pytest.mark.parametrize("model, input_shape", [
    (nn.Sequential(nn.Linear(4, 2)), (5,)),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)), (1, 7, 7)),
    (nn.Sequential(nn.Conv2d(1, 2, 3)), (3, 6, 6)),
    (nn.Sequential(nn.Conv2d(1, 2, 5)), (1, 3, 3)),
], ids=["linear", "flatten-linear", "channels", "too-small"])
def test_wrong_input_shape_is_a_shape_error(model, input_shape):
    with pytest.raises(ShapeError, match=r"does not accept inputs of shape"):
        trace(model, input_shape)


def test_forward_checks_its_input():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()).eval()
    graph = trace(model, (1, 5, 5))
    with pytest.raises(ShapeError, match=r"\(N, 1, 5, 5\)"):
        graph.forward(np.zeros((2, 1, 5, 6)))
    with pytest.raises(ShapeError, match="no samples"):
        graph.forward(np.zeros((0, 1, 5, 5)))
    bad = np.zeros((2, 1, 5, 5))
    bad[1, 0, 2, 2] = np.inf
    with pytest.raises(InvalidValueError, match="1 NaN/Inf"):
        graph.forward(bad)
    # a flat input model accepts images of the right size (same C, H, W order)
    flat = nn.Sequential(nn.Linear(4, 2)).eval()
    x = torch.randn(3, 1, 2, 2)
    np.testing.assert_allclose(trace(flat, (4,)).forward(x), flat(x.reshape(3, 4)).detach().numpy(), atol=1e-6)


def test_forward_record_returns_every_layer():
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    graph = trace(model, (4,))
    x = torch.randn(5, 4)
    out, values = graph.forward(x, record=True)
    assert set(values) == {layer.name for layer in graph}
    with torch.no_grad():
        hidden = torch.relu(model[0](x)).numpy()
    np.testing.assert_allclose(values["0"], hidden, atol=FLOAT32_ATOL)
    np.testing.assert_array_equal(values["2"], out)
    assert "relu" in graph.summary()
