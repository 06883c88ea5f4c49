"""Brian2 objects from a :class:`~brianconv.description.NetworkDescription`.

:func:`create_objects` makes the ``NeuronGroup``/``Synapses``/monitors of a description inside an
explicit ``brian2.Network`` (never Brian2's "magic" network), on whatever Brian2 device is active:
:mod:`~brianconv.builder.programs` runs them on the runtime device, :mod:`~brianconv.builder.cache`
generates C++ standalone code from them.
"""

import contextlib
import logging
import re
from dataclasses import dataclass, field

import numpy as np
from brian2 import Clock, Network, NeuronGroup, SpikeMonitor, StateMonitor, Synapses, TimedArray, prefs

from ..connectivity import BLOCK, blocks

__all__ = ["MonitorRequest", "BrianObjects", "create_objects", "connect_in_python", "homogeneous_delay", "shared_delay",
           "synapse_delays", "set_before_run", "float_precision", "stimulus_rows", "source_major_order",
           "source_major_chunks"]


class _RoundingOnlyGridFilter(logging.Filter):
    """Drop Brian2's "time grids not aligned" warning when the grids differ only by float rounding.

    The stimulus TimedArray steps ``period_steps * dt``; the ratio of the two steps can come out
    as e.g. 104.00000000000001, which Brian2 reports although its lookup rounds to the nearest
    row and reads the right image. Ratios that are really fractional still warn.
    """

    _RATIO = re.compile(r"ratio: 1/([0-9.eE+-]+)\)")

    def filter(self, record):
        match = self._RATIO.search(record.getMessage())
        if match is None:
            return True
        ratio = float(match.group(1))
        return abs(ratio - round(ratio)) > 1e-9 * ratio


_timedarray_logger = logging.getLogger("brian2.input.timedarray")
if not any(isinstance(f, _RoundingOnlyGridFilter) for f in _timedarray_logger.filters):
    _timedarray_logger.addFilter(_RoundingOnlyGridFilter())


@dataclass
class MonitorRequest:
    """Extra recordings: spike monitors and state monitors on chosen populations.

    Attributes
    ----------
    spikes : tuple of str
        Populations whose every spike is recorded (index and step).
    states : dict
        ``population -> (variables, neuron indices)``, recorded at every step.
    """

    spikes: tuple = ()
    states: dict = field(default_factory=dict)

    def key(self):
        return repr((tuple(self.spikes), sorted((k, tuple(v[0]), tuple(np.asarray(v[1]).tolist()))
                                                   for k, v in self.states.items())))


@dataclass
class BrianObjects:
    """The Brian2 objects of one description, inside an explicit ``brian2.Network``."""

    network: Network
    groups: dict
    synapses: dict
    stimulus: TimedArray
    output_monitor: StateMonitor
    count_monitor: StateMonitor
    spike_monitors: dict
    state_monitors: dict
    counter_synapses: dict


def create_objects(description, batch_size, monitors=None, connect=None):
    """Create the Brian2 objects of ``description`` for batches of ``batch_size`` images.

    ``connect(syn, projection, dt)`` creates the synapses of each projection in source-major order
    (:func:`source_major_order`; default :func:`connect_in_python`; the standalone build passes
    :class:`~brianconv.builder.synapse_files.SynapseFiles`). A delay that is the same for every
    synapse of a projection is one scalar of its pathway, never a per-synapse array.

    The stimulus is a ``TimedArray`` named ``stimulus`` of shape ``(batch_size + 1, n_inputs)``
    (the extra last row is zeros, read after the last image) with one row per image period.
    Spikes and synaptic operations are counted by a helper group ``spike_counter`` (one neuron
    per population, fed by one synapse per neuron that adds 1 and the neuron's fan-out).
    """
    d = description
    monitors = monitors or MonitorRequest()
    clock = Clock(d.dt, name="brianconv_clock")
    stimulus = TimedArray(np.zeros((batch_size + 1, d.n_inputs)), dt=d.period_steps * d.dt, name="stimulus")
    groups = {}
    for p in d.populations:
        namespace = dict(p.namespace)
        if p.name == d.input_population:
            namespace["stimulus"] = stimulus
        group = NeuronGroup(p.size, p.full_equations, threshold=p.threshold, reset=p.reset,
                            events={name: event[0] for name, event in p.events.items()} or None,
                            method=p.method, namespace=namespace, name=p.name, clock=clock,
                            refractory=p.refractory or False)
        for event, (_, code, *slot) in p.events.items():
            group.run_on_event(event, code, when=slot[0] if slot else "before_synapses")
        for name, (code, slot) in p.regular.items():
            group.run_regularly(code, when=slot, name=f"{p.name}_{name}")
        group.window_start = p.window_start
        group.period_steps = d.period_steps
        for variable, value in p.values.items():
            setattr(group, variable, value)
        groups[p.name] = group
    synapses = {}
    for q in d.projections:
        delay = shared_delay(q)
        syn = Synapses(groups[q.source], groups[q.target], model=q.model, on_pre=q.on_pre, name=q.name,
                       clock=clock, delay=None if delay is None else delay * d.dt,
                       namespace=dict(q.namespace) or None)
        (connect or connect_in_python)(syn, q, d.dt)
        synapses[q.name] = syn
    counter = NeuronGroup(len(d.populations), "spikes : 1\nsynops : 1", name="spike_counter", clock=clock)
    counter_synapses = {}
    fan_out = d.fan_out()
    for k, p in enumerate(d.populations):
        if p.threshold is None:  # never spikes: nothing to count
            continue
        syn = Synapses(groups[p.name], counter, "fanout : 1 (constant)",
                       on_pre="spikes_post += 1\nsynops_post += fanout", name=f"count_{p.name}", clock=clock,
                       delay=0 * d.dt)
        syn.connect(i=np.arange(p.size), j=np.full(p.size, k))
        syn.fanout = fan_out[p.name]
        counter_synapses[p.name] = syn
    output_monitor = StateMonitor(groups[d.output_population], d.output_variable, record=True, when="end",
                                  name="output_monitor", clock=clock)
    count_monitor = StateMonitor(counter, ["spikes", "synops"], record=True, when="end", name="count_monitor",
                                 clock=clock)
    spike_monitors = {name: SpikeMonitor(groups[name], name=f"spikes_{name}") for name in monitors.spikes}
    state_monitors = {name: StateMonitor(groups[name], list(variables), record=np.asarray(indices), when="end",
                                         name=f"states_{name}", clock=clock)
                      for name, (variables, indices) in monitors.states.items()}
    network = Network(list(groups.values()), list(synapses.values()), counter, list(counter_synapses.values()),
                      output_monitor, count_monitor, list(spike_monitors.values()), list(state_monitors.values()))
    for obj in network.objects:  # they belong to this explicit network (Brian2 marks this on the first run)
        obj._network = network.id
    return BrianObjects(network, groups, synapses, stimulus, output_monitor, count_monitor, spike_monitors,
                        state_monitors, counter_synapses)


