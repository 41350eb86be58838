"""S-RISE's options beyond the paper (issue 14 section 2), each against a per-mask NumPy loop.

The reference embeds one masked image at a time, builds every fill in
NumPy (the random fills' normal draws and choices come from the mask's key,
as the kernel documents), and forms each estimator in float64 from the
per-mask scores: an implementation independent of the kernel's chunked,
vmapped and scanned sums.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srise_jax import config as config_lib
from srise_jax import masks as masks_lib
from srise_jax import srise
from srise_jax.explainers import perturbation
from test_srise import numpy_blur  # the blur fill's NumPy reference, written once

# Absolute small patches for 32x32 images unless a test scales them.
BASE = srise.SRiseConfig(num_masks=24, num_patches=6, kernel_size=9, sigma=2.5,
                         batch_size=16, reference_side=None)


def numpy_fill(image, fill, mask_key):
    """The fill of one mask, in NumPy; random draws from the mask's key."""
    image = np.asarray(image, np.float64)
    mean = image.mean((0, 1))
    if not isinstance(fill, str):
        return np.broadcast_to(np.asarray(fill, np.float64), image.shape)
    # One fixed field (the kernel's FILL_NOISE_SEED) rolled by the mask's offset.
    base = np.asarray(jax.random.normal(jax.random.key(srise.FILL_NOISE_SEED), image.shape))
    dy, dx = np.asarray(jax.random.randint(jax.random.fold_in(mask_key, 1), (2,), 0,
                                           jnp.array(image.shape[:2])))
    noisy = mean + image.std((0, 1)) * np.roll(base, (-dy, -dx), axis=(0, 1))
    kind = {"mean": 0, "blur": 1, "noise": 2}.get(fill)
    if fill == "mixed":
        kind = int(jax.random.randint(jax.random.fold_in(mask_key, 2), (), 0, 3))
    return [np.broadcast_to(mean, image.shape), numpy_blur(image), noisy][kind]


def reference_map(embed_fn, params, image, reference, key, config):
    """The map of `srise_map` by a loop over masks, float64 estimators."""
    shape = image.shape[:2]
    keys, index = srise.config_sources(config, key)
    all_masks = np.asarray(srise.config_masks(config, shape)((keys, index)), np.float64)

    def unit(e):
        e = np.asarray(e, np.float64)[0]
        return e / np.linalg.norm(e)

    ref = unit(embed_fn(params, reference[None]))
    scores = []
    for m, k in zip(all_masks, keys):
        fill = numpy_fill(image, config.fill, k)
        masked = np.asarray(image) * m[..., None] + fill * (1 - m[..., None])
        scores.append(unit(embed_fn(params, jnp.asarray(masked, jnp.float32)[None])) @ ref)
    s = np.array(scores)
    n = len(s)
    weighted = np.tensordot(s, all_masks, 1)
    coverage = all_masks.sum(0)
    if config.normalize == "none":
        return weighted
    if config.normalize == "coverage":
        # A pixel no mask touched gets the mean score (the kernel's rule).
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(coverage > 0, weighted / coverage, s.mean())
    centred = np.tensordot(s - s.mean(), all_masks, 1)
    if config.normalize == "centred":
        return centred / n
    spread = ((all_masks - all_masks.mean(0)) ** 2).sum(0)
    # A pixel whose mask value never varies has no slope: 0 (the kernel's rule).
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(spread > 1e-6 * n, centred / spread, 0.0)


CASES = {
    "regression": dict(normalize="regression"),
    "centred": dict(normalize="centred"),
    "antithetic": dict(antithetic=True),
    "antithetic-odd-n": dict(antithetic=True, num_masks=21),
    "stratified": dict(centres="stratified", num_patches=9),
    "multiscale": dict(scales=(0.5, 1.0, 2.0)),
    "fill=noise": dict(fill="noise"),
    "fill=mixed": dict(fill="mixed"),
    "relative": dict(reference_side=64),
    "all": dict(fill="mixed", antithetic=True, centres="stratified", num_patches=9,
                scales=(1.0, 2.0), normalize="regression", reference_side=48),
}


@pytest.mark.parametrize("case", list(CASES))
def test_option_matches_per_mask_numpy_reference(key, planted_region, case):
    embed_fn, params, _, probe, mate = planted_region
    config = dataclasses.replace(BASE, **CASES[case])
    options = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
               if f.name not in ("share_probe_masks",)}
    got = jax.jit(perturbation.srise_map, static_argnums=0,
                  static_argnames=tuple(options))(embed_fn, params, probe, mate, key, **options)
    want = reference_map(embed_fn, params, probe, mate, key, config)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5 * np.abs(want).max())


