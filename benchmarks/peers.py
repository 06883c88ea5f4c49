"""brianconv against what a user would pick instead, measured side by side in one run (issue 18).

    python benchmarks/peers.py --images 2000                  # writes benchmarks/results/peers.txt
    python benchmarks/peers.py --images 200 --models avgpool_cnn --out -   # quick look, printed only

For each model (default: the López-Randulfe CNN and ``avgpool_cnn``, the average-pooling CNN of
snntoolbox's examples) the same MNIST test images go through

* ``torch``: the ANN forward pass (batches of ``--torch-batch`` = 256, ``--cores`` threads);
* ``sinabs``: ``sinabs.from_model`` of the ANN (IAF neurons, one spike per step at most, reset
  by subtraction, no lower bound on the potential), weights and biases normalised exactly as
  brianconv ``rate`` normalises them (the same 99.9th-percentile scales, from the same
  calibration images), analog input ``x / lambda_0`` at every step, ``--steps`` steps, the
  summed output of the last layer as the decision (torch on the CPU, ``--cores`` threads);
* ``rate``: brianconv ``rate`` with ``duration=--steps``, C++ standalone, ``--cores``
  processes running one compiled program; on a model with average pooling twice, with the pools
  folded into their readers (``avgpool="fold"``) and as IF populations (``rate-pooled``,
  ``avgpool="population"``);
* ``ttfs-event``: brianconv ``ttfs`` with ``integration="event"`` (``t_max=32``), likewise;
  ``ttfs-event-f32`` the same network stored in float32 (``precision="float32"``: 8 instead of 12
  bytes read per synaptic event).

Printed per row: images per second (wall clock), accuracy, agreement with the ANN's
predictions (the same torch predictions for every row), synaptic events per image for brianconv,
and for brianconv the build time apart (a program is compiled once per network and cached in
``--build-dir``; the run is timed without it). Then the ratios the issue's targets are stated in:
rate / sinabs (target >= 1) and ttfs-event / torch (target >= 1/16, i.e. about 1,000 images/s).
Nothing here is a test: speed is measured, never asserted. sinabs is a benchmark-only extra
(``pip install brianconv[bench]``).
"""

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from provenance import versions_line  # noqa: E402  (commit of the brianconv imported)
from speed import _cpu_seconds, _images  # noqa: E402  (CPU time of this process and its simulation processes)

#: brianconv configurations measured: the issue's rate at 100 steps and ttfs with event integration.
#: On a model with average pooling rate runs twice: pools folded into their readers and pools as
#: IF populations (``avgpool=``); on a model without, both give the same network and run once.
BRIANCONV_ROWS = {
    "rate": lambda steps: ("rate", dict(duration=steps, avgpool="fold")),
    "rate-pooled": lambda steps: ("rate", dict(duration=steps, avgpool="population")),
    "ttfs-event": lambda steps: ("ttfs", dict(t_max=32, integration="event")),
    "ttfs-event-f32": lambda steps: ("ttfs", dict(t_max=32, integration="event", precision="float32")),
}


def ann_row(model, x, labels, batch):
    """The torch forward pass: images/s and predictions (eval mode, no gradients)."""
    import torch

    with torch.no_grad():
        model(torch.as_tensor(x[:batch]))  # warm-up
        start, cpu = time.perf_counter(), _cpu_seconds()
        logits = [model(torch.as_tensor(x[i:i + batch])) for i in range(0, len(x), batch)]
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    predictions = torch.cat(logits).argmax(1).numpy()
    return dict(name="torch ANN", seconds=seconds, cpu=cpu, predictions=predictions,
                accuracy=np.mean(predictions == labels))