@contextlib.contextmanager
def float_precision(precision):
    """Brian2's ``core.default_float_dtype`` set to ``precision`` ("float64" or "float32") inside.

    It decides the storage of every floating-point state variable and synaptic weight created,
    and the C++/Cython type of the code generated, while it is set.
    """
    old = prefs.core.default_float_dtype
    prefs.core.default_float_dtype = np.dtype(precision).type
    try:
        yield
    finally:
        prefs.core.default_float_dtype = old


def stimulus_rows(stimulus, batch_size, n_inputs):
    """The stimulus TimedArray's values, shape ``(batch_size + 1, n_inputs)``: the batch's images
    (flattened, ``len(stimulus) <= batch_size``), then zeros."""
    values = np.zeros((batch_size + 1, n_inputs))
    values[:len(stimulus)] = stimulus
    return values


def connect_in_python(syn, projection, dt):
    """``syn.connect`` with the projection's index arrays in source-major order, then its weights and delays."""
    c = projection.connections
    order = source_major_order(c)
    syn.connect(i=c.pre[order], j=c.post[order])
    if shared_delay(projection) is None:
        syn.delay = synapse_delays(projection, order) * dt
    if "w" in syn.variables:
        # in float64, then rounded once to the stored type (as SynapseFiles does)
        syn.w = np.asarray(c.weight[order], dtype=np.float64) * projection.weight_unit


def set_before_run(objects, description):
    """Assign each projection's ``before_run`` statements on its synapses, in order (after the run values)."""
    for q in description.projections:
        for variable, expression in q.before_run:
            setattr(objects.synapses[q.name], variable, expression)


def shared_delay(projection):
    """The delay in steps of every synapse of ``projection`` (an int), or None where each synapse stores
    its own: different delays, or delays that statements set before every run (``before_run``)."""
    return None if projection.before_run else homogeneous_delay(projection.delay_steps)


def synapse_delays(projection, order):
    """Each synapse's delay in steps (``delay_steps`` broadcast over the synapses), in ``order``."""
    return np.broadcast_to(np.asarray(projection.delay_steps), (len(projection.connections),))[order]


def homogeneous_delay(delay_steps):
    """The delay in steps shared by every synapse (an int), or None when synapses differ."""
    if np.isscalar(delay_steps):
        return int(delay_steps)
    steps = np.asarray(delay_steps)
    return int(steps[0]) if len(steps) and np.all(steps == steps[0]) else None


def source_major_order(connections):
    """Synapse order grouped by source neuron (then target), stable: int64 array over the synapses.

    A spike walks its source's synapses: stored contiguously, their weights and targets are read
    from consecutive memory instead of one cache line per synapse (conv layers list synapses by
    kernel offset). Each synapse keeps its own weight, and the order of the spikes is unchanged,
    so the simulated values are the same.
    """
    return np.lexsort((connections.post, connections.pre))


def source_major_chunks(connections, chunk):
    """:func:`source_major_order` in consecutive pieces of about ``chunk`` synapses (int64 arrays).

    Each piece holds the synapses of a range of source neurons (at most ``chunk`` synapses, or one
    source's, if it alone has more), found by a scan of ``pre`` and sorted on their own, so the
    pieces joined are the whole order while no array over all synapses is made (the whole order
    and ``np.lexsort``'s work arrays would take 12 bytes per synapse). A piece, its sort and the
    values written from it take about 40 bytes per synapse of the piece; each piece scans the
    projection once.
    """
    ends = np.cumsum(connections.fan_out())
    first = 0
    while first < connections.n_pre:
        done = ends[first - 1] if first else 0
        last = max(int(np.searchsorted(ends, done + chunk, side="right")), first + 1)  # sources [first, last)
        if ends[last - 1] > done:
            at = _positions_of_sources(connections.pre, first, last)
            yield at[np.lexsort((connections.post[at], connections.pre[at]))]
        first = last


def _positions_of_sources(pre, first, last, block=BLOCK):
    """Ascending positions (int64) of the synapses whose source is in ``[first, last)``, found
    ``block`` synapses at a time (so the scan's masks take 3 bytes per synapse of a block)."""
    return np.concatenate([np.flatnonzero((part >= first) & (part < last)) + start
                           for start, part in blocks(pre, block)])
