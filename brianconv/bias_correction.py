"""Layer-wise bias correction of a converted network (Li et al. 2021), for every scheme.

A converted layer carries its ANN activation with a coding error. Part of that error is noise, but
part of it is systematic: a rate neuron's count is rounded down (``floor``), a neuron that should
stay silent fires on an early transient, and a time code rounds spike times. In a network whose
folded weights have a high gain (BatchNorm after depthwise convolutions, as in MobileNets) the
systematic part of one layer is amplified by the next, and the deep layers drift far from the
ANN. Li, Deng, Dong, Gong and Gu (*A free lunch from ANN: towards efficient, accurate spiking
neural networks calibration*, ICML 2021) correct it with the calibration data:

for each spiking layer ``l`` in order, simulate the network, decode what the layer carries
(``v``, in ANN units, :meth:`brianconv.SpikingNetwork.values`) and add to the layer's bias the mean
error of each output channel over the calibration images and positions::

    b_c  <-  b_c + mean_(n, h, w) ( min(a_nchw, lambda_l) - v_nchw )

where ``a`` is the ANN activation and ``lambda_l`` the layer's calibrated scale (what the code can
carry at most: saturation is the percentile's chosen trade-off, not a coding error). Layer ``l + 1``
is measured after ``l`` is corrected, so each correction sees the errors that remain. For a neuron
in its linear range the correction shifts its value by exactly the mean error; it cannot remove
the noise around that mean, nor errors of neurons at the ReLU's kink.

What is corrected: the populations that carry one weighted layer (``Linear``/``Conv2d``) unit by
unit. Sums of residual branches, pools and the output are left as they are (the output's mean error
shifts every class and is no argmax error). The calibrated scales, the weights and the compiled
structure are unchanged; only biases differ, so each step's network is built again (``iterations`` times the
corrected layers, each a simulation of the calibration images).
"""

from dataclasses import replace

import numpy as np

from .conversion import describe
from .errors import CalibrationError, InvalidValueError
from .graph import LayerGraph
from .network import SpikingNetwork

__all__ = ["correct_biases", "correctable_layers"]


def correctable_layers(snn):
    """``[(population, layer name), ...]``, in network order: the hidden populations that carry one
    weighted layer of ``snn.described_graph`` unit by unit (the ones :func:`correct_biases` corrects)."""
    graph = snn.described_graph
    found = []
    for p in snn.description.populations:
        if p.role != "hidden" or p.layer not in graph.by_name:
            continue
        layer = graph[p.layer]
        if layer.is_weighted and p.size == layer.size and p.layer in snn.calibration.scales:
            found.append((p.name, p.layer))
    return found


def correct_biases(snn, x, images=None, iterations=2, device="cpp_standalone", n_workers=1, batch_size=None,
                   build_root=None):
    """A copy of ``snn`` whose hidden layers' biases cancel each layer's mean coding error per channel.

    Parameters
    ----------
    snn : brianconv.SpikingNetwork
        A converted network (any scheme whose hidden populations decode,
        :meth:`~brianconv.SpikingNetwork.values`).
    x : array or tensor, shape (N, *input_shape)
        Calibration inputs, preprocessed like the data given to ``convert`` (e.g. the same training
        images, never the test set).
    images : int, optional
        Use the first ``images`` of ``x`` (default: all of them); a few hundred are enough.
    iterations : int
        Corrections of each layer before the next (2). A correction also wakes or silences neurons near
        the ReLU's kink, so one step leaves part of the mean error; a second removes most of it.
    device, n_workers, batch_size, build_root
        As in :meth:`~brianconv.SpikingNetwork.simulate`; one build and simulation per corrected layer and
        iteration.

    Returns
    -------
    SpikingNetwork
        The corrected network. Its attribute ``bias_corrections`` maps each corrected layer to the
        change of its bias per output channel (ANN units, shape ``(C_out,)``, or ``(n_out,)`` for
        a linear layer).

    Raises
    ------
    brianconv.errors.CalibrationError
        When ``x`` holds no samples.
    brianconv.errors.InvalidValueError
        When ``images`` is not a positive integer or the network has no layer to correct.
    """
    x = snn.graph.check_input(x)
    if images is not None:
        if int(images) != images or images < 1:
            raise InvalidValueError(f"images must be a positive integer, got {images!r}.")
        x = x[:int(images)]
    if int(iterations) != iterations or iterations < 1:
        raise InvalidValueError(f"iterations must be a positive integer, got {iterations!r}.")
    if len(x) == 0:
        raise CalibrationError("Bias correction needs calibration inputs; x holds none.")
    layers = correctable_layers(snn)
    if not layers:
        raise InvalidValueError(f"The {snn.scheme.name} network has no hidden population that carries a Linear or "
                                "Conv2d layer unit by unit: there is no bias to correct.")
    targets = _ann_targets(snn, x, [layer for _, layer in layers])
    corrected = snn
    corrections = dict(getattr(snn, "bias_corrections", {}))  # a corrected network corrected again: they add up
    for population, layer in layers:
        for _ in range(iterations):
            result = corrected.simulate(x, device=device, n_workers=n_workers, batch_size=batch_size,
                                        build_root=build_root, spikes=[population])
            carried = corrected.values(result, population).reshape(targets[layer].shape)
            change = channel_means(targets[layer] - carried)
            corrected = _with_bias_change(corrected, layer, change)
            corrections[layer] = corrections.get(layer, 0.0) + change
    corrected.bias_corrections = corrections
    return corrected


def channel_means(values):
    """Mean over images and positions per channel: ``values`` (N, C, H, W) -> (C,); (N, n) -> (n,)."""
    return values.mean(axis=(0,) + tuple(range(2, values.ndim)))


def _ann_targets(snn, x, layers):
    """What each layer should carry, ``min(a, lambda)`` (N, *out_shape), from the ANN's forward pass
    (``snn.graph``: never the corrected graph, so that correcting a corrected network aims at the ANN)."""
    _, activations = snn.graph.forward(x, record=True)
    return {layer: np.minimum(activations[layer], snn.calibration.scales[layer]) for layer in layers}


def _with_bias_change(snn, layer_name, change):
    """A copy of ``snn`` described again with ``change`` (per output channel) added to the bias of ``layer_name``."""
    graph = snn.described_graph
    layer = graph[layer_name]
    bias = np.zeros(layer.out_shape[0]) if layer.bias is None else layer.bias
    per_channel = change.reshape((-1,) + (1,) * (bias.ndim - 1))  # a per-neuron bias (C, H, W) shifts per channel
    new_layer = replace(layer, bias=bias + per_channel)
    new_graph = LayerGraph([new_layer if other.name == layer_name else other for other in graph], head=graph.head)
    description = describe(snn.scheme, new_graph, snn.calibration, snn.description.perturbations,
                           snn.description.precision)
    return SpikingNetwork(snn.graph, snn.scheme, snn.calibration, description, input_shift=snn.input_shift,
                          described_graph=new_graph)
