"""MNIST without downloads: the original IDX files from disk, or the bundled sample.

brianconv never fetches data. :func:`load_mnist` reads the four original IDX files
(``train-images-idx3-ubyte[.gz]`` ...) from a folder you name, from ``$BRIANCONV_DATA``,
or from torchvision's ``MNIST/raw`` layout below either. :func:`load_sample` returns the
1,000 test-set images that ship inside the package, so demos and tests run anywhere.

Images come back as float32 arrays of shape ``(N, 1, 28, 28)`` scaled to ``[0, 1]``
(pixel / 255) and labels as int64 arrays of shape ``(N,)``.
"""

import gzip
import os
from pathlib import Path

import numpy as np

from .errors import DataNotFoundError, InvalidValueError

__all__ = ["load_mnist", "load_sample", "read_idx", "find_mnist_root", "SAMPLE_PATH", "TRAIN_SAMPLE_PATH"]

#: The bundled samples: the first 1,000 images of the MNIST test set, and the last 500 images
#: of the training set (for calibration, so that the test images are never used to calibrate).
SAMPLE_PATH = Path(__file__).with_name("data") / "mnist_test_sample.npz"
TRAIN_SAMPLE_PATH = Path(__file__).with_name("data") / "mnist_train_sample.npz"

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path):
    """Read one IDX file (optionally gzip-compressed) into a numpy array.

    Parameters
    ----------
    path : str or Path
        An IDX file; a name ending in ``.gz`` is decompressed on the fly.

    Returns
    -------
    np.ndarray
        The array with the shape stored in the file header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise InvalidValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r}).")
    ndim, dtype = raw[3], np.dtype(_IDX_DTYPES[raw[2]])
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise InvalidValueError(f"{path} is truncated: its header announces {ndim} dimensions but ends early.")
    shape = tuple(int.from_bytes(raw[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim))
    if len(raw) - offset != int(np.prod(shape)) * dtype.itemsize:
        raise InvalidValueError(f"{path} is truncated or corrupt: header says {shape} values of {dtype.itemsize} "
                                f"byte(s), found {len(raw) - offset} bytes of data.")
    return np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)


def _candidate_dirs(root):
    bases = [Path(root)] if root is not None else []
    if root is None and os.environ.get("BRIANCONV_DATA"):
        bases.append(Path(os.environ["BRIANCONV_DATA"]))
    dirs = []
    for base in bases:
        dirs += [base, base / "mnist", base / "MNIST" / "raw", base / "mnist" / "raw"]
    return dirs


def _find_file(folder, stem):
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_mnist_root(root=None, split="test"):
    """Return the folder holding the IDX files of ``split``, or raise :class:`DataNotFoundError`."""
    if split not in _FILES:
        raise InvalidValueError(f"split must be 'train' or 'test', not {split!r}.")
    searched = _candidate_dirs(root)
    for folder in searched:
        if all(_find_file(folder, stem) for stem in _FILES[split]):
            return folder
    where = ", ".join(str(d) for d in searched) or "nowhere (no root given and $BRIANCONV_DATA unset)"
    raise DataNotFoundError(
        f"MNIST {split} files {', '.join(s + '[.gz]' for s in _FILES[split])} not found; looked in {where}. "
        "brianconv never downloads data: put the original IDX files in a folder and pass it as "
        "root=..., or set BRIANCONV_DATA to it. For the 1,000 bundled test images use load_sample()."
    )


def load_mnist(split="test", root=None, limit=None):
    """Load MNIST from the original IDX files on disk.

    Parameters
    ----------
    split : {"train", "test"}
        60,000 training or 10,000 test images.
    root : str or Path, optional
        Folder with the IDX files (or with ``mnist/`` or torchvision's ``MNIST/raw/`` in it).
        Defaults to ``$BRIANCONV_DATA``.
    limit : int, optional
        Return only the first ``limit`` images.

    Returns
    -------
    images : np.ndarray, float32, shape (N, 1, 28, 28), values in [0, 1]
    labels : np.ndarray, int64, shape (N,)
    """
    folder = find_mnist_root(root, split)
    image_stem, label_stem = _FILES[split]
    images = read_idx(_find_file(folder, image_stem))
    labels = read_idx(_find_file(folder, label_stem))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise InvalidValueError(f"MNIST files in {folder} do not fit together: images {images.shape}, labels {labels.shape}.")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return _to_float(images), labels.astype(np.int64)


def load_sample(split="test", limit=None):
    """MNIST images bundled with brianconv.

    ``split="test"``: the first 1,000 images of the test set; ``split="train"``: the last 500
    images of the training set (use these for calibration). Returns the layout of :func:`load_mnist`.
    """
    if split not in ("test", "train"):
        raise InvalidValueError(f"split must be 'train' or 'test', not {split!r}.")
    path = SAMPLE_PATH if split == "test" else TRAIN_SAMPLE_PATH
    if not path.is_file():
        raise DataNotFoundError(f"The bundled MNIST sample {path} is missing: reinstall brianconv.")
    with np.load(path) as archive:
        images, labels = archive["images"], archive["labels"]
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return _to_float(images), labels.astype(np.int64)


def _to_float(images):
    return (images.astype(np.float32) / 255.0)[:, None, :, :]


def load_mnist_or_sample(split="test", root=None, limit=None, extra_roots=()):
    """The full MNIST ``split`` if it is found, otherwise the bundled sample of that split.

    Looks in ``root``, ``$BRIANCONV_DATA`` and then ``extra_roots``; used by benchmarks and the CLI
    so that they run anywhere and use the full data where it exists.

    Returns
    -------
    images, labels, source : the arrays of :func:`load_mnist` and where they came from, in words a
        reader can reuse (no machine-specific path: results files quote it).
    """
    for candidate in [root, None, *extra_roots]:
        if candidate is None and root is None and not os.environ.get("BRIANCONV_DATA"):
            continue
        try:
            images, labels = load_mnist(split, root=candidate, limit=limit)
            return images, labels, f"full MNIST {split} set (original IDX files, --data or $BRIANCONV_DATA)"
        except DataNotFoundError:
            continue
    images, labels = load_sample(split, limit=limit)
    return images, labels, f"bundled MNIST {split} sample (full MNIST not found)"
