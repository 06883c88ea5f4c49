"""Tutorial 3 — rate vs TTFS vs TDSNN vs AMOS on the same network.

One trained ANN, four ways of carrying its activations with spikes:

* ``rate``  (Rueckauer et al.): integrate-and-fire neurons, the value is a firing rate; accuracy
  grows with the simulated time, many spikes per neuron.
* ``ttfs``  (López-Randulfe et al.): two-stage neurons, the value is the time of one spike.
* ``tdsnn`` (Zhang et al.): leaky neurons with ticking neurons, reverse coding (strong = late).
* ``amos``  (Stöckl and Maass): every ReLU becomes K threshold neurons, at most one spike each.

All four are simulated on the same bundled MNIST test images; we compare accuracy, agreement
with the ANN, spikes per neuron, synaptic operations (each spike times its fan-out) against the
ANN's multiply-accumulates, and the latency from input to answer.

    python tutorials/03_schemes_compared.py [--images 100] [--model small_cnn] [--out figures]

The default device is Brian2's runtime with numpy code: for 100 images of this small network it
is faster than compiling four C++ programs (``--device cpp_standalone``, the fast core for large
runs, gives the same numbers).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import brianconv  # noqa: E402
from brianconv import datasets, models  # noqa: E402
from brianconv.metrics import ann_cost  # noqa: E402

#: Scheme options: rate needs enough steps for its rates, amos K neurons per ReLU (dendrite wiring:
#: K_s F + K_t n synapses instead of K_s K_t F, and max-pooling is supported).
SCHEMES = {"rate": dict(duration=50), "ttfs": dict(t_max=32), "tdsnn": dict(L=8.0),
           "amos": dict(K=8, wiring="dendrite")}


def latency_ms(snn, result):
    """Simulated time from an image's entry to the step its output is read (ms)."""
    d = snn.description
    steps = result.window_starts[d.output_population] + (d.readout_step or 0) + 1
    return steps * result.dt * 1e3


def compare(model, x, y, calibration, device, schemes=SCHEMES):
    """Convert and simulate ``model`` with every scheme; one row of measurements per scheme."""
    macs = ann_cost(model, input_shape=tuple(x.shape[1:])).macs
    rows = []
    for method, options in schemes.items():
        snn = brianconv.convert(model, method, calibration=calibration, **options)
        result = snn.simulate(x, labels=y, device=device)
        rows.append(dict(scheme=method, options=options, accuracy=100 * result.accuracy,
                         ann_accuracy=100 * result.ann_accuracy, agreement=100 * result.agreement,
                         spikes_per_neuron=result.spikes_per_neuron, neurons=sum(result.neurons.values()),
                         synaptic_ops=float(np.mean(result.synaptic_ops)), ann_macs=macs,
                         latency_ms=latency_ms(snn, result), dt_ms=result.dt * 1e3))
        print(f"{method:6s} done: accuracy {rows[-1]['accuracy']:.2f} %", flush=True)
    return rows


def print_table(rows):
    print(f"\n{'scheme':8s}{'SNN acc %':>10s}{'ANN acc %':>10s}{'agree %':>9s}{'spikes/neuron':>15s}"
          f"{'syn. ops':>12s}{'ops/MACs':>10s}{'latency':>12s}")
    for r in rows:
        print(f"{r['scheme']:8s}{r['accuracy']:10.2f}{r['ann_accuracy']:10.2f}{r['agreement']:9.2f}"
              f"{r['spikes_per_neuron']:15.4f}{r['synaptic_ops']:12,.0f}{r['synaptic_ops'] / r['ann_macs']:10.3f}"
              f"{r['latency_ms']:9.1f} ms")
    print(f"(ANN: {rows[0]['ann_macs']:,} multiply-accumulates per image)")


def plot_comparison(rows):
    """Four bar panels: accuracy, spikes per neuron, synaptic operations, latency."""
    names = [r["scheme"] for r in rows]
    colors = [f"C{i}" for i in range(len(rows))]
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), constrained_layout=True)
    panels = [("accuracy", "SNN accuracy (%)"), ("spikes_per_neuron", "spikes per neuron and image"),
              ("synaptic_ops", "synaptic operations per image"), ("latency_ms", "latency (ms simulated)")]
    for ax, (key, label) in zip(axes, panels):
        ax.bar(names, [r[key] for r in rows], color=colors)
        ax.set_ylabel(label)
    axes[0].axhline(rows[0]["ann_accuracy"], color="k", ls="--", lw=1, label="ANN")
    axes[0].set_ylim(min(r["accuracy"] for r in rows) - 5, 100.5)
    axes[0].legend(loc="lower right")
    axes[2].axhline(rows[0]["ann_macs"], color="k", ls="--", lw=1, label="ANN MACs")
    axes[2].set_yscale("log")
    axes[2].legend(loc="lower right")
    fig.suptitle(f"one network, four codes ({len(rows)} schemes)")
    return fig


def main(out="figures", images=100, model="small_cnn", device="numpy", schemes=SCHEMES):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = datasets.load_sample("test", limit=images)
    calibration, _ = datasets.load_sample("train")
    rows = compare(models.load(model), x, y, calibration, device, schemes)
    print_table(rows)
    plot_comparison(rows).savefig(out / "03_schemes_compared.png", dpi=120)
    print(f"figure written to {out}/03_schemes_compared.png")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="figures")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--model", default="small_cnn", help="a bundled model (lopez_randulfe_cnn is slow on numpy)")
    parser.add_argument("--device", default="numpy", choices=["cpp_standalone", "runtime", "numpy"])
    main(**vars(parser.parse_args()))
