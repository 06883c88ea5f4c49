# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
"""Tutorial 6 — biophysics: leak, noise and refractoriness, from one neuron to a CNN.

A converted network's neurons are ideal: no leak, no noise, no refractory period. Here we give
them back, as run-time knobs compiled once (``convert(..., perturbations=...)``), and watch

A. one integrate-and-fire neuron of a rate-coded network with a leak ``tau_m``, white membrane
   noise ``sigma_v`` and a refractory period ``t_ref`` (membrane traces), and
B. a CNN under membrane noise: a spike raster, then accuracy against ``sigma_v`` with a band
   over three seeds (``brianconv.sweep`` with ``seed`` as a grid axis).

The file is a jupytext "percent" script: open it as a notebook (``jupytext --to notebook``) or run

    python tutorials/06_noise_leak_refractoriness.py [--images 100] [--model small_cnn] [--out figures]

``sigma_v`` as a plain number is a fraction of the threshold added per step of ``dt``: the
variance of a free membrane grows as ``sigma_v**2 t / dt`` (see :mod:`brianconv.perturbations`).
"""

# %%
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from brian2 import ms, mV  # noqa: E402

import brianconv  # noqa: E402
from brianconv import datasets, models, plot  # noqa: E402

# %% [markdown]
# ## A. One neuron
# A network with one input, one hidden IF neuron and one output; the input current drives the
# neuron towards 1.5 thresholds per 10 steps. Each knob is a run-time parameter of the same
# compiled network.

# %%
CASES = {"ideal IF": {}, "leak (tau_m = 5 ms)": dict(tau_m=5 * ms),
         "leak + noise (sigma_v = 0.1)": dict(tau_m=5 * ms, sigma_v=0.1),
         "leak + noise + t_ref = 4 ms": dict(tau_m=5 * ms, sigma_v=0.1, t_ref=4 * ms)}


def one_neuron(device="numpy"):
    """Membrane traces of the single hidden neuron, one per case in :data:`CASES`; returns the Figure."""
    net = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.ReLU(), torch.nn.Linear(1, 1)).eval()
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight.fill_(1.0)
            layer.bias.zero_()
    calibration = np.linspace(0, 1, 50, dtype=np.float32)[:, None]
    snn = brianconv.convert(net, "rate", calibration=calibration, duration=60,
                            perturbations=("tau_m", "sigma_v", "t_ref"))
    hidden = snn.description.populations[1].name
    fig, axes = plt.subplots(len(CASES), 1, figsize=(7, 8), sharex=True, constrained_layout=True)
    for ax, (label, knobs) in zip(axes, CASES.items()):
        result = snn.simulate(np.array([[0.15]], dtype=np.float32), device=device, states={hidden: (["v"], [0])},
                              spikes=[hidden], **knobs)
        plot.membrane_traces(result, hidden, threshold=float(1 * mV), ax=ax)
        ax.set_title(f"{label}: {int(result.spike_counts[hidden][0])} spikes")
        ax.get_legend().remove()
    return fig


# %% [markdown]
# ## B. A CNN under membrane noise
# The same knobs on every neuron of a converted CNN (ttfs: one spike per neuron). A raster at
# one noise level, then accuracy against ``sigma_v``, mean and spread over seeds.

# %%
def cnn_under_noise(model, x, y, calibration, device, sigmas, seeds):
    """The raster figure at the middle noise level and the sweep table over ``sigma_v`` x ``seed``."""
    snn = brianconv.convert(model, "ttfs", calibration=calibration, t_max=16, perturbations=("sigma_v",))
    spiking = [p.name for p in snn.description.populations if p.threshold]
    noisy = snn.simulate(x[:4], labels=y[:4], device=device, spikes=spiking, sigma_v=sigmas[len(sigmas) // 2])
    raster = plot.raster(noisy)
    table = brianconv.sweep(snn, x, {"sigma_v": [0.0] + list(sigmas), "seed": list(seeds)}, labels=y,
                            device=device, progress=False)
    return raster, table


def main(out="figures", images=100, model="small_cnn", device="numpy", fast=False):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    one_neuron(device).savefig(out / "06_one_neuron.png", dpi=110)
    x, y = datasets.load_sample("test", limit=images)
    calibration, _ = datasets.load_sample("train", limit=200)
    sigmas, seeds = ([0.05, 0.2], [0, 1]) if fast else ([0.02, 0.05, 0.1, 0.2, 0.4], [0, 1, 2])
    raster, table = cnn_under_noise(models.load(model), x, y, calibration, device, sigmas, seeds)
    raster.savefig(out / "06_raster_noise.png", dpi=110)
    summary = table.summary("seed")
    print(summary)
    fig = plot.sweep_curves(table, "sigma_v", "accuracy", label="ttfs")
    fig.axes[0].set_xlabel("sigma_v (fraction of the threshold, per step)")
    fig.savefig(out / "06_accuracy_vs_noise.png", dpi=110)
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="figures")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--device", default="numpy", choices=["cpp_standalone", "runtime", "numpy"])
    parser.add_argument("--fast", action="store_true", help="two noise levels, two seeds")
    main(**vars(parser.parse_args()))
