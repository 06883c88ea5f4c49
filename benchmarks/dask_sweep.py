"""A parameter sweep on a Dask LocalCluster against the same sweep with ``n_workers`` on one machine.

    python benchmarks/dask_sweep.py                       # 20 grid points, 256 MNIST test images each
    python benchmarks/dask_sweep.py --images 32 --seeds 1 # a quick look (5 points)

The trained ``mlp`` (784-128-10) is converted to rate coding with Poisson input; the grid is
Poisson seed x ``threshold_scale`` (``--seeds`` x 5 points, 20 by default), every point
simulating the same images. Both modes run the same C++ standalone program, compiled once
before anything is timed:

(a) ``brianconv.sweep(..., n_workers=W)``: the points one after the other, the batches of each
    point in ``W`` parallel processes of the binary;
(b) ``brianconv.sweep(..., executor=client)`` on ``LocalCluster(n_workers=W,
    threads_per_worker=1, processes=True)``: each point one Dask task, ``W`` points at a time.

Printed: wall-clock seconds of each repetition (a, b, a, b, ...), the overhead ratio (b) / (a)
of the fastest repetitions, the cluster's start-up time (not in the ratio: a cluster is started
once per session) and whether the two tables are identical. Nothing here is a test: speed is
measured, never asserted.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import brianconv
from brianconv import datasets, models

THRESHOLD_SCALES = [0.6, 0.8, 1.0, 1.2, 1.4]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=256, help="MNIST test images per grid point")
    parser.add_argument("--seeds", type=int, default=4, help="Poisson seeds (grid: seeds x 5 threshold scales)")
    parser.add_argument("--workers", type=int, default=2, help="W: n_workers of (a), LocalCluster workers of (b)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per run of the binary")
    parser.add_argument("--duration", type=int, default=32, help="rate code length (steps)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions of each mode")
    parser.add_argument("--data", default=None, help="MNIST folder (default $BRIANCONV_DATA, else the bundled sample)")
    return parser.parse_args()


def commit():
    """The repository's commit, or 'unknown' outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def timed(function):
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def main():
    args = parse_args()
    from dask.distributed import Client, LocalCluster
    from dask.distributed import __version__ as dask_version

    x, y, source = datasets.load_mnist_or_sample("test", args.data, args.images)
    xc, _, _ = datasets.load_mnist_or_sample("train", args.data, 500)
    model = models.load("mlp")
    snn = brianconv.convert(model, "rate", calibration=xc, input="poisson", duration=args.duration)
    grid = {"seed": list(range(args.seeds)), "threshold_scale": THRESHOLD_SCALES}
    points = args.seeds * len(THRESHOLD_SCALES)
    print("command: python benchmarks/dask_sweep.py " + " ".join(sys.argv[1:]))
    print(f"brianconv {brianconv.__version__} (commit {commit()}), dask.distributed {dask_version}, "
          f"{os.cpu_count()} cores")
    print(f"data: {source}, first {len(x)} images; calibration: 500 images of the MNIST training set")
    print(f"network: mlp (784-128-10), rate coding, Poisson input, {args.duration} steps; grid: {points} points "
          f"(seed x threshold_scale), batch size {args.batch_size}")
    build_seconds, _ = timed(lambda: snn.program("cpp_standalone", args.batch_size))
    print(f"build: {build_seconds:.1f} s (0 when the program was in the cache)")
    options = dict(labels=y, batch_size=args.batch_size, progress=False)
    start_seconds, cluster = timed(lambda: LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                                                        dashboard_address=":0"))
    client = Client(cluster)
    print(f"LocalCluster({args.workers} worker processes, 1 thread each) started in {start_seconds:.1f} s")
    times = {"local": [], "dask": []}
    tables = {}
    try:
        for _ in range(args.repeats):
            seconds, tables["local"] = timed(lambda: brianconv.sweep(snn, x, grid, n_workers=args.workers, **options))
            times["local"].append(seconds)
            seconds, tables["dask"] = timed(lambda: brianconv.sweep(snn, x, grid, executor=client, **options))
            times["dask"].append(seconds)
    finally:
        client.close()
        cluster.close()
    local, dask = min(times["local"]), min(times["dask"])
    print(f"(a) sweep, n_workers={args.workers}:      " + ", ".join(f"{t:.1f} s" for t in times["local"]))
    print(f"(b) sweep, executor=LocalCluster({args.workers}): " + ", ".join(f"{t:.1f} s" for t in times["dask"]))
    print(f"per point (fastest): (a) {local / points:.2f} s, (b) {dask / points:.2f} s")
    print(f"overhead ratio (b) / (a): {dask / local:.2f}")
    print(f"tables identical: {tables['local'].rows == tables['dask'].rows}")
    accuracy = tables["dask"].column("accuracy")
    print(f"SNN accuracy over the grid: {100 * accuracy.min():.2f} % to {100 * accuracy.max():.2f} % "
          f"(ANN on these images: {100 * np.mean(snn.graph.forward(x).argmax(1) == y):.2f} %)")


if __name__ == "__main__":
    main()
