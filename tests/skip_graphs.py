"""Hand-built layer graphs with skip connections and concatenations, shared by the residual tests.

Graphs are :class:`~brianconv.graph.LayerGraph` records with seeded weights, so that each test
controls depth, join and signs without training a model.
"""

import numpy as np

from brianconv.graph import Layer, LayerGraph


def conv(name, source, in_shape, c_out, rng, kernel=3, activation="relu", clip=None, positive=False):
    """A stride-1 'same' convolution Layer record with seeded weights (non-negative if ``positive``)."""
    padding = kernel // 2
    weight = rng.normal(scale=0.6, size=(c_out, in_shape[0], kernel, kernel))
    bias = rng.normal(scale=0.2, size=c_out)
    if positive:
        weight, bias = np.abs(weight) / in_shape[0], np.abs(bias)
    params = dict(kernel_size=(kernel, kernel), stride=(1, 1), padding=(padding, padding), dilation=(1, 1), groups=1)
    if clip is not None:
        params["clip"] = clip
    return Layer(name, "conv", [source], in_shape, (c_out,) + in_shape[1:], weight, bias, params, activation)


def cat(name, *branches):
    """Channel concatenation of ``branches`` (Layer records of the same H x W)."""
    channels = sum(b.out_shape[0] for b in branches)
    shape = (channels,) + branches[0].out_shape[1:]
    return Layer(name, "cat", [b.name for b in branches], branches[0].out_shape, shape,
                 params=dict(axis=0, sizes=tuple(b.size for b in branches)))


def linear(name, source, n_in, n_out, rng):
    """A Linear Layer record without activation, seeded weights and biases."""
    return Layer(name, "linear", [source], (n_in,), (n_out,), rng.normal(scale=0.3, size=(n_out, n_in)),
                 rng.normal(scale=0.1, size=n_out))


def skip_graph(depth, join, seed, shape, channels=2):
    """x -> c0 -> c1 -> ... -> c<depth>; ``join`` ("add" with ReLU, or "cat") of c<depth> and c0; a linear readout.

    The skip spans ``depth`` convolutions, so the two inputs of the join leave at different depths.
    """
    rng = np.random.default_rng(seed)
    layers = [Layer("x", "input", [], shape, shape), conv("c0", "x", shape, channels, rng)]
    for k in range(1, depth + 1):
        layers.append(conv(f"c{k}", f"c{k - 1}", (channels,) + shape[1:], channels, rng))
    if join == "add":
        joined = Layer("join", "add", [f"c{depth}", "c0"], layers[-1].out_shape, layers[-1].out_shape,
                       activation="relu")
    else:
        joined = cat("join", layers[-1], layers[1])
    layers.append(joined)
    layers.append(linear("out", "join", joined.size, 3, rng))
    return LayerGraph(layers)
