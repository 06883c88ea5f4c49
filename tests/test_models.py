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
#: The recorded accuracy is on all 10,000 test images; on the 1,000-image sample the binomial
#: standard error is sqrt(p (1 - p) / 1000) < 0.45 points for p >= 98 %, so 2 points is > 4 of them.
ACCURACY_SLACK = 2.0


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
    assert accuracy >= recorded - ACCURACY_SLACK, f"{name}: {accuracy:.1f} % on the sample, {recorded} % recorded"


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
