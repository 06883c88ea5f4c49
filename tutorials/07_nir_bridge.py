"""Tutorial 7 — the NIR bridge: an snnTorch network simulated in Brian2.

A small snnTorch network (Linear -> Leaky -> Linear -> Leaky, fixed random weights) is exported
to NIR, the exchange format of spiking-network frameworks, written to a ``.nir`` file and read
back by ``brianconv.nir.from_nir``, which builds the same network in Brian2 from NIR's
continuous-time equations. Both simulate the same input currents (one frame per step) and we
count how many spikes agree, then plot the Brian2 membrane traces and the raster.

snnTorch's ``Leaky`` computes ``v <- beta v + I``; it writes NIR's LIF ``tau dv/dt = -v + r I``
with ``tau = dt / (1 - beta)``, ``r = tau / dt`` and ``dt = 1e-4`` s, so importing with that ``dt``
gives back its update (forward Euler). Needs ``pip install brianconv[nir] snntorch``.

    python tutorials/07_nir_bridge.py [--out figures] [--steps 80] [--device runtime]
"""

import argparse
import contextlib
import dataclasses
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import torch  # noqa: E402
from brian2 import mV, second  # noqa: E402

from brianconv import plot  # noqa: E402
from brianconv.nir import from_nir, require_nir  # noqa: E402

DT = 1e-4 * second  # the dt snnTorch writes its time constants for


def snntorch_network(seed=0):
    """Linear(4, 8) -> Leaky -> Linear(8, 3) -> Leaky with fixed random weights.

    ``reset_mechanism="zero"`` and ``reset_delay=False`` are the dynamics NIR describes (reset to
    ``v_reset = 0`` in the step of the spike); snnTorch's defaults subtract, one step late.
    """
    import snntorch as snn

    torch.manual_seed(seed)

    def leaky(beta):
        return snn.Leaky(beta=beta, init_hidden=True, reset_mechanism="zero", reset_delay=False)

    net = torch.nn.Sequential(torch.nn.Linear(4, 8), leaky(0.9), torch.nn.Linear(8, 3), leaky(0.8))
    with torch.no_grad():
        net[0].weight.mul_(2.0)
        net[2].weight.mul_(3.0)
    return net


@contextlib.contextmanager
def nir_lif_with_v_reset(nir):
    """snnTorch 1.0 writes NIR 1.1's ``LIF(..., v_reset=0)``; on nir 1.0 (no ``v_reset`` field) a
    LIF with that field stands in while exporting and reading the file back."""
    original = nir.LIF
    if "v_reset" not in original.__dataclass_fields__:
        @dataclasses.dataclass(eq=False)
        class LIF(original):
            v_reset: np.ndarray = None

        nir.LIF = nir.ir.LIF = LIF   # nir.ir's table is what nir.read looks types up in
    try:
        yield
    finally:
        nir.LIF = nir.ir.LIF = original


def snntorch_spikes(net, frames):
    """snnTorch's own simulation: spikes of the two Leaky layers, arrays (N, T, size)."""
    from snntorch import utils

    recorded = {1: [], 3: []}
    with torch.no_grad():
        utils.reset(net)
        for t in range(frames.shape[1]):
            h = frames[:, t]
            for k, module in enumerate(net):
                h = module(h)
                if k in recorded:
                    recorded[k].append(h.numpy())
    return {k: np.stack(v, axis=1) for k, v in recorded.items()}


def brian_spikes(result, population, shape):
    spikes = np.zeros(shape)
    image, neuron, step = result.spikes[population]
    keep = step < shape[1]
    spikes[image[keep], step[keep], neuron[keep]] = 1
    return spikes


def main(out="figures", steps=80, device="runtime"):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    nir = require_nir()
    from snntorch.export_nir import export_to_nir

    net = snntorch_network()
    with nir_lif_with_v_reset(nir):
        graph = export_to_nir(net, torch.zeros(1, 4))
        nir.write(out / "07_snntorch.nir", graph)
        imported = from_nir(out / "07_snntorch.nir", dt=DT)
    print("NIR nodes:", {name: type(node).__name__ for name, node in graph.nodes.items()})
    print(imported.network(steps, steps).description.summary())
    # two input samples: slow sinusoidal currents, one frame per step
    t = np.arange(steps)[None, :, None]
    phase = np.array([[[0.0, 1.0, 2.0, 3.0]], [[1.5, 0.5, 2.5, 0.0]]])
    frames = torch.tensor(0.6 + 0.5 * np.sin(2 * np.pi * t / 40 + phase), dtype=torch.float32)
    result = imported.simulate(frames, device=device, spikes=["input", "n1", "n3"],
                               states={"n1": (["v"], [0, 1, 2]), "n3": (["v"], [0, 1, 2])})
    reference = snntorch_spikes(net, frames)
    agreement = {}
    for k in (1, 3):
        mine = brian_spikes(result, f"n{k}", reference[k].shape)
        agreement[f"n{k}"] = float(np.mean(mine == reference[k]))
        print(f"layer n{k}: {int(mine.sum())} spikes in Brian2, {int(reference[k].sum())} in snnTorch; "
              f"{100 * agreement[f'n{k}']:.2f} % of (sample, step, neuron) entries agree")
    print("spike counts of the output layer (result.outputs):\n", result.outputs)

    threshold = float(graph.nodes["1"].v_threshold) * float(1 * mV)  # NIR voltage unit: 1 mV
    fig = plot.membrane_traces(result, "n1", image=0, threshold=threshold)
    fig.axes[0].set_title("Hidden LIF neurons imported from snnTorch (Brian2, forward Euler)")
    fig.savefig(out / "07_membrane.png", dpi=120)
    fig = plot.raster(result, image=0, populations=["n1", "n3"])
    fig.savefig(out / "07_raster.png", dpi=120)
    print(f"figures written to {out}/07_membrane.png and 07_raster.png")
    return agreement, result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="figures")
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--device", default="runtime", choices=["cpp_standalone", "runtime", "numpy"])
    main(**vars(parser.parse_args()))
