"""The wiring builder of AMOS networks: populations of unit neurons, relays, delays and inhibition.

See :mod:`brianconv.schemes.amos` for the neurons, the time axis and the two wirings.
"""

from dataclasses import dataclass

import numpy as np

from ...connectivity import make_connections, one_to_one
from ...description import Kind, Membrane, Population, Projection
from .units import Unit

__all__ = ["resolve_wiring", "synapse_count", "WIRINGS", "NEURON_EQUATIONS", "INPUT_EQUATIONS", "DENDRITE_EQUATIONS",
           "OUTPUT_EQUATIONS"]

#: ``"paper"``: every source neuron of a unit to every neuron of each target unit (``K_s K_t F``
#: synapses); ``"dendrite"``: to one dendrite per target unit, which relays the sum (``K_s F + K_t n``);
#: ``"auto"``: ``"dendrite"`` where the graph needs it, else ``"paper"`` (:func:`resolve_wiring`).
WIRINGS = ("auto", "paper", "dendrite")

#: A McCulloch-Pitts neuron of an AMOS unit. ``v`` (volt): ``c_k x - H_k`` of the image it
#: evaluates next, i.e. the synaptic input delivered in the previous step plus ``v_rest``.
NEURON_EQUATIONS = """
v : volt                      # c_k x - H_k in volts (v_unit volts per ANN unit)
v_rest : volt (constant)      # c_k b_i v_unit: the bias part, restored every step
theta : volt (constant)       # threshold T_k v_unit
lag : integer (constant)      # steps from its window start to its evaluation (k, or 2k / 2k+1 in max-pools)
"""
#: A neuron evaluates image ``n`` at step ``window_start + n period_steps + lag`` only.
EVALUATES = ("t_in_timesteps >= window_start + lag and "
             "(t_in_timesteps - window_start - lag) % period_steps == 0")
NEURON_THRESHOLD = EVALUATES + " and v >= theta"

#: Input neurons relay the analog input: neuron ``i`` sends one event per image (if its value is
#: non-zero) whose payload is the value ``x_now`` of the image it belongs to. A synapse with a
#: delay of ``D`` steps reads the payload ``x_D``: the value ``D`` steps back, kept in the
#: neuron's buffer ``x_0 ... x_(D_max)`` (shifted every step by the ``shift`` event), because Brian2
#: reads pre-synaptic variables when a spike is delivered, not when it is sent.
INPUT_EQUATIONS = """
x_now = stimulus(((t_in_timesteps - window_start) // period_steps) * period_steps * dt, i) : 1  # ANN units
"""
INPUT_THRESHOLD = "started == 1 and local_step == 0 and x_now > 0"


#: A dendrite sums the input ``x = W y + b`` of its unit's K neurons once per image (volts, like
#: the output layer) and relays it to them as the payload of one event, read through the buffer
#: ``x_0 ... x_(D_max)`` like the input's. Only with ``wiring="dendrite"``.
DENDRITE_EQUATIONS = """
v : volt                      # W y + b of the image it relays next (v_unit volts per ANN unit)
v_rest : volt (constant)      # b v_unit
x_now = v / v_unit : 1        # the value it relays
"""
DENDRITE_THRESHOLD = "started == 1 and local_step == 0 and v {compare} 0 * volt"


#: The output layer sums ``W y + b`` (volts) of one image per step and never spikes.
OUTPUT_EQUATIONS = """
v : volt                      # W y + b of the image whose input was delivered in this step
v_rest : volt (constant)      # b v_unit
"""
#: Every step, before the synapses deliver: forget the last step's input.
CLEAR = ("i >= 0", "v = v_rest")
ON_PRE = "v_post += w"
SYNAPSE_MODEL = "w : volt (constant)"


def resolve_wiring(wiring, graph):
    """The wiring used for ``graph``: ``wiring`` itself unless it is ``"auto"``.

    ``"auto"`` means ``"dendrite"`` when the graph has a max-pool (its candidate neurons read the
    pooled units' dendrites; the paper's wiring cannot compute it) and ``"paper"`` otherwise. The
    synapse count is deliberately not a criterion: the paper's wiring stays the default wherever it
    works, so the default network of a model does not depend on its size.

    Parameters
    ----------
    wiring : {"auto", "paper", "dendrite"}
    graph : brianconv.graph.LayerGraph

    Returns
    -------
    str
        ``"paper"`` or ``"dendrite"``.
    """
    if wiring != "auto":
        return wiring
    return "dendrite" if any(layer.op == "maxpool" for layer in graph) else "paper"


