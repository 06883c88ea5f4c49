"""Errors through the public API: ``brianconv.convert`` names the problem and the fix.

Only conversion runs here (tracing, calibration, description); nothing is simulated: the misuses of a
converted network are caught before anything is built.
"""

from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn as nn

import brianconv
from brianconv.errors import (AccuracyWarning, BrianconvError, BuildError, CalibrationError, ConversionError,
                              DataNotFoundError, InvalidValueError, ShapeError, UnknownMethodError)


@pytest.fixture
def model():
    torch.manual_seed(5)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


@pytest.fixture
def calibration():
    return torch.rand(20, 1, 4, 4)


def test_a_valid_conversion_succeeds(model, calibration):
    """The baseline the error tests vary: this model and data convert without complaint."""
    snn = brianconv.convert(model, method="ttfs", calibration=calibration, t_max=8)
    assert isinstance(snn, brianconv.SpikingNetwork)
    assert snn.description.n_inputs == 16 and snn.description.n_outputs == 3
    assert "ttfs" in brianconv.available_methods()


def test_unknown_method_lists_the_available_ones(model, calibration):
    with pytest.raises(UnknownMethodError) as info:
        brianconv.convert(model, method="morse_code", calibration=calibration)
    message = str(info.value)
    assert "'morse_code'" in message and "ttfs" in message
    assert not message.startswith('"')  # KeyError would quote the whole message
    assert isinstance(info.value, KeyError)


def test_missing_calibration(model):
    with pytest.raises(CalibrationError, match="calibration=") as info:
        brianconv.convert(model, method="ttfs")
    assert "'ttfs' needs calibration data" in str(info.value)


@pytest.mark.parametrize("empty", [torch.empty(0, 1, 4, 4), np.zeros((0, 16)), []],
                         ids=["tensor", "array", "list"])
def test_empty_calibration(model, empty):
    with pytest.raises(CalibrationError, match="non-empty batch"):
        brianconv.convert(model, method="ttfs", calibration=empty)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_or_inf_in_calibration_inputs(model, calibration, value):
    calibration[3, 0, 1, 2] = value
    with pytest.raises(InvalidValueError, match="NaN/Inf"):
        brianconv.convert(model, method="ttfs", calibration=calibration)


def test_negative_inputs_are_shifted_not_time_coded(model, calibration):
    calibration[2, 0, 3, 1] = -0.25
    snn = brianconv.convert(model, method="ttfs", calibration=calibration)  # shifted by the minimum, folded
    assert snn.input_shift.low.tolist() == [-0.25]
    with pytest.raises(InvalidValueError) as info:  # the scheme itself codes values >= 0 only
        snn.scheme.check_input(calibration.numpy())
    message = str(info.value)
    assert "negative inputs (minimum -0.25)" in message  # the problem ...
    assert "input_range=(low, high)" in message  # ... and the fix


def test_sigmoid_hidden_activation_names_the_layer(calibration):
    model = nn.Sequential(OrderedDict(flat=nn.Flatten(), hidden=nn.Linear(16, 8), squash=nn.Sigmoid(),
                                      out=nn.Linear(8, 3)))
    with pytest.raises(ConversionError) as info:
        brianconv.convert(model, method="ttfs", calibration=calibration)
    message = str(info.value)
    assert "'hidden'" in message and "'sigmoid'" in message and "relu" in message


def test_hidden_layer_without_activation_names_the_layer(calibration):
    model = nn.Sequential(OrderedDict(flat=nn.Flatten(), hidden=nn.Linear(16, 8), out=nn.Linear(8, 3)))
    with pytest.raises(ConversionError, match="'hidden' has no activation"):
        brianconv.convert(model, method="ttfs", calibration=calibration)


def test_unsupported_layer_through_convert(calibration):
    model = nn.Sequential(OrderedDict(up=nn.Upsample(scale_factor=2), flat=nn.Flatten(), out=nn.Linear(64, 3)))
    with pytest.raises(ConversionError, match=r"'up' \(Upsample\)"):
        brianconv.convert(model, method="ttfs", calibration=calibration)


