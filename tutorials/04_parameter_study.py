"""Tutorial 4 — a parameter study: thresholds, coding window and leak.

How do accuracy, spikes and synaptic operations move when we change a biophysical parameter?

A. ``ttfs``: the coding window ``t_max`` (steps per stage) against a common factor on every
   threshold. Both are run-time parameters, so ``brianconv.sweep`` re-runs ONE compiled C++
   program over the whole grid (no recompilation: the table's ``compiled`` column says so).
B. ``rate``: the firing threshold ``v_th`` in millivolts (each spike carries it, so rates scale
   as ``v_unit / v_th``) against the number of steps read out. One run per threshold records the
   output and the synaptic operations at every step (``trace=True``): low thresholds answer
   early but saturate and cost many spikes, high ones need longer.
C. ``tdsnn``: the membrane leak constant ``L`` (in steps). The leak shapes the code itself
   (spike times ``ceil(L ln(x + 1) - 1/2)``), so every value is a new conversion; longer ``L`` resolves
   values more finely at the price of longer windows.

    python tutorials/04_parameter_study.py [--images 200] [--model small_cnn] [--out figures]

The default device is Brian2's runtime with numpy code: for a few hundred images of a small
network it finishes sooner than compiling C++ (``--device cpp_standalone`` compiles each network
once, then every sweep point is a run of the same program with new ``run_args``).
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from brian2 import mV  # noqa: E402

import brianconv  # noqa: E402
from brianconv import datasets, models, plot  # noqa: E402
from brianconv.sweep import SweepTable  # noqa: E402

TTFS_GRID = {"t_max": [4, 8, 16, 32], "threshold_scale": [0.5, 0.75, 1.0, 1.5]}
RATE_THRESHOLDS = [0.25, 0.5, 1.0, 2.0]   # x v_unit (1 mV)
RATE_STEPS = [5, 10, 20, 40]
LEAKS = [2.0, 4.0, 8.0, 16.0]


def ttfs_study(model, x, y, calibration, device, grid=TTFS_GRID):
    """Part A: one compiled ttfs network over ``t_max`` x ``threshold_scale``."""
    snn = brianconv.convert(model, "ttfs", calibration=calibration, t_max=max(grid["t_max"]))
    return brianconv.sweep(snn, x, grid, labels=y, device=device)


def rate_study(model, x, y, calibration, device, thresholds=RATE_THRESHOLDS, steps=RATE_STEPS):
    """Part B: one rate network, one run per threshold, read out after each of ``steps``.

    Rows: threshold (mV), steps, accuracy after that many steps, spikes per neuron and synaptic
    operations up to that step (from the per-step traces of the run).
    """
    snn = brianconv.convert(model, "rate", calibration=calibration, duration=max(steps))
    v_unit = snn.description.state.options.v_unit
    rows = []
    for scale in thresholds:
        result = snn.simulate(x, labels=y, device=device, threshold_scale=scale, trace=True)
        for k in steps:
            predictions = result.output_trace[:, k - 1].argmax(axis=1)
            rows.append(dict(v_th_mV=float(scale * v_unit / mV), steps=k, accuracy=float(np.mean(predictions == y)),
                             synaptic_ops=float(result.synaptic_ops_trace[:, k - 1].mean()),
                             compiled=bool(result.timing["compiled"])))
    return SweepTable(rows)


def leak_study(model, x, y, calibration, device, leaks=LEAKS):
    """Part C: one tdsnn conversion per leak constant ``L``; rows like a sweep table."""
    rows = []
    for L in leaks:
        snn = brianconv.convert(model, "tdsnn", calibration=calibration, L=L)
        result = snn.simulate(x, labels=y, device=device)
        rows.append(dict(L=L, accuracy=result.accuracy, agreement=result.agreement,
                         spikes_per_neuron=result.spikes_per_neuron,
                         synaptic_ops=float(np.mean(result.synaptic_ops)),
                         period_steps=snn.description.period_steps,
                         rmse=float(np.sqrt(np.mean((result.outputs - result.ann_outputs) ** 2)))))
    return SweepTable(rows)


def plot_study(ttfs, rate, leak):
    """One figure: the ttfs accuracy map, ttfs ops vs t_max, rate accuracy vs v_th, tdsnn vs L."""
    fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
    plot.sweep_heatmap(ttfs, "t_max", "threshold_scale", "accuracy", ax=axes[0, 0])
    axes[0, 0].set_title("ttfs: accuracy over t_max and threshold factor")
    plot.sweep_curves(ttfs, "t_max", "synaptic_ops", hue="threshold_scale", ax=axes[0, 1])
    axes[0, 1].set_title("ttfs: synaptic operations per image")
    plot.sweep_curves(rate, "v_th_mV", "accuracy", hue="steps", ax=axes[1, 0])
    axes[1, 0].set_xscale("log", base=2)
    axes[1, 0].set_xlabel("threshold v_th (mV)")
    axes[1, 0].set_title("rate: accuracy against threshold, per readout step")
    axes[1, 0].legend(fontsize=7, loc="lower left")
    inset = axes[1, 0].inset_axes([0.36, 0.1, 0.3, 0.28])
    for k in sorted(set(rate.column("steps"))):
        rows = [row for row in rate if row["steps"] == k]
        inset.plot([row["v_th_mV"] for row in rows], [row["synaptic_ops"] for row in rows], ".-", lw=1)
    inset.set_xscale("log", base=2)
    inset.set_yscale("log")
    inset.set_title("synaptic ops", fontsize=7)
    inset.tick_params(labelsize=6)
    ax = axes[1, 1]
    ax.plot(leak.column("L"), leak.column("rmse"), "o-", color="C0")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("leak constant L (steps)")
    ax.set_ylabel("RMSE of the logits against the ANN", color="C0")
    twin = ax.twinx()
    twin.plot(leak.column("L"), leak.column("period_steps"), "s--", color="C1")
    twin.set_ylabel("steps per image", color="C1")
    ax.set_title("tdsnn: finer code, longer windows as the leak grows")
    return fig


def main(out="figures", images=200, model="small_cnn", device="numpy", fast=False):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    x, y = datasets.load_sample("test", limit=images)
    calibration, _ = datasets.load_sample("train")
    net = models.load(model)
    if fast:
        ttfs_grid = dict(t_max=[4, 16], threshold_scale=[0.5, 1.0])
        thresholds, steps, leaks = [0.5, 2.0], [5, 20], [4.0, 8.0]
    else:
        ttfs_grid, thresholds, steps, leaks = TTFS_GRID, RATE_THRESHOLDS, RATE_STEPS, LEAKS
    print("A. ttfs: t_max x threshold factor (one network, re-run per point)")
    ttfs = ttfs_study(net, x, y, calibration, device, ttfs_grid)
    print(ttfs)
    print("\nB. rate: threshold (mV) x readout step (one run per threshold)")
    rate = rate_study(net, x, y, calibration, device, thresholds, steps)
    print(rate)
    print("\nC. tdsnn: leak constant L (one conversion per value)")
    leak = leak_study(net, x, y, calibration, device, leaks)
    print(leak)
    plot_study(ttfs, rate, leak).savefig(out / "04_parameter_study.png", dpi=120)
    for name, table in (("ttfs", ttfs), ("rate", rate), ("tdsnn_leak", leak)):
        table.to_csv(out / f"04_{name}.csv")
    print(f"figure and tables written to {out}/04_parameter_study.png, 04_*.csv")
    return ttfs, rate, leak


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="figures")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--device", default="numpy", choices=["cpp_standalone", "runtime", "numpy"])
    parser.add_argument("--fast", action="store_true", help="a 2 x 2 grid and two leaks")
    main(**vars(parser.parse_args()))
