"""AMOS conversion (Stöckl & Maass 2020) on MNIST: accuracy against the ANN, spikes per image,
neurons and parameters added (the paper's Table 3), and throughput in pipelined mode.

    python benchmarks/amos_mnist.py                                   # small_cnn, K = 10, 1,000 test images
    python benchmarks/amos_mnist.py --images 200 --model mlp
    python benchmarks/amos_mnist.py --model lopez_randulfe_cnn --images 10000   # max-pooling: dendrite wiring
    python benchmarks/amos_mnist.py --model small_cnn_silu           # trained SiLU units (K = 12)

The full MNIST is looked up in ``--data``, ``$BRIANCONV_DATA`` or ``../shared/data/mnist`` (the
bundled 1,000 test images otherwise). The network runs in C++ standalone, pipelined (a new image
every step). Two runs of the same converted network: all ``--images`` for accuracy (outputs
only), and the first ``--spike-images`` with every spike recorded, which the simulation
attributes to its image exactly (``AMOS.evaluation_lags``): spikes and synaptic operations per
image, at most one spike per neuron and image, and every layer's decoded output against the numpy
reference. Every number printed is measured in this run.

Wiring (``--wiring``, default ``paper`` unless the net max-pools): the paper's unit sends each
source neuron's spike to each of the ``K`` neurons of every target unit, so a layer with ``F``
ANN connections has ``K_s K_t F`` synapses (``lopez_randulfe_cnn`` with K = 10: about 3.3e8, not
built above ``--max-synapses``); ``dendrite`` sums each unit's input once and relays it to its
``K`` neurons (``K_s F + K_t n``), and computes max-pooling exactly on the units' binary code.
"""

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from provenance import header

import brianconv
from brianconv import datasets, models
from brianconv.connectivity import connections_for
from brianconv.graph import trace
from brianconv.schemes.amos import UNIT_DIR, load_unit, relu_unit, synapse_count

PAPER_TABLE3 = {"sigmoid (K=8)": 52, "ReLU (K=10)": 75, "Swish (K=12)": 102, "Mult (K=40)": 940}


