"""The ``brianconv`` command line.

``brianconv demo`` converts a bundled pretrained model with the default scheme, simulates the
bundled MNIST test sample, prints ANN against SNN (accuracy, spikes, operations) and writes a
membrane-trace and a raster plot.
"""

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

__all__ = ["main"]


def _parser():
    parser = argparse.ArgumentParser(prog="brianconv", description="Convert PyTorch networks into Brian2 spiking networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="convert a bundled model, simulate the bundled MNIST sample, plot",
                          description="Convert a bundled pretrained model with the default scheme (ttfs), simulate "
                                      "the bundled MNIST test images and compare with the ANN.")
    _model_arguments(demo)
    demo.add_argument("--images", type=int, default=1000, help="bundled test images to simulate, 1-1000 (default: %(default)s)")
    _device_arguments(demo)
    demo.add_argument("--out", default="brianconv-demo", help="folder for the figures (default: %(default)s)")
    demo.set_defaults(func=demo_command)

    convert = sub.add_parser("convert", help="convert a model and save the converted network",
                             description="Convert a bundled model (or a checkpoint of a bundled architecture, or a .pt2 "
                                         "program saved with torch.export.save) and save the converted network "
                                         "(layer graph, calibration, description) to a file.")
    _model_arguments(convert)
    _device_arguments(convert)  # for --bias-correction, which simulates the calibration images
    convert.add_argument("--output", "-o", required=True, help="file to write (a pickle; load with brianconv.load_network)")
    convert.set_defaults(func=convert_command)

    simulate = _network_command(sub, "simulate", "simulate a converted network on MNIST, write a JSON report and "
                                "plots", "Simulate a network saved by 'brianconv convert' (or convert a model on the fly) "
                                "on MNIST test images; write a JSON report and plots.")
    _data_arguments(simulate)
    _device_arguments(simulate)
    simulate.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                          help="a run-time parameter of the simulation (repeatable), e.g. --param threshold_scale=0.8, "
                               "or a perturbation knob compiled in with --option perturbations=...: "
                               "--param 'sigma_delay=0.3*ms' --param seed=1")
    simulate.add_argument("--report", default="brianconv-report.json", help="JSON report (default: %(default)s)")
    simulate.add_argument("--plots", default=None, help="folder for a raster plot of the first image")
    simulate.set_defaults(func=simulate_command)

    sweep = _network_command(sub, "sweep", "run one compiled network over a grid of run-time parameters",
                             "Sweep run-time parameters of a converted network (no recompilation per point), "
                             "e.g. --param t_max=8,16,32 --param threshold_scale=0.5,1,2.")
    sweep.add_argument("--param", action="append", required=True, metavar="NAME=V1,V2,...",
                       help="a run-time parameter and its values (repeat for a grid)")
    _data_arguments(sweep, default_images=200)
    _device_arguments(sweep)
    sweep.add_argument("--output", "-o", default="brianconv-sweep.csv", help="CSV table (default: %(default)s)")
    sweep.set_defaults(func=sweep_command)
    return parser


def _network_command(sub, name, help, description):
    """A subcommand that reads a network saved by 'brianconv convert' (--network) or converts a model (--model)."""
    parser = sub.add_parser(name, help=help, description=description)
    _model_arguments(parser)
    parser.add_argument("--network", help="a file written by 'brianconv convert' (instead of --model)")
    return parser


def _model_arguments(parser):
    parser.add_argument("--model", default="lopez_randulfe_cnn",
                        help="a bundled model, or a .pt2 file written by torch.export.save (default: %(default)s)")
    parser.add_argument("--checkpoint", help="a state_dict file for the bundled --model architecture (instead of its "
                                             "weights)")
    parser.add_argument("--method", default="ttfs", help="coding scheme (default: %(default)s)")
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="a scheme option or a convert() keyword, e.g. --option t_max=16 or "
                             "--option 'input_range=(-0.43,2.83)' (repeatable)")
    parser.add_argument("--normalise", metavar="MEAN,STD", default=None,
                        help="the model takes (x - MEAN) / STD of images x in [0, 1], as in its training "
                             "(default: a bundled model's recorded normalisation, none for a .pt2 program or "
                             "a saved network converted without one)")
    parser.add_argument("--bias-correction", type=int, default=0, metavar="IMAGES",
                        help="after converting, correct each layer's mean error per channel on this many of the "
                             "calibration images (brianconv.correct_biases; default 0: off)")


def _data_arguments(parser, default_images=1000):
    parser.add_argument("--images", type=int, default=default_images, help="test images (default: %(default)s)")
    parser.add_argument("--data", default=None, help="folder with the MNIST IDX files (default: $BRIANCONV_DATA, "
                                                     "else the bundled 1,000 images)")


