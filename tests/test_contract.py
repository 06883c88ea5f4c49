"""The scheme contract's typed parts: options, the state after describe, population kinds, one emulator.

Conversions of small nets only (no simulation): a few seconds.
"""

import dataclasses
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import brianconv
from brianconv.description import Kind
from brianconv.schemes.options import SchemeState

METHODS = ["rate", "ttfs", "tdsnn", "amos"]


@pytest.fixture(scope="module")
def pooled_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(8, 3)).eval()
    return model, torch.rand(12, 1, 4, 4)


@pytest.fixture(scope="module")
def networks(pooled_cnn):
    model, x = pooled_cnn
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {method: brianconv.convert(model, method, calibration=x) for method in METHODS}


@pytest.mark.parametrize("method", METHODS)
def test_every_population_has_a_kind_and_the_state_is_typed(networks, method):
    snn = networks[method]
    d = snn.description
    assert all(isinstance(p.kind, Kind) for p in d.populations), [p.name for p in d.populations if p.kind is None]
    assert d.population(d.input_population).kind is Kind.INPUT
    assert d.population(d.output_population).kind is Kind.OUTPUT
    assert any(p.kind in (Kind.MAXPOOL, Kind.UNITS) and p.layer == "2" for p in d.populations)  # the max-pool
    assert isinstance(d.state, SchemeState) and d.state.options is snn.scheme.options
    assert set(d.state.scales) == set(snn.calibration.scales)
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.state.scales = {}


@pytest.mark.parametrize("method", METHODS)
def test_saved_networks_keep_options_state_and_kinds(networks, method, tmp_path):
    snn = networks[method]
    snn.save(tmp_path / "net.pkl")
    loaded = brianconv.load_network(tmp_path / "net.pkl")
    assert loaded.scheme.options == snn.scheme.options
    assert type(loaded.description.state) is type(snn.description.state)
    assert [p.kind for p in loaded.description.populations] == [p.kind for p in snn.description.populations]
    assert loaded.description.fingerprint(4) == snn.description.fingerprint(4)


def _saved_without(obj, missing):
    """``obj`` pickled and loaded as if written before its fields ``missing`` existed."""
    old = object.__new__(type(obj))
    old.__dict__.update({k: v for k, v in obj.__dict__.items() if k not in missing})
    return pickle.loads(pickle.dumps(old))


def test_networks_saved_before_later_fields_load_with_their_defaults(networks):
    """Pickles written before a population's ``regular``, ``refractory``, ``membrane`` and ``kind``, a
    projection's ``namespace`` and a description's ``perturbations`` existed."""
    snn = networks["rate"]
    population, projection = snn.description.populations[1], snn.description.projections[0]
    loaded = _saved_without(population, ("regular", "refractory", "membrane", "kind"))
    assert (loaded.regular, loaded.refractory, loaded.membrane, loaded.kind) == ({}, None, None, None)
    assert loaded.equations == population.equations
    assert _saved_without(projection, ("namespace",)).namespace == {}
    d = dataclasses.replace(snn.description, populations=[
        pickle.loads(pickle.dumps(p)) if p is not population else loaded for p in snn.description.populations])
    assert d.fingerprint(4) == snn.description.fingerprint(4)
    old_description = _saved_without(d, ("perturbations",))
    assert old_description.perturbations == () and old_description.fingerprint(4) == d.fingerprint(4)
    old_description.population(old_description.input_population)  # the rest of the description is intact


def test_the_fingerprint_ignores_the_state(networks):
    d = networks["ttfs"].description
    assert dataclasses.replace(d, state=None).fingerprint(2) == d.fingerprint(2)


def test_forward_with_an_activation_sees_every_layer_in_order(pooled_cnn):
    model, x = pooled_cnn
    graph = brianconv.graph.trace(model, (1, 4, 4))
    seen = []

    def doubled_relu(layer, pre, inputs):
        seen.append(layer.name)
        return 2 * layer.activate(pre)

    out, values = graph.forward(x, record=True, activation=doubled_relu)
    assert seen == [layer.name for layer in graph]
    _, ann = graph.forward(x, record=True)
    np.testing.assert_array_equal(values[graph.input.name], 2 * ann[graph.input.name])  # the input is passed too
    assert not np.allclose(out, graph.forward(x))  # each layer reads what the previous one passed on
    np.testing.assert_array_equal(graph.forward(x, activation=lambda layer, pre, inputs: layer.activate(pre)),
                                  graph.forward(x))


def test_scheme_options_roundtrip_through_pickle():
    options = brianconv.schemes.get("rate")(duration=50, maxpool_tau=None).options
    assert pickle.loads(pickle.dumps(options)) == options
