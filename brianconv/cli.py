"""The ``brianconv`` command line.

``brianconv demo`` converts a bundled pretrained model with the default scheme, simulates the
bundled MNIST test sample, prints ANN against SNN (accuracy, spikes, operations) and writes a
membrane-trace and a raster plot.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _parser():
    parser = argparse.ArgumentParser(prog="brianconv", description="Convert PyTorch networks into Brian2 spiking networks.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="convert a bundled model, simulate the bundled MNIST sample, plot",
                          description="Convert a bundled pretrained model with the default scheme (ttfs), simulate "
                                      "the bundled MNIST test images and compare with the ANN.")
    demo.add_argument("--model", default="lopez_randulfe_cnn", help="a bundled model (default: %(default)s)")
    demo.add_argument("--method", default="ttfs", help="coding scheme (default: %(default)s)")
    demo.add_argument("--images", type=int, default=1000, help="bundled test images to simulate, 1-1000 (default: %(default)s)")
    demo.add_argument("--t-max", type=int, default=None, help="ttfs stage length in steps (default: the scheme's)")
    demo.add_argument("--device", choices=["cpp_standalone", "runtime"], default="cpp_standalone")
    demo.add_argument("--workers", type=int, default=2, help="parallel standalone processes (default: %(default)s)")
    demo.add_argument("--out", default="brianconv-demo", help="folder for the figures (default: %(default)s)")
    demo.add_argument("--build-dir", default=None, help="folder for compiled networks (default: ~/.cache/brianconv/builds)")
    demo.set_defaults(func=demo_command)
    return parser


def main(argv=None):
    """Entry point of the ``brianconv`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args) or 0
    except Exception as exc:  # one line for the user, not a traceback
        from .errors import BrianconvError
        if isinstance(exc, BrianconvError):
            print(f"brianconv {args.command}: error: {exc}", file=sys.stderr)
            return 2
        raise


def demo_command(args):
    import matplotlib
    matplotlib.use("Agg")
    import brianconv
    from . import datasets, models, plot
    from .builder import find_compiler
    from .errors import InvalidValueError
    from .metrics import ann_cost

    if not 1 <= args.images <= 1000:
        raise InvalidValueError(f"--images must be between 1 and 1000 (the bundled sample), got {args.images}.")
    device = args.device
    if device == "cpp_standalone" and find_compiler() is None:
        print("note: no C++ compiler found, so Brian2's C++ standalone mode is unavailable; running on Brian2's "
              "runtime device instead (much slower). Install g++ for the fast path.")
        device = "runtime"
    model = models.load(args.model)
    x, y = datasets.load_sample("test", limit=args.images)
    x_calibration, _ = datasets.load_sample("train")
    options = {} if args.t_max is None else {"t_max": args.t_max}
    print(f"model {args.model} (test accuracy recorded at training: {models.metadata(args.model)['test_accuracy_percent']} %)")
    snn = brianconv.convert(model, method=args.method, calibration=x_calibration, **options)
    print(snn.description.summary())
    first_hidden = next(p for p in snn.description.populations if p.role == "hidden")
    watched = _neurons_to_watch(snn, x[:1], first_hidden)
    print(f"\nsimulating {len(x)} images on {device} ({args.workers} worker(s)); the first run compiles the network")
    start = time.perf_counter()
    result = snn.simulate(x, labels=y, device=device, n_workers=args.workers, build_root=args.build_dir,
                          spikes=[p.name for p in snn.description.populations if p.threshold],
                          states={first_hidden.name: (["v"], watched)}, progress=_progress(len(x)))
    print(f"\ndone in {time.perf_counter() - start:.1f} s (build {result.timing['build']:.1f} s, "
          f"simulation {result.timing['simulate']:.1f} s)")
    cost = ann_cost(snn.graph, x=x[:100])
    _report(result, cost)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threshold = first_hidden.values.get("v_th")
    fig = plot.membrane_traces(result, first_hidden.name, image=0, threshold=float(threshold) if threshold is not None else None)
    fig.savefig(out / "membrane.png", dpi=120)
    fig = plot.raster(result, image=0)
    fig.savefig(out / "raster.png", dpi=120)
    print(f"figures: {out / 'membrane.png'}, {out / 'raster.png'}")
    return 0


def _neurons_to_watch(snn, x0, population, n_active=4, n_silent=2):
    """Neurons of ``population`` to record: the most active on the first image, and silent ones (z < 0)."""
    import torch

    _, values = snn.graph.forward(x0, record=True)
    layer = snn.graph[population.layer]
    with torch.no_grad():
        pre = layer.pre_activation(*[torch.as_tensor(values[name]) for name in layer.inputs]).numpy().ravel()
    order = np.argsort(pre)
    _, distinct = np.unique(np.round(pre[order[: len(order) // 4]], 6), return_index=True)
    silent = order[: len(order) // 4][distinct[::max(1, len(distinct) // n_silent)]][:n_silent]
    return np.sort(np.concatenate([order[-n_active:], silent]))


def _progress(total):
    from tqdm import tqdm
    bar = tqdm(total=total, unit="img", leave=False)
    return bar.update


def _report(result, cost):
    ops = float(np.mean(result.synaptic_ops))
    print()
    print(f"{'':<34}{'ANN':>14}{'SNN':>14}")
    print(f"{'accuracy (%)':<34}{100 * result.ann_accuracy:>14.2f}{100 * result.accuracy:>14.2f}")
    print(f"{'SNN/ANN prediction agreement (%)':<34}{'':>14}{100 * result.agreement:>14.2f}")
    print(f"{'spikes per neuron per image':<34}{'':>14}{result.spikes_per_neuron:>14.4f}")
    print(f"{'MACs / synaptic ops per image':<34}{cost.macs:>14,}{ops:>14,.0f}")
    print(f"{'FLOPs (2 x MACs) per image':<34}{cost.flops:>14,}")
    print(f"{'ANN MACs / SNN synaptic ops':<34}{cost.macs / ops:>14.2f}")
    print("\nspikes per neuron by population:")
    for name, value in result.spikes_per_neuron_by_population().items():
        print(f"  {name:<16}{result.neurons[name]:>8} neurons  {value:.4f}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
