"""Tutorial 1 — one neuron, one spike: the two-stage TTFS neuron.

A single ReLU unit ``y = ReLU(w x + b)`` is converted with the ``ttfs`` scheme. The input value
becomes one spike; the neuron integrates it during the silent stage, then a constant charging
current drives it to threshold in the spiking stage, and the time of its single spike encodes
``y``. We sweep the input and watch spike times follow the ReLU.

    python tutorials/01_one_neuron_one_spike.py [--out figures]
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import brianconv  # noqa: E402
from brianconv import plot  # noqa: E402


def one_unit(w=0.8, b=-0.2):
    """A 1-1-1 network whose hidden unit computes ReLU(w x + b); the output unit just reads it."""
    model = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 1)).eval()
    with torch.no_grad():
        model[0].weight.fill_(w)
        model[0].bias.fill_(b)
        model[2].weight.fill_(1.0)
        model[2].bias.fill_(0.0)
    return model


def main(out="figures", fast=False):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = one_unit()
    t_max = 16 if fast else 32
    inputs = torch.linspace(0, 1, 6 if fast else 21)[:, None]
    # calibration with the largest input: the threshold is set to the largest activation (0.6)
    snn = brianconv.convert(model, "ttfs", calibration=torch.ones(1, 1), t_max=t_max, percentile=100)
    hidden = snn.description.populations[1]
    print("The hidden neuron's equations:\n" + hidden.equations)
    print("threshold condition:", hidden.threshold)
    result = snn.simulate(inputs, device="numpy", spikes=["input", hidden.name], states={hidden.name: (["v"], [0])})

    # 1) membrane potential for one input value
    example = int(0.75 * (len(inputs) - 1))
    fig = plot.membrane_traces(result, hidden.name, image=example, threshold=float(hidden.values["v_th"]))
    fig.axes[0].set_title(f"x = {inputs[example, 0]:.2f}: silent stage, then charging to threshold")
    fig.savefig(out / "01_membrane.png", dpi=120)

    # 2) spike time against the ANN value: the ReLU, read off spike times
    image, _, local = result.spikes[hidden.name]
    scale = snn.calibration.scales[snn.graph.layers[1].name]
    decoded = np.zeros(len(inputs))
    decoded[image] = (t_max - (local - t_max)) / t_max * scale
    ann = torch.relu(model[0](inputs)).detach().numpy().ravel()
    fig, ax = plt.subplots(figsize=(5, 4), constrained_layout=True)
    ax.plot(inputs.numpy().ravel(), ann, "k-", label="ANN: ReLU(0.8 x - 0.2)")
    ax.plot(inputs.numpy().ravel(), decoded, "o", label=f"SNN: decoded spike time (t_max = {t_max})")
    ax.set_xlabel("input x")
    ax.set_ylabel("activation")
    ax.legend()
    fig.savefig(out / "01_relu_from_spike_times.png", dpi=120)
    error = np.max(np.abs(decoded - ann))
    # half a step of the output code plus half a step of the input code carried through |w|
    bound = scale / (2 * t_max) + abs(float(model[0].weight)) * 1.0 / (2 * t_max)
    print(f"largest |SNN - ANN| = {error:.4f}; bound from the two roundings: {bound:.4f}")
    print(f"figures written to {out}/01_membrane.png and 01_relu_from_spike_times.png")
    return error, bound


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="figures")
    parser.add_argument("--fast", action="store_true", help="fewer points (used by the tests)")
    main(**vars(parser.parse_args()))