def normalised_copy(snn, model):
    """A copy of ``model`` whose Linear/Conv2d layers carry brianconv's normalised weights and biases.

    ``W~ = W lambda_source / lambda_layer``, ``b~ = b / lambda_layer`` (Rueckauer et al. Eq. 9), from
    the scales brianconv calibrated for ``snn``; the layer graph's weighted layers are matched to the
    model's Linear/Conv2d modules in order (plain ``nn.Sequential`` models).
    """
    import copy

    import torch
    from torch import nn

    from brianconv.calibration import normalised_parameters

    parameters = normalised_parameters(snn.graph, snn.calibration)
    weighted = [layer.name for layer in snn.graph if layer.is_weighted]
    clone = copy.deepcopy(model)
    modules = [m for m in clone.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    if len(modules) != len(weighted):
        raise ValueError(f"{len(modules)} Linear/Conv2d modules but {len(weighted)} weighted graph layers.")
    with torch.no_grad():
        for module, name in zip(modules, weighted):
            weight, bias = parameters[name]
            module.weight.copy_(torch.as_tensor(np.asarray(weight), dtype=torch.float32).reshape(module.weight.shape))
            module.bias.copy_(torch.as_tensor(np.asarray(bias), dtype=torch.float32).reshape(module.bias.shape))
    return clone, float(snn.calibration.scales[snn.graph.input.name])


def sinabs_row(snn, model, x, labels, steps, batch):
    """sinabs 3: the normalised ANN as IAF neurons (reset by subtraction), analog input, ``steps`` steps."""
    import sinabs
    import torch
    from sinabs.activation import MembraneSubtract, SingleSpike

    normalised, input_scale = normalised_copy(snn, model)
    network = sinabs.from_model(normalised, input_shape=tuple(x.shape[1:]), spike_threshold=torch.tensor(1.0),
                                spike_fn=SingleSpike, reset_fn=MembraneSubtract(), min_v_mem=None,
                                num_timesteps=steps).spiking_model.eval()
    predictions = []
    start, cpu = time.perf_counter(), _cpu_seconds()
    with torch.no_grad():
        for i in range(0, len(x), batch):
            images = torch.as_tensor(x[i:i + batch]) / input_scale
            sinabs.reset_states(network)
            # (B, C, H, W) -> (B * steps, C, H, W): the same image at every step, batch-major
            inputs = images.unsqueeze(1).expand(-1, steps, *images.shape[1:]).reshape(-1, *images.shape[1:])
            output = network(inputs).reshape(len(images), steps, -1).sum(1)
            predictions.append(output.argmax(1).numpy())
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    predictions = np.concatenate(predictions)
    return dict(name=f"sinabs {sinabs.__version__}", seconds=seconds, cpu=cpu, predictions=predictions,
                accuracy=np.mean(predictions == labels))


def brianconv_row(label, model, calibration, x, labels, steps, args):
    """brianconv on C++ standalone with ``args.cores`` processes; the build is timed apart."""
    import brianconv

    method, options = BRIANCONV_ROWS[label](steps)
    snn = brianconv.convert(model, method, calibration=calibration, **options)
    start = time.perf_counter()
    snn.program("cpp_standalone", args.batch, build_root=args.build_dir)  # compile, or find the cached build
    build = time.perf_counter() - start
    cpu = _cpu_seconds()
    result = snn.simulate(x, labels=labels, device="cpp_standalone", n_workers=args.cores, batch_size=args.batch,
                          build_root=args.build_dir)
    cpu = _cpu_seconds() - cpu
    return dict(name=f"brianconv {label}", seconds=result.timing["simulate"], cpu=cpu, predictions=result.predictions,
                accuracy=result.accuracy, build=build, events=float(np.mean(result.synaptic_ops)),
                options=f"{method} {options}", snn=snn)


def _row_line(row, n, ann_predictions):
    agreement = 100 * np.mean(row["predictions"] == ann_predictions)
    extra = ""
    if "events" in row:
        extra = f"  {row['events'] / 1e6:8.2f} M events/image, build {row['build']:6.1f} s  ({row['options']})"
    return (f"  {row['name']:<22} {n / row['seconds']:10.1f} {n / row['cpu']:10.1f} {100 * row['accuracy']:9.2f} "
            f"{agreement:10.2f}" + extra)


def measure_model(name, x, labels, calibration, args, lines):
    """All rows for one model, appended to ``lines`` (and printed as they come)."""
    import torch

    from brianconv import models

    def say(text):
        print(text, flush=True)
        lines.append(text)

    torch.set_num_threads(args.cores)
    model = models.load(name)
    say(f"\n{name}: {len(x)} images, {args.steps} steps for rate and sinabs, {args.cores} cores")
    say(f"  {'what ran':<22} {'images/s':>10} {'per CPU-s':>10} {'accuracy':>9} {'agreement':>10}  "
        "(images/s wall clock; images per CPU-second; %; agreement with the ANN)")
    rows = {"torch": ann_row(model, x, labels, args.torch_batch)}
    say(_row_line(rows["torch"], len(x), rows["torch"]["predictions"]))
    ann = rows["torch"]["predictions"]
    has_avgpool = any(isinstance(module, torch.nn.AvgPool2d) for module in model.modules())
    for label in BRIANCONV_ROWS:
        if label == "rate-pooled" and not has_avgpool:
            continue
        rows[label] = brianconv_row(label, model, calibration, x, labels, args.steps, args)
        say(_row_line(rows[label], len(x), ann))
        if label == "rate":
            rows["sinabs"] = sinabs_row(rows["rate"]["snn"], model, x, labels, args.steps, args.sinabs_batch)
            say(_row_line(rows["sinabs"], len(x), ann))
    speed = {key: len(x) / row["seconds"] for key, row in rows.items()}
    per_cpu = {key: len(x) / row["cpu"] for key, row in rows.items()}
    say(f"  per CPU-second (independent of other load): rate / sinabs = {per_cpu['rate'] / per_cpu['sinabs']:.2f}; "
        f"ttfs-event / torch ANN = {per_cpu['ttfs-event'] / per_cpu['torch']:.4f}"
        + (f"; rate-pooled / sinabs = {per_cpu['rate-pooled'] / per_cpu['sinabs']:.2f}" if "rate-pooled" in per_cpu
           else ""))
    if "rate-pooled" in speed:
        say(f"  ratios: rate-pooled / sinabs = {speed['rate-pooled'] / speed['sinabs']:.2f}; "
            f"rate-pooled / rate = {speed['rate-pooled'] / speed['rate']:.2f}; synaptic events per image "
            f"rate-pooled / rate = {rows['rate-pooled']['events'] / rows['rate']['events']:.2f}")
    say(f"  ratios: rate / sinabs = {speed['rate'] / speed['sinabs']:.2f} (target >= 1.0); "
        f"ttfs-event / torch ANN = {speed['ttfs-event'] / speed['torch']:.4f} (target >= 1/16 = 0.0625); "
        f"ttfs-event {speed['ttfs-event']:.0f} images/s, float32 {speed['ttfs-event-f32']:.0f} "
        "(target >= 1,000 on lopez_randulfe_cnn)")
    return {key: dict(images_per_second=speed[key], accuracy=float(row["accuracy"])) for key, row in rows.items()}


def _header(args, n):
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    arguments = [("DIR" if previous in ("--build-dir", "--out") else argument)  # no paths of this machine
                 for previous, argument in zip([None] + sys.argv[1:], sys.argv[1:])]
    command = "python benchmarks/peers.py " + shlex.join(arguments)
    return [f"command: {command.strip()}",
            f"data: the first {n:,} images of the MNIST test set; calibration: brianconv's bundled sample "
            "(the last 500 images of the MNIST training set)",
            f"{versions_line()}; {os.cpu_count()} CPU cores on the machine",
            f"machine load at the start (uptime): {load}"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["lopez_randulfe_cnn", "avgpool_cnn"])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=100, help="steps of rate and sinabs (100)")
    parser.add_argument("--cores", type=int, default=2, help="torch threads and brianconv processes (2)")
    parser.add_argument("--batch", type=int, default=None,
                        help="images per brianconv standalone run (default: images / cores, one run per process, "
                             "so that each process loads the network once)")
    parser.add_argument("--torch-batch", type=int, default=256)
    parser.add_argument("--sinabs-batch", type=int, default=32,
                        help="images per sinabs forward pass (32: 3,200 frames of 100 steps)")
    parser.add_argument("--build-dir", default=None, help="compiled programs (default: a new temporary folder)")
    parser.add_argument("--out", default=str(HERE / "results" / "peers.txt"), help="results file ('-': none)")
    args = parser.parse_args()
    args.build_dir = args.build_dir or tempfile.mkdtemp(prefix="brianconv-peers-")
    args.batch = args.batch or -(-args.images // args.cores)

    from brianconv import datasets

    x, labels = _images(args.images)
    calibration, _ = datasets.load_sample("train")
    lines = _header(args, len(x))
    print("\n".join(lines), flush=True)
    for name in args.models:
        measure_model(name, x, labels, calibration, args, lines)
        if args.out != "-":  # after every model, so that a long run leaves what it measured
            Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
