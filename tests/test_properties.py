"""Property-based: random small architectures converted with every scheme that supports them.

Each test draws conv/pool/linear stacks from :func:`architectures` (restricted where a scheme
cannot represent a layer) and checks every population against the torch layer applied to the
values the previous population *actually* carried (the per-layer bound of the scheme, without
the slack of errors compounding from earlier layers); where a scheme is exact the end-to-end
output is compared too, and the rate scheme's carried values are also compared with the ANN's
own activations within the compounded bound.

Examples: an example counts only if every hidden layer is active on some image (``assume``);
every test reports how many drawn examples were active, with which options, and how many were
discarded (printed: ``pytest -rP``), and fails if fewer than half of its examples were active.
``HYPOTHESIS_PROFILE=ci`` (CI) runs twice as many random examples (:func:`conftest.property_settings`);
the default runs a few fixed ones, plus one max-pooled CNN with each scheme's default options.

``ttfs`` (percentile 100 or the default 99.9): a two-stage neuron is off by at most half a step of
its code (``lambda / (2 T)``) from the layer's ReLU clipped at its scale, a max-pool neuron is
exact, and the output membrane equals the output layer applied to the last hidden values.

``rate`` (reset by subtraction, analog input, ``maxpool_tau=None`` or the default 20 ms): a
layer's charge up to the threshold check of step ``k`` is ``Q(k)`` (in thresholds). One spike per
step at most and ``v = Q(k) - n(k)`` give, exactly, ``n <= max(0, max_k Q(k))`` and ``n = T`` or
``n > min_k (Q(k) + T - 1 - k) - 1`` (the last silent step ``k``); ``Q(k)`` is computed here from
the recorded spike trains of the layer's source (the *trajectory* check). Without timing data,
``a = Q(T - 1) / T = layer(carried) / lambda`` and ``Q`` strays from the line ``(k + 1) a`` by at
most ``E = sum_j |W~_ij| D_j``, ``D_j`` a bound on the distance of source ``j``'s running count
from its own straight line, so ``clip(a, 0, 1) - (1 + E) / T < n / T <= clip(a, 0, 1) + E / T``.
``D`` is bounded a priori, from the weights alone: 0 for the constant analog input, and since
``n(k) - (k + 1) clip(a, 0, 1)`` lies in ``[-(1 + E), E]`` for every ``k``, ``D <= 1 + 2 E`` for a
layer of neurons (``D <= 1`` for the first) and the largest ``D`` of its window for a max-pool
gate with ``d = 1`` (it fires exactly ``max_j n_j(k)`` times by step ``k``); the measured ``D``
of every population is checked against that bound as well. Errors compound: with ``B`` the bound
on ``|carried - ANN|`` (ANN units), ``B_l = |W_l| B_(l-1) + lambda_l (1 + E) / T`` (max-pool: the
pool's largest ``B``), and the output differs from the ANN by at most ``|W_L| B_(L-1)``. The
limited gate with ``d = 1`` fires exactly ``max_j n_j`` times; with the default decaying estimate
it fires at most that often, and below such a gate no a priori bound is derived (only the
trajectory check and the exact output accumulator apply). The output accumulator is the output
layer applied to the carried rates (float rounding only).

``tdsnn``: spike times are compared exactly, in integer steps, with ``T(A) = ceil(L ln(A + 1) - 1/2)``
of the layer applied to the codes the previous population sent, and with
:func:`brianconv.schemes.tdsnn.emulate` end to end; the decoded value ``G - 1`` is ReLU rounded to
the nearest step of the logarithmic grid, ``|G - 1 - ReLU(A)| <= (ReLU(A) + 1)(exp(1 / (2L)) - 1)``
(:func:`~brianconv.schemes.tdsnn.code_error_bounds`). A max-pool
neuron carries exactly the largest input code; the output equals the output layer applied to the
codes (float rounding only).

``amos`` (the default wiring, or ``"dendrite"``; max-pools are wired on dendrites): each ReLU unit
with ``K`` neurons and range ``alpha`` sends ``y`` with ``0 <= ReLU(z) - y <= alpha 2^-K`` for
``z <= alpha`` (and ``alpha (1 - 2^-K)`` above), a max-pool sends exactly the unit code of its
window's largest input, ``max_j y(z_j)``, every neuron fires at most once per image, and the
outputs equal the numpy reference :meth:`brianconv.schemes.amos.AMOS.reference` (float rounding
only).
"""

