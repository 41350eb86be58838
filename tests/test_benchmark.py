"""The benchmark: method parsing, S-RISE convergence, AUC curves, Table 1 statistics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from srise_jax import benchmark, masks, metrics, srise
from srise_jax.explainers import perturbation
from srise_jax.similarity import unit_normalize


def test_parse_methods_labels_options_and_errors():
    methods = benchmark.parse_methods("srise@10, smoothgrad@8,integrated_gradients@4,random,")
    assert [m.label for m in methods] == ["srise@10", "smoothgrad@8",
                                         "integrated_gradients@4", "random"]
    assert [m.options() for m in methods] == [{"num_masks": 10}, {"num_samples": 8},
                                              {"num_steps": 4}, {}]
    assert benchmark.parse_methods(benchmark.DEFAULT_METHODS)[5].options() == {"num_masks": 500}
    for bad, needle in (("nope", "unknown explainer 'nope'"), ("srise@0", "positive"),
                        ("srise@x", "positive"), ("gradient@3", "no iteration count"),
                        ("random,random", "given twice"), (",", "no methods")):
        with pytest.raises(ValueError, match=needle):
            benchmark.parse_methods(bad)


def test_method_key_ignores_the_method_list():
    key = jax.random.key(3)
    a = benchmark.method_key(key, "srise@10")
    assert jnp.array_equal(jax.random.key_data(a),
                           jax.random.key_data(benchmark.method_key(key, "srise@10")))
    assert not jnp.array_equal(jax.random.key_data(a),
                               jax.random.key_data(benchmark.method_key(key, "srise@100")))


def test_convergence_maps_are_prefixes_of_one_mask_sequence(planted_region, key):
    embed_fn, params, _, probe, mate = planted_region
    options = dict(num_patches=8, kernel_size=9, sigma=2.0, batch_size=4)
    maps = perturbation.srise_convergence(embed_fn, params, probe, mate, key,
                                          counts=(3, 8, 13), **options)
    assert maps.shape == (3, 32, 32)
    # The last map is the plain explainer at the largest count.
    full = perturbation.srise_map(embed_fn, params, probe, mate, key, num_masks=13, **options)
    np.testing.assert_allclose(maps[-1], full, rtol=1e-5, atol=1e-6)
    # The map at n uses the first n masks of gaussian_masks(key, 13): the
    # kernel's pair explanation with those masks, computed independently.
    all_masks = masks.gaussian_masks(key, 13, (32, 32), num_patches=8, kernel_size=9,
                                     sigma=2.0)
    for count, got in zip((3, 8), maps[:2]):
        want = srise.srise_pair(embed_fn, params, probe, mate, all_masks[:count],
                                batch_size=4).saliency_a
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="increasing"):
        perturbation.srise_convergence(embed_fn, params, probe, mate, key, counts=(5, 5))


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_similarity_curve_matches_a_per_count_loop(planted_region, mode):
    embed_fn, params, region, probe, mate = planted_region
    saliency = jax.random.uniform(jax.random.key(1), (32, 32))
    curve = metrics.similarity_curve(embed_fn, params, probe, mate, saliency, mode=mode,
                                     num_points=7, batch_size=3)
    # Reference: one forward pass per count, pixels changed by a NumPy ranking.
    order = np.argsort(-np.asarray(saliency).ravel(), kind="stable")
    fill = np.asarray(probe).mean((0, 1))
    ref_unit = np.asarray(unit_normalize(embed_fn(params, mate[None])))[0]
    want = []
    for count in np.round(np.linspace(0, 1024, 7)).astype(int):
        changed = np.zeros(1024, bool)
        changed[order[:count]] = True
        changed = changed.reshape(32, 32, 1)
        x = (np.where(changed, probe, fill) if mode == "insertion"
             else np.where(changed, fill, probe))
        want.append(float(np.asarray(unit_normalize(embed_fn(params, jnp.asarray(x)[None])))[0]
                          @ ref_unit))
    np.testing.assert_allclose(curve.similarity, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(curve.fractions, np.round(np.linspace(0, 1024, 7)) / 1024)
    assert float(curve.auc) == pytest.approx(np.trapezoid(want, curve.fractions), rel=1e-5)
    with pytest.raises(ValueError, match="mode"):
        metrics.similarity_curve(embed_fn, params, probe, mate, saliency, mode="both")


def test_planted_map_has_lower_deletion_auc_than_its_reverse(planted_region):
    embed_fn, params, region, probe, mate = planted_region
    y0, y1, x0, x1 = region
    planted = jnp.zeros((32, 32)).at[y0:y1, x0:x1].set(1.0)
    auc = lambda s, mode: float(metrics.similarity_curve(
        embed_fn, params, probe, mate, s, mode=mode, num_points=9).auc)
    assert auc(planted, "deletion") < auc(-planted, "deletion")
    assert auc(planted, "insertion") > auc(-planted, "insertion")


def _rows(values_by_triplet, method="m", match=1):
    return [{"triplet": t, "method": method, "iterations": "", "match": match,
             "deletion": d, "insertion": i, "deletion_auc": "", "insertion_auc": ""}
            for t, pairs in values_by_triplet.items() for d, i in pairs]


def test_summary_means_and_cluster_bootstrap():
    rng = np.random.default_rng(0)
    values = {t: [(rng.uniform(), rng.uniform()) for _ in range(1 + t % 3)]
              for t in range(20)}
    rows = _rows(values) + _rows({0: [(0.0, 0.0)]}, match=0)  # rejected: left out
    rows.append({**rows[0], "deletion": "", "triplet": 99})  # NaN deletion: left out
    (line,) = benchmark.summarize(rows, num_resamples=2000)
    flat = [pair for pairs in values.values() for pair in pairs]
    assert line["deletion"] == pytest.approx(np.mean([d for d, _ in flat]))
    assert line["insertion"] == pytest.approx(np.mean([i for _, i in flat] + [rows[0]["insertion"]]))
    assert line["average"] == pytest.approx(np.mean([(d + i) / 2 for d, i in flat]))
    assert line["deletion_n"] == len(flat) and line["average_n"] == len(flat)
    assert line["deletion_low"] < line["deletion"] < line["deletion_high"]
    assert math.isnan(line["deletion_auc"])
    # Independent check of the interval: the same cluster bootstrap in plain NumPy.
    sums = np.array([sum(d for d, _ in values[t]) for t in range(20)])
    counts = np.array([len(values[t]) for t in range(20)])
    picks = np.random.default_rng(1).integers(20, size=(20000, 20))
    ref = np.quantile(sums[picks].sum(1) / counts[picks].sum(1), [0.025, 0.975])
    assert line["deletion_low"] == pytest.approx(ref[0], abs=0.01)
    assert line["deletion_high"] == pytest.approx(ref[1], abs=0.01)
    # Same seed, same table; a constant metric has a zero-width interval.
    assert benchmark.summarize(rows, num_resamples=2000) == [line]
    (flat_line,) = benchmark.summarize(_rows({t: [(0.25, 0.5)] for t in range(5)}))
    assert flat_line["deletion_low"] == flat_line["deletion_high"] == pytest.approx(0.25)


def test_table_lists_methods_in_order_with_intervals():
    rows = _rows({0: [(0.1, 0.2)], 1: [(0.3, 0.4)]}, method="srise@500") + \
        _rows({0: [(0.5, 0.6)], 1: [(0.7, 0.8)]}, method="random")
    table = benchmark.summarize(rows, methods=["random", "srise@500"], num_resamples=100)
    text = benchmark.format_table(table)
    lines = text.splitlines()
    assert lines[2].startswith("| random | - | 0.6000 [0.5000, 0.7000]")
    assert lines[3].startswith("| srise | 500 | 0.2000 [0.1000, 0.3000]")


def test_preset_methods_run_srise_with_the_preset_settings(planted_region, key):
    embed_fn, params, _, probe, mate = planted_region
    methods = benchmark.parse_methods("srise@6,srise[mean_fill]@6,srise[paper]@3")
    assert [m.label for m in methods] == ["srise@6", "srise[mean_fill]@6", "srise[paper]@3"]
    parts = benchmark.make_explain_fns(embed_fn, methods, batch_size=4)
    maps = {}
    for part in parts:
        maps.update(part.fn(params, probe, mate, key))
    srise_key = benchmark.method_key(key, "srise")
    for label, options in (("srise@6", {"num_masks": 6}),
                           ("srise[mean_fill]@6", {**srise.PRESETS["mean_fill"], "num_masks": 6}),
                           ("srise[paper]@3", {**srise.PRESETS["paper"], "num_masks": 3})):
        want = perturbation.srise_map(embed_fn, params, probe, mate, srise_key,
                                      batch_size=4, **options)
        np.testing.assert_allclose(maps[label], want, rtol=1e-5, atol=1e-6)
    assert not np.allclose(maps["srise@6"], maps["srise[mean_fill]@6"], atol=1e-4)
    for bad in ("gradient[paper]", "srise[best]@5"):
        with pytest.raises(ValueError, match="presets are srise"):
            benchmark.parse_methods(bad)