@pytest.mark.parametrize("options, match", [
    (dict(tmax=8), r"Unknown option\(s\) 'tmax' for method 'ttfs'; its options are: t_max, dt, percentile"),
    (dict(t_max=0), r"t_max=0 of method 'ttfs' .* t_max must be an integer in \[1, inf\)"),
    (dict(t_max=-3), "t_max"),
    (dict(t_max=2.5), "t_max"),
    (dict(t_max=True), "t_max"),
    (dict(percentile=0), r"percentile must be a number in \(0, 100\]"),
    (dict(threshold="median"), "threshold must be one of 'percentile', 'max', 'search'"),
    (dict(pipeline="yes"), "pipeline must be one of True, False"),
    (dict(search_percentiles=(99.0, 101.0)), "search_percentiles"),
], ids=["unknown-option", "t_max=0", "t_max<0", "t_max-fraction", "t_max-bool", "percentile", "threshold",
        "pipeline", "search_percentiles"])
def test_invalid_scheme_options(model, calibration, options, match):
    with pytest.raises(InvalidValueError, match=match):
        brianconv.convert(model, method="ttfs", calibration=calibration, **options)


def test_calibration_of_the_wrong_shape(model):
    with pytest.raises(ShapeError):
        brianconv.convert(model, method="ttfs", calibration=torch.rand(5, 1, 5, 5))
    with pytest.raises(ShapeError, match=r"expects \(N, 1, 4, 4\)"):
        brianconv.convert(model, method="ttfs", calibration=torch.rand(5, 1, 5, 5), input_shape=(1, 4, 4))


def test_every_error_is_a_brianconv_error():
    for cls in (ConversionError, ShapeError, InvalidValueError, CalibrationError, UnknownMethodError,
                DataNotFoundError, BuildError):
        assert issubclass(cls, BrianconvError)
    assert issubclass(ConversionError, ValueError) and issubclass(DataNotFoundError, FileNotFoundError)
    assert issubclass(BuildError, RuntimeError) and issubclass(AccuracyWarning, UserWarning)
    assert brianconv.ConversionError is ConversionError


def test_options_with_wrong_units_are_rejected():
    from brian2 import mV, ms

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2)).eval()
    x = torch.rand(5, 4)
    with pytest.raises(InvalidValueError, match="dt must be a positive time"):
        brianconv.convert(model, "ttfs", calibration=x, dt=1 * mV)
    with pytest.raises(InvalidValueError, match="v_unit must be a positive voltage"):
        brianconv.convert(model, "ttfs", calibration=x, v_unit=1 * ms)


# -- misuse of a converted network: every argument checked before anything is built or simulated --------

@pytest.fixture
def snn(model, calibration):
    return brianconv.convert(model, method="ttfs", calibration=calibration, t_max=8)


def test_spikes_of_the_output_accumulator_are_refused(snn):
    output = snn.description.output_population
    with pytest.raises(InvalidValueError) as info:
        snn.simulate(torch.rand(2, 1, 4, 4), device="numpy", spikes=[output])
    message = str(info.value)
    assert f"'{output}'" in message and "result.outputs" in message
    assert all(p.name in message for p in snn.description.populations if p.threshold)


@pytest.mark.parametrize("argument", ["spikes", "states"])
def test_monitors_of_unknown_populations_list_the_populations(snn, argument):
    monitors = ["conv_9"] if argument == "spikes" else {"conv_9": (["v"], [0])}
    with pytest.raises(InvalidValueError) as info:
        snn.simulate(torch.rand(2, 1, 4, 4), device="numpy", **{argument: monitors})
    message = str(info.value)
    assert f"{argument}=" in message and "'conv_9'" in message
    assert all(p.name in message for p in snn.description.populations)


