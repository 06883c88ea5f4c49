"""The NIR bridge: analytic single neurons, rate -> NIR -> brianconv, snnTorch and sinabs step by step.

Spike trains are compared exactly (every spike at the same step). Where a framework computes in
float32 and brianconv in float64, a spike can only differ if the membrane potential lies within
float32 rounding (~1e-7 relative) of the threshold; the inputs and weights are random floats,
for which this does not happen, so no tolerance is needed (and none is used).
"""

import dataclasses

import numpy as np
import pytest
import torch
from brian2 import ms, second, volt
from conftest import needs_compiler

import brianconv.nir as bn
from brianconv.errors import ConversionError, InvalidValueError

try:
    import nir
except ImportError:  # the optional extra: pip install brianconv[nir]
    nir = None

requires_nir = pytest.mark.skipif(nir is None, reason="needs the nir extra (pip install brianconv[nir])")

#: numpy code generation: these networks are tiny, Cython compilation would dominate
DEVICE = "numpy"


def spike_array(result, population, n_images, steps, size):
    """Monitored spikes as an array (N, steps, size) of 0/1."""
    out = np.zeros((n_images, steps, size))
    image, neuron, step = result.spikes[population]
    keep = step < steps
    out[image[keep], step[keep], neuron[keep]] = 1
    return out


def affine_if_graph(weight, bias, threshold=1.0, r=1.0):
    n = weight.shape[0]
    return nir.NIRGraph(
        nodes={"in": nir.Input(np.array([weight.shape[1]])), "fc": nir.Affine(weight, bias),
               "if": nir.IF(r=np.full(n, r), v_threshold=np.full(n, threshold)), "out": nir.Output(np.array([n]))},
        edges=[("in", "fc"), ("fc", "if"), ("if", "out")])


def test_the_core_works_without_nir_and_the_bridge_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "nir", None)   # as if nir were not installed
    with pytest.raises(ImportError, match=r"pip install brianconv\[nir\]"):
        bn.from_nir("graph.nir", dt=1 * ms)
    with pytest.raises(bn.MissingExtraError):
        bn.to_nir(None)


# ---------------------------------------------------------------------------------------------
# single neurons against NIR's equations
# ---------------------------------------------------------------------------------------------

@requires_nir
def test_if_constant_input_gives_the_analytic_spike_count():
    """dv/dt = r I with constant I, reset by subtraction: floor(T dt r I / v_th) spikes (no ties here)."""
    rng = np.random.default_rng(1)
    weight, bias = rng.uniform(-0.5, 1.0, (5, 3)), rng.uniform(-0.1, 0.2, 5)
    x = rng.uniform(0, 1, (4, 3))
    steps, dt, r, threshold = 37, 0.5 * ms, 400.0, 0.9   # one step adds dt * r * I = 0.2 I
    net = bn.from_nir(affine_if_graph(weight, bias, threshold, r), dt=dt)
    result = net.simulate(x, steps=steps, device=DEVICE, spikes=["if_"])
    drive = x @ weight.T + bias
    expected = np.floor(np.maximum(steps * float(dt / second) * r * drive, 0) / threshold)
    np.testing.assert_array_equal(result.outputs, expected)
    np.testing.assert_array_equal(result.spike_counts["if_"], expected.sum(axis=1))
    # the k-th spike comes in the first step where (step + 1) * dt r I > k v_th
    first = spike_array(result, "if_", 4, steps, 5).argmax(axis=1)
    fires = expected > 0
    np.testing.assert_array_equal(first[fires], np.floor(threshold / (dt / second * r * drive[fires])))


