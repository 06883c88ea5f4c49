"""The torch.export front-end: every spelling of an operation gives the same layer graph.

Each model is written with modules, ``torch.nn.functional``, ``torch.*``, tensor methods and
in-place variants; for each, the graph's float64 forward pass must equal the float64 model's
output to ``1e-10`` relative to the output's scale (the graph computes the same function).
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from brianconv.errors import ConversionError, ShapeError
from brianconv.graph import trace
from brianconv.metrics import ann_cost

RTOL = 1e-10


def assert_graph_equals_torch(graph, model, x, head=None):
    """``graph.forward(x)`` equals the float64 ``model(x)`` (with ``head`` applied to the graph's logits)."""
    with torch.no_grad():
        expected = model(x).reshape(len(x), -1).numpy()
        ours = graph.forward(x)
        if head is not None:
            ours = head(torch.as_tensor(ours)).numpy()
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=RTOL * max(1.0, np.abs(expected).max()))


def traced(model, input_shape, n=5, scale=1.0, seed=0):
    """The float64 ``model`` in eval mode, its graph and a batch of ``n`` inputs of ``scale``."""
    torch.manual_seed(seed)
    model = model.double().eval()
    graph = trace(model, input_shape)
    return model, graph, scale * torch.randn((n,) + tuple(input_shape), dtype=torch.float64)


def ops(graph):
    return [layer.op for layer in graph]


class Apply(nn.Module):
    """``out(f(hidden(x)))`` with two Linear layers around one spelling ``f`` (a module or a callable)."""

    def __init__(self, f, width=6):
        super().__init__()
        self.hidden, self.out = nn.Linear(5, width), nn.Linear(width, 3)
        self.f = f

    def forward(self, x):
        return self.out(self.f(self.hidden(x)))


# ---------------------------------------------------------------------------------------------
# activations
# ---------------------------------------------------------------------------------------------

ACTIVATION_SPELLINGS = [
    ("relu", nn.ReLU()), ("relu", nn.ReLU(inplace=True)), ("relu", F.relu), ("relu", lambda v: F.relu(v, inplace=True)),
    ("relu", torch.relu), ("relu", torch.relu_), ("relu", lambda v: v.relu()), ("relu", lambda v: v.relu_()),
    ("relu", lambda v: v.clamp(min=0)), ("relu", lambda v: torch.clamp_min(v, 0)), ("relu", lambda v: v.clamp_min_(0)),
    ("sigmoid", nn.Sigmoid()), ("sigmoid", torch.sigmoid), ("sigmoid", F.sigmoid), ("sigmoid", lambda v: v.sigmoid_()),
    ("tanh", nn.Tanh()), ("tanh", torch.tanh), ("tanh", F.tanh), ("tanh", lambda v: v.tanh()),
    ("tanh", lambda v: v.tanh_()),
    ("silu", nn.SiLU()), ("silu", F.silu), ("silu", lambda v: F.silu(v, inplace=True)),
    ("gelu", nn.GELU()), ("gelu", F.gelu),
    ("leaky_relu", nn.LeakyReLU()), ("leaky_relu", F.leaky_relu), ("leaky_relu", F.leaky_relu_),
    ("elu", nn.ELU()), ("elu", F.elu), ("elu", lambda v: F.elu(v, inplace=True)),
]


@pytest.mark.parametrize("name, f", ACTIVATION_SPELLINGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(ACTIVATION_SPELLINGS)])
def test_activation_spellings(name, f):
    model, graph, x = traced(Apply(f), (5,), scale=3.0)
    assert ops(graph) == ["input", "linear", "linear"]
    assert graph["hidden"].activation == name and graph["out"].activation is None
    assert_graph_equals_torch(graph, model, x)