def test_unknown_run_time_parameter_lists_the_valid_ones(snn):
    with pytest.raises(InvalidValueError, match=r"'tmax'.*'ttfs'.*scales, t_max, threshold_scale"):
        snn.simulate(torch.rand(2, 1, 4, 4), device="numpy", tmax=3)
    with pytest.raises(InvalidValueError, match=r"'tmax'.*scales, t_max, threshold_scale"):
        brianconv.sweep(snn, torch.rand(2, 1, 4, 4), {"t_max": [4], "tmax": [3]}, device="numpy", progress=False)


def test_scheme_without_run_time_parameters_says_so(calibration):
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    amos = brianconv.convert(model, method="amos", calibration=calibration, K=3)
    with pytest.raises(InvalidValueError, match="'amos'; it has no run-time parameters"):
        amos.simulate(calibration[:2], device="numpy", t_max=8)


def test_unknown_sweep_parameter_through_the_command_line(snn, tmp_path, capsys):
    from brianconv.cli import main

    snn.save(tmp_path / "net.pkl")
    assert main(["sweep", "--network", str(tmp_path / "net.pkl"), "--param", "tmax=3,4", "--device", "numpy"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("brianconv sweep: error:")
    assert "'tmax'" in err and "t_max" in err


@pytest.mark.parametrize("argument, value", [
    ("n_workers", 0), ("n_workers", -2), ("n_workers", 1.5), ("n_workers", "two"), ("n_workers", True),
    ("batch_size", 0), ("batch_size", -1), ("batch_size", 2.5),
    ("device", "gpu"),
])
def test_bad_simulate_arguments_name_the_argument(snn, argument, value):
    with pytest.raises(InvalidValueError, match=argument) as info:
        snn.simulate(torch.rand(2, 1, 4, 4), **{"device": "numpy", argument: value})
    assert repr(value) in str(info.value)
    if argument == "device":
        assert "cpp_standalone" in str(info.value) and "numpy" in str(info.value)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", "truncated"], ids=["empty", "garbage", "truncated"])
def test_load_network_on_a_corrupt_file(snn, tmp_path, content):
    path = tmp_path / "net.pkl"
    if content == "truncated":
        snn.save(path)
        content = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(content)
    with pytest.raises(InvalidValueError, match="not a readable saved network") as info:
        brianconv.load_network(path)
    assert str(path) in str(info.value)


def test_load_network_of_a_missing_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="No saved network"):
        brianconv.load_network(tmp_path / "missing.pkl")


def test_values_of_an_unknown_name_list_populations_and_layers(snn):
    with pytest.raises(InvalidValueError) as info:
        snn.values(None, "conv_9")
    message = str(info.value)
    assert "'conv_9'" in message and all(p.name in message for p in snn.description.populations)
    assert all(layer.name in message for layer in snn.graph if layer.op != "input")


@pytest.mark.parametrize("method, options, match", [
    ("rate", dict(reset="none"), "reset must be one of 'subtract', 'zero'"),
    ("rate", dict(duration=200.5), r"duration must be an integer in \[1, inf\)"),
    ("rate", dict(seed=-1), "seed must be an integer"),
    ("tdsnn", dict(L=0), r"L must be a number in \(0, inf\)"),
    ("tdsnn", dict(offset="drop"), "offset must be one of 'fold', 'keep'"),
    ("amos", dict(K=53), r"K must be an integer in \[1, 52\]"),
    ("amos", dict(wiring="star"), "wiring must be one of 'auto', 'paper', 'dendrite'"),
    ("amos", dict(Kk=3), "Unknown option.*'Kk'.*its options are: K, percentile"),
])
def test_every_scheme_checks_its_options_once(method, options, match):
    with pytest.raises(InvalidValueError, match=match):
        brianconv.schemes.get(method)(**options)


def test_options_are_typed_and_frozen():
    import dataclasses

    options = brianconv.schemes.get("ttfs")(t_max=16.0).options
    assert options.t_max == 16 and type(options.t_max) is int  # an integer option is stored as int
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.t_max = 8
