"""Masks: a per-patch NumPy reference, determinism, and a cost independent of P."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srise_jax import masks


def reference_gaussian_mask(centres, shape, kernel_size, sigma, combine=max):
    """Per-patch loop: patches of a truncated Gaussian window, combined pairwise."""
    out = np.zeros(shape, np.float64)
    lo = kernel_size // 2
    d = np.arange(-lo, kernel_size - lo)
    window = np.exp(-(d[:, None] ** 2 + d[None, :] ** 2) / (2 * sigma**2))
    for cy, cx in centres:
        for i, dy in enumerate(d):
            for j, dx in enumerate(d):
                y, x = cy + dy, cx + dx
                if 0 <= y < shape[0] and 0 <= x < shape[1]:
                    out[y, x] = combine(out[y, x], window[i, j])
    return out


@pytest.mark.parametrize("shape,num_patches,kernel_size,sigma", [
    ((24, 20), 5, 8, 2.0),
    ((17, 31), 3, 9, 3.5),
])
def test_gaussian_mask_equals_per_patch_max(key, shape, num_patches,
                                            kernel_size, sigma):
    got = masks.gaussian_mask(key, shape, num_patches=num_patches,
                              kernel_size=kernel_size, sigma=sigma)
    # The same centres as the mask: drawn from the same key the same way.
    centres = np.asarray(jax.random.randint(
        key, (num_patches, 2), 0, jnp.array(shape)))
    want = reference_gaussian_mask(centres, shape, kernel_size, sigma)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-6)
    # Peak 1 at every centre.
    np.testing.assert_allclose(np.asarray(got)[centres[:, 0], centres[:, 1]],
                               1.0, atol=1e-6)


@pytest.mark.parametrize("combine", ["sum", "occlude"])
def test_other_combination_rules_equal_a_per_patch_loop(key, combine):
    shape, num_patches, kernel_size, sigma = (21, 26), 40, 9, 2.5
    got = masks.gaussian_mask(key, shape, num_patches=num_patches,
                              kernel_size=kernel_size, sigma=sigma, combine=combine)
    centres = np.asarray(jax.random.randint(key, (num_patches, 2), 0, jnp.array(shape)))
    if combine == "sum":
        want = np.minimum(reference_gaussian_mask(centres, shape, kernel_size, sigma,
                                                  combine=lambda a, b: a + b), 1.0)
        assert 0.3 < (want == 1.0).mean() < 0.95  # the clip is exercised
    else:
        want = 1.0 - reference_gaussian_mask(centres, shape, kernel_size, sigma)
    np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
    with pytest.raises(ValueError, match="combine"):
        masks.gaussian_mask(key, shape, combine="min")


def test_gaussian_masks_are_per_mask_keys_and_deterministic(key):
    batch = masks.gaussian_masks(key, 5, (32, 32), num_patches=10,
                                 kernel_size=8, sigma=2.0)
    assert batch.shape == (5, 32, 32) and batch.dtype == jnp.float32
    assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    keys = jax.random.split(key, 5)
    for i in range(5):
        one = masks.gaussian_mask(keys[i], (32, 32), num_patches=10,
                                  kernel_size=8, sigma=2.0)
        np.testing.assert_array_equal(np.asarray(one), np.asarray(batch[i]))
    again = jax.jit(masks.gaussian_masks, static_argnums=(1, 2),
                    static_argnames=("num_patches", "kernel_size"))(
        key, 5, (32, 32), num_patches=10, kernel_size=8, sigma=2.0)
    np.testing.assert_array_equal(np.asarray(again), np.asarray(batch))
    other = masks.gaussian_masks(jax.random.key(1), 5, (32, 32),
                                 num_patches=10, kernel_size=8, sigma=2.0)
    assert not np.allclose(np.asarray(other), np.asarray(batch))


def test_gaussian_mask_paper_defaults_perturb_the_image(key):
    batch = masks.gaussian_masks(key, 16)
    assert batch.shape == (16, 112, 112)
    # The max-union keeps a Gaussian profile: neither all ones nor all zeros.
    mean = float(batch.mean())
    assert 0.5 < mean < 0.85
    assert float((batch < 0.5).mean()) > 0.1


def test_gaussian_mask_cost_never_grows_like_patches_times_pixels(key):
    """XLA's own flop count: 100x more patches cost almost nothing more.

    A per-patch construction costs P x H x W; the distance-transform one is
    H x W x kernel_size, whatever P is.
    """
    def flops(num_patches):
        fn = jax.jit(lambda k: masks.gaussian_mask(
            k, (112, 112), num_patches=num_patches))
        analysis = fn.lower(key).compile().cost_analysis()
        if not analysis or "flops" not in analysis:
            pytest.skip("this backend reports no cost analysis")
        return analysis["flops"]

    # The per-pixel pass is counted (else the bound below would hold vacuously)...
    assert flops(10) > 112 * 112 * 40
    # ...and shared: each patch adds its window column (kernel_size values),
    # never num_patches * H * W (that would add 12.4 M here).
    assert flops(1000) - flops(10) < 0.1 * 990 * 112 * 112


def test_rise_masks_shape_range_and_keep_rate(key):
    batch = masks.rise_masks(key, 200, (28, 28), grid=7, p=0.5)
    assert batch.shape == (200, 28, 28)
    assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0
    assert abs(float(batch.mean()) - 0.5) < 0.05
    # Random shifts: the masks are not all aligned to one grid.
    assert float(jnp.std(batch[:, 0, 0])) > 0.1
    keep_all = masks.rise_masks(key, 3, (28, 28), grid=7, p=1.0)
    np.testing.assert_allclose(np.asarray(keep_all), 1.0, atol=1e-6)


def test_documented_coverage_prior_is_what_the_masks_give():
    # README and SRiseConfig's docstring justify the coverage default with
    # the masks' mean value at the centre and in the corners of a 112x112
    # image; recompute it so the stated numbers cannot drift from the code.
    import re
    from pathlib import Path

    from srise_jax import srise

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    pattern = r"(0\.\d\d) at the centre of a 112x112 image and (0\.\d\d) in its corners"
    stated = [tuple(map(float, m)) for m in (re.findall(pattern, readme)
                                             + re.findall(pattern, " ".join(
                                                 srise.SRiseConfig.__doc__.split())))]
    assert len(stated) == 2 and stated[0] == stated[1], stated
    stack = np.asarray(masks.gaussian_masks(jax.random.key(0), 2000, (112, 112)))
    mean = stack.mean(0)
    centre = mean[54:58, 54:58].mean()
    corners = mean[[0, 0, -1, -1], [0, -1, 0, -1]].mean()
    # 2000 masks: the standard error of each mean is below 0.01.
    assert abs(centre - stated[0][0]) < 0.01 and abs(corners - stated[0][1]) < 0.01, \
        (centre, corners)
