"""Exact folding of per-channel affine maps into the weighted layers that read them.

Two graph passes share one piece of algebra:

* :func:`fold_affine_layers` removes every ``affine`` layer (a per-channel ``y = scale * x + shift``
  that does not directly follow a weighted layer, e.g. a BatchNorm after a ReLU);
* :func:`fold_input_shift` lets a network trained on normalised inputs (negative background, e.g.
  ``Normalize((0.1307,), (0.3081,))``) receive ``x' = x - low >= 0``, which every spiking code
  can carry: the shift is an affine map with ``scale = 1`` and ``shift = low``;

and one pass moves pooling: :func:`pool_branches_before_concatenation` rewrites
``pool(cat(a, b))`` as ``cat(pool(a), pool(b))`` (pooling never mixes channels, so both are the
same function), so that every scheme meets max-pooling right after the layers it pools.

The algebra. A weighted layer reads ``v = a * u + s`` (``a``, ``s`` one value per channel of
``v``, ``u`` the new input). For a linear layer ``W' = W diag(a)`` and ``b' = b + W s``. For a
conv, ``W'[o, i] = W[o, i] * a[c(o, i)]`` (``c`` the input channel of kernel slice ``i`` of
output channel ``o``, groups included) and, since zero padding is linear,
``conv(pad(v)) = conv(pad(a u)) + conv(pad(s))``: the bias becomes
``b'(o, y, x) = conv2d(s broadcast to the input map, W, b)`` with the layer's stride, padding,
dilation and groups. With padding the padded pixels contribute nothing while the others contribute
``W s``, so ``b'`` is **one value per neuron** (shape ``out_shape``); without padding it is one
value per channel. Everything is computed in float64, exactly.

The input shift also passes through pooling that commutes with a per-channel constant (without
activation): max-pooling (torch pads it with ``-inf``) and average pooling without padding or with
``count_include_pad=False``. Anything else that reads the input (an average pool counting padded
zeros, an element-wise sum or product, the output) raises
:class:`~brianconv.errors.ConversionError`. Affine layers fold into Linear/Conv2d layers only.

:class:`InputShift` holds each input channel's bounds, ``low`` (found from the calibration data or
given as ``input_range``) and ``high``, and applies the shift at simulation time: values below
``low`` are clipped to it, and values far above ``high`` are reported, each with an
:class:`~brianconv.errors.AccuracyWarning` that gives the fraction concerned.
"""

import warnings
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .errors import AccuracyWarning, ConversionError, InvalidValueError, ShapeError
from .graph import LayerGraph

__all__ = ["ABOVE_RANGE_FACTOR", "InputShift", "fold_affine_layers", "fold_input_shift", "input_shift_for",
           "pool_branches_before_concatenation"]

#: Input values whose distance above ``low`` exceeds this factor times the calibrated range
#: ``high - low`` are reported (:meth:`InputShift.apply`); the codes saturate near ``high``.
ABOVE_RANGE_FACTOR = 1.1


# ---------------------------------------------------------------------------------------------
# the input's bounds
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class InputShift:
    """Per-channel bounds of the network input, in the units of the user's (normalised) data.

    The spiking network receives ``x - low`` (channel = axis 0 of one sample, ``(C, H, W)`` or
    ``(F,)``); the shift is folded into the first weighted layer(s) by :func:`fold_input_shift`.

    Attributes
    ----------
    low, high : np.ndarray, shape (C,)
        Lower and upper bound of every input channel (float64, ``low < high`` or equal for a
        constant calibration channel).
    """

    low: np.ndarray
    high: np.ndarray

    @property
    def is_identity(self):
        """True when the shift is zero (non-negative data): the network is left as it is."""
        return not np.any(self.low)

    def apply(self, x):
        """The network's input ``x - low``, clipped at 0, shape ``(N, *input_shape)`` float64.

        Warns (:class:`~brianconv.errors.AccuracyWarning`) with the fraction of values below
        ``low`` (clipped) and of values above ``low + ABOVE_RANGE_FACTOR * (high - low)``.
        """
        low, high = (_per_element(bound, x.shape[1:]) for bound in (self.low, self.high))
        below = float(np.mean(x < low))
        if below > 0:
            warnings.warn(f"{100 * below:.3g} % of the input values lie below the input's lower bound (per channel, "
                          f"minimum {self.low.min():.4g}) and were clipped to it. Pass input_range=(low, high) "
                          "covering the data, or calibration data with the same range, to brianconv.convert().",
                          AccuracyWarning, stacklevel=3)
        above = float(np.mean(x - low > ABOVE_RANGE_FACTOR * (high - low)))
        if above > 0:
            warnings.warn(f"{100 * above:.3g} % of the input values exceed the input's calibrated range [low, high] "
                          f"by more than {ABOVE_RANGE_FACTOR - 1:.0%} of its width: the input code saturates there. "
                          "Pass input_range=(low, high) covering the data, or calibration data with the same range, "
                          "to brianconv.convert().", AccuracyWarning, stacklevel=3)
        return np.maximum(x - low, 0.0)