def _recurrence(kind, x, weight, bias, steps, dt, p):
    """Forward Euler of NIR's equations in numpy (input held for the step), spikes (N, steps, n)."""
    n_images, n = len(x), weight.shape[0]
    current = x @ weight.T + bias
    v, i_syn, spikes, vs = np.zeros((n_images, n)), np.zeros((n_images, n)), [], []
    for _ in range(steps):
        if kind == "LIF":
            v = v + dt / p["tau"] * ((p["v_leak"] - v) + p["r"] * current)
        elif kind == "CubaLIF":
            v, i_syn = (v + dt / p["tau_mem"] * ((p["v_leak"] - v) + p["r"] * i_syn),
                        i_syn + dt / p["tau_syn"] * (p["w_in"] * current - i_syn))
        z = v > p["v_threshold"]
        v = np.where(z, v - p["v_threshold"], v)
        spikes.append(z)
        vs.append(v.copy())
    return np.stack(spikes, axis=1).astype(float), np.stack(vs, axis=1)


@pytest.mark.parametrize("kind", ["LIF", "CubaLIF"])
@requires_nir
def test_leaky_neurons_follow_the_euler_recurrence(kind):
    rng = np.random.default_rng(2)
    n, steps, dt = 4, 30, 1e-3
    weight, bias = rng.uniform(0, 1.5, (n, 3)), rng.uniform(0, 0.2, n)
    x = rng.uniform(0, 1, (3, 3))
    p = dict(tau=np.full(n, 5e-3), tau_mem=np.full(n, 5e-3), tau_syn=np.full(n, 2e-3), r=np.full(n, 1.7),
             v_leak=np.full(n, 0.1), v_threshold=np.full(n, 0.6), w_in=np.full(n, 1.3))
    node = nir.LIF(tau=p["tau"], r=p["r"], v_leak=p["v_leak"], v_threshold=p["v_threshold"]) if kind == "LIF" else \
        nir.CubaLIF(tau_syn=p["tau_syn"], tau_mem=p["tau_mem"], r=p["r"], v_leak=p["v_leak"],
                    v_threshold=p["v_threshold"], w_in=p["w_in"])
    graph = nir.NIRGraph(nodes={"in": nir.Input(np.array([3])), "fc": nir.Affine(weight, bias), "cell": node,
                                "out": nir.Output(np.array([n]))},
                         edges=[("in", "fc"), ("fc", "cell"), ("cell", "out")])
    result = bn.from_nir(graph, dt=dt * second, v_unit=1 * volt).simulate(
        x, steps=steps, device=DEVICE, spikes=["cell"], states={"cell": (["v"], np.arange(n))})
    expected, v = _recurrence(kind, x, weight, bias, steps, dt, p)
    assert expected.sum() > 10
    np.testing.assert_array_equal(spike_array(result, "cell", 3, steps, n), expected)
    np.testing.assert_allclose(result.states["cell"]["v"], v, rtol=1e-12, atol=1e-12)


@dataclasses.dataclass(eq=False)
class CubaLI:
    """NIR 1.1's CubaLI (absent from nir 1.0), read by the importer through its class name and fields."""

    tau_syn: np.ndarray
    tau_mem: np.ndarray
    r: np.ndarray
    v_leak: np.ndarray
    w_in: np.ndarray
    input_type: dict = None


@requires_nir
def test_cuba_li_output_follows_the_euler_recurrence():
    rng = np.random.default_rng(6)
    n, steps, dt = 3, 20, 1e-3
    weight, bias = rng.uniform(-1, 1, (n, 2)), rng.uniform(0, 0.2, n)
    x = rng.uniform(0, 1, (2, 2))
    p = dict(tau_syn=2e-3, tau_mem=6e-3, r=1.5, v_leak=0.05, w_in=0.8)
    cell = CubaLI(**{k: np.full(n, v) for k, v in p.items()})
    graph = nir.NIRGraph(nodes={"in": nir.Input(np.array([2])), "fc": nir.Affine(weight, bias), "cell": cell,
                                "out": nir.Output(np.array([n]))},
                         edges=[("in", "fc"), ("fc", "cell"), ("cell", "out")])
    result = bn.from_nir(graph, dt=dt * second, v_unit=1 * volt).simulate(x, steps=steps, device=DEVICE)
    current, v, i_syn = x @ weight.T + bias, np.zeros((2, n)), np.zeros((2, n))
    for _ in range(steps):
        v, i_syn = (v + dt / p["tau_mem"] * ((p["v_leak"] - v) + p["r"] * i_syn),
                    i_syn + dt / p["tau_syn"] * (p["w_in"] * current - i_syn))
    np.testing.assert_allclose(result.outputs, v, rtol=1e-12, atol=1e-15)


