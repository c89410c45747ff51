"""The score convention (`fashion_rerank.scores`): which activation a saved model declares, and applying it."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fashion_rerank.scores import DEFAULT, Activation, declared_activation, resolve, sigmoid

IDENTITY = "torch.nn.modules.linear.Identity"
SIGMOID = "torch.nn.modules.activation.Sigmoid"


def _folder(tmp_path, st_config=None, config=None):
    (tmp_path / "config.json").write_text(json.dumps({"num_labels": 1, **(config or {})}))
    if st_config is not None:
        (tmp_path / "config_sentence_transformers.json").write_text(json.dumps(st_config))
    return tmp_path


def test_each_place_a_declaration_can_live_in_the_order_sentence_transformers_reads_them(tmp_path):
    # newest place wins over the older ones, as CrossEncoder reads them
    d = _folder(
        tmp_path,
        {"activation_fn": IDENTITY},
        {"sentence_transformers": {"activation_fn": SIGMOID}, "sbert_ce_default_activation_function": SIGMOID},
    )
    a = declared_activation(d)
    assert (a.name, a.declared, a.source) == ("identity", IDENTITY, "config_sentence_transformers.json:activation_fn")
    _folder(tmp_path, {"model_type": "CrossEncoder"}, {"sentence_transformers": {"activation_fn": IDENTITY}})
    assert declared_activation(d).source == "config.json:sentence_transformers.activation_fn"
    assert declared_activation(d).name == "identity"
    _folder(tmp_path, {}, {"sbert_ce_default_activation_function": IDENTITY})
    assert declared_activation(d).source == "config.json:sbert_ce_default_activation_function"
    _folder(tmp_path, {"activation_fn": None})
    assert declared_activation(d) == DEFAULT  # nothing declared, one label: sigmoid
    _folder(tmp_path, {}, {"num_labels": 3})
    assert declared_activation(d).name == "identity"  # CrossEncoder's default for several labels


def test_an_activation_that_cannot_be_applied_is_refused(tmp_path):
    with pytest.raises(ValueError, match="ReLU"):
        declared_activation(_folder(tmp_path, {"activation_fn": "torch.nn.modules.activation.ReLU"}))
    with pytest.raises(ValueError, match="my_module.MyAct"):
        resolve("my_module.MyAct")
    with pytest.raises(ValueError, match="unknown activation"):
        Activation("softplus")


def test_invalid_json_is_a_clear_error(tmp_path):
    (tmp_path / "config_sentence_transformers.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        declared_activation(tmp_path)


@settings(deadline=None, max_examples=50)
@given(st.lists(st.floats(-60, 60, allow_nan=False, width=32), min_size=1, max_size=50))
def test_the_functions_are_what_the_torch_classes_compute(xs):
    # (the integration round trip compares with torch itself; here the textbook formulas, without torch)
    x = np.asarray(xs, dtype=np.float32)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(resolve(SIGMOID)(x), 1 / (1 + np.exp(-x64)), atol=1e-7)
    np.testing.assert_array_equal(resolve(IDENTITY)(x), x)
    np.testing.assert_allclose(resolve("torch.nn.modules.activation.Tanh")(x), np.tanh(x64), atol=1e-7)
    assert resolve(IDENTITY)(x) is not x  # a copy: callers may keep logits and scores apart


def test_manifest_round_trip():
    a = resolve(IDENTITY, source="config_sentence_transformers.json:activation_fn")
    entry = json.loads(json.dumps(a.to_manifest()))
    assert entry["torch"] == IDENTITY and Activation.from_manifest(entry) == a
    assert Activation.from_manifest("sigmoid").name == "sigmoid"
    with pytest.raises(ValueError):
        Activation.from_manifest({"declared": IDENTITY})


def test_sigmoid_is_stable_at_the_extremes():
    s = sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    assert s.dtype == np.float32 and s.tolist() == [0.0, 0.5, 1.0]


def test_the_fake_backend_serves_the_default_activation():
    from reranker.backends.fake import FakeBackend

    b = FakeBackend()
    logits = b.score("red dress", ["red dress", "blue shoes"])
    np.testing.assert_array_equal(b.scores(logits), sigmoid(logits))
