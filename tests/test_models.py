"""The shipped models: names, eval mode, accuracy on the bundled sample, and damaged files."""

import copy
import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

from brianconv import models
from brianconv.datasets import load_sample
from brianconv.errors import InvalidValueError, UnknownMethodError
from brianconv.graph import trace

NAMES = ["avgpool_cnn", "functional_net", "inception_cat", "lopez_randulfe_cnn", "mlp", "mobilenet_relu6", "resnet_bn",
         "small_cnn", "small_cnn_se", "small_cnn_silu"]
#: The recorded accuracy ``p`` is on all N = 10,000 test images; the bundled sample holds n = 1,000 of
#: them. Read as a sample without replacement, its accuracy has the standard error
#: ``sqrt(p (1 - p) / n (1 - n / N))`` (0.19 points at p = 99.6 %, 0.45 at 97.7 %); the test allows
#: ``SAMPLE_SIGMAS`` of them either way. Measured (this test's loop, 2026-12-02): the largest
#: deviation is 1.46 standard errors (small_cnn: 98.3 % on the sample, 98.78 % recorded).
SAMPLE_SIGMAS, SAMPLE_SIZE, TEST_SET_SIZE = 3.0, 1000, 10000


def _sample_standard_error(percent):
    """Standard error (percentage points) of the sample's accuracy for a test-set accuracy ``percent``."""
    p = percent / 100
    return 100 * np.sqrt(p * (1 - p) / SAMPLE_SIZE * (1 - SAMPLE_SIZE / TEST_SET_SIZE))


@pytest.fixture(scope="module")
def sample():
    x, y = load_sample()
    return torch.as_tensor(x), y


@pytest.fixture
def models_copy(tmp_path, monkeypatch):
    """A private copy of the models folder, used through $BRIANCONV_MODELS."""
    folder = tmp_path / "models"
    shutil.copytree(models.models_dir(), folder, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("BRIANCONV_MODELS", str(folder))
    assert models.models_dir() == folder
    return folder


def test_available():
    assert models.available() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_load_gives_an_eval_model_with_the_recorded_accuracy(name, sample):
    x, y = sample
    x = models.model_inputs(name, x)
    model = models.load(name)
    assert not model.training and not any(m.training for m in model.modules())
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (1000, 10)
    accuracy = 100 * float(np.mean(logits.argmax(1).numpy() == y))
    recorded = models.metadata(name)["test_accuracy_percent"]
    bound = SAMPLE_SIGMAS * _sample_standard_error(recorded)
    assert abs(accuracy - recorded) <= bound, (f"{name}: {accuracy:.1f} % on the sample, {recorded} % recorded "
                                               f"(allowed {bound:.2f} points)")


@pytest.mark.parametrize("name", NAMES)
def test_metadata_checksum_matches_the_weights(name):
    meta = models.metadata(name)
    assert meta["name"] == name and meta["weights_file"] == f"{name}.pt"
    digest = hashlib.sha256((models.models_dir() / f"{name}.pt").read_bytes()).hexdigest()
    assert digest == meta["weights_sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_shipped_models_trace_exactly(name, sample):
    model = models.load(name)
    graph = trace(model, (1, 28, 28))
    x = models.model_inputs(name, sample[0][:20])
    with torch.no_grad():
        expected32 = model(x).numpy()
        expected64 = copy.deepcopy(model).double()(x.double()).numpy()
    ours = graph.forward(x)
    if graph.head is not None:  # the graph returns the logits; the model applies its head to them
        assert graph.head == "log_softmax"
        ours = torch.log_softmax(torch.as_tensor(ours), dim=1).numpy()
    np.testing.assert_allclose(ours, expected64, rtol=0, atol=1e-10)  # the same function, in float64
    np.testing.assert_allclose(ours, expected32, rtol=1e-5, atol=1e-5)  # float32 rounding of logits up to ~40
    assert graph.output.out_shape == (10,)


@pytest.mark.parametrize("call", [models.load, models.metadata])
def test_unknown_names_list_the_available_models(call):
    with pytest.raises(UnknownMethodError) as info:
        call("resnet50")
    message = str(info.value)
    assert "'resnet50'" in message
    assert all(name in message for name in NAMES)


def test_a_corrupted_weights_file_fails_the_checksum(models_copy):
    path = models_copy / "small_cnn.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(InvalidValueError, match="checksum") as info:
        models.load("small_cnn")
    assert "small_cnn.pt" in str(info.value)
    models.load("mlp")  # the others are untouched


def test_a_checkpoint_of_another_architecture_is_rejected(models_copy):
    # mlp's weights saved as small_cnn, with a matching checksum: only the architecture check can catch it
    shutil.copyfile(models_copy / "mlp.pt", models_copy / "small_cnn.pt")
    meta_path = models_copy / "small_cnn.json"
    meta = json.loads(meta_path.read_text())
    meta["weights_sha256"] = hashlib.sha256((models_copy / "small_cnn.pt").read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InvalidValueError, match="does not fit the architecture 'small_cnn'"):
        models.load("small_cnn")


def test_a_model_without_weights_is_not_available(models_copy):
    (models_copy / "mlp.pt").unlink()
    assert models.available() == [name for name in NAMES if name != "mlp"]
    with pytest.raises(UnknownMethodError, match="'mlp'"):
        models.load("mlp")


def test_model_inputs_apply_the_recorded_normalisation(sample):
    x = sample[0][:3]
    assert models.model_inputs("small_cnn", x) is x
    normalised = models.model_inputs("functional_net", x)
    torch.testing.assert_close(normalised, (x - 0.1307) / 0.3081)
    assert float(normalised.min()) < 0  # the background is negative: what the front-end must handle