import collections

import numpy as np
import torch
import torch.nn as nn
from carried_values import abs_layer, check_charge_trajectory, count_jitter, inputs_of, running_counts
from conftest import property_settings
from hypothesis import assume, example, given
from hypothesis import strategies as st
from test_amos import _unit
from test_rate import _counts
from test_tdsnn import _steps

import brianconv
from brianconv.schemes.amos import sent_values
from brianconv.schemes.tdsnn import ROUNDING_POINTS, code_error_bounds, code_value, emulate, spike_step

T = 8
SLACK = 1e-9
T_RATE = 64       # rate: image period in steps
L_TDSNN = 4.0     # tdsnn: leak constant in steps
K_AMOS = 4        # amos: neurons per ReLU unit (K^2 synapses per ANN connection)


@st.composite
def architectures(draw, pools=(nn.MaxPool2d, nn.AvgPool2d)):
    """A conv/pool/linear stack with random shapes, strides and paddings, and a matching input.

    ``pools`` are the pooling layers that may follow a convolution.
    """
    channels = input_channels = draw(st.integers(1, 3))
    size = input_size = draw(st.integers(6, 10))
    layers = []
    for _ in range(draw(st.integers(1, 2))):
        out = draw(st.integers(1, 4))
        kernel = draw(st.integers(1, 3))
        stride = draw(st.integers(1, 2))
        padding = draw(st.integers(0, kernel // 2))
        new_size = (size + 2 * padding - kernel) // stride + 1
        if new_size < 2:
            break
        layers += [nn.Conv2d(channels, out, kernel, stride, padding), nn.ReLU()]
        channels, size = out, new_size
        if draw(st.booleans()) and size >= 2:
            pool = draw(st.sampled_from(list(pools)))
            layers.append(pool(2))
            size //= 2
    features = channels * size * size
    hidden = draw(st.integers(2, 6))
    layers += [nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, draw(st.integers(2, 4)))]
    seed = draw(st.integers(0, 2 ** 16))
    return layers, input_channels, input_size, seed


def _model_and_input(spec, n_images=6):
    """The drawn model (weights mostly positive, so that deeper layers are active) and its input.

    All parameters are drawn again from ``seed`` (the layers' own initialisation at draw time
    depends on the global random state, so a replayed example would get other biases).
    """
    layers, channels, size, seed = spec
    torch.manual_seed(seed)
    model = nn.Sequential(*layers).eval()
    for module in model:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.reset_parameters()
            nn.init.uniform_(module.weight, -0.6, 0.8)
    return model, torch.rand(n_images, channels, size, size)


class _Activity:
    """Counts a property test's examples: active ones (every hidden layer non-zero on some image) and
    discarded ones (``assume``)."""

    def __init__(self, name):
        self.name, self.active, self.silent, self.kinds = name, 0, 0, collections.Counter()

    def keep_if_active(self, layers_active, kind):
        """Discard the example unless every hidden layer was active; ``kind`` names its options (tallied)."""
        active = bool(layers_active) and all(layers_active)
        self.active, self.silent = self.active + active, self.silent + (not active)
        self.kinds[kind] += active
        assume(active)

    def report(self, examples):
        """Print the tally and require at least half of the requested examples to have been active."""
        print(f"{self.name}: {self.active} active examples ({dict(self.kinds)}), {self.silent} discarded "
              "with a silent layer")
        assert self.active >= examples // 2, f"{self.name}: only {self.active} of {examples} examples were active"


#: Always run as well (hypothesis ``example``): a max-pooled CNN, so that the schemes' default pooling
#: (rate: the decaying gate, maxpool_tau = 20 ms; amos: dendrite wiring) and ttfs's default percentile
#: are covered whatever the random draws.
MAX_POOLED = ([nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 5), nn.ReLU(),
               nn.Linear(5, 3)], 2, 8, 7)

def _run_counting_active(name, examples, settings):
    """Run the hypothesis test ``examples(activity, ...)`` (drawn with ``settings``) and report its activity."""
    activity = _Activity(name)
    examples(activity)
    activity.report(settings.max_examples)


