"""Description fingerprints of every bundled model with every scheme variant: the no-regression check.

A refactor must leave every line of this script's output unchanged (the fingerprint hashes the
equations, thresholds, resets, events, values, index arrays and weights of the description)::

    python benchmarks/fingerprints.py > before.txt
    # ... refactor ...
    python benchmarks/fingerprints.py | diff before.txt -

A model a scheme rejects prints the error's class and first line instead, so a change in what is
accepted shows up in the diff too. Calibration uses the first 200 images of the bundled training
sample (no full data set needed).
"""

import argparse

import torch

import brianconv
from brianconv import models
from brianconv.datasets import load_sample
from brianconv.errors import BrianconvError

#: (scheme, options) variants whose descriptions are compared.
VARIANTS = [
    ("ttfs", {}),
    ("ttfs", {"integration": "event"}),
    ("ttfs", {"pipeline": False}),
    ("rate", {}),
    ("tdsnn", {}),
    ("amos", {}),
    ("amos", {"wiring": "dendrite"}),
    ("amos", {"wiring": "dendrite", "product": "code"}),
    ("tdsnn", {"pipeline": False}),
    ("amos", {"pipeline": False}),
    ("rate", {"reset": "zero", "input": "poisson"}),
]


def fingerprint_lines(names, calibration, batch_size=2):
    """One line per (model, variant): the fingerprint or the reason it is rejected."""
    for name in names:
        model = models.load(name)
        for method, options in VARIANTS:
            label = f"{name:<20} {method:<6} {options}"
            try:
                snn = brianconv.convert(model, method, calibration=calibration, **options)
            except BrianconvError as exc:
                yield f"{label}: rejected, {type(exc).__name__}: {str(exc).splitlines()[0]}"
                continue
            d = snn.description
            yield f"{label}: {d.fingerprint(batch_size)} ({d.n_neurons} neurons, {d.n_synapses} synapses)"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=models.available(), help="bundled model names (default: all)")
    parser.add_argument("--calibration", type=int, default=200, help="training-sample images used to calibrate")
    args = parser.parse_args(argv)
    x, _ = load_sample("train", limit=args.calibration)
    for line in fingerprint_lines(args.models, torch.as_tensor(x)):
        print(line, flush=True)


if __name__ == "__main__":
    main()
