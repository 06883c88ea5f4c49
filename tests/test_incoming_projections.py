"""incoming_projections: every input of add/mul and every branch of cat reach the reader, exactly."""

import numpy as np
import pytest
import torch

from brianconv.graph import Layer, LayerGraph
from brianconv.schemes.base import incoming_projections, population_names


def _conv(name, source, in_shape, c_out, rng, padding=1):
    weight = rng.normal(size=(c_out, in_shape[0], 3, 3))
    out_shape = (c_out, in_shape[1] + 2 * padding - 2, in_shape[2] + 2 * padding - 2)
    params = dict(kernel_size=(3, 3), stride=(1, 1), padding=(padding, padding), dilation=(1, 1), groups=1)
    return Layer(name, "conv", [source], in_shape, out_shape, weight, rng.normal(size=c_out), params, "relu")


def _branchy_graph(rng):
    """input -> a, b (convs) -> cat -> avgpool -> c (conv); add(c, pooled branch d) -> linear."""
    shape = (2, 6, 6)
    a = _conv("a", "x", shape, 3, rng)
    b = _conv("b", "x", shape, 2, rng)
    cat = Layer("cat", "cat", ["a", "b"], a.out_shape, (5, 6, 6), params=dict(axis=0, sizes=(a.size, b.size)))
    pool = Layer("pool", "avgpool", ["cat"], (5, 6, 6), (5, 3, 3),
                 params=dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0), count_include_pad=True))
    c = _conv("c", "pool", (5, 3, 3), 4, rng)
    d = _conv("d", "x", shape, 4, rng, padding=0)  # (4, 4, 4): pooled to (4, 2, 2) below
    d_pool = Layer("d_pool", "avgpool", ["d"], (4, 4, 4), (4, 3, 3),
                   params=dict(kernel_size=(2, 2), stride=(1, 1), padding=(0, 0), count_include_pad=True))
    add = Layer("add", "add", ["c", "d_pool"], (4, 3, 3), (4, 3, 3), activation="relu")
    out = Layer("out", "linear", ["add"], (4, 3, 3), (5,), rng.normal(size=(5, 36)), rng.normal(size=5))
    x = Layer("x", "input", [], shape, shape)
    return LayerGraph([x, a, b, cat, pool, c, d, d_pool, add, out])


def _forward(graph, x):
    """Every layer's output, shape (N, *out_shape); ``cat`` concatenates the flattened inputs (channel-major)."""
    values = {graph.input.name: torch.as_tensor(x)}
    for layer in graph.layers[1:]:
        inputs = [values[name] for name in layer.inputs]
        if layer.op == "cat":
            values[layer.name] = torch.cat([v.flatten(1) for v in inputs], 1).reshape((len(x),) + layer.out_shape)
        else:
            values[layer.name] = layer.forward(*inputs)
    return {name: value.numpy() for name, value in values.items()}


def test_every_branch_and_term_reaches_the_reader_exactly():
    rng = np.random.default_rng(0)
    graph = _branchy_graph(rng)
    names = population_names(graph)
    x = rng.uniform(size=(3, 2, 6, 6))
    values = _forward(graph, x)
    by_population = {names[layer.name]: values[layer.name].reshape(len(x), -1) for layer in graph}
    readers = dict()
    for layer, incoming in incoming_projections(graph, names):
        readers[layer.name] = [source for source, _ in incoming]
        summed = sum(connections.apply(by_population[source]) for source, connections in incoming)
        bias = 0 if layer.bias is None else np.repeat(layer.bias, layer.size // len(layer.bias))
        expected = values[layer.name].reshape(len(x), -1)
        if layer.activation == "relu":
            np.testing.assert_allclose(np.maximum(summed + bias, 0), expected, atol=1e-12)
        else:
            np.testing.assert_allclose(summed + bias, expected, atol=1e-12)
    assert "cat" not in readers and "pool" not in readers and "d_pool" not in readers
    assert readers["c"] == [names["a"], names["b"]]
    assert readers["add"] == [names["c"], names["d"]]


def test_single_input_layers_match_projected_layers():
    from brianconv.schemes.base import projected_layers

    rng = np.random.default_rng(1)
    shape = (1, 5, 5)
    conv = _conv("c", "x", shape, 2, rng)
    pool = Layer("p", "avgpool", ["c"], (2, 5, 5), (2, 2, 2),
                 params=dict(kernel_size=(2, 2), stride=(2, 2), padding=(0, 0), count_include_pad=True))
    out = Layer("o", "linear", ["p"], (2, 2, 2), (3,), rng.normal(size=(3, 8)), np.zeros(3))
    graph = LayerGraph([Layer("x", "input", [], shape, shape), conv, pool, out])
    names = population_names(graph)
    old = list(projected_layers(graph, names))
    new = list(incoming_projections(graph, names))
    assert [layer.name for layer, *_ in old] == [layer.name for layer, _ in new]
    for (_, source, connections), (_, incoming) in zip(old, new):
        assert incoming[0][0] == source
        for field in ("pre", "post", "weight"):
            np.testing.assert_array_equal(getattr(incoming[0][1], field), getattr(connections, field))


@pytest.mark.parametrize("op", ["add", "mul"])
def test_both_inputs_are_followed(op):
    rng = np.random.default_rng(2)
    shape = (4,)
    a = Layer("a", "linear", ["x"], shape, (4,), rng.normal(size=(4, 4)), np.zeros(4), activation="relu")
    b = Layer("b", "linear", ["x"], shape, (4,), rng.normal(size=(4, 4)), np.zeros(4), activation="relu")
    params = dict(second_size=4) if op == "mul" else {}
    both = Layer("ab", op, ["a", "b"], (4,), (4,), params=params)
    graph = LayerGraph([Layer("x", "input", [], shape, shape), a, b, both])
    names = population_names(graph)
    (_, _), (_, _), (layer, incoming) = list(incoming_projections(graph, names))
    assert [source for source, _ in incoming] == [names["a"], names["b"]]