CLIPPED_SPELLINGS = [
    (6.0, nn.ReLU6()), (6.0, nn.ReLU6(inplace=True)), (6.0, F.relu6), (6.0, lambda v: F.relu6(v, inplace=True)),
    (2.0, nn.Hardtanh(0.0, 2.0)), (2.0, lambda v: F.hardtanh(v, 0.0, 2.0)), (2.0, lambda v: F.hardtanh_(v, 0.0, 2.0)),
    (1.5, lambda v: torch.clamp(v, 0, 1.5)), (1.5, lambda v: torch.clamp(v, min=0.0, max=1.5)),
    (1.5, lambda v: v.clamp(0, 1.5)), (1.5, lambda v: v.clamp_(0, 1.5)), (1.5, lambda v: torch.clip(v, 0, 1.5)),
    (1.5, lambda v: v.clip(0, 1.5)), (1.5, lambda v: torch.clamp(F.relu(v), max=1.5)),
    (1.5, lambda v: v.relu_().clamp_(max=1.5)), (1.5, lambda v: F.relu(v).clamp(0, 1.5)),
]


@pytest.mark.parametrize("clip, f", CLIPPED_SPELLINGS, ids=[f"clip{c}-{i}" for i, (c, _) in enumerate(CLIPPED_SPELLINGS)])
def test_clipped_relu_spellings(clip, f):
    model, graph, x = traced(Apply(f), (5,), scale=10.0)  # large inputs: both bounds are reached
    hidden = graph["hidden"]
    assert hidden.activation == "clipped_relu" and hidden.params["clip"] == clip
    assert isinstance(hidden.params["clip"], float)
    assert_graph_equals_torch(graph, model, x)


@pytest.mark.parametrize("f, match", [
    (nn.Hardtanh(), "lower bound -1"), (lambda v: F.hardtanh(v, -1.0, 1.0), "lower bound -1"),
    (lambda v: v.clamp(-0.5, 1.0), "lower bound -0.5"), (lambda v: v.clamp(max=1.0), "lower bound None"),
    (lambda v: v.clamp_min(0.1), "lower bound 0.1"), (lambda v: v.clamp(0, 0), "upper bound"),
], ids=["Hardtanh()", "hardtanh(-1,1)", "clamp(-0.5,1)", "clamp(max)", "clamp_min(0.1)", "clamp(0,0)"])
def test_clipping_that_is_not_a_clipped_relu_is_rejected(f, match):
    with pytest.raises(ConversionError, match=match):
        trace(Apply(f), (5,))


# ---------------------------------------------------------------------------------------------
# softmax heads
# ---------------------------------------------------------------------------------------------

HEADS = [
    ("log_softmax", nn.LogSoftmax(dim=1)), ("log_softmax", lambda v: F.log_softmax(v, dim=1)),
    ("log_softmax", lambda v: torch.log_softmax(v, -1)), ("log_softmax", lambda v: v.log_softmax(1)),
    ("softmax", nn.Softmax(dim=-1)), ("softmax", lambda v: F.softmax(v, dim=1)),
    ("softmax", lambda v: torch.softmax(v, 1)), ("softmax", lambda v: v.softmax(-1)),
]


class Headed(nn.Module):
    def __init__(self, head):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 6), nn.Linear(6, 4)
        self.head = head

    def forward(self, x):
        return self.head(self.fc2(F.relu(self.fc1(x))).flatten(1))


@pytest.mark.parametrize("name, head", HEADS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(HEADS)])
def test_softmax_heads_are_dropped_and_the_graph_returns_logits(name, head):
    model, graph, x = traced(Headed(head), (5,))
    assert graph.head == name and ops(graph) == ["input", "linear", "linear"] and graph.output.activation is None
    with torch.no_grad():
        logits = model.fc2(F.relu(model.fc1(x))).numpy()
    np.testing.assert_allclose(graph.forward(x), logits, rtol=0, atol=RTOL * np.abs(logits).max())
    assert_graph_equals_torch(graph, model, x, head=lambda v: getattr(F, name)(v, dim=1))


def test_a_softmax_in_the_middle_is_rejected():
    with pytest.raises(ConversionError, match="only supported as the output head"):
        trace(Apply(nn.Softmax(dim=1)), (5,))


def test_a_softmax_over_the_channels_of_a_map_is_rejected():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Softmax(dim=1))
    with pytest.raises(ConversionError, match="flat"):
        trace(model, (1, 5, 5))


