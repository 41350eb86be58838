"""Tests for the metric fills ("mean", "blur", "impute") and srise_jax.fills.

Each fill is checked against a NumPy reference: the blur against an
independent separable convolution, ROAD's imputation against a dense solve
of the same linear system (the system ROAD's `NoisyLinearImputer` builds,
github.com/tleemann/road_evaluation, road/imputations.py), and the metric
curves against images built in NumPy and a per-count cosine loop.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import region_embed
from test_srise import numpy_blur

from srise_jax import fills
from srise_jax.metrics import (METRIC_FILLS, deletion, deletion_insertion, insertion,
                               similarity_curve, undefined_reason)

METRICS = {"deletion": deletion, "insertion": insertion}

# ROAD's weights, written out as (offset, weight) like its `neighbors_weights`.
NEIGHBOURS = [((dy, dx), 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
              for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def numpy_road_impute(image, removed):
    """ROAD's linear imputation by a dense float64 solve, one system per channel.

    Unknown i (a removed pixel): sum_j w_ij (x_i - x_j) = 0 over in-image
    neighbours j, with kept x_j known. With nothing kept, the mean image.
    """
    image = np.asarray(image, np.float64)
    height, width, channels = image.shape
    removed = np.asarray(removed, bool)
    if removed.all():
        return np.broadcast_to(image.mean((0, 1)), image.shape).copy()
    index = -np.ones((height, width), int)
    cells = np.argwhere(removed)
    index[removed] = np.arange(len(cells))
    a = np.zeros((len(cells), len(cells)))
    b = np.zeros((len(cells), channels))
    for k, (y, x) in enumerate(cells):
        for (dy, dx), w in NEIGHBOURS:
            ny, nx = y + dy, x + dx
            if 0 <= ny < height and 0 <= nx < width:
                a[k, k] += w
                if removed[ny, nx]:
                    a[k, index[ny, nx]] -= w
                else:
                    b[k] += w * image[ny, nx]
    out = image.copy()
    out[removed] = np.linalg.solve(a, b)
    return out


def numpy_mean_residual(values, removed):
    """max over removed pixels of |x_i - weighted mean of its in-image neighbours|."""
    values = np.asarray(values, np.float64)
    height, width, _ = values.shape
    worst = 0.0
    for y, x in np.argwhere(np.asarray(removed)):
        total, weight = 0.0, 0.0
        for (dy, dx), w in NEIGHBOURS:
            ny, nx = y + dy, x + dx
            if 0 <= ny < height and 0 <= nx < width:
                total, weight = total + w * values[ny, nx], weight + w
        worst = max(worst, np.abs(values[y, x] - total / weight).max())
    return worst


def removal_masks(size, seed):
    rng = np.random.default_rng(seed)
    block = np.zeros((size, size), bool)
    block[1:6, 2:7] = True
    one_kept = np.ones((size, size), bool)
    one_kept[size - 1, 0] = False
    border_kept = np.zeros((size, size), bool)
    border_kept[1:-1, 1:-1] = True
    return {"scattered": rng.uniform(size=(size, size)) < 0.5, "block": block,
            "one_kept": one_kept, "border_kept": border_kept,
            "corner_removed": np.eye(size, dtype=bool)[::-1] | (np.arange(size) < 2)[:, None]}


@pytest.mark.parametrize("mask_name", ["scattered", "block", "one_kept", "border_kept",
                                       "corner_removed"])
def test_linear_impute_solves_roads_system_like_a_dense_solve(mask_name):
    rng = np.random.default_rng(1)
    image = rng.uniform(0, 1, (8, 8, 3)).astype(np.float32)
    removed = removal_masks(8, 2)[mask_name]
    got = np.asarray(fills.linear_impute(jnp.asarray(image), jnp.asarray(removed)))
    assert numpy_mean_residual(got, removed) < 1e-4
    np.testing.assert_allclose(got, numpy_road_impute(image, removed), atol=1e-4)
    np.testing.assert_array_equal(got[~removed], image[~removed])


@pytest.mark.parametrize("shape", [(8, 8), (40, 48), (31, 17)])
def test_multilevel_preconditioner_is_symmetric_positive_definite_on_removed_pixels(shape):
    # What conjugate gradients needs of it; odd sides exercise the padding.
    rng = np.random.default_rng(8)
    removed = jnp.asarray(rng.uniform(size=shape) < 0.8)
    precondition = jax.jit(fills.multilevel_preconditioner(removed))
    x, y = (jnp.where(removed[..., None], jnp.asarray(rng.normal(size=(*shape, 3)),
                                                      jnp.float32), 0.0) for _ in range(2))
    mx, my = np.asarray(precondition(x)), np.asarray(precondition(y))
    assert float(np.sum(np.asarray(x) * my)) == pytest.approx(
        float(np.sum(mx * np.asarray(y))), rel=1e-5)
    assert np.all(np.sum(np.asarray(x) * mx, axis=(0, 1)) > 0)  # per channel
    assert not mx[~np.asarray(removed)].any()  # nothing reaches a kept pixel


@pytest.mark.parametrize("kept_fraction", [0.03, 0.1])
def test_linear_impute_is_close_to_a_dense_solve_when_almost_everything_is_removed(
        kept_fraction):
    """Insertion's first images: a small blob kept, a wide removed region.

    The stopping rule bounds the residual, not the error, and the error can
    exceed it by the system's condition number. The multilevel
    preconditioner's answer is within 2e-4 of a dense float64 solve here,
    closer than the diagonal one's under the same rule (3-7e-4 away).
    """
    rng = np.random.default_rng(7)
    image = fills.gaussian_blur(jnp.asarray(rng.uniform(0, 1, (64, 64, 3)), jnp.float32),
                                sigma=2.0)
    yy, xx = np.mgrid[:64, :64]
    score = -((yy - 25.6) ** 2 + (xx - 35.2) ** 2) + rng.uniform(0, 30, (64, 64))
    removed = score < np.quantile(score, 1 - kept_fraction)
    want = numpy_road_impute(np.asarray(image), removed)
    got = np.asarray(fills.linear_impute(image, jnp.asarray(removed)))
    np.testing.assert_allclose(got, want, atol=2e-4)
    np.testing.assert_array_equal(got[~removed], np.asarray(image)[~removed])
    diagonal = np.asarray(fills.linear_impute(image, jnp.asarray(removed),
                                              preconditioner="diagonal"))
    assert numpy_mean_residual(diagonal, removed) < 2 * fills.IMPUTE_TOL
    assert np.abs(got - want).max() < np.abs(diagonal - want).max() / 2
    with pytest.raises(ValueError, match="preconditioner must be one of multilevel, diagonal"):
        fills.linear_impute(image, jnp.asarray(removed), preconditioner="jacobi")


def test_linear_impute_all_removed_is_the_mean_and_none_removed_is_the_image():
    image = jnp.asarray(np.random.default_rng(3).uniform(0, 1, (8, 8, 3)), jnp.float32)
    every = np.asarray(fills.linear_impute(image, jnp.ones((8, 8), bool)))
    np.testing.assert_allclose(every, np.broadcast_to(np.asarray(image).mean((0, 1)),
                                                      (8, 8, 3)), atol=1e-6)
    none = fills.linear_impute(image, jnp.zeros((8, 8), bool))
    np.testing.assert_array_equal(np.asarray(none), np.asarray(image))


def test_noisy_impute_adds_keyed_noise_to_removed_pixels_only(key):
    image = jnp.asarray(np.random.default_rng(4).uniform(0, 1, (8, 8, 3)), jnp.float32)
    removed = jnp.asarray(removal_masks(8, 5)["scattered"])
    noisy = np.asarray(fills.noisy_linear_impute(image, removed, key=key))
    plain = np.asarray(fills.linear_impute(image, removed))
    field = 0.01 * np.asarray(jax.random.normal(key, (8, 8, 3)))
    r = np.asarray(removed)
    np.testing.assert_allclose(noisy[r], plain[r] + field[r], atol=1e-6)
    np.testing.assert_array_equal(noisy[~r], np.asarray(image)[~r])
    again = fills.noisy_linear_impute(image, removed, key=key)
    np.testing.assert_array_equal(np.asarray(again), noisy)
    other = np.asarray(fills.noisy_linear_impute(image, removed,
                                                 key=jax.random.fold_in(key, 1)))
    assert np.abs(other[r] - noisy[r]).min() > 0
    np.testing.assert_array_equal(other[~r], noisy[~r])


# --- The metrics under each fill, against images built in NumPy ----------

def numpy_fill_image(image, removed, fill, key):
    """`image` with its removed pixels replaced as docs/metrics.md defines."""
    image = np.asarray(image, np.float64)
    if fill == "mean":
        values = np.broadcast_to(image.mean((0, 1)), image.shape)
    elif fill == "blur":
        values = numpy_blur(image)
    else:
        noise = 0.01 * np.asarray(jax.random.normal(key, image.shape), np.float64)
        values = numpy_road_impute(image, removed) + noise
    return np.where(removed[..., None], values, image)


def numpy_curve(embed_fn, params, image, reference, saliency, counts, fill, key, *, insert):
    """s(c) for each count, one NumPy image per count."""
    order = np.argsort(-np.asarray(saliency).reshape(-1), kind="stable")
    ref = np.asarray(embed_fn(params, jnp.asarray(reference)[None]), np.float64)[0]
    sims = []
    for c in counts:
        changed = np.zeros(image.shape[0] * image.shape[1], bool)
        changed[order[:c]] = True
        changed = changed.reshape(image.shape[:2])
        x = numpy_fill_image(image, ~changed if insert else changed, fill, key)
        e = np.asarray(embed_fn(params, jnp.asarray(x[None], jnp.float32)), np.float64)[0]
        sims.append(e @ ref / np.linalg.norm(e) / np.linalg.norm(ref))
    return np.asarray(sims)


SMALL = dict(size=12, region=(3, 8, 4, 10))


@functools.lru_cache(maxsize=None)
def small_case():
    """A 12x12 planted model (conftest's region_embed), an image, its mate, a map."""
    size = SMALL["size"]
    rng = np.random.default_rng(6)
    image = rng.uniform(0.2, 1.0, (size, size, 3)).astype(np.float32)
    mate = np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1).astype(np.float32)
    params = {"const": jnp.full((16,), 0.5, jnp.float32), "offset": jnp.float32(0.0)}
    saliency = rng.uniform(0, 1, (size, size)).astype(np.float32)
    return region_embed(SMALL["region"]), params, image, mate, saliency


