"""The S-RISE kernel: planted models, a NumPy reference, and jit/vmap/mesh invariance."""

import functools
import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srise_jax import masks as masks_lib
from srise_jax import srise

# Patch sizes in absolute pixels (not scaled from a 112-pixel side), as
# `small_masks` makes them.
SMALL = srise.SRiseConfig(num_masks=96, num_patches=6, kernel_size=9,
                          sigma=2.5, batch_size=16, reference_side=None)


def small_masks(key, n, shape=(32, 32)):
    return masks_lib.gaussian_masks(key, n, shape, num_patches=SMALL.num_patches,
                                    kernel_size=SMALL.kernel_size,
                                    sigma=SMALL.sigma)


def reference_pair(embed_fn, params, a, b, masks, fill=0.0):
    """Independent NumPy loop, one masked image at a time (paper 3.2.2).

    `fill` is a value, or a function of the image giving its fill.
    """
    def unit(e):
        e = np.asarray(e, np.float64)[0]
        return e / np.linalg.norm(e)

    ea, eb = unit(embed_fn(params, a[None])), unit(embed_fn(params, b[None]))
    out = {}
    for name, img, ref in (("a", a, eb), ("b", b, ea)):
        scores = []
        value = fill(np.asarray(img, np.float64)) if callable(fill) else fill
        for m in np.asarray(masks):
            masked = np.asarray(img) * m[..., None] + value * (1 - m[..., None])
            scores.append(unit(embed_fn(params, jnp.asarray(masked)[None])) @ ref)
        scores = np.array(scores)
        plain = np.tensordot(scores, np.asarray(masks, np.float64), 1)
        coverage = np.asarray(masks, np.float64).sum(0)
        # A pixel no mask covers has no coverage-normalized value: NaN.
        normalized = np.divide(plain, coverage, out=np.full_like(plain, np.nan),
                               where=coverage > 0)
        out[name] = (scores, plain, normalized)
    return out, ea @ eb


def test_planted_region_dominates_top_pixels(key, planted_region):
    embed_fn, params, (y0, y1, x0, x1), probe, mate = planted_region
    nonmate = jnp.flip(probe, 0)
    config = srise.SRiseConfig(num_masks=500, num_patches=6, kernel_size=9,
                               sigma=2.5, batch_size=50)
    out = jax.jit(srise.srise_triplet, static_argnums=(0, 6))(
        embed_fn, params, probe, mate, nonmate, key, config)
    inside = np.zeros((32, 32), bool)
    inside[y0:y1, x0:x1] = True
    size = inside.sum()
    for saliency in (out.mate.saliency_a, out.mate.saliency_b):
        top = np.argsort(-np.asarray(saliency).ravel(), kind="stable")[:size]
        assert inside.ravel()[top].mean() >= 0.8


def test_image_independent_embedding_gives_flat_map(key):
    def constant_embed(params, images):
        return jnp.broadcast_to(params, (images.shape[0], 4)) + 0 * images.sum()

    params = jnp.array([1.0, 2.0, 0.5, -1.0])
    image = jax.random.uniform(key, (32, 32, 3))
    out = srise.srise_pair(constant_embed, params, image, image[::-1],
                           small_masks(key, 64))
    for saliency in (out.saliency_a, out.saliency_b):
        s = np.asarray(saliency)
        assert s.max() - s.min() <= 1e-5 * abs(s.mean())


