"""AMOS conversion (Stöckl & Maass 2020) on MNIST: accuracy against the ANN, spikes per image,
neurons and parameters added (the paper's Table 3), and throughput in pipelined mode.

    python benchmarks/amos_mnist.py                        # small_cnn, K = 10, first 1,000 test images
    python benchmarks/amos_mnist.py --images 200 --model mlp
    python benchmarks/amos_mnist.py --model lopez_randulfe_cnn  # prints why it is not simulated
    python benchmarks/amos_mnist.py --model small_cnn_silu      # trained SiLU units (K = 12)

The full MNIST is looked up in ``--data``, ``$BRIANCONV_DATA`` or ``../shared/data/mnist`` (the
bundled 1,000 test images otherwise). The network runs in C++ standalone, pipelined (a new image
every step), in batches of ``--batch`` images each followed by ``K`` padding images, so that the
per-image counters, read at window edges, cover the late neurons of every real image (the spike
monitors attribute each spike to its image exactly either way, see ``AMOS.evaluation_lags``).
Every number printed is measured in this run.

The paper's unit sends each source neuron's spike to each of the ``K`` neurons of every target
unit, so a layer with ``F`` ANN connections has ``K_s K_t F`` synapses; networks above
``--max-synapses`` are not built (``lopez_randulfe_cnn`` with K = 10 needs about 3.3e8, and its
max-pooling is not supported yet).
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import brianconv
from brianconv import datasets, models
from brianconv.connectivity import connections_for
from brianconv.graph import trace
from brianconv.schemes.amos import UNIT_DIR, load_unit, relu_unit, sent_values, synapse_count

PAPER_TABLE3 = {"sigmoid (K=8)": 52, "ReLU (K=10)": 75, "Swish (K=12)": 102, "Mult (K=40)": 940}


def load_data(args):
    shared = [Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"]
    x, y, source = datasets.load_mnist_or_sample("test", args.data, args.images, shared)
    xc, _, _ = datasets.load_mnist_or_sample("train", args.data, None, shared)
    return x, y, xc[-args.calibration:], source


def unit_size(layer, K):
    """Neurons per AMOS unit of a hidden layer: ``K`` for ReLU, the trained unit's own K otherwise."""
    return K if layer.activation == "relu" else load_unit(layer.activation).K


def estimated_synapses(graph, K):
    """Synapses of the AMOS network with ReLU units of K neurons (trained units: their own K), without building it.

    Feedforward: ``K_s K_t F`` per weighted layer (``K_s = 1`` from the analog input, ``K_t = 1`` into
    the output); inhibition ``n K (K - 1) / 2`` per hidden layer. Average pooling is counted as
    composed with the next layer only approximately (its own connections).
    """
    total, k_of = 0, {graph.input.name: 1}
    for layer in graph.layers[1:]:
        k_source = k_of[layer.inputs[0]]
        if layer.op in ("avgpool", "maxpool"):
            k_of[layer.name] = k_source
            continue
        fan = len(connections_for(layer)[0])
        k_target = 1 if layer is graph.output else unit_size(layer, K)
        inhibition = 0 if layer is graph.output else layer.size * k_target * (k_target - 1) // 2
        total += k_source * k_target * fan + inhibition
        k_of[layer.name] = k_target
    return total