def load_data(args):
    shared = [Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"]
    x, y, source = datasets.load_mnist_or_sample("test", args.data, args.images, shared)
    xc, _, _ = datasets.load_mnist_or_sample("train", args.data, None, shared)
    return x, y, xc[-args.calibration:], source


def unit_size(layer, K):
    """Neurons per AMOS unit of a hidden layer: ``K`` for ReLU, the trained unit's own K otherwise."""
    if layer.op == "mul":
        return load_unit("product").K
    return K if layer.activation == "relu" else load_unit(layer.activation).K


def estimated_synapses(graph, K):
    """Synapses of the AMOS network (paper wiring) with ReLU units of K neurons (trained units: their own K),
    without building it.

    Feedforward: ``K_s K_t F`` per input of a weighted or product layer (``K_s = 1`` from the analog
    input, ``K_t = 1`` into the output); inhibition ``n K (K - 1) / 2`` per hidden layer. Average
    pooling is counted as composed with the next layer only approximately (its own connections).
    """
    total, k_of = 0, {graph.input.name: 1}
    for layer in graph.layers[1:]:
        if layer.op in ("avgpool", "maxpool"):
            k_of[layer.name] = k_of[layer.inputs[0]]
            continue
        k_target = 1 if layer is graph.output else unit_size(layer, K)
        for source, connections in zip(layer.inputs, connections_for(layer)):
            total += k_of[source] * k_target * len(connections)
        total += 0 if layer is graph.output else layer.size * k_target * (k_target - 1) // 2
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
        with np.load(Path(snn.scheme.options.unit_dir or UNIT_DIR) / f"amos_{layer.activation}.npz") as data:
            low, high = data["domain"]
        with torch.no_grad():
            z = layer.pre_activation(*(torch.as_tensor(values[name]) for name in layer.inputs)).numpy()
        rows.append((layer.name, layer.activation, (low, high), np.mean((z < low) | (z > high)),
                     np.mean(z < low), np.mean(z > high)))
    return rows


def spike_statistics(snn, x, args):
    """Run the first images with every spike recorded: spikes and synaptic ops per image and population."""
    d = snn.description
    spiking = [p.name for p in d.populations if p.threshold]
    result = snn.simulate(x, device="cpp_standalone", batch_size=args.batch, n_workers=args.workers,
                          build_root=args.build_dir, spikes=spiking)
    fan_out = d.fan_out()
    spikes, ops = {}, {}
    for name in spiking:
        image, neuron, _ = result.spikes[name]
        per_neuron = np.bincount(image * d.population(name).size + neuron)
        assert per_neuron.max() <= 1, f"{name}: a neuron fired twice for one image"
        spikes[name] = np.bincount(image, minlength=len(x))
        ops[name] = np.bincount(image, weights=fan_out[name][neuron], minlength=len(x))
    _, values = snn.scheme.reference(snn.graph, snn.calibration, x)
    decoded = {name: np.max(np.abs(snn.values(result, name)
                                   - values[d.population(name).layer].reshape(len(x), -1)))
               for name in d.state.units}
    return spikes, ops, decoded, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small_cnn")
    parser.add_argument("--K", type=int, default=10)
    parser.add_argument("--images", type=int, default=1000, help="test images (default 1,000)")
    parser.add_argument("--spike-images", type=int, default=500, help="images run with every spike recorded")
    parser.add_argument("--calibration", type=int, default=1000, help="training images used for calibration")
    parser.add_argument("--percentile", type=float, default=100.0)
    parser.add_argument("--wiring", choices=("paper", "dendrite"), default=None,
                        help="default: paper, dendrite for nets with max-pooling")
    parser.add_argument("--product", choices=("trained", "code"), default="trained",
                        help="mul layers: the paper's trained product unit or coincidence neurons (exact)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=250, help="images per standalone run")
    parser.add_argument("--max-synapses", type=float, default=5e7)
    parser.add_argument("--data", default=None)
    parser.add_argument("--build-dir", default=None)
    args = parser.parse_args()
    print(header(__file__), flush=True)
    model = models.load(args.model)
    x, y, xc, source = load_data(args)
    graph = trace(model, x.shape[1:])
    pools = any(layer.op == "maxpool" for layer in graph)
    wiring = args.wiring or ("dendrite" if pools else "paper")
    ann_connections = sum(len(connections_for(layer)[0]) for layer in graph if layer.is_weighted)
    print(f"{args.model}: {len(x)} test images from the {source}; calibration on {len(xc)} training images; "
          f"K = {args.K}, percentile {args.percentile}, wiring {wiring}, product {args.product}")
    if wiring == "paper" and args.product == "trained":
        estimate = estimated_synapses(graph, args.K)
        print(f"estimated synapses with the paper's wiring: {estimate:,.0f} (the ANN has {ann_connections:,} "
              "connections)")
        if estimate > args.max_synapses:
            print(f"not simulated: {estimate:,.0f} synapses > --max-synapses {args.max_synapses:,.0f}; "
                  "use --wiring dendrite.")
            return

    start = time.perf_counter()
    snn = brianconv.convert(model, "amos", calibration=xc, K=args.K, percentile=args.percentile, wiring=wiring,
                            product=args.product)
    d = snn.description
    convert_seconds = time.perf_counter() - start
    counts = synapse_count(d)
    print(f"converted in {convert_seconds:.1f} s: {d.n_neurons:,} neurons, {d.n_synapses:,} synapses "
          f"({counts['feedforward']:,} feedforward, {counts['inhibition']:,} inhibition), "
          f"{len(d.projections)} projections")
    for p in d.populations:
        print(f"  {p.name:<18}{p.size:>9,} neurons  {p.role:<7} window starts at step {p.window_start}")

    result = snn.simulate(x, device="cpp_standalone", batch_size=args.batch, n_workers=args.workers,
                          build_root=args.build_dir)
    predictions = result.outputs.argmax(axis=1)
    ann = snn.graph.forward(x)
    trained_inputs = {name for layer in snn.graph.layers[1:] if layer.activation not in (None, "relu")
                      for name in layer.inputs}
    reference, values = snn.scheme.reference(snn.graph, snn.calibration, x, keep=trained_inputs)
    n_spike = min(args.spike_images, len(x))
    spikes, ops, decoded, spike_run = spike_statistics(snn, x[:n_spike], args)
    total_spikes = sum(spikes.values())
    total_ops = sum(ops.values())
    steps_per_run = d.duration_steps(args.batch)

    ann_accuracy = 100 * np.mean(ann.argmax(1) == y)
    snn_accuracy = 100 * np.mean(predictions == y)
    ann_neurons = sum(layer.size for layer in snn.graph.layers[1:] if layer.op != "avgpool")
    macs = sum(len(connections_for(layer)[0]) for layer in snn.graph if layer.is_weighted)
    print(f"\naccuracy run: build {result.timing['build']:.1f} s, simulation {result.timing['simulate']:.1f} s "
          f"({len(x) / result.timing['simulate']:.1f} images/s wall clock, {args.workers} worker(s)); "
          f"spike run ({n_spike} images, all spikes recorded): build {spike_run.timing['build']:.1f} s")
    print(f"\n{'ANN accuracy (%)':<58}{ann_accuracy:>12.2f}")
    print(f"{'SNN accuracy (%)':<58}{snn_accuracy:>12.2f}")
    print(f"{'accuracy loss (percentage points; goal <= 0.1)':<58}{ann_accuracy - snn_accuracy:>12.2f}")
    print(f"{'SNN/ANN prediction agreement (%)':<58}{100 * np.mean(predictions == ann.argmax(1)):>12.2f}")
    print(f"{'max |SNN - numpy AMOS reference| of the logits':<58}{np.max(np.abs(result.outputs - reference)):>12.2e}")
    print(f"{'max |SNN - ANN| of the logits':<58}{np.max(np.abs(result.outputs - ann)):>12.3f}")
    print(f"{'max |decoded layer output - reference| (spike run)':<58}{max(decoded.values()):>12.2e}")
    print(f"{'spikes per image (all, incl. input and dendrite events)':<58}{total_spikes.mean():>12,.0f}")
    print(f"{'spikes per neuron and image':<58}{total_spikes.mean() / d.n_neurons:>12.4f}")
    print(f"{'synaptic operations per image / ANN MACs':<58}{total_ops.mean():>12,.0f} / {macs:,}")
    print(f"{'neurons: ANN (hidden + output) / SNN (incl. input)':<58}{ann_neurons:>6,} / {d.n_neurons:,}")
    print(f"{'synapses: ANN connections / SNN':<58}{ann_connections:>6,} / {d.n_synapses:,}")
    print(f"{'images per simulated step, pipelined ({} per run)'.format(args.batch):<58}"
          f"{args.batch / steps_per_run:>12.3f}")
    print(f"{'latency: steps from input to logits':<58}{d.population(d.output_population).window_start:>12}")
    print("\nparameters added per unit type (paper Table 3 in brackets); ReLU units of different layers share them "
          "up to one scale alpha per layer:")
    n_relu = sum(1 for layer in snn.graph if layer.activation == "relu" and layer is not snn.graph.output)
    if n_relu:
        relu = relu_unit(args.K, 1.0)
        print(f"  ReLU (K={args.K}): {relu.n_parameters} (paper, K=10: {PAPER_TABLE3['ReLU (K=10)']}) "
              f"+ {n_relu} scales")
    for gate, paper in (("silu", "Swish (K=12)"), ("sigmoid", "sigmoid (K=8)"), ("product", "Mult (K=40)")):
        trained_product = gate == "product" and args.product == "trained"
        if any(layer.activation == gate or (trained_product and layer.op == "mul") for layer in snn.graph):
            unit = load_unit(gate, snn.scheme.options.unit_dir)
            print(f"  {gate} (K={unit.K}, trained, shared by all layers): {unit.n_parameters} "
                  f"(paper, {paper}: {PAPER_TABLE3[paper]})")
    for layer in snn.graph:
        if layer.op == "mul" and args.product == "code":
            unit = snn.scheme.unit_for(layer, snn.calibration, snn.graph)
            print(f"  product {layer.name!r} by coincidence neurons: {unit.K} per element "
                  f"({unit.factors[0].K} x {unit.factors[1].K}), no trained parameters")
        elif layer.op == "mul":
            unit = snn.scheme.unit_for(layer, snn.calibration, snn.graph)
            print(f"  product {layer.name!r}: factors scaled by {unit.scale[0]:.4g} ({layer.inputs[0]}) and "
                  f"{unit.scale[1]:.4g} ({layer.inputs[1]}), the largest values their units send")
    rows = outside_domain(snn, values)
    if rows:
        print("\npre-activations outside the trained unit's domain (the unit's output stays at its edge value there),"
              f" on the {len(x)} simulated images:")
        for name, gate, (low, high), outside, below, above in rows:
            print(f"  {name:<14}{gate:<8}[{low:g}, {high:g}]  outside {100 * outside:7.3f} %  "
                  f"(below {100 * below:.3f} %, above {100 * above:.3f} %)")
    print(f"\nper population ({n_spike} images): neurons, spikes per image, spikes per neuron and image, "
          "synaptic operations per image")
    for name, count in spikes.items():
        size = d.population(name).size
        print(f"  {name:<18}{size:>9,}{count.mean():>12,.1f}{count.mean() / size:>10.4f}{ops[name].mean():>14,.0f}")


if __name__ == "__main__":
    main()
