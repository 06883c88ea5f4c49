"""Speed and memory: the torch ANN against brianconv on Brian2 runtime and C++ standalone.

    python benchmarks/speed.py                                  # every scheme on the López-Randulfe CNN
    python benchmarks/speed.py --methods ttfs --standalone-images 2000

For each coding scheme (settings in ``SCHEMES``: the ones that reach the ANN's accuracy on this
net) the script measures (a) the torch ANN forward pass, (b) brianconv on Brian2's runtime device
(Cython), (c) C++ standalone in one process and (d) C++ standalone with one process per core,
all on the same MNIST test images with the same converted network. Each mode runs in its own
child process so that its peak memory is its own: the Python process's maximum resident memory,
and for C++ standalone also that of each simulation process (sampled from /proc while it runs).

Printed: images per second (wall clock, and per CPU-second: user + system time of the process
and its simulation processes, which stays put when other jobs share the machine), simulated
steps per image, microseconds per simulated step, peak memory, build time, and the ratios
between modes. The time per step explains (c)/(b): both devices run the same compiled kernels
for neurons and synapses, and the runtime device adds Brian2's Python work per step and code
object, so (c)/(b) = 1 + (that overhead) / (compiled work per step). Nothing here is a test:
speed is measured, never asserted.
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
from provenance import header


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


#: Configurations measured: scheme, options and how many images the runtime and all-cores modes
#: simulate by default. Each reaches the ANN's accuracy on the López-Randulfe CNN (rate: 20 steps
#: give 99.61 % in ``results/rate_mnist.txt``; amos: the dendrite wiring needed for max-pooling).
#: amos takes a new image every step but needs 53 steps to fill its pipeline: 200 runtime images
#: keep the filling from dominating (b). ``ttfs-event-f32`` is ttfs-event stored in float32
#: (``precision="float32"``): 8 bytes read per synaptic event instead of 12.
SCHEMES = {
    "ttfs": dict(method="ttfs", options=dict(t_max=32), runtime_images=20, parallel_images=10000),
    "ttfs-event": dict(method="ttfs", options=dict(t_max=32, integration="event"), runtime_images=20,
                       parallel_images=10000),
    "ttfs-event-f32": dict(method="ttfs", options=dict(t_max=32, integration="event", precision="float32"),
                           runtime_images=20, parallel_images=10000),
    "rate": dict(method="rate", options=dict(duration=20), runtime_images=20, parallel_images=2000),
    "tdsnn": dict(method="tdsnn", options=dict(L=8.0), runtime_images=20, parallel_images=2000),
    "amos": dict(method="amos", options=dict(wiring="dendrite"), runtime_images=200, parallel_images=2000),
}


def _image_count(mode, args):
    """Images for ``mode``: the command line's count, or the scheme's default for (b) and (d)."""
    given = getattr(args, f"{mode}_images")
    return SCHEMES[args.child_method][f"{mode}_images"] if given is None else given


def measure(mode, args):
    """Run one mode of one scheme in this process and return a dict of measurements."""
    import torch

    import brianconv
    from brianconv import datasets, models

    torch.set_num_threads(args.cores)
    model = models.load(args.model)
    n = _image_count(mode, args)
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
    setting = SCHEMES[args.child_method]
    snn = brianconv.convert(model, setting["method"], calibration=calibration, **setting["options"])
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
    steps = int(np.ceil(n / batch)) * snn.description.duration_steps(batch)
    return dict(mode=mode, images=n, seconds=result.timing["simulate"], cpu=cpu, build=build,
                peak_mb=max(_peak_mb(), binary), steps=steps,
                python_mb=_peak_mb(), binary_mb=binary, accuracy=result.accuracy, ann_accuracy=result.ann_accuracy,
                workers=workers)


def _run_child(mode, method, args):
    """Measure ``mode`` of ``method`` in a child process; None (and the error printed) if it failed."""
    command = [sys.executable, __file__, "--child", mode, "--child-method", method] + _forwarded_arguments(args)
    output = subprocess.run(command, capture_output=True, text=True)
    line = next((text for text in output.stdout.splitlines() if text.startswith("RESULT ")), None)
    if line is None:
        print(f"{method} {mode} failed:\n{output.stderr[-3000:]}", flush=True)
        return None
    return json.loads(line[7:])


def _forwarded_arguments(args):
    forwarded = ["--model", args.model, "--cores", str(args.cores), "--batch", str(args.batch),
                 "--torch-images", str(args.torch_images), "--standalone-images", str(args.standalone_images),
                 "--build-dir", args.build_dir]
    for name in ("runtime", "parallel"):
        if getattr(args, f"{name}_images") is not None:
            forwarded += [f"--{name}-images", str(getattr(args, f"{name}_images"))]
    return forwarded


def _print_row(r):
    per_step = f", {r['steps'] / r['images']:6.1f} steps/image, {1e6 * r['seconds'] / r['steps']:7.1f} us/step" \
        if "steps" in r else ""
    print(f"  {r['mode']:<11} {r['images']:>6} images in {r['seconds']:7.1f} s = {r['images'] / r['seconds']:8.1f} images/s "
          f"({r['images'] / r['cpu']:7.1f} per CPU-second){per_step}, "
          f"build {r['build']:6.1f} s, peak memory {r['peak_mb']:6.0f} MB"
          + (f" (Python {r['python_mb']:.0f} MB, one simulation process {r['binary_mb']:.0f} MB)"
             if r.get("binary_mb") else "")
          + (f", SNN accuracy {100 * r['accuracy']:.2f} % (ANN {100 * r['ann_accuracy']:.2f} %)" if "accuracy" in r else ""),
          flush=True)


def _images_per_second(rows):
    return {mode: r["images"] / r["seconds"] for mode, r in rows.items()}


def _print_ratios(rows, cores):
    speed = _images_per_second(rows)
    per_cpu = {mode: r["images"] / r["cpu"] for mode, r in rows.items()}
    print(f"  ratios of images/s (wall clock) and of images per CPU-second (independent of other load), {cores} cores")
    print(f"    {'':<52} {'wall':>9} {'CPU':>9}")
    for a, b, label in [("standalone", "runtime", "(c) standalone, 1 process / (b) runtime"),
                        ("parallel", "standalone", "(d) standalone, all cores / (c) 1 process"),
                        ("standalone", "torch", "(c) standalone / (a) torch ANN: distance to the limit"),
                        ("parallel", "torch", "(d) standalone, all cores / (a) torch ANN")]:
        if a in speed and b in speed:
            print(f"    {label:<52} {speed[a] / speed[b]:9.3f} {per_cpu[a] / per_cpu[b]:9.3f}")
    if "runtime" in rows and "standalone" in rows:
        b, c = (1e6 * rows[m]["seconds"] / rows[m]["steps"] for m in ("runtime", "standalone"))
        print(f"    per simulated step: (b) {b:.0f} us, (c) {c:.0f} us; (b) - (c) = {b - c:.0f} us: Brian2's Python work "
              "per step, less the standalone process's start-up (loading the network) spread over its steps")
    if "parallel" in speed:
        print(f"    10,000 images with (d) would take {10000 / speed['parallel']:.0f} s")


def _print_summary(table):
    print("\nsummary (wall clock; steps and microseconds per simulated step from (c))")
    print(f"  {'scheme':<14} {'steps/image':>11} {'us/step':>8} {'(b) img/s':>10} {'(c) img/s':>10} {'(d) img/s':>10} "
          f"{'(c)/(b)':>8} {'(c)/(a)':>8} {'peak MB':>8} {'SNN %':>7} {'ANN %':>7}")
    for method, rows in table.items():
        speed = _images_per_second(rows)
        c = rows.get("standalone") or rows.get("parallel")
        best = rows.get("parallel") or c
        ratio = {pair: speed[pair[0]] / speed[pair[1]] if set(pair) <= set(speed) else None
                 for pair in (("standalone", "runtime"), ("standalone", "torch"))}
        print(f"  {method:<14} {_cell(c['steps'] / c['images'] if c else None, '11.1f')} "
              f"{_cell(1e6 * c['seconds'] / c['steps'] if c else None, '8.1f')} "
              f"{_cell(speed.get('runtime'), '10.1f')} {_cell(speed.get('standalone'), '10.1f')} "
              f"{_cell(speed.get('parallel'), '10.1f')} {_cell(ratio['standalone', 'runtime'], '8.2f')} "
              f"{_cell(ratio['standalone', 'torch'], '8.4f')} "
              f"{_cell(max((r['peak_mb'] for r in rows.values()), default=None), '8.0f')} "
              f"{_cell(100 * best['accuracy'] if best else None, '7.2f')} "
              f"{_cell(100 * best['ann_accuracy'] if best else None, '7.2f')}")


def _cell(value, form):
    """``value`` formatted, or "-" where the mode was not measured."""
    return format("-", ">" + form.split(".")[0]) if value is None else format(value, form)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lopez_randulfe_cnn")
    parser.add_argument("--methods", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--torch-images", type=int, default=10000)
    parser.add_argument("--runtime-images", type=int, default=None,
                        help="images for (b) (default per scheme: " +
                             ", ".join(f"{m} {s['runtime_images']}" for m, s in SCHEMES.items()) + ")")
    parser.add_argument("--standalone-images", type=int, default=1000)
    parser.add_argument("--parallel-images", type=int, default=None,
                        help="images for (d) (default per scheme: " +
                             ", ".join(f"{m} {s['parallel_images']}" for m, s in SCHEMES.items()) + ")")
    parser.add_argument("--build-dir", default=None)
    parser.add_argument("--modes", nargs="+", default=["torch", "runtime", "standalone", "parallel"])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--child-method", default="ttfs", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(measure(args.child, args)))
        return
    if args.build_dir is None:
        args.build_dir = tempfile.mkdtemp(prefix="brianconv-speed-")
    torch_row = _run_child("torch", "ttfs", args) if "torch" in args.modes else None
    print(header(__file__), flush=True)
    print(f"{args.model}, {args.cores} cores")
    if torch_row:
        _print_row(torch_row)
    table = {}
    for method in args.methods:
        print(f"\n{method}: {SCHEMES[method]['method']} {SCHEMES[method]['options']}", flush=True)
        rows = {"torch": torch_row} if torch_row else {}
        for mode in (m for m in args.modes if m != "torch"):
            row = _run_child(mode, method, args)
            if row:
                rows[mode] = row
                _print_row(row)
        _print_ratios(rows, args.cores)
        table[method] = rows
    _print_summary(table)


if __name__ == "__main__":
    main()
