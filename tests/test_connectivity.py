"""Connectivity: the index arrays, run as real Brian2 synapses, reproduce the torch layers.

Brian2 runs on its runtime device with the numpy target (no compilation): a source
``NeuronGroup`` holds the input values, a target group sums ``w * x_pre`` over its synapses
(a summed variable), and one step of an explicit ``Network`` gives ``W x``. Adding the bias must
give the torch layer's pre-activation; the only error is float64 summation order (``1e-6`` is
many orders of magnitude above it and far below any wrong index or weight).
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings, assume, strategies as st

from brian2 import Network, NeuronGroup, Synapses, defaultclock, prefs
from brian2.devices.device import get_device, reset_device

from brianconv.connectivity import Connections, compose, connections_for, conv2d, linear, one_to_one, pool2d
from brianconv.errors import ConversionError
from brianconv.graph import trace

ATOL = 1e-6


@pytest.fixture
def numpy_runtime():
    """Brian2's runtime device with the numpy code generation target, restored afterwards."""
    previous_device = get_device()
    previous_target = prefs.codegen.target
    reset_device("runtime")
    prefs.codegen.target = "numpy"
    yield
    prefs.codegen.target = previous_target
    reset_device(previous_device)


def brian2_apply(connections, x):
    """``W x`` for a batch ``x`` (N, n_pre), computed by Brian2 synapses (one network, N copies)."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    n, n_pre, n_post = len(x), connections.n_pre, connections.n_post
    offsets = np.arange(n)[:, None]
    source = NeuronGroup(n * n_pre, "x : 1")
    source.x = x.ravel()
    target = NeuronGroup(n * n_post, "y : 1")
    synapses = Synapses(source, target, model="w : 1\ny_post = w * x_pre : 1 (summed)")
    synapses.connect(i=(connections.pre[None, :] + offsets * n_pre).ravel(),
                     j=(connections.post[None, :] + offsets * n_post).ravel())
    synapses.w = np.tile(connections.weight, n)
    network = Network(source, target, synapses)
    network.run(defaultclock.dt, namespace={})
    return np.asarray(target.y[:]).reshape(n, n_post)


def channel_bias(layer):
    """The layer's bias repeated over its neurons (one value per output channel)."""
    return np.repeat(layer.bias, layer.size // len(layer.bias))


def torch_out(module, x):
    with torch.no_grad():
        return module.double()(torch.as_tensor(x, dtype=torch.float64)).reshape(len(x), -1).numpy()


# ---------------------------------------------------------------------------------------------
# weighted layers through Brian2
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_in, n_out", [(1, 1), (7, 3), (13, 9)])
def test_linear_in_brian2(numpy_runtime, n_in, n_out):
    module = nn.Linear(n_in, n_out).eval()
    graph = trace(module, (n_in,))
    layer = graph.layers[1]
    [connections] = connections_for(layer, source_size=n_in)
    assert len(connections) == n_in * n_out
    x = np.random.randn(3, n_in)
    y = brian2_apply(connections, x) + channel_bias(layer)
    np.testing.assert_allclose(y, torch_out(module, x), rtol=0, atol=ATOL)


@pytest.mark.parametrize("kwargs, in_hw", [
    (dict(in_channels=2, out_channels=3, kernel_size=3), (6, 7)),
    (dict(in_channels=2, out_channels=4, kernel_size=(3, 2), stride=(2, 3), padding=(1, 2)), (7, 8)),
    (dict(in_channels=3, out_channels=2, kernel_size=3, dilation=(2, 1), padding=2), (7, 6)),
    (dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, stride=2, padding=1), (7, 7)),
    (dict(in_channels=3, out_channels=3, kernel_size=3, groups=3, padding=1), (5, 6)),                # depthwise
    (dict(in_channels=2, out_channels=4, kernel_size=2, groups=2, dilation=2, stride=2), (8, 7)),     # depthwise x2
], ids=["plain", "stride-pad", "dilation", "groups", "depthwise", "depthwise-dilated"])
def test_conv2d_in_brian2(numpy_runtime, kwargs, in_hw):
    module = nn.Conv2d(**kwargs).eval()
    shape = (kwargs["in_channels"],) + in_hw
    layer = trace(module, shape).layers[1]
    [connections] = connections_for(layer)
    x = np.random.randn(2, *shape)
    y = brian2_apply(connections, x) + channel_bias(layer)
    np.testing.assert_allclose(y, torch_out(module, x), rtol=0, atol=ATOL)
    # no synapse for padding: a neuron's fan-in is the conv of an all-ones image with an all-ones kernel
    ones = nn.Conv2d(**kwargs, bias=False).double()
    nn.init.ones_(ones.weight)
    np.testing.assert_array_equal(connections.fan_in(), torch_out(ones, np.ones((1,) + shape))[0])


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 1))])
def test_avgpool2d_in_brian2(numpy_runtime, kernel, stride, padding, count_include_pad):
    module = nn.AvgPool2d(kernel, stride, padding, count_include_pad=count_include_pad)
    layer = trace(module, (3, 7, 6)).layers[1]
    [connections] = connections_for(layer)
    x = np.random.randn(2, 3, 7, 6)
    np.testing.assert_allclose(brian2_apply(connections, x), torch_out(module, x), rtol=0, atol=ATOL)