# ---------------------------------------------------------------------------------------------
# pooling, reshapes, dropout
# ---------------------------------------------------------------------------------------------

class ConvThen(nn.Module):
    """``fc(flat(pool(relu(conv(x)))))`` with one spelling each of the pooling and of the flattening."""

    def __init__(self, pool, flat=lambda v: v.flatten(1), pooled=3):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * pooled * pooled, 4)
        self.pool, self.flat = pool, flat

    def forward(self, x):
        return self.fc(self.flat(self.pool(F.relu(self.conv(x)))))


POOL_SPELLINGS = [
    ("maxpool", nn.MaxPool2d(2)), ("maxpool", lambda v: F.max_pool2d(v, 2)),
    ("maxpool", lambda v: torch.max_pool2d(v, 2)), ("maxpool", lambda v: F.max_pool2d(v, kernel_size=3, stride=2, padding=1)),
    ("avgpool", nn.AvgPool2d(2)), ("avgpool", lambda v: F.avg_pool2d(v, 2)),
    ("avgpool", lambda v: F.avg_pool2d(v, 3, 2, 1, count_include_pad=False)),
    ("avgpool", nn.AdaptiveAvgPool2d(3)), ("avgpool", lambda v: F.adaptive_avg_pool2d(v, (3, 3))),
    ("avgpool", lambda v: torch.nn.functional.adaptive_avg_pool2d(v, 3)),
]


@pytest.mark.parametrize("kind, pool", POOL_SPELLINGS, ids=[f"{k}-{i}" for i, (k, _) in enumerate(POOL_SPELLINGS)])
def test_pooling_spellings(kind, pool):
    model, graph, x = traced(ConvThen(pool), (2, 6, 6))
    assert ops(graph) == ["input", "conv", kind, "linear"]
    assert_graph_equals_torch(graph, model, x)


FLATTEN_SPELLINGS = [
    nn.Flatten(), lambda v: torch.flatten(v, 1), lambda v: v.flatten(1), lambda v: v.view(v.size(0), -1),
    lambda v: v.reshape(len(v), -1), lambda v: v.view(-1, 27), lambda v: v.reshape(v.shape[0], -1).contiguous(),
    lambda v: torch.reshape(v, (-1, 27)), lambda v: v.flatten(1).unsqueeze(1).squeeze(1),
]
DROPOUT_SPELLINGS = [nn.Dropout(0.5), nn.Dropout2d(0.5), nn.Identity(), lambda v: F.dropout(v, 0.5, training=False),
                     lambda v: F.dropout2d(v, 0.3, training=False), lambda v: F.dropout(v, 0.5, False, inplace=True)]


@pytest.mark.parametrize("flat", FLATTEN_SPELLINGS, ids=[f"flatten-{i}" for i in range(len(FLATTEN_SPELLINGS))])
def test_flatten_spellings_vanish(flat):
    model, graph, x = traced(ConvThen(nn.Identity(), flat, pooled=3), (2, 3, 3))
    assert ops(graph) == ["input", "conv", "linear"] and graph["fc"].in_shape == (27,)
    assert_graph_equals_torch(graph, model, x)


@pytest.mark.parametrize("drop", DROPOUT_SPELLINGS, ids=[f"dropout-{i}" for i in range(len(DROPOUT_SPELLINGS))])
def test_dropout_and_identity_vanish(drop):
    model, graph, x = traced(ConvThen(drop), (2, 3, 3))
    assert ops(graph) == ["input", "conv", "linear"]
    assert_graph_equals_torch(graph, model, x)


def test_a_reshape_across_the_batch_axis_is_rejected():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(2, 3, 3, padding=1), nn.Linear(3, 4)

        def forward(self, x):
            return self.fc(self.conv(x).reshape(-1, 3))  # rows of 3 values: the batch axis is gone

    with pytest.raises(ConversionError, match="batch axis"):
        trace(Net(), (2, 3, 3))


# ---------------------------------------------------------------------------------------------
# weighted layers written functionally, add, mul, cat
# ---------------------------------------------------------------------------------------------

