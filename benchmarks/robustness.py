"""Robustness study: which code survives which biological imperfection?

The López-Randulfe MNIST CNN (bundled ``lopez_randulfe_cnn``) is converted once per scheme with
the perturbation knobs compiled in (``convert(..., perturbations="all")``); every knob value and
seed is then a run of the same compiled C++ program (``brianconv.sweep``). For each perturbation
the grid goes from no perturbation towards chance; each point is repeated over ``--seeds``.

    python benchmarks/robustness.py --images 300 --seeds 0 1 2
    python benchmarks/robustness.py --report-only     # table and figures from the CSV so far

Rows are appended to ``benchmarks/results/robustness.csv`` as they finish, so an interrupted
study keeps what it measured; ``--report-only`` turns the CSV into
``benchmarks/results/robustness.txt`` and ``benchmarks/figures/robustness_<knob>.png``.
"""

import argparse
import csv
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402

import brianconv  # noqa: E402
from brianconv import datasets, models, plot  # noqa: E402
from brianconv.sweep import SweepTable  # noqa: E402

ROOT = Path(__file__).resolve().parent
CSV = ROOT / "results" / "robustness.csv"
#: Scheme -> options: the settings of the repository's MNIST benchmarks (rate: 100 steps).
SCHEMES = {"ttfs": dict(t_max=32), "amos": dict(K=10), "tdsnn": dict(L=8.0), "rate": dict(duration=100)}
#: Knob -> values (the unperturbed point is run once per scheme and shared by every knob).
#: sigma_v is a fraction of the threshold added per step; p_fail a probability per transmission.
GRID = {"sigma_v": [0.03, 0.1, 0.3, 1.0], "p_fail": [0.1, 0.3, 0.6, 0.9], "sigma_w": [0.1, 0.3, 1.0, 3.0]}
FIELDS = ["scheme", "knob", "value", "seed", "accuracy", "agreement", "spikes_per_neuron", "synaptic_ops",
          "ann_accuracy"]


def done_points():
    """``(scheme, knob, value, seed)`` already in the CSV."""
    if not CSV.is_file():
        return set()
    with open(CSV) as handle:
        return {(r["scheme"], r["knob"], float(r["value"]), int(r["seed"])) for r in csv.DictReader(handle)}


def append(row):
    new = not CSV.is_file()
    with open(CSV, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def run_scheme(method, options, x, y, calibration, seeds, knobs, n_workers):
    """Convert once with every knob compiled in, then run the baseline and each knob's grid."""
    snn = brianconv.convert(models.load("lopez_randulfe_cnn"), method, calibration=calibration,
                            perturbations="all", **options)
    done = done_points()
    points = [("none", 0.0, 0)] + [(k, v, s) for k in knobs for v in GRID[k] for s in seeds]
    for knob, value, seed in points:
        if (method, knob, float(value), seed) in done:
            continue
        parameters = {} if knob == "none" else {knob: value, "seed": seed}
        start = time.perf_counter()
        result = snn.simulate(x, labels=y, device="cpp_standalone", n_workers=n_workers, **parameters)
        append(dict(scheme=method, knob=knob, value=value, seed=seed, accuracy=result.accuracy,
                    agreement=result.agreement, spikes_per_neuron=result.spikes_per_neuron,
                    synaptic_ops=float(np.mean(result.synaptic_ops)), ann_accuracy=result.ann_accuracy))
        print(f"{method:<6} {knob:<8} {value:<6} seed {seed}: accuracy {100 * result.accuracy:.1f} % "
              f"({time.perf_counter() - start:.0f} s, compiled {result.timing['compiled']})", flush=True)


def tables():
    """``knob -> {scheme -> SweepTable}`` (knob value 0 = the unperturbed baseline, one row per seed)."""
    with open(CSV) as handle:
        rows = list(csv.DictReader(handle))
    out = {}
    for knob in GRID:
        for scheme in SCHEMES:
            base = [r for r in rows if r["scheme"] == scheme and r["knob"] == "none"]
            mine = [r for r in rows if r["scheme"] == scheme and r["knob"] == knob]
            if not mine:
                continue
            table = [{knob: float(r["value"]) if r["knob"] == knob else 0.0, "seed": int(r["seed"]),
                      **{f: float(r[f]) for f in FIELDS[4:]}} for r in base + mine]
            out.setdefault(knob, {})[scheme] = SweepTable(table)
    return out


def report(command):
    """Write the table (mean +- std over seeds) and one figure per knob."""
    lines = ["Robustness of the four codes to biophysical perturbations (benchmarks/robustness.py)",
             f"command: {command}",
             f"brianconv commit: {_commit()}",
             "model: lopez_randulfe_cnn (bundled); data: the first images of the MNIST test set (count below), "
             "calibration on 500 training images; device cpp_standalone",
             f"schemes: {SCHEMES}",
             "sigma_v: white membrane noise per step as a fraction of the threshold; p_fail: probability that a "
             "transmission fails; sigma_w: multiplicative weight noise (fixed per synapse). Mean +- std over seeds.",
             ""]
    for knob, by_scheme in tables().items():
        lines.append(f"accuracy (%) against {knob}")
        values = sorted({row[knob] for t in by_scheme.values() for row in t})
        lines.append(f"{'scheme':<8}" + "".join(f"{v:>16g}" for v in values))
        for scheme, table in by_scheme.items():
            summary = {row[knob]: row for row in table.summary("seed")}
            cells = [f"{100 * summary[v]['accuracy']:>9.1f} +- {100 * summary[v]['accuracy_std']:<4.1f}"
                     if v in summary else f"{'':>16}" for v in values]
            lines.append(f"{scheme:<8}" + "".join(cells))
        lines.append(f"{'':<8}spikes per neuron / synaptic ops per image at the largest value:")
        for scheme, table in by_scheme.items():
            summary = table.summary("seed")
            top = max(summary, key=lambda row: row[knob])
            bottom = min(summary, key=lambda row: row[knob])
            lines.append(f"{'':<8}{scheme:<6} {bottom['spikes_per_neuron']:.3f} -> {top['spikes_per_neuron']:.3f} "
                         f"spikes/neuron, {bottom['synaptic_ops']:,.0f} -> {top['synaptic_ops']:,.0f} ops")
        lines.append("")
        fig = plot.robustness_curves(by_scheme, knob, chance=0.1)
        fig.axes[0].set_xscale("symlog", linthresh=min(v for v in values if v > 0))
        fig.axes[0].set_ylabel("accuracy")
        fig.savefig(ROOT / "figures" / f"robustness_{knob}.png", dpi=120)
    (ROOT / "results" / "robustness.txt").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=ROOT).stdout.strip()
    except OSError:
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="first N images of the MNIST test set")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--schemes", nargs="+", default=list(SCHEMES))
    parser.add_argument("--knobs", nargs="+", default=list(GRID))
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    command = "python benchmarks/robustness.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if not args.report_only:
        x, y = datasets.load_mnist("test", limit=args.images)
        calibration, _ = datasets.load_mnist("train", limit=500)
        for method in args.schemes:
            run_scheme(method, SCHEMES[method], x, y, calibration, args.seeds, args.knobs, args.n_workers)
    report(command)


if __name__ == "__main__":
    main()