def outside_domain(snn, values):
    """Per hidden layer with a trained unit: ``(name, gate, domain, fraction of pre-activations outside it)``.

    ``values`` are the per-layer outputs of ``snn.scheme.reference``; each layer's pre-activations are
    recomputed from what its inputs send, i.e. what the SNN's units receive.
    """
    rows = []
    for layer in snn.graph.layers[1:]:
        if layer.activation in (None, "relu") or layer is snn.graph.output:
            continue
        with np.load(Path(snn.scheme.options["unit_dir"] or UNIT_DIR) / f"amos_{layer.activation}.npz") as data:
            low, high = data["domain"]
        with torch.no_grad():
            z = layer.pre_activation(*(torch.as_tensor(values[name]) for name in layer.inputs)).numpy()
        rows.append((layer.name, layer.activation, (low, high), np.mean((z < low) | (z > high)),
                     np.mean(z < low), np.mean(z > high)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--images", type=int, default=1000, help="test images (default 1,000)")
    parser.add_argument("--calibration", type=int, default=1000, help="training images used for calibration")
    parser.add_argument("--percentile", type=float, default=100.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=100, help="real images per run (K padding images are added)")
    parser.add_argument("--max-synapses", type=float, default=5e7)
    parser.add_argument("--data", default=None)
    parser.add_argument("--build-dir", default=None)
    args = parser.parse_args()
    model = models.load(args.model)
    x, y, xc, source = load_data(args)
    graph = trace(model, x.shape[1:])
    estimate = estimated_synapses(graph, args.K)
    print(f"{args.model}: {len(x)} test images from the {source}; calibration on {len(xc)} training images; "
          f"K = {args.K}, percentile {args.percentile}")
    print(f"estimated synapses with K = {args.K} (ReLU; trained units: their own K): {estimate:,.0f} (the ANN has "
          f"{sum(len(connections_for(layer)[0]) for layer in graph if layer.is_weighted):,} connections)")
    if any(layer.op == "maxpool" for layer in graph) or estimate > args.max_synapses:
        print("not simulated: " + ("max-pooling is not supported by amos yet; " if any(
            layer.op == "maxpool" for layer in graph) else "") +
              f"{estimate:,.0f} synapses > --max-synapses {args.max_synapses:,.0f}.")
        return

    start = time.perf_counter()
    snn = brianconv.convert(model, "amos", calibration=xc, K=args.K, percentile=args.percentile)
    d = snn.description
    convert_seconds = time.perf_counter() - start
    counts = synapse_count(d)
    print(f"converted in {convert_seconds:.1f} s: {d.n_neurons:,} neurons, {d.n_synapses:,} synapses "
          f"({counts['feedforward']:,} feedforward, {counts['inhibition']:,} inhibition), "
          f"{len(d.projections)} projections")
    for p in d.populations:
        print(f"  {p.name:<14}{p.size:>9,} neurons  {p.role:<7} window starts at step {p.window_start}")

    # batches of real images, each followed by K padding images (copies of its first image)
    pad = max(int(v[1]) for v in d.options["units"].values())
    chunks = [x[i:i + args.batch] for i in range(0, len(x), args.batch)]
    padded = np.concatenate([np.concatenate([c, np.repeat(c[:1], pad + args.batch - len(c), axis=0)]) for c in chunks])
    real = np.concatenate([np.arange(len(c)) + k * (args.batch + pad) for k, c in enumerate(chunks)])
    is_real = np.zeros(len(padded), dtype=bool)
    is_real[real] = True
    spiking = [p.name for p in d.populations if p.threshold]
    result = snn.simulate(padded, device="cpp_standalone", batch_size=args.batch + pad, n_workers=args.workers,
                          build_root=args.build_dir, spikes=spiking)
    outputs = result.outputs[real]
    predictions = outputs.argmax(axis=1)
    ann = snn.graph.forward(x)
    reference, values = snn.scheme.reference(snn.graph, snn.calibration, x)
    # spikes per real image, from the monitors
    spikes = {}
    for p in d.populations:
        if not p.threshold:
            continue
        if p.role == "input":
            image, _, _ = result.spikes[p.name]
            per_image = np.bincount(image, minlength=len(padded))
        else:
            unit = snn.scheme.unit_for(snn.graph[p.layer], snn.calibration)
            _, per_neuron = sent_values(result, d, p.name, unit, len(padded))
            assert per_neuron.max() <= 1, f"{p.name}: a neuron fired twice for one image"
            per_image = per_neuron.sum(axis=1)
        spikes[p.name] = per_image[real]
    total_spikes = sum(spikes.values())
    steps_per_run = d.duration_steps(args.batch + pad)

    ann_accuracy = 100 * np.mean(ann.argmax(1) == y)
    snn_accuracy = 100 * np.mean(predictions == y)
    ann_neurons = sum(layer.size for layer in snn.graph.layers[1:] if layer.op != "avgpool")
    print(f"\nbuild {result.timing['build']:.1f} s, simulation {result.timing['simulate']:.1f} s "
          f"({len(x) / result.timing['simulate']:.1f} images/s wall clock, {args.workers} worker(s))")
    print(f"\n{'ANN accuracy (%)':<52}{ann_accuracy:>12.2f}")
    print(f"{'SNN accuracy (%)':<52}{snn_accuracy:>12.2f}")
    print(f"{'accuracy loss (percentage points; goal <= 0.1)':<52}{ann_accuracy - snn_accuracy:>12.2f}")
    print(f"{'SNN/ANN prediction agreement (%)':<52}{100 * np.mean(predictions == ann.argmax(1)):>12.2f}")
    print(f"{'max |SNN - numpy AMOS reference| of the logits':<52}{np.max(np.abs(outputs - reference)):>12.2e}")
    print(f"{'max |SNN - ANN| of the logits':<52}{np.max(np.abs(outputs - ann)):>12.3f}")
    print(f"{'spikes per image (all, incl. input events)':<52}{total_spikes.mean():>12,.0f}")
    print(f"{'spikes per neuron and image':<52}{total_spikes.mean() / d.n_neurons:>12.4f}")
    print(f"{'neurons: ANN (hidden + output) / SNN (incl. input)':<52}{ann_neurons:>6,} / {d.n_neurons:,}")
    print(f"{'synapses: ANN connections / SNN':<52}"
          f"{sum(len(connections_for(layer)[0]) for layer in snn.graph if layer.is_weighted):>6,} / {d.n_synapses:,}")
    print(f"{'images per simulated step, pipelined ({} per run)'.format(args.batch + pad):<52}"
          f"{(args.batch + pad) / steps_per_run:>12.3f}")
    print(f"{'latency: steps from input to logits':<52}{d.populations[-1].window_start:>12}")
    print("\nparameters added per unit type (paper Table 3 in brackets); ReLU units of different layers share them "
          "up to one scale alpha per layer:")
    n_relu = sum(1 for layer in snn.graph if layer.activation == "relu" and layer is not snn.graph.output)
    if n_relu:
        relu = relu_unit(args.K, 1.0)
        print(f"  ReLU (K={args.K}): {relu.n_parameters} (paper, K=10: {PAPER_TABLE3['ReLU (K=10)']}) "
              f"+ {n_relu} scales")
    for gate, paper in (("silu", "Swish (K=12)"), ("sigmoid", "sigmoid (K=8)")):
        if any(layer.activation == gate for layer in snn.graph):
            unit = load_unit(gate, snn.scheme.options["unit_dir"])
            print(f"  {gate} (K={unit.K}, trained, shared by all layers): {unit.n_parameters} "
                  f"(paper, {paper}: {PAPER_TABLE3[paper]})")
    rows = outside_domain(snn, values)
    if rows:
        print("\npre-activations outside the trained unit's domain (the unit's output stays at its edge value there),"
              f" on the {len(x)} simulated images:")
        for name, gate, (low, high), outside, below, above in rows:
            print(f"  {name:<14}{gate:<8}[{low:g}, {high:g}]  outside {100 * outside:7.3f} %  "
                  f"(below {100 * below:.3f} %, above {100 * above:.3f} %)")
    print("\nper population: neurons, spikes per image, spikes per neuron and image")
    for name, count in spikes.items():
        size = d.population(name).size
        print(f"  {name:<14}{size:>9,}{count.mean():>12,.1f}{count.mean() / size:>10.4f}")


if __name__ == "__main__":
    main()
