"""Perturbation knobs (brianconv.perturbations): defaults exact, each knob against a reference, determinism.

Tiny fully connected nets on the numpy runtime device; one module-scoped standalone build for the
device/worker determinism check.
"""

import numpy as np
import pytest
import torch
from brian2 import Network, defaultclock, ms, mV
from conftest import needs_compiler

import brianconv
from brianconv.errors import InvalidValueError
from brianconv.perturbations import KNOBS, perturb_normal, perturb_uniform

N_IN, N_HIDDEN = 16, 48


def _net(second_layer=None, n_out=4, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(N_IN, N_HIDDEN), torch.nn.ReLU(), torch.nn.Linear(N_HIDDEN, n_out))
    if second_layer is not None:
        with torch.no_grad():
            net[2].weight.copy_(torch.as_tensor(second_layer, dtype=torch.float32))
            net[2].bias.zero_()
    return net.eval()


def _data(n=12, seed=1):
    return np.random.default_rng(seed).random((n, N_IN)).astype(np.float32)


SCHEMES = {"rate": dict(duration=30), "ttfs": dict(t_max=16), "tdsnn": dict(L=4.0), "amos": dict(K=4)}


@pytest.fixture(scope="module")
def data():
    return _data(), _data(64, seed=2)


@pytest.mark.parametrize("method", list(SCHEMES))
def test_every_knob_at_its_default_reproduces_the_spikes(method, data):
    x, calibration = data
    plain = brianconv.convert(_net(), method, calibration=calibration, **SCHEMES[method])
    perturbed = brianconv.convert(_net(), method, calibration=calibration, perturbations="all", **SCHEMES[method])
    assert perturbed.description.fingerprint(4) != plain.description.fingerprint(4)  # the knobs are compiled in
    names = [p.name for p in plain.description.populations if p.threshold and p.role != "input"]
    a = plain.simulate(x, device="numpy", spikes=names)
    b = perturbed.simulate(x, device="numpy", spikes=names)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    for name in names:
        for left, right in zip(a.spikes[name], b.spikes[name]):
            np.testing.assert_array_equal(left, right)


def test_unperturbed_description_is_untouched(data):
    _, calibration = data
    snn = brianconv.convert(_net(), "rate", calibration=calibration, duration=30)
    assert snn.description.perturbations == ()
    assert all(not p.regular and p.refractory is None for p in snn.description.populations)


def test_schemes_reject_knobs_they_cannot_take_with_the_reason(data):
    _, calibration = data
    with pytest.raises(InvalidValueError, match="leak tau = L"):
        brianconv.convert(_net(), "tdsnn", calibration=calibration, perturbations=("tau_m",), L=4.0)
    with pytest.raises(InvalidValueError, match="memoryless"):
        brianconv.convert(_net(), "amos", calibration=calibration, perturbations=("tau_m",), K=4)
    with pytest.raises(InvalidValueError, match="integration='clock'"):
        brianconv.convert(_net(), "ttfs", calibration=calibration, perturbations=("sigma_v",), integration="event")
    snn = brianconv.convert(_net(), "tdsnn", calibration=calibration, perturbations="all", L=4.0)
    assert set(snn.description.perturbations) == set(KNOBS) - {"tau_m", "sigma_th"}
    plain = brianconv.convert(_net(), "rate", calibration=calibration, duration=30)
    with pytest.raises(InvalidValueError, match="perturbations=\\('p_fail',\\)"):
        plain.simulate(calibration[:2], device="numpy", p_fail=0.1)
    with pytest.raises(InvalidValueError, match="perturbations=\\('sigma_delay',\\)"):
        plain.simulate(calibration[:2], device="numpy", sigma_delay=0.1 * ms)
    delayed = brianconv.convert(_net(), "rate", calibration=calibration, duration=30, perturbations=("sigma_delay",))
    with pytest.raises(InvalidValueError, match="sigma_delay must be a Brian2 quantity >= 0 in units of s, got 0.1"):
        delayed.simulate(calibration[:2], device="numpy", sigma_delay=0.1)


