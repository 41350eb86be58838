"""Tests for srise_jax.metrics (Deletion / Insertion, paper section 3.3).

The planted model reads only a square region R of the image, so the ideal
saliency map (R first) and its reverse (R last) have known answers, and a
plain NumPy per-count loop gives independent reference values.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srise_jax.metrics import (MetricResult, deletion, deletion_insertion, insertion,
                               similarity_curve, undefined_reason)

METRICS = {"deletion": deletion, "insertion": insertion}
THRESHOLD = 0.5
OFFSET = 0.5  # the planted embedding is (R pixels - OFFSET): signed, so a fill flips it


@functools.lru_cache(maxsize=None)
def region_embed_fn(top, left, side):
    """Planted model: embedding = flattened pixels of R minus params["offset"].

    Cached so that one region gives one function object and jit caches hit.
    """

    def embed_fn(params, images):
        region = images[:, top : top + side, left : left + side, :]
        return region.reshape(images.shape[0], -1) - params["offset"]

    return embed_fn


def region_embed_np(images, top, left, side):
    region = images[:, top : top + side, left : left + side, :].astype(np.float64)
    return region.reshape(images.shape[0], -1) - OFFSET


class Case:
    """A planted model, an image with a bright R, a mate and a non-mate."""

    def __init__(self, size, top, left, side, seed):
        self.size, self.region = size, (top, left, side)
        self.embed_fn = region_embed_fn(top, left, side)
        self.params = {"offset": jnp.float32(OFFSET)}
        rng = np.random.default_rng(seed)
        inside = np.zeros((size, size), bool)
        inside[top : top + side, left : left + side] = True
        self.inside = inside
        # Bright R on a dark background: the per-channel mean is dark, so a
        # filled R pixel pulls the embedding toward the opposite sign.
        image = rng.uniform(0.0, 0.3, (size, size, 3))
        image[inside] = rng.uniform(0.6, 1.0, (inside.sum(), 3))
        self.image = image.astype(np.float32)
        self.mate = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1).astype(np.float32)
        # A dark R: a non-match for the image, yet close to its constant mean image.
        self.nonmate = rng.uniform(0.0, 0.3, (size, size, 3)).astype(np.float32)
        flat_index = np.arange(size * size, dtype=np.float32).reshape(size, size)
        self.maps = {
            "ideal": inside.astype(np.float32),
            "reversed": -inside.astype(np.float32),
            "random": rng.uniform(size=(size, size)).astype(np.float32),
            "raster": -flat_index,
            "reverse_raster": flat_index,
            "constant": np.ones((size, size), np.float32),
        }

    @property
    def num_pixels(self):
        return self.size * self.size

    def run(self, name, saliency, threshold=THRESHOLD, *, reference=None, step=1, batch_size=16):
        reference = self.mate if reference is None else reference
        fn = _jitted(name, self.embed_fn, step, batch_size)
        return fn(self.params, self.image, reference, saliency, threshold)

    def numpy_curve(self, name, saliency, reference=None):
        """Independent per-count loop: s(c) for every c in 0..H*W, in float64."""
        reference = self.mate if reference is None else reference
        n, (top, left, side) = self.num_pixels, self.region
        pixels = self.image.reshape(n, 3).astype(np.float64)
        fill = pixels.mean(axis=0)
        order = np.argsort(-saliency.reshape(-1), kind="stable")  # ties: lower index first
        ref = region_embed_np(reference[None], top, left, side)[0]
        curve = []
        for count in range(n + 1):
            if name == "deletion":
                x = pixels.copy()
                x[order[:count]] = fill
            else:
                x = np.tile(fill, (n, 1))
                x[order[:count]] = pixels[order[:count]]
            e = region_embed_np(x.reshape(1, self.size, self.size, 3), top, left, side)[0]
            curve.append(e @ ref / (np.linalg.norm(e) * np.linalg.norm(ref)))
        return np.array(curve)


@functools.lru_cache(maxsize=None)
def _jitted(name, embed_fn, step, batch_size):
    return jax.jit(functools.partial(METRICS[name], embed_fn, step=step, batch_size=batch_size))


def flips(curve, name, threshold=THRESHOLD):
    return curve >= threshold if name == "insertion" else curve < threshold


def numpy_reason(curve, name, threshold=THRESHOLD):
    """Why the fraction is undefined, from the whole curve (None if defined).

    The curve's last point is the unchanged image for Insertion, its first
    for Deletion: both are cos(image, reference), the pair's own score.
    """
    flipped = flips(curve, name, threshold)
    if name == "insertion":
        if curve[-1] < threshold:
            return "rejected"
        return "already_flipped" if flipped[0] else None
    if flipped[0]:
        return "rejected"
    return None if flipped.any() else "cannot_flip"


def numpy_fraction(curve, name, threshold=THRESHOLD):
    if numpy_reason(curve, name, threshold) is not None:
        return np.nan
    return np.argmax(flips(curve, name, threshold)) / (len(curve) - 1)


CASE = Case(size=32, top=8, left=12, side=8, seed=0)  # |R| = 64 of 1024 pixels
SMALL = Case(size=16, top=4, left=5, side=6, seed=1)  # |R| = 36 of 256 pixels


@pytest.mark.parametrize("name", ["deletion", "insertion"])
@pytest.mark.parametrize("step", [1, 16])
def test_ideal_map_flips_within_region_and_reversed_map_needs_far_more(name, step):
    region = CASE.inside.sum()
    ideal = CASE.run(name, CASE.maps["ideal"], step=step)
    reversed_ = CASE.run(name, CASE.maps["reversed"], step=step)
    assert 0 < float(ideal.fraction) <= (region + step) / CASE.num_pixels
    # The model sees no change until R's pixels, ranked last, are reached.
    assert float(reversed_.fraction) > (CASE.num_pixels - region) / CASE.num_pixels


@pytest.mark.parametrize("name", ["deletion", "insertion"])
@pytest.mark.parametrize("map_name", ["ideal", "random", "reversed"])
@pytest.mark.parametrize("step", [7, 16])
def test_coarse_step_is_pixel_exact_when_curve_crosses_once(name, map_name, step):
    saliency = CASE.maps[map_name]
    reference = CASE.numpy_curve(name, saliency)
    flipped = flips(reference, name)
    # Precondition: one crossing (no flip back), so every step must agree.
    assert flipped.any() and not flipped[0]
    assert flipped[np.argmax(flipped) :].all()
    exact = CASE.run(name, saliency, step=1)
    coarse = CASE.run(name, saliency, step=step)
    assert float(coarse.fraction) == float(exact.fraction) == numpy_fraction(reference, name)


@pytest.mark.parametrize("name", ["deletion", "insertion"])
@pytest.mark.parametrize("step", [1, 5])
def test_matches_numpy_per_count_loop_with_tied_saliency(name, step):
    # Four saliency levels on 256 pixels: ties everywhere, so the ranking
    # must break them by raster order exactly as the stable NumPy sort does.
    saliency = np.random.default_rng(2).integers(0, 4, (16, 16)).astype(np.float32)
    reference = SMALL.numpy_curve(name, saliency)
    assert np.min(np.abs(reference - THRESHOLD)) > 1e-4  # float32 vs float64 cannot disagree
    # Not jitted: the plain call must work too.
    result = METRICS[name](
        SMALL.embed_fn, SMALL.params, SMALL.image, SMALL.mate, saliency, THRESHOLD,
        step=step, batch_size=8,
    )
    assert isinstance(result, MetricResult)
    assert float(result.fraction) == numpy_fraction(reference, name)
    counts, curve = np.asarray(result.counts), np.asarray(result.curve)
    evaluated = ~np.isnan(curve)
    assert evaluated.sum() > 1
    np.testing.assert_allclose(curve[evaluated], reference[counts[evaluated]], atol=1e-5)


def test_curve_layout_and_early_stop():
    n = CASE.num_pixels
    exact = CASE.run("deletion", CASE.maps["ideal"], step=1, batch_size=8)
    flip = round(float(exact.fraction) * n)
    np.testing.assert_array_equal(exact.counts, np.arange(n + 1))
    # Whole batches up to the one holding the flip, and nothing after.
    evaluated = ~np.isnan(np.asarray(exact.curve))
    assert evaluated.sum() == (flip // 8 + 1) * 8 < n // 4
    assert evaluated[: flip + 1].all()

    coarse = CASE.run("deletion", CASE.maps["random"], step=16, batch_size=8)
    counts, curve = np.asarray(coarse.counts), np.asarray(coarse.curve)
    assert counts.shape == curve.shape == (len(range(0, n + 1, 16)) + 15,)
    used = counts >= 0
    assert used[: used.sum()].all()  # unused slots (-1) only at the end
    assert np.all(np.diff(counts[used]) > 0)
    assert set(range(0, n + 1, 16)) <= set(counts[used].tolist())
    assert np.isnan(curve[~used]).all()
    flip = round(float(coarse.fraction) * n)
    assert flip % 16 != 0  # it came from the refined bracket
    assert curve[counts == flip] < THRESHOLD <= curve[counts == flip - 1]
    # Grid batches up to the flipping bracket's end (grid index hit), then
    # at most the bracket's 15 interior counts.
    hit = flip // 16 + 1
    assert (~np.isnan(curve)).sum() <= (hit // 8 + 1) * 8 + 15 < len(counts)


@pytest.mark.parametrize("name", ["deletion", "insertion"])
@pytest.mark.parametrize("step", [1, 16])
def test_nan_when_decision_already_flipped_before_any_change(name, step):
    # Deletion: the non-mate already does not match. Insertion: the constant
    # mean image already matches the (dark) non-mate.
    reference = CASE.numpy_curve(name, CASE.maps["ideal"], reference=CASE.nonmate)
    assert flips(reference, name)[0]
    result = CASE.run(name, CASE.maps["ideal"], reference=CASE.nonmate, step=step)
    assert np.isnan(float(result.fraction))
    # The pair (image, non-mate) is rejected: for Insertion that outranks
    # the start image already matching.
    assert undefined_reason(result) == numpy_reason(reference, name) == "rejected"
    assert float(result.curve[0]) == pytest.approx(reference[0], abs=1e-5)


@pytest.mark.parametrize("step", [1, 16])
def test_insertion_whose_start_already_matches_an_accepted_pair(step):
    # At threshold -1 every image matches, the pair included.
    result = CASE.run("insertion", CASE.maps["ideal"], -1.0, step=step)
    assert np.isnan(float(result.fraction))
    assert undefined_reason(result) == "already_flipped"


def test_insertion_on_a_rejected_pair_is_undefined_even_if_the_curve_crosses():
    # A threshold between the full image's score and the curve's maximum:
    # some partial insertion matches, yet the model rejects the pair itself,
    # so the first crossing is not what the fraction asks about.
    # The reference is Insertion's own image at count 32 of the ideal map
    # (half of R restored), so the curve peaks at 1.0 there.
    saliency = CASE.maps["ideal"]
    order = np.argsort(-saliency.reshape(-1), kind="stable")
    pixels = CASE.image.reshape(-1, 3)
    partial = np.tile(pixels.mean(0), (CASE.num_pixels, 1))
    partial[order[:32]] = pixels[order[:32]]
    reference = partial.reshape(CASE.image.shape).astype(np.float32)
    curve = CASE.numpy_curve("insertion", saliency, reference=reference)
    assert curve.max() > curve[-1] + 1e-3, "the planted curve must overshoot"
    threshold = (curve.max() + curve[-1]) / 2
    assert flips(curve, "insertion", threshold).any() and curve[0] < threshold
    result = CASE.run("insertion", saliency, threshold, reference=reference)
    assert np.isnan(float(result.fraction))
    assert undefined_reason(result) == "rejected"


@pytest.mark.parametrize("name", ["deletion", "insertion"])
def test_similarity_equal_to_threshold_is_a_match(name):
    first = CASE.run(name, CASE.maps["ideal"])
    flip = round(float(first.fraction) * CASE.num_pixels)
    at_flip = first.curve[flip]  # float32, recomputed bit-identically below
    again = CASE.run(name, CASE.maps["ideal"], at_flip)
    flip_again = round(float(again.fraction) * CASE.num_pixels)
    if name == "insertion":
        assert flip_again == flip  # cos == threshold already matches
    else:
        assert flip_again > flip  # cos == threshold is still a match


@pytest.mark.parametrize("name, threshold, reason",
                         [("deletion", -1.5, "cannot_flip"), ("insertion", 1.5, "rejected")])
def test_never_flipping_is_undefined_not_one(name, threshold, reason):
    # 1.0 would be a score that every map gets alike.
    result = CASE.run(name, CASE.maps["random"], threshold, step=16)
    assert np.isnan(float(result.fraction))
    assert undefined_reason(result) == reason
    grid = np.asarray(result.counts) % 16 == 0
    assert not np.isnan(np.asarray(result.curve)[grid]).any()  # walked to H*W


def test_jit_with_traced_threshold_compiles_once():
    traces = []  # Python runs only while jit traces: one entry per compilation

    def counted(*args, **kwargs):
        traces.append(None)
        return deletion(*args, **kwargs)

    fn = jax.jit(functools.partial(counted, CASE.embed_fn, step=16, batch_size=16))
    saliency = CASE.maps["random"]
    reference = CASE.numpy_curve("deletion", saliency)
    fractions = []
    for threshold in (0.3, 0.6):
        assert np.min(np.abs(reference - threshold)) > 1e-4
        result = fn(CASE.params, CASE.image, CASE.mate, saliency, jnp.float32(threshold))
        assert float(result.fraction) == numpy_fraction(reference, "deletion", threshold)
        fractions.append(float(result.fraction))
    assert fractions[0] > fractions[1]  # the threshold is used, not baked in
    assert len(traces) == 1


@pytest.mark.parametrize("name", ["deletion", "insertion"])
def test_ties_are_broken_by_raster_order(name):
    constant = CASE.run(name, CASE.maps["constant"])
    raster = CASE.run(name, CASE.maps["raster"])
    reverse = CASE.run(name, CASE.maps["reverse_raster"])
    assert float(constant.fraction) == float(raster.fraction)
    np.testing.assert_array_equal(constant.curve, raster.curve)
    assert float(reverse.fraction) != float(raster.fraction)


def test_deletion_insertion_is_both_metrics():
    saliency = CASE.maps["random"]
    both = deletion_insertion(
        CASE.embed_fn, CASE.params, CASE.image, CASE.mate, saliency, THRESHOLD,
        step=16, batch_size=16,
    )
    assert float(both[0].fraction) == float(CASE.run("deletion", saliency, step=16).fraction)
    assert float(both[1].fraction) == float(CASE.run("insertion", saliency, step=16).fraction)


@pytest.mark.parametrize(
    "saliency, step, batch_size",
    [(np.zeros((32, 31)), 1, 8), (np.zeros((32, 32)), 0, 8), (np.zeros((32, 32)), 1, 2.0)],
)
def test_rejects_bad_arguments(saliency, step, batch_size):
    with pytest.raises(ValueError):
        deletion(
            CASE.embed_fn, CASE.params, CASE.image, CASE.mate, saliency, THRESHOLD,
            step=step, batch_size=batch_size,
        )


@pytest.mark.parametrize("name", ["deletion", "insertion"])
def test_defined_fraction_has_no_reason(name):
    result = CASE.run(name, CASE.maps["ideal"])
    assert np.isfinite(float(result.fraction)) and undefined_reason(result) is None
    assert int(result.reason) == 0


def test_bad_values_raise_eagerly_and_are_invalid_under_jit():
    saliency = CASE.maps["random"].copy()
    saliency[3, 4] = np.nan
    image = CASE.image.copy()
    image[0, 0, 1] = np.inf
    args = (CASE.embed_fn, CASE.params)
    with pytest.raises(ValueError, match="threshold holds 1 NaN"):
        deletion(*args, CASE.image, CASE.mate, CASE.maps["random"], np.nan, step=16)
    with pytest.raises(ValueError, match="saliency holds 1 NaN"):
        insertion(*args, CASE.image, CASE.mate, saliency, THRESHOLD, step=16)
    with pytest.raises(ValueError, match="image holds 1 NaN"):
        deletion(*args, image, CASE.mate, CASE.maps["random"], THRESHOLD, step=16)
    with pytest.raises(ValueError, match="saliency holds"):
        similarity_curve(*args, CASE.image, CASE.mate, saliency, mode="deletion")
    # Traced values cannot raise: the result says why it is undefined.
    for name, picture, smap, threshold in (
            ("deletion", CASE.image, CASE.maps["random"], np.nan),
            ("insertion", CASE.image, saliency, THRESHOLD),
            ("deletion", image, CASE.maps["random"], THRESHOLD)):
        result = _jitted(name, CASE.embed_fn, 16, 16)(CASE.params, picture, CASE.mate,
                                                      smap, threshold)
        assert np.isnan(float(result.fraction))
        assert undefined_reason(result) == "invalid_input"


def test_integer_images_are_refused_by_dtype():
    as_bytes = np.round(CASE.image * 255).astype(np.uint8)
    with pytest.raises(TypeError, match="image has dtype uint8"):
        deletion(CASE.embed_fn, CASE.params, as_bytes, CASE.mate, CASE.maps["ideal"],
                 THRESHOLD, step=16)
    with pytest.raises(TypeError, match="reference has dtype uint8"):
        insertion(CASE.embed_fn, CASE.params, CASE.image, as_bytes, CASE.maps["ideal"],
                  THRESHOLD, step=16)
