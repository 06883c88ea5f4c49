"""Robustness study: which code survives which biological imperfection?

The López-Randulfe MNIST CNN (bundled ``lopez_randulfe_cnn``) is converted once per scheme and
knob with that knob compiled in (``convert(..., perturbations=(knob,))``, which adds ``seed``); every value and
seed of the knob is then a run of the same compiled C++ program. For each perturbation
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

from brian2 import ms  # noqa: E402

import brianconv  # noqa: E402
from brianconv import datasets, models, plot  # noqa: E402
from brianconv.sweep import SweepTable  # noqa: E402

ROOT = Path(__file__).resolve().parent
CSV = ROOT / "results" / "robustness.csv"
#: Scheme -> options: the settings of the repository's MNIST benchmarks (rate: 100 steps).
SCHEMES = {"ttfs": dict(t_max=32), "amos": dict(K=10), "tdsnn": dict(L=8.0), "rate": dict(duration=100)}
#: Knob -> values (the unperturbed point is run once per scheme and shared by every knob).
#: sigma_v and sigma_th are fractions of the threshold (sigma_v per step); p_fail a probability per
#: transmission; sigma_w a relative weight noise; tau_m, t_ref and sigma_delay in ms (dt: 1 ms for rate, 0.1 ms
#: for the others); weight_bits in bits.
GRID = {"sigma_v": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0], "p_fail": [0.1, 0.3, 0.6, 0.9],
        "sigma_w": [0.1, 0.3, 1.0, 3.0], "sigma_delay": [0.05, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0],
        "sigma_th": [0.03, 0.1, 0.3, 1.0], "tau_m": [1000.0, 300.0, 100.0, 50.0, 30.0, 20.0, 10.0, 3.0],
        "t_ref": [1.0, 3.0, 10.0, 30.0], "weight_bits": [8, 6, 4, 3, 2]}
#: Knobs that draw nothing: one seed is the whole answer.
DETERMINISTIC = ("tau_m", "t_ref", "weight_bits")
#: Knob -> (x-axis label, raw value -> x) where the raw value does not grow with the perturbation.
AXIS = {"tau_m": ("leak rate 1/tau_m (1/ms)", lambda tau: 1.0 / tau),
        "t_ref": ("refractory period t_ref (ms)", lambda t: t),
        "sigma_delay": ("synaptic delay jitter sigma_delay (ms; dt: rate 1 ms, others 0.1 ms)", lambda t: t),
        "weight_bits": ("weight step, fraction of the layer's largest |w|", lambda bits: 1.0 / (2 ** (bits - 1) - 1))}
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
    """The unperturbed network, then each knob's grid on the network with that knob compiled in.

    One program per knob, not one with every knob: a compiled-in knob costs its draws at every
    step or synaptic event even at its default value (e.g. sigma_w and p_fail draw per event), and
    with all of them the CNN runs tens of times slower. At its default each knob reproduces the
    unperturbed spikes exactly (tests/test_perturbations.py), so the baseline is shared.
    """
    model = models.load("lopez_randulfe_cnn")
    batch_size = -(-len(x) // n_workers)  # one batch per process
    done = done_points()
    unsupported = brianconv.schemes.get(method)(**options).unsupported_perturbations()
    plan = [("none", [(0.0, 0)])]
    plan += [(k, [(v, s) for v in GRID[k] for s in (seeds[:1] if k in DETERMINISTIC else seeds)])
             for k in knobs if k not in unsupported]
    for knob, points in plan:
        todo = [(v, s) for v, s in points if (method, knob, float(v), s) not in done]
        if not todo:
            continue
        snn = brianconv.convert(model, method, calibration=calibration,
                                perturbations=None if knob == "none" else (knob,), **options)
        for value, seed in todo:
            parameters = {} if knob == "none" else {knob: run_value(knob, value), "seed": seed}
            start = time.perf_counter()
            result = snn.simulate(x, labels=y, device="cpp_standalone", n_workers=n_workers, batch_size=batch_size,
                                  **parameters)
            append(dict(scheme=method, knob=knob, value=value, seed=seed, accuracy=result.accuracy,
                        agreement=result.agreement, spikes_per_neuron=result.spikes_per_neuron,
                        synaptic_ops=float(np.mean(result.synaptic_ops)), ann_accuracy=result.ann_accuracy))
            print(f"{method:<6} {knob:<11} {value:<6} seed {seed}: accuracy {100 * result.accuracy:.1f} % "
                  f"({time.perf_counter() - start:.0f} s, compiled {result.timing['compiled']})", flush=True)


def run_value(knob, value):
    """The grid value as ``simulate`` takes it (times in ms as Brian2 quantities, bits as int)."""
    if knob in ("tau_m", "t_ref", "sigma_delay"):
        return value * ms
    return int(value) if knob == "weight_bits" else value


def axis_value(knob, value):
    """Where a grid value sits on its figure's x axis (0 = unperturbed)."""
    return AXIS[knob][1](value) if knob in AXIS else value


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
            table = [{knob: axis_value(knob, float(r["value"])) if r["knob"] == knob else 0.0, "seed": int(r["seed"]),
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
             "transmission fails; sigma_w: multiplicative weight noise (fixed per synapse); sigma_th: threshold "
             "mismatch (fixed per neuron) as a fraction of the threshold; tau_m: membrane leak time constant; t_ref: "
             "refractory period; sigma_delay: synaptic delay jitter, each synapse round(|g| sigma_delay / dt) steps "
             "late (fixed per synapse; a spike pushed past its image's period is lost); "
             "weight_bits: weights rounded to 2^(bits-1)-1 levels per sign of the layer's largest "
             "|w|. Mean +- std over seeds (tau_m, t_ref and weight_bits draw nothing: one seed).",
             ""]
    for scheme, options in SCHEMES.items():
        for knob, reason in brianconv.schemes.get(scheme)(**options).unsupported_perturbations().items():
            lines.append(f"{scheme} takes no {knob}: {reason}")
    lines.append("")
    for knob, by_scheme in tables().items():
        label = AXIS[knob][0] + f" (from {knob})" if knob in AXIS else knob
        lines.append(f"accuracy (%) against {label}")
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
        fig.axes[0].set_xlim(left=0)
        fig.axes[0].set_ylabel("accuracy")
        fig.axes[0].set_xlabel(AXIS[knob][0] if knob in AXIS else knob)
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