TTFS_EXAMPLES, RATE_EXAMPLES, TDSNN_EXAMPLES, AMOS_EXAMPLES = (property_settings(n) for n in (7, 8, 8, 7))


@TTFS_EXAMPLES
@given(architectures(), st.sampled_from([100.0, 99.9]))
@example(MAX_POOLED, 99.9)
def _ttfs_examples(activity, spec, percentile):
    model, x = _model_and_input(spec)
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=T, percentile=percentile)
    spiking = [p.name for p in snn.description.populations if p.threshold and p.role != "input"]
    result = snn.simulate(x, device="numpy", spikes=spiking)
    input_name = snn.graph.input.name
    carried = {input_name: _quantise(x.numpy().astype(np.float64), snn.calibration.scales[input_name])}
    active = []
    for population in snn.description.populations[1:]:
        layer = snn.graph[population.layer]
        inputs = inputs_of(snn, layer, carried)
        with torch.no_grad():
            exact = layer.forward(inputs).numpy().reshape(len(x), -1)
        if population.role == "output":
            np.testing.assert_allclose(result.outputs, exact, atol=1e-9)
            continue
        values = snn.scheme.population_values(snn.description, result, population.name)
        scale = snn.calibration.scales[layer.name]
        if layer.op == "maxpool":
            np.testing.assert_allclose(values, exact, atol=SLACK)
        else:
            assert np.max(np.abs(values - np.clip(exact, 0, scale))) <= scale / (2 * T) + SLACK
        active.append(np.any(values > 0))
        carried[layer.name] = values.reshape((len(x),) + layer.out_shape)
    activity.keep_if_active(active, f"percentile {percentile}")


def test_ttfs_matches_the_ann_layer_by_layer():
    _run_counting_active("ttfs", _ttfs_examples, TTFS_EXAMPLES)


@RATE_EXAMPLES
@given(architectures(), st.booleans())
@example(MAX_POOLED, True)
def _rate_examples(activity, spec, default_maxpool_tau):
    model, x = _model_and_input(spec)
    options = dict(duration=T_RATE, percentile=100) | ({} if default_maxpool_tau else dict(maxpool_tau=None))
    snn = brianconv.convert(model, "rate", calibration=x, **options)
    n, graph, scales = len(x), snn.graph, snn.calibration.scales
    decaying = snn.description.state.decay < 1
    assert decaying == default_maxpool_tau
    spiking = [p.name for p in snn.description.populations if p.role == "hidden"]
    result = snn.simulate(x, device="numpy", spikes=spiking)
    x64 = x.numpy().astype(np.float64)
    carried = {graph.input.name: x64}                 # analog input: the first layer reads x exactly
    so_far = {graph.input.name: x64[None] * (np.arange(1, T_RATE + 1) / T_RATE)[:, None, None, None, None]}
    jitter = {graph.input.name: np.zeros_like(x64)}   # D * lambda: a priori running-count deviation, ANN units
    bound = {graph.input.name: np.zeros_like(x64)}    # B: bound on |carried - ANN|, ANN units
    ann = {graph.input.name: torch.as_tensor(x64)}
    derived, active = True, []   # derived: no decaying max-pool gate upstream (the a priori bounds apply)
    for population in snn.description.populations[1:]:
        layer = graph[population.layer]
        with torch.no_grad():
            ann[layer.name] = layer.forward(inputs_of(snn, layer, ann))
            drive = layer.pre_activation(inputs_of(snn, layer, carried)).numpy().reshape(n, -1)
        if population.role == "output":
            np.testing.assert_allclose(result.outputs, drive, rtol=0, atol=SLACK)
            if derived:
                spread = abs_layer(snn, layer, bound).reshape(n, -1)
                assert np.all(np.abs(result.outputs - ann[layer.name].numpy().reshape(n, -1)) <= spread + SLACK)
            continue
        counts = _counts(result, population.name, n, population.size)
        scale = scales[snn.description.state.pool_sources.get(layer.name, layer.name)]
        if layer.op == "maxpool":
            if decaying:   # the limited gate never outpaces its inputs; no a priori timing bound below it
                assert np.all(counts / T_RATE * scale <= drive + SLACK)
                derived = False
            else:          # the limited gate with d = 1 fires max_j n_j times
                np.testing.assert_allclose(counts / T_RATE * scale, drive, rtol=0, atol=SLACK)
                with torch.no_grad():
                    bound[layer.name] = layer.forward(inputs_of(snn, layer, bound)).numpy()
                    jitter[layer.name] = layer.forward(inputs_of(snn, layer, jitter)).numpy()
        else:
            check_charge_trajectory(snn, layer, so_far, counts, scale)
            if derived:
                a = drive / scale
                e = abs_layer(snn, layer, jitter).reshape(n, -1) / scale
                rate, target = counts / T_RATE, np.clip(a, 0, 1)
                assert np.all(rate > target - (1 + e) / T_RATE - SLACK)
                assert np.all(rate <= target + e / T_RATE + SLACK)
                spread = abs_layer(snn, layer, bound).reshape(n, -1) + scale * (1 + e) / T_RATE
                bound[layer.name] = spread.reshape((n,) + layer.out_shape)
                jitter[layer.name] = ((1 + 2 * e) * scale).reshape((n,) + layer.out_shape)
        values = snn.scheme.population_values(snn.description, result, population.name)
        if derived:
            assert np.all(np.abs(values - ann[layer.name].numpy().reshape(n, -1)) <= bound[layer.name].reshape(n, -1)
                          + SLACK)
            measured = count_jitter(result, population.name, n, population.size, T_RATE)
            assert np.all(measured <= jitter[layer.name].reshape(n, -1) / scale + SLACK)
        active.append(counts.sum() > 0)
        carried[layer.name] = values.reshape((n,) + layer.out_shape)
        running = running_counts(result, population.name, n, population.size, T_RATE)
        so_far[layer.name] = (running * scale / T_RATE).reshape((T_RATE, n) + layer.out_shape)
    activity.keep_if_active(active, f"maxpool_tau {'20 ms' if decaying else 'None'}, {_pooling(graph)}")


