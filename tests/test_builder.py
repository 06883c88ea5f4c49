"""The builder and the simulation plumbing: Brian2 objects, counting, caching, failures."""

import json

import numpy as np
import pytest
import torch
import torch.nn as nn
from brian2 import Network

import brianconv
from brianconv import builder
from brianconv.errors import BuildError, InvalidValueError, ShapeError


@pytest.fixture(scope="module")
def snn():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)).eval()
    return brianconv.convert(model, "ttfs", calibration=torch.rand(20, 1, 6, 6), t_max=8)


def test_network_exposes_explicit_brian2_objects(snn):
    objects = snn.network
    assert isinstance(objects.network, Network)
    names = [p.name for p in snn.description.populations]
    assert list(objects.groups) == names
    for population in snn.description.populations:
        group = objects.groups[population.name]
        assert len(group) == population.size
        assert "window_start" in group.variables and "v_th" in group.variables
    conv = snn.description.populations[1].name
    assert "dv/dt" in str(objects.groups[conv].equations)
    for projection in snn.description.projections:
        synapses = objects.synapses[projection.name]
        np.testing.assert_array_equal(synapses.i[:], projection.connections.pre)
        np.testing.assert_array_equal(synapses.j[:], projection.connections.post)
    # every object is inside the explicit network (nothing relies on Brian2's magic network)
    contained = {obj.name for obj in objects.network.objects}
    assert set(names) <= contained and {p.name for p in snn.description.projections} <= contained


def test_per_image_counts_come_from_windows(snn):
    x = torch.rand(7, 1, 6, 6)
    names = [p.name for p in snn.description.populations if p.threshold]
    result = snn.simulate(x, device="numpy", spikes=names, batch_size=3)
    assert result.n_images == 7 and result.outputs.shape == (7, 3)
    for name in names:
        image, _, _ = result.spikes[name]
        np.testing.assert_array_equal(np.bincount(image, minlength=7), result.spike_counts[name])
    assert result.synaptic_ops.shape == (7,)
    total = sum(result.spike_counts.values())
    assert result.spikes_per_neuron == pytest.approx(total.mean() / snn.description.n_neurons)
    # batching does not change anything
    single = snn.simulate(x, device="numpy", batch_size=7)
    np.testing.assert_array_equal(single.outputs, result.outputs)
    for name in names:
        np.testing.assert_array_equal(single.spike_counts[name], result.spike_counts[name])


def test_simulate_rejects_bad_inputs(snn):
    with pytest.raises(ShapeError, match=r"\(N, 1, 6, 6\)"):
        snn.simulate(torch.rand(2, 1, 5, 5), device="numpy")
    with pytest.raises(InvalidValueError, match="NaN"):
        snn.simulate(torch.full((2, 1, 6, 6), float("nan")), device="numpy")
    with pytest.raises(ShapeError, match="labels"):
        snn.simulate(torch.rand(2, 1, 6, 6), labels=[1, 2, 3], device="numpy")
    with pytest.raises(InvalidValueError, match="device"):
        snn.simulate(torch.rand(2, 1, 6, 6), device="gpu")
    with pytest.raises(KeyError, match="populations"):
        snn.simulate(torch.rand(2, 1, 6, 6), device="numpy", spikes=["no_such_layer"])


def test_missing_compiler_is_a_clear_error(snn, monkeypatch, tmp_path):
    monkeypatch.setattr(builder, "find_compiler", lambda: None)
    with pytest.raises(BuildError, match="No C\\+\\+ compiler.*device='runtime'"):
        snn.simulate(torch.rand(2, 1, 6, 6), device="cpp_standalone", build_root=tmp_path)
    assert not any(tmp_path.iterdir())


def test_failed_build_leaves_nothing_to_trust(snn, monkeypatch, tmp_path):
    def broken(description, batch_size, monitors, directory):
        directory.mkdir(parents=True)
        (directory / "half_written.cpp").write_text("int main(")
        raise BuildError("compiler exploded")

    monkeypatch.setattr(builder, "_compile", broken)
    with pytest.raises(BuildError, match="exploded"):
        builder.build_standalone(snn.description, 2, build_root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cached_build_is_found_by_fingerprint(snn, tmp_path, monkeypatch):
    """A folder with a manifest is reused without compiling; the key covers weights and batch size."""
    key = snn.description.fingerprint(2)
    assert key == snn.description.fingerprint(2) != snn.description.fingerprint(3)
    other = brianconv.convert(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                                            nn.Linear(8, 3)).eval(), "ttfs", calibration=torch.rand(20, 1, 6, 6),
                              t_max=8)
    assert other.description.fingerprint(2) != key
    monkeypatch.setattr(builder, "_compile", lambda *a: pytest.fail("compiled although a build exists"))
    folder = tmp_path / (key + "-" + builder._short_hash(builder.MonitorRequest().key() + builder.brian2.__version__))
    folder.mkdir()
    (folder / builder.MANIFEST).write_text(json.dumps({"batch_size": 2, "n_steps": 10}))
    program = builder.build_standalone(snn.description, 2, build_root=tmp_path)
    assert program.directory == folder and not program.freshly_built