class FunctionalWeights(nn.Module):
    """``F.conv2d`` and ``F.linear`` with the module's own parameters."""

    def __init__(self):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(3, 2, 3, 3))
        self.b1 = nn.Parameter(torch.randn(3))
        self.w2 = nn.Parameter(torch.randn(4, 3 * 2 * 2))

    def forward(self, x):
        x = torch.relu(F.conv2d(x, self.w1, self.b1, stride=2, padding=1))
        return F.linear(x.flatten(1), self.w2)


def test_functional_conv_and_linear_with_module_parameters():
    model, graph, x = traced(FunctionalWeights(), (2, 4, 4))
    assert ops(graph) == ["input", "conv", "linear"]
    assert graph["conv2d"].params["stride"] == (2, 2) and np.all(graph["linear"].bias == 0)
    assert_graph_equals_torch(graph, model, x)


class Binary(nn.Module):
    """``combine(relu(a(x)), relu(b(x)))`` for two conv branches, then a Linear."""

    def __init__(self, combine, b_channels=3, out_channels=6):
        super().__init__()
        self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, b_channels, 3, padding=1)
        self.fc = nn.Linear(out_channels * 4 * 4, 2)
        self.combine = combine

    def forward(self, x):
        return self.fc(self.combine(F.relu(self.a(x)), F.relu(self.b(x))).flatten(1))


def _iadd(u, v):
    u += v
    return u


def _imul(u, v):
    u *= v
    return u


ADD_SPELLINGS = [lambda u, v: u + v, torch.add, lambda u, v: u.add(v), lambda u, v: u.add_(v), _iadd]
MUL_SPELLINGS = [lambda u, v: u * v, torch.mul, lambda u, v: u.mul(v), lambda u, v: u.mul_(v), _imul]
CAT_SPELLINGS = [lambda u, v: torch.cat([u, v], 1), lambda u, v: torch.cat((u, v), dim=-3),
                 lambda u, v: torch.concat([u, v], dim=1), lambda u, v: torch.concatenate([u, v], axis=1)]


@pytest.mark.parametrize("combine", ADD_SPELLINGS, ids=[f"add-{i}" for i in range(len(ADD_SPELLINGS))])
def test_add_spellings(combine):
    model, graph, x = traced(Binary(combine, out_channels=3), (2, 4, 4))
    assert ops(graph) == ["input", "conv", "conv", "add", "linear"] and graph.layers[3].inputs == ["a", "b"]
    assert_graph_equals_torch(graph, model, x)


@pytest.mark.parametrize("combine", MUL_SPELLINGS, ids=[f"mul-{i}" for i in range(len(MUL_SPELLINGS))])
def test_mul_spellings(combine):
    model, graph, x = traced(Binary(combine, out_channels=3), (2, 4, 4))
    assert ops(graph) == ["input", "conv", "conv", "mul", "linear"] and graph.layers[3].params["second_size"] == 48
    assert_graph_equals_torch(graph, model, x)


@pytest.mark.parametrize("combine", CAT_SPELLINGS, ids=[f"cat-{i}" for i in range(len(CAT_SPELLINGS))])
def test_cat_spellings(combine):
    model, graph, x = traced(Binary(combine, b_channels=2, out_channels=5), (2, 4, 4))
    cat = graph.layers[3]
    assert ops(graph) == ["input", "conv", "conv", "cat", "linear"]
    assert cat.inputs == ["a", "b"] and cat.params == {"axis": 0, "sizes": (48, 32)}
    assert cat.in_shape == (3, 4, 4) and cat.out_shape == (5, 4, 4)
    assert_graph_equals_torch(graph, model, x)


def test_cat_of_flat_features_followed_by_an_activation():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.out = nn.Linear(4, 3), nn.Linear(4, 2), nn.Linear(5, 2)

        def forward(self, x):
            return self.out(torch.tanh(torch.cat([self.a(x), self.b(x)], dim=-1)))

    model, graph, x = traced(Net(), (4,))
    cat = graph["cat"]
    assert cat.activation == "tanh" and cat.params["sizes"] == (3, 2) and cat.out_shape == (5,)
    assert_graph_equals_torch(graph, model, x)


