"""Train one net of ``models/architectures.py`` on MNIST and save its weights and metadata.

Usage (from the repository root)::

    python models/train.py NAME [--epochs E] [--data DIR] [--seed S] [--threads N]

Trains on the 60,000 training images with a fixed seed, measures the accuracy on the
full 10,000-image test set (eval mode, argmax of the logits) and writes
``models/NAME.pt`` (a float32 ``state_dict``) and ``models/NAME.json`` (metadata).
The defaults of each net are the recipe its shipped weights were trained with.
"""

import argparse
import hashlib
import json
import math
import os
import random
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from architectures import ARCHITECTURES, INPUT_NORMALISATION  # noqa: E402
from brianconv.datasets import load_mnist  # noqa: E402

#: Per-net training recipe (the defaults of the command line).
RECIPES = {
    "lopez_randulfe_cnn": dict(epochs=20, batch_size=128, max_lr=3e-3, augment=True),
    "small_cnn": dict(epochs=15, batch_size=128, max_lr=1e-2, augment=False),
    "small_cnn_silu": dict(epochs=15, batch_size=128, max_lr=1e-2, augment=False),
    "small_cnn_se": dict(epochs=15, batch_size=128, max_lr=1e-2, augment=False),
    "mlp": dict(epochs=8, batch_size=128, max_lr=3e-3, augment=False),
    "resnet_bn": dict(epochs=8, batch_size=128, max_lr=1e-2, augment=False),
    "inception_cat": dict(epochs=8, batch_size=128, max_lr=1e-2, augment=False),
    "mobilenet_relu6": dict(epochs=8, batch_size=128, max_lr=1e-2, augment=False),
    "functional_net": dict(epochs=6, batch_size=128, max_lr=3e-3, augment=False),
    "avgpool_cnn": dict(epochs=1, batch_size=128, max_lr=1e-2, augment=False),
}
#: Augmentation ranges: rotation in degrees, scale factor, shift in pixels.
ROTATION, SCALE, SHIFT = 10.0, (0.9, 1.1), 2.0


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def augment(images, generator):
    """Randomly rotate (±10°), scale (0.9–1.1) and shift (±2 px) every image of a batch."""
    n = images.shape[0]
    uniform = lambda low, high: low + (high - low) * torch.rand(n, generator=generator)  # noqa: E731
    angle = torch.deg2rad(uniform(-ROTATION, ROTATION))
    scale = uniform(*SCALE)
    # affine_grid maps output to input coordinates in [-1, 1]: one pixel is 2/28 wide.
    shift_x, shift_y = (uniform(-SHIFT, SHIFT) * 2 / 28 for _ in range(2))
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def train_epoch(model, optimiser, schedule, images, labels, batch_size, augmenting, generator):
    model.train()
    order = torch.randperm(len(images), generator=generator)
    total_loss = 0.0
    for start in range(0, len(images), batch_size):
        index = order[start:start + batch_size]
        batch = images[index]
        if augmenting:
            batch = augment(batch, generator)
        loss = F.cross_entropy(model(batch), labels[index])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        total_loss += loss.item() * len(index)
    return total_loss / len(images)


