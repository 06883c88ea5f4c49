"""Models as people write them: every gallery model with every scheme, side by side.

    python benchmarks/gallery.py                          # full MNIST test set if found, else the bundled 1,000
    python benchmarks/gallery.py --images 2000 --models resnet_bn functional_net --methods ttfs rate
    python benchmarks/gallery.py --models mobilenet_relu6 --defaults-only    # every row with the defaults
    python benchmarks/gallery.py --split train --images 1000 --models mobilenet_relu6 --methods ttfs \
        --option ttfs.t_max=64                                  # choose options on training images

For each (model, scheme): ANN accuracy, SNN accuracy, agreement (same argmax as the ANN), spikes
per neuron, synaptic operations per image and their ratio to the ANN's MACs. A scheme that cannot
represent a construct of a model prints the ``ConversionError`` that names it instead of a row.
Models trained on normalised inputs (``functional_net``) are given their normalised images for
calibration and test, exactly as in training; the scheme folds the input's shift.

The full MNIST is looked up in ``--data``, ``$BRIANCONV_DATA`` or ``../shared/data/mnist``. Every
number printed is measured in this run; the table goes to stdout and to ``--out`` if given.
Each row uses the scheme's defaults unless ``ROW_OPTIONS`` gives the model a finer code (the header
prints every row's options). ``--bias-correction IMAGES`` passes every converted network through
``brianconv.correct_biases`` on that many calibration images (never test images) before it is measured.
"""

import argparse
import time
from pathlib import Path

from provenance import header

import brianconv
from brianconv import datasets, models
from brianconv.cli import _parse_assignment
from brianconv.errors import ConversionError, InvalidValueError
from brianconv.metrics import ann_cost

GALLERY = ["resnet_bn", "inception_cat", "mobilenet_relu6", "functional_net"]
#: Scheme options of each row (the defaults, except amos's unit count documented in its class).
METHODS = {"ttfs": {"integration": "event"}, "rate": {"duration": 100}, "tdsnn": {}, "amos": {}}
#: Where a model needs a finer code than the defaults, its rows' options (printed in the header).
#: mobilenet_relu6: BatchNorm folded into its depthwise 3x3 convolutions gives weights of high gain,
#: so each layer amplifies the step error of the one before: a grid four times finer (t_max 128,
#: L 32), and for rate 400 steps with bias correction on 200 calibration images. Chosen on the
#: first 1,000 training images (neither calibration nor test images): the coarsest of t_max 32, 64,
#: 128 (L 8, 16, 32) whose agreement with the ANN reaches 99 % (ttfs 95.3, 97.9, 99.6 %; tdsnn
#: 97.8, 98.0, 99.0 %): ``--split train --images 1000 --models mobilenet_relu6 --methods ttfs
#: --defaults-only --option ttfs.t_max=64`` and so on.
#: resnet_bn with rate: its error at 100 steps is an offset per channel too, which the correction
#: removes at the default 100 steps.
ROW_OPTIONS = {"mobilenet_relu6": {"ttfs": {"t_max": 128}, "tdsnn": {"L": 32},
                                   "rate": {"duration": 400, "bias_correction": 200}},
               "resnet_bn": {"rate": {"bias_correction": 200}}}
COLUMNS = ("model", "scheme", "ANN %", "SNN %", "agree %", "spikes/neuron", "syn ops/image", "ops/MACs", "img/s")


