"""Every tutorial runs (in a fast mode) and writes its figures."""

import importlib.util
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"


def _load(name):
    spec = importlib.util.spec_from_file_location(name.replace(".py", ""), TUTORIALS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tutorials_are_numbered_scripts_with_a_title():
    scripts = sorted(p.name for p in TUTORIALS.glob("[0-9][0-9]_*.py"))
    assert scripts[:2] == ["01_one_neuron_one_spike.py", "02_convert_mnist_cnn.py"]
    for name in scripts:
        assert _load(name).__doc__.startswith(f"Tutorial {int(name[:2])} ")


def test_tutorial_1_one_neuron(tmp_path):
    error, bound = _load("01_one_neuron_one_spike.py").main(out=tmp_path, fast=True)
    assert error <= bound + 1e-9
    assert (tmp_path / "01_membrane.png").stat().st_size > 10_000
    assert (tmp_path / "01_relu_from_spike_times.png").stat().st_size > 10_000


def test_tutorial_2_mnist_raster(tmp_path):
    result = _load("02_convert_mnist_cnn.py").main(out=tmp_path, images=10, model="small_cnn", device="numpy")
    assert result.n_images == 10 and result.agreement >= 0.9
    for figure in ("02_raster.png", "02_spikes_per_layer.png"):
        assert (tmp_path / figure).stat().st_size > 10_000


if __name__ == "__main__":
    pytest.main([__file__])