@pytest.mark.parametrize("fill", METRIC_FILLS)
@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_similarity_curve_matches_numpy_images(fill, mode, key):
    embed_fn, params, image, mate, saliency = small_case()
    got = similarity_curve(embed_fn, params, jnp.asarray(image), jnp.asarray(mate),
                           jnp.asarray(saliency), mode=mode, num_points=7, batch_size=4,
                           fill=fill, key=key)
    counts = np.round(np.linspace(0, image.shape[0] * image.shape[1], 7)).astype(int)
    want = numpy_curve(embed_fn, params, image, mate, saliency, counts, fill, key,
                       insert=mode == "insertion")
    np.testing.assert_allclose(np.asarray(got.similarity), want, atol=2e-5)


@pytest.mark.parametrize("fill", METRIC_FILLS)
@pytest.mark.parametrize("name", ["deletion", "insertion"])
def test_fraction_is_the_first_flip_of_the_numpy_curve(fill, name, key):
    embed_fn, params, image, mate, saliency = small_case()
    num_pixels = image.shape[0] * image.shape[1]
    curve = numpy_curve(embed_fn, params, image, mate, saliency, range(num_pixels + 1),
                        fill, key, insert=name == "insertion")
    # Between the two ends, so that the pair is accepted and the fill flips it.
    threshold = float((curve[0] + curve[-1]) / 2)
    flipped = curve >= threshold if name == "insertion" else curve < threshold
    got = METRICS[name](embed_fn, params, jnp.asarray(image), jnp.asarray(mate),
                        jnp.asarray(saliency), threshold, step=1, batch_size=32,
                        fill=fill, key=key)
    assert undefined_reason(got) is None
    assert round(float(got.fraction) * num_pixels) == np.argmax(flipped)
    np.testing.assert_allclose(np.asarray(got.curve)[: np.argmax(flipped) + 1],
                               curve[: np.argmax(flipped) + 1], atol=2e-5)


