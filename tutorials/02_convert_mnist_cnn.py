"""Tutorial 2 — converting the MNIST CNN and reading the raster.

The bundled López-Randulfe CNN (two conv + max-pool stages, two dense layers) is converted with
the ``ttfs`` scheme and simulated in Brian2's C++ standalone mode on bundled MNIST test images.
The raster shows the code travelling through the layers: each layer's spikes come in the stage
after its inputs, every neuron fires at most once, and most neurons stay silent.

    python tutorials/02_convert_mnist_cnn.py [--images 100] [--model lopez_randulfe_cnn] [--out figures]
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import brianconv  # noqa: E402
from brianconv import datasets, models, plot  # noqa: E402
from brianconv.builder import find_compiler  # noqa: E402


def main(out="figures", images=100, model="lopez_randulfe_cnn", device=None):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = device or ("cpp_standalone" if find_compiler() else "runtime")
    x, y = datasets.load_sample("test", limit=images)
    calibration, _ = datasets.load_sample("train")
    snn = brianconv.convert(models.load(model), "ttfs", calibration=calibration)
    print(snn.description.summary())
    spiking = [p.name for p in snn.description.populations if p.threshold]
    result = snn.simulate(x, labels=y, device=device, spikes=spiking)
    print(result.summary())

    fig = plot.raster(result, image=0)
    fig.savefig(out / "02_raster.png", dpi=120)

    rates = result.spikes_per_neuron_by_population()
    fig, ax = plt.subplots(figsize=(6, 3.5), constrained_layout=True)
    ax.bar(list(rates), list(rates.values()), color="C0")
    ax.set_ylabel("spikes per neuron per image")
    ax.set_title(f"{model}: at most one spike per neuron (mean {result.spikes_per_neuron:.3f})")
    ax.tick_params(axis="x", labelrotation=30)
    fig.savefig(out / "02_spikes_per_layer.png", dpi=120)

    worst = int(np.argmax(np.abs(result.outputs - result.ann_outputs).max(axis=1)))
    print(f"largest output deviation from the ANN: image {worst}, "
          f"{np.abs(result.outputs - result.ann_outputs)[worst].max():.3f} (logit units)")
    print(f"figures written to {out}/02_raster.png and 02_spikes_per_layer.png")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="figures")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--model", default="lopez_randulfe_cnn")
    parser.add_argument("--device", default=None, choices=["cpp_standalone", "runtime", "numpy"])
    main(**vars(parser.parse_args()))
