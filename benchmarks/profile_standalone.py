"""Where a C++ standalone simulation spends its time: Brian2's profile of every code object.

    python benchmarks/profile_standalone.py                            # ttfs, López-Randulfe CNN
    python benchmarks/profile_standalone.py --option integration=event
    python benchmarks/profile_standalone.py --method rate --option duration=20

Builds the converted network once with ``profile=True`` (its own build folder, with the edits of
:mod:`brianconv.builder.generated` and the compiler flags of brianconv's standalone programs), runs
``--images`` MNIST test images pipelined in one run and prints, per code object and summed by kind,
the CPU time per simulated step: neuron updates (state updaters, threshold tests, resets and window
events), synaptic propagation (queueing the spikes and applying ``on_pre``), and bookkeeping
(spike/operation counters and monitors). The profile's clock calls cost time of their own, so the
profiled total is a little above an unprofiled run. This is what bounds ``(c) / (b)`` in
``speed.py``: the runtime device runs the same compiled kernels plus its Python work per step.
"""

import argparse
import tempfile
import time
from pathlib import Path

from provenance import header

KINDS = [("synaptic propagation", ("_pre_codeobject", "_pre_push_spikes", "_post_codeobject", "_post_push_spikes")),
         ("neuron updates", ("_stateupdater", "_thresholder", "_resetter", "_run_regularly"))]
BOOKKEEPING = ("count_", "spike_counter", "spikes_", "states_")


def kind_of(name):
    """'bookkeeping', 'synaptic propagation' or 'neuron updates' for a Brian2 code object name."""
    if name.startswith(BOOKKEEPING) or "_monitor" in name:
        return "bookkeeping"
    for kind, markers in KINDS:
        if any(marker in name for marker in markers):
            return kind
    return "other"


def parse_option(text):
    """``name=value`` with the value read as a Python literal where possible (``t_max=16``)."""
    import ast

    name, _, value = text.partition("=")
    try:
        return name, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return name, value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lopez_randulfe_cnn")
    parser.add_argument("--method", default="ttfs")
    parser.add_argument("--option", action="append", default=[], help="scheme option name=value (repeatable)")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--top", type=int, default=15, help="code objects listed one by one")
    parser.add_argument("--build-dir", default=None)
    args = parser.parse_args()
    print(header(__file__), flush=True)

    from brian2.codegen.cpp_prefs import get_compiler_and_args
    from speed import _images

    import brianconv
    from brianconv import builder, datasets, models
    from brianconv.builder import generated
    from brianconv.builder.objects import float_precision

    options = dict(parse_option(text) for text in args.option)
    calibration, _ = datasets.load_sample("train")
    snn = brianconv.convert(models.load(args.model), args.method, calibration=calibration, **options)
    d = snn.description
    x, _ = _images(args.images)
    directory = Path(args.build_dir or tempfile.mkdtemp(prefix="brianconv-profile-"))
    # the builder's device, flags and edits: the profile measures the code that brianconv runs
    with builder.standalone_device(directory) as device, float_precision(d.precision):
        objects = builder.create_objects(d, args.images)
        steps = d.duration_steps(args.images)
        objects.network.run(steps * d.dt, namespace={}, profile=True)
        start = time.perf_counter()
        device.build(directory=str(directory), compile=False, run=False, with_output=False)
        generated.edit_build(directory, d)
        device.compile_source(str(directory), get_compiler_and_args()[0], debug=False, clean=False)
        build = time.perf_counter() - start
        rows = builder.stimulus_rows(x.reshape(len(x), -1), args.images, d.n_inputs)
        start = time.perf_counter()
        device.run(run_args={objects.stimulus: rows})
        wall = time.perf_counter() - start
        profile = [(name, float(seconds)) for name, seconds in objects.network.profiling_info]
    total = sum(seconds for _, seconds in profile)

    print(f"{args.method} {options} on {args.model}: {d.n_neurons} neurons, {d.n_synapses} synapses, "
          f"{args.images} images, {steps} steps ({steps / args.images:.1f} per image); build {build:.0f} s")
    print(f"run (whole process, incl. loading) {wall:.2f} s; profiled code objects {total:.2f} s = "
          f"{1e6 * total / steps:.1f} us per step, {1e3 * total / args.images:.2f} ms per image\n")
    print(f"  {'code object':<52} {'us/step':>8} {'share':>7}")
    for name, seconds in sorted(profile, key=lambda row: -row[1])[:args.top]:
        print(f"  {name:<52} {1e6 * seconds / steps:8.2f} {100 * seconds / total:6.1f} %")
    print(f"\n  {'by kind':<52} {'us/step':>8} {'share':>7}")
    by_kind = {}
    for name, seconds in profile:
        by_kind[kind_of(name)] = by_kind.get(kind_of(name), 0.0) + seconds
    for kind, seconds in sorted(by_kind.items(), key=lambda row: -row[1]):
        print(f"  {kind:<52} {1e6 * seconds / steps:8.2f} {100 * seconds / total:6.1f} %")


if __name__ == "__main__":
    main()
