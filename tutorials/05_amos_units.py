"""Tutorial 5 — the AMOS unit: K threshold neurons, at most one spike each, approximating a gate.

Stöckl and Maass replace every ANN gate by an AMOS unit of ``K`` McCulloch-Pitts neurons: neuron
``k`` fires if ``c_k x - H_k >= T_k``, where ``H_k`` is the inhibition from the neurons before it,
and the unit sends ``y = sum_k d_k z_k``. For ReLU the parameters have a closed form (a
successive-approximation A/D converter, error at most ``alpha 2^-K``); sigmoid and SiLU use
units trained by backpropagation (``benchmarks/train_amos_units.py``).

Here each gate sits in a tiny network ``x -> Linear(1, 1) -> gate -> Linear(1, 1)`` whose first
layer maps the input ``[0, 1]`` onto ``u = 16 x - 8`` in ``[-8, 8]``; the network is converted
with the ``amos`` scheme and all input values run through one pipelined simulation (a new input
every step). We plot what the spiking network computes against the gate, and which of the K
neurons fire for a few inputs: their spikes are the binary digits of the output.

    python tutorials/05_amos_units.py [--out figures] [--points 161]
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
from brianconv.schemes.amos import sent_values  # noqa: E402

GATES = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "silu": nn.SiLU}
EXACT = {"relu": lambda u: np.maximum(u, 0), "sigmoid": lambda u: 1 / (1 + np.exp(-u)),
         "silu": lambda u: u / (1 + np.exp(-u))}


def gate_network(gate):
    """``x`` in [0, 1] -> ``u = 16 x - 8`` -> gate -> identity readout."""
    model = nn.Sequential(nn.Linear(1, 1), GATES[gate](), nn.Linear(1, 1)).eval()
    with torch.no_grad():
        model[0].weight.fill_(16.0)
        model[0].bias.fill_(-8.0)
        model[2].weight.fill_(1.0)
        model[2].bias.fill_(0.0)
    return model


def run_gate(gate, x, K=6, device="runtime"):
    """Convert one gate network with amos and simulate every input value.

    Returns the pre-activation ``u`` (shape (N,)), the SNN output (N,), the unit's spikes per
    input (N, K) and the converted network.
    """
    snn = brianconv.convert(gate_network(gate), "amos", calibration=x, K=K)
    hidden = snn.description.populations[1].name
    unit = snn.scheme.unit_for(snn.graph.layers[1], snn.calibration)
    # pipelined: neuron k answers k steps late, so K - 1 padding inputs flush the last ones out
    padded = torch.cat([x, x[-1:].repeat(unit.K - 1, 1)])
    result = snn.simulate(padded, device=device, spikes=[hidden])
    _, counts = sent_values(result, snn.description, hidden, unit, len(x))
    u = 16 * x.numpy()[:, 0].astype(np.float64) - 8
    return u, result.outputs[:len(x), 0], counts, snn, unit


def main(out="figures", points=161, device="runtime"):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x = torch.linspace(0, 1, points, dtype=torch.float64).reshape(-1, 1).float()
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5), constrained_layout=True,
                             gridspec_kw=dict(height_ratios=[2, 1]))
    errors = {}
    for column, gate in enumerate(GATES):
        u, y, spikes, snn, unit = run_gate(gate, x, device=device)
        exact = EXACT[gate](u)
        errors[gate] = dict(K=unit.K, max_error=float(np.max(np.abs(y - exact))),
                            mse=float(np.mean((y - exact) ** 2)),
                            # inputs exactly on a threshold may round either way in volts
                            same_as_unit=float(np.mean(np.abs(y - unit(u)) < 1e-9)),
                            alpha=snn.calibration.scales[snn.graph.layers[1].name])
        ax = axes[0, column]
        ax.plot(u, exact, color="0.6", lw=3, label=f"{gate}(u)")
        ax.step(u, y, where="mid", color="C3", lw=1.2, label=f"AMOS unit, K = {unit.K} (Brian2)")
        ax.set_title(f"{gate}: max |error| {errors[gate]['max_error']:.3g}")
        ax.set_xlabel("pre-activation u")
        ax.set_ylabel("unit output y")
        ax.legend(loc="upper left", fontsize=8)
        shown = np.linspace(0, len(u) - 1, 9).astype(int)
        ax = axes[1, column]
        ax.imshow(spikes[shown].T, aspect="auto", cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks(range(len(shown)), [f"{value:.0f}" for value in u[shown]])
        ax.set_yticks(range(unit.K))
        ax.set_xlabel("u")
        ax.set_ylabel("neuron k (spike = black)")
    fig.savefig(out / "05_amos_units.png", dpi=120)
    for gate, e in errors.items():
        print(f"{gate:8s} K = {e['K']:2d}: max |SNN - {gate}| = {e['max_error']:.4f}, MSE = {e['mse']:.2e}, "
              f"SNN = numpy unit on {100 * e['same_as_unit']:.1f} % of the inputs")
    alpha, K = errors["relu"]["alpha"], errors["relu"]["K"]
    print(f"ReLU bound alpha 2^-K = {alpha:.3f} x 2^-{K} = {alpha * 2.0 ** -K:.4f}")
    print(f"figure written to {out}/05_amos_units.png")
    return errors


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="figures")
    parser.add_argument("--points", type=int, default=161, help="input values from 0 to 1")
    parser.add_argument("--device", default="runtime", choices=["cpp_standalone", "runtime", "numpy"])
    main(**vars(parser.parse_args()))
