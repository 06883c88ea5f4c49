"""Speed and memory: the torch ANN against brianconv on Brian2 runtime and C++ standalone.

    python benchmarks/speed.py                      # ttfs on the López-Randulfe CNN
    python benchmarks/speed.py --method rate --standalone-images 1000

Each mode runs in its own child process so that its peak memory is its own: the Python
process's maximum resident memory, and for C++ standalone also that of each simulation process
(sampled from /proc while it runs). All modes simulate the same MNIST test images with the same converted network; the
script prints images per second (wall clock, and per CPU-second: user + system time of the
process and its simulation processes, which stays put when other jobs share the machine), peak
memory, build time and the ratios between modes. Nothing here is a test: speed is measured,
never asserted.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _images(n):
    from brianconv import datasets
    from brianconv.errors import DataNotFoundError

    for root in (None, Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"):
        try:
            return datasets.load_mnist("test", root=root, limit=n)
        except DataNotFoundError:
            continue
    x, y = datasets.load_sample("test")
    repeats = int(np.ceil(n / len(x)))
    return np.concatenate([x] * repeats)[:n], np.concatenate([y] * repeats)[:n]


def _cpu_seconds():
    """User + system CPU time of this process and its finished children (s): unlike wall time it
    does not grow when other jobs share the cores."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _peak_mb():
    """Peak resident memory of this Python process (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure(mode, args):
    """Run one mode in this process and return a dict of measurements."""
    import torch

    import brianconv
    from brianconv import datasets, models

    torch.set_num_threads(args.cores)
    model = models.load(args.model)
    n = {"torch": args.torch_images, "runtime": args.runtime_images, "standalone": args.standalone_images,
         "parallel": args.parallel_images}[mode]
    x, y = _images(n)
    if mode == "torch":
        with torch.no_grad():
            model(torch.as_tensor(x[:100]))  # warm-up
            start, cpu = time.perf_counter(), _cpu_seconds()
            for batch in range(0, n, 1000):
                model(torch.as_tensor(x[batch:batch + 1000]))
            seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        return dict(mode=mode, images=n, seconds=seconds, cpu=cpu, build=0.0, peak_mb=_peak_mb())
    calibration, _ = datasets.load_sample("train")
    options = {"t_max": args.t_max} if args.method == "ttfs" else {}
    snn = brianconv.convert(model, args.method, calibration=calibration, **options)
    device = "cython" if mode == "runtime" else "cpp_standalone"
    workers = args.cores if mode == "parallel" else 1
    batch = n if mode == "runtime" else args.batch
    start = time.perf_counter()
    snn.program(device, batch, build_root=args.build_dir)  # compile (or find the cached build)
    if mode == "runtime":  # Cython compiles its code objects on the first run: keep that out of the timing
        snn.simulate(x[:1], device=device, batch_size=batch)
    build = time.perf_counter() - start
    cpu = _cpu_seconds()
    result = snn.simulate(x, labels=y, device=device, n_workers=workers, batch_size=batch, build_root=args.build_dir)
    cpu = _cpu_seconds() - cpu
    binary = result.timing.get("peak_memory_mb") or 0.0
    return dict(mode=mode, images=n, seconds=result.timing["simulate"], cpu=cpu, build=build,
                peak_mb=max(_peak_mb(), binary),
                python_mb=_peak_mb(), binary_mb=binary, accuracy=result.accuracy, ann_accuracy=result.ann_accuracy,
                workers=workers)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lopez_randulfe_cnn")
    parser.add_argument("--method", default="ttfs")
    parser.add_argument("--t-max", type=int, default=32)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--torch-images", type=int, default=10000)
    parser.add_argument("--runtime-images", type=int, default=10)
    parser.add_argument("--standalone-images", type=int, default=1000)
    parser.add_argument("--parallel-images", type=int, default=10000)
    parser.add_argument("--build-dir", default=None)
    parser.add_argument("--modes", nargs="+", default=["torch", "runtime", "standalone", "parallel"])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, args)))
        return
    if args.build_dir is None:
        args.build_dir = tempfile.mkdtemp(prefix="brianconv-speed-")
    rows = {}
    for mode in args.modes:
        command = [sys.executable, __file__, "--child", mode] + [a for a in sys.argv[1:] if a != "--child"]
        if "--build-dir" not in command:
            command += ["--build-dir", args.build_dir]
        output = subprocess.run(command, capture_output=True, text=True)
        line = next((text for text in output.stdout.splitlines() if text.startswith("RESULT ")), None)
        if line is None:
            print(f"{mode} failed:\n{output.stderr[-3000:]}")
            continue
        rows[mode] = json.loads(line[7:])
        r = rows[mode]
        print(f"{mode:<11} {r['images']:>6} images in {r['seconds']:8.1f} s = {r['images'] / r['seconds']:9.1f} images/s "
              f"({r['images'] / r['cpu']:8.1f} per CPU-second), "
              f"build {r['build']:6.1f} s, peak memory {r['peak_mb']:7.0f} MB"
              + (f" (Python {r['python_mb']:.0f} MB, one simulation process {r['binary_mb']:.0f} MB)"
                 if r.get("binary_mb") else "")
              + (f", SNN accuracy {100 * r['accuracy']:.2f} % (ANN {100 * r['ann_accuracy']:.2f} %)" if "accuracy" in r else ""),
              flush=True)
    speed = {mode: r["images"] / r["seconds"] for mode, r in rows.items()}
    per_cpu = {mode: r["images"] / r["cpu"] for mode, r in rows.items()}
    print(f"\n{args.method} on {args.model}, {args.cores} cores; ratios of images/s (wall clock) and of images "
          "per CPU-second (independent of other load)")
    print(f"  {'':<52} {'wall':>10} {'CPU':>10}")
    for a, b, label in [("standalone", "runtime", "(c) standalone, 1 process / (b) runtime"),
                        ("parallel", "standalone", "(d) standalone, all cores / (c) 1 process"),
                        ("standalone", "torch", "(c) standalone / (a) torch ANN: distance to the limit"),
                        ("parallel", "torch", "(d) standalone, all cores / (a) torch ANN")]:
        if a in speed and b in speed:
            print(f"  {label:<52} {speed[a] / speed[b]:10.3f} {per_cpu[a] / per_cpu[b]:10.3f}")
    if "parallel" in speed:
        print(f"  10,000 images with (d) would take {10000 / speed['parallel']:.0f} s")


if __name__ == "__main__":
    main()
