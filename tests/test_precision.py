"""float32 storage (``convert(..., precision="float32")``) and the memory figures of ``result.timing``.

Bounds are derived, not picked to pass. A float32 sum of ``n`` terms differs from the exact sum
by at most ``gamma_n = n u / (1 - n u)`` times the sum of the terms' magnitudes, ``u = 2**-24``
(Higham, *Accuracy and Stability of Numerical Algorithms*, Eq. 3.4); a membrane that integrates
for ``K`` additions carries at most ``gamma_K`` times its terms' magnitudes. So float32 changes
a spike only where a membrane lies within that margin of a threshold, and a read-out value by
at most that margin.
"""

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import needs_compiler

import brianconv
from brianconv.errors import InvalidValueError

T = 16
U32 = 2.0 ** -24


def gamma(n):
    """Higham's bound on the relative error of a float32 sum of ``n`` terms."""
    return n * U32 / (1 - n * U32)


@pytest.fixture(scope="module")
def dense():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 4)).eval()
    return model, torch.rand(20, 12)


def _membrane_margin(snn, x, steps):
    """Largest float32 error of any hidden or output membrane over ``steps`` steps, ANN units:
    ``gamma(steps * (fan-in + 1))`` times the largest sum of |w x| + |b| of the network."""
    worst = 0.0
    values = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    for layer in snn.graph.layers[1:]:
        magnitude = np.abs(values) @ np.abs(layer.weight).T + np.abs(layer.bias)
        worst = max(worst, gamma(steps * (layer.weight.shape[1] + 1)) * magnitude.max())
        values = np.maximum(values @ layer.weight.T + layer.bias, 0)
    return worst


@pytest.mark.parametrize("scheme, options, steps", [("ttfs", dict(t_max=T), 2 * T),
                                                    ("rate", dict(duration=4 * T), 4 * T),
                                                    ("tdsnn", {}, None), ("amos", {}, None)])
def test_float32_keeps_spikes_and_outputs_within_the_float32_margin(dense, scheme, options, steps):
    model, x = dense
    results = {}
    for precision in ("float64", "float32"):
        snn = brianconv.convert(model, scheme, calibration=x, precision=precision, **options)
        assert snn.description.precision == precision
        results[precision] = snn.simulate(x, device="numpy")
    exact, single = results["float64"], results["float32"]
    steps = steps or snn.description.period_steps
    margin = _membrane_margin(snn, x.numpy(), steps)
    # spikes move only where a membrane lies within the margin of a threshold: none does here
    for name, counts in exact.spike_counts.items():
        np.testing.assert_array_equal(single.spike_counts[name], counts)
    # the read-out differs by the rounding of its own sum at most
    assert np.max(np.abs(single.outputs - exact.outputs)) <= margin
    assert margin < 1e-4   # and that margin is far below any scheme's coding step


def test_float32_is_stored_as_float32_and_float64_fingerprints_are_unchanged(dense):
    model, x = dense
    default = brianconv.convert(model, "ttfs", calibration=x, t_max=T)
    single = brianconv.convert(model, "ttfs", calibration=x, t_max=T, precision="float32")
    assert default.description.precision == "float64"
    assert single.description.fingerprint(2) != default.description.fingerprint(2)
    default.description.precision = "float64"  # the field's default adds nothing to the hash
    assert default.description.fingerprint(2) == brianconv.convert(model, "ttfs", calibration=x,
                                                                   t_max=T).description.fingerprint(2)
    # the description keeps each weight as the run stores it: the float64 weight rounded once
    for kept, exact in zip(single.description.projections, default.description.projections):
        assert kept.connections.weight.dtype == np.float32
        np.testing.assert_array_equal(kept.connections.weight, exact.connections.weight.astype(np.float32))
    objects = single.program("numpy").objects
    for syn in objects.synapses.values():
        if "w" in syn.variables:
            assert syn.variables["w"].dtype == np.float32
    assert objects.groups[single.description.output_population].variables["v"].dtype == np.float32
    with pytest.raises(InvalidValueError, match="precision"):
        brianconv.convert(model, "ttfs", calibration=x, precision="float16")


@needs_compiler
@pytest.mark.standalone
def test_float32_standalone_equals_runtime_and_reports_its_memory(dense, build_root):
    model, x = dense
    snn = brianconv.convert(model, "ttfs", calibration=x, t_max=T, precision="float32")
    names = [p.name for p in snn.description.populations if p.threshold]
    runtime = snn.simulate(x, device="numpy", spikes=names, batch_size=10)
    standalone = snn.simulate(x, device="cpp_standalone", spikes=names, batch_size=10, n_workers=2,
                              build_root=build_root)
    for name in names:
        for a, b in zip(runtime.spikes[name], standalone.spikes[name]):
            np.testing.assert_array_equal(np.sort(a), np.sort(b))
    # Both devices add the same float32 terms; numpy may hold an intermediate in float64 where C++
    # rounds it to float32, so each of the read-out's additions may round one float32 ulp apart
    # (measured: 1 ulp on 3 of 18 outputs of a small CNN).
    additions = 2 * T * (10 + 1)  # steps x (fan-in of the last layer + bias)
    ulp = 2.0 ** -23 * np.abs(runtime.outputs).max()
    np.testing.assert_allclose(standalone.outputs, runtime.outputs, rtol=0, atol=additions * ulp)
    # each projection's weights are written once, as float32, in the build folder
    folder = next(build_root.glob(f"{snn.description.fingerprint(10)}-*")) / "static_arrays"
    for q in snn.description.projections:
        if "w" in q.model:
            assert (folder / f"brianconv_{q.name}_w").stat().st_size == 4 * q.n_synapses
    timing = standalone.timing
    assert timing["peak_memory_mb"] > 0 and timing["python_peak_memory_mb"] > 0
    assert timing["bytes_per_synapse"] == pytest.approx(timing["peak_memory_mb"] * 2**20 / snn.description.n_synapses)
    assert runtime.timing["bytes_per_synapse"] is None
