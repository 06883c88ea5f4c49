"""Walking the layer graph into populations and projections: the connectivity every scheme describes.

Which layers get a population (:func:`population_names`), and the projections each reads, with
average pooling, concatenation and folded linear layers composed into the projections of their
readers (:func:`projected_layers`, :func:`incoming_projections`, :func:`merged_by_source`).
"""

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..connectivity import compose, connections_for, make_connections

__all__ = ["population_names", "projected_layers", "FOLDED_OPS", "folds_into_reader", "incoming_projections",
           "merged_by_source"]


def population_names(graph):
    """Brian2-safe, unique population names: ``input`` and ``<op>_<layer name>``."""
    names = {}
    for k, layer in enumerate(graph):
        safe = "".join(c if c.isalnum() else "_" for c in layer.name)
        base = "input" if layer.op == "input" else f"{layer.op}_{safe}"
        names[layer.name] = base if base not in names.values() else f"{base}_{k}"
    return names


def projected_layers(graph, names, carried_by=None):
    """The layers that get a population, with the source population and connections they read.

    Average pooling is linear and has no neurons of its own: it is folded into the projection of
    the layer that reads it (:func:`~brianconv.connectivity.compose`).

    Yields
    ------
    (layer, source population name, Connections)
        In graph order, for every layer after the input except average pools.
    """
    carriers = {graph.input.name: (names[graph.input.name], None)}
    for layer in graph.layers[1:]:
        source, pending = carriers[layer.inputs[0]]
        if layer.op == "avgpool":
            pool = connections_for(layer)[0]
            carriers[layer.name] = (source, pool if pending is None else compose(pending, pool))
            continue
        connections = connections_for(layer)[0]
        if pending is not None:
            connections = compose(pending, connections)
        carriers[layer.name] = (names[layer.name], None)
        yield layer, source, connections


#: Layers without neurons of their own: linear maps folded into the projections of their readers.
FOLDED_OPS = frozenset({"avgpool", "cat"})


def folds_into_reader(graph, layer):
    """Whether ``layer`` is a linear layer folded into the residual sums that read it (no neurons).

    The rule: a weighted layer (Linear/Conv2d) without activation, not the output, whose every
    consumer is an ``add`` -- the second convolution of a ResNet block (BatchNorm folded in) and
    its 1x1 projection shortcut. The sum receives the folded layer's input projections composed
    with its weights, and its bias (:func:`incoming_projections`). Schemes accept such layers
    only with :attr:`Scheme.folds_linear_layers`.

    Parameters
    ----------
    graph : brianconv.graph.LayerGraph
    layer : brianconv.graph.Layer

    Returns
    -------
    bool
    """
    if not layer.is_weighted or layer.activation is not None or layer is graph.output:
        return False
    consumers = graph.consumers(layer.name)
    return bool(consumers) and all(consumer.op == "add" for consumer in consumers)


