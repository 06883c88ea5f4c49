"""Efficiency factor (ANN cost / SNN synaptic-operation cost) against network depth on MNIST.

Tests, on our own nets, the observation of Niederlechner's report *Efficiency of spiking neural
networks* (TU Vienna, 2019; Sec. 2.2, 3.2, 3.3 and Tables 1-2): the
factor of a rate-converted SNN falls quickly as convolution and dense layers are added
(their MNIST factors: SmallCNN1 46.4, MediumCNN1 3.05, LargeCNN1 0.42, DeepCNN1 0.22).

Measured here (``benchmarks/results/efficiency_depth.txt``): the Small net matches the report
(factor 42.4 against 46.4), but the steep fall with depth is NOT reproduced: up to the threshold
step the factors are 42.4, 40.8, 60.0 and 22.4 (Small, Medium, Large, Deep); at 100 steps 4.7,
1.2, 1.9 and 1.9. Depth costs latency here (the Deep net needs 11 steps, the others 4-8) and the
extra dense layers cost operations, but our synaptic operations per MAC up to the threshold stay
at 0.25-0.67 where the report's grow from 0.3 to 68. The report does not define its error
threshold or operation count precisely enough to tell where the difference comes from.

    python benchmarks/efficiency_depth.py                       # defaults below
    python benchmarks/efficiency_depth.py --images 500 --epochs 3 --out /tmp/efficiency_depth

Four ``nn.Sequential`` CNNs follow the pattern of the report's Table 1 (Small: 1 conv + 1 dense;
Medium: 2 conv + 1 dense; Large: two "Type II" bundles of two convs + 1 dense; Deep: the same four
convs + 3 dense); every bundle is Conv2d 3x3 -> ReLU [-> Conv2d 3x3 -> ReLU] -> MaxPool2d(2) ->
Dropout. Each net is trained with a fixed seed on the 60,000 MNIST training images (Adam,
one-cycle schedule); the weights are cached in ``--out`` so that a rerun skips training. Each net
is converted with ``brianconv.convert(model, "rate", calibration=<500 training images>,
duration=100)`` (99.9th-percentile normalisation, 100 steps of 1 ms as in the report) and the
first ``--images`` test images are simulated in C++ standalone with the output and the
synaptic operations recorded at every step.

Threshold step: the first step ``k`` from which the SNN accuracy (argmax of the output at step
``k``) stays within 1 percentage point of the ANN accuracy on the same images up to step 100.
The report accumulates the synaptic operations "up to the first time step reaching the error
threshold"; we read them from ``result.synaptic_ops_trace`` at that step (every population
counted over the first ``k`` steps of its own window; the windows of deeper layers start one
step later per layer).

Costs, two conventions:

(a) the report's: Total-Costs = 7.5 x FLOPs, because half of all FLOPs are MACs that cost 14
    synaptic operations each and the other half cost 1 ((14 + 1) / 2 = 7.5; their rows give
    6.030/0.80 = 7.5, 8.239/1.10 = 7.5, 3.245/0.43 = 7.5, 3.642/0.49 = 7.4). With brianconv's
    FLOPs = 2 x MACs (connection FLOPs only) this is 15 x MACs; an SNN synaptic operation costs 1.
    factor_a = 15 * MACs / synaptic ops.
(b) brianconv's 45 nm energy model: factor_b = MACs * ENERGY_PER_MAC / (synops * ENERGY_PER_AC)
    = 5.1 x MACs / synaptic ops (``brianconv.metrics.efficiency``).

The analog input's one-time current set-up (one event per non-zero pixel, fanned out over the
first layer's synapses) counts among the SNN's synaptic operations.

Measured wall time (two cores shared with other jobs, load average about 6, default settings):
about 23 minutes from scratch (training 2 epochs: small 131 s, medium 184 s, large 268 s, deep
236 s; compilation 56-113 s per net; simulation of 300 images 4-116 s per net), 5.8 minutes
(347 s) with the trained weights cached in ``--out`` (four compilations and simulations), the run
whose output is ``benchmarks/results/efficiency_depth.txt``.
"""

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from provenance import header
from torch import nn

import brianconv
from brianconv import datasets
from brianconv.metrics import ENERGY_PER_AC, ENERGY_PER_MAC, ann_cost

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "models"))
from train import accuracy, seed_everything, train_epoch  # noqa: E402