def _free_membrane(calibration, x, **knobs):
    """``v`` of every hidden neuron of a rate net whose thresholds are never reached, shape (N, steps, 48)."""
    snn = brianconv.convert(_net(), "rate", calibration=calibration, duration=30, perturbations="all")
    states = {"linear_0": (["v"], np.arange(N_HIDDEN))}
    return snn.simulate(x, device="numpy", states=states, threshold_scale=1e9, **knobs).states["linear_0"]["v"]


def test_leak_follows_the_closed_form(data):
    """A constant charge ``z`` per step, then the leak: ``v_k = z lam (1 - lam^k) / (1 - lam)``,
    ``lam = exp(-dt / tau)``."""
    x, calibration = data
    free = _free_membrane(calibration, x)
    leaky = _free_membrane(calibration, x, tau_m=5 * ms)
    z = free[:, 0, :]                                # the first step's charge (no leak: v_k = (k + 1) z)
    np.testing.assert_allclose(free[:, 10, :], 11 * z, rtol=1e-12, atol=1e-18)
    lam = np.exp(-1 / 5)
    k = np.arange(1, 30)[None, :, None]              # the last step of the window resets v
    expected = z[:, None, :] * lam * (1 - lam ** k) / (1 - lam)
    np.testing.assert_allclose(leaky[:, :29, :], expected, rtol=1e-10, atol=1e-15)


def test_free_membrane_variance_grows_as_sigma_squared_times_steps(data):
    """Noise only: ``v_k - v_k(no noise)`` sums ``k + 1`` draws of ``sigma_v``; its sample variance over
    12 x 48 = 576 neurons is within 5 standard errors (``sqrt(2 / (n - 1))``, chi-square) of ``(k+1) sigma^2``."""
    x, calibration = data
    sigma = 0.05 * mV
    noise = _free_membrane(calibration, x, sigma_v=sigma, seed=4) - _free_membrane(calibration, x)
    n = noise.shape[0] * noise.shape[2]
    for k in (0, 9, 28):
        variance = np.var(noise[:, k, :]) / float(sigma) ** 2
        assert abs(variance / (k + 1) - 1) < 5 * np.sqrt(2 / (n - 1)), (k, variance)


def test_refractory_period_caps_the_rate(data):
    """With the input saturating (threshold a tenth of normal), a neuron fires at most once per ``t_ref``:
    at most ``ceil(30 / 4) = 8`` spikes in a 30-step window, and the most driven neurons reach it."""
    x, calibration = data
    snn = brianconv.convert(_net(), "rate", calibration=calibration, duration=30, perturbations=("t_ref",))
    most = []
    for t_ref in (0 * ms, 4 * ms):
        result = snn.simulate(x, device="numpy", threshold_scale=0.1, t_ref=t_ref, spikes=["linear_0"])
        image, neuron, _ = result.spikes["linear_0"]
        counts = np.zeros((len(x), N_HIDDEN), dtype=int)
        np.add.at(counts, (image, neuron), 1)
        most.append(counts.max())
    assert most[0] > 8 and most[1] == 8


def test_transmission_failures_are_binomial(data):
    """All output weights 1: the output's charge counts delivered spikes; their fraction is ``1 - p_fail``
    within 5 binomial standard errors."""
    x, calibration = data
    net = _net(second_layer=np.ones((1, N_HIDDEN)), n_out=1)
    snn = brianconv.convert(net, "rate", calibration=calibration, duration=30, perturbations=("p_fail",))
    clean = snn.simulate(x, device="numpy")
    per_spike = clean.outputs[:, 0] / clean.spike_counts["linear_0"]          # output value of one delivered spike
    assert np.allclose(per_spike, per_spike[0], rtol=1e-9)
    failing = snn.simulate(x, device="numpy", p_fail=0.3, seed=7)
    sent = failing.spike_counts["linear_0"].sum()
    delivered = failing.outputs[:, 0].sum() / per_spike[0]
    assert abs(delivered / sent - 0.7) < 5 * np.sqrt(0.3 * 0.7 / sent), (delivered, sent)


