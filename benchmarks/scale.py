"""Scale on one machine: build time, build and run memory and images/s against the synapse count.

VGG-like networks on 3x32x32 inputs with seeded random weights (torch's default initialisation)
are converted and simulated with C++ standalone, at about 10 M, 30 M, 100 M and 300 M synapses.
No accuracy is claimed: there is no CIFAR-10 here, so calibration and test inputs are seeded
uniform random images in [0, 1). Each (scheme, size) runs in its own Python process, so that its
peak memory is its own::

    python benchmarks/scale.py --schemes ttfs rate --sizes 10M 30M
    python benchmarks/scale.py --sizes 10M 30M 100M 300M --output benchmarks/results/scale.txt \\
        --json benchmarks/results/scale.json --plot benchmarks/results/scale.png

Reported for each network:

* ``convert_s``: seconds of ``brianconv.convert`` (trace, calibration, description);
* ``build_s``: seconds of the standalone build (Brian2 objects, code generation, static arrays,
  C++ compilation) — the fresh build folder is removed afterwards;
* ``python_peak_mb``: peak resident memory (``VmHWM``) of the Python process that converted and
  built it, and ``python_base_mb`` the same after the imports (before any network existed);
* ``run_peak_mb``: peak resident memory of one standalone run process (``result.timing``);
* ``bytes_per_synapse``: ``run_peak_mb`` / synapses (the issue's ratio, so it includes
  neurons, monitors and the binary itself);
* ``images_per_s``: ``--images`` images simulated with ``--workers`` processes, divided by the
  wall-clock time of ``simulate`` (each process loads the network before it simulates).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import command_line, machine_line, versions_line

#: Named sizes (synapses) accepted by ``--sizes``.
SIZES = {"10M": 10e6, "30M": 30e6, "100M": 100e6, "300M": 300e6}
INPUT_SHAPE = (3, 32, 32)


def vgg_synapses(width):
    """Synapses of :func:`vgg` with ``width`` channels in its first block (exact count).

    A 3x3 convolution with padding 1 on an ``H x W`` map has ``(3H - 2)(3W - 2)`` valid
    (input, output) position pairs per channel pair; a 2x2 max-pool has one synapse per input.
    """
    count, channels, side = 0, INPUT_SHAPE[0], INPUT_SHAPE[1]
    for block in range(3):
        out = width << block
        count += (channels * out + out * out) * (3 * side - 2) ** 2 + out * side * side
        channels, side = out, side // 2
    return count + channels * side * side * 10


def width_for(synapses):
    """The first-block width whose network is closest to ``synapses`` synapses."""
    return min(range(2, 400), key=lambda width: abs(vgg_synapses(width) - synapses))


def vgg(width, seed=0):
    """Three blocks of two 3x3 convolutions (``width``, 2x, 4x channels) each followed by 2x2
    max-pooling, then a linear layer to 10 outputs; seeded default initialisation."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers, channels = [], INPUT_SHAPE[0]
    for block in range(3):
        out = width << block
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(), nn.Conv2d(out, out, 3, padding=1), nn.ReLU(),
                   nn.MaxPool2d(2)]
        channels = out
    layers += [nn.Flatten(), nn.Linear(channels * 4 * 4, 10)]
    return nn.Sequential(*layers).eval()


