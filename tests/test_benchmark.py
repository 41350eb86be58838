"""The benchmark: method parsing, S-RISE convergence, AUC curves, Table 1 statistics, the runner."""

import collections
import csv
import json
import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from planted_face import THRESHOLD, planted_model

from srise_jax import benchmark, masks, metrics, protocols, srise, viz
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
    options = dict(num_patches=8, kernel_size=9, sigma=2.0, batch_size=4, reference_side=None)
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


@pytest.mark.parametrize("mode, batch_size, batches", [
    ("deletion", 3, 3), ("insertion", 3, 3),
    # 7 points at most 6 a batch: 2 batches of 4, one padded pass (not 5).
    ("deletion", 6, 2)])
def test_similarity_curve_matches_a_per_count_loop(planted_region, mode, batch_size, batches):
    embed_fn, params, region, probe, mate = planted_region
    saliency = jax.random.uniform(jax.random.key(1), (32, 32))
    shapes = []  # the batches embed_fn is traced with: the reference's, then the curve's

    def recorded(params, images):
        shapes.append(images.shape[0])
        return embed_fn(params, images)

    curve = metrics.similarity_curve(recorded, params, probe, mate, saliency, mode=mode,
                                     num_points=7, batch_size=batch_size)
    assert shapes == [1, -(-7 // batches)]
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


def _row(triplet, image, reference, d, i, method="m", match=1, **extra):
    return {"triplet": triplet, "image": image, "reference": reference, "method": method,
            "iterations": "", "match": match, "deletion": d, "insertion": i,
            "deletion_auc": "", "insertion_auc": "", **extra}


def _rows(values_by_triplet, method="m", match=1):
    """Rows of one pair per triplet (distinct pairs), both sides alternating."""
    return [_row(t, *((f"a{t}", f"b{t}") if k % 2 == 0 else (f"b{t}", f"a{t}")), d, i,
                 method=method, match=match)
            for t, pairs in values_by_triplet.items() for k, (d, i) in enumerate(pairs)]


def _numpy_pair_bootstrap(rows, metric, *, num_resamples, label="m", seed=0):
    """Reference interval: resample unordered image pairs with replacement, in NumPy.

    Clusters are the sorted (image, reference) tuples in order of first
    appearance; each resample's mean is the sum of its clusters' values over
    the count of their rows. The generator is seeded as `summarize` documents
    seeding (seed and the CRC-32 of "<method>/<metric>"), so the picks and
    hence the interval must agree to rounding.
    """
    clusters = {}
    for image, reference, value in rows:
        clusters.setdefault(tuple(sorted((image, reference))), []).append(value)
    sums = np.array([sum(v) for v in clusters.values()])
    counts = np.array([len(v) for v in clusters.values()])
    rng = np.random.default_rng([seed, zlib.crc32(f"{label}/{metric}".encode())])
    picks = rng.integers(len(clusters), size=(num_resamples, len(clusters)))
    return np.quantile(sums[picks].sum(1) / counts[picks].sum(1), [0.025, 0.975])


def test_summary_bootstrap_resamples_distinct_pairs_against_numpy():
    # Six pairs recur in 20 triplets (as in the bundled protocol), on either
    # side, with 1-3 rows each; a rejected row and one that names no image
    # are checked for too.
    rng = np.random.default_rng(0)
    rows = []
    for t in range(20):
        a, b = f"img{t % 6}", f"other{t % 6}"
        for k in range(1 + t % 3):
            rows.append(_row(t, *((a, b) if k % 2 == 0 else (b, a)),
                             rng.uniform() + t % 6 / 3, rng.uniform()))
    scored = list(rows)
    rows.append(_row(0, "x", "y", 0.0, 0.0, match=0))  # rejected: excluded
    (line,) = benchmark.summarize(rows, num_resamples=3000)
    d = np.array([r["deletion"] for r in scored])
    assert line["deletion"] == pytest.approx(d.mean())
    for metric in ("deletion", "insertion"):
        want = _numpy_pair_bootstrap([(r["image"], r["reference"], r[metric]) for r in scored],
                                     metric, num_resamples=3000)
        assert (line[f"{metric}_low"], line[f"{metric}_high"]) == \
            pytest.approx(tuple(want), rel=1e-12)
    assert line["deletion_n"] == len(scored) and line["deletion_pairs"] == 6
    assert line["excluded"] == {"rejected": 1}
    assert line["deletion_low"] < line["deletion"] < line["deletion_high"]
    assert math.isnan(line["deletion_auc"]) and line["deletion_auc_n"] == 0
    # Same seed, same table; a constant metric has a zero-width interval; a
    # single pair has none.
    assert benchmark.summarize(rows, num_resamples=3000) == [line]
    (flat_line,) = benchmark.summarize(_rows({t: [(0.25, 0.5)] for t in range(5)}))
    assert flat_line["deletion_low"] == flat_line["deletion_high"] == pytest.approx(0.25)
    (single,) = benchmark.summarize(_rows({0: [(0.25, 0.5), (0.5, 0.5)]}))
    assert single["deletion"] == pytest.approx(0.375) and math.isnan(single["deletion_low"])
    with pytest.raises(ValueError, match="result row 0: no 'image', 'reference'"):
        benchmark.summarize([{"method": "m", "match": 1, "deletion": 1, "insertion": 1}])


def test_duplicated_pairs_do_not_narrow_the_interval():
    # Every pair of a 12-pair table repeated in three triplets (either side):
    # the same mean and, resampling pairs, the same interval, equal to the
    # NumPy reference on the undup rows. Clustered by triplet (or row), the
    # copies would count as 36 independent pairs and narrow it by ~sqrt(3).
    rng = np.random.default_rng(1)
    base = _rows({t: [(rng.uniform(), rng.uniform()), (rng.uniform(), rng.uniform())]
                  for t in range(12)})
    copies = [{**row, "triplet": row["triplet"] + 100 * copy,
               "image": row["reference"] if copy == 1 else row["image"],
               "reference": row["image"] if copy == 1 else row["reference"]}
              for copy in range(3) for row in base]
    (once,) = benchmark.summarize(base, num_resamples=4000)
    (thrice,) = benchmark.summarize(copies, num_resamples=4000)
    for metric in ("deletion", "insertion", "average"):
        values = [(r["image"], r["reference"],
                   {"deletion": r["deletion"], "insertion": r["insertion"],
                    "average": (r["deletion"] + r["insertion"]) / 2}[metric]) for r in base]
        want = _numpy_pair_bootstrap(values, metric, num_resamples=4000)
        for line in (once, thrice):
            assert line[metric] == pytest.approx(np.mean([v for *_, v in values]), rel=1e-12)
            assert (line[f"{metric}_low"], line[f"{metric}_high"]) == \
                pytest.approx(tuple(want), rel=1e-12)
    assert thrice["deletion_n"] == 3 * once["deletion_n"] == 72
    assert thrice["deletion_pairs"] == once["deletion_pairs"] == 12


def test_undefined_rows_are_excluded_from_deletion_insertion_and_average_alike():
    # Planted: 16 scored rows of 8 pairs, some fractions undefined (with and
    # without a reason), and 3 rejected rows; each AUC defined on all scored rows.
    rng = np.random.default_rng(2)
    d, i = rng.uniform(size=16), rng.uniform(size=16)
    d_reason, i_reason = [""] * 16, [""] * 16
    for k in (1, 4, 9):
        d[k], d_reason[k] = np.nan, "cannot_flip"
    for k in (4, 6):
        i[k], i_reason[k] = np.nan, "already_flipped"
    d[12] = np.nan  # no reason given
    auc = rng.uniform(size=16)
    rows = [_row(k // 2, f"p{k // 2}", f"q{k // 2}", "" if np.isnan(d[k]) else d[k],
                 "" if np.isnan(i[k]) else i[k], deletion_reason=d_reason[k],
                 insertion_reason=i_reason[k], deletion_auc=auc[k], insertion_auc=1 - auc[k])
            for k in range(16)]
    rows += [_row(20 + k, f"r{k}", "s", "", "", match=0, deletion_reason="rejected",
                  insertion_reason="rejected") for k in range(3)]
    (line,) = benchmark.summarize(rows, num_resamples=2000)
    # Independent: NumPy over the rows where both fractions are defined.
    both = ~np.isnan(d) & ~np.isnan(i)
    assert line["deletion"] == pytest.approx(d[both].mean(), rel=1e-12)
    assert line["insertion"] == pytest.approx(i[both].mean(), rel=1e-12)
    assert line["average"] == pytest.approx((d[both].mean() + i[both].mean()) / 2, rel=1e-12)
    assert line["deletion_n"] == line["insertion_n"] == line["average_n"] == both.sum() == 11
    assert line["average_pairs"] == len({k // 2 for k in np.flatnonzero(both)}) == 8
    assert line["deletion_auc"] == pytest.approx(auc.mean(), rel=1e-12)
    assert line["deletion_auc_n"] == 16
    assert line["excluded"] == {"rejected": 3, "deletion cannot_flip": 3,
                                "insertion already_flipped": 2,
                                "deletion no_reason_given": 1}
    kept = [(r["image"], r["reference"], (dk + ik) / 2)
            for r, dk, ik, ok in zip(rows, d, i, both) if ok]
    want = _numpy_pair_bootstrap(kept, "average", num_resamples=2000)
    assert (line["average_low"], line["average_high"]) == pytest.approx(tuple(want), rel=1e-12)
    # The table prints the counts and what each exclusion means.
    text = benchmark.format_table([line])
    cells = text.splitlines()[2].split(" | ")
    assert cells[5:8] == ["11", "8", "3 rejected, 3 deletion cannot_flip, "
                          "1 deletion no_reason_given, 2 insertion already_flipped"]
    assert cells[-1] == "16 (8) |"
    assert "95% CI: bootstrap over 8 distinct pairs" in text
    assert f"- deletion cannot_flip: {metrics.REASON_TEXT['cannot_flip']}" in text
    assert f"- rejected: {metrics.REASON_TEXT['rejected']} (not scored)" in text


def test_table_lists_methods_in_order_with_intervals():
    rows = _rows({0: [(0.1, 0.2)], 1: [(0.3, 0.4)]}, method="srise@500") + \
        _rows({0: [(0.5, 0.6)], 1: [(0.7, 0.8)]}, method="random")
    table = benchmark.summarize(rows, methods=["random", "srise@500"], num_resamples=100)
    text = benchmark.format_table(table)
    lines = text.splitlines()
    assert lines[2].startswith("| random | - | 0.6000 [0.5000, 0.7000]")
    assert lines[3].startswith("| srise | 500 | 0.2000 [0.1000, 0.3000]")


def _paired_rows(rng, offset, *, noise=0.005):
    """Two methods on 12 pairs (some in two triplets, either side): "ref", and
    "b" = "ref" + `offset` + small noise per row. Each pair's level differs
    widely (uniform over [0, 0.6]), so the pairs' spread swamps `offset`
    in each method's own interval but not in the paired one."""
    rows = []
    for t in range(16):
        a, b = f"img{t % 12}", f"other{t % 12}"
        level = 0.05 * (t % 12)
        for side in range(2):
            image, reference = (a, b) if side == 0 else (b, a)
            d, i = level + rng.uniform(0, 0.05), level + rng.uniform(0, 0.05)
            rows.append(_row(t, image, reference, d, i, method="ref"))
            rows.append(_row(t, image, reference, d + offset + rng.normal(0, noise),
                             i + offset + rng.normal(0, noise), method="b"))
    return rows


def test_paired_differences_separate_what_table_1_intervals_cannot():
    rng = np.random.default_rng(4)
    rows = _paired_rows(rng, 0.02)
    # Planted exclusions: a rejected slot (both methods), and a map-dependent
    # undefined fraction of "b" only (its partner is left out as unpaired).
    rows += [_row(30, "x", "y", "", "", method=m, match=0) for m in ("ref", "b")]
    rows += [_row(31, "u", "v", 0.3, 0.3, method="ref"),
             _row(31, "u", "v", "", 0.3, method="b", deletion_reason="invalid_input")]
    rows += [{**r, "method": "same"} for r in rows if r["method"] == "ref"]
    table = benchmark.summarize(rows, methods=["ref", "b"], num_resamples=4000)
    (b, same) = benchmark.paired_differences(rows, reference="ref", num_resamples=4000)
    assert [b["method"], same["method"]] == ["b", "same"]  # the reference is left out
    # Independent: NumPy over the 32 paired slots, resampling the 12 pairs.
    paired = [r for r in rows if r["triplet"] < 30]
    ref = {(r["triplet"], r["image"]): r for r in paired if r["method"] == "ref"}
    diffs = {metric: [] for metric in ("deletion", "insertion", "average")}
    for r in (r for r in paired if r["method"] == "b"):
        o = ref[(r["triplet"], r["image"])]
        for metric, get in (("deletion", lambda x: x["deletion"]),
                            ("insertion", lambda x: x["insertion"]),
                            ("average", lambda x: (x["deletion"] + x["insertion"]) / 2)):
            diffs[metric].append((r["image"], r["reference"], get(r) - get(o)))
    for metric, values in diffs.items():
        assert b[metric] == pytest.approx(np.mean([v for *_, v in values]), rel=1e-12)
        want = _numpy_pair_bootstrap(values, metric, num_resamples=4000, label="b-ref")
        assert (b[f"{metric}_low"], b[f"{metric}_high"]) == pytest.approx(tuple(want),
                                                                          rel=1e-12)
    # Over the same rows (without the slot only "ref" defines), the mean
    # difference is the difference of Table 1's means.
    ref_same, b_same = benchmark.summarize([r for r in rows if r["triplet"] != 31],
                                           methods=["ref", "b"], num_resamples=10)
    assert b["average"] == pytest.approx(b_same["average"] - ref_same["average"], rel=1e-9)
    assert b["rows"] == 32 and b["pairs"] == 12 and b["unpaired"] == 1
    assert (b["lower"], b["higher"], b["tied"]) == (0, 12, 0)
    # The point of pairing: Table 1's intervals overlap, the paired one excludes 0.
    ref_line, b_line = table
    assert b_line["average_low"] < ref_line["average_high"]
    assert 0 < b["average_low"] < 0.02 < b["average_high"]
    # A method equal to the reference differs by 0 on every pair.
    assert same["average"] == same["average_low"] == same["average_high"] == 0
    assert (same["lower"], same["higher"], same["tied"]) == (0, 0, 13)  # and (u, v)
    # Same seed, same table; a smaller offset is not separated.
    assert benchmark.paired_differences(rows, reference="ref", num_resamples=4000) == [b, same]
    (near,) = benchmark.paired_differences(_paired_rows(np.random.default_rng(4), 0.0),
                                           reference="ref", num_resamples=4000)
    assert near["average_low"] < 0 < near["average_high"]


def test_paired_differences_refuse_what_they_cannot_pair():
    rows = _rows({0: [(0.1, 0.2)], 1: [(0.3, 0.4)]}, method="a")
    with pytest.raises(ValueError, match=r"no result rows of the reference 'b'; methods: a"):
        benchmark.paired_differences(rows, reference="b")
    with pytest.raises(ValueError, match=r"result row 2: a second row of 'a' for a0 against "
                                         r"b0 in triplet 0"):
        benchmark.paired_differences(rows + rows[:1], reference="a")
    with pytest.raises(ValueError, match="several metric fills"):
        benchmark.paired_differences(rows + [{**rows[0], "metric_fill": "blur"}],
                                     reference="a")


def test_default_reference_is_the_default_srise_at_its_largest_count():
    parse = benchmark.parse_methods
    assert benchmark.default_reference(parse("srise[paper]@1000,srise@100,srise@500,"
                                             "rise@2000")) == "srise@500"
    assert benchmark.default_reference(parse("srise@100,srise")) == "srise"  # 500 masks
    assert benchmark.default_reference(parse("srise[paper]@500,rise@500")) is None


def test_paired_tables_follow_their_fills_table_1():
    rows = _paired_rows(np.random.default_rng(5), 0.02)
    rows += [{**r, "metric_fill": "blur"} for r in rows]
    by_fill = benchmark.rows_by_fill(rows)
    tables = {f: benchmark.summarize(r, num_resamples=200) for f, r in by_fill.items()}
    paired = {f: benchmark.paired_differences(r, reference="ref", num_resamples=200)
              for f, r in by_fill.items()}
    text = benchmark.format_tables(tables, paired=paired)
    heads = [line for line in text.splitlines() if line.startswith("#")]
    assert heads == ["## Overview: average of Deletion and Insertion per metric fill",
                     "### Paired with ref: average of Deletion and Insertion per metric fill",
                     "## Table 1, metric fill: mean", "### Paired with ref, metric fill: mean",
                     "## Table 1, metric fill: blur", "### Paired with ref, metric fill: blur"]
    assert text.startswith(benchmark.format_overview(tables, paired=paired))
    assert benchmark.format_tables(tables, paired=paired, overview=False) == \
        text[text.index("## Table 1"):]
    line = paired["mean"][0]
    section = text.split("### Paired with ref, metric fill: mean")[1]
    row = next(r for r in section.splitlines() if r.startswith("| b |"))
    assert row == (f"| b | {line['average']:+.4f} [{line['average_low']:+.4f}, "
                   f"{line['average_high']:+.4f}] | {line['deletion']:+.4f} "
                   f"[{line['deletion_low']:+.4f}, {line['deletion_high']:+.4f}] | "
                   f"{line['insertion']:+.4f} [{line['insertion_low']:+.4f}, "
                   f"{line['insertion_high']:+.4f}] | 0 / 12 / 0 | 32 (12) |")
    assert line["average"] > 0 and "+0.0" in row
    assert benchmark.format_tables(tables) == benchmark.format_tables(tables, paired={})
    assert "Paired" not in benchmark.format_tables(tables)
    # One fill: nothing to put side by side.
    assert "Overview" not in benchmark.format_tables({"mean": tables["mean"]})


def test_overview_puts_each_fills_average_side_by_side():
    rows = _paired_rows(np.random.default_rng(6), 0.02)
    # Under blur, "b" has no rows and "ref" one pair only; under impute,
    # "ref" has no defined average (every row undefined).
    blur = [{**r, "metric_fill": "blur"} for r in rows if r["method"] == "ref"][:2]
    impute = [{**r, "metric_fill": "impute", "deletion": "", "deletion_reason": "cannot_flip"}
              for r in rows]
    by_fill = benchmark.rows_by_fill(rows + blur + impute)
    tables = {f: benchmark.summarize(r, num_resamples=200) for f, r in by_fill.items()}
    text = benchmark.format_overview(tables)
    lines = text.splitlines()
    assert lines[2] == "| method | mean fill | blur fill | impute fill |"
    ref, b = (next(line for line in tables["mean"] if line["method"] == m) for m in ("ref", "b"))
    (single,) = tables["blur"]
    assert single["average_pairs"] == 1
    assert lines[4] == (f"| ref | {ref['average']:.4f} [{ref['average_low']:.4f}, "
                        f"{ref['average_high']:.4f}] | {single['average']:.4f} "
                        f"[one pair: no interval] | n/a |")
    assert lines[5] == (f"| b | {b['average']:.4f} [{b['average_low']:.4f}, "
                        f"{b['average_high']:.4f}] | - | n/a |")
    assert b["average"] > ref["average"]  # the planted offset
    assert "Paired" not in text and benchmark.format_overview({}) == ""

    paired = {f: benchmark.paired_differences(r, reference="ref", num_resamples=200)
              for f, r in by_fill.items() if f != "blur"}
    lines = benchmark.format_overview(tables, paired=paired).splitlines()
    start = lines.index("### Paired with ref: average of Deletion and Insertion per metric fill")
    (diff,) = paired["mean"]
    assert lines[start + 2] == "| method minus ref | mean fill | blur fill | impute fill |"
    assert lines[start + 4] == (f"| b | {diff['average']:+.4f} [{diff['average_low']:+.4f}, "
                                f"{diff['average_high']:+.4f}]; 0 / 12 / 0 | - | n/a |")
    assert diff["average_low"] > 0  # separated: "b" is higher on every pair


def test_score_reasons_reach_the_results_rows(planted_region):
    # Thresholds placed by the pair's own similarities: below the all-mean
    # image's (Deletion cannot flip, Insertion starts matched), between it and
    # the intact pair's (both defined), above the pair's (rejected).
    embed_fn, params, _, probe, mate = planted_region
    unit = lambda x: np.asarray(unit_normalize(embed_fn(params, jnp.asarray(x)[None])))[0]
    mean_image = np.broadcast_to(np.asarray(probe).mean((0, 1)), probe.shape)
    s_mean, s_pair = unit(mean_image) @ unit(mate), unit(probe) @ unit(mate)
    assert s_mean < s_pair - 0.01
    score = benchmark.make_score_fn(embed_fn, step=32, batch_size=64, num_points=5)
    saliency = jax.random.uniform(jax.random.key(0), (32, 32))
    for threshold, want in ((s_mean - 0.01, ("cannot_flip", "already_flipped")),
                            ((s_mean + s_pair) / 2, ("", "")),
                            (s_pair + 0.01, ("rejected", "rejected"))):
        scored = score(params, probe, mate, saliency, float(threshold))
        row = benchmark.result_row(triplet=0, pair="mate", side="probe", image="a",
                                   reference="b", method="random", iterations="",
                                   similarity=s_pair, match=True, seconds=0.1,
                                   scores=jax.tree.map(np.asarray, scored))
        assert (row["deletion_reason"], row["insertion_reason"]) == want
        for metric, reason in zip(("deletion", "insertion"), want):
            assert (row[metric] == "") == bool(reason)
    unscored = benchmark.result_row(triplet=0, pair="nonmate", side="probe", image="a",
                                    reference="c", method="random", iterations="",
                                    similarity=0.1, match=False)
    assert unscored["deletion_reason"] == unscored["insertion_reason"] == "rejected"
    assert unscored["seconds"] == unscored["deletion"] == unscored["deletion_curve"] == ""
    assert set(unscored) == set(benchmark.COLUMNS)


def test_results_without_reason_columns_cannot_be_resumed(tmp_path):
    # A results.csv from before the reason columns: Deletion that never flips
    # read 1.0 there, so resuming would mix two definitions in one table.
    old = [c for c in benchmark.COLUMNS if not c.endswith("_reason") and c != "metric_fill"]
    path = tmp_path / "results.csv"
    path.write_text(",".join(old) + "\n" + ",".join(["0"] * len(old)) + "\n")
    with pytest.raises(ValueError, match="written by an older srise-jax, without the "
                                         "deletion_reason and insertion_reason columns"):
        benchmark.complete_rows(path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="unexpected columns"):
        benchmark.complete_rows(path)


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
    # Since issue 14 the mean_fill preset is the defaults: the same maps; the
    # paper's preset is not.
    np.testing.assert_allclose(maps["srise@6"], maps["srise[mean_fill]@6"], rtol=1e-6)
    default_at_3 = perturbation.srise_map(embed_fn, params, probe, mate, srise_key,
                                          batch_size=4, num_masks=3)
    assert not np.allclose(maps["srise[paper]@3"], default_at_3, atol=1e-4)
    for bad in ("gradient[paper]", "srise[best]@5"):
        with pytest.raises(ValueError, match="presets are srise"):
            benchmark.parse_methods(bad)


_METHODS = "srise@4,srise@8,random"
_OPTIONS = dict(batch_size=4, metric_batch=8, curve_points=5)


def _job(row):
    return row["triplet"], row["pair"], row["side"], row["method"]


def test_run_benchmark_from_python_equals_the_library_functions_and_resumes(tmp_path):
    model, out = planted_model(), tmp_path / "run"
    # A triplet with both pairs accepted, and one whose mate the model rejects.
    triplets = [protocols.sample_protocol()[i] for i in (0, 3)]
    calls = []
    result = benchmark.run_benchmark(model, triplets, _METHODS, out, progress=calls.append,
                                     **_OPTIONS)
    rows = result.rows
    assert result.skipped == () and sum(calls) == 2 * 3  # triplets x methods
    assert len(rows) == 2 * 2 * 2 * 3  # triplets x pairs x sides x methods
    assert rows == benchmark.read_rows(out / "results.csv") == \
        benchmark.read_rows(str(out / "results.csv"))  # a path as a string too

    # Every row, recomputed one job at a time from the library's functions:
    # the same map (job key, method key), the same scores, and a fraction
    # equal to metrics.deletion's or the same reason why it is undefined.
    parts = benchmark.make_explain_fns(model.embed_fn, benchmark.parse_methods(_METHODS),
                                       batch_size=4)
    score = benchmark.make_score_fn(model.embed_fn, step=32, batch_size=8, num_points=5)
    checked = collections.Counter()
    for index, triplet in enumerate(triplets):
        faces = [protocols.load_protocol_face(entry, size=32) for entry in triplet]
        sims = benchmark.triplet_similarities(model.embed_fn, model.params, *faces)
        for row in (r for r in rows if r["triplet"] == str(index)):
            job = benchmark.make_job(index, triplet, faces, pair=row["pair"], side=row["side"])
            match = sims[job.pair] >= THRESHOLD
            scores = None
            if match:
                key = benchmark.job_key(jax.random.key(0), index, job.pair, job.side)
                part = next(p for p in parts if row["method"] in p.labels)
                saliency = part.fn(model.params, job.image, job.reference, key)[row["method"]]
                scores = jax.tree.map(np.asarray, score(model.params, job.image, job.reference,
                                                        saliency, THRESHOLD))
                deletion = metrics.deletion(model.embed_fn, model.params, job.image,
                                            job.reference, saliency, THRESHOLD, step=32)
                if row["deletion_reason"]:
                    assert row["deletion_reason"] == metrics.undefined_reason(deletion)
                else:
                    assert float(row["deletion"]) == pytest.approx(float(deletion.fraction),
                                                                   abs=1e-6)
            want = benchmark.result_row(
                triplet=index, pair=job.pair, side=job.side, image=job.image_name,
                reference=job.reference_name, method=row["method"],
                iterations=row["method"].partition("@")[2], similarity=sims[job.pair],
                match=match, seconds=0.0 if match else None, scores=scores)
            assert {**row, "seconds": ""} == {k: str(v) for k, v in {**want, "seconds": ""}.items()}
            checked[row["deletion_reason"] or "defined"] += 1
    # Rejected pairs, defined fractions and undefined ones were all recomputed.
    assert checked["defined"] and checked["cannot_flip"] and checked["rejected"], checked

    # A rerun finds nothing to do and leaves the file as it was.
    first = (out / "results.csv").read_bytes()
    runner = benchmark.Runner(model, triplets, _METHODS, out, **_OPTIONS)
    assert runner.pending == ()
    assert runner.run().rows == rows and (out / "results.csv").read_bytes() == first
    # Killed in the middle of the last line: that block alone runs again,
    # to the same numbers.
    lines = first.decode().splitlines(keepends=True)
    (out / "results.csv").write_text("".join(lines[:-1]) + lines[-1][:10])
    with pytest.warns(UserWarning, match=r"left out the 3 row\(s\) of 1 unfinished "
                                         r"\(triplet, method\) block\(s\) \(triplet 1 "
                                         r"random\), to run again; a last line cut short; "
                                         r"kept 20 row\(s\)"):
        runner = benchmark.Runner(model, triplets, _METHODS, out, **_OPTIONS)
    assert runner.pending == (benchmark.Pending(1, ("random",), (("random", "mean"),)),)
    calls = []
    again = runner.run(progress=calls.append)
    assert calls == [1] and runner.pending == ()
    assert ({_job(r): {**r, "seconds": ""} for r in again.rows}
            == {_job(r): {**r, "seconds": ""} for r in rows})
    # Other settings never mix into one table.
    with pytest.raises(ValueError, match="holds a run with seed = 0, this one asks for 1"):
        benchmark.run_benchmark(model, triplets, _METHODS, out, seed=1, **_OPTIONS)



_FILL_METHODS = "srise@4,random"


def _recompute_row(model, triplets, row, parts):
    """A row's map and its Deletion/Insertion under its fill, from the library's functions."""
    index = int(row["triplet"])
    faces = [protocols.load_protocol_face(entry, size=32) for entry in triplets[index]]
    job = benchmark.make_job(index, triplets[index], faces, pair=row["pair"], side=row["side"])
    key = benchmark.job_key(jax.random.key(0), index, job.pair, job.side)
    part = next(p for p in parts if row["method"] in p.labels)
    saliency = part.fn(model.params, job.image, job.reference, key)[row["method"]]
    options = dict(step=32, fill=row["metric_fill"],
                   key=benchmark.metric_key(key, row["metric_fill"]))
    return [exact(model.embed_fn, model.params, job.image, job.reference, saliency,
                  THRESHOLD, **options) for exact in (metrics.deletion, metrics.insertion)]


def test_every_map_is_scored_under_each_metric_fill_and_fills_can_be_added(tmp_path):
    model, out = planted_model(), tmp_path / "run"
    triplets = [protocols.sample_protocol()[0]]  # both pairs accepted
    calls = []
    result = benchmark.run_benchmark(model, triplets, _FILL_METHODS, out,
                                     metric_fills="mean,blur", progress=calls.append,
                                     **_OPTIONS)
    rows = result.rows
    assert sum(calls) == 2 * 2  # methods x fills
    assert len(rows) == 2 * 2 * 2 * 2  # pairs x sides x methods x fills
    assert [r["metric_fill"] for r in rows[:4]] == ["mean", "blur"] * 2
    # Each row's fractions are metrics.deletion / insertion with its fill,
    # computed directly on the same map.
    parts = benchmark.make_explain_fns(model.embed_fn, benchmark.parse_methods(_FILL_METHODS),
                                       batch_size=4)
    for row in rows:
        assert row["match"] == "1"
        for metric, want in zip(("deletion", "insertion"),
                                _recompute_row(model, triplets, row, parts)):
            if row[f"{metric}_reason"]:
                assert row[f"{metric}_reason"] == metrics.undefined_reason(want)
            else:
                assert float(row[metric]) == pytest.approx(float(want.fraction), abs=1e-6)
    by_job = collections.defaultdict(dict)
    for row in rows:
        by_job[_job(row)][row["metric_fill"]] = row
    differ = sum(fills["mean"]["deletion_curve"] != fills["blur"]["deletion_curve"]
                 for fills in by_job.values())
    assert differ == len(by_job) == 8  # the fills are different measurements

    # One Table 1 per fill; summarize refuses rows of several fills.
    tables = {fill: benchmark.summarize(fill_rows, num_resamples=50)
              for fill, fill_rows in benchmark.rows_by_fill(rows).items()}
    assert list(tables) == ["mean", "blur"]
    assert all(line["metric_fill"] == fill for fill, table in tables.items() for line in table)
    text = benchmark.format_tables(tables)
    assert text.index("## Table 1, metric fill: mean") < text.index("## Table 1, metric fill: blur")
    with pytest.raises(ValueError, match=r"several metric fills \(mean, blur\)"):
        benchmark.summarize(rows)

    # Adding a fill to the finished run: only the new fill's blocks run, the
    # old rows stay byte for byte, and the maps (same keys) score as directly.
    first = (out / "results.csv").read_bytes()
    runner = benchmark.Runner(model, triplets, _FILL_METHODS, out,
                              metric_fills=("blur", "mean", "impute"), **_OPTIONS)
    assert runner.pending == (benchmark.Pending(0, ("srise@4", "random"),
                                                (("srise@4", "impute"), ("random", "impute"))),)
    calls = []
    added = runner.run(progress=calls.append).rows
    assert calls == [2] and (out / "results.csv").read_bytes().startswith(first)
    new = added[len(rows):]
    assert len(new) == 8 and {r["metric_fill"] for r in new} == {"impute"}
    for row in new[:2]:
        for metric, want in zip(("deletion", "insertion"),
                                _recompute_row(model, triplets, row, parts)):
            if not row[f"{metric}_reason"]:
                assert float(row[metric]) == pytest.approx(float(want.fraction), abs=1e-6)
    # The imputation's noise comes from the job's key: a fresh run of that
    # fill alone writes the same rows.
    alone = benchmark.run_benchmark(model, triplets, _FILL_METHODS, tmp_path / "alone",
                                    metric_fills=["impute"], **_OPTIONS).rows
    assert [{**r, "seconds": ""} for r in alone] == [{**r, "seconds": ""} for r in new]
    with pytest.raises(ValueError, match="unknown metric fill.*'smear'"):
        benchmark.Runner(model, triplets, _FILL_METHODS, out, metric_fills="mean,smear",
                         **_OPTIONS)


def test_results_written_before_the_metric_fill_column_are_kept_as_the_mean_fill(tmp_path):
    # Such rows were all scored with the mean fill, whose definition is
    # unchanged: a rerun reads them as metric_fill "mean", rewrites the file
    # with the column (saying so) and runs nothing again.
    model, out = planted_model(), tmp_path / "run"
    triplets = [protocols.sample_protocol()[0]]
    benchmark.run_benchmark(model, triplets, "random", out, **_OPTIONS)
    now = (out / "results.csv").read_text()
    rows = benchmark.read_rows(out / "results.csv")
    old_columns = [c for c in benchmark.COLUMNS if c != "metric_fill"]
    with open(out / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=old_columns, lineterminator="\n",
                                extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    found = benchmark.complete_rows(out / "results.csv")
    assert found.before_fills and found.kept == rows
    # Table 1 of the old rows reads them as the mean fill's.
    old_rows = benchmark.read_rows(out / "results.csv")
    assert list(benchmark.rows_by_fill(old_rows)) == ["mean"]
    assert benchmark.summarize(old_rows)[0]["metric_fill"] == "mean"
    with pytest.warns(UserWarning, match="written before the metric_fill column; its rows were "
                                         "all scored with the mean fill"):
        runner = benchmark.Runner(model, triplets, "random", out, **_OPTIONS)
    assert runner.pending == () and (out / "results.csv").read_text() == now


def test_write_reports_draws_fills_png_from_its_tables(tmp_path):
    # A run directory of two fills, written as the runner writes it
    # (run.json's keys that the reports read, results.csv of `COLUMNS`).
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps(
        {"seed": 0, "threshold": 0.5, "data": "planted", "num_triplets": 3}))
    rows = [{**row, "metric_fill": fill, "deletion_curve": "1 0.5 0", "insertion_curve": "0 0.5 1"}
            for fill, shift in (("mean", 0.0), ("blur", 0.3))
            for method in ("m", "n")
            for row in _rows({t: [(0.2 + shift * (method == "n"), 0.4), (0.3, 0.1)]
                              for t in range(3)}, method=method)]
    with open(out / "results.csv", "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=benchmark.COLUMNS, restval="",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    reports = benchmark.write_reports(out, model_label="planted", labels=["n", "m"],
                                      num_resamples=100)
    assert out / "fills.png" in reports.paths
    assert list(reports.tables) == ["mean", "blur"]
    # The PNG is the figure of the reports' tables: one panel per fill.
    figure = viz.plot_fill_summary(reports.tables)
    assert [axes.get_label() for axes in figure.get_axes()] == ["mean", "blur"]
    with Image.open(out / "fills.png") as image:
        assert image.format == "PNG"
        assert image.size == (round(figure.get_figwidth() * figure.dpi),
                              round(figure.get_figheight() * figure.dpi))