#: The report's MNIST rows (Table 1 and Table 2): trainable layers (conv, dense), parameters, ANN
#: accuracy (%), MFlops, Total-Costs, SNN accuracy (%), SO-Costs (million, a range), factor.
REPORT = {
    "SmallCNN1": dict(conv=1, dense=1, params=347_146, ann=98.75, mflops=0.80, total=6.030, snn=98.80,
                      so="0.1-0.15", factor=46.38),
    "MediumCNN1": dict(conv=2, dense=1, params=356_394, ann=98.99, mflops=1.10, total=8.239, snn=99.00,
                       so="2.5-3", factor=3.05),
    "LargeCNN1": dict(conv=4, dense=1, params=136_238, ann=99.37, mflops=0.43, total=3.245, snn=98.67,
                      so="7.5-8", factor=0.42),
    "DeepCNN1": dict(conv=4, dense=3, params=70_410, ann=99.40, mflops=0.49, total=3.642, snn=98.33,
                     so="15-18", factor=0.22),
}
#: The report's cost convention: Total-Costs per FLOP (half MACs at 14, half at 1).
REPORT_COST_PER_FLOP = 7.5
#: Percentage points of accuracy the SNN may stay below the ANN from the threshold step on.
TOLERANCE_PP = 1.0


def bundle(c_in, c_out, convs, dropout):
    """A convolution bundle: ``convs`` (1: Type I, 2: Type II) Conv2d 3x3 + ReLU, MaxPool2d(2), Dropout."""
    layers = []
    for k in range(convs):
        layers += [nn.Conv2d(c_in if k == 0 else c_out, c_out, kernel_size=3), nn.ReLU()]
    return layers + [nn.MaxPool2d(2), nn.Dropout(dropout)]


def small_cnn():
    """1 conv + 1 dense: 1x28x28 -> conv 16x26x26 -> pool 16x13x13 -> Linear(2704, 10)."""
    return nn.Sequential(*bundle(1, 16, 1, 0.25), nn.Flatten(), nn.Linear(16 * 13 * 13, 10))


def medium_cnn():
    """2 conv + 1 dense: conv 16x26x26 -> pool 16x13x13 -> conv 32x11x11 -> pool 32x5x5 -> Linear(800, 10)."""
    return nn.Sequential(*bundle(1, 16, 1, 0.25), *bundle(16, 32, 1, 0.25), nn.Flatten(),
                         nn.Linear(32 * 5 * 5, 10))


def _large_features():
    """Two Type II bundles: conv 16x26x26, 16x24x24 -> pool 16x12x12 -> conv 32x10x10, 32x8x8 -> pool 32x4x4."""
    return [*bundle(1, 16, 2, 0.25), *bundle(16, 32, 2, 0.25), nn.Flatten()]


def large_cnn():
    """4 conv + 1 dense: the two Type II bundles -> Linear(512, 10)."""
    return nn.Sequential(*_large_features(), nn.Linear(32 * 4 * 4, 10))


def deep_cnn():
    """4 conv + 3 dense: the two Type II bundles -> Linear(512, 128) -> Linear(128, 64) -> Linear(64, 10)."""
    return nn.Sequential(*_large_features(), nn.Linear(32 * 4 * 4, 128), nn.ReLU(), nn.Dropout(0.25),
                         nn.Linear(128, 64), nn.ReLU(), nn.Dropout(0.25), nn.Linear(64, 10))


#: Our net -> (constructor, the report's net it stands for).
NETS = {"small": (small_cnn, "SmallCNN1"), "medium": (medium_cnn, "MediumCNN1"),
        "large": (large_cnn, "LargeCNN1"), "deep": (deep_cnn, "DeepCNN1")}


def layer_counts(model):
    """(number of Conv2d layers, number of Linear layers) of a Sequential."""
    return (sum(isinstance(m, nn.Conv2d) for m in model), sum(isinstance(m, nn.Linear) for m in model))


