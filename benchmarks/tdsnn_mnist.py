"""TDSNN on MNIST against Zhang et al. (AAAI-19): accuracy loss without and with fine-tuning on G,
operations of the SNN (synaptic + ticking + bias) against the ANN's, per layer and in total, and
a voltage-trace figure of the first convolutional layer (silent window, ticking phase, spikes).

    python benchmarks/tdsnn_mnist.py                       # 1,000 test images, L = 8
    python benchmarks/tdsnn_mnist.py --images 500 --skip-finetune
    python benchmarks/tdsnn_mnist.py --images 10000 --L 4

The full MNIST is looked up in ``--data``, ``$BRIANCONV_DATA`` or ``../shared/data/mnist`` (the
bundled 1,000 test / 500 training images otherwise). Figures go to ``--out``. Every number
printed is measured in this run; the SNN runs as compiled C++ (Brian2 standalone).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from provenance import header

import brianconv
from brianconv import datasets, models
from brianconv.metrics import ann_cost
from brianconv.nn import finetune_tdsnn
from brianconv.schemes.tdsnn import emulate

PAPER_MAX_LOSS = 0.5  # percentage points: "no more than 0.5% accuracy loss"
PAPER_REDUCTION = 42  # % fewer total operations than the DNN, "on average in large networks"


def load_data(args):
    shared = [Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"]
    x, y, source = datasets.load_mnist_or_sample("test", args.data, args.images, shared)
    xt, yt, _ = datasets.load_mnist_or_sample("train", args.data, None, shared)
    return x, y, xt, yt, source


def run(model, x, y, xc, args, label, states=None, spikes=()):
    snn = brianconv.convert(model, "tdsnn", calibration=xc, L=args.L)
    result = snn.simulate(x, labels=y, n_workers=args.workers, build_root=args.build_dir, batch_size=args.batch,
                          states=states(snn) if states else None, spikes=spikes(snn) if spikes else ())
    coded, _ = emulate(snn.graph, x, args.L, t_out=snn.description.state.t_out)
    coded = coded[snn.graph.output.name]
    print(f"\n[{label}] build {result.timing['build']:.1f} s (compiled: {result.timing['compiled']}), simulation "
          f"{result.timing['simulate']:.1f} s ({len(x) / result.timing['simulate']:.1f} images/s, {args.workers} workers)")
    print(f"[{label}] SNN logits vs the coded network in torch (G in place of ReLU): max |difference| = "
          f"{np.max(np.abs(result.outputs - coded)):.2e}, same prediction on "
          f"{100 * np.mean(result.predictions == coded.argmax(1)):.2f} % of the images")
    return snn, result


def operations(snn, result, cost):
    """Per layer: ANN MACs/FLOPs and SNN operations (spikes x fan-out into it, ticks, bias)."""
    d = snn.description
    into = {}  # layer -> {"synaptic": ops, "tick": ops, "bias": ops}
    for q in d.projections:
        outgoing = [p for p in d.projections if p.source == q.source]
        assert len(outgoing) == 1, "operations are attributed per source population"
        kind = {"helper": "tick" if q.source.startswith("tick_") else "bias"}.get(d.population(q.source).role,
                                                                                    "synaptic")
        layer = d.population(q.target).layer
        into.setdefault(layer, {"synaptic": 0.0, "tick": 0.0, "bias": 0.0})[kind] += \
            result.synaptic_ops_per_population[q.source].mean()
    rows = []
    for row in cost.layers:
        ops = into.get(row.name, {"synaptic": 0.0, "tick": 0.0, "bias": 0.0})
        rows.append((row, ops))
    return rows


def print_operations(rows, n_images):
    print(f"\nOperations per image (mean over {n_images} images). ANN: MACs (one multiply-accumulate per "
          "connection), FLOPs = 2 x MACs + bias/ReLU/pool ops.\nSNN: every spike adds its weight at each "
          "target (one addition per synapse): input and hidden spikes, ticking-neuron spikes, bias-neuron spikes.")
    head = f"{'layer':<8}{'op':<9}{'ANN MACs':>12}{'ANN FLOPs':>12}{'SNN syn':>12}{'SNN tick':>10}{'SNN bias':>10}" \
           f"{'SNN total':>12}{'SNN/MACs':>10}{'SNN/FLOPs':>10}"
    print(head)
    totals = np.zeros(6)
    for row, ops in rows:
        flops = row.flops + row.other_flops
        total = ops["synaptic"] + ops["tick"] + ops["bias"]
        totals += [row.macs, flops, ops["synaptic"], ops["tick"], ops["bias"], total]
        ratio_macs = f"{total / row.macs:>10.3f}" if row.macs else f"{'':>10}"
        print(f"{row.name:<8}{row.op:<9}{row.macs:>12,}{flops:>12,}{ops['synaptic']:>12,.0f}{ops['tick']:>10,.0f}"
              f"{ops['bias']:>10,.0f}{total:>12,.0f}{ratio_macs}{total / flops:>10.3f}")
    print(f"{'total':<17}{totals[0]:>12,.0f}{totals[1]:>12,.0f}{totals[2]:>12,.0f}{totals[3]:>10,.0f}"
          f"{totals[4]:>10,.0f}{totals[5]:>12,.0f}{totals[5] / totals[0]:>10.3f}{totals[5] / totals[1]:>10.3f}")
    print(f"total operation reduction against the ANN's FLOPs: {100 * (1 - totals[5] / totals[1]):.1f} % "
          f"(paper: {PAPER_REDUCTION} % on average for large networks); against MACs: "
          f"{100 * (1 - totals[5] / totals[0]):.1f} %")


def plot_traces(snn, result, neurons, out):
    """Voltage traces of a few neurons of the first hidden layer for image 0."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    population = snn.description.populations[1]
    tick = f"tick_{population.name}"
    t_il, t_out = population.values["T_il"], population.values["T_out"]
    v = result.states[population.name]["v"][0] * 1e3  # mV = ANN units
    fired = result.states[population.name]["fired"][0]
    steps = np.arange(v.shape[0])
    end = t_il + t_out + 3
    fig, (top, ax, zoom) = plt.subplots(3, 1, figsize=(9, 8), sharex=True, height_ratios=[1, 3, 3],
                                        constrained_layout=True)
    image, _, local = result.spikes[tick]
    top.vlines(local[image == 0], 0, 1, color="k")
    top.set_yticks([])
    top.set_ylabel("ticking\nneuron")
    top.set_title(f"TDSNN, layer {population.layer} ({population.name}), image 0: L = "
                  f"{snn.description.state.options.L:g}, T_il = {t_il}, T_out = {t_out}")
    for column, index in enumerate(neurons):
        spike = np.flatnonzero(fired[:, column] > 0)
        for axis in (ax, zoom):
            line, = axis.plot(steps[:end], v[:end, column], ".-", lw=1.3, label=f"neuron {index}")
            if len(spike):
                axis.plot(spike[0], v[spike[0], column], "^", color=line.get_color(), ms=9)
    after = v[t_il:end]
    zoom.set_ylim(1.1 * after.min(), 1.1 * max(after.max(), 0) + 1e-3)
    zoom.axhline(0, color="k", ls="--", lw=1)
    zoom.set_ylabel("v (mV), zoomed")
    zoom.set_xlabel(f"step of the layer's window (dt = {float(snn.description.dt) * 1e3:g} ms); "
                    "triangles: the neuron's single spike")
    for axis in (top, ax, zoom):
        axis.axvspan(-0.5, t_il + 0.5, color="0.85", lw=0)
        axis.axvspan(t_il + 0.5, t_il + t_out + 0.5, color="#e0ecff", lw=0)
    ax.axhline(0, color="k", ls="--", lw=1)
    ax.text(t_il / 2, ax.get_ylim()[0], "silent window (inhibited):\ninputs with negated weights",
            ha="center", va="bottom", fontsize=8)
    ax.text(t_il + t_out / 2, ax.get_ylim()[0], "ticking phase: threshold 0,\nlater spike = larger value",
            ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("membrane potential v (mV)")
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "tdsnn_voltage_traces.png", dpi=120)
    print(f"saved {out / 'tdsnn_voltage_traces.png'}")


