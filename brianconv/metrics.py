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
* An ``affine`` layer (a BatchNorm that could not be folded into a Linear or Conv2d) costs one MAC
  per value (``scale * x + shift``); a ``cat`` only moves values and costs nothing; a clipped ReLU
  counts like a ReLU (one operation per value in ``other_flops``).
* **Synaptic operations** of the SNN: each spike times the number of synapses it is sent over
  (its exact fan-out in the built connectivity), summed over all neurons.
"""

from dataclasses import dataclass

import numpy as np

from .connectivity import connections_for
from .graph import LayerGraph, trace

__all__ = ["LayerCost", "ANNCost", "ann_cost", "SNNLayerCost", "snn_cost", "efficiency", "ENERGY_PER_MAC",
           "ENERGY_PER_AC"]


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

    def total(self, quantity):
        """The sum over layers of ``quantity`` (``"macs"``, ``"flops"``, ``"other_flops"``, ``"neurons"``)."""
        return sum(getattr(row, quantity) for row in self.layers)

    macs = property(lambda self: self.total("macs"), doc="Multiply-accumulates of all layers.")
    flops = property(lambda self: self.total("flops"), doc="FLOPs of all layers (2 per MAC).")
    other_flops = property(lambda self: self.total("other_flops"), doc="FLOPs besides the MACs (e.g. pooling).")

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
    model : torch.nn.Module, torch.export.ExportedProgram or brianconv.graph.LayerGraph
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
        elif layer.op == "affine":
            macs = layer.size
        elif layer.op == "add":
            other = layer.size
        if layer.activation is not None:
            other += layer.size
        active = float(np.mean(activations[layer.name] > 0)) if layer.name in activations else None
        rows.append(LayerCost(layer.name, layer.op, layer.size, int(macs), int(other), active))
    return ANNCost(rows)


#: Energy per operation in joules, 45 nm CMOS, 32-bit floating point (Horowitz, "Computing's energy
#: problem", ISSCC 2014): a multiply 3.7 pJ plus an add 0.9 pJ per MAC; an accumulate is one add.
ENERGY_PER_MAC = 4.6e-12
ENERGY_PER_AC = 0.9e-12


@dataclass
class SNNLayerCost:
    """Measured cost of one population, averaged over the simulated images."""

    name: str
    role: str
    neurons: int
    spikes: float
    synaptic_ops: float
    neuron_updates: int

    @property
    def spikes_per_neuron(self):
        return self.spikes / self.neurons


def snn_cost(snn, result):
    """Per-population SNN cost of a simulation: spikes, synaptic operations, neuron updates per image.

    ``neuron_updates`` counts a population's state updates during one image's window
    (``size * period_steps``): what a clock-driven simulator computes; helper populations (ticking
    neurons, AMOS units) appear as their own rows with role ``"helper"``.
    """
    d = snn.description
    return [SNNLayerCost(p.name, p.role, p.size, float(np.mean(result.spike_counts[p.name])),
                         float(np.mean(result.synaptic_ops_per_population[p.name])), p.size * d.period_steps)
            for p in d.populations]


def efficiency(ann, snn_rows, energy_per_mac=ENERGY_PER_MAC, energy_per_ac=ENERGY_PER_AC):
    """Energy estimate and Niederlechner's efficiency factor (ANN cost / SNN cost).

    Parameters
    ----------
    ann : ANNCost
    snn_rows : list of SNNLayerCost
    energy_per_mac, energy_per_ac : float
        Joules per multiply-accumulate (ANN) and per accumulate (SNN synaptic operation); the
        defaults are the 45 nm figures above, so a MAC costs about 5x an AC (Niederlechner uses 14x).

    Returns
    -------
    dict with ``ann_energy``, ``snn_energy`` (J per image) and ``factor`` (ANN / SNN).
    """
    synaptic_ops = sum(row.synaptic_ops for row in snn_rows)
    ann_energy = ann.macs * energy_per_mac
    snn_energy = synaptic_ops * energy_per_ac
    return dict(ann_energy=ann_energy, snn_energy=snn_energy,
                factor=ann_energy / snn_energy if snn_energy > 0 else float("inf"),
                ann_macs=ann.macs, snn_synaptic_ops=synaptic_ops)
