"""Calibration: record ANN activations on data and derive each layer's activation scale.

Rueckauer et al. (2017) normalise weights layer by layer by the maximum activation, or better by
the p-th percentile of the non-zero activations (p = 99.9 by default), which ignores rare
outliers. brianconv keeps the ANN weights as they are and stores the scales ``lambda_l``; a
scheme turns them into thresholds (``v_th = lambda_l * v_unit``) or into normalised weights
``W_l * lambda_(l-1) / lambda_l`` and biases ``b_l / lambda_l`` (:func:`normalised_parameters`).
"""

import warnings
from dataclasses import dataclass, field

import numpy as np

from .errors import AccuracyWarning, CalibrationError, InvalidValueError

__all__ = ["Calibration", "calibrate", "activation_scale", "normalised_parameters"]


@dataclass
class Calibration:
    """Activation scales of every layer.

    Attributes
    ----------
    scales : dict
        ``layer name -> lambda`` (float, ANN units): the activation value mapped to the top of
        the spiking code (threshold). Pooling layers inherit their source's scale.
    percentile : float
        The percentile used (100 means the maximum).
    n_samples : int
        Number of calibration samples.
    clipped : dict
        ``layer name -> fraction`` of that layer's calibration activations above its scale.
    """

    scales: dict
    percentile: float
    n_samples: int
    clipped: dict = field(default_factory=dict)


def activation_scale(values, percentile=99.9):
    """The ``percentile`` of the positive entries of ``values`` (the maximum for 100).

    Returns 1.0 (with no effect on the network) when no entry is positive: a layer that never
    activates on the calibration data.
    """
    positive = np.asarray(values, dtype=np.float64).ravel()
    positive = positive[positive > 0]
    if positive.size == 0:
        return 1.0
    return float(np.percentile(positive, percentile)) if percentile < 100 else float(positive.max())


def calibrate(graph, x, percentile=99.9):
    """Run the ANN on calibration data ``x`` and return a :class:`Calibration`.

    Parameters
    ----------
    graph : brianconv.graph.LayerGraph
    x : array or tensor, shape (N, *input_shape)
        Calibration samples (a few hundred training images are plenty).
    percentile : float in (0, 100]
        Percentile of the non-zero activations used as each layer's scale.
    """
    if x is None:
        raise CalibrationError("This scheme needs calibration data: pass calibration=<a few hundred training "
                               "samples, shape (N, *input_shape)> to convert().")
    if not 0 < percentile <= 100:
        raise InvalidValueError(f"percentile must be in (0, 100], got {percentile}.")
    if len(x) == 0:
        raise CalibrationError("The calibration data is empty; pass at least one sample (a few hundred is better).")
    _, activations = graph.forward(x, record=True)
    scales, clipped = {}, {}
    for layer in graph:
        if layer.op in ("maxpool", "avgpool") and layer.activation in (None, "relu"):
            scales[layer.name] = scales[layer.inputs[0]]
        else:
            scales[layer.name] = activation_scale(activations[layer.name], percentile)
        clipped[layer.name] = float(np.mean(activations[layer.name] > scales[layer.name]))
        if layer is not graph.output and not np.any(activations[layer.name] > 0):
            warnings.warn(f"Layer {layer.name!r} is never active on the {len(x)} calibration samples; its neurons "
                          "will stay silent. Use more or more representative calibration data.", AccuracyWarning,
                          stacklevel=2)
    return Calibration(scales, float(percentile), len(x), clipped)


def normalised_parameters(graph, calibration):
    """Weights and biases normalised by the activation scales (Rueckauer et al. 2017, Eq. 11).

    Returns
    -------
    dict
        ``layer name -> (weight, bias)`` for every weighted layer, with
        ``weight = W * lambda_source / lambda_layer`` and ``bias = b / lambda_layer``.
        The output layer is scaled like the others, so its values keep their argmax.
    """
    params = {}
    for layer in graph:
        if layer.is_weighted:
            source_scale = calibration.scales[layer.inputs[0]]
            scale = calibration.scales[layer.name]
            params[layer.name] = (layer.weight * source_scale / scale, layer.bias / scale)
    return params
