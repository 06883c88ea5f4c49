"""The edits of :mod:`brianconv.builder.generated` change how Brian2's standalone program runs, not
what it computes: a plain Brian2 network, built with the edits, gives the numpy target's values."""

import numpy as np
import pytest
from brian2 import Network, NeuronGroup, SpikeGeneratorGroup, SpikeMonitor, StateMonitor, Synapses, ms, prefs
from brian2.codegen.cpp_prefs import get_compiler_and_args
from brian2.devices.device import get_device, reset_device, set_device
from conftest import needs_compiler

from brianconv.builder.generated import (
    _closing_brace,
    _edited_threshold,
    exact_spike_queue_capacity,
    scheduled_thresholds,
    spike_queues_hold_sources,
)
from brianconv.description import SpikeSchedule

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


def _on_numpy(simulate):
    """``simulate()`` on Brian2's numpy target (other tests in this process keep their target)."""
    set_device("runtime")
    target = prefs.codegen.target
    prefs.codegen.target = "numpy"
    try:
        return simulate()
    finally:
        prefs.codegen.target = target


def _on_edited_standalone(directory, simulate, edit):
    """``simulate()`` built as C++ standalone in ``directory``, edited by ``edit(directory)`` before
    compiling: ``(simulate's result once run, edit's result)``; ``simulate`` returns a function
    reading its monitors."""
    set_device("cpp_standalone", build_on_run=False, directory=str(directory))
    device = get_device()
    try:
        read = simulate()
        device.build(directory=str(directory), compile=False, run=False, with_output=False)
        edited = edit(directory)
        device.compile_source(str(directory), get_compiler_and_args()[0], debug=False, clean=False)
        device.run(str(directory), with_output=False, run_args=[])
        return read(), edited
    finally:
        device.reinit()
        device.activate(build_on_run=False)
        reset_device("runtime")


def _inputs(monitor):
    return lambda: (monitor.fixed_in[:].copy(), monitor.spread_in[:].copy())


def _run_numpy(order, runs):
    return _on_numpy(lambda: _inputs(runs(order, np.random.default_rng(1))))()


def _one_run(order, rng):
    net, monitor = _network(order, rng)
    net.run(STEPS * DT)
    return monitor


def _queue_edits(directory):
    return exact_spike_queue_capacity(directory) and spike_queues_hold_sources(directory)


def _run_edited_standalone(order, directory, runs):
    simulate = lambda: _inputs(runs(order, np.random.default_rng(1)))  # noqa: E731
    inputs, edited = _on_edited_standalone(directory, simulate, _queue_edits)
    assert edited
    return inputs


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


# -- threshold tests: skipped where shared terms fail, scheduled spikes ------------------------------
#: A window of PERIOD steps: every neuron plans its spike at step STAGE - 1 (at steps STAGE - 1 to
#: 2 STAGE + 1, so some before or after the scheduled steps STAGE..2 STAGE - 1), fires where
#: ``local_step == fire_step`` from step STAGE on, and forgets its plan when the window opens.
#: Steps 2 STAGE..PERIOD - 1 lie outside the schedule: there the neuron loop finds the later spikes.
STAGE, PERIOD = 5, 13
SCHEDULED_EQUATIONS = """
T_steps : integer (constant, shared)
local_step = t_in_timesteps % 13 : integer (shared)
fire_step : integer
"""
SCHEDULE = SpikeSchedule("fire_step", first="T_steps", last="2 * T_steps")


def _scheduled_network():
    """Runs the network; returns a function reading its spikes as ``(neuron, step)`` pairs in the order recorded."""
    group = NeuronGroup(23, SCHEDULED_EQUATIONS, threshold="local_step >= T_steps and local_step == fire_step",
                        reset="", events={"plan": "local_step == T_steps - 1", "open": "local_step == 0"}, dt=DT,
                        name="group")
    group.run_on_event("plan", "fire_step = T_steps - 1 + (i * 7 + t_in_timesteps // 13) % (T_steps + 3)")
    group.run_on_event("open", "fire_step = -1")
    group.T_steps = STAGE
    group.fire_step = -1
    monitor = SpikeMonitor(group, name="spikes")
    Network(group, monitor).run(4 * PERIOD * DT)
    return lambda: list(zip(monitor.i[:].tolist(), np.round(monitor.t[:] / DT).astype(int).tolist()))


@needs_compiler
@pytest.mark.standalone
def test_scheduled_thresholds_fire_the_neurons_brian2_fires(tmp_path):
    """Same spikes, steps and order within each step as the numpy target, in four windows."""
    expected = _on_numpy(_scheduled_network)()
    got, scheduled = _on_edited_standalone(tmp_path / "build", _scheduled_network,
                                           lambda d: scheduled_thresholds(d, {"group": SCHEDULE}))
    steps = {step % PERIOD for _, step in expected}
    assert steps == set(range(STAGE, 2 * STAGE + 2)) and len(expected) > 40  # schedule and loop both fire
    assert scheduled == ["group"]
    assert got == expected


LOOP = """    long _count = 0;
    for(size_t _idx=0; _idx<N; _idx++)
    {
        const size_t _vectorisation_idx = _idx;
        const int32_t fire_step = _ptr_array_g_fire_step[_idx];
        const char _cond = CONDITION;

        if(_cond) {
            _ptr_array_g__spikespace[_count++] = _idx;
            _ptr_array_g_not_refractory[_idx] = false;
        }
    }
"""
SCALARS = "    const int64_t t_in_timesteps = 1;\n    const int32_t local_step = 2;\n    const int32_t T_steps = 3;\n"


@pytest.mark.parametrize("condition, skip, scheduled", [
    ("_lio_1 && _lio_2 && (local_step == fire_step)", "if (_lio_1 && _lio_2)", True),
    ("_lio_1 && (fire_step == local_step)", "if (_lio_1)", True),
    ("_lio_1 && (local_step == fire_step) && (v > 0)", "if (_lio_1)", False),  # not the schedule's test
    ("_lio_1 && (local_step == fire_step) || _lio_2", None, False),  # `||`: the shared term decides nothing
    ("(local_step == fire_step)", None, True),
    ("_lio_1 && _lio_2", "if (_lio_1 && _lio_2)", False),  # all shared (an event's test)
])
def test_threshold_edit_depends_on_the_generated_condition(condition, skip, scheduled):
    code = SCALARS + LOOP.replace("CONDITION", condition)
    edited, reads = _edited_threshold(code, SCHEDULE)
    assert reads == scheduled
    assert (skip + "\n    for(size_t _idx=0;" in edited) if skip else ("if (_lio" not in edited)
    if scheduled:  # the spike's whole body runs for each scheduled neuron, then the loop for other steps
        assert edited.count("_ptr_array_g_not_refractory[_idx] = false;") == 2
        assert "const int64_t _step = _ptr_array_g_fire_step[_idx];" in edited
    assert _edited_threshold(code.replace("const int64_t t_in_timesteps", "int64_t t"), SCHEDULE)[1] is False