def trainable_parameters(model):
    """Number of trainable scalars (weights and biases)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def load_data(args):
    """Test images/labels (N, 1, 28, 28) float32 in [0, 1] / (N,) int64, and the training set."""
    shared = [HERE.parents[1] / "shared" / "data" / "mnist"]
    test_x, test_y, source = datasets.load_mnist_or_sample("test", args.data, None, shared)
    train_x, train_y, train_source = datasets.load_mnist_or_sample("train", args.data, None, shared)
    return train_x, train_y, test_x, test_y, f"{train_source}; {source}"


def train(model, train_x, train_y, args):
    """Train ``model`` in place (Adam, one-cycle schedule, cross-entropy); returns wall seconds."""
    seed_everything(args.seed)
    x, y = torch.from_numpy(train_x), torch.from_numpy(train_y)
    generator = torch.Generator().manual_seed(args.seed)
    steps = args.epochs * math.ceil(len(x) / args.train_batch)
    optimiser = torch.optim.Adam(model.parameters(), lr=args.lr / 25)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=steps)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        loss = train_epoch(model, optimiser, schedule, x, y, args.train_batch, False, generator)
        print(f"    epoch {epoch}/{args.epochs}: loss {loss:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return time.perf_counter() - start


def trained_model(name, train_x, train_y, args):
    """The trained net ``name`` (eval mode), from the cache in ``--out`` or trained and cached now.

    Returns (model, training wall seconds or None if the cache was used).
    """
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}_seed{args.seed}_ep{args.epochs}.pt"
    seed_everything(args.seed)
    model = NETS[name][0]()
    if path.is_file():
        model.load_state_dict(torch.load(path))
        seconds = None
    else:
        seconds = train(model, train_x, train_y, args)
        torch.save({k: v.float() for k, v in model.state_dict().items()}, path)
        (out / f"{path.stem}.json").write_text(json.dumps(dict(training_wall_time_s=round(seconds, 1),
                                                               epochs=args.epochs, seed=args.seed)) + "\n")
    return model.eval(), seconds


def steps_to_stay_within(curve, target):
    """First step count k (1-based) from which ``curve[k-1:] >= target`` holds, or None."""
    below = np.nonzero(curve < target)[0]
    if len(below) == 0:
        return 1
    return None if below[-1] == len(curve) - 1 else int(below[-1]) + 2


def simulate(model, x, y, calibration, args):
    """Convert with the rate scheme and simulate ``x``; returns (snn, SimulationResult, wall seconds)."""
    start = time.perf_counter()
    snn = brianconv.convert(model, "rate", calibration=calibration, duration=args.duration)
    result = snn.simulate(x, labels=y, device="cpp_standalone", n_workers=args.workers, batch_size=args.batch,
                          trace=True, build_root=args.build_dir)
    return snn, result, time.perf_counter() - start


def measure(name, model, snn, result, test_accuracy, seconds):
    """One table row: accuracies (%), threshold step, synaptic ops (per image) and factors."""
    curve = 100 * np.mean(result.output_trace.argmax(-1) == result.labels[:, None], axis=0)
    ann_subset = 100 * result.ann_accuracy
    reach = steps_to_stay_within(curve, ann_subset - TOLERANCE_PP)
    ops_trace = result.synaptic_ops_trace.mean(axis=0)   # (steps,) mean over images
    macs = ann_cost(model, input_shape=(1, 28, 28)).macs
    ops_reach = float(ops_trace[reach - 1]) if reach is not None else float("nan")
    ops_end = float(ops_trace[-1])
    convs, dense = layer_counts(model)
    return dict(name=name, report=NETS[name][1], convs=convs, dense=dense, params=trainable_parameters(model),
                ann_test=test_accuracy, ann_subset=ann_subset, snn_end=float(curve[-1]), reach=reach,
                ops_reach=ops_reach, ops_end=ops_end, macs=macs, flops=2 * macs,
                factor_a=REPORT_COST_PER_FLOP * 2 * macs / ops_reach,
                factor_a_end=REPORT_COST_PER_FLOP * 2 * macs / ops_end,
                factor_b=macs * ENERGY_PER_MAC / (ops_reach * ENERGY_PER_AC),
                factor_b_end=macs * ENERGY_PER_MAC / (ops_end * ENERGY_PER_AC),
                input_ops=float(result.synaptic_ops_per_population[snn.description.input_population].mean()),
                curve=curve, ops_trace=ops_trace, seconds=seconds)


def print_report_check():
    """The arithmetic of the report's Table 2: Total-Costs / MFlops and the implied SO-Costs."""
    print("Report's Table 2 (MNIST), arithmetic check of its cost convention:")
    print(f"  {'net':<11}{'MFlops':>8}{'Total':>8}{'Total/MFlops':>14}{'SO range (M)':>14}"
          f"{'factor':>8}{'Total/factor (M SO)':>21}")
    for net, r in REPORT.items():
        print(f"  {net:<11}{r['mflops']:>8.2f}{r['total']:>8.3f}{r['total'] / r['mflops']:>14.2f}{r['so']:>14}"
              f"{r['factor']:>8.2f}{r['total'] / r['factor']:>21.3f}")
    print("  -> Total-Costs = 7.5 x MFlops (half the FLOPs are MACs at 14, half cost 1), factor = Total-Costs /"
          " SO-Costs\n     with SO-Costs in million synaptic operations at cost 1 each.\n")