def test_cat_along_the_width_is_rejected():
    with pytest.raises(ConversionError, match="dim=3"):
        trace(Binary(lambda u, v: torch.cat([u, v], dim=3), out_channels=3), (2, 4, 2))


# ---------------------------------------------------------------------------------------------
# whole blocks
# ---------------------------------------------------------------------------------------------

class MNISTExample(nn.Module):
    """The network of the PyTorch MNIST example (pytorch/examples, mnist/main.py)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def test_the_pytorch_mnist_example_net():
    model, graph, x = traced(MNISTExample(), (1, 28, 28), n=3)
    assert [(layer.name, layer.op, layer.activation) for layer in graph] == [
        ("x", "input", None), ("conv1", "conv", "relu"), ("conv2", "conv", "relu"), ("max_pool2d", "maxpool", None),
        ("fc1", "linear", "relu"), ("fc2", "linear", None)]
    assert graph.head == "log_softmax"
    assert_graph_equals_torch(graph, model, x, head=lambda v: F.log_softmax(v, dim=1))


def _randomise_batchnorms(model):
    for bn in model.modules():
        if isinstance(bn, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                bn.running_mean.uniform_(-1, 1)
                bn.running_var.uniform_(0.5, 2)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.5, 0.5)
    return model


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, then ReLU (He et al. 2016)."""

    def __init__(self, channels=3):
        super().__init__()
        self.stem = nn.Conv2d(1, channels, 3, padding=1)
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels)
        self.fc = nn.Linear(channels * 5 * 5, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.fc(F.relu(x + y).flatten(1))


def test_residual_block_with_batchnorm():
    torch.manual_seed(1)
    model, graph, x = traced(_randomise_batchnorms(ResidualBlock()), (1, 5, 5))
    assert ops(graph) == ["input", "conv", "conv", "conv", "add", "linear"]  # both BatchNorms folded
    assert graph["add"].inputs == ["stem", "conv2"] and graph["add"].activation == "relu"
    assert np.any(graph["conv1"].bias != 0)  # the BatchNorm shift became a bias
    assert_graph_equals_torch(graph, model, x)


class Inception(nn.Module):
    """Four branches (1x1; 1x1-3x3; 1x1-5x5; 3x3 max-pool-1x1) concatenated along the channels (Szegedy et al. 2015)."""

    def __init__(self, c=2):
        super().__init__()
        self.b1 = nn.Conv2d(c, 2, 1)
        self.b2 = nn.Sequential(nn.Conv2d(c, 2, 1), nn.ReLU(), nn.Conv2d(2, 3, 3, padding=1))
        self.b3 = nn.Sequential(nn.Conv2d(c, 1, 1), nn.ReLU(), nn.Conv2d(1, 2, 5, padding=2))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), nn.Conv2d(c, 1, 1))
        self.fc = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        branches = [self.b1(x), self.b2(x), self.b3(x), self.b4(x)]
        return self.fc(F.relu(torch.cat(branches, 1)).flatten(1))


def test_inception_block_concatenates_its_branches():
    model, graph, x = traced(Inception(), (2, 4, 4))
    cat = graph["cat"]
    assert cat.inputs == ["b1", "b2.2", "b3.2", "b4.1"] and cat.params["sizes"] == (32, 48, 32, 16)
    assert cat.activation == "relu" and cat.out_shape == (8, 4, 4)
    assert_graph_equals_torch(graph, model, x)
    cost = {row.name: row for row in ann_cost(graph).layers}
    assert cost["cat"].macs == 0 and cost["cat"].other_flops == cat.size  # the ReLU only


class DepthwiseSeparable(nn.Module):
    """MobileNet's block: depthwise 3x3 conv-BN-ReLU6, pointwise 1x1 conv-BN-ReLU6 (Howard et al. 2017)."""

    def __init__(self, c_in=3, c_out=4):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, stride=2, padding=1, groups=c_in, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_out, 2)

    def forward(self, x):
        x = F.relu6(self.bn1(self.depthwise(x)))
        x = F.relu6(self.bn2(self.pointwise(x)), inplace=True)
        return self.fc(self.pool(x).flatten(1))


