"""Shared fixtures: seeds, a per-session build folder, small models and the bundled data."""

import os

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

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


#: Hypothesis profile: ``default`` runs each slow property test on a few fixed (derandomised) examples;
#: ``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) runs twice as many, freshly randomised on every run.
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "default")
settings.register_profile("ci", deadline=None, derandomize=False, print_blob=True)
settings.load_profile(HYPOTHESIS_PROFILE)


def property_settings(quick_examples):
    """Settings of a property test that simulates a network per example: ``quick_examples`` fixed
    examples by default, ``2 * quick_examples`` random ones under the ``ci`` profile (four times as
    many took CI past its 30 minutes: the four tests share one file, so one process runs them)."""
    ci = HYPOTHESIS_PROFILE == "ci"
    return settings(max_examples=quick_examples * (2 if ci else 1), derandomize=not ci, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