def test_delay_jitter_delivers_exactly_the_spikes_that_stay_in_their_image(data):
    """All output weights 1: the output counts delivered spikes. Hidden neuron ``i``'s synapse is
    ``round(|g_i| sigma_delay / dt)`` steps late (``g_i`` the generator's draw for this projection), so a
    spike sent at step ``k`` of a 30-step window is delivered iff ``k + jitter_i < 30`` (the reference is
    counted here from the monitored spikes). Its delays are set afresh in every run (no accumulation)."""
    x, calibration = data
    net = _net(second_layer=np.ones((1, N_HIDDEN)), n_out=1)
    snn = brianconv.convert(net, "rate", calibration=calibration, duration=30, perturbations=("sigma_delay",))
    clean = snn.simulate(x, device="numpy")
    per_spike = clean.outputs[:, 0] / clean.spike_counts["linear_0"]
    number = [q.target for q in snn.description.projections].index(snn.description.output_population)
    for seed in (5, 6):  # the second run starts from the scheme's delays again
        jitter = np.floor(np.minimum(np.abs(perturb_normal(seed, (5 << 24) + number, np.arange(N_HIDDEN), 0, 0))
                                     * 8.0, 30) + 0.5)
        assert 0 < np.mean(jitter) < 10  # sigma_delay 8 steps: late spikes, and some lost
        run = snn.simulate(x, device="numpy", spikes=["linear_0"], sigma_delay=8 * snn.description.dt, seed=seed)
        image, neuron, step = run.spikes["linear_0"]
        delivered = np.bincount(image, weights=step + jitter[neuron] < 30, minlength=len(x))
        assert delivered.sum() < len(image)
        np.testing.assert_allclose(run.outputs[:, 0], delivered * per_spike[0], rtol=1e-9, atol=1e-12)


def test_two_bit_weights_round_to_sign_and_scale(data):
    """2 bits: weights 1 and 0.3 of the output become 1 and 0, as in the net whose 0.3 weights are zero."""
    x, calibration = data
    mixed = np.where(np.arange(N_HIDDEN) % 2 == 0, 1.0, 0.3)[None, :]
    zeroed = np.where(np.arange(N_HIDDEN) % 2 == 0, 1.0, 0.0)[None, :]
    results = [brianconv.convert(_net(second_layer=w, n_out=1), "rate", calibration=calibration, duration=30,
                                 perturbations=("weight_bits",)).simulate(x, device="numpy", weight_bits=2)
               for w in (mixed, zeroed)]
    np.testing.assert_allclose(results[0].outputs, results[1].outputs, rtol=1e-9)


def test_threshold_mismatch_and_weight_noise_are_fixed_patterns(data):
    x, calibration = data
    snn = brianconv.convert(_net(), "rate", calibration=calibration, duration=30, perturbations="all")
    setup = brianconv.perturbations.setup_run(snn.scheme, snn.description, dict(sigma_th=0.2, seed=3))
    gain = setup.values[("linear_0", "threshold_gain")]
    assert abs(gain.mean() - 1) < 5 * 0.2 / np.sqrt(N_HIDDEN) and abs(gain.std() / 0.2 - 1) < 0.5
    again = brianconv.perturbations.setup_run(snn.scheme, snn.description, dict(sigma_th=0.2, seed=3))
    np.testing.assert_array_equal(gain, again.values[("linear_0", "threshold_gain")])
    a = snn.simulate(x, device="numpy", sigma_w=0.3, seed=1)
    b = snn.simulate(x, device="numpy", sigma_w=0.3, seed=1)
    c = snn.simulate(x, device="numpy", sigma_w=0.3, seed=2)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert not np.array_equal(a.outputs, c.outputs)