def test_rate_matches_the_ann_within_the_sampling_error_of_each_layer():
    _run_counting_active("rate", _rate_examples, RATE_EXAMPLES)


@TDSNN_EXAMPLES
@given(architectures())
def _tdsnn_examples(activity, spec):
    model, x = _model_and_input(spec)
    snn = brianconv.convert(model, "tdsnn", calibration=x, L=L_TDSNN)
    n, graph, state = len(x), snn.graph, snn.description.state
    hidden = [p for p in snn.description.populations if p.role == "hidden"]
    result = snn.simulate(x, device="numpy", spikes=[p.name for p in hidden])
    emulated, emulated_steps = emulate(graph, x, L_TDSNN, t_out=state.t_out)
    x64 = x.numpy().astype(np.float64)
    carried = {graph.input.name: code_value(spike_step(x64, L_TDSNN, state.t_out[graph.input.name]), L_TDSNN)}
    active = []
    for population in snn.description.populations[1:]:
        if population.role == "helper":
            continue
        layer = graph[population.layer]
        with torch.no_grad():
            a = layer.pre_activation(inputs_of(snn, layer, carried)).numpy().reshape(n, -1)
        if population.role == "output":
            np.testing.assert_allclose(result.outputs, a, rtol=0, atol=SLACK)
            np.testing.assert_allclose(result.outputs, emulated[layer.name].reshape(n, -1), rtol=0, atol=SLACK)
            continue
        if layer.op == "maxpool":   # fires one step after its latest input: the largest code, exactly
            steps = _steps(result, population.name, n, layer.size, 1)
            np.testing.assert_allclose(code_value(steps, L_TDSNN), a, rtol=0, atol=SLACK)
        else:
            steps = _steps(result, population.name, n, layer.size, population.values["T_il"] + 1)
            raw = L_TDSNN * np.log(np.maximum(a, 0) + 1) - ROUNDING_POINTS["nearest"]
            tie = np.abs(raw - np.rint(raw)) < 1e-9     # ceil at an exact integer: float rounding decides
            expected = spike_step(a, L_TDSNN, population.values["T_out"])
            assert np.all((steps == expected) | tie)
            decoded, relu = code_value(steps, L_TDSNN), np.maximum(a, 0)
            coded = spike_step(relu, L_TDSNN) <= population.values["T_out"]   # not cut at the end of the code
            low, high = code_error_bounds(relu, L_TDSNN)
            assert np.all((decoded - relu)[coded] >= low[coded] - SLACK)
            assert np.all((decoded - relu)[coded] < high[coded] + SLACK)
            active.append(np.any(relu > 0))
        np.testing.assert_array_equal(steps, emulated_steps[layer.name].reshape(n, -1))
        carried[layer.name] = code_value(steps, L_TDSNN).reshape((n,) + layer.out_shape)
    activity.keep_if_active(active, _pooling(graph))