def _device_arguments(parser):
    parser.add_argument("--device", choices=["cpp_standalone", "runtime", "cython", "numpy"], default="cpp_standalone")
    parser.add_argument("--workers", type=int, default=2, help="parallel standalone processes (default: %(default)s)")
    parser.add_argument("--build-dir", default=None, help="folder for compiled networks (default: ~/.cache/brianconv/builds)")


def main(argv=None):
    """Entry point of the ``brianconv`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from .errors import BrianconvError

    try:
        return args.func(args) or 0
    except (BrianconvError, FileNotFoundError) as exc:  # one line for the user, not a traceback
        print(f"brianconv {args.command}: error: {exc}", file=sys.stderr)
        return 2


def demo_command(args):
    import matplotlib
    matplotlib.use("Agg")
    from . import datasets, models, plot
    from .errors import InvalidValueError

    if not 1 <= args.images <= 1000:
        raise InvalidValueError(f"--images must be between 1 and 1000 (the bundled sample), got {args.images}.")
    device = _usable_device(args.device)
    x, y = datasets.load_sample("test", limit=args.images)
    x = _model_inputs(x, _normalisation(args))
    if _is_program_file(args.model):
        print(f"model {args.model} (a torch.export program)")
    else:
        print(f"model {args.model} (test accuracy recorded at training: "
              f"{models.metadata(args.model)['test_accuracy_percent']} %)")
    snn = _convert(args)
    print(snn.description.summary())
    first_hidden = next(p for p in snn.description.populations if p.role == "hidden")
    watched = _neurons_to_watch(snn, x[:1], first_hidden)
    print(f"\nsimulating {len(x)} images on {device} ({args.workers} worker(s)); the first run compiles the network")
    result = snn.simulate(x, labels=y, device=device, n_workers=args.workers, build_root=args.build_dir,
                          spikes=[p.name for p in snn.description.populations if p.threshold],
                          states={first_hidden.name: (["v"], watched)}, progress=_progress(len(x)))
    print(f"\ndone: build {result.timing['build']:.1f} s, simulation {result.timing['simulate']:.1f} s")
    _report(result, ann_cost_of(snn, x))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    threshold = first_hidden.values.get("v_th")
    fig = plot.membrane_traces(result, first_hidden.name, image=0,
                               threshold=float(threshold) if threshold is not None else None)
    fig.savefig(out / "membrane.png", dpi=120)
    plot.raster(result, image=0).savefig(out / "raster.png", dpi=120)
    print(f"figures: {out / 'membrane.png'}, {out / 'raster.png'}")
    return 0


def convert_command(args):
    snn = _convert(args)
    snn.save(args.output)
    print(snn.description.summary())
    print(f"saved {args.output}")
    return 0


def simulate_command(args):
    import json

    from .perturbations import check_run_parameters

    parameters = dict(_parse_assignment(text) for text in args.param)
    snn = _network(args)
    check_run_parameters(snn.scheme, snn.description, parameters)  # before loading data
    x, y, source = _test_data(args, snn)
    device = _usable_device(args.device)
    spiking = [p.name for p in snn.description.populations if p.threshold] if args.plots else ()
    print(f"simulating {len(x)} images from the {source} on {device}")
    result = snn.simulate(x, labels=y, device=device, n_workers=args.workers, build_root=args.build_dir,
                          spikes=spiking, progress=_progress(len(x)), **parameters)
    cost = ann_cost_of(snn, x)
    _report(result, cost)
    report = dict(
        method=snn.scheme.name, images=len(x), data=source, device=device,
        ann_accuracy=result.ann_accuracy, snn_accuracy=result.accuracy, agreement=result.agreement,
        spikes_per_neuron=result.spikes_per_neuron, synaptic_ops_per_image=float(result.synaptic_ops.mean()),
        ann_macs=cost.macs, ann_flops=cost.flops, timing=result.timing, parameters=_jsonable(result.parameters),
        populations={name: dict(neurons=result.neurons[name], spikes_per_neuron=value,
                                synaptic_ops_per_image=float(result.synaptic_ops_per_population[name].mean()))
                     for name, value in result.spikes_per_neuron_by_population().items()})
    with open(args.report, "w") as handle:
        json.dump(report, handle, indent=1)
    print(f"report: {args.report}")
    if args.plots:
        import matplotlib
        matplotlib.use("Agg")
        from . import plot

        Path(args.plots).mkdir(parents=True, exist_ok=True)
        plot.raster(result, image=0).savefig(Path(args.plots) / "raster.png", dpi=120)
        print(f"figure: {Path(args.plots) / 'raster.png'}")
    return 0


def sweep_command(args):
    from .perturbations import check_run_parameters
    from .sweep import sweep

    grid = dict(_parse_assignment(text, many=True) for text in args.param)
    snn = _network(args)
    check_run_parameters(snn.scheme, snn.description, grid)  # before loading data: names the valid --param names
    x, y, source = _test_data(args, snn)
    print(f"sweeping {grid} on {len(x)} images from the {source}")
    table = sweep(snn, x, grid, labels=y, device=_usable_device(args.device), n_workers=args.workers,
                  build_root=args.build_dir)
    print(table)
    table.to_csv(args.output)
    print(f"table: {args.output}")
    return 0


# -- helpers --------------------------------------------------------------------------------------

def _usable_device(device):
    from .builder import find_compiler

    if device == "cpp_standalone" and find_compiler() is None:
        print("note: no C++ compiler found, so Brian2's C++ standalone mode is unavailable; running on Brian2's "
              "runtime device instead (much slower). Install g++ for the fast path.")
        return "runtime"
    return device


def _convert(args):
    import brianconv

    from . import datasets

    model = _load_model(args)
    normalisation = _normalisation(args)
    images, _ = datasets.load_sample("train")
    calibration = _model_inputs(images, normalisation)
    options = dict(_parse_assignment(text) for text in args.option)
    snn = brianconv.convert(model, method=args.method, calibration=calibration, **options)
    if args.bias_correction:
        snn = brianconv.correct_biases(snn, calibration, images=args.bias_correction,
                                       device=_usable_device(args.device), n_workers=args.workers,
                                       build_root=args.build_dir)
    snn.input_normalisation = normalisation  # saved with the network, so 'simulate --network' feeds it alike
    return snn


def _normalisation(args, network=None):
    """``(mean, std)`` of the inputs the model takes, or None: ``--normalise``, else what the saved
    ``network`` recorded, else a bundled model's metadata."""
    from . import models
    from .errors import InvalidValueError

    if args.normalise is not None:
        try:
            mean, std = (float(value) for value in args.normalise.split(","))
        except ValueError:
            raise InvalidValueError(f"--normalise takes MEAN,STD (two numbers), got {args.normalise!r}.") from None
        if not std > 0:
            raise InvalidValueError(f"--normalise: STD must be positive, got {std}.")
        return mean, std
    if network is not None:
        return getattr(network, "input_normalisation", None)
    if _is_program_file(args.model):
        return None
    recorded = models.metadata(args.model).get("input_normalisation")
    return (recorded["mean"], recorded["std"]) if recorded else None


