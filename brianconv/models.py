"""The trained MNIST models shipped with brianconv (weights on disk, never downloaded).

The source of truth is the repository's ``models/`` folder: ``architectures.py`` (the
definitions), ``NAME.pt`` (a ``state_dict``) and ``NAME.json`` (test accuracy and how it was
measured). An installed brianconv carries a copy of that folder as ``brianconv/_models``.

>>> from brianconv import models
>>> models.available()  # doctest: +NORMALIZE_WHITESPACE
['avgpool_cnn', 'functional_net', 'inception_cat', 'lopez_randulfe_cnn', 'mlp', 'mobilenet_relu6',
 'resnet_bn', 'small_cnn', 'small_cnn_se', 'small_cnn_silu']
"""

import hashlib
import importlib.util
import json
import os
from pathlib import Path

import torch

from .errors import DataNotFoundError, InvalidValueError, UnknownMethodError

__all__ = ["available", "load", "metadata", "models_dir", "model_inputs"]


def models_dir():
    """The folder holding the model files: ``$BRIANCONV_MODELS``, the checkout's ``models/``, or the installed copy."""
    candidates = []
    if os.environ.get("BRIANCONV_MODELS"):
        candidates.append(Path(os.environ["BRIANCONV_MODELS"]))
    here = Path(__file__).resolve().parent
    candidates += [here.parent / "models", here / "_models"]
    for folder in candidates:
        if (folder / "architectures.py").is_file():
            return folder
    raise DataNotFoundError(f"No models folder with architectures.py found (looked in {', '.join(map(str, candidates))}). "
                            "Reinstall brianconv or set BRIANCONV_MODELS to the repository's models/ folder.")


def _architectures():
    path = models_dir() / "architectures.py"
    spec = importlib.util.spec_from_file_location("brianconv._model_architectures", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ARCHITECTURES


def available():
    """Names of the models that have trained weights (sorted)."""
    folder = models_dir()
    return sorted(name for name in _architectures() if (folder / f"{name}.pt").is_file())


def metadata(name):
    """The recorded facts about model ``name`` (accuracy, training recipe, weight checksum) as a dict."""
    path = models_dir() / f"{name}.json"
    if not path.is_file():
        raise UnknownMethodError(f"Unknown model {name!r}; available models: {', '.join(available())}.")
    with open(path) as handle:
        return json.load(handle)


def load(name):
    """The trained model ``name`` in eval mode (float32, CPU).

    Raises
    ------
    UnknownMethodError
        For a name without architecture or weights (the message lists the available ones).
    InvalidValueError
        If the weights file does not match its recorded checksum or the architecture.
    """
    architectures = _architectures()
    folder = models_dir()
    if name not in architectures or not (folder / f"{name}.pt").is_file():
        raise UnknownMethodError(f"Unknown model {name!r}; available models: {', '.join(available())}.")
    weights = folder / f"{name}.pt"
    expected = metadata(name).get("weights_sha256")
    if expected and hashlib.sha256(weights.read_bytes()).hexdigest() != expected:
        raise InvalidValueError(f"{weights} does not match the checksum recorded in {name}.json; the file is "
                                "corrupt or was replaced. Restore it from the repository or retrain it.")
    model = architectures[name]()
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except RuntimeError as exc:
        raise InvalidValueError(f"The checkpoint {weights} does not fit the architecture {name!r}: {exc}") from exc
    return model.eval()


def model_inputs(name, images):
    """``images`` (pixel / 255, in [0, 1]) as model ``name`` takes them.

    Most shipped models take the images as they are; a model trained on normalised inputs
    (its metadata's ``input_normalisation``, e.g. ``functional_net``) takes
    ``(images - mean) / std``. Works on numpy arrays and torch tensors alike.
    """
    normalisation = metadata(name).get("input_normalisation")
    if not normalisation:
        return images
    return (images - normalisation["mean"]) / normalisation["std"]