@dataclass
class _Sender:
    """A population that feeds the next layer: neuron ``k n + i`` is neuron ``k`` of unit ``i``.

    ``unit`` is None for relays (the input and dendrites): one neuron per unit whose events carry
    the value as payload. ``lags[k]``: steps between the window start and neuron ``k``'s evaluation.
    """

    name: str
    n: int
    start: int
    lags: np.ndarray
    unit: Unit = None

    @property
    def d(self):
        return np.ones(1) if self.unit is None else self.unit.d

    @property
    def last_step(self):
        """Step (for image 0) at which its last neuron answers."""
        return self.start + int(self.lags.max())


class _Wiring:
    """Collects the populations and projections of an AMOS network, layer by layer.

    A spike sent in step ``s`` over a delay of ``D`` steps is read by a unit neuron or a dendrite
    in step ``s + D + 1`` (and by the output at the end of step ``s + D``), so a neuron evaluated
    ``lag_t`` steps into a window starting at ``S_t`` hears a source neuron of lag ``lag_s``
    (window ``S_s``) over a delay of ``S_t + lag_t - 1 - S_s - lag_s`` steps.
    """

    def __init__(self, v_unit):
        self.v_unit = v_unit
        self.populations, self.projections, self.starts = [], [], {}
        self.relay_delays = {}

    def add(self, population, start):
        population.window_start = self.starts[population.name] = int(start)
        self.populations.append(population)
        return population

    def add_relay(self, population, start):
        """A relay population (input or dendrite); its value buffer is sized once all its synapses exist."""
        self.add(population, start)
        self.relay_delays[population.name] = 1
        return _Sender(population.name, population.size, int(start), np.zeros(1, dtype=int))

    def finished_populations(self):
        """The populations, relays given the value buffer ``x_0 ... x_(D_max)`` their synapses read."""
        for population in self.populations:
            if population.name in self.relay_delays:
                buffer, shift = _relay_buffer(self.relay_delays[population.name])
                population.equations += buffer
                clear = "\nv = v_rest" if population.role != "input" else ""
                population.events = {"shift": ("i >= 0", shift + clear)}
        return self.populations

    def feedforward(self, sender, target, connections, lags, gains):
        """Every neuron of every source unit to every neuron of its target units.

        Weight ``W d_ks c_kt`` (volts per ANN unit). One projection with a delay per synapse, except
        from a relay, whose events carry the value ``x_D`` of the delay ``D``: one projection per delay.
        """
        start = self.starts[target]
        delays = start + lags[None, :] - 1 - sender.start - sender.lags[:, None]  # (K_s, K_t)
        factors = sender.d[:, None] * gains[None, :]
        if delays.min() < 0:
            raise AssertionError(f"{sender.name} -> {target}: negative delay (window starts wrong)")
        groups = [(delay, [(ks, kt) for ks, kt in zip(*np.nonzero((delays == delay) & (factors != 0)))])
                  for delay in np.unique(delays)]
        if sender.unit is None:  # a relay's payload x_D depends on the delay: one projection per delay
            for delay, pairs in groups:
                if pairs:
                    self.relay_delays[sender.name] = max(self.relay_delays[sender.name], int(delay) + 1)
                    self._project(f"{sender.name}_to_{target}_d{delay}", sender, target, connections, pairs,
                                  factors, len(lags), f"v_post += w * x_{delay}_pre", int(delay))
            return
        pairs = [pair for _, group in groups for pair in group]
        if pairs:
            self._project(f"{sender.name}_to_{target}", sender, target, connections, pairs, factors, len(lags),
                          ON_PRE, _per_synapse([delays[pair] for pair in pairs], len(connections)))

    def _project(self, name, sender, target, connections, pairs, factors, K_t, on_pre, delay):
        """One projection: neuron ``ks`` of source unit ``i`` to neuron ``kt`` of target unit ``j`` for each pair."""
        pre = np.concatenate([ks * sender.n + connections.pre for ks, _ in pairs])
        post = np.concatenate([kt * connections.n_post + connections.post for _, kt in pairs])
        weight = np.concatenate([connections.weight * factors[ks, kt] for ks, kt in pairs])
        self.projections.append(Projection(
            name, sender.name, target,
            make_connections(pre, post, weight, len(sender.d) * sender.n, K_t * connections.n_post),
            model=SYNAPSE_MODEL, on_pre=on_pre, weight_unit=self.v_unit, delay_steps=delay))

    def dendrite(self, inputs, name, layer, bias, relu):
        """The dendrite of a layer's units: sums ``x = W y + b`` once per image and relays it to the K neurons.

        ``inputs``: ``[(sender, connections)]``, all summed (the terms of a residual ``add``, the
        branches of a concatenation), each over its own delay so that all arrive in the same step.
        For ReLU units only positive values are relayed (a unit given nothing computes ``f(0)``,
        which is 0 for ReLU and exact for every unit: no event means ``x = 0``).
        """
        relay = self.add_relay(Population(
            f"{name}_dendrite", layer.size, DENDRITE_EQUATIONS,
            threshold=DENDRITE_THRESHOLD.format(compare=">" if relu else "!="), reset="",
            values=dict(v_rest=bias * self.v_unit), layer=layer.name, shape=tuple(layer.out_shape), role="helper",
            kind=Kind.DENDRITE,
            namespace={"v_unit": self.v_unit}), start=max(sender.last_step for sender, _ in inputs) + 1)
        for sender, connections in inputs:
            self.feedforward(sender, relay.name, connections, lags=np.zeros(1, dtype=int), gains=np.ones(1))
        return relay

    def unit_neurons(self, name, n, unit, lags, bias, layer, shape, start, role="hidden"):
        """``K n`` McCulloch-Pitts neurons, neuron ``k n + i`` being neuron ``k`` of unit ``i``."""
        return self.add(Population(
            name, unit.K * n, NEURON_EQUATIONS, threshold=NEURON_THRESHOLD, reset="", events={"clear": CLEAR},
            values=dict(v_rest=np.outer(np.reshape(unit.c, (unit.K, -1))[:, 0], bias).ravel() * self.v_unit,
                        theta=np.repeat(unit.T, n) * self.v_unit, lag=np.repeat(lags, n)),
            layer=layer, shape=(unit.K,) + tuple(shape), role=role, kind=Kind.UNITS,
            membrane=Membrane("v", "theta", integrates=False)), start=start)

    def unit_layer(self, inputs, name, layer, unit, bias, ports=False):
        """A layer of AMOS units (Eqs. 2-6): neuron ``k`` answers ``k`` steps into the window.

        ``inputs``: ``[(sender, connections)]``. With ``ports``, input ``j`` feeds input ``j`` of a
        multi-input unit (the two factors of a product, Eq. 7); otherwise all inputs are summed into
        the unit's one input ``x`` (the terms of a residual ``add``, the branches of a concatenation).
        Each sender reaches every neuron over its own delays, aligned to the layer's window.
        """
        lags = np.arange(unit.K)
        start = max(sender.last_step for sender, _ in inputs) + 1
        self.unit_neurons(name, layer.size, unit, lags, bias, layer.name, layer.out_shape, start)
        gains = np.asarray(unit.c, dtype=float).reshape(unit.K, -1)
        for port, (sender, connections) in enumerate(inputs):
            self.feedforward(sender, name, connections, lags=lags, gains=gains[:, port if ports else 0])
        self._inhibition(name, name, unit, one_to_one(layer.size), lags, lags)
        return _Sender(name, layer.size, self.starts[name], lags, unit)

    def coincidences(self, inputs, name, layer, unit):
        """A :class:`CodeProduct` layer: neuron ``(ka, kb)`` of element ``i`` fires iff neuron ``ka`` of factor
        ``a`` and neuron ``kb`` of factor ``b`` fired for it; all evaluate one step after the later factor."""
        (a, conn_a), (b, conn_b) = inputs
        K_a, K_b, n = a.unit.K, b.unit.K, layer.size
        start = max(a.last_step, b.last_step) + 1
        self.unit_neurons(name, n, unit, np.zeros(unit.K, dtype=int), np.zeros(n), layer.name, layer.out_shape, start)
        for sender, connections, own in ((a, conn_a, lambda ka, kb: ka), (b, conn_b, lambda ka, kb: kb)):
            pairs = [(ka, kb) for ka in range(K_a) for kb in range(K_b)]
            pre = np.concatenate([own(ka, kb) * sender.n + connections.pre for ka, kb in pairs])
            post = np.concatenate([(ka * K_b + kb) * n + connections.post for ka, kb in pairs])
            delay = _per_synapse([start - 1 - sender.start - sender.lags[own(ka, kb)] for ka, kb in pairs],
                                 len(connections))
            self.projections.append(Projection(
                f"{sender.name}_to_{name}", sender.name, name,
                make_connections(pre, post, np.ones(len(pre)), len(sender.d) * sender.n, unit.K * n),
                model=SYNAPSE_MODEL, on_pre=ON_PRE, weight_unit=self.v_unit, delay_steps=delay))
        return _Sender(name, n, start, np.zeros(unit.K, dtype=int), unit)

    def max_pool(self, relay, pooled_layer, candidates, name, layer, windows, unit):
        """Max-pooling of ReLU units, exact on their binary code (see the module docstring).

        ``relay`` is the dendrite of ``pooled_layer`` and ``candidates`` the name of that layer's
        population; ``windows`` are the pool's (member, pool) pairs.
        Candidate ``k`` of pair ``e = (j, p)`` tests ``x_j - H_k >= T_k`` at lag ``2k`` with ``H_k``
        from the pool's own bits; pool neuron ``k`` of ``p`` fires at lag ``2k + 1`` if any of its
        candidates ``k`` did: ``z_k(max_j x_j)``, because ``x -> z_k(x - H) `` is monotone.
        """
        K, n_pairs, n_pool = unit.K, len(windows), windows.n_post
        start = relay.last_step + 1
        self.unit_neurons(candidates, n_pairs, unit, 2 * np.arange(K), np.zeros(n_pairs), pooled_layer.name,
                          (n_pairs,), start)
        self.feedforward(relay, candidates, make_connections(windows.pre, np.arange(n_pairs), np.ones(n_pairs),
                                                         windows.n_pre, n_pairs),
                         lags=2 * np.arange(K), gains=np.asarray(unit.c, dtype=float))
        pool_unit = Unit(c=np.ones(K), T=np.full(K, 0.5), d=unit.d, h=np.zeros((K, K)), gate=unit.gate)
        self.unit_neurons(name, n_pool, pool_unit, 2 * np.arange(K) + 1, np.zeros(n_pool), layer.name,
                          layer.out_shape, start)
        members = make_connections(np.arange(n_pairs), windows.post, np.ones(n_pairs), n_pairs, n_pool)
        pre = np.concatenate([k * n_pairs + members.pre for k in range(K)])
        post = np.concatenate([k * n_pool + members.post for k in range(K)])
        self.projections.append(Projection(f"{candidates}_to_{name}", candidates, name,
                                           make_connections(pre, post, np.ones(len(pre)), K * n_pairs, K * n_pool),
                                           model=SYNAPSE_MODEL, on_pre=ON_PRE, weight_unit=self.v_unit))
        reverse = make_connections(windows.post, np.arange(n_pairs), np.ones(n_pairs), n_pool, n_pairs)
        self._inhibition(name, candidates, unit, reverse, 2 * np.arange(K) + 1, 2 * np.arange(K))
        return _Sender(name, n_pool, start, 2 * np.arange(K) + 1, unit)

    def _inhibition(self, source, target, unit, connections, source_lags, target_lags):
        """Neuron ``m`` of a unit's source to neuron ``k > m`` of its targets, weight ``-h[k, m]``: one
        projection with a delay per synapse (the inhibition must arrive just before neuron ``k`` evaluates)."""
        pairs = [(m, k) for k in range(unit.K) for m in range(k) if unit.h[k, m] != 0]
        if not pairs:
            return
        n_pre, n_post = connections.n_pre, connections.n_post
        pre = np.concatenate([m * n_pre + connections.pre for m, _ in pairs])
        post = np.concatenate([k * n_post + connections.post for _, k in pairs])
        weight = np.concatenate([-unit.h[k, m] * connections.weight for m, k in pairs])
        lag_gap = self.starts[target] - 1 - self.starts[source]
        delay = _per_synapse([lag_gap + target_lags[k] - source_lags[m] for m, k in pairs], len(connections))
        self.projections.append(Projection(
            f"{source}_inh" if source == target else f"{source}_to_{target}_inh", source, target,
            make_connections(pre, post, weight, unit.K * n_pre, unit.K * n_post),
            model=SYNAPSE_MODEL, on_pre=ON_PRE, weight_unit=self.v_unit, delay_steps=delay))


def _per_synapse(pair_delays, n_connections):
    """Delays of the pairs' synapses (``n_connections`` per pair): one int if they are all equal."""
    pair_delays = np.asarray(pair_delays, dtype=np.int64)
    if np.all(pair_delays == pair_delays[0]):
        return int(pair_delays[0])
    return np.repeat(pair_delays, n_connections)


def _relay_buffer(n_delays):
    """Equations of the value buffer ``x_0 ... x_(n_delays - 1)`` and the code that shifts it every step."""
    buffer = "\n".join(f"x_{D} : 1  # value {D} steps ago" for D in range(n_delays))
    shift = "\n".join([f"x_{D} = x_{D - 1}" for D in range(n_delays - 1, 0, -1)] + ["x_0 = x_now"])
    return buffer + "\n", shift


def synapse_count(description):
    """Synapses per projection kind of a description: ``{"feedforward": int, "inhibition": int}``."""
    counts = {"feedforward": 0, "inhibition": 0}
    for projection in description.projections:
        counts["inhibition" if "_inh" in projection.name else "feedforward"] += projection.n_synapses
    return counts