def test_triplet_uses_the_same_options_as_the_single_map(key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    config = dataclasses.replace(BASE, **CASES["all"])
    out = jax.jit(srise.srise_triplet, static_argnums=(0, 6))(
        embed_fn, params, probe, mate, jnp.flip(mate, 0), key, config)
    key_mate, _ = jax.random.split(key)
    want = reference_map(embed_fn, params, probe, mate, key_mate, config)
    np.testing.assert_allclose(out.mate.saliency_a, want, rtol=2e-4,
                               atol=2e-5 * np.abs(want).max())


def test_patch_size_scales_to_the_image_and_paper_keeps_pixels():
    assert srise.SRiseConfig().patch_size((150, 150)) == (54, 7.0 * 150 / 112)
    assert srise.SRiseConfig().patch_size((112, 112)) == (40, 7.0)
    assert srise.SRiseConfig(reference_side=None).patch_size((150, 150)) == (40, 7.0)
    from srise_jax import presets
    assert presets.preset("paper").patch_size((150, 150)) == (40, 7.0)


def below_half(config, side, key, n=150):
    make = srise.config_masks(config, (side, side))
    return float((np.asarray(make(srise.config_sources(
        dataclasses.replace(config, num_masks=n), key))) < 0.5).mean())


def test_scaled_patches_perturb_a_150_chip_as_much_as_a_112_crop(key):
    """The issue's measurement: absolute patches hide far more of a 150 chip."""
    default = srise.SRiseConfig()
    at_112 = below_half(default, 112, key)
    scaled_150 = below_half(default, 150, key)
    absolute_150 = below_half(srise.SRiseConfig(reference_side=None), 150, key)
    assert abs(scaled_150 - at_112) < 0.02
    assert absolute_150 > at_112 + 0.1


def test_antithetic_pairs_cover_every_pixel_equally(key):
    config = dataclasses.replace(BASE, antithetic=True, num_masks=40)
    masks = srise.config_masks(config, (32, 32))(srise.config_sources(config, key))
    np.testing.assert_allclose(np.asarray(masks).sum(0), 20.0, rtol=1e-5)


# Share of the planted region's 64 pixels among the map's top 64 (chance:
# 64/1024). Measured over keys 0-2 at N = 300: 0.86-0.94 for the default
# and for each option except antithetic pairs, which fall to 0.55-0.69 here
# (0.48-0.52 with the paper's patch sizes): a complement of a mask keeps too
# little of the region for its score to vary with it. Kept as an option,
# measured on faces in the ablation, not the default.
FLOOR = {"antithetic": 0.3}


@pytest.mark.parametrize("case", ["regression", "centred", "antithetic", "stratified",
                                  "multiscale", "fill=noise", "fill=mixed"])
def test_planted_region_stays_on_top_under_each_option(key, planted_region, case):
    embed_fn, params, (y0, y1, x0, x1), probe, mate = planted_region
    options = dict(dataclasses.asdict(dataclasses.replace(BASE, num_masks=300)), **CASES[case])
    del options["share_probe_masks"]
    saliency = np.asarray(perturbation.srise_map(embed_fn, params, probe, mate, key, **options))
    inside = np.zeros((32, 32), bool)
    inside[y0:y1, x0:x1] = True
    top = np.argsort(saliency.ravel())[::-1][:inside.sum()]
    assert inside.ravel()[top].mean() > FLOOR.get(case, 0.8)


def test_random_fills_need_keyed_sources_and_are_deterministic(key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    given = masks_lib.gaussian_masks(key, 8, (32, 32), num_patches=6, kernel_size=9)
    with pytest.raises(ValueError, match="drawn per mask"):
        srise.srise_pair(embed_fn, params, probe, mate, given, fill="noise")
    one = perturbation.srise_map(embed_fn, params, probe, mate, key, num_masks=16,
                                 fill="mixed", reference_side=None, kernel_size=9)
    two = perturbation.srise_map(embed_fn, params, probe, mate, key, num_masks=16,
                                 fill="mixed", reference_side=None, kernel_size=9)
    other = perturbation.srise_map(embed_fn, params, probe, mate, jax.random.key(7),
                                   num_masks=16, fill="mixed", reference_side=None,
                                   kernel_size=9)
    np.testing.assert_array_equal(one, two)
    assert not np.allclose(one, other)


@pytest.mark.parametrize("bad", [dict(normalize="median"), dict(fill="jitter"),
                                 dict(centres="sobol"), dict(scales=()),
                                 dict(scales=(1.0, -2.0)), dict(reference_side=0)])
def test_bad_options_raise_one_clear_error(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        srise.SRiseConfig(**bad)


def test_regression_needs_the_square_sums():
    sums = srise.SaliencySums(jnp.ones((1, 4, 4)), jnp.ones((4, 4)), jnp.ones((1, 3)),
                              jnp.ones((1,)))
    with pytest.raises(ValueError, match="coverage_sq"):
        srise.finalize(sums, normalize="regression")
    assert config_lib.RANDOM_FILLS == ("noise", "mixed")