@requires_nir
def test_li_output_and_threshold_scale_delay_nodes():
    """Input -> Scale -> Threshold -> Delay -> Affine -> LI -> Output: the LI's v is the output.

    Image 0's last two steps of threshold spikes would arrive (delayed) in image 1's window: they
    are dropped, so image 1 (no crossings) reads exactly 0.
    """
    steps, dt, tau = 12, 1e-3, 4e-3
    scale = np.array([1.0, 2.0, 0.5])
    graph = nir.NIRGraph(
        nodes={"in": nir.Input(np.array([3])), "s": nir.Scale(scale), "th": nir.Threshold(np.full(3, 0.5)),
               "d": nir.Delay(np.full(3, 2e-3)), "fc": nir.Linear(np.array([[1.0, 1.0, 1.0]])),
               "li": nir.LI(tau=np.array([tau]), r=np.array([1.0]), v_leak=np.array([0.0])),
               "out": nir.Output(np.array([1]))},
        edges=[("in", "s"), ("s", "th"), ("th", "d"), ("d", "fc"), ("fc", "li"), ("li", "out")])
    x = np.array([[0.6, 0.3, 0.6], [0.2, 0.2, 0.2]])
    result = bn.from_nir(graph, dt=dt * second, v_unit=1 * volt).simulate(x, steps=steps, device=DEVICE,
                                                                          spikes=["th"])
    crossings = (x * scale > 0.5).sum(axis=1)          # 2 and 0 threshold units on, every step
    np.testing.assert_array_equal(result.spike_counts["th"], crossings * steps)
    # the LI integrates the count from step 2 on (the delay): v_k = sum_j (1 - dt/tau)^(k-j) dt/tau * c
    beta = 1 - dt / tau
    expected = [sum(beta ** (steps - 1 - j) * dt / tau * c for j in range(2, steps)) for c in crossings]
    np.testing.assert_allclose(result.outputs[:, 0], expected, rtol=1e-12)


@requires_nir
def test_framed_input_one_frame_per_step():
    weight, bias = np.array([[1.0, -1.0]]), np.array([0.0])
    net = bn.from_nir(affine_if_graph(weight, bias, threshold=0.9), dt=1 * second, v_unit=1 * volt)
    frames = np.zeros((2, 6, 2))
    frames[0, [1, 4], 0] = 1.0   # image 0: input 0 on in frames 1 and 4 -> spikes at steps 1 and 4
    frames[1, :, 1] = 1.0        # image 1: only the inhibitory input
    result = net.simulate(frames, device=DEVICE, spikes=["if_"])
    assert result.parameters["steps"] == 6
    np.testing.assert_array_equal(spike_array(result, "if_", 2, 6, 1)[:, :, 0],
                                  [[0, 1, 0, 0, 1, 0], [0] * 6])


@requires_nir
def test_unsupported_nodes_and_bad_options_raise_clear_errors():
    graph = affine_if_graph(np.eye(2), np.zeros(2))
    graph.nodes["conv1d"] = nir.Conv1d(None, np.ones((1, 1, 2)), 1, 0, 1, 1, np.zeros(1))
    graph.edges.append(("in", "conv1d"))
    with pytest.raises(ConversionError, match="'conv1d' of type 'Conv1d'"):
        bn.from_nir(graph, dt=1 * ms)
    with pytest.raises(InvalidValueError, match="dt must be a positive Brian2 time"):
        bn.from_nir(affine_if_graph(np.eye(2), np.zeros(2)), dt=0.001)
    with pytest.raises(InvalidValueError, match="method"):
        bn.from_nir(affine_if_graph(np.eye(2), np.zeros(2)), dt=1 * ms, method="rk4")


# ---------------------------------------------------------------------------------------------
# rate -> NIR -> brianconv
# ---------------------------------------------------------------------------------------------

def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.ReLU(), torch.nn.Linear(10, 4)).eval()


