"""Perturbation and reference explainers: planted models, the S-RISE kernel, a NumPy Spearman."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srise_jax import masks as masks_lib
from srise_jax import srise
from srise_jax.explainers import perturbation, references
from srise_jax.explainers.registry import explainer_kind, get_explainer

# Masks sized for 32x32 images (as in test_srise.py).
SRISE_SMALL = dict(num_patches=6, kernel_size=9, sigma=2.5)
RISE_SMALL = dict(grid=4, p=0.5)
MASKS = {"srise": SRISE_SMALL, "rise": RISE_SMALL,
         "corrrise_similar": SRISE_SMALL, "corrrise_dissimilar": SRISE_SMALL}
# corrrise_dissimilar is -corrrise_similar (tested below), so the slow
# compile-heavy checks run on the similar map only.
RANDOM_METHODS = ("srise", "rise", "corrrise_similar", "random")


def options(name, num_masks=24, batch_size=16):
    """Small options: 24 masks in chunks of 16 run a full and a short chunk."""
    if name not in MASKS:
        return {}
    return dict(MASKS[name], num_masks=num_masks, batch_size=batch_size)


def box(region, shape=(32, 32)):
    y0, y1, x0, x1 = region
    inside = np.zeros(shape, bool)
    inside[y0:y1, x0:x1] = True
    return inside


def top_fraction_inside(saliency, inside):
    """Fraction of the top-|inside| pixels of `saliency` that lie inside."""
    top = np.argsort(-np.asarray(saliency).ravel(), kind="stable")[:inside.sum()]
    return inside.ravel()[top].mean()


def test_registered_with_their_kinds():
    for name in ("srise", "rise", "corrrise_similar", "corrrise_dissimilar"):
        assert explainer_kind(name) == "perturbation"
    for name in ("random", "centre_prior"):
        assert explainer_kind(name) == "reference"
    assert get_explainer("srise") is perturbation.srise_map


@pytest.mark.parametrize("name", ["srise", "rise", "corrrise_similar"])
def test_planted_region_dominates_top_pixels(name, key, planted_region):
    embed_fn, params, region, probe, mate = planted_region
    fn = jax.jit(functools.partial(get_explainer(name), embed_fn,
                                   **options(name, 400, 50)))
    saliency = fn(params, probe, mate, key)
    assert saliency.shape == (32, 32)
    assert top_fraction_inside(saliency, box(region)) >= 0.6


def test_corrrise_separates_similar_and_dissimilar_regions(key):
    # Embedding: (R - 0.5, Q - 0.5, const). With fill 0.5 a masked pixel adds
    # nothing; the image agrees with the reference on R and opposes it on Q
    # (image Q dark, reference Q bright), so keeping R raises the cosine and
    # keeping Q lowers it.
    r_box, q_box = (8, 16, 12, 20), (20, 28, 4, 12)

    def embed_fn(params, images):
        parts = [images[:, y0:y1, x0:x1, :].reshape(images.shape[0], -1) - 0.5
                 for y0, y1, x0, x1 in (r_box, q_box)]
        const = jnp.broadcast_to(params, (images.shape[0], params.shape[0]))
        return jnp.concatenate(parts + [const], axis=1)

    rng = np.random.default_rng(1)
    image = rng.uniform(0.2, 1.0, (32, 32, 3)).astype(np.float32)
    reference = image.copy()
    y0, y1, x0, x1 = q_box
    image[y0:y1, x0:x1] = rng.uniform(0.0, 0.2, (y1 - y0, x1 - x0, 3))
    reference[y0:y1, x0:x1] = rng.uniform(0.8, 1.0, (y1 - y0, x1 - x0, 3))
    params = jnp.full((16,), 0.5, jnp.float32)
    similar, dissimilar = jax.jit(functools.partial(
        perturbation.corrrise, embed_fn, num_masks=400, batch_size=50,
        fill=0.5, **SRISE_SMALL))(params, jnp.asarray(image),
                                  jnp.asarray(reference), key)
    assert top_fraction_inside(similar, box(r_box)) >= 0.6
    assert top_fraction_inside(dissimilar, box(q_box)) >= 0.6
    assert np.mean(np.asarray(similar)[box(q_box)]) < 0
    np.testing.assert_array_equal(dissimilar, -similar)


def test_srise_equals_srise_pair_saliency_a(key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    n, fill = 40, 0.3  # 40 masks in chunks of 16: a short last chunk too.
    got = jax.jit(functools.partial(
        perturbation.srise_map, embed_fn, num_masks=n, batch_size=16,
        fill=fill, reference_side=None, **SRISE_SMALL))(params, probe, mate, key)
    masks = masks_lib.gaussian_masks(key, n, (32, 32), **SRISE_SMALL)
    want = jax.jit(functools.partial(
        srise.srise_pair, embed_fn, batch_size=16, fill=fill))(
            params, probe, mate, masks).saliency_a
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_rise_matches_numpy_weighted_average(key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    n = 24
    got = jax.jit(functools.partial(
        perturbation.rise_map, embed_fn, num_masks=n, batch_size=16, fill=0.0,
        **RISE_SMALL))(params, probe, mate, key)
    # Independent: the same masks made by masks.rise_masks, one masked image
    # (RISE's I * M: black fill) at a time, sum_i s_i M_i / sum_i M_i.
    masks = np.asarray(masks_lib.rise_masks(key, n, (32, 32), **RISE_SMALL),
                       np.float64)
    unit = lambda e: np.asarray(e, np.float64)[0] / np.linalg.norm(e)
    ref = unit(embed_fn(params, mate[None]))
    scores = np.array([
        unit(embed_fn(params, jnp.asarray(
            np.asarray(probe) * m[..., None], jnp.float32)[None])) @ ref
        for m in masks])
    want = np.tensordot(scores, masks, 1) / masks.sum(0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", RANDOM_METHODS + ("centre_prior",))
def test_jit_equals_eager(name, key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    fn = get_explainer(name)
    eager = fn(embed_fn, params, probe, mate, key, **options(name))
    jitted = jax.jit(functools.partial(fn, embed_fn, **options(name)))(
        params, probe, mate, key)
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", RANDOM_METHODS)
def test_same_key_same_map_other_key_other_map(name, key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    fn = jax.jit(functools.partial(get_explainer(name), embed_fn,
                                   **options(name)))
    first = np.asarray(fn(params, probe, mate, key))
    np.testing.assert_array_equal(fn(params, probe, mate, key), first)
    other = np.asarray(fn(params, probe, mate, jax.random.key(1)))
    assert np.abs(other - first).max() > 1e-3


def test_vmap_over_pairs_and_keys(key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    fn = jax.jit(functools.partial(perturbation.srise_map, embed_fn,
                                   **options("srise")))
    keys = jax.random.split(key, 2)
    images = jnp.stack([probe, mate])
    refs = jnp.stack([mate, probe])
    batched = jax.jit(jax.vmap(fn, in_axes=(None, 0, 0, 0)))(
        params, images, refs, keys)
    for i in range(2):
        np.testing.assert_allclose(batched[i],
                                   fn(params, images[i], refs[i], keys[i]),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["random", "centre_prior"])
def test_reference_maps_ignore_model_and_image(name, key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    fn = get_explainer(name)
    first = fn(embed_fn, params, probe, mate, key)
    other_embed = lambda p, x: x.reshape(x.shape[0], -1) * p
    second = fn(other_embed, 2.0, jnp.flip(mate, 0), probe * 0.5, key)
    np.testing.assert_array_equal(first, second)


def test_centre_prior_peaks_at_centre_and_is_symmetric():
    prior = np.asarray(references.centre_prior(
        None, None, jnp.zeros((33, 41, 3)), None, jax.random.key(0)))
    assert np.unravel_index(prior.argmax(), prior.shape) == (16, 20)
    np.testing.assert_allclose(prior, prior[::-1], atol=1e-7)
    np.testing.assert_allclose(prior, prior[:, ::-1], atol=1e-7)
    # A Gaussian with sigma = 0.25 * 33 along the centre column.
    want = np.exp(-0.5 * ((np.arange(33) - 16) / (0.25 * 33)) ** 2)
    np.testing.assert_allclose(prior[:, 20], want, rtol=1e-5)


def numpy_average_ranks(x):
    """Ranks by argsort-of-argsort, then each tie group set to its mean rank."""
    ranks = np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def test_spearman_matches_numpy_with_ties():
    rng = np.random.default_rng(2)
    n = 9
    scores = rng.normal(size=n)
    scores[3] = scores[5]  # a tie in the scores too
    columns = np.stack([
        rng.normal(size=n),                           # no ties
        rng.integers(0, 2, n).astype(float),          # binary: many ties
        np.array([0, 0, 1, .5, .5, .5, 1, 1, 0.2]),   # several tie groups
        -scores,                                      # perfectly anti-ranked
    ], axis=1)
    want = np.array([np.corrcoef(numpy_average_ranks(scores),
                                 numpy_average_ranks(c))[0, 1]
                     for c in columns.T])
    got = perturbation.spearman(jnp.asarray(scores, jnp.float32),
                                jnp.asarray(columns, jnp.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.isclose(got[3], -1.0)
    ranks = perturbation.average_ranks(jnp.asarray(columns[:, 2], jnp.float32))
    np.testing.assert_array_equal(ranks, numpy_average_ranks(columns[:, 2]))


def test_spearman_of_a_constant_column_is_zero():
    got = perturbation.spearman(jnp.arange(5.0), jnp.ones((5, 2)))
    np.testing.assert_array_equal(got, np.zeros(2))
