"""bfloat16 compute: the maps and metrics of the dlib model stay those of float32.

Issue 6, section 3: on the sample triplets, Spearman correlation with the
float32 maps >= 0.99 and Deletion/Insertion fractions within 0.02. Both runs
use the same masks (same key), so the comparison isolates the precision.
"""

import math

import jax
import jax.numpy as jnp
import pytest

from srise_jax import align, metrics, models, protocols, sanity, srise

pytestmark = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("face_recognition_models") is None,
    reason="needs the face_recognition_models package (the dlib weights): "
           "pip install '.[test]'")


@pytest.fixture(scope="module")
def dlib_both():
    f32, params = models.load_dlib()
    b16, _ = models.load_dlib(dtype=jnp.bfloat16)
    return f32, b16, params


def test_bfloat16_maps_and_metrics_match_float32(dlib_both):
    f32, b16, params = dlib_both
    faces = [protocols.load_protocol_face(e, size=150, template=align.DLIB_150)
             for e in protocols.sample_protocol()[0]]  # obama, obama2, biden
    key = jax.random.key(0)
    run = jax.jit(srise.srise_triplet, static_argnums=(0, 6))
    want = run(f32, params, *faces, key, srise.SRiseConfig(num_masks=32, batch_size=16))
    got = run(b16, params, *faces, key,
              srise.SRiseConfig(num_masks=32, batch_size=16, compute_dtype=jnp.bfloat16))
    for pair in ("mate", "nonmate"):
        for side in ("saliency_a", "saliency_b"):
            rho = float(sanity.rank_correlation(getattr(getattr(want, pair), side),
                                                getattr(getattr(got, pair), side)))
            assert rho >= 0.99, (pair, side, rho)

    def fraction(metric, embed_fn, saliency):
        return float(metric(embed_fn, params, faces[0], faces[1], saliency,
                            models.DLIB_THRESHOLD, step=150, batch_size=32).fraction)

    # On the same map, the metrics in bfloat16 equal those in float32.
    for metric in (metrics.deletion, metrics.insertion):
        pair = [fraction(metric, fn, want.mate.saliency_a) for fn in (f32, b16)]
        assert not math.isnan(pair[0])
        assert abs(pair[0] - pair[1]) <= 0.02, (metric.__name__, pair)
    # Across pipelines (each model with its own map) only Deletion is compared:
    # on this triplet the Insertion curve runs within 0.002 of dlib's threshold
    # over a third of the pixels, so the few rank swaps between two maps with
    # Spearman 0.9995 move its first crossing by 0.075 whatever the precision
    # (measured: 0.4412 vs 0.5161 with the float32 model on both maps).
    across = [fraction(metrics.deletion, f32, want.mate.saliency_a),
              fraction(metrics.deletion, b16, got.mate.saliency_a)]
    assert abs(across[0] - across[1]) <= 0.02, across