def test_conv_then_flatten_then_linear_in_brian2(numpy_runtime):
    """The conv's target numbering is the linear layer's source numbering (torch's flatten order)."""
    model = nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Flatten(), nn.Linear(3 * 4 * 3, 5)).eval()
    graph = trace(model, (2, 7, 5))
    conv, fc = graph.layers[1], graph.layers[2]
    assert fc.in_shape == (36,) and graph.consumers(conv.name) == [fc]
    x = np.random.randn(3, 2, 7, 5)
    hidden = brian2_apply(connections_for(conv)[0], x) + channel_bias(conv)
    np.testing.assert_allclose(hidden, torch_out(model[0], x), rtol=0, atol=ATOL)
    out = brian2_apply(connections_for(fc, source_size=conv.size)[0], hidden) + fc.bias
    np.testing.assert_allclose(out, torch_out(model, x), rtol=0, atol=ATOL)


def test_residual_add_is_one_to_one():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return x + self.fc(x)

    add = trace(Net(), (4,)).output
    assert add.op == "add" and add.inputs == ["x", "fc"]
    for connections in connections_for(add):
        np.testing.assert_array_equal(connections.dense(), np.eye(4))


# ---------------------------------------------------------------------------------------------
# max pooling: the maximum over each target's synapses
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel, stride, padding", [(2, 2, 0), (3, 2, 1), (3, 1, 1), ((2, 3), (2, 1), (1, 1))])
def test_maxpool2d_is_the_max_over_synapses(kernel, stride, padding):
    module = nn.MaxPool2d(kernel, stride, padding)
    layer = trace(module, (3, 7, 6)).layers[1]
    [connections] = connections_for(layer)
    assert np.all(connections.weight == 1)
    x = np.random.randn(4, 3 * 7 * 6)  # negative values: padding must not act as zeros
    y = np.full((4, connections.n_post), -np.inf)
    np.maximum.at(y.T, connections.post, x[:, connections.pre].T)
    np.testing.assert_array_equal(y, torch_out(module, x.reshape(4, 3, 7, 6)))


# ---------------------------------------------------------------------------------------------
# compose, fan-in and fan-out, dense
# ---------------------------------------------------------------------------------------------