def input_shift_for(x, input_range=None):
    """The :class:`InputShift` of calibration data ``x``, or of a range given by the user.

    Parameters
    ----------
    x : np.ndarray, shape (N, *input_shape)
        Calibration data, normalised as in training.
    input_range : (low, high), optional
        Each a scalar or a sequence with one value per input channel (axis 0 of a sample; for
        flat inputs ``(F,)`` every feature is a channel, so give scalars when the features share
        one normalisation). Without it, ``low = min(0, minimum of the channel)`` and ``high`` = the channel's maximum,
        so non-negative data gets ``low = 0`` (no shift).

    Raises
    ------
    InvalidValueError
        For a malformed ``input_range``: not a pair, wrong length, NaN/Inf, or ``low >= high``.
    """
    channels = x.shape[1]
    if input_range is None:
        per_channel = np.moveaxis(x, 1, 0).reshape(channels, -1)
        return InputShift(np.minimum(per_channel.min(axis=1), 0.0), per_channel.max(axis=1))
    if isinstance(input_range, (str, bytes)) or not hasattr(input_range, "__len__") or len(input_range) != 2:
        raise InvalidValueError(f"input_range must be a pair (low, high), got {input_range!r}; e.g. "
                                "input_range=(-0.4242, 2.8215) for MNIST normalised with mean 0.1307, std 0.3081.")
    low, high = (_channel_values(name, value, channels) for name, value in zip(("low", "high"), input_range))
    if np.any(low >= high):
        bad = int(np.argmax(low >= high))
        raise InvalidValueError(f"input_range: low must be below high in every channel; channel {bad} has low "
                                f"{low[bad]:.4g} >= high {high[bad]:.4g}.")
    return InputShift(low, high)


def _channel_values(name, value, channels):
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidValueError(f"input_range {name} must be a number or one number per input channel, got "
                                f"{value!r}.") from None
    if array.ndim > 1 or (array.ndim == 1 and len(array) != channels):
        raise InvalidValueError(f"input_range {name} has shape {array.shape}; give a scalar or one value per input "
                                f"channel ({channels},).")
    if not np.all(np.isfinite(array)):
        raise InvalidValueError(f"input_range {name} must be finite, got {value!r}.")
    return np.broadcast_to(array, (channels,)).copy()


def _per_element(per_channel, shape):
    """A per-channel vector ``(C,)`` broadcast over a sample of shape ``(C, ...)``."""
    return np.broadcast_to(np.reshape(per_channel, (-1,) + (1,) * (len(shape) - 1)), shape)


# ---------------------------------------------------------------------------------------------
# graph passes
# ---------------------------------------------------------------------------------------------