def print_table(rows, n_images):
    """The main table (one line per net) and the factors next to the report's."""
    print(f"\nResults on the first {n_images} MNIST test images (ops and MACs per image). Threshold step: first step "
          f"from which the SNN accuracy\nstays >= ANN accuracy on the same images - {TOLERANCE_PP:g} pp up to the "
          f"last step; ops@thr = synaptic operations accumulated up to it.")
    head = (f"{'net':<8}{'conv':>5}{'dense':>6}{'params':>9}{'ANN test':>9}{'ANN sub':>8}{'SNN@100':>8}"
            f"{'thr':>5}{'ops@thr':>12}{'ops@100':>12}{'MACs':>11}{'fac(a)':>8}{'fac(a)@100':>11}{'fac(b)':>8}"
            f"{'fac(b)@100':>11}{'report':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        reach = f"{r['reach']:>5}" if r["reach"] is not None else f"{'n/a':>5}"
        print(f"{r['name']:<8}{r['convs']:>5}{r['dense']:>6}{r['params']:>9,}{r['ann_test']:>9.2f}"
              f"{r['ann_subset']:>8.2f}{r['snn_end']:>8.2f}{reach}{r['ops_reach']:>12,.0f}{r['ops_end']:>12,.0f}"
              f"{r['macs']:>11,}{r['factor_a']:>8.2f}{r['factor_a_end']:>11.2f}{r['factor_b']:>8.2f}"
              f"{r['factor_b_end']:>11.2f}{REPORT[r['report']]['factor']:>8.2f}")
    print("\nANN test: accuracy (%) on the 10,000 test images; ANN sub / SNN@100: on the simulated images (SNN after "
          "100 steps).\nfac(a) = 7.5 x FLOPs / synaptic ops = 15 x MACs / synaptic ops (report's convention); fac(b) "
          f"= MACs x {ENERGY_PER_MAC * 1e12:.1f} pJ / (synaptic ops x {ENERGY_PER_AC * 1e12:.1f} pJ) (brianconv 45 nm "
          "energies);\nwithout '@100': ops up to the threshold step; 'report': the report's MNIST factor "
          "(Small/Medium/Large/DeepCNN1).")


def print_curves(rows, steps=(1, 2, 3, 5, 10, 20, 50, 100)):
    """SNN accuracy (%) and mean synaptic ops per image after selected step counts."""
    print("\nSNN accuracy (%) / mean synaptic operations per image (thousands) after k steps:")
    print(f"  {'net':<8}" + "".join(f"{'k=' + str(k):>16}" for k in steps))
    for r in rows:
        cells = [f"{r['curve'][k - 1]:6.2f}/{r['ops_trace'][k - 1] / 1e3:9,.0f}" for k in steps
                 if k <= len(r["curve"])]
        print(f"  {r['name']:<8}" + "".join(f"{c:>16}" for c in cells))


def print_sensitivity(rows, fixed=(10, 50)):
    """Factor (a) under other readings of the report's SO-Costs: ops at fixed step counts, and ops to the
    threshold step if the analog input's one-time current set-up were paid in every step."""
    print("\nSensitivity of factor (a) = 15 x MACs / synaptic ops to what is counted:")
    print(f"  {'net':<8}{'input set-up ops':>17}" + "".join(f"{'ops@' + str(k):>13}{'fac(a)@' + str(k):>11}"
                                                       for k in fixed) + f"{'fac(a), input every step':>26}")
    for r in rows:
        cells = "".join(f"{r['ops_trace'][k - 1]:>13,.0f}{15 * r['macs'] / r['ops_trace'][k - 1]:>11.2f}"
                        for k in fixed if k <= len(r["ops_trace"]))
        repeated = (r["ops_reach"] + (r["reach"] - 1) * r["input_ops"]) if r["reach"] is not None else float("nan")
        print(f"  {r['name']:<8}{r['input_ops']:>17,.0f}{cells}{15 * r['macs'] / repeated:>26.2f}")
    print("  (input every step: ops to the threshold step plus (step - 1) more input set-ups, i.e. as if the first "
          "layer's\n  input multiply-accumulates were repeated in every step instead of setting a constant current "
          "once.)")


def figure(rows, path):
    """Factor against the number of trainable layers (log y): ours (both conventions) and the report's."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = [r["convs"] + r["dense"] for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 4.2), constrained_layout=True)
    report = [REPORT[r["report"]] for r in rows]
    ax.plot([p["conv"] + p["dense"] for p in report], [p["factor"] for p in report], "ks--",
            label="Niederlechner, MNIST (Table 2)")
    ax.plot(depth, [r["factor_a"] for r in rows], "o-", color="C0", label="ours, report's convention (15 x MACs / SO)")
    ax.plot(depth, [r["factor_b"] for r in rows], "^-", color="C1", label="ours, 45 nm energies (5.1 x MACs / SO)")
    ax.plot(depth, [r["factor_a_end"] for r in rows], "o:", color="C0", alpha=0.5,
            label="ours, report's convention, ops at 100 steps")
    for r, d in zip(rows, depth):
        ax.annotate(r["name"], (d, r["factor_a"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.axhline(1, color="grey", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(sorted(set(depth)))
    ax.set_xlabel("trainable layers (conv + dense)")
    ax.set_ylabel("efficiency factor (ANN cost / SNN cost)")
    ax.set_title(f"Rate-coded SNN efficiency against depth (MNIST, ops up to the\n{TOLERANCE_PP:g} pp threshold step)",
                 fontsize=10)
    ax.legend(fontsize=7.5)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"\nsaved {_shown(path)}")


def parse_args():
    """Command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300, help="test images simulated per net (the first ones)")
    parser.add_argument("--duration", type=int, default=100, help="steps of 1 ms per image")
    parser.add_argument("--calibration", type=int, default=500, help="training images for calibration (the last ones)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument("--workers", type=int, default=2, help="parallel standalone runs")
    parser.add_argument("--batch", type=int, default=150, help="images per run of the compiled program")
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--data", default=None, help="MNIST folder (default: $BRIANCONV_DATA or ../shared/data/mnist)")
    parser.add_argument("--out", default="/tmp/efficiency_depth", help="folder for the trained weights")
    parser.add_argument("--build-dir", default=None, help="folder for compiled programs (default: brianconv's)")
    parser.add_argument("--figures", default=str(HERE / "figures" / "efficiency_depth.png"))
    return parser.parse_args()


def _shown(path):
    """``path`` relative to the repository where it lies inside it, else its name: no machine's absolute path."""
    path = Path(path).resolve()
    return str(path.relative_to(HERE.parent)) if path.is_relative_to(HERE.parent) else path.name


def main():
    args = parse_args()
    print(header(__file__), flush=True)
    start = time.perf_counter()
    torch.set_num_threads(args.threads)
    train_x, train_y, test_x, test_y, source = load_data(args)
    x, y, calibration = test_x[:args.images], test_y[:args.images], train_x[-args.calibration:]
    print(f"data: {source}\nsimulating the first {len(x)} test images, calibration on the last {len(calibration)} "
          f"training images, {args.duration} steps of 1 ms, cpp_standalone, {args.workers} worker(s), "
          f"batches of {args.batch}\ntraining: {args.epochs} epoch(s) of Adam (one-cycle, peak lr {args.lr:g}, "
          f"batch {args.train_batch}), seed {args.seed}, weights cached in --out\n")
    print_report_check()
    rows = []
    for name in args.nets:
        model, train_seconds = trained_model(name, train_x, train_y, args)
        test_accuracy = accuracy(model, torch.from_numpy(test_x), torch.from_numpy(test_y))
        snn, result, seconds = simulate(model, x, y, calibration, args)
        row = measure(name, model, snn, result, test_accuracy, seconds)
        rows.append(row)
        trained = "cached weights" if train_seconds is None else f"trained in {train_seconds:.0f} s"
        print(f"{name} ({NETS[name][1]}): {trained}; ANN test accuracy {test_accuracy:.2f} %; "
              f"{snn.description.summary().splitlines()[0]}\n    conversion + build + simulation {seconds:.0f} s "
              f"(build {result.timing['build']:.0f} s, compiled: {result.timing['compiled']}, simulation "
              f"{result.timing['simulate']:.0f} s)", flush=True)
    print_table(rows, len(x))
    print_curves(rows)
    print_sensitivity(rows)
    figure(rows, args.figures)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