@requires_nir
def test_rate_round_trip_gives_the_same_network():
    import brianconv

    x = torch.rand(16, 6)
    snn = brianconv.convert(_mlp(), "rate", calibration=x, duration=30)
    graph = bn.to_nir(snn)
    assert [type(n).__name__ for n in graph.nodes.values()] == ["Input", "Affine", "IF", "Affine", "I", "Output"]
    back = bn.from_nir(graph, dt=snn.description.dt)
    hidden = snn.description.populations[1].name
    before = snn.simulate(x, device=DEVICE, spikes=[hidden])
    after = back.simulate(x, steps=30, device=DEVICE, spikes=[hidden])
    np.testing.assert_array_equal(after.predictions, before.predictions)
    np.testing.assert_array_equal(after.spike_counts[hidden], before.spike_counts[hidden])
    for a, b in zip(after.spikes[hidden], before.spikes[hidden]):
        np.testing.assert_array_equal(np.sort(a), np.sort(b))
    # rate decodes v * lambda_L / (v_unit T); the integrator's v (NIR units) is the sum of the inputs
    np.testing.assert_allclose(after.outputs * graph.metadata["output_scale"] / 30, before.outputs, rtol=1e-9,
                               atol=1e-12)


@requires_nir
def test_rate_round_trip_with_conv_and_average_pooling(tmp_path):
    import brianconv

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten(),
                                torch.nn.Linear(8, 3)).eval()
    x = torch.rand(6, 1, 6, 6)
    snn = brianconv.convert(model, "rate", calibration=x, duration=20)
    path = tmp_path / "net.nir"
    nir.write(path, bn.to_nir(snn))
    back = bn.from_nir(str(path), dt=snn.description.dt)
    before, after = snn.simulate(x, device=DEVICE), back.simulate(x, steps=20, device=DEVICE)
    np.testing.assert_array_equal(after.predictions, before.predictions)
    conv = snn.description.populations[1].name
    np.testing.assert_array_equal(after.spike_counts[conv], before.spike_counts[conv])


@pytest.mark.parametrize("method,options,match", [
    ("ttfs", dict(t_max=8), "two-stage neuron"),
    ("tdsnn", dict(L=4.0), "ticking neuron"),
    ("amos", dict(K=4), "AMOS units"),
    ("rate", dict(duration=8, input="poisson"), "poisson"),
])
@requires_nir
def test_export_of_other_schemes_raises(method, options, match):
    import brianconv

    x = torch.rand(8, 6)
    snn = brianconv.convert(_mlp(), method, calibration=x, **options)
    with pytest.raises(ConversionError, match=match):
        bn.to_nir(snn)


# ---------------------------------------------------------------------------------------------
# snnTorch and sinabs
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def snntorch_export(monkeypatch):
    """``snntorch.export_nir.export_to_nir``, made to run on nir 1.0.

    snnTorch 1.0 writes NIR 1.1 nodes (``LIF(..., v_reset=0)``), which nir 1.0.4 cannot build;
    where the installed nir lacks ``v_reset``, a ``LIF`` with that extra field stands in for it
    while exporting (the importer then resets to ``v_reset``, NIR 1.1's reading).
    """
    snntorch_export_nir = pytest.importorskip("snntorch.export_nir")
    if "v_reset" not in nir.LIF.__dataclass_fields__:
        @dataclasses.dataclass(eq=False)
        class LIF(nir.LIF):
            v_reset: np.ndarray = None

        monkeypatch.setattr(nir, "LIF", LIF)
    return snntorch_export_nir.export_to_nir