def incoming_projections(graph, names, populated=frozenset()):
    """Every layer that gets a population, with all the projections it receives.

    Unlike :func:`projected_layers` this follows every input of a layer (both terms of a
    residual ``add``, both factors of a ``mul``) and every branch of a channel concatenation.
    Layers in :data:`FOLDED_OPS` get no neurons: average pooling is composed into the projection
    of its reader, and a ``cat`` hands each reader one projection per concatenated branch (the
    reader's synapses whose source lies in that branch, re-indexed to the branch's population).
    Linear layers that :func:`folds_into_reader` folds get no neurons either: the sum that reads
    one receives its input projections composed with its weights, and its bias ``b`` through the
    sum's connections ``C`` (``C(W s + b) = (C W) s + C b``) as a constant.

    ``populated`` names layers of :data:`FOLDED_OPS` that get a population all the same (rate's
    ``avgpool="population"``): they are yielded like any other layer.

    Yields
    ------
    (layer, [(source population name, Connections), ...])
        In graph order, for every layer after the input that is not folded; the list holds one
        entry per (input, branch) with at least one synapse, in the order of ``layer.inputs``.
        A layer that reads folded biases is yielded as a copy whose ``bias`` is the total
        per-neuron bias (its own plus the folded ones, shape ``out_shape``); every other layer
        is yielded unchanged.
    """
    carriers = {graph.input.name: [_Carried(names[graph.input.name], None)]}
    for layer in graph.layers[1:]:
        incoming, carried_bias = [], None
        for name, connections in zip(layer.inputs, _input_connections(layer)):
            for piece in carriers[name]:
                if piece.source is not None:
                    incoming.append((piece.source, piece.apply_to(connections)))
                carried_bias = _add_bias(carried_bias, piece.bias_through(connections))
        incoming = [(source, connections) for source, connections in incoming if len(connections)]
        weighted_fold = folds_into_reader(graph, layer)
        if (layer.op in FOLDED_OPS and layer.name not in populated) or weighted_fold:
            # No neurons: each incoming projection maps a population to (part of) this layer's values.
            # Its activation, if any, is not applied here: schemes accept it only where it is the
            # identity on what the layer carries (ReLU of non-negative values), see Scheme.check.
            if weighted_fold:
                carried_bias = _add_bias(carried_bias, layer.neuron_bias())
            pieces = [_Carried(source, connections) for source, connections in incoming]
            if carried_bias is not None:  # one piece carries the constant, so that a reader adds it once
                pieces.append(_Carried(None, None, carried_bias))
            carriers[layer.name] = pieces
            continue
        carriers[layer.name] = [_Carried(names[layer.name], None)]
        if carried_bias is not None:
            layer = dataclasses.replace(layer, bias=(layer.neuron_bias() + carried_bias).reshape(layer.out_shape))
        yield layer, incoming


def _add_bias(total, bias):
    """``total + bias`` where None stands for no bias (float64 ``(size,)`` arrays)."""
    if bias is None:
        return total
    return np.asarray(bias, dtype=np.float64) if total is None else total + bias


def _input_connections(layer):
    """One Connections per input of ``layer``, from that input's values to the layer's values."""
    if layer.op != "cat":
        return connections_for(layer)
    ends = np.cumsum(layer.params["sizes"])
    return [make_connections(np.arange(end - start), np.arange(start, end), np.ones(end - start), end - start,
                             layer.size) for start, end in zip(ends - layer.params["sizes"], ends)]


@dataclass(frozen=True)
class _Carried:
    """A population whose spikes carry (part of) a folded layer's values.

    ``mapping`` (Connections, or None for the identity) takes the population's neurons to the
    folded layer's values; ``bias`` (float64 ``(size,)`` of the folded layer's values, or None) is
    a constant added to them (a folded Linear/Conv2d layer's bias). A piece with ``source`` None
    carries only a constant (a folded layer none of whose inputs reaches it).
    """

    source: str
    mapping: object
    bias: np.ndarray = None

    def apply_to(self, connections):
        """The projection from :attr:`source` equal to ``connections`` applied after the mapping."""
        return connections if self.mapping is None else compose(self.mapping, connections)

    def bias_through(self, connections):
        """The constant ``connections`` make of :attr:`bias`, shape ``(connections.n_post,)``, or None."""
        return None if self.bias is None else connections.apply(self.bias[None, :])[0]


def merged_by_source(incoming):
    """One projection per source population: the projections of ``incoming`` that share a source, joined.

    A reader meets the same population twice when it sums a layer with itself or concatenates a
    layer with a pooled copy of it; one Brian2 ``Synapses`` per (source, target) keeps names unique.

    Parameters
    ----------
    incoming : list of (str, Connections)
        As yielded by :func:`incoming_projections`.

    Returns
    -------
    list of (str, Connections)
        In order of first appearance; a single projection is returned as it is (same object).
    """
    parts = {}
    for source, connections in incoming:
        parts.setdefault(source, []).append(connections)
    return [(source, pieces[0] if len(pieces) == 1 else _joined(pieces)) for source, pieces in parts.items()]


def _joined(pieces):
    """The synapses of several Connections between the same two populations, as one."""
    return make_connections(np.concatenate([c.pre for c in pieces]), np.concatenate([c.post for c in pieces]),
                            np.concatenate([c.weight for c in pieces]), pieces[0].n_pre, pieces[0].n_post)
