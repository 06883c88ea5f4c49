"""TTFS on MNIST against López-Randulfe et al.: accuracy, spikes per neuron, synaptic operations,
and the paper's Figure 2 (conversion error of a convolutional layer against t_max and u_th).

    python benchmarks/ttfs_mnist.py                 # full test set if MNIST is found, else the bundled 1,000
    python benchmarks/ttfs_mnist.py --images 1000 --t-max 16

The full MNIST is looked up in ``--data``, ``$BRIANCONV_DATA`` or ``../shared/data/mnist``.
Figures go to ``--out``. Every number printed is measured in this run.
"""

import argparse
import time
from pathlib import Path

import numpy as np
from provenance import header

import brianconv
from brianconv import datasets, models
from brianconv.metrics import ann_cost

PAPER = dict(ann_accuracy=99.56, snn_accuracy=99.44, spikes_per_neuron=0.142, synaptic_ops=1_015_015,
             flops=14_316_496)


def load_data(args):
    shared = [Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"]
    x, y, source = datasets.load_mnist_or_sample("test", args.data, args.images, shared)
    xc, _, _ = datasets.load_mnist_or_sample("train", args.data, None, shared)
    return x, y, xc[-args.calibration:], source


def main_run(model, x, y, xc, args):
    snn = brianconv.convert(model, "ttfs", calibration=xc, t_max=args.t_max, threshold=args.threshold)
    print(snn.description.summary())
    result = snn.simulate(x, labels=y, n_workers=args.workers, build_root=args.build_dir, batch_size=args.batch)
    cost = ann_cost(snn.graph, x=x[:200])
    hidden = [p.name for p in snn.description.populations if p.role == "hidden"]
    spikes_hidden = sum(result.spike_counts[n].mean() for n in hidden) / sum(result.neurons[n] for n in hidden)
    ops = result.synaptic_ops.mean()
    print(f"\nbuild {result.timing['build']:.1f} s, simulation {result.timing['simulate']:.1f} s "
          f"({len(x) / result.timing['simulate']:.1f} images/s, {args.workers} worker(s))")
    print(f"\n{'':<44}{'paper':>12}{'brianconv':>14}")
    print(f"{'ANN accuracy (%)':<44}{PAPER['ann_accuracy']:>12.2f}{100 * result.ann_accuracy:>14.2f}")
    print(f"{'SNN accuracy (%)':<44}{PAPER['snn_accuracy']:>12.2f}{100 * result.accuracy:>14.2f}")
    print(f"{'accuracy loss (percentage points)':<44}{PAPER['ann_accuracy'] - PAPER['snn_accuracy']:>12.2f}"
          f"{100 * (result.ann_accuracy - result.accuracy):>14.2f}")
    print(f"{'SNN/ANN prediction agreement (%)':<44}{'':>12}{100 * result.agreement:>14.2f}")
    print(f"{'spikes per neuron, all incl. input':<44}{PAPER['spikes_per_neuron']:>12.3f}{result.spikes_per_neuron:>14.4f}")
    print(f"{'spikes per neuron, hidden layers':<44}{'':>12}{spikes_hidden:>14.4f}")
    print(f"{'synaptic operations per image':<44}{PAPER['synaptic_ops']:>12,}{ops:>14,.0f}")
    print(f"{'ANN FLOPs per image (2 x MACs)':<44}{PAPER['flops']:>12,}{cost.flops:>14,}")
    print(f"{'FLOPs / synaptic ops':<44}{PAPER['flops'] / PAPER['synaptic_ops']:>12.2f}{cost.flops / ops:>14.2f}")
    print(f"{'MACs / synaptic ops':<44}{'':>12}{cost.macs / ops:>14.2f}")
    print("\nper population: neurons, spikes per neuron, synaptic ops per image")
    by_population = result.spikes_per_neuron_by_population()
    for name in result.neurons:
        print(f"  {name:<14}{result.neurons[name]:>8}{by_population[name]:>10.4f}"
              f"{result.synaptic_ops_per_population[name].mean():>14,.0f}")
    return snn


def figure2(model, x, xc, args):
    """RMSE of the first conv layer's spiking output against t_max and u_th, one compiled network."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    t_build = max(args.figure_t_max)
    snn = brianconv.convert(model, "ttfs", calibration=xc, t_max=t_build, percentile=100)
    conv = snn.description.populations[1]
    layer = snn.graph[conv.layer]
    x_small = x[:args.figure_images]
    with torch.no_grad():
        ann = torch.relu(layer.pre_activation(torch.as_tensor(x_small, dtype=torch.float64))).numpy()
    ann = ann.reshape(len(x_small), -1)
    u_max = float(ann.max())
    fractions = np.array(args.figure_fractions)
    rmse = np.zeros((len(args.figure_t_max), len(fractions)))
    start = time.perf_counter()
    compiled = []
    for a, t_max in enumerate(args.figure_t_max):
        for b, fraction in enumerate(fractions):
            result = snn.simulate(x_small, spikes=[conv.name], build_root=args.build_dir, batch_size=len(x_small),
                                  t_max=t_max, scales={layer.name: fraction * u_max})
            compiled.append(result.timing["compiled"])
            image, neuron, local = result.spikes[conv.name]
            decoded = np.zeros_like(ann)
            decoded[image, neuron] = (t_max - (local - t_max)) / t_max * fraction * u_max
            rmse[a, b] = np.sqrt(np.mean((decoded - ann) ** 2))
    print(f"\nFigure 2: RMSE of {conv.name} ({layer.size} neurons) on {len(x_small)} images; {len(rmse.flat)} runs of "
          f"one program compiled {sum(compiled)} time(s), {time.perf_counter() - start:.0f} s")
    print("u_th / u_max:" + "".join(f"{f:>8.2f}" for f in fractions))
    for t_max, row in zip(args.figure_t_max, rmse):
        print(f"t_max={t_max:<7}" + "".join(f"{v:>8.4f}" for v in row))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for t_max, row in zip(args.figure_t_max, rmse):
        left.plot(fractions, row, "o-", label=f"t_max = {t_max} steps")
    left.set_xlabel("threshold u_th / u_max (u_max: largest ANN activation of the layer)")
    left.set_ylabel("RMSE (ANN units)")
    left.set_yscale("log")
    left.legend(fontsize=8)
    left.set_title("Conversion error of a convolutional layer")
    image = right.imshow(rmse, aspect="auto", origin="lower", cmap="viridis")
    right.set_xticks(range(len(fractions)), [f"{f:.2f}" for f in fractions])
    right.set_yticks(range(len(args.figure_t_max)), args.figure_t_max)
    right.set_xlabel("u_th / u_max")
    right.set_ylabel("t_max (steps)")
    fig.colorbar(image, ax=right, label="RMSE")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "ttfs_figure2.png", dpi=120)
    print(f"saved {out / 'ttfs_figure2.png'}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lopez_randulfe_cnn")
    parser.add_argument("--images", type=int, default=None, help="test images (default: all)")
    parser.add_argument("--calibration", type=int, default=1000, help="training images used for calibration")
    parser.add_argument("--t-max", type=int, default=32)
    parser.add_argument("--threshold", default="percentile", choices=["percentile", "max", "search"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--data", default=None)
    parser.add_argument("--build-dir", default=None)
    parser.add_argument("--out", default="figures")
    parser.add_argument("--figure-images", type=int, default=50)
    parser.add_argument("--figure-t-max", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    parser.add_argument("--figure-fractions", type=float, nargs="+",
                        default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0])
    parser.add_argument("--skip-figure", action="store_true")
    args = parser.parse_args()
    print(header(__file__), flush=True)
    model = models.load(args.model)
    x, y, xc, source = load_data(args)
    print(f"{args.model}: {len(x)} test images from the {source}; calibration on {len(xc)} training images; "
          f"t_max = {args.t_max} steps, threshold = {args.threshold}")
    main_run(model, x, y, xc, args)
    if not args.skip_figure:
        figure2(model, x, xc, args)


if __name__ == "__main__":
    main()
