"""Operation counts: what the ANN computes against what the SNN transmits.

Conventions (stated so numbers can be compared across papers):

* **MACs** of a Linear or Conv2d layer: one multiply-accumulate per weight actually applied, i.e.
  per connection between an input and an output value. Zero-padded positions contribute nothing,
  so a convolution's MACs equal its number of synapses in the converted network.
* **FLOPs** of a Linear or Conv2d layer: ``2 * MACs`` (one multiplication and one addition per
  connection). López-Randulfe et al. report FLOPs "required for the synaptic connections"; this
  convention matches that reading. Bias additions, activations and pooling are listed separately
  (``other_flops``: one per bias, one per ReLU, ``k*k - 1`` comparisons or additions per pooled
  output) and are not part of ``flops``.
* **Synaptic operations** of the SNN: each spike times the number of synapses it is sent over
  (its exact fan-out in the built connectivity), summed over all neurons.
"""

from dataclasses import dataclass

import numpy as np

from .connectivity import connections_for
from .graph import LayerGraph, trace

__all__ = ["LayerCost", "ANNCost", "ann_cost"]


@dataclass
class LayerCost:
    """Cost of one ANN layer for one input sample."""

    name: str
    op: str
    neurons: int
    macs: int
    other_flops: int
    active_fraction: float = None

    @property
    def flops(self):
        return 2 * self.macs


@dataclass
class ANNCost:
    """Per-layer rows and totals of :func:`ann_cost`."""

    layers: list

    @property
    def macs(self):
        return sum(row.macs for row in self.layers)

    @property
    def flops(self):
        return sum(row.flops for row in self.layers)

    @property
    def other_flops(self):
        return sum(row.other_flops for row in self.layers)

    def table(self):
        """A text table: one line per layer and the totals."""
        lines = [f"{'layer':<14}{'op':<9}{'neurons':>9}{'MACs':>13}{'FLOPs':>13}{'active':>8}"]
        for r in self.layers:
            active = "" if r.active_fraction is None else f"{100 * r.active_fraction:.1f}%"
            lines.append(f"{r.name:<14}{r.op:<9}{r.neurons:>9,}{r.macs:>13,}{r.flops:>13,}{active:>8}")
        lines.append(f"{'total':<23}{sum(r.neurons for r in self.layers):>9,}{self.macs:>13,}{self.flops:>13,}")
        return "\n".join(lines)


def ann_cost(model, input_shape=None, x=None):
    """MACs and FLOPs of every layer of ``model`` for one sample.

    Parameters
    ----------
    model : torch.nn.Module or brianconv.graph.LayerGraph
    input_shape : tuple, optional
        Shape of one sample (needed for a torch module; taken from ``x`` if given).
    x : array, shape (N, *input_shape), optional
        Samples to measure the ANN's own activation sparsity (``active_fraction``: the fraction
        of a layer's outputs that are > 0, averaged over the samples).

    Returns
    -------
    ANNCost
    """
    graph = model if isinstance(model, LayerGraph) else trace(model, input_shape or tuple(np.shape(x)[1:]))
    activations = graph.forward(x, record=True)[1] if x is not None else {}
    rows = []
    for layer in graph.layers[1:]:
        macs, other = 0, 0
        if layer.is_weighted:
            macs = sum(len(c) for c in connections_for(layer))
            other = layer.size  # bias additions
        elif layer.op in ("avgpool", "maxpool"):
            kh, kw = layer.params["kernel_size"]
            other = layer.size * (kh * kw - 1)
        elif layer.op == "add":
            other = layer.size
        if layer.activation is not None:
            other += layer.size
        active = float(np.mean(activations[layer.name] > 0)) if layer.name in activations else None
        rows.append(LayerCost(layer.name, layer.op, layer.size, int(macs), int(other), active))
    return ANNCost(rows)