def load_data(args):
    """Test images (or, with ``--split train``, the first training images), labels, calibration images
    (the last ``--calibration`` training images) and the data source in words."""
    shared = [Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"]
    xc, yc, train_source = datasets.load_mnist_or_sample("train", args.data, None, shared)
    calibration = xc[-args.calibration:]
    if args.split == "train":
        n = min(args.images or len(xc), len(xc) - args.calibration)
        return xc[:n], yc[:n], calibration, f"first {n} images of the training split ({train_source})"
    x, y, source = datasets.load_mnist_or_sample("test", args.data, args.images, shared)
    return x, y, calibration, source


def run_row(name, method, x, y, xc, args):
    """One table row (a tuple of cells), or the rejection message."""
    model = models.load(name)
    inputs, calibration = models.model_inputs(name, x), models.model_inputs(name, xc)
    options = row_options(name, method, args)
    images_for_correction = options.pop("bias_correction", 0)
    try:
        snn = brianconv.convert(model, method, calibration=calibration, **options)
    except ConversionError as exc:
        return f"{name:<16} {method:<6} cannot convert: {exc}"
    if images_for_correction:
        try:
            snn = brianconv.correct_biases(snn, calibration, images=images_for_correction, n_workers=args.workers,
                                           build_root=args.build_dir)
        except InvalidValueError as exc:  # e.g. amos: K neurons per unit, nothing decodes unit by unit
            return f"{name:<16} {method:<6} no bias correction: {exc}"
    started = time.perf_counter()
    result = snn.simulate(inputs, labels=y, n_workers=args.workers, batch_size=args.batch,
                          build_root=args.build_dir)
    elapsed = time.perf_counter() - started
    cost = ann_cost(snn.graph, x=inputs[:200])
    ops = result.synaptic_ops.mean()
    return (name, method, f"{100 * result.ann_accuracy:.2f}", f"{100 * result.accuracy:.2f}",
            f"{100 * result.agreement:.2f}", f"{result.spikes_per_neuron:.3f}", f"{ops:,.0f}",
            f"{ops / cost.macs:.2f}", f"{len(x) / elapsed:.0f}")


def row_options(name, method, args):
    """The options of one row: the scheme's, then the model's (``ROW_OPTIONS``), then the command line's
    (``--rate-duration``, ``--bias-correction``, ``--defaults-only``); ``bias_correction`` is a number of images."""
    options = dict(METHODS[method], bias_correction=0)
    if not args.defaults_only:
        options.update(ROW_OPTIONS.get(name, {}).get(method, {}))
    if method == "rate" and args.rate_duration is not None:
        options["duration"] = args.rate_duration
    if args.bias_correction is not None:
        options["bias_correction"] = args.bias_correction
    options.update({option: value for scheme, option, value in args.option if scheme == method})
    return options


def scheme_option(text):
    """``METHOD.NAME=VALUE`` as ``(method, name, value)``; values as the CLI's ``--option`` reads them
    (numbers, booleans, strings, Brian2 quantities such as ``0.5*ms``)."""
    method, dot, assignment = text.partition(".")
    if not dot or method not in METHODS:
        raise argparse.ArgumentTypeError(f"expected METHOD.NAME=VALUE with METHOD one of {list(METHODS)}, got {text!r}")
    try:
        name, value = _parse_assignment(assignment)
    except InvalidValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return method, name, value


def format_row(cells):
    widths = (16, 6, 7, 7, 8, 14, 14, 9, 7)
    return " ".join(f"{cell:<{w}}" if i < 2 else f"{cell:>{w}}" for i, (cell, w) in enumerate(zip(cells, widths)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=GALLERY, choices=models.available())
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--images", type=int, default=None, help="test images (default: all)")
    parser.add_argument("--calibration", type=int, default=1000, help="training images used for calibration")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--data", default=None, help="folder with the MNIST IDX files")
    parser.add_argument("--build-dir", default=None)
    parser.add_argument("--out", default=None, help="also write the table to this file")
    parser.add_argument("--rate-duration", type=int, default=None,
                        help="rate's image period in steps, for every model (default: 100, or the model's; the "
                             "longer, the closer to the ANN)")
    parser.add_argument("--bias-correction", type=int, default=None, metavar="IMAGES",
                        help="correct each layer's mean error per channel on this many of the calibration images, "
                             "for every row (brianconv.correct_biases; default: the model's, else off; 0: off)")
    parser.add_argument("--option", action="append", default=[], type=scheme_option, metavar="METHOD.NAME=VALUE",
                        help="a scheme option for every row of that scheme, after the model's (repeatable), "
                             "e.g. --option ttfs.t_max=64")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="measure on the test images (default) or on the first training images, which are "
                             "never calibration images: for choosing options without looking at the test set")
    parser.add_argument("--defaults-only", action="store_true",
                        help="ignore the per-model options (ROW_OPTIONS): every row with the scheme's defaults")
    args = parser.parse_args(argv)
    x, y, xc, source = load_data(args)
    options = {f"{name} {method}": row_options(name, method, args) for name in args.models for method in args.methods}
    kind = "test images" if args.split == "test" else "images"
    lines = [header(__file__, argv), f"{len(x)} {kind} from the {source}; calibration on the last {len(xc)} "
             "training images; bias_correction is a number of calibration images (0: off)"]
    lines += [f"  {row}: {values}" for row, values in options.items()] + ["", format_row(COLUMNS)]
    print("\n".join(lines), flush=True)
    for name in args.models:
        for method in args.methods:
            row = run_row(name, method, x, y, xc, args)
            lines.append(row if isinstance(row, str) else format_row(row))
            print(lines[-1], flush=True)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
