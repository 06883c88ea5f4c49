"""Helpers of the property tests (test_properties.py): the tensor a layer reads from the values its
source carried, ``|W|`` applied to deviations, and the rate scheme's running spike counts and the
exact charge-trajectory bounds of an IF neuron with reset by subtraction.
"""

import dataclasses

import numpy as np
import torch

SLACK = 1e-9   # float rounding of summed charges (a count can differ only at an exact tie)


def inputs_of(snn, layer, carried):
    """The tensor a layer reads: the carried values of its source, through average pools without neurons.

    ``carried[name]`` has shape ``(batch,) + shape`` of the layer ``name`` (any batch size).
    """
    source = snn.graph[layer.inputs[0]]
    chain = []
    while source.name not in carried:
        chain.append(source)
        source = snn.graph[source.inputs[0]]
    value = torch.as_tensor(carried[source.name], dtype=torch.float64)
    with torch.no_grad():
        for pool in reversed(chain):
            value = pool.forward(value)
    return value


def abs_layer(snn, layer, deviations):
    """``|W|`` of a weighted layer (no bias) applied to non-negative per-input deviations, numpy."""
    absolute = dataclasses.replace(layer, weight=np.abs(layer.weight), bias=np.zeros_like(layer.bias),
                                   activation=None)
    with torch.no_grad():
        return absolute.pre_activation(inputs_of(snn, layer, deviations)).numpy()


def running_counts(result, population, n_images, size, steps):
    """``n(k)``: each neuron's spikes up to and including step ``k`` of its window of ``steps`` steps,
    shape (steps, n_images, size)."""
    image, neuron, local = result.spikes[population]
    per_step = np.zeros((n_images, size, steps))
    np.add.at(per_step, (image, neuron, local), 1)
    return np.moveaxis(np.cumsum(per_step, axis=-1), -1, 0)


def count_jitter(result, population, n_images, size, steps):
    """``D``: the largest distance of each neuron's running spike count from the line ``(k + 1) n / T``,
    shape (n_images, size)."""
    running = running_counts(result, population, n_images, size, steps)
    line = np.arange(1, steps + 1)[:, None, None] * running[-1] / steps
    return np.max(np.abs(running - line), axis=0)


def check_charge_trajectory(snn, layer, so_far, counts, scale):
    """A rate layer's count against its charge ``Q(k)``, computed from the source's recorded spike trains.

    ``so_far[name]``: ``lambda n(k) / T`` of every population (the analog input: ``x (k + 1) / T``),
    shape (T, n_images) + shape. ``Q(k) = (T / lambda) W so_far(k) + (k + 1) b / lambda``.
    """
    n, T = counts.shape[0], len(next(iter(so_far.values())))
    no_bias = dataclasses.replace(layer, bias=np.zeros_like(layer.bias), activation=None)
    with torch.no_grad():
        stacked = {name: values.reshape((-1,) + values.shape[2:]) for name, values in so_far.items()}
        weighted = no_bias.pre_activation(inputs_of(snn, layer, stacked)).numpy().reshape(T, n, -1)
        sample = {name: values[0, :1] for name, values in so_far.items()}
        bias = (layer.pre_activation(inputs_of(snn, layer, sample)) - no_bias.pre_activation(
            inputs_of(snn, layer, sample))).numpy().reshape(1, -1)
    steps = np.arange(T)[:, None, None]
    charge = T / scale * weighted + (steps + 1) * bias / scale
    assert np.all(counts <= np.maximum(0, charge.max(axis=0)) + SLACK)
    last_silent = np.min(charge + (T - 1 - steps), axis=0) - 1
    assert np.all((counts == T) | (counts > last_silent - SLACK))