def fold_affine_layers(graph):
    """Remove every ``affine`` layer, folding it exactly into the weighted layers that read it.

    Parameters
    ----------
    graph : LayerGraph
        May hold layers ``Layer(name, "affine", params=dict(scale=(C,), shift=(C,)))`` meaning
        ``y = scale * x + shift`` per channel (axis 0 of the sample shape).

    Returns
    -------
    LayerGraph
        ``graph`` itself when it has no affine layer; otherwise a new graph computing the same
        function (float64) without them. ``graph`` is not modified.

    Raises
    ------
    ConversionError
        For an affine layer with an activation, or read by anything other than Linear/Conv2d
        (pooling, add, mul, the output).
    """
    affines = [layer for layer in graph if layer.op == "affine"]
    if not affines:
        return graph
    layers = list(graph.layers)
    for affine in reversed(affines):  # the last first, so that a chain of affine layers folds too
        scale, shift = _affine_parameters(affine)
        if affine.activation is not None:
            raise ConversionError(f"Affine layer {affine.name!r} (e.g. a BatchNorm not directly after a Linear/Conv2d) "
                                  f"applies {affine.activation!r}; brianconv folds it into the next weighted layer, "
                                  "which needs it without activation. Move the activation before it.")
        if affine.name == layers[-1].name:
            raise ConversionError(f"Affine layer {affine.name!r} is the model's output; brianconv folds affine layers "
                                  "into the next Linear/Conv2d layer. Place it before one.")
        what = (f"Affine layer {affine.name!r} (e.g. a BatchNorm not directly after a Linear/Conv2d)",
                "it can only be folded into a Linear or Conv2d layer that reads it; put it right before one")
        layers = _fold(layers, affine.name, affine.out_shape, scale, shift, what, through_pools=False)
        layers = [_renamed(layer, affine.name, affine.inputs[0]) for layer in layers if layer is not affine]
    return LayerGraph(layers, head=graph.head)


def pool_branches_before_concatenation(graph):
    """``pool(cat(a, b, ...))`` rewritten as ``cat(pool(a), pool(b), ...)``, exactly.

    A 2-d pooling layer (max or average) whose input is a channel concatenation is replaced by one
    pooling layer per branch (named ``<pool>.<k>``, the same geometry) and a concatenation named
    like the pool (so its readers are unchanged) that carries the pool's activation. Pooling acts
    on every channel separately, so the two graphs compute the same function; the concatenation
    itself stays in the graph while other layers read it.

    Returns
    -------
    LayerGraph
        ``graph`` itself when no pooling layer reads a concatenation, else a new graph.
    """
    if not any(layer.op in ("maxpool", "avgpool") and graph[layer.inputs[0]].op == "cat" for layer in graph):
        return graph
    layers = []
    for layer in graph:
        cat = graph[layer.inputs[0]] if layer.inputs else None
        if layer.op not in ("maxpool", "avgpool") or cat.op != "cat":
            layers.append(layer)
            continue
        pooled = [replace(layer, name=f"{layer.name}.{k}", inputs=[branch], in_shape=graph[branch].out_shape,
                          out_shape=(graph[branch].out_shape[0],) + tuple(layer.out_shape[1:]), activation=None)
                  for k, branch in enumerate(cat.inputs)]
        layers += pooled
        layers.append(replace(layer, op="cat", inputs=[p.name for p in pooled], in_shape=pooled[0].out_shape,
                              params={"axis": 0, "sizes": tuple(p.size for p in pooled)}))
    read = {name for layer in layers for name in layer.inputs}
    return LayerGraph([layer for layer in layers if layer.op != "cat" or layer.name in read or layer is layers[-1]],
                      head=graph.head)


def fold_input_shift(graph, low):
    """The graph that computes on ``x - low`` what ``graph`` computes on ``x``.

    Parameters
    ----------
    graph : LayerGraph
    low : np.ndarray, shape (C,)
        Lower bound of every input channel (axis 0 of the input's sample shape).

    Returns
    -------
    LayerGraph
        ``graph`` itself when ``low`` is zero; otherwise a new graph whose first weighted layers
        carry the shift in their biases (per neuron for padded convs). ``graph`` is not modified.

    Raises
    ------
    ConversionError
        When the input is read by a layer the shift cannot pass exactly (see the module docstring).
    """
    low = np.asarray(low, dtype=np.float64)
    if not np.any(low):
        return graph
    inp = graph.input
    fix = ("brianconv shifts normalised inputs to x - low >= 0 and folds the shift into the Linear/Conv2d layers "
           "that read the input (through max-pooling or unpadded average pooling); give the model such a first "
           "layer, or pass non-negative inputs")
    what = ("The network input", fix)
    return LayerGraph(_fold(list(graph.layers), inp.name, inp.out_shape, np.ones_like(low), low, what,
                            through_pools=True))


def _affine_parameters(affine):
    channels = affine.in_shape[0]
    scale, shift = (np.asarray(affine.params[key], dtype=np.float64) for key in ("scale", "shift"))
    if scale.shape != (channels,) or shift.shape != (channels,):
        raise ShapeError(f"Affine layer {affine.name!r}: scale {scale.shape} and shift {shift.shape} must hold one "
                         f"value per channel ({channels},) of its input {tuple(affine.in_shape)}.")
    return scale, shift


