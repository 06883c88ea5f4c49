"""The edits of brianconv's standalone builds against Brian2's own code, side by side in one run.

Builds each network three times: as Brian2 writes it, with spike queues that hold source neurons
(:func:`brianconv.builder.generated.spike_queues_hold_sources`, ``generated.HOLD_SOURCES``), and
also with the threshold edits (:func:`brianconv.builder.generated.scheduled_thresholds`,
``generated.SCHEDULE_THRESHOLDS``: neuron loops skipped where a shared term is false, scheduled
spikes sorted once per window). It runs the same images through all of them in turns (one process
each, so the run process's CPU time and peak memory are its own), checks that outputs, spike counts
and synaptic operations are identical, and prints the ratios::

    python benchmarks/queues.py --images 500 --repeats 2

CPU seconds of the run processes, not wall time, are compared: they do not grow when other jobs
share the cores (the variants alternate, so all see the same load).
"""

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from provenance import header

import brianconv
from brianconv import datasets, models
from brianconv.builder import generated

SCHEMES = {"rate": ("rate", {"duration": 100}), "ttfs-event": ("ttfs", {"t_max": 32, "integration": "event"})}
#: variant -> (generated.HOLD_SOURCES, generated.SCHEDULE_THRESHOLDS)
VARIANTS = {"Brian2's code": (False, False), "queues of sources": (True, False), "+ threshold edits": (True, True)}


def _children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _simulate(snn, x, y, edits, build_root, batch):
    """One simulation in one standalone process: (result, CPU seconds of that process)."""
    generated.HOLD_SOURCES, generated.SCHEDULE_THRESHOLDS = edits
    before = _children_cpu_seconds()
    result = snn.simulate(x, labels=y, device="cpp_standalone", batch_size=batch, n_workers=1, build_root=build_root)
    return result, _children_cpu_seconds() - before


def _same_run(a, b):
    """Identical outputs, spike counts and synaptic operations (the edit changes no sum)."""
    return (np.array_equal(a.outputs, b.outputs) and np.array_equal(a.synaptic_ops, b.synaptic_ops)
            and all(np.array_equal(a.spike_counts[name], b.spike_counts[name]) for name in a.spike_counts))


def measure(label, scheme, options, model_name, x, y, calibration, repeats, build_root):
    # one converted network per variant: a network keeps the program it compiled first
    snns = {variant: brianconv.convert(models.load(model_name), scheme, calibration=calibration, **options)
            for variant in VARIANTS}
    batch = len(x)
    results, cpu, peak, build = {}, {v: [] for v in VARIANTS}, {}, {}
    for variant, edits in VARIANTS.items():  # compile all first: builds are not timed here
        start = time.perf_counter()
        results[variant], _ = _simulate(snns[variant], x[:2], y[:2], edits, build_root, batch)
        build[variant] = time.perf_counter() - start
    for _ in range(repeats):
        for variant, edits in VARIANTS.items():
            results[variant], seconds = _simulate(snns[variant], x, y, edits, build_root, batch)
            cpu[variant].append(seconds)
            peak[variant] = results[variant].timing["peak_memory_mb"]
    names = list(VARIANTS)
    old, new = names[0], names[-1]
    same = all(_same_run(results[old], results[name]) for name in names[1:])
    print(f"\n{model_name}, {label} {options}: {len(x)} images, {snns[new].description.n_synapses:,} synapses, "
          f"{np.mean(results[new].synaptic_ops):,.0f} synaptic ops per image; identical outputs, spikes and "
          f"synaptic ops: {same}")
    for variant in VARIANTS:
        best = min(cpu[variant])
        print(f"  {variant:<18} {len(x) / best:8.1f} images per CPU-second (best of {repeats}: "
              f"{', '.join(f'{s:.1f}' for s in cpu[variant])} s), run process peak {peak[variant]:6.1f} MB, "
              f"build {build[variant]:.0f} s")
    for before, after in zip(names, names[1:]):
        print(f"  ratios, {after} / {before}: images per CPU-second {min(cpu[before]) / min(cpu[after]):.2f}, "
              f"peak memory {peak[after] / peak[before]:.2f}")
    print(f"  ratios, all edits / Brian2's code: images per CPU-second {min(cpu[old]) / min(cpu[new]):.2f}, "
          f"peak memory {peak[new] / peak[old]:.2f}")
    return same


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500, help="first N images of the MNIST test set")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant (the fastest counts)")
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES), choices=list(SCHEMES))
    parser.add_argument("--model", default="lopez_randulfe_cnn", choices=models.available())
    parser.add_argument("--data", default=None, help="folder with the MNIST IDX files (default: $BRIANCONV_DATA)")
    parser.add_argument("--build-dir", default=None, help="compiled programs (default: a temporary folder)")
    args = parser.parse_args(argv)
    print(header(__file__, argv))
    x, y, source = datasets.load_mnist_or_sample("test", args.data, args.images)
    calibration, _, _ = datasets.load_mnist_or_sample("train", args.data, None)
    print(f"{len(x)} images: {source}; calibration on the last {min(500, len(calibration))} training images")
    calibration = calibration[-500:]
    build_root = Path(args.build_dir or tempfile.mkdtemp(prefix="queues-"))
    same = [measure(label, *SCHEMES[label], args.model, x, y, calibration, args.repeats, build_root)
            for label in args.schemes]
    return 0 if all(same) else 1


if __name__ == "__main__":
    sys.exit(main())
