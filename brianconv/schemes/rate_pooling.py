"""Average pooling as its own population of IF neurons, for scheme ``"rate"`` (``avgpool="population"``).

Folding a ``k x k`` average pool into the convolution that reads it (``avgpool="fold"``) gives
every neuron before the pool the whole fan-out of the pool window's reader: each of its spikes
costs ``fan-out(reader)`` synaptic events, and the pool area's worth of neurons share each
target. A pool population instead receives each of its ``A = k^2`` inputs through one synapse
of weight ``1 / A`` and fires at the window's average rate: a source spike costs one event, and
only the pool's spikes, about ``1 / A`` as many, pay the reader's fan-out, so the reader's input
events fall by about the pool area (4 for ``2 x 2`` pools).

Error bound
-----------
The pool neuron is an IF neuron without bias whose threshold is its source layer's threshold
(a pool carries its source's scale ``lambda``). In step ``t`` it receives the charge ``q_t =
s_t / A`` thresholds, ``s_t <= A`` the number of its inputs that spiked, so ``0 <= q_t <= 1``.
With reset by subtraction its potential after the step, ``v_t = Q_t - n_t`` (``Q_t`` the charge
so far, ``n_t`` the spikes so far), stays in ``[0, 1)``: a neuron at ``v < 1`` that gains at
most 1 fires at most once and keeps less than 1. After the ``T`` steps of a window, therefore,

    n = floor(sum_j n_j / A)    exactly,

with ``n_j`` its inputs' spike counts: the value it passes on, ``lambda n / T``, is the average
of its inputs' values, ``lambda * mean_j(n_j) / T``, less an error in ``[0, lambda / T)``. This is
one more rate quantisation (Eq. 6 of Rueckauer et al.: ``1 / T`` of the scale per layer), paid
once per pooling layer, and the pool adds one step of latency (its readers' windows start one
step later). A source spike in the last step of a window still reaches the pool in that window
(same-step delivery, as between any two layers), so nothing is lost at the window's end; the
residue ``v_T`` in ``[0, 1)`` is cleared with the window like any neuron's. With ``reset="zero"``
a charge above the threshold is lost and the bound does not hold (the reset's own error, Eq. 5).

Only a pool that reads a spiking population (a Linear/Conv2d layer or a residual sum) gets
neurons: a pool that reads the (analog) input, a concatenation or another pool stays folded into
its reader's projection. The pool neuron's equations are
:data:`brianconv.schemes.rate.AVGPOOL_EQUATIONS`.
"""

from ..graph import LayerGraph
from .projections import folds_into_reader

__all__ = ["spiking_avgpools"]


def spiking_avgpools(graph: LayerGraph):
    """Names of the average-pooling layers that get IF neurons: those reading a spiking population.

    A pool's source must have neurons of its own that spike at rates: a Linear/Conv2d layer (not
    one folded into its reader) or a residual sum. The output layer is never a pool here (the
    scheme's checks reject a pooling output).
    """
    names = set()
    for layer in graph:
        if layer.op != "avgpool" or layer is graph.output:
            continue
        source = graph[layer.inputs[0]]
        if (source.is_weighted and not folds_into_reader(graph, source)) or source.op == "add":
            names.add(layer.name)
    return frozenset(names)