def test_mobilenet_depthwise_separable_block_with_relu6():
    torch.manual_seed(2)
    model, graph, x = traced(_randomise_batchnorms(DepthwiseSeparable()), (3, 8, 8), scale=4.0)
    assert ops(graph) == ["input", "conv", "conv", "avgpool", "linear"]
    assert graph["depthwise"].params["groups"] == 3
    assert [(graph[n].activation, graph[n].params["clip"]) for n in ("depthwise", "pointwise")] == [
        ("clipped_relu", 6.0), ("clipped_relu", 6.0)]
    assert_graph_equals_torch(graph, model, x)


def test_batchnorm_after_relu_and_after_pooling_becomes_affine():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.BatchNorm2d(3), nn.AvgPool2d(2), nn.BatchNorm2d(3),
                          nn.ReLU(), nn.Flatten(), nn.Linear(3 * 2 * 2, 5), nn.ReLU(), nn.BatchNorm1d(5), nn.Linear(5, 2))
    model, graph, x = traced(_randomise_batchnorms(model), (1, 6, 6))
    assert ops(graph) == ["input", "conv", "affine", "avgpool", "affine", "linear", "affine", "linear"]
    affine = graph["2"]
    assert affine.inputs == ["0"] and affine.in_shape == affine.out_shape == (3, 4, 4)
    assert affine.params["scale"].shape == (3,) and affine.params["shift"].shape == (3,)
    assert graph["4"].activation == "relu" and graph["9"].in_shape == (5,)
    assert_graph_equals_torch(graph, model, x)
    cost = {row.name: row for row in ann_cost(graph).layers}
    assert cost["2"].macs == affine.size


def test_batchnorm_after_a_reshaped_linear_layer_becomes_affine():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.bn, self.out = nn.Linear(4, 12), nn.BatchNorm2d(3), nn.Linear(12, 2)

        def forward(self, x):
            return self.out(F.relu(self.bn(self.fc(x).view(-1, 3, 2, 2))).flatten(1))

    torch.manual_seed(4)
    model, graph, x = traced(_randomise_batchnorms(Net()), (4,))
    assert ops(graph) == ["input", "linear", "affine", "linear"] and graph["bn"].in_shape == (3, 2, 2)
    assert_graph_equals_torch(graph, model, x)


def test_an_exported_program_round_trips_through_save_and_load(tmp_path):
    model, graph, x = traced(Inception(), (2, 4, 4))
    path = tmp_path / "inception.pt2"
    torch.export.save(torch.export.export(model, (torch.zeros(1, 2, 4, 4, dtype=torch.float64),)), path)
    loaded = trace(torch.export.load(path), (2, 4, 4))
    assert [(layer.name, layer.op, layer.inputs, layer.activation) for layer in loaded] == [
        (layer.name, layer.op, layer.inputs, layer.activation) for layer in graph]
    assert_graph_equals_torch(loaded, model, x)
    with pytest.raises(ShapeError, match=r"input_shape=\(2, 4, 4\)"):
        trace(torch.export.load(path), (2, 5, 5))


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------

def test_an_unknown_operation_names_the_line_of_forward():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return torch.abs(self.fc(x))  # the line the error names

    with pytest.raises(ConversionError) as info:
        trace(Net(), (3,))
    message = str(info.value)
    assert "'abs'" in message and "test_frontend.py" in message and "return torch.abs(self.fc(x))" in message
    assert "Supported:" in message and "clipped_relu" in message


def test_explicit_padding_is_rejected_with_its_mode():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.conv(F.pad(x, (1, 1, 1, 1), mode="replicate"))

    with pytest.raises(ConversionError, match="replicate"):
        trace(Net(), (1, 5, 5))


def test_data_dependent_control_flow_is_reported_with_the_fix():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            return self.fc(x) if x.sum() > 0 else -x

    with pytest.raises(ConversionError, match="must not branch on tensor values"):
        trace(Branchy(), (3,))
