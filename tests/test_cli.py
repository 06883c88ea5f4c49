"""The ``brianconv`` command line: every command end to end (numpy runtime, small model), complete
``--help`` texts, and one-line errors for bad arguments."""

import csv
import json

import numpy as np
import pytest

from brianconv import load_network
from brianconv.cli import main

FAST = ["--model", "mlp", "--device", "numpy"]


@pytest.mark.parametrize("command, options", [
    ("demo", ["--model", "--method", "--option", "--checkpoint", "--images", "--device", "--workers", "--build-dir",
              "--out"]),
    ("convert", ["--model", "--method", "--option", "--checkpoint", "--normalise", "--bias-correction", "--device",
                 "--output"]),
    ("simulate", ["--network", "--model", "--param", "--images", "--data", "--device", "--workers", "--report",
                  "--plots"]),
    ("sweep", ["--network", "--model", "--param", "--images", "--data", "--device", "--output"]),
])
def test_help_lists_every_option(capsys, command, options):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in options:
        assert option in text, f"{command} --help does not mention {option}"


def test_demo_writes_the_report_and_both_figures(tmp_path, capsys):
    assert main(["demo", *FAST, "--images", "20", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "accuracy (%)" in out and "SNN/ANN prediction agreement" in out and "synaptic ops" in out
    for name in ("membrane.png", "raster.png"):
        assert (tmp_path / name).stat().st_size > 10_000


def test_convert_then_simulate_writes_a_consistent_json_report(tmp_path, capsys):
    network = tmp_path / "mlp.pkl"
    assert main(["convert", "--model", "mlp", "--option", "t_max=16", "-o", str(network)]) == 0
    report, plots = tmp_path / "report.json", tmp_path / "plots"
    assert main(["simulate", "--network", str(network), "--images", "30", "--device", "numpy", "--report", str(report),
                 "--plots", str(plots)]) == 0
    data = json.loads(report.read_text())
    assert data["method"] == "ttfs" and data["images"] == 30 and data["parameters"]["t_max"] == 16
    # measured (this command, 2026-12-02): ANN, SNN accuracy and agreement all 30 of 30; margin: one image
    assert data["snn_accuracy"] >= 29 / 30 and data["agreement"] >= 29 / 30
    assert data["snn_accuracy"] <= 1 and data["agreement"] <= 1
    assert data["ann_macs"] == 784 * 128 + 128 * 10
    assert sum(p["synaptic_ops_per_image"] for p in data["populations"].values()) == pytest.approx(
        data["synaptic_ops_per_image"])
    assert (plots / "raster.png").stat().st_size > 10_000


def test_convert_corrects_biases_on_request(tmp_path):
    network = tmp_path / "mlp.pkl"
    assert main(["convert", *FAST, "--method", "rate", "--option", "duration=16", "--bias-correction", "20",
                 "-o", str(network)]) == 0
    snn = load_network(network)
    assert list(snn.bias_corrections) == ["1"] and snn.bias_corrections["1"].shape == (128,)
    assert np.any(snn.bias_corrections["1"] != 0)


def test_sweep_writes_one_row_per_grid_point(tmp_path):
    table = tmp_path / "sweep.csv"
    assert main(["sweep", *FAST, "--param", "t_max=4,8", "--param", "threshold_scale=0.5,1", "--images", "10",
                 "-o", str(table)]) == 0
    with open(table) as handle:
        rows = list(csv.DictReader(handle))
    assert [(row["t_max"], row["threshold_scale"]) for row in rows] == [("4", "0.5"), ("4", "1"), ("8", "0.5"),
                                                                        ("8", "1")]
    assert {"accuracy", "agreement", "spikes_per_neuron", "synaptic_ops", "rmse"} <= set(rows[0])


def test_perturbation_knobs_reach_simulate_and_sweep(tmp_path):
    """A knob compiled in with --option perturbations=... is a --param of simulate and sweep, as in the API."""
    network, reports = tmp_path / "mlp.pkl", [tmp_path / "plain.json", tmp_path / "perturbed.json"]
    assert main(["convert", "--model", "mlp", "--option", "t_max=16", "--option",
                 "perturbations=('sigma_delay','p_fail')", "-o", str(network)]) == 0
    common = ["simulate", "--network", str(network), "--images", "20", "--device", "numpy", "--report"]
    assert main([*common, str(reports[0])]) == 0
    assert main([*common, str(reports[1]), "--param", "sigma_delay=0.5*ms", "--param", "p_fail=0.3",
                 "--param", "seed=3"]) == 0
    plain, perturbed = (json.loads(report.read_text()) for report in reports)
    assert perturbed["parameters"]["p_fail"] == 0.3 and perturbed["parameters"]["seed"] == 3
    assert perturbed["spikes_per_neuron"] != plain["spikes_per_neuron"]
    table = tmp_path / "sweep.csv"
    assert main(["sweep", "--network", str(network), "--device", "numpy", "--images", "10", "--param",
                 "sigma_delay=0*ms,2*ms", "-o", str(table)]) == 0
    with open(table) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and rows[0]["rmse"] != rows[1]["rmse"]
    assert main(["simulate", "--network", str(network), "--device", "numpy", "--param", "sigma_v=0.1"]) == 2


@pytest.mark.parametrize("argv, message", [
    (["convert", "--method", "nope", "-o", "x.pkl"], "nope"),
    (["convert", "--model", "resnet", "-o", "x.pkl"], "resnet"),
    (["convert", "--model", "mlp", "--option", "t_max=0", "-o", "x.pkl"], "t_max"),
    (["convert", "--model", "mlp", "--option", "nope", "-o", "x.pkl"], "NAME=VALUE"),
    (["demo", *FAST, "--images", "0"], "--images"),
    (["sweep", *FAST, "--param", "t_max"], "NAME=VALUE"),
    (["simulate", "--network", "missing.pkl", "--device", "numpy"], "missing.pkl"),
    (["convert", "--model", "missing.pt2", "-o", "x.pkl"], "missing.pt2"),
], ids=["method", "model", "option-range", "option-syntax", "images", "param-syntax", "missing-network",
        "missing-program"])
def test_bad_arguments_give_one_line_errors(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"brianconv {argv[0]}: error:") and message in err


def test_convert_accepts_a_saved_torch_export_program(tmp_path, capsys):
    import torch
    from torch import nn

    from brianconv.simulation import load_network

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 5, stride=4), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 6 * 6, 10),
                          nn.LogSoftmax(dim=1)).eval()
    program_file, network_file = tmp_path / "tiny.pt2", tmp_path / "tiny.pkl"
    torch.export.save(torch.export.export(model, (torch.zeros(2, 1, 28, 28),)), program_file)
    assert main(["convert", "--model", str(program_file), "--method", "rate", "-o", str(network_file)]) == 0
    assert "saved" in capsys.readouterr().out
    graph = load_network(network_file).graph
    assert [layer.op for layer in graph] == ["input", "conv", "linear"] and graph.head == "log_softmax"
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        expected = model[:4](x).numpy()
    assert abs(graph.forward(x) - expected).max() < 1e-5  # float32 model, float64 graph