def _model_inputs(images, normalisation):
    """``images`` (pixel / 255) as the model takes them."""
    if normalisation is None:
        return images
    mean, std = normalisation
    return (images - mean) / std


def _is_program_file(model):
    """True if ``--model`` names a saved ``torch.export`` program rather than a bundled model."""
    return model.endswith(".pt2")


def _load_model(args):
    """The ``--model``: a bundled model (with the ``--checkpoint`` weights) or a ``.pt2`` exported program."""
    import torch

    from . import models
    from .errors import InvalidValueError

    if _is_program_file(args.model):
        if args.checkpoint:
            raise InvalidValueError("--checkpoint replaces the weights of a bundled model; a .pt2 program carries its "
                                    "own weights, so drop --checkpoint.")
        if not Path(args.model).is_file():
            raise FileNotFoundError(f"--model {args.model}: no such file.")
        try:
            return torch.export.load(args.model)
        except Exception as exc:  # torch raises several types for a bad archive
            raise InvalidValueError(f"--model {args.model} is not a program saved with torch.export.save: "
                                    f"{exc}") from exc
    model = models.load(args.model)
    if args.checkpoint:
        try:
            model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError) as exc:
            raise InvalidValueError(f"--checkpoint {args.checkpoint} does not fit the {args.model} architecture: "
                                    f"{exc}") from exc
    return model.eval()


def _network(args):
    from .simulation import load_network

    return load_network(args.network) if getattr(args, "network", None) else _convert(args)


def _test_data(args, snn):
    """Test images (normalised as the network's model takes them), labels and where they came from."""
    from . import datasets

    x, y, source = datasets.load_mnist_or_sample("test", args.data, args.images)
    normalisation = _normalisation(args, snn) if getattr(args, "network", None) else _normalisation(args)
    return _model_inputs(x, normalisation), y, source


def _parse_assignment(text, many=False):
    """``name=value`` (or ``name=v1,v2`` with ``many``) with numbers, booleans, strings or Brian2 quantities."""
    from .errors import InvalidValueError

    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise InvalidValueError(f"Expected NAME=VALUE, got {text!r}.")
    values = [_parse_value(v) for v in value.split(",")] if many else _parse_value(value)
    return name, values


def _parse_value(text):
    import brian2

    text = text.strip()
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    units = {name: getattr(brian2, name) for name in ("ms", "us", "second", "mV", "volt", "nA", "pA", "Hz")}
    try:  # a quantity such as 0.05*ms
        return eval(text, {"__builtins__": {}}, units)  # noqa: S307 (only numbers and unit names)
    except Exception:
        return text


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def ann_cost_of(snn, x):
    """ANN MACs and FLOPs of the converted graph, with its activation sparsity on up to 100 images."""
    from .metrics import ann_cost

    return ann_cost(snn.graph, x=x[:100])


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