@requires_nir
def test_snntorch_leaky_network_spike_for_spike(snntorch_export):
    snn = pytest.importorskip("snntorch")
    from snntorch import utils
    torch.manual_seed(3)
    n_in, n_hidden, n_out, steps, n_images = 5, 7, 3, 25, 3

    def leaky(beta):
        return snn.Leaky(beta=beta, threshold=1.0, init_hidden=True, reset_mechanism="zero", reset_delay=False)

    net = torch.nn.Sequential(torch.nn.Linear(n_in, n_hidden), leaky(0.85), torch.nn.Linear(n_hidden, n_out),
                              leaky(0.7))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[2].weight.mul_(4.0)
        net[2].bias.add_(0.3)
    graph = snntorch_export(net, torch.zeros(1, n_in))
    x = torch.rand(n_images, steps, n_in)
    reference = {1: [], 3: []}
    with torch.no_grad():
        utils.reset(net)
        for t in range(steps):
            h = x[:, t]
            for k, module in enumerate(net):
                h = module(h)
                if k in reference:
                    reference[k].append(h.numpy().copy())
    imported = bn.from_nir(graph, dt=1e-4 * second)   # snnTorch writes tau = dt / (1 - beta) with dt = 1e-4
    result = imported.simulate(x, device=DEVICE, spikes=["n1", "n3"])
    for k, size in ((1, n_hidden), (3, n_out)):
        expected = np.stack(reference[k], axis=1)
        assert expected.sum() > 5
        np.testing.assert_array_equal(spike_array(result, f"n{k}", n_images, steps, size), expected)
    np.testing.assert_array_equal(result.outputs, np.stack(reference[3], axis=1).sum(axis=1))


@requires_nir
def test_sinabs_iaf_network_spike_for_spike():
    sinabs_layers = pytest.importorskip("sinabs.layers")
    from sinabs.activation import SingleSpike
    from sinabs.nir import to_nir

    torch.manual_seed(4)
    steps, n_images = 20, 2

    def iaf():
        return sinabs_layers.IAFSqueeze(batch_size=1, spike_fn=SingleSpike, spike_threshold=torch.tensor(1.0))

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, bias=False), iaf(), sinabs_layers.SumPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(8, 3), iaf())
    with torch.no_grad():
        net[0].weight.mul_(2.0)
    x = torch.rand(n_images, steps, 1, 6, 6)
    reference = {1: [], 5: []}
    with torch.no_grad():
        for image in range(n_images):
            for module in net:
                if hasattr(module, "reset_states"):
                    module.reset_states()
            h = x[image]                         # (time, C, H, W): IAFSqueeze folds batch and time
            for k, module in enumerate(net):
                h = module(h)
                if k in reference:
                    reference[k].append(h.reshape(steps, -1).numpy().copy())
        graph = to_nir(net, x[0])
    imported = bn.from_nir(graph, dt=1 * second, v_unit=1 * volt)   # sinabs' IAF adds its input once per step
    names = imported.population_names
    populations = [names[k] for k, node in graph.nodes.items() if type(node).__name__ == "IF"]
    result = imported.simulate(x, device=DEVICE, spikes=populations)
    for k, population in zip((1, 5), populations):
        expected = np.stack(reference[k])
        assert expected.sum() > 5
        np.testing.assert_array_equal(spike_array(result, population, n_images, steps, expected.shape[2]), expected)


# ---------------------------------------------------------------------------------------------
# C++ standalone
# ---------------------------------------------------------------------------------------------

@pytest.mark.standalone
@needs_compiler
@requires_nir
def test_standalone_matches_runtime_and_compiles_once(build_root):
    rng = np.random.default_rng(5)
    weight, bias = rng.uniform(-0.3, 1.0, (4, 3)), rng.uniform(0, 0.1, 4)
    net = bn.from_nir(affine_if_graph(weight, bias, r=1000.0), dt=1 * ms, v_unit=1 * volt)  # one step adds I
    # one frame per step (the stimulus rows hold all frames of a sample); a held input is the
    # stimulus every scheme's identity test compiles, so one program is built here
    frames = rng.uniform(0, 1, (3, 15, 3))
    runtime = net.simulate(frames, device=DEVICE)
    first = net.simulate(frames, device="cpp_standalone", build_root=build_root, batch_size=4)
    again = net.simulate(frames[::-1], device="cpp_standalone", build_root=build_root, batch_size=4)
    assert first.timing["compiled"] and not again.timing["compiled"]
    np.testing.assert_array_equal(first.outputs, runtime.outputs)
    np.testing.assert_array_equal(again.outputs, runtime.outputs[::-1])
