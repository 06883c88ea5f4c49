"""A network converted with the ``rate`` scheme, written as a NIR graph.

The ``rate`` network (:mod:`brianconv.schemes.rate`) maps onto NIR primitives one to one:

* the analog input enters every step as the current ``W~ x / lambda_0`` of the first layer;
* a hidden Linear/Conv2d layer becomes an ``Affine``/``Conv2d`` node with the normalised weights
  ``W~`` and biases ``b~`` (Rueckauer et al., Eq. 9), followed by an ``IF`` node with
  ``v_threshold = 1`` (the threshold in units of ``v_unit``) and ``r = 1 / dt``, so that one
  step adds ``dt * r * I = I``: the rate neuron's charge per step. NIR 1.0's IF resets by
  subtraction, like ``reset="subtract"``;
* average pooling becomes ``AvgPool2d``; a Linear layer reading a feature map is preceded by a
  ``Flatten``;
* the output layer becomes an ``Affine``/``Conv2d`` and an integrator ``I`` (``r = 1 / dt``) whose
  ``v`` after ``T`` steps is ``T`` times rate's decoded output divided by the output scale
  ``lambda_L`` (same argmax).

The graph's ``metadata`` records ``dt`` (seconds) and the output scale, so that
``from_nir(graph, dt=dt)`` simulates the same network. Differences: NIR spikes when ``v >
v_threshold``, rate when ``v >= v_th`` (only exact ties differ); the thresholds are those of the
built network (run-time ``v_th=``/``scales=`` are not exported).

Other schemes have neurons without a NIR primitive and raise
:class:`~brianconv.errors.ConversionError` (:data:`UNSUPPORTED_SCHEMES`).
"""

import numpy as np
from brian2 import second

from ..calibration import normalised_parameters
from ..errors import ConversionError
from ..schemes.base import population_names

__all__ = ["export", "UNSUPPORTED_SCHEMES"]

#: Why a scheme's neurons have no NIR primitive.
UNSUPPORTED_SCHEMES = {
    "ttfs": "its two-stage neuron integrates during a silent stage and then charges with a constant ramp until its "
            "single spike, with stage switches at fixed times; NIR's neurons have no time-dependent stages or "
            "fire-once refractoriness",
    "amos": "its AMOS units are groups of neurons with per-neuron evaluation times and spike-driven inhibition of "
            "later neurons (a sequential approximation of the activation); NIR has no such unit",
    "tdsnn": "its leaky neurons would map to NIR's LIF, but their threshold is gated off until the inputs' window "
             "ends and a ticking neuron (a clock firing at fixed steps) then drives them to their single spike; NIR "
             "has no time-gated threshold, no clock source and no fire-once neuron",
}


def export(snn, nir):
    """The NIR graph of ``snn`` (a :class:`~brianconv.simulation.SpikingNetwork` from ``rate``).

    Parameters
    ----------
    snn : brianconv.simulation.SpikingNetwork
    nir : module
        The :mod:`nir` package.

    Returns
    -------
    nir.NIRGraph
        Nodes ``input``, then per layer ``<population>_w`` (Affine/Conv2d/AvgPool2d/Flatten) and
        ``<population>`` (IF, or I for the output), and ``output``.
    """
    _check(snn, nir)
    graph, d = snn.graph, snn.description
    dt = float(d.dt / second)
    names = population_names(graph)
    params = normalised_parameters(graph, snn.calibration)
    input_scale = snn.calibration.scales[graph.input.name]
    nodes = {"input": nir.Input(input_type=np.array(graph.input.out_shape))}
    edges, last, from_input = [], "input", True
    for layer in graph.layers[1:]:
        name = names[layer.name]
        if layer.op == "avgpool":
            p = layer.params
            nodes[f"{name}_pool"] = nir.AvgPool2d(kernel_size=np.array(p["kernel_size"]), stride=np.array(p["stride"]),
                                                  padding=np.array(p["padding"]))
            edges.append((last, f"{name}_pool"))
            last = f"{name}_pool"
            continue
        weight, bias = params[layer.name]
        factor = 1.0 / input_scale if from_input else 1.0   # the input enters as x / lambda_0
        if layer.op == "linear" and len(layer.in_shape) > 1:
            nodes[f"{name}_flat"] = nir.Flatten(input_type={"input": np.array(layer.in_shape)}, start_dim=0)
            edges.append((last, f"{name}_flat"))
            last = f"{name}_flat"
        nodes[f"{name}_w"] = _weighted(nir, layer, weight * factor, bias)
        edges.append((last, f"{name}_w"))
        is_output = layer is graph.output
        shape = tuple(layer.out_shape)
        nodes[name] = nir.I(r=np.full(shape, 1.0 / dt)) if is_output else _if_node(nir, shape, dt)
        edges.append((f"{name}_w", name))
        last, from_input = name, False
    nodes["output"] = nir.Output(output_type=np.array([graph.output.size]))
    edges.append((last, "output"))
    metadata = dict(source="brianconv rate", dt=dt, output_scale=float(snn.calibration.scales[graph.output.name]))
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def _weighted(nir, layer, weight, bias):
    if layer.op == "linear":
        return nir.Affine(weight=np.asarray(weight, dtype=np.float64), bias=np.asarray(bias, dtype=np.float64))
    p = layer.params
    return nir.Conv2d(input_shape=tuple(layer.in_shape[1:]), weight=np.asarray(weight, dtype=np.float64),
                      stride=tuple(p["stride"]), padding=tuple(p["padding"]), dilation=tuple(p["dilation"]),
                      groups=int(p["groups"]), bias=np.asarray(bias, dtype=np.float64))


def _check(snn, nir):
    scheme = snn.scheme.name
    if scheme in UNSUPPORTED_SCHEMES:
        raise ConversionError(f"to_nir: the {scheme!r} network cannot be written as NIR: "
                              f"{UNSUPPORTED_SCHEMES[scheme]}. Convert with method='rate' to export.")
    if scheme != "rate":
        raise ConversionError(f"to_nir exports networks converted with method='rate', not {scheme!r}.")
    o = snn.scheme.options
    if o.input != "analog":
        raise ConversionError("to_nir: input='poisson' draws random input spikes, which NIR has no node for; convert "
                              "with input='analog'.")
    if _resets_to_value(nir) and o.reset == "subtract":
        raise ConversionError(f"to_nir: nir {nir.__version__}'s IF resets to v_reset; reset by subtraction has no NIR "
                              "primitive there. Convert with reset='zero', or use nir 1.0.")
    if not _resets_to_value(nir) and o.reset == "zero":
        raise ConversionError(f"to_nir: nir {nir.__version__}'s IF resets by subtraction; reset to zero has no NIR "
                              "primitive there. Convert with reset='subtract', or use nir >= 1.1.")
    for layer in snn.graph:
        if layer.op == "maxpool":
            raise ConversionError(f"to_nir: layer {layer.name!r} is a max-pool, whose spiking gate (rate estimates of "
                                  "its inputs) has no NIR primitive; use average pooling.")


def _resets_to_value(nir):
    """True for NIR versions whose IF resets to ``v_reset`` (1.1 and later) instead of subtracting."""
    return "v_reset" in getattr(nir.IF, "__dataclass_fields__", {})


def _if_node(nir, shape, dt):
    """An IF node adding ``I`` per step (``r = 1 / dt``) with threshold 1 (and ``v_reset = 0`` where NIR has it)."""
    extra = dict(v_reset=np.zeros(shape)) if _resets_to_value(nir) else {}
    return nir.IF(r=np.full(shape, 1.0 / dt), v_threshold=np.ones(shape), **extra)