def pick_neurons(snn, x0, L, count):
    """Neurons of the first hidden layer whose codes for image 0 spread over the window."""
    population = snn.description.populations[1]
    _, steps = emulate(snn.graph, x0[None], L, t_out=snn.description.state.t_out)
    codes = steps[population.layer].reshape(-1)
    chosen = []
    for target in np.linspace(0, codes.max(), count).round():
        candidates = np.flatnonzero(codes == target)
        candidates = [c for c in candidates if c not in chosen]
        if candidates:
            chosen.append(int(candidates[len(candidates) // 2]))
    return population.name, chosen


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lopez_randulfe_cnn")
    parser.add_argument("--images", type=int, default=1000, help="test images (default 1000)")
    parser.add_argument("--calibration", type=int, default=1000, help="training images used for calibration")
    parser.add_argument("--L", type=float, default=8.0, help="leak constant in steps")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--finetune-images", type=int, default=20000, help="training images for fine-tuning")
    parser.add_argument("--finetune-epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--skip-finetune", action="store_true")
    parser.add_argument("--plot-neurons", type=int, default=6)
    parser.add_argument("--data", default=None)
    parser.add_argument("--build-dir", default=None)
    parser.add_argument("--out", default="figures")
    args = parser.parse_args()
    print(header(__file__), flush=True)
    torch.manual_seed(0)
    model = models.load(args.model)
    x, y, xt, yt, source = load_data(args)
    xc = xt[-args.calibration:]
    print(f"{args.model}: {len(x)} test images from the {source}; calibration on {len(xc)} training images; "
          f"L = {args.L:g} steps")

    plotted = {}

    def states(snn):
        name, neurons = pick_neurons(snn, x[0], args.L, args.plot_neurons)
        plotted["neurons"] = neurons
        return {name: (["v", "fired"], neurons)}

    def spikes(snn):
        return [f"tick_{snn.description.populations[1].name}"]

    snn, base = run(model, x, y, xc, args, "ReLU model, no retraining", states, spikes)
    print(snn.description.summary())
    print("codes: " + ", ".join(f"{layer} T_out = {t}" for layer, t in snn.description.state.t_out.items())
          + f", bias T(1) = {snn.description.state.t_bias}; image period {snn.description.period_steps} steps")
    cost = ann_cost(snn.graph, x=x[:200])
    rows = operations(snn, base, cost)
    print_operations(rows, len(x))
    plot_traces(snn, base, plotted["neurons"], args.out)

    lines = [("ReLU model, converted as it is", base)]
    if not args.skip_finetune:
        subset = np.random.default_rng(0).permutation(len(xt) - args.calibration)[:args.finetune_images]
        start = time.perf_counter()
        tuned = finetune_tdsnn(model, (xt[subset], yt[subset]), L=args.L, epochs=args.finetune_epochs, lr=args.lr)
        print(f"\nfine-tuned through G (L = {args.L:g}) on {len(subset)} training images, {args.finetune_epochs:g} "
              f"epoch(s), lr {args.lr:g}: {time.perf_counter() - start:.0f} s")
        _, after = run(tuned, x, y, xc, args, "fine-tuned on G")
        lines.append(("fine-tuned on G, converted", after))

    print(f"\n{'':<36}{'ANN (%)':>9}{'SNN (%)':>9}{'loss (pp)':>11}{'agreement (%)':>15}")
    for label, result in lines:
        print(f"{label:<36}{100 * result.ann_accuracy:>9.2f}{100 * result.accuracy:>9.2f}"
              f"{100 * (base.ann_accuracy - result.accuracy):>11.2f}{100 * result.agreement:>15.2f}")
    print(f"(loss against the original ANN's accuracy; paper: at most {PAPER_MAX_LOSS} pp; spikes per neuron, "
          f"input and hidden: {np.mean([base.spikes_per_neuron_by_population()[p.name] for p in snn.description.populations if p.role in ('input', 'hidden')]):.3f})")


if __name__ == "__main__":
    main()