def test_pair_matches_numpy_reference(key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    masks = small_masks(key, 40)
    fill = 0.3
    for normalize, index in (("none", 1), ("coverage", 2)):
        # 40 masks in chunks of 16: the last chunk is padded.
        got = srise.srise_pair(embed_fn, params, probe, mate, masks,
                               batch_size=16, fill=fill, normalize=normalize)
        want, similarity = reference_pair(embed_fn, params, probe, mate, masks,
                                          fill)
        np.testing.assert_allclose(got.scores_a, want["a"][0], atol=1e-5)
        np.testing.assert_allclose(got.scores_b, want["b"][0], atol=1e-5)
        np.testing.assert_allclose(got.saliency_a, want["a"][index], rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(got.saliency_b, want["b"][index], rtol=1e-4,
                                   atol=1e-5)
        np.testing.assert_allclose(got.similarity, similarity, atol=1e-6)


def numpy_blur(image):
    """Edge-padded separable Gaussian blur, sigma = max(H, W) / 20, in NumPy."""
    sigma = max(image.shape[:2]) / 20
    radius = int(3 * sigma)
    taps = np.exp(-np.arange(-radius, radius + 1) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    for axis in (0, 1):
        padded = np.pad(image, [(radius, radius) if a == axis else (0, 0)
                                for a in range(3)], mode="edge")
        image = np.apply_along_axis(lambda v: np.convolve(v, taps, mode="valid"),
                                    axis, padded)
    return image


@pytest.mark.parametrize("fill,fill_of", [
    ("mean", lambda img: img.mean((0, 1))),
    ("blur", numpy_blur),
])
def test_image_dependent_fills_match_numpy_reference(key, planted_region, fill, fill_of):
    embed_fn, params, _, probe, mate = planted_region
    masks = small_masks(key, 12)
    got = srise.srise_pair(embed_fn, params, probe, mate, masks, batch_size=8,
                           fill=fill, normalize="none")
    want, _ = reference_pair(embed_fn, params, probe, mate, masks, fill_of)
    np.testing.assert_allclose(got.scores_a, want["a"][0], atol=1e-5)
    np.testing.assert_allclose(got.saliency_b, want["b"][1], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="fill"):
        srise.SRiseConfig(fill="median")


def test_triplet_mask_keys_and_shared_probe_masks(key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    nonmate = jnp.flip(mate, 1)
    out = srise.srise_triplet(embed_fn, params, probe, mate, nonmate, key,
                              SMALL)
    key_mate, key_nonmate = jax.random.split(key)
    for pair, pair_key, other in ((out.mate, key_mate, mate),
                                  (out.nonmate, key_nonmate, nonmate)):
        direct = srise.srise_pair(embed_fn, params, probe, other,
                                  small_masks(pair_key, SMALL.num_masks),
                                  batch_size=SMALL.batch_size)
        for got, want in zip(pair, direct):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    shared = srise.srise_triplet(
        embed_fn, params, probe, mate, nonmate, key,
        srise.SRiseConfig(**{**SMALL.__dict__, "share_probe_masks": True}))
    for got, want in zip(shared.mate, out.mate):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The nonmate pair now reuses the mate pair's masks, so its maps change.
    assert not np.allclose(shared.nonmate.saliency_a, out.nonmate.saliency_a)
    direct = srise.srise_pair(embed_fn, params, probe, nonmate,
                              small_masks(key_mate, SMALL.num_masks),
                              batch_size=SMALL.batch_size)
    np.testing.assert_allclose(shared.nonmate.saliency_a, direct.saliency_a,
                               rtol=1e-5, atol=1e-6)


def test_jit_equals_eager_and_same_key_same_maps(key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    nonmate = 1.0 - probe
    run = lambda k: srise.srise_triplet(embed_fn, params, probe, mate, nonmate,
                                        k, SMALL)
    jitted = jax.jit(srise.srise_triplet, static_argnums=(0, 6))
    eager = run(key)
    for got, want in zip(jax.tree.leaves(jitted(embed_fn, params, probe, mate,
                                                nonmate, key, SMALL)),
                         jax.tree.leaves(eager)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    for got, want in zip(jax.tree.leaves(run(key)), jax.tree.leaves(eager)):
        np.testing.assert_array_equal(got, want)
    other = run(jax.random.key(7))
    assert not np.allclose(other.mate.saliency_a, eager.mate.saliency_a)


def test_vmap_over_pairs_equals_separate_calls(key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    images_a = jnp.stack([probe, mate, 1.0 - probe])
    images_b = jnp.stack([mate, probe, probe])
    masks = small_masks(key, 48)
    pair = lambda a, b: srise.srise_pair(embed_fn, params, a, b, masks,
                                         batch_size=16)
    batched = jax.jit(jax.vmap(pair))(images_a, images_b)
    for i in range(3):
        single = pair(images_a[i], images_b[i])
        for got, want in zip(batched, single):
            np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-6)


def test_chunked_ranges_sum_to_the_full_run(key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    nonmate = 1.0 - probe
    full = srise.srise_triplet(embed_fn, params, probe, mate, nonmate, key,
                               SMALL)
    traces = []  # Python runs only while jit traces: one entry per compilation

    @functools.wraps(srise.triplet_sums)
    def counted(*args, **kwargs):
        traces.append(kwargs["count"])
        return srise.triplet_sums(*args, **kwargs)

    # One compiled range function with a traced start, plus the short tail.
    ranges = jax.jit(counted, static_argnums=(0, 6), static_argnames="count")
    parts = [ranges(embed_fn, params, probe, mate, nonmate, key, SMALL,
                    start=s, count=min(40, 96 - s)) for s in range(0, 96, 40)]
    assert traces == [40, 16]
    total = parts[0]
    for part in parts[1:]:
        total = tuple(srise.add_sums(x, y) for x, y in zip(total, part))
    out = jax.jit(srise.finalize_triplet, static_argnames="normalize")(total)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(full)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # The old call form still works, warns, and reads the same sums.
    with pytest.warns(DeprecationWarning, match="finalize_triplet"):
        old = srise.finalize_triplet(embed_fn, params, probe, mate, nonmate, total)
    for got, want in zip(jax.tree.leaves(old),
                         jax.tree.leaves(srise.finalize_triplet(total))):
        np.testing.assert_array_equal(got, want)


def test_masked_sums_and_finalize_give_srise_pair(key, planted_region):
    # The public engine with one job per side and masks made from keys by
    # `gaussian_mask_fn` is `srise_pair` on `gaussian_masks` of those keys.
    embed_fn, params, _, probe, mate = planted_region
    make = masks_lib.gaussian_mask_fn((32, 32), num_patches=SMALL.num_patches,
                                      kernel_size=SMALL.kernel_size,
                                      sigma=SMALL.sigma, combine=SMALL.combine)
    sums = srise.masked_sums(embed_fn, params, jnp.stack([probe, mate]),
                             ((0, 1), (1, 0)), jax.random.split(key, 40), make,
                             batch_size=16, fill=0.3)
    assert sums.weighted.shape == (2, 32, 32) and sums.scores.shape == (2, 40)
    want = srise.srise_pair(embed_fn, params, probe, mate, small_masks(key, 40),
                            batch_size=16, fill=0.3, normalize="none")
    maps = srise.finalize(sums, normalize="none")
    for got, expected in ((maps[0], want.saliency_a), (maps[1], want.saliency_b),
                          (sums.scores[0], want.scores_a),
                          (sums.similarity[0], want.similarity),
                          (sums.similarity[1], want.similarity)):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# The options of issue 14 all together: per-mask random fills, antithetic
# pairs, stratified centres, three scales, the regression estimator.
ALL_OPTIONS = dict(fill="mixed", antithetic=True, centres="stratified",
                   scales=(0.5, 1.0, 2.0), normalize="regression")


@pytest.mark.parametrize("options", [{}, ALL_OPTIONS], ids=["default", "all-options"])
def test_memory_is_independent_of_num_masks(key, planted_region, options):
    embed_fn, params, _, probe, mate = planted_region

    def temp_bytes(num_masks):
        config = srise.SRiseConfig(num_masks=num_masks, num_patches=6,
                                   kernel_size=9, sigma=2.5, batch_size=16, **options)
        fn = jax.jit(lambda k: srise.srise_triplet(
            embed_fn, params, probe, mate, mate, k, config))
        analysis = fn.lower(key).compile().memory_analysis()
        if analysis is None:
            pytest.skip("this backend reports no memory analysis")
        return analysis.temp_size_in_bytes

    small, large = temp_bytes(64), temp_bytes(4096)
    # Only the (N,) score vectors and the N keys grow; no N x H x W buffer.
    assert large - small < 4096 * 32 * 32 * 4 / 8


def test_normalize_jointly_uses_one_scale(key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    out = srise.srise_triplet(embed_fn, params, probe, mate, 1.0 - probe, key,
                              SMALL)
    scaled = srise.normalize_jointly(out)
    maps = [out.mate.saliency_a, out.mate.saliency_b, out.nonmate.saliency_a,
            out.nonmate.saliency_b]
    new = [scaled.mate.saliency_a, scaled.mate.saliency_b,
           scaled.nonmate.saliency_a, scaled.nonmate.saliency_b]
    low = min(float(m.min()) for m in maps)
    high = max(float(m.max()) for m in maps)
    for m, n in zip(maps, new):
        np.testing.assert_allclose(n, (m - low) / (high - low), atol=1e-6)
    assert min(float(n.min()) for n in new) == 0.0
    # XLA may divide by multiplying with the reciprocal: 1 to within an ulp.
    assert max(float(n.max()) for n in new) == pytest.approx(1.0, abs=1e-6)


def test_bad_arguments_raise_clear_errors(key, planted_region):
    embed_fn, params, _, probe, mate = planted_region
    with pytest.raises(ValueError, match="normalize"):
        srise.SRiseConfig(normalize="sum")
    with pytest.raises(ValueError, match="masks must be"):
        srise.srise_pair(embed_fn, params, probe, mate, jnp.ones((4, 16, 16)))
    with pytest.raises(ValueError, match=r"image_a \(32, 32, 3\), image_b \(16, 32, 3\)"):
        srise.srise_pair(embed_fn, params, probe, mate[:16],
                         jnp.ones((4, 32, 32)))


def test_integer_or_non_finite_images_are_refused(key, planted_region):
    # uint8 images would turn the masks' fractional weights into zeros and
    # give maps up to 0.5 away from the float image's; a NaN pixel makes
    # every map NaN.
    embed_fn, params, _, probe, mate = planted_region
    as_bytes = np.round(np.asarray(probe) * 255).astype(np.uint8)
    with pytest.raises(TypeError, match="probe has dtype uint8"):
        srise.srise_triplet(embed_fn, params, as_bytes, mate, 1 - probe, key, SMALL)
    with pytest.raises(TypeError, match="image_b has dtype uint8"):
        srise.srise_pair(embed_fn, params, probe, as_bytes, small_masks(key, 4))
    broken = np.asarray(probe).copy()
    broken[5, 6, 0] = np.nan
    with pytest.raises(ValueError, match="nonmate holds 1 NaN or infinite value"):
        srise.srise_triplet(embed_fn, params, probe, mate, broken, key, SMALL)
    masks = np.asarray(small_masks(key, 4)).copy()
    masks[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="masks holds 1 NaN"):
        srise.srise_pair(embed_fn, params, probe, mate, masks)


MESH_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType
    sys.path.insert(0, sys.argv[1])
    from conftest import region_embed
    from srise_jax import masks as masks_lib, srise
    assert jax.device_count() == 4, jax.devices()
    embed_fn = region_embed((8, 16, 12, 20))
    params = {"const": jnp.full((64,), 0.5), "offset": jnp.float32(0.0)}
    k1, k2 = jax.random.split(jax.random.key(3))
    probe = jax.random.uniform(k1, (32, 32, 3))
    mate = jax.random.uniform(k2, (32, 32, 3))
    triplet = jax.jit(srise.srise_triplet, static_argnums=(0, 6),
                      static_argnames=("mesh",))
    pair = jax.jit(srise.srise_pair, static_argnums=(0,),
                   static_argnames=("mesh", "batch_size"))
    out = {}
    def mesh(devices, auto=False):
        if devices == (2, 2):
            return jax.make_mesh((2, 2), ("x", "y"), axis_types=(AxisType.Auto,) * 2)
        kinds = {"axis_types": (AxisType.Auto,)} if auto else {}
        return jax.make_mesh((devices,), ("masks",), devices=jax.devices()[:devices],
                             **kinds)
    # N = 100 divides 4 devices; N = 37 divides neither 3 nor 4, so the
    # masks are padded and the padding must vanish from the scores. Each
    # mesh kind (explicit, auto, auto 2-D) and the shared probe masks meet
    # a padded N at least once; each case compiles anew, so no more cases.
    triplet_cases = ((100, 4, "explicit", False), (37, 3, "explicit", True),
                     (37, 3, "auto", False), (37, 4, "explicit", False),
                     (37, 4, "auto2d", True))
    for num, devices, name, share in triplet_cases:
        config = srise.SRiseConfig(num_masks=num, num_patches=6, kernel_size=9,
                                   sigma=2.5, batch_size=8, share_probe_masks=share)
        one = triplet(embed_fn, params, probe, mate, 1 - probe, jax.random.key(0), config)
        many = triplet(embed_fn, params, probe, mate, 1 - probe, jax.random.key(0), config,
                       mesh=mesh((2, 2) if name == "auto2d" else devices, name == "auto"))
        out[f"triplet N={num} d={devices} {name} share={share}"] = (
            max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree.leaves(one), jax.tree.leaves(many))),
            many.nonmate.scores_b.shape[0])
    masks = masks_lib.gaussian_masks(jax.random.key(1), 37, (32, 32),
                                     num_patches=6, kernel_size=9, sigma=2.5)
    one = pair(embed_fn, params, probe, mate, masks, batch_size=8)
    for devices, name in ((3, "explicit"), (4, "auto2d")):
        many = pair(embed_fn, params, probe, mate, masks, batch_size=8,
                    mesh=mesh((2, 2) if name == "auto2d" else devices, name == "auto"))
        out[f"pair N=37 d={devices} {name}"] = (
            max(float(jnp.max(jnp.abs(a - b))) for a, b in
                zip(jax.tree.leaves(one), jax.tree.leaves(many))),
            many.scores_a.shape[0])
    # The explainers take the mesh too (37 masks: padded over 4 devices).
    from srise_jax.explainers import perturbation
    explain = jax.jit(perturbation.srise_map, static_argnums=(0,),
                      static_argnames=("num_masks", "num_patches", "kernel_size",
                                       "sigma", "batch_size", "mesh"))
    options = dict(num_masks=37, num_patches=6, kernel_size=9, sigma=2.5, batch_size=8)
    one = explain(embed_fn, params, probe, mate, jax.random.key(0), **options)
    many = explain(embed_fn, params, probe, mate, jax.random.key(0),
                   mesh=jax.make_mesh((4,), ("masks",)), **options)
    out["srise_map N=37 d=4 explicit"] = (float(jnp.max(jnp.abs(one - many))), 37)
    print(json.dumps(out))
""")


def test_any_num_masks_on_any_device_count_equals_one_device(tmp_path):
    script = tmp_path / "mesh.py"
    script.write_text(MESH_SCRIPT)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    tests_dir = os.path.dirname(__file__)
    proc = subprocess.run([sys.executable, str(script), tests_dir], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(result) == 5 + 2 + 1, sorted(result)
    for case, (diff, num) in result.items():
        assert num == int(case.split("N=")[1].split()[0]), case
        assert diff <= 1e-5, (case, diff)