def test_tdsnn_spike_times_are_T_of_the_layer_exactly():
    _run_counting_active("tdsnn", _tdsnn_examples, TDSNN_EXAMPLES)


@AMOS_EXAMPLES
@given(architectures(), st.sampled_from(["auto", "dendrite"]))
@example(MAX_POOLED, "auto")
def _amos_examples(activity, spec, wiring):
    model, x = _model_and_input(spec)
    snn = brianconv.convert(model, "amos", calibration=x, K=K_AMOS, wiring=wiring)
    n, graph, d = len(x), snn.graph, snn.description
    spiking = [p.name for p in d.populations if p.threshold and p.role != "input"]
    result = snn.simulate(x, device="numpy", spikes=spiking)
    carried = {graph.input.name: x.numpy().astype(np.float64)}   # analog input: W x + b exactly
    active = []
    for population in d.populations[1:]:
        layer = graph[population.layer]
        if population.role == "output":
            with torch.no_grad():
                z = layer.pre_activation(inputs_of(snn, layer, carried)).numpy().reshape(n, -1)
            np.testing.assert_allclose(result.outputs, z, rtol=0, atol=SLACK)
            continue
        image, neuron, _ = result.spikes[population.name]
        assert np.bincount(image * population.size + neuron).max(initial=0) <= 1, f"{population.name} fired twice"
        if population.name not in d.state.units:   # a dendrite or a max-pool's candidates: checked via the pool
            continue
        if layer.op == "maxpool":   # sends the unit code of the window's largest input, y(max z) = max y(z)
            source = graph[layer.inputs[0]]
            unit = snn.scheme.unit_for(source, snn.calibration)
            with torch.no_grad():
                z = source.pre_activation(inputs_of(snn, source, carried)).numpy()
                expected = layer.forward(torch.as_tensor(unit(z))).numpy().reshape(n, -1)
            sent = snn.scheme.population_values(d, result, population.name)
            np.testing.assert_allclose(sent, expected, rtol=0, atol=SLACK)
        else:
            with torch.no_grad():
                z = layer.pre_activation(inputs_of(snn, layer, carried)).numpy().reshape(n, -1)
            unit, alpha = _unit(snn, population), snn.calibration.scales[layer.name]
            sent, _ = sent_values(result, d, population.name, unit, n)
            inside = z <= alpha
            error = np.maximum(z, 0) - sent
            assert np.all(error[inside] >= -SLACK)
            assert np.all(error[inside] <= alpha * 2.0 ** -K_AMOS + SLACK)
            np.testing.assert_allclose(sent[~inside], alpha * (1 - 2.0 ** -K_AMOS), rtol=0, atol=SLACK)
        active.append(np.any(sent > 0))
        carried[layer.name] = sent.reshape((n,) + layer.out_shape)
    reference, _ = snn.scheme.reference(graph, snn.calibration, x)
    np.testing.assert_allclose(result.outputs, reference, rtol=0, atol=SLACK)
    activity.keep_if_active(active, f"wiring {d.state.wiring}, {_pooling(graph)}")


def test_amos_units_stay_within_alpha_2_to_the_minus_K_and_pools_send_the_largest_code():
    _run_counting_active("amos", _amos_examples, AMOS_EXAMPLES)


def _pooling(graph):
    """``"max-pool"`` if the graph max-pools, else ``"no max-pool"`` (for the example tally)."""
    return "max-pool" if any(layer.op == "maxpool" for layer in graph) else "no max-pool"


def _quantise(values, scale):
    return np.floor(np.clip(values / scale, 0, 1) * T + 0.5) * scale / T