def test_a_model_trained_on_normalised_inputs_gets_normalised_data_everywhere(tmp_path, capsys):
    """functional_net records (x - 0.1307) / 0.3081: calibration and test images are normalised alike,
    the saved network remembers it, and the SNN agrees with its ANN on those images."""
    network = tmp_path / "functional.pkl"
    assert main(["convert", "--model", "functional_net", "--method", "ttfs", "--option", "t_max=16",
                 "-o", str(network)]) == 0
    report = tmp_path / "report.json"
    assert main(["simulate", "--network", str(network), "--images", "10", "--device", "numpy",
                 "--report", str(report)]) == 0
    saved = load_network(network)
    assert saved.input_normalisation == (0.1307, 0.3081)
    # calibrated on normalised images: the background pixel 0 is the lower bound (0 - mean) / std
    np.testing.assert_allclose(saved.input_shift.low, [-0.1307 / 0.3081], rtol=1e-6)  # float32 images
    data = json.loads(report.read_text())
    assert data["ann_accuracy"] == 1.0  # the recorded 98.77 % model on the first 10 test images
    assert data["agreement"] >= 0.9  # one image in 10 may flip with 16 steps of code


@pytest.mark.parametrize("text", ["0.1", "0.1,0", "a,b"])
def test_a_bad_normalisation_is_a_one_line_error(text, capsys):
    assert main(["convert", "--model", "mlp", "--normalise", text, "-o", "unused.pkl"]) == 2
    assert "--normalise" in capsys.readouterr().err