def _renamed(layer, old, new):
    if old not in layer.inputs:
        return layer
    return replace(layer, inputs=[new if name == old else name for name in layer.inputs])


def _fold(layers, source, shape, scale, shift, what, through_pools):
    """Fold ``v = scale * u + shift`` (per channel of ``shape``, the output of ``source``) into
    every layer of ``layers`` that reads ``source``; returns the new list of layers."""
    output = layers[-1].name
    for index, layer in enumerate(layers):
        if source not in layer.inputs:
            continue
        if layer.is_weighted and layer.inputs == [source]:
            layers[index] = _folded(layer, shape, scale, shift)
        elif through_pools and _commutes_with_shift(layer) and layer.name != output:
            layers = _fold(layers, layer.name, layer.out_shape, scale, shift, what, through_pools)
        else:
            raise ConversionError(f"{what[0]} is read by layer {layer.name!r} ({layer.op}"
                                  f"{', ' + layer.activation if layer.activation else ''}"
                                  f"{', the output' if layer.name == output else ''}): {what[1]}.")
    return layers


def _commutes_with_shift(layer):
    """Pooling without activation that maps ``x - c`` to ``pool(x) - c`` per channel."""
    if layer.activation is not None:
        return False
    if layer.op == "maxpool":
        return True
    padded = any(np.atleast_1d(layer.params.get("padding", 0)))
    return layer.op == "avgpool" and (not padded or not layer.params.get("count_include_pad", True))


def _folded(layer, shape, scale, shift):
    """``layer`` (linear or conv) reading ``scale * u + shift`` instead of ``v``, as a function of ``u``."""
    scale_map, shift_map = (_per_element(value, shape).reshape(-1) for value in (scale, shift))
    if layer.op == "linear":
        return replace(layer, weight=layer.weight * scale_map[None, :],
                       bias=_bias_or_zeros(layer) + layer.weight @ shift_map)
    in_shape = tuple(layer.in_shape)  # the conv's view of the source (a view/reshape may sit between)
    scale_map = scale_map.reshape(in_shape)
    if not np.all(scale_map == scale_map[:, :1, :1]):
        raise ConversionError(f"Layer {layer.name!r} reads its source with another channel layout (a view or "
                              "reshape in between), so the per-channel scale folded into it is not per channel of "
                              "its kernels; brianconv cannot fold it exactly.")
    weight = layer.weight * scale_map[:, 0, 0][_kernel_channels(layer)][:, :, None, None]
    return replace(layer, weight=weight, bias=_conv_shift_bias(layer, shift_map.reshape(in_shape)))


def _kernel_channels(layer):
    """Input channel read by kernel slice ``i`` of output channel ``o``, shape ``(C_out, C_in / groups)``."""
    c_out, per_group = layer.weight.shape[:2]
    group = np.arange(c_out) // (c_out // layer.params["groups"])
    return group[:, None] * per_group + np.arange(per_group)[None, :]


def _bias_or_zeros(layer):
    return layer.bias if layer.bias is not None else np.zeros(layer.out_shape[0])


def _conv_shift_bias(layer, shift_map):
    """The bias of a conv reading ``u + shift_map`` (``shift_map`` of shape ``in_shape``) as a bias for ``u``.

    ``conv2d(shift_map, W, b)`` with the layer's geometry, one value per neuron (``out_shape``);
    one value per channel ``(C_out,)`` when the conv does not pad and ``shift_map`` is constant
    per channel (every position then sees the same sum).
    """
    p = layer.params
    bias = _bias_or_zeros(layer)
    if not any(p["padding"]) and np.all(shift_map == shift_map[:, :1, :1]) and np.ndim(bias) == 1:
        return bias + np.einsum("oikl,oi->o", layer.weight, shift_map[:, 0, 0][_kernel_channels(layer)])
    with torch.no_grad():
        out = F.conv2d(torch.as_tensor(shift_map, dtype=torch.float64)[None],
                       torch.as_tensor(layer.weight, dtype=torch.float64), None,
                       p["stride"], p["padding"], p["dilation"], p["groups"])[0].numpy()
    return out + (bias[:, None, None] if np.ndim(bias) == 1 else bias)
