"""Rate coding on MNIST after Rueckauer et al.: accuracy against simulated time, spikes, synaptic
operations, the paper's ablation of its conversion tools, and ANN activation vs SNN rate.

    python benchmarks/rate_mnist.py                           # defaults below
    python benchmarks/rate_mnist.py --images 1000 --duration 200 --workers 2

The full MNIST is looked up in ``--data``, ``$BRIANCONV_DATA`` or ``../shared/data/mnist``; without
it the 1,000 bundled test images are used. Figures go to ``--out``. Every number printed is measured
in this run (C++ standalone, ``--workers`` parallel runs of one compiled program per configuration).

Default image count: the main run simulates the first 1,000 test images. Measured on two cores
shared with other jobs: ``--images 10000 --duration 100 --ablation-images 2000`` (the run kept in
``benchmarks/results/rate_mnist.txt``) took 30 minutes in all, of which 18 minutes for the
10,000 images of the 29k-neuron ``lopez_randulfe_cnn`` (9.4 images/s with two workers; 21 million
synaptic operations per image) and 10 minutes for the ablation, compilations included.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from provenance import header

import brianconv
from brianconv import datasets, models, plot
from brianconv.calibration import calibrate

#: The paper's ablation (its Fig. 3, CIFAR-10): the baseline, then one tool added at a time.
#: ``input`` needs its own compiled network; reset and max-norm scales are run-time parameters.
ABLATION = [
    ("reset to zero,\nPoisson, max-norm", "poisson", dict(reset="zero", max_norm=True)),
    ("+ reset by\nsubtraction", "poisson", dict(reset="subtract", max_norm=True)),
    ("+ analog\ninput", "analog", dict(reset="subtract", max_norm=True)),
    ("+ 99.9th percentile\nnorm (default)", "analog", dict(reset="subtract", max_norm=False)),
]


def load_data(args):
    shared = [Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"]
    x, y, source = datasets.load_mnist_or_sample("test", args.data, args.images, shared)
    xc, _, _ = datasets.load_mnist_or_sample("train", args.data, None, shared)
    return x, y, xc[-args.calibration:], source


def accuracy_curve(result):
    """Accuracy (%) after every step of the image period, from the output trace."""
    return 100 * np.mean(result.output_trace.argmax(-1) == result.labels[:, None], axis=0)


def steps_to_reach(curve, target):
    """First step count from which the accuracy stays >= target (None if it never does)."""
    below = np.nonzero(curve < target)[0]
    if len(below) == 0:
        return 1
    return None if below[-1] == len(curve) - 1 else int(below[-1]) + 2


def convert(model, xc, args, **options):
    return brianconv.convert(model, "rate", calibration=xc, duration=args.duration, **options)


def run(snn, x, y, args, **parameters):
    return snn.simulate(x, labels=y, n_workers=args.workers, build_root=args.build_dir, batch_size=args.batch,
                        trace=True, **parameters)


def main_run(model, x, y, xc, args):
    snn = convert(model, xc, args)
    result = run(snn, x, y, args)
    print(snn.description.summary())
    curve = accuracy_curve(result)
    ann = 100 * result.ann_accuracy
    print(f"\nbuild {result.timing['build']:.1f} s (compiled: {result.timing['compiled']}), simulation "
          f"{result.timing['simulate']:.1f} s for {len(x)} images x {args.duration} steps "
          f"({len(x) / result.timing['simulate']:.2f} images/s, {args.workers} worker(s))")
    print(f"\nANN accuracy: {ann:.2f} %")
    print("SNN accuracy after k steps (one run, output read at every step):")
    for k in sorted({k for k in args.report_steps if k <= args.duration} | {args.duration}):
        print(f"  k = {k:>4} steps ({k * float(snn.description.dt) * 1e3:6.1f} ms): {curve[k - 1]:6.2f} %")
    reach = steps_to_reach(curve, ann - 0.1)
    print(f"steps to stay within 0.1 pp of the ANN ({ann - 0.1:.2f} %): "
          f"{reach if reach is not None else f'not reached in {args.duration} steps'}")
    print(f"SNN/ANN agreement at {args.duration} steps: {100 * result.agreement:.2f} %; RMSE of the decoded "
          f"outputs against the ANN logits: {np.sqrt(np.mean((result.outputs - result.ann_outputs) ** 2)):.4f} "
          f"(logit standard deviation {np.std(result.ann_outputs):.2f})")
    hidden = [p.name for p in snn.description.populations if p.role == "hidden"]
    spikes_hidden = sum(result.spike_counts[n].mean() for n in hidden) / sum(result.neurons[n] for n in hidden)
    print(f"spikes per neuron and image: {result.spikes_per_neuron:.3f} (all populations; the analog input "
          f"counts its current-setting events), {spikes_hidden:.3f} (hidden layers)")
    print(f"synaptic operations per image: {result.synaptic_ops.mean():,.0f}")
    try:
        from brianconv.metrics import ann_cost
        cost = ann_cost(snn.graph, x=x[:200])
        print(f"ANN multiply-accumulates per image: {cost.macs:,}  (synaptic ops / MACs = "
              f"{result.synaptic_ops.mean() / cost.macs:.2f})")
    except ImportError:
        pass
    print("\nper population: neurons, spikes per neuron and image, synaptic ops per image")
    by_population = result.spikes_per_neuron_by_population()
    for name in result.neurons:
        print(f"  {name:<14}{result.neurons[name]:>8}{by_population[name]:>10.3f}"
              f"{result.synaptic_ops_per_population[name].mean():>14,.0f}")
    return snn, result, curve


def ablation(model, snn, x, y, xc, args, main_result):
    """Accuracy at a fixed step count, adding the paper's tools one at a time (last: the main run).

    Two compiled networks (Poisson and analog input); reset and max-norm are run-time parameters
    (the max-norm scales are the maxima of the calibration activations of each hidden layer).
    """
    n = min(args.ablation_images, len(x))
    max_scales = {name: scale for name, scale in calibrate(snn.graph, xc, 100).scales.items()
                  if name in snn.description.state.scales and snn.graph[name].is_weighted
                  and snn.graph[name] is not snn.graph.output}
    networks = {"analog": snn}
    curves = []
    ann = 100 * np.mean(main_result.ann_predictions[:n] == y[:n])
    columns = sorted({5, args.ablation_steps, 20, 50, args.duration} & set(range(1, args.duration + 1)))
    print(f"\nAblation on the first {n} images (ANN {ann:.2f} %): SNN accuracy (%) after k steps, and the RMSE "
          f"of the decoded outputs against the ANN logits after {args.duration} steps:")
    print(f"  {'':<44}" + "".join(f"{'k=' + str(k):>8}" for k in columns) + f"{'RMSE':>9}")
    for label, input_mode, config in ABLATION:
        start = time.perf_counter()
        if input_mode == "analog" and not config["max_norm"]:
            result = main_result
            curve = 100 * np.mean(main_result.output_trace[:n].argmax(-1) == y[:n, None], axis=0)
            note = "(main run)"
        else:
            if input_mode not in networks:
                networks[input_mode] = convert(model, xc, args, input=input_mode)
            result = run(networks[input_mode], x[:n], y[:n], args, reset=config["reset"],
                         scales=max_scales if config["max_norm"] else None)
            curve = accuracy_curve(result)
            note = f"({time.perf_counter() - start:.0f} s{', incl. build' if result.timing['compiled'] else ''})"
        curves.append(curve)
        rmse = np.sqrt(np.mean((result.outputs[:n] - result.ann_outputs[:n]) ** 2))
        print(f"  {label.replace(chr(10), ' '):<44}" + "".join(f"{curve[k - 1]:8.2f}" for k in columns)
              + f"{rmse:9.4f}  {note}")
    return n, curves


def correlation(snn, x, args):
    """Per-layer ANN activation against the value the SNN rates carry (spikes / T x scale)."""
    n = min(args.correlation_images, len(x))
    hidden = [p.name for p in snn.description.populations if p.role == "hidden"]
    result = snn.simulate(x[:n], spikes=hidden, n_workers=args.workers, build_root=args.build_dir, batch_size=n)
    _, activations = snn.graph.forward(x[:n], record=True)
    print(f"\nANN activation vs SNN rate on {n} images (rate x scale, ANN units), Pearson r:")
    for name in hidden:
        ann = activations[snn.description.population(name).layer].reshape(n, -1)
        carried = snn.values(result, name)
        print(f"  {name:<14} r = {np.corrcoef(ann.ravel(), carried.ravel())[0, 1]:.4f}")
    return result, x[:n]


def figures(args, snn, curve, n_ablation, curves, ann_accuracy, ann_subset_accuracy, correlation_result,
            correlation_x):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = np.arange(1, len(curve) + 1)
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    ax.plot(steps, curve, lw=2, color="k", label=f"SNN, default ({args.images_used} images)")
    for (label, _, _), c in zip(ABLATION[:-1], curves[:-1]):
        ax.plot(steps, c, lw=1, label=label.replace("\n", " ") + f" ({n_ablation} images)")
    ax.axhline(ann_accuracy, color="grey", ls="--", lw=1, label=f"ANN ({ann_accuracy:.2f} %)")
    ax.set_xscale("log")
    ax.set_xlabel("simulated steps per image (dt = 1 ms, log scale)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100.5)
    ax.set_title("Accuracy against simulated time (rate coding)")
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(out / "rate_accuracy_vs_time.png", dpi=120)
    saved = ["rate_accuracy_vs_time.png"]

    if curves:
        ablation_figure(plt, args, n_ablation, curves, ann_subset_accuracy, out)
        saved.append("rate_ablation.png")

    fig = plot.activation_correlation(snn, correlation_result, correlation_x)
    fig.savefig(out / "rate_correlation.png", dpi=120)
    saved.append("rate_correlation.png")
    for name in saved:
        print(f"saved {out / name}")


def ablation_figure(plt, args, n_ablation, curves, ann_accuracy, out):
    fig, ax = plt.subplots(figsize=(7, 4), constrained_layout=True)
    values = [c[args.ablation_steps - 1] for c in curves]
    bars = ax.bar(range(len(values)), values, color=["C3", "C1", "C2", "C0"])
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.2f}", ha="center", va="bottom", fontsize=8)
    ax.axhline(ann_accuracy, color="grey", ls="--", lw=1, label=f"ANN ({ann_accuracy:.2f} %)")
    ax.set_xticks(range(len(values)), [label for label, _, _ in ABLATION], fontsize=8)
    ax.set_ylabel(f"accuracy after {args.ablation_steps} steps (%)")
    ax.set_ylim(max(0, min(values) - 10), 101.5)
    ax.set_title(f"Conversion tools added one at a time ({n_ablation} MNIST test images)")
    ax.legend(fontsize=8, loc="lower left")
    fig.savefig(out / "rate_ablation.png", dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lopez_randulfe_cnn")
    parser.add_argument("--images", type=int, default=1000,
                        help="test images of the main run (the first ones of the test set; 10000: all)")
    parser.add_argument("--duration", type=int, default=200, help="steps per image (dt = 1 ms)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="figures")
    parser.add_argument("--calibration", type=int, default=500, help="training images used for calibration")
    parser.add_argument("--batch", type=int, default=250, help="images per run of the compiled program")
    parser.add_argument("--report-steps", type=int, nargs="+", default=[5, 8, 10, 15, 20, 30, 50, 100, 150])
    parser.add_argument("--ablation-images", type=int, default=500)
    parser.add_argument("--ablation-steps", type=int, default=10, help="step count at which the ablation is compared")
    parser.add_argument("--correlation-images", type=int, default=20)
    parser.add_argument("--data", default=None)
    parser.add_argument("--build-dir", default=None)
    parser.add_argument("--skip-ablation", action="store_true")
    args = parser.parse_args()
    print(header(__file__), flush=True)
    if not 1 <= args.ablation_steps <= args.duration:
        parser.error("--ablation-steps must be in [1, --duration]")
    start = time.perf_counter()
    model = models.load(args.model)
    x, y, xc, source = load_data(args)
    args.images_used = len(x)
    print(f"{args.model}: {len(x)} test images from the {source}; calibration on {len(xc)} training images; "
          f"duration {args.duration} steps of 1 ms; device cpp_standalone, {args.workers} worker(s)")
    snn, result, curve = main_run(model, x, y, xc, args)
    n_ablation, curves = (0, [])
    if not args.skip_ablation:
        n_ablation, curves = ablation(model, snn, x, y, xc, args, result)
    correlation_result, correlation_x = correlation(snn, x, args)
    ann_subset = 100 * np.mean(result.ann_predictions[:n_ablation] == y[:n_ablation]) if n_ablation else None
    figures(args, snn, curve, n_ablation, curves, 100 * result.ann_accuracy, ann_subset, correlation_result,
            correlation_x)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
