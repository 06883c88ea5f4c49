"""MNIST from disk without downloads: IDX files, folder layouts, clear errors, the bundled sample."""

import gzip
import os

import numpy as np
import pytest

from brianconv import datasets
from brianconv.datasets import find_mnist_root, load_mnist, load_sample, read_idx
from brianconv.errors import DataNotFoundError, InvalidValueError

from conftest import full_mnist_root

_TYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
               np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def write_idx(path, array):
    """Write ``array`` as an IDX file (gzip-compressed when the name ends in .gz)."""
    array = np.asarray(array)
    header = bytes([0, 0, _TYPE_CODES[array.dtype], array.ndim])
    header += b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as handle:
        handle.write(header + array.tobytes())
    return path


def fake_mnist(folder, n=7, split="test", compressed=True, seed=0):
    """Write a tiny MNIST split (n random 28x28 images) into ``folder``; return the raw arrays."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    stems = {"test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
             "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")}[split]
    suffix = ".gz" if compressed else ""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / (stems[0] + suffix), images)
    write_idx(folder / (stems[1] + suffix), labels)
    return images, labels


@pytest.fixture
def no_data_env(monkeypatch):
    monkeypatch.delenv("BRIANCONV_DATA", raising=False)


# ---------------------------------------------------------------------------------------------
# IDX files
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize("shape", [(5, 28, 28), (9,), (3, 4, 2, 2)])
def test_read_idx_round_trips_uint8(tmp_path, shape, compressed):
    array = np.random.default_rng(1).integers(0, 256, size=shape, dtype=np.uint8)
    path = write_idx(tmp_path / ("data.idx" + (".gz" if compressed else "")), array)
    result = read_idx(path)
    assert result.dtype == np.uint8 and result.shape == shape
    np.testing.assert_array_equal(result, array)


@pytest.mark.parametrize("dtype", [np.int8, ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_round_trips_other_types(tmp_path, dtype):
    array = (np.random.default_rng(2).standard_normal((4, 3)) * 100).astype(dtype)
    result = read_idx(write_idx(tmp_path / "data.idx", array))
    assert result.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(result, array)


def test_read_idx_rejects_other_files(tmp_path):
    (tmp_path / "text.idx").write_bytes(b"hello world")
    with pytest.raises(InvalidValueError, match="not an IDX file"):
        read_idx(tmp_path / "text.idx")
    (tmp_path / "tiny.idx").write_bytes(b"\x00")
    with pytest.raises(InvalidValueError, match="not an IDX file"):
        read_idx(tmp_path / "tiny.idx")


@pytest.mark.parametrize("dtype, cut", [(np.uint8, 10), (">i4", 3), (">i4", 1)])
def test_read_idx_rejects_truncated_files(tmp_path, dtype, cut):
    path = write_idx(tmp_path / "data.idx", np.ones((4, 5), dtype=dtype))
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(InvalidValueError, match="truncated"):
        read_idx(path)


def test_read_idx_rejects_a_truncated_header(tmp_path):
    (tmp_path / "head.idx").write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 5]))
    with pytest.raises(InvalidValueError, match="truncated"):
        read_idx(tmp_path / "head.idx")


# ---------------------------------------------------------------------------------------------
# folder layouts
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "plain"])
@pytest.mark.parametrize("layout", ["", "mnist", "MNIST/raw"], ids=["flat", "mnist", "torchvision"])
def test_load_mnist_layouts(tmp_path, no_data_env, layout, compressed):
    folder = tmp_path / layout if layout else tmp_path
    images, labels = fake_mnist(folder, compressed=compressed)
    assert find_mnist_root(tmp_path) == folder
    x, y = load_mnist(root=tmp_path)
    assert x.shape == (7, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (7,) and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], images.astype(np.float32) / 255)
    np.testing.assert_array_equal(y, labels)
    assert x.min() >= 0 and x.max() <= 1


def test_load_mnist_train_split_and_limit(tmp_path, no_data_env):
    images, labels = fake_mnist(tmp_path, n=9, split="train", seed=3)
    x, y = load_mnist("train", root=str(tmp_path), limit=4)
    assert x.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(x[:, 0] * 255, images[:4])
    np.testing.assert_array_equal(y, labels[:4])
    with pytest.raises(DataNotFoundError, match="t10k-images-idx3-ubyte"):
        load_mnist("test", root=tmp_path)  # only the training files are there
    with pytest.raises(InvalidValueError, match="split"):
        load_mnist("validation", root=tmp_path)


def test_load_mnist_from_the_environment_variable(tmp_path, monkeypatch):
    images, _ = fake_mnist(tmp_path / "MNIST" / "raw")
    monkeypatch.setenv("BRIANCONV_DATA", str(tmp_path))
    x, _ = load_mnist()
    np.testing.assert_array_equal(x[:, 0] * 255, images)


def test_an_explicit_root_wins_over_the_environment_variable(tmp_path, monkeypatch):
    env_images, _ = fake_mnist(tmp_path / "env", seed=1)
    root_images, _ = fake_mnist(tmp_path / "root", seed=2)
    monkeypatch.setenv("BRIANCONV_DATA", str(tmp_path / "env"))
    x, _ = load_mnist(root=tmp_path / "root")
    np.testing.assert_array_equal(x[:, 0] * 255, root_images)
    assert not np.array_equal(root_images, env_images)


def test_missing_folder_says_where_it_looked_and_how_to_fix_it(tmp_path, no_data_env):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataNotFoundError) as info:
        load_mnist(root=missing)
    message = str(info.value)
    assert str(missing) in message and str(missing / "MNIST" / "raw") in message
    assert "t10k-images-idx3-ubyte" in message
    assert "root=" in message and "BRIANCONV_DATA" in message and "load_sample()" in message
    assert isinstance(info.value, FileNotFoundError)


def test_no_root_and_no_environment_variable(no_data_env):
    with pytest.raises(DataNotFoundError, match=r"nowhere \(no root given and \$BRIANCONV_DATA unset\)"):
        load_mnist()


def test_images_and_labels_that_do_not_fit_together(tmp_path, no_data_env):
    fake_mnist(tmp_path, n=5)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(4, dtype=np.uint8))
    with pytest.raises(InvalidValueError, match="do not fit together"):
        load_mnist(root=tmp_path)


# ---------------------------------------------------------------------------------------------
# the bundled samples
# ---------------------------------------------------------------------------------------------

def test_load_sample():
    x, y = load_sample()
    assert x.shape == (1000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (1000,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    np.testing.assert_array_equal(np.round(x * 255), x * 255)  # pixel / 255, nothing else
    assert set(np.unique(y)) == set(range(10))
    assert np.bincount(y).min() >= 50  # every digit is represented
    first, labels = load_sample(limit=10)
    np.testing.assert_array_equal(first, x[:10])
    np.testing.assert_array_equal(labels, y[:10])


def test_load_train_sample():
    x, y = load_sample("train")
    assert x.shape == (500, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    with pytest.raises(InvalidValueError, match="split"):
        load_sample("validation")


def test_sample_files_are_the_documented_paths():
    assert datasets.SAMPLE_PATH.is_file() and datasets.TRAIN_SAMPLE_PATH.is_file()


_FULL = full_mnist_root()
needs_full_mnist = pytest.mark.skipif(_FULL is None, reason="the full MNIST IDX files are not here: set "
                                      "BRIANCONV_DATA or put them in ../shared/data/mnist")


@needs_full_mnist
def test_sample_is_the_first_1000_test_images():
    x, y = load_sample()
    full_x, full_y = load_mnist("test", root=_FULL)
    assert full_x.shape == (10000, 1, 28, 28)
    np.testing.assert_array_equal(x, full_x[:1000])
    np.testing.assert_array_equal(y, full_y[:1000])


@needs_full_mnist
def test_train_sample_is_the_last_500_training_images():
    x, y = load_sample("train")
    full_x, full_y = load_mnist("train", root=_FULL)
    assert full_x.shape == (60000, 1, 28, 28)
    np.testing.assert_array_equal(x, full_x[-500:])
    np.testing.assert_array_equal(y, full_y[-500:])


def test_full_mnist_root_helper_points_at_idx_files():
    root = full_mnist_root()
    if root is None:
        pytest.skip("no full MNIST here; the helper correctly reports none")
    assert os.path.isfile(os.path.join(root, "t10k-labels-idx1-ubyte.gz"))


def test_load_mnist_or_sample_falls_back_to_the_bundled_sample(tmp_path, monkeypatch):
    monkeypatch.delenv("BRIANCONV_DATA", raising=False)
    x, y, source = datasets.load_mnist_or_sample("test", root=tmp_path, limit=7)
    assert x.shape == (7, 1, 28, 28) and "bundled" in source
    full = full_mnist_root()
    if full is not None:
        x, y, source = datasets.load_mnist_or_sample("train", extra_roots=[full], limit=3)
        assert x.shape == (3, 1, 28, 28) and source.startswith("full MNIST train set")