def test_compose_pool_then_conv_equals_applying_both():
    pool_module = nn.AvgPool2d(2, count_include_pad=False, padding=1)
    conv_module = nn.Conv2d(2, 3, 2, bias=False)
    model = nn.Sequential(pool_module, conv_module).eval()
    graph = trace(model, (2, 7, 7))
    pool, conv = (connections_for(layer)[0] for layer in graph.layers[1:])
    both = compose(pool, conv)
    assert (both.n_pre, both.n_post) == (pool.n_pre, conv.n_post)
    assert len(both) < len(pool) * len(conv)
    x = np.random.randn(5, 2 * 7 * 7)
    np.testing.assert_allclose(both.apply(x), conv.apply(pool.apply(x)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(both.apply(x), torch_out(model, x.reshape(5, 2, 7, 7)), rtol=0, atol=1e-12)
    np.testing.assert_allclose(both.dense(), conv.dense() @ pool.dense(), rtol=0, atol=1e-12)
    # no duplicate synapses: each (pre, post) pair appears once
    assert len(np.unique(both.pre.astype(np.int64) * both.n_post + both.post)) == len(both)


def test_compose_rejects_mismatched_sizes():
    with pytest.raises(ConversionError, match="Cannot compose"):
        compose(one_to_one(3), one_to_one(4))


@pytest.mark.parametrize("connections", [
    linear(np.ones((3, 5))),
    conv2d(np.ones((4, 1, 3, 3)), (2, 6, 5), (4, 3, 2), stride=(2, 2), padding=(1, 0), groups=2),
    conv2d(np.ones((2, 2, 2, 2)), (2, 5, 5), (2, 3, 3), dilation=(2, 2)),
    pool2d((2, 5, 5), (2, 3, 3), (3, 3), (2, 2), (1, 1), average=False),
    pool2d((1, 6, 6), (1, 3, 3), (2, 2), (2, 2), average=True),
], ids=["linear", "conv-groups", "conv-dilated", "maxpool-pad", "avgpool"])
def test_fan_in_and_fan_out_match_the_dense_matrix(connections):
    structure = (connections.dense() != 0).astype(int)
    np.testing.assert_array_equal(connections.fan_in(), structure.sum(axis=1))
    np.testing.assert_array_equal(connections.fan_out(), structure.sum(axis=0))
    assert connections.fan_in().sum() == connections.fan_out().sum() == len(connections)
    assert connections.fan_in().shape == (connections.n_post,) and connections.fan_out().shape == (connections.n_pre,)


def test_fan_in_of_a_padded_conv_counts_valid_kernel_positions():
    # 1 input channel, 3x3 kernel, padding 1 on a 4x4 image: corners see 4, edges 6, inside 9 inputs
    connections = conv2d(np.ones((1, 1, 3, 3)), (1, 4, 4), (1, 4, 4), padding=(1, 1))
    expected = np.array([[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]).ravel()
    np.testing.assert_array_equal(connections.fan_in(), expected)
    np.testing.assert_array_equal(connections.fan_out(), expected)  # symmetric kernel, same size


def test_index_arrays_are_int32_and_in_range():
    c = conv2d(np.random.randn(3, 2, 3, 3), (2, 6, 6), (3, 4, 4))
    assert isinstance(c, Connections)
    assert c.pre.dtype == np.int32 and c.post.dtype == np.int32 and c.weight.dtype == np.float64
    assert c.pre.min() >= 0 and c.pre.max() < c.n_pre and c.post.min() >= 0 and c.post.max() < c.n_post


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ConversionError, match="expects 5 inputs"):
        linear(np.ones((3, 5)), n_pre=4)
    with pytest.raises(ConversionError, match="groups=2"):
        conv2d(np.ones((4, 1, 3, 3)), (3, 6, 6), (4, 4, 4), groups=2)


# ---------------------------------------------------------------------------------------------
# random conv geometries
# ---------------------------------------------------------------------------------------------

@st.composite
def conv_geometries(draw):
    groups = draw(st.integers(1, 4))
    c_in = groups * draw(st.integers(1, 4 // groups))
    c_out = groups * draw(st.integers(1, 4 // groups))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    size = (draw(st.integers(5, 10)), draw(st.integers(5, 10)))
    seed = draw(st.integers(0, 2 ** 16))
    return c_in, c_out, groups, kernel, stride, padding, dilation, size, seed


@settings(max_examples=25, deadline=None, derandomize=True)
@given(conv_geometries())
def test_random_conv_geometries_match_torch(geometry):
    c_in, c_out, groups, kernel, stride, padding, dilation, size, seed = geometry
    for k in range(2):  # the kernel must fit the padded input
        assume(size[k] + 2 * padding[k] >= dilation[k] * (kernel[k] - 1) + 1)
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((c_out, c_in // groups) + kernel)
    x = rng.standard_normal((3, c_in) + size)
    expected = F.conv2d(torch.as_tensor(x), torch.as_tensor(weight), None, stride, padding, dilation, groups)
    connections = conv2d(weight, (c_in,) + size, tuple(expected.shape[1:]), stride, padding, dilation, groups)
    assert connections.n_post == expected[0].numel()
    np.testing.assert_allclose(connections.apply(x), expected.reshape(3, -1).numpy(), rtol=0, atol=1e-12)