# --- Properties on conftest's 32x32 planted model ------------------------

def planted_maps(region, size=32):
    y0, y1, x0, x1 = region
    inside = np.zeros((size, size), np.float32)
    inside[y0:y1, x0:x1] = 1.0
    # A smooth tie-break so the order inside and outside is not raster order.
    ramp = np.linspace(0, 0.1, size * size, dtype=np.float32).reshape(size, size)[::-1]
    planted = inside + ramp
    return jnp.asarray(planted), jnp.asarray(-planted)


@pytest.mark.parametrize("fill", METRIC_FILLS)
@pytest.mark.parametrize("name", ["deletion", "insertion"])
def test_planted_map_beats_its_reverse_under_each_fill(planted_region, fill, name, key):
    embed_fn, params, region, probe, mate = planted_region
    planted, reverse = planted_maps(region)
    ends = similarity_curve(embed_fn, params, probe, mate, planted, mode="deletion",
                            num_points=2, fill=fill, key=key).similarity
    threshold = float((ends[0] + ends[1]) / 2)
    run = functools.partial(METRICS[name], embed_fn, params, probe, mate,
                            threshold=threshold, step=32, fill=fill, key=key)
    good, bad = run(saliency=planted), run(saliency=reverse)
    assert undefined_reason(good) is None and undefined_reason(bad) is None
    region_fraction = (region[1] - region[0]) * (region[3] - region[2]) / 32**2
    assert float(good.fraction) <= region_fraction
    assert float(bad.fraction) > 1 - region_fraction


