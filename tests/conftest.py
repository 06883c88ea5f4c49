"""Shared fixtures: seeds, a per-session build folder, small models and the bundled data."""

import os

import numpy as np
import pytest
import torch

from brianconv.builder import find_compiler


@pytest.fixture(scope="session")
def build_root(tmp_path_factory):
    """One build folder for the whole session, so tests that convert the same network share a build."""
    return tmp_path_factory.mktemp("builds")


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


needs_compiler = pytest.mark.skipif(find_compiler() is None, reason="no C++ compiler for Brian2 standalone")


def full_mnist_root():
    """The full MNIST folder if present ($BRIANCONV_DATA or ../shared/data/mnist next to the repo)."""
    candidates = [os.environ.get("BRIANCONV_DATA"),
                  os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "mnist")]
    for folder in candidates:
        if folder and os.path.isfile(os.path.join(folder, "t10k-images-idx3-ubyte.gz")):
            return os.path.abspath(folder)
    return None