@torch.no_grad()
def accuracy(model, images, labels, batch_size=1000):
    """Percentage of images whose argmax logit is the label (eval mode)."""
    model.eval()
    correct = sum(
        (model(images[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum().item()
        for i in range(0, len(images), batch_size)
    )
    return 100.0 * correct / len(images)


def summary(model):
    """One line: the layers with their output shapes for a 1x28x28 input (in call order; for a model that
    is not a Sequential, its leaf modules with their paths, followed by what its forward() computes)."""
    x, parts = torch.zeros(1, 1, 28, 28), []
    if isinstance(model, torch.nn.Sequential):
        for layer in model:
            x = layer(x)
            parts.append(f"{layer} -> {'x'.join(map(str, x.shape[1:]))}")
        return " | ".join(parts)
    hooks = [module.register_forward_hook(
        lambda module, inputs, output, name=name: parts.append(f"{name}: {module} -> {'x'.join(map(str, output.shape[1:]))}"))
        for name, module in model.named_modules() if not list(module.children())]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return " | ".join(parts) + f" (forward: {type(model).__name__}.forward, see architectures.py)"


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(ARCHITECTURES))
    parser.add_argument("--epochs", type=int, help="default: the net's recipe in RECIPES")
    parser.add_argument("--data", default=os.environ.get("BRIANCONV_DATA", "/work/shared/data/mnist"),
                        help="folder with the MNIST IDX files (default: $BRIANCONV_DATA or %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE), help="folder for NAME.pt and NAME.json")
    args = parser.parse_args(argv)
    recipe = dict(RECIPES[args.name])
    if args.epochs is not None:
        recipe["epochs"] = args.epochs

    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    train_x, train_y = map(torch.from_numpy, load_mnist("train", args.data))
    test_x, test_y = map(torch.from_numpy, load_mnist("test", args.data))
    normalisation = INPUT_NORMALISATION.get(args.name)
    if normalisation is not None:  # the model is trained (and tested) on (x - mean) / std
        mean, std = normalisation
        train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    model = ARCHITECTURES[args.name]()
    generator = torch.Generator().manual_seed(args.seed)

    epochs, batch_size = recipe["epochs"], recipe["batch_size"]
    steps = epochs * math.ceil(len(train_x) / batch_size)
    optimiser = torch.optim.Adam(model.parameters(), lr=recipe["max_lr"] / 25)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=recipe["max_lr"], total_steps=steps)
    print(f"{args.name}: {summary(model)}", flush=True)

    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        tick = time.perf_counter()
        loss = train_epoch(model, optimiser, schedule, train_x, train_y, batch_size, recipe["augment"], generator)
        test_acc = accuracy(model, test_x, test_y)
        print(f"epoch {epoch:3d}/{epochs}  loss {loss:.4f}  test {test_acc:.2f} %  "
              f"{time.perf_counter() - tick:.1f} s", flush=True)
    wall = time.perf_counter() - started

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pt_path = out / f"{args.name}.pt"
    torch.save({k: v.float() for k, v in model.state_dict().items()}, pt_path)
    augmentation = (f"per batch via affine_grid/grid_sample: rotation ±{ROTATION:g}°, scale "
                    f"{SCALE[0]:g}–{SCALE[1]:g}, shift ±{SHIFT:g} px" if recipe["augment"] else "none")
    metadata = {
        "name": args.name,
        "architecture": summary(model),
        "test_accuracy_percent": round(accuracy(model, test_x, test_y), 2),
        "test_images": len(test_x),
        "train_images": len(train_x),
        "accuracy_measured_by": "eval mode, torch forward pass, argmax of the logits",
        "epochs": epochs,
        "seed": args.seed,
        "batch_size": batch_size,
        "optimiser": "Adam (betas 0.9, 0.999), cross-entropy loss",
        "schedule": f"OneCycleLR per step, max_lr {recipe['max_lr']:g}, {steps} steps",
        "augmentation": augmentation,
        "input_normalisation": (None if normalisation is None
                                else {"mean": normalisation[0], "std": normalisation[1],
                                      "inputs": "(x - mean) / std of images x in [0, 1]"}),
        "torch_version": torch.__version__,
        "threads": args.threads,
        "training_wall_time_s": round(wall, 1),
        "seconds_per_epoch": round(wall / epochs, 1),
        "weights_file": pt_path.name,
        "weights_sha256": sha256(pt_path),
        "command": shlex.join(["python", "models/train.py", *sys.argv[1:]] if argv is None
                              else ["python", "models/train.py", *argv]),
    }
    (out / f"{args.name}.json").write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n")
    print(f"saved {pt_path} and {args.name}.json: test accuracy {metadata['test_accuracy_percent']:.2f} %, "
          f"{wall:.0f} s", flush=True)
    return metadata


if __name__ == "__main__":
    main()