def test_a_perturbed_network_saves_and_loads_with_its_draws(data, tmp_path):
    """The counter-based draw functions in the namespaces are saved by reference and found again."""
    x, calibration = data
    snn = brianconv.convert(_net(), "rate", calibration=calibration, duration=30, perturbations="all")
    snn.save(tmp_path / "perturbed.pkl")
    loaded = brianconv.load_network(tmp_path / "perturbed.pkl")
    assert loaded.description.fingerprint(4) == snn.description.fingerprint(4)
    knobs = dict(sigma_v=0.05, p_fail=0.2, sigma_w=0.2, sigma_delay=0.4 * ms, seed=4)
    np.testing.assert_array_equal(loaded.simulate(x, device="numpy", **knobs).outputs,
                                  snn.simulate(x, device="numpy", **knobs).outputs)


def test_draws_are_uniform_and_normal():
    u = perturb_uniform(5, 1 << 24, np.arange(20000), 3, 11)
    g = perturb_normal(5, 1 << 24, np.arange(20000), 3, 11)
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / 20000) and 0 <= u.min() and u.max() < 1
    assert abs(g.mean()) < 5 / np.sqrt(20000) and abs(g.var() - 1) < 5 * np.sqrt(2 / 20000)


KNOBS_ON = dict(tau_m=20 * ms, sigma_v=0.05, sigma_th=0.1, p_fail=0.2, sigma_w=0.2, sigma_delay=0.4 * ms,
                weight_bits=6, seed=11)


def test_same_draws_on_every_device_worker_count_and_batch_size(data, tmp_path_factory):
    """Runtime (numpy) = C++ standalone, 1 worker = 2 workers, batches of 4 = one batch of 12
    (Cython's draws equal numpy's: test_cython_draws_equal_numpy_bit_for_bit)."""
    x, calibration = data
    snn = brianconv.convert(_net(), "rate", calibration=calibration, duration=30, perturbations="all")
    root = tmp_path_factory.mktemp("builds")
    one = snn.simulate(x, device="cpp_standalone", batch_size=4, n_workers=1, build_root=root, **KNOBS_ON)
    two = snn.simulate(x, device="cpp_standalone", batch_size=4, n_workers=2, build_root=root, **KNOBS_ON)
    whole = snn.simulate(x, device="numpy", batch_size=12, **KNOBS_ON)
    for other in (two, whole):
        np.testing.assert_array_equal(one.outputs, other.outputs)
        for name in one.spike_counts:
            np.testing.assert_array_equal(one.spike_counts[name], other.spike_counts[name])
    clean = snn.simulate(x, device="numpy", batch_size=12)
    assert not np.array_equal(clean.outputs, whole.outputs)  # the knobs did something


@needs_compiler
def test_cython_draws_equal_numpy_bit_for_bit():
    """The Cython implementations of the three counter-based draws (one compiled code object)
    return numpy's numbers exactly, negative and large counters included."""
    from brian2 import NeuronGroup

    from brianconv.builder.programs import _runtime_target
    from brianconv.schemes.poisson import uniform_hash

    n = 1000
    with _runtime_target("cython"):
        group = NeuronGroup(n, "u : 1\ng : 1\nh : 1\nk : integer")
        group.k = "i * 7919 - 3000000"
        group.run_regularly("u = perturb_uniform(5, k, i, -3, 2147483647)\n"
                            "g = perturb_normal(-9, 1073741823, k, i, 12)\n"
                            "h = uniform_hash(11, k, i, 4)", when="start")
        Network(group).run(defaultclock.dt, namespace=dict(perturb_uniform=perturb_uniform,
                                                           perturb_normal=perturb_normal, uniform_hash=uniform_hash))
    assert type(group.contained_objects[-1].codeobj).__name__ == "CythonCodeObject"
    i = np.arange(n)
    k = i * 7919 - 3000000
    np.testing.assert_array_equal(group.u[:], perturb_uniform(5, k, i, -3, 2147483647))
    np.testing.assert_array_equal(group.g[:], perturb_normal(-9, 1073741823, k, i, 12))
    np.testing.assert_array_equal(group.h[:], uniform_hash(11, k, i, 4))
