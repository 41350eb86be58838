"""S-RISE mask options (stratified centres, scales, antithetic pairs) against a per-mask NumPy loop."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srise_jax import masks

SHAPE = (24, 32)
PATCHES, KERNEL, SIGMA = 8, 6, 2.0
SCALES = (0.5, 1.0, 2.0)
_OPTIONS = ("num_patches", "kernel_size", "sigma", "combine", "centres", "scales",
            "antithetic")
# Compiled once per option set: op-by-op dispatch of the masks' unrolled
# window loops costs several times more than one compilation.
srise_masks = jax.jit(masks.srise_masks, static_argnums=(1, 2), static_argnames=_OPTIONS)
gaussian_masks = jax.jit(masks.gaussian_masks, static_argnums=(1, 2),
                         static_argnames=_OPTIONS[:5])


def reference_mask(centres, shape, kernel_size, sigma, combine="max"):
    """One mask by a loop over its patches: each a truncated Gaussian, peak 1.

    The window covers offsets -(k // 2) .. k - k // 2 - 1 from the centre; the
    patches combine by their pointwise max, or their sum clipped to 1.
    """
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    out = np.zeros(shape, np.float64)
    lo, hi = -(kernel_size // 2), kernel_size - kernel_size // 2 - 1
    for cy, cx in np.asarray(centres):
        dy, dx = yy - cy, xx - cx
        inside = (dy >= lo) & (dy <= hi) & (dx >= lo) & (dx <= hi)
        patch = np.where(inside, np.exp(-(dy**2 + dx**2) / (2.0 * sigma**2)), 0.0)
        out = out + patch if combine == "sum" else np.maximum(out, patch)
    return np.minimum(out, 1.0)


def reference_base(key, scale, centres="uniform", combine="max", shape=SHAPE):
    """The base mask of `key` at `scale`: 1/scale**2 as many patches, kernel and sigma times scale."""
    num_patches = max(1, round(PATCHES / scale**2))
    kernel_size = max(1, round(KERNEL * scale))
    points = masks.patch_centres(key, shape, num_patches, centres=centres)
    assert points.shape == (num_patches, 2)
    return reference_mask(points, shape, kernel_size, SIGMA * scale, combine)


def options(**kw):
    return dict(num_patches=PATCHES, kernel_size=KERNEL, sigma=SIGMA, **kw)


def test_uniform_centres_are_the_draw_gaussian_mask_always_made(key):
    got = masks.patch_centres(key, SHAPE, 13)
    want = jax.random.randint(key, (13, 2), 0, jnp.array(SHAPE))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


@pytest.mark.parametrize("combine", ["max", "sum"])
def test_defaults_equal_gaussian_masks_exactly(key, combine):
    got = srise_masks(key, 7, SHAPE, **options(combine=combine))
    want = gaussian_masks(key, 7, SHAPE, **options(combine=combine))
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # The kernel's sources: the keys gaussian_masks uses, and global indices.
    keys, index = masks.mask_sources(key, 7)
    np.testing.assert_array_equal(np.asarray(jax.random.key_data(keys)),
                                  np.asarray(jax.random.key_data(jax.random.split(key, 7))))
    np.testing.assert_array_equal(np.asarray(index), np.arange(7))


@pytest.mark.parametrize("combine", ["max", "sum"])
def test_stratified_masks_equal_a_per_patch_loop(key, combine):
    got = np.asarray(srise_masks(key, 4, SHAPE,
                                       **options(combine=combine, centres="stratified")))
    keys = jax.random.split(key, 4)
    for i in range(4):
        want = reference_base(keys[i], 1.0, "stratified", combine)
        np.testing.assert_allclose(got[i], want, atol=1e-5)
    # gaussian_masks passes the option through to the same centres.
    one = gaussian_masks(key, 4, SHAPE, **options(combine=combine, centres="stratified"))
    np.testing.assert_array_equal(np.asarray(one), got)


def test_each_mask_uses_scale_i_mod_3_with_scaled_patches(key):
    got = np.asarray(srise_masks(key, 6, SHAPE, **options(scales=SCALES)))
    keys = jax.random.split(key, 6)
    for i in range(6):
        want = reference_base(keys[i], SCALES[i % 3])
        np.testing.assert_allclose(got[i], want, atol=1e-6)
        # The other scales give other masks, so the comparison pins the scale.
        for s in SCALES:
            if s != SCALES[i % 3]:
                assert np.abs(reference_base(keys[i], s) - got[i]).max() > 0.1
    # Scale 0.5 has 32 patches of kernel 3, scale 2 has 2 patches of kernel 12.
    assert round(PATCHES / 0.5**2) == 32 and round(KERNEL * 2.0) == 12


def test_antithetic_odd_mask_is_the_exact_complement_of_its_pair(key):
    num = 5  # odd: the last mask has no partner
    got = np.asarray(srise_masks(key, num, SHAPE, **options(antithetic=True)))
    pair_keys = jax.random.split(key, math.ceil(num / 2))
    for m in range(3):
        np.testing.assert_allclose(got[2 * m], reference_base(pair_keys[m], 1.0),
                                   atol=1e-6)
    for m in range(2):
        np.testing.assert_array_equal(got[2 * m + 1], 1 - got[2 * m])
    keys, index = masks.mask_sources(key, num, antithetic=True)
    np.testing.assert_array_equal(np.asarray(index), np.arange(num))
    assert index.dtype == jnp.int32
    # The pair shares its key, hence its centres.
    for m in range(2):
        np.testing.assert_array_equal(
            np.asarray(masks.patch_centres(keys[2 * m], SHAPE, PATCHES)),
            np.asarray(masks.patch_centres(keys[2 * m + 1], SHAPE, PATCHES)))
    # Every pixel is kept by exactly one unit of a pair.
    np.testing.assert_allclose(got[0] + got[1], 1.0, atol=1e-6)


@pytest.mark.parametrize("combine", ["max", "sum"])
def test_all_options_together_equal_a_per_mask_loop(key, combine):
    num = 8
    got = np.asarray(srise_masks(key, num, SHAPE, **options(
        combine=combine, centres="stratified", scales=SCALES, antithetic=True)))
    pair_keys = jax.random.split(key, num // 2)
    for i in range(num):
        pair = i // 2
        base = reference_base(pair_keys[pair], SCALES[pair % 3], "stratified", combine)
        want = 1.0 - base if i % 2 else base
        np.testing.assert_allclose(got[i], want, atol=1e-5)


def test_the_maker_gives_each_mask_whatever_the_chunk(key):
    # The options of test_all_options_together_... (one compilation for both).
    opts = options(combine="max", centres="stratified", scales=SCALES, antithetic=True)
    whole = np.asarray(srise_masks(key, 8, SHAPE, **opts))
    make = jax.jit(masks.srise_mask_fn(SHAPE, **opts))
    keys, index = masks.mask_sources(key, 8, antithetic=True)
    for start in (0, 3, 5):  # 3 and 5 start mid-pair
        stop = start + 3
        part = np.asarray(make((keys[start:stop], index[start:stop])))
        np.testing.assert_array_equal(part, whole[start:stop])


def _cells(points, shape, side):
    """The grid cell (row, column) of each centre, boundaries at floor(k * size / side)."""
    cell = []
    for axis in range(2):
        edges = np.arange(side + 1) * shape[axis] // side
        cell.append(np.searchsorted(edges, points[:, axis], side="right") - 1)
    return cell[0] * side + cell[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_puts_one_centre_in_each_cell(seed):
    key = jax.random.key(seed)
    shape = (112, 112)
    full = np.asarray(masks.patch_centres(key, shape, 100, centres="stratified"))
    assert ((full >= 0) & (full < 112)).all()
    np.testing.assert_array_equal(np.sort(_cells(full, shape, 10)), np.arange(100))
    part = np.asarray(masks.patch_centres(key, shape, 30, centres="stratified"))
    cells = _cells(part, shape, 6)  # ceil(sqrt(30)) = 6 cells a side
    assert len(set(cells.tolist())) == 30 and cells.min() >= 0 and cells.max() < 36
    # jit and vmap draw the same centres as one call per key.
    keys = jax.random.split(key, 3)
    batched = jax.jit(jax.vmap(lambda k: masks.patch_centres(
        k, shape, 30, centres="stratified")))(keys)
    for i in range(3):
        np.testing.assert_array_equal(
            np.asarray(batched[i]),
            np.asarray(masks.patch_centres(keys[i], shape, 30, centres="stratified")))


def test_stratified_draws_different_cells_and_jitter_per_key():
    shape = (112, 112)
    draws = [np.asarray(masks.patch_centres(jax.random.key(s), shape, 30,
                                            centres="stratified")) for s in range(4)]
    assert len({tuple(sorted(_cells(d, shape, 6).tolist())) for d in draws}) > 1
    full = [np.asarray(masks.patch_centres(jax.random.key(s), shape, 100,
                                           centres="stratified")) for s in range(2)]
    order = [np.argsort(_cells(f, shape, 10)) for f in full]
    assert not np.array_equal(full[0][order[0]], full[1][order[1]])


def test_masks_are_deterministic_in_the_key(key):
    # The options of test_all_options_together_... (one compilation for both).
    opts = options(combine="max", centres="stratified", scales=SCALES, antithetic=True)
    first = np.asarray(srise_masks(key, 8, SHAPE, **opts))
    again = np.asarray(srise_masks(key, 8, SHAPE, **opts))
    np.testing.assert_array_equal(first, again)
    other = np.asarray(srise_masks(jax.random.key(1), 8, SHAPE, **opts))
    assert not np.allclose(first, other)


@pytest.mark.parametrize("bad,match", [
    (dict(centres="sobol"), "centres"),
    (dict(scales=()), "scales"),
    (dict(scales=(1.0, 0.0)), "scales"),
    (dict(scales=(-0.5,)), "scales"),
    (dict(scales=[1.0]), "scales"),
    (dict(scales=(1.0, "2")), "scales"),
    (dict(combine="min"), "combine"),
    (dict(centres="stratified", num_patches=200), "num_patches"),
])
def test_bad_options_raise_value_error(key, bad, match):
    opts = options()
    opts.update(bad)
    with pytest.raises(ValueError, match=match):
        masks.srise_masks(key, 2, (12, 12), **opts)
    with pytest.raises(ValueError, match=match):
        masks.srise_mask_fn((12, 12), **opts)
    if "scales" not in bad:
        with pytest.raises(ValueError, match=match):
            masks.gaussian_masks(key, 2, (12, 12), **opts)