def peak_rss_mb():
    """Peak resident memory of this process (``VmHWM``), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return None


def measure(scheme, width, images, workers, precision, profile=None):
    """Convert, build and simulate one network in this process; a dict of the figures."""
    import numpy as np
    import torch

    import brianconv

    base_mb = peak_rss_mb()
    rng = np.random.default_rng(0)
    calibration = torch.as_tensor(rng.random((16,) + INPUT_SHAPE, dtype=np.float32))
    x = torch.as_tensor(rng.random((images,) + INPUT_SHAPE, dtype=np.float32))
    model = vgg(width)
    start = time.perf_counter()
    options = {} if precision == "float64" else {"precision": precision}
    snn = brianconv.convert(model, scheme, calibration=calibration, **options)
    convert_s = time.perf_counter() - start
    del model
    build_root = tempfile.mkdtemp(prefix="scale-", dir=os.environ.get("BRIANCONV_BUILD_DIR"))
    batch = -(-images // workers)
    try:
        start = time.perf_counter()
        if profile:
            import cProfile

            cProfile.runctx("snn.program(batch_size=batch, build_root=build_root)", globals(), locals(), profile)
        else:
            snn.program(batch_size=batch, build_root=build_root)
        build_s = time.perf_counter() - start
        python_peak = peak_rss_mb()
        result = snn.simulate(x, batch_size=batch, n_workers=workers, build_root=build_root)
    finally:
        shutil.rmtree(build_root, ignore_errors=True)
    synapses = snn.description.n_synapses
    run_peak = result.timing["peak_memory_mb"]
    return dict(scheme=scheme, width=width, synapses=synapses, neurons=snn.description.n_neurons,
                precision=precision, convert_s=convert_s, build_s=build_s, python_base_mb=base_mb,
                python_peak_mb=python_peak, run_peak_mb=run_peak, bytes_per_synapse=run_peak * 2**20 / synapses,
                images=images, workers=workers, simulate_s=result.timing["simulate"],
                images_per_s=images / result.timing["simulate"])


def run_child(scheme, size, args):
    """:func:`measure` in a fresh Python process (its peak memory is its own); None if it failed."""
    command = [sys.executable, __file__, "--child", scheme, str(width_for(SIZES[size])), "--images",
               str(args.images), "--workers", str(args.workers), "--precision", args.precision]
    if args.profile:
        command += ["--profile", f"{args.profile}.{scheme}.{size}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"{scheme} {size}: failed with code {done.returncode}: {done.stderr[-1500:]}", file=sys.stderr)
        return dict(scheme=scheme, size=size, failed=done.returncode)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    row["size"] = size
    return row


HEADER = (f"{'scheme':<6} {'size':>5} {'synapses':>12} {'convert s':>9} {'build s':>8} {'py base MB':>10} "
          f"{'py peak MB':>10} {'run peak MB':>11} {'B/synapse':>9} {'images/s':>9}")


def table_line(row):
    if row.get("failed") is not None:
        return f"{row['scheme']:<6} {row['size']:>5} did not run (exit code {row['failed']})"
    return (f"{row['scheme']:<6} {row['size']:>5} {row['synapses']:>12,} {row['convert_s']:>9.1f} "
            f"{row['build_s']:>8.1f} {row['python_base_mb']:>10.0f} {row['python_peak_mb']:>10.0f} "
            f"{row['run_peak_mb']:>11.0f} {row['bytes_per_synapse']:>9.1f} {row['images_per_s']:>9.3f}")


def slopes(rows, keys=("build_s", "python_peak_mb", "run_peak_mb", "images_per_s")):
    """Least-squares slope of log(figure) against log(synapses), per scheme and figure."""
    import numpy as np

    fitted = {}
    for scheme in sorted({r["scheme"] for r in rows}):
        ok = [r for r in rows if r["scheme"] == scheme and r.get("failed") is None]
        if len(ok) < 2:
            continue
        x = np.log([r["synapses"] for r in ok])
        fitted[scheme] = {key: float(np.polyfit(x, np.log([r[key] for r in ok]), 1)[0]) for key in keys}
    return fitted


def plot(rows, fitted, path):
    """Log-log plot of build time, build peak, run peak and images/s against synapses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = {"build_s": "build time (s)", "python_peak_mb": "Python build peak (MB)",
              "run_peak_mb": "run process peak (MB)", "images_per_s": "images/s (2 processes)"}
    figure, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    for axis, (key, title) in zip(axes, titles.items()):
        for scheme in sorted(fitted):
            ok = [r for r in rows if r["scheme"] == scheme and r.get("failed") is None]
            axis.loglog([r["synapses"] for r in ok], [r[key] for r in ok], "o-",
                        label=f"{scheme} (slope {fitted[scheme][key]:.2f})")
        axis.set_xlabel("synapses")
        axis.set_title(title)
        axis.legend(fontsize=8)
        axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write_results(rows, fitted, args, path):
    memory_gb = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30
    lines = ["# benchmarks/scale.py: memory, build time and throughput against the synapse count",
             "# " + command_line(__file__, args.argv),
             "# data: seeded uniform random 3x32x32 images (16 for calibration, --images for the runs); "
             "seeded random weights, no accuracy claimed",
             f"# {args.versions}; precision {args.precision}",
             f"# {args.machine}, {memory_gb:.0f} GB", HEADER]
    lines += [table_line(row) for row in rows]
    lines.append("# slopes of log(figure) against log(synapses):")
    for scheme, values in fitted.items():
        lines.append(f"#   {scheme}: " + ", ".join(f"{k} {v:.2f}" for k, v in values.items()))
    Path(path).write_text("\n".join(lines) + "\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schemes", nargs="+", default=["ttfs", "rate"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--images", type=int, default=4, help="test images per network (default 4)")
    parser.add_argument("--workers", type=int, default=2, help="standalone processes (default 2)")
    parser.add_argument("--precision", default="float64", choices=["float64", "float32"])
    parser.add_argument("--profile", help="write a cProfile of each build to PROFILE.<scheme>.<size>")
    parser.add_argument("--output", help="results file (benchmarks/results/scale.txt)")
    parser.add_argument("--json", help="also write the rows as JSON (read back by --replot)")
    parser.add_argument("--plot", help="log-log figure (benchmarks/results/scale.png)")
    parser.add_argument("--replot", help="read rows from this JSON instead of measuring")
    parser.add_argument("--child", nargs=2, metavar=("SCHEME", "WIDTH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.argv = argv
    args.machine = machine_line()  # the load before this run's own work
    args.versions = versions_line()  # the checkout as run (before this run writes its results)
    if args.child:
        row = measure(args.child[0], int(args.child[1]), args.images, args.workers, args.precision, args.profile)
        print(json.dumps(row))
        return
    if args.replot:
        rows = json.loads(Path(args.replot).read_text())
    else:
        print(HEADER, flush=True)
        rows = []
        for size in args.sizes:
            for scheme in args.schemes:
                rows.append(run_child(scheme, size, args))
                print(table_line(rows[-1]), flush=True)
    fitted = slopes(rows)
    if args.json and not args.replot:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if args.output:
        write_results(rows, fitted, args, args.output)
    if args.plot:
        plot(rows, fitted, args.plot)


if __name__ == "__main__":
    main()