@pytest.mark.parametrize("fill", METRIC_FILLS)
@pytest.mark.parametrize("name, threshold, reason", [
    ("deletion", 1.01, "rejected"), ("insertion", 1.01, "rejected"),
    ("deletion", -1.01, "cannot_flip"), ("insertion", -1.01, "already_flipped"),
])
def test_undefined_fractions_are_nan_with_a_reason(planted_region, fill, name,
                                                   threshold, reason, key):
    embed_fn, params, region, probe, mate = planted_region
    planted, _ = planted_maps(region)
    got = METRICS[name](embed_fn, params, probe, mate, planted, threshold, step=64,
                        fill=fill, key=key)
    assert np.isnan(float(got.fraction))
    assert undefined_reason(got) == reason


@pytest.mark.parametrize("fill", METRIC_FILLS)
def test_the_fills_own_all_removed_image_decides_the_ends(fill, key):
    embed_fn, params, image, mate, saliency = small_case()
    start = float(numpy_curve(embed_fn, params, image, mate, saliency, [0], fill, key,
                              insert=True)[0])
    args = (embed_fn, params, jnp.asarray(image), jnp.asarray(mate), jnp.asarray(saliency))
    # Just below the all-removed image's similarity, Insertion starts matched;
    # just above, Deletion's last image (the same one) breaks the match.
    below = insertion(*args, start - 1e-4, step=12, fill=fill, key=key)
    assert undefined_reason(below) == "already_flipped"
    above = deletion(*args, start + 1e-4, step=12, fill=fill, key=key)
    assert undefined_reason(above) is None
    assert float(above.fraction) <= 1.0


def test_the_fills_differ_at_the_all_removed_image(key):
    # Else the test above could not tell one fill's end from another's:
    # its margins are 1e-4 either side.
    embed_fn, params, image, mate, saliency = small_case()
    starts = [float(numpy_curve(embed_fn, params, image, mate, saliency, [0], fill, key,
                                insert=True)[0]) for fill in METRIC_FILLS]
    assert min(abs(a - b) for i, a in enumerate(starts) for b in starts[i + 1:]) > 2e-4


