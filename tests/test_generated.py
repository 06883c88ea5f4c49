"""The edits of :mod:`brianconv.builder.generated` change how Brian2's standalone program runs, not
what it computes: a plain Brian2 network, built with the edits, gives the numpy target's values."""

import numpy as np
import pytest
from brian2 import Network, NeuronGroup, SpikeGeneratorGroup, StateMonitor, Synapses, ms, prefs
from brian2.codegen.cpp_prefs import get_compiler_and_args
from brian2.devices.device import get_device, reset_device, set_device
from conftest import needs_compiler

from brianconv.builder.generated import _closing_brace, exact_spike_queue_capacity, spike_queues_hold_sources

DT = 0.1 * ms
STEPS = 40


def _network(order, rng, span=STEPS - 8, extra_step=None):
    """Six spiking sources, four targets; ``fixed`` has one delay (2 steps), ``spread`` per-synapse
    delays of 0 to 5 steps. Integer weights: every sum is exact in any order.

    ``order``: "sorted" stores the synapses source by source (the queue holds sources), "shuffled"
    in random order (the queue keeps Brian2's per-source lists)."""
    times = rng.integers(0, span, size=30)
    indices = rng.integers(0, 6, size=30)
    if extra_step is not None:  # every source spikes at this step too
        times, indices = np.append(times, [extra_step] * 6), np.append(indices, np.arange(6))
    keep = np.unique(np.stack([indices, times]), axis=1)  # one spike per neuron and step
    source = SpikeGeneratorGroup(6, keep[0], keep[1] * DT, dt=DT, name="source")
    target = NeuronGroup(4, "fixed_in : 1\nspread_in : 1", dt=DT, name="target")
    pre, post = np.divmod(np.arange(24), 4)
    drop = [3, 9, 20, 21, 22, 23]  # sources with 3 or 4 targets, and source 5 with none
    pre, post = np.delete(pre, drop), np.delete(post, drop)
    permutation = np.arange(len(pre)) if order == "sorted" else rng.permutation(len(pre))
    fixed = Synapses(source, target, "w : 1", on_pre="fixed_in_post += w", dt=DT, name="fixed")
    spread = Synapses(source, target, "w : 1", on_pre="spread_in_post += w", dt=DT, name="spread")
    for synapses in (fixed, spread):
        synapses.connect(i=pre[permutation], j=post[permutation])
        synapses.w = rng.integers(-8, 9, size=len(pre))[permutation]
    fixed.delay = 2 * DT  # stored per synapse, all equal: the queue sees one delay
    spread.delay = rng.integers(0, 6, size=len(pre))[permutation] * DT
    monitor = StateMonitor(target, ["fixed_in", "spread_in"], record=True, dt=DT, name="monitor")
    return Network(source, target, fixed, spread, monitor), monitor


def _two_runs(order, rng):
    """:func:`_network` run twice with the delay kinds swapped in between, while spikes are queued:
    ``fixed`` goes from one delay to per-synapse delays (queued sources become synapses), ``spread``
    from per-synapse delays to one (queued synapses stay synapses until the queue is empty)."""
    net, monitor = _network(order, rng, span=2 * STEPS - 8, extra_step=STEPS - 1)
    net.run(STEPS * DT)
    fixed, spread = net["fixed"], net["spread"]
    fixed.delay = rng.integers(0, 6, size=len(fixed)) * DT
    spread.delay = 3 * DT
    net.run(STEPS * DT)
    return monitor


def _run_numpy(order, runs):
    set_device("runtime")
    target = prefs.codegen.target
    prefs.codegen.target = "numpy"
    try:
        monitor = runs(order, np.random.default_rng(1))
        return monitor.fixed_in[:].copy(), monitor.spread_in[:].copy()
    finally:
        prefs.codegen.target = target  # other tests in this process keep their target


def _one_run(order, rng):
    net, monitor = _network(order, rng)
    net.run(STEPS * DT)
    return monitor


def _run_edited_standalone(order, directory, runs):
    set_device("cpp_standalone", build_on_run=False, directory=str(directory))
    device = get_device()
    try:
        monitor = runs(order, np.random.default_rng(1))
        device.build(directory=str(directory), compile=False, run=False, with_output=False)
        assert exact_spike_queue_capacity(directory) and spike_queues_hold_sources(directory)
        device.compile_source(str(directory), get_compiler_and_args()[0], debug=False, clean=False)
        device.run(str(directory), with_output=False, run_args=[])
        return monitor.fixed_in[:].copy(), monitor.spread_in[:].copy()
    finally:
        device.reinit()
        device.activate(build_on_run=False)
        reset_device("runtime")


@needs_compiler
@pytest.mark.standalone
@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_queues_of_sources_deliver_what_brian2_delivers(order, tmp_path):
    """Both delay kinds, sources with and without synapses, stored in order or shuffled."""
    expected = _run_numpy(order, _one_run)
    edited = _run_edited_standalone(order, tmp_path / "build", _one_run)
    assert np.abs(expected[0]).sum() > 0 and np.abs(expected[1]).sum() > 0  # spikes arrived on both pathways
    for want, got in zip(expected, edited, strict=True):
        np.testing.assert_array_equal(got, want)
    code = [path.read_text() for path in (tmp_path / "build" / "code_objects").glob("fixed_pre_codeobject*.cpp")]
    assert len(code) == 1 and "_brianconv_sources = fixed_pre.queue[0]->holds_sources;" in code[0]


@needs_compiler
@pytest.mark.standalone
def test_queued_spikes_survive_a_change_of_delay_kind_between_runs(tmp_path):
    """Two runs in one program, delays changed in between with spikes still queued."""
    expected = _run_numpy("sorted", _two_runs)
    edited = _run_edited_standalone("sorted", tmp_path / "build", _two_runs)
    for want, got in zip(expected, edited, strict=True):
        assert np.any(want[:, -1] != want[:, STEPS - 1])  # the second run received spikes
        np.testing.assert_array_equal(got, want)


def test_closing_brace_skips_comments_and_nesting():
    code = "for(;;)\n{ // a { in a comment\n  if (x) { y(); }\n}\nrest"
    assert code[_closing_brace(code, code.index("{")):] == "}\nrest"
    with pytest.raises(ValueError, match="unbalanced"):
        _closing_brace("{ {", 0)