def test_unknown_fill_is_refused_in_one_line(planted_region):
    embed_fn, params, region, probe, mate = planted_region
    planted, _ = planted_maps(region)
    with pytest.raises(ValueError, match=r"^fill must be one of mean, blur, impute, got 'zero'$"):
        deletion(embed_fn, params, probe, mate, planted, 0.5, fill="zero")
    with pytest.raises(ValueError, match="fill must be one of"):
        similarity_curve(embed_fn, params, probe, mate, planted, mode="insertion",
                         fill="noise")


def test_impute_is_deterministic_given_the_key_and_none_is_key_zero(planted_region, key):
    embed_fn, params, region, probe, mate = planted_region
    planted, _ = planted_maps(region)
    curve = functools.partial(similarity_curve, embed_fn, params, probe, mate, planted,
                              mode="deletion", num_points=5, fill="impute")
    first = np.asarray(curve(key=key).similarity)
    np.testing.assert_array_equal(np.asarray(curve(key=key).similarity), first)
    np.testing.assert_array_equal(np.asarray(curve(key=None).similarity),
                                  np.asarray(curve(key=jax.random.key(0)).similarity))
    other = np.asarray(curve(key=jax.random.key(7)).similarity)
    # The planted map removes the region the model reads first.
    assert np.all(other[1:] != first[1:])
    assert other[0] == first[0]  # nothing removed: no noise


@pytest.mark.parametrize("fill", METRIC_FILLS)
def test_fills_work_under_jit_with_a_traced_key(planted_region, fill, key):
    embed_fn, params, region, probe, mate = planted_region
    planted, _ = planted_maps(region)
    fn = jax.jit(functools.partial(deletion_insertion, embed_fn, step=32, fill=fill))
    eager = deletion_insertion(embed_fn, params, probe, mate, planted, 0.9, step=32,
                               fill=fill, key=key)
    jitted = fn(params, probe, mate, planted, 0.9, key=key)
    for e, j in zip(eager, jitted):
        np.testing.assert_allclose(np.asarray(j.curve), np.asarray(e.curve), atol=1e-6)
        np.testing.assert_array_equal(np.asarray(j.reason), np.asarray(e.reason))


def test_coarse_to_fine_start_and_warm_started_sequence_solve_the_same_system():
    """At 40x48 the solve starts from the half-size imputation (`fills.COARSEST_SIDE`).

    Each answer, cold or warm-started along a deletion-like sequence of
    removed sets, meets the stopping rule and agrees with a dense solve to
    the solver's accuracy; kept pixels stay bit-identical.
    """
    rng = np.random.default_rng(6)
    image = fills.gaussian_blur(jnp.asarray(rng.uniform(0, 1, (40, 48, 3)), jnp.float32),
                                sigma=2.0)
    assert min(image.shape[:2]) >= 2 * fills.COARSEST_SIDE
    order = rng.permutation(40 * 48).reshape(40, 48)
    smooth = np.add.outer((np.arange(40) - 20) ** 2, (np.arange(48) - 24) ** 2)
    rank = np.argsort(np.argsort(smooth.ravel() + order.ravel() * 0.3)).reshape(40, 48)
    counts = np.array([300, 301, 302, 450, 900, 1500])
    removed = rank[None] < counts[:, None, None]
    sequence = np.asarray(fills.linear_impute_sequence(image, jnp.asarray(removed)))
    for got, r in zip(sequence, removed):
        cold = np.asarray(fills.linear_impute(image, jnp.asarray(r)))
        want = numpy_road_impute(np.asarray(image), r)
        for values in (got, cold):
            assert numpy_mean_residual(values, r) < 2 * fills.IMPUTE_TOL
            np.testing.assert_allclose(values, want, atol=5e-4)
            np.testing.assert_array_equal(values[~r], np.asarray(image)[~r])
