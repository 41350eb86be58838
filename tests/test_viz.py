"""Tests for srise_jax.viz: valid PNGs, one colour scale, labels by the model's decision."""

import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.image import AxesImage
from matplotlib.text import Text
from PIL import Image

from srise_jax import benchmark, metrics, srise, viz
from srise_jax.images import synthetic_faces

OCCLUSION_ROLES = ("probe", "mate", "probe with a surgical mask")


def _blob(cy, cx, height):
    yy, xx = np.mgrid[0:112, 0:112]
    return jnp.asarray(height * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 450.0),
                       jnp.float32)


def _pair(map_a, map_b, similarity):
    """A planted coverage-normalized pair: each map's pixel values serve as its
    masked scores, so the map lies within their range and their mean is its mean."""
    return srise.PairSaliency(map_a, map_b, map_a.ravel(), map_b.ravel(),
                              jnp.float32(similarity))


def _triplet(level_mate, peak_mate, level_nonmate, peak_nonmate, *, mate=0.96, nonmate=0.83):
    return srise.TripletSaliency(
        _pair(_blob(45, 40, peak_mate) + level_mate, _blob(45, 70, peak_mate) + level_mate,
              mate),
        _pair(_blob(80, 56, peak_nonmate) + level_nonmate,
              _blob(45, 56, peak_nonmate) + level_nonmate, nonmate))


@pytest.fixture
def triplet():
    """Coverage maps: the match pair's at 0.87 with 0.02-high blobs, the
    non-match pair's lower (0.82) with 0.008-high blobs."""
    return _triplet(0.87, 0.02, 0.82, 0.008)


@pytest.fixture
def plain_sums():
    """Plain sums of 100 masks (normalize="none"): values in the tens, not cosines."""
    pair = lambda peak, similarity: srise.PairSaliency(
        _blob(50, 56, peak) + 20.0, _blob(50, 56, peak) + 20.0, jnp.full(4, 0.85),
        jnp.full(4, 0.85), jnp.float32(similarity))
    return srise.TripletSaliency(pair(38.0, 0.96), pair(30.0, 0.83))


@pytest.fixture
def faces():
    return synthetic_faces(0)


def _overlays(figure):
    return {image.get_gid(): image for image in figure.findobj(AxesImage)
            if image.get_gid() is not None}


def _texts(figure):
    return [text.get_text() for text in figure.findobj(Text) if text.get_text()]


def _axes(figure, label):
    (axes,) = [axes for axes in figure.findobj(lambda a: hasattr(a, "get_label")
                                               and a.get_label() == label)
               if hasattr(axes, "get_xlim")]
    return axes


def _level_marks(figure):
    levels = _axes(figure, "levels")
    return {line.get_gid(): np.asarray(line.get_xdata()) for line in levels.get_lines()
            if line.get_gid() is not None}


def test_triplet_png_has_the_figure_size_and_nothing_else_is_left(tmp_path, faces, triplet):
    path = tmp_path / "triplet.png"
    figure = viz.plot_triplet(*faces, triplet, path=path, title="t")
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = figure.get_size_inches() * figure.dpi
        assert image.size == (round(width), round(height))
    assert [p.name for p in tmp_path.iterdir()] == ["triplet.png"]


def test_self_occlusion_pair_is_titled_a_match_when_its_cosine_passes(faces):
    # The demo's occlusion triplet: the model accepts the probe with a
    # surgical mask (0.934 >= 0.907); the title must say so, whatever the
    # face's position, and a rejected "mate" must not be called a match.
    triplet = _triplet(0.87, 0.02, 0.86, 0.01, mate=0.52, nonmate=0.934)
    texts = _texts(viz.plot_triplet(*faces, triplet, threshold=0.907, roles=OCCLUSION_ROLES))
    assert "probe vs probe with a surgical mask\ncosine 0.934, match at 0.907" in texts
    assert "probe vs mate\ncosine 0.520, no match at 0.907" in texts
    assert not any("non-match" in text or "match pair" in text for text in texts)


def test_without_a_threshold_the_titles_give_no_verdict(faces, triplet):
    texts = _texts(viz.plot_triplet(*faces, triplet))
    assert "probe vs mate\ncosine 0.960" in texts
    assert "probe vs nonmate\ncosine 0.830" in texts
    assert not any("match" in text for text in texts)


def test_roles_name_the_faces_and_the_level_rows(faces, triplet):
    figure = viz.plot_triplet(*faces, triplet, threshold=0.907, roles=OCCLUSION_ROLES)
    texts = _texts(figure)
    assert texts.count("probe with a surgical mask") == 1  # the fourth face's title
    assert not any("nonmate" in text for text in texts)
    rows = [label.get_text() for label in _axes(figure, "levels").get_yticklabels()]
    assert rows == ["probe vs mate", "mate vs probe", "probe vs probe with a surgical mask",
                    "probe with a surgical mask vs probe"]


def test_default_view_keeps_the_structure_and_the_non_match_maps_shallower(faces, triplet):
    figure = viz.plot_triplet(*faces, triplet, threshold=0.907)
    overlays = _overlays(figure)
    assert tuple(overlays) == viz.MAP_NAMES
    # Structure: each map minus its mean masked score, all four on one scale
    # centred on zero whose ends are the largest deviation; the match map's
    # 0.02 blob fills it, the non-match maps' 0.008 blobs stay shallower.
    maps = dict(zip(viz.MAP_NAMES, (m for pair in triplet for m in pair[:2])))
    deviations = {name: np.asarray(m) - float(np.mean(m)) for name, m in maps.items()}
    limit = max(np.abs(d).max() for d in deviations.values())
    assert {image.get_clim() for image in overlays.values()} == {(-limit, limit)}
    for name, image in overlays.items():
        np.testing.assert_allclose(image.get_array(), deviations[name], atol=1e-6)
    spread = {name: float(np.ptp(image.get_array())) for name, image in overlays.items()}
    assert spread["probe_vs_mate"] == pytest.approx(0.02, rel=0.01)
    assert spread["probe_vs_nonmate"] < 0.5 * spread["probe_vs_mate"]
    # Level, the paper's cue: the non-match maps are drawn at their own lower
    # cosines (0.82 + a little), the match maps at 0.87 + a little.
    marks = _level_marks(figure)
    for name, m in maps.items():
        np.testing.assert_allclose(marks[f"{name} range"], [np.min(m), np.max(m)], rtol=1e-6)
        np.testing.assert_allclose(marks[f"{name} mean"], [np.mean(m)], rtol=1e-6)
    match_low = min(marks[f"{name} range"].min() for name in viz.MAP_NAMES[:2])
    non_match_high = max(marks[f"{name} range"].max() for name in viz.MAP_NAMES[2:])
    assert non_match_high < match_low
    titles = _texts(figure)
    assert f"mean masked cosine {np.mean(maps['probe_vs_nonmate']):.3f}" in titles


def test_equal_structure_at_a_lower_level_is_still_drawn_lower(faces):
    # Same blobs, one pair 0.05 lower: relative overlays are alike, and only
    # the level panel can show which pair the model finds less similar.
    triplet = _triplet(0.87, 0.01, 0.82, 0.01)
    marks = _level_marks(viz.plot_triplet(*faces, triplet))
    assert marks["probe_vs_mate mean"][0] - marks["probe_vs_nonmate mean"][0] == \
        pytest.approx(0.05, abs=1e-3)


def test_plain_sums_are_shown_jointly_scaled_and_labelled_as_plain_sums(faces, plain_sums):
    figure = viz.plot_triplet(*faces, plain_sums, normalize="none")
    overlays = _overlays(figure)
    assert {image.get_clim() for image in overlays.values()} == {(0.0, 1.0)}
    expected = dict(zip(viz.MAP_NAMES, (
        m for pair in srise.normalize_jointly(plain_sums) for m in pair[:2])))
    for name, image in overlays.items():
        np.testing.assert_allclose(image.get_array(), expected[name], atol=1e-6)
    # One scale for all four: the lower-scoring pair's sums stay shallower.
    assert overlays["probe_vs_mate"].get_array().max() == pytest.approx(1.0)
    assert overlays["probe_vs_nonmate"].get_array().max() < 0.9
    bar = _axes(figure, "colorbar")
    assert bar.get_xlim() == (0.0, 1.0)
    labels = [text for text in _texts(figure) if "scale" in text]
    assert len(labels) == 1
    assert "plain sum" in labels[0] and "jointly" in labels[0]
    assert "mean" not in labels[0] and "minus" not in labels[0]
    # Plain sums are not cosines: the level panel draws no map ranges.
    assert not any(gid.endswith("range") for gid in _level_marks(figure))


def test_colour_bar_spans_the_overlays_scale(faces, triplet):
    figure = viz.plot_triplet(*faces, triplet)
    (clim,) = {image.get_clim() for image in _overlays(figure).values()}
    np.testing.assert_allclose(_axes(figure, "colorbar").get_xlim(), clim)


def test_plain_sums_called_coverage_maps_are_refused(faces, plain_sums):
    with pytest.raises(ValueError, match="not a coverage-normalized map.*normalize='none'"):
        viz.plot_triplet(*faces, plain_sums)


def test_scores_are_written_under_each_map(faces, triplet):
    scores = {name: {"deletion": 0.125, "insertion": float("nan")} for name in viz.MAP_NAMES}
    figure = viz.plot_triplet(*faces, triplet, scores=scores)
    labels = [axes.get_xlabel() for axes in figure.get_axes() if axes.get_xlabel()]
    assert labels.count("deletion 0.125\ninsertion n/a") == 4


def test_undefined_metric_prints_its_reason(planted_region):
    embed_fn, params, (y0, y1, x0, x1), probe, mate = planted_region
    saliency = jnp.zeros((32, 32)).at[y0:y1, x0:x1].set(1.0)
    # The planted pair starts at cosine 0.997: at threshold 0.999 it is
    # rejected, so deletion has no match to break.
    result = metrics.deletion(embed_fn, params, probe, mate, saliency, 0.999, step=8,
                              batch_size=16)
    assert viz.fraction_text(result) == f"n/a ({metrics.REASON_TEXT['rejected']})"
    assert viz.fraction_text(float("nan")) == "n/a"
    assert viz.fraction_text(0.1234) == "0.123"


def test_scores_must_cover_all_four_maps(faces, triplet):
    with pytest.raises(ValueError, match="scores must have the keys"):
        viz.plot_triplet(*faces, triplet, scores={"probe_vs_mate": {"deletion": 0.1}})


def test_curves_skip_unevaluated_points_and_mark_the_flip(tmp_path, planted_region):
    embed_fn, params, (y0, y1, x0, x1), probe, mate = planted_region
    saliency = jnp.zeros((32, 32)).at[y0:y1, x0:x1].set(1.0)
    # The planted model's curve falls from 0.997 to 0.94 over the region's 64
    # pixels. step 8 leaves -1 slots and NaN after the stop: both must be skipped.
    result = metrics.deletion(embed_fn, params, probe, mate, saliency, 0.96, step=8,
                              batch_size=16)
    assert np.isfinite(result.fraction) and result.fraction < 1.0
    # At threshold 0.5 not even the fully deleted image is rejected.
    never = metrics.deletion(embed_fn, params, probe, mate, saliency, 0.5, step=8,
                             batch_size=16)
    assert metrics.undefined_reason(never) == "cannot_flip"
    path = tmp_path / "curves.png"
    figure = viz.plot_curves({"deletion": result, "never": never}, threshold=0.96, path=path)
    with Image.open(path) as image:
        assert image.format == "PNG"
    (axes,) = figure.get_axes()
    curves = {line.get_label().split(":")[0]: line for line in axes.get_lines()
              if line.get_label().startswith(("deletion", "never"))}
    x = curves["deletion"].get_xdata()
    assert np.all((x >= 0) & (x <= 1)) and np.all(np.isfinite(curves["deletion"].get_ydata()))
    assert len(x) == int(np.sum((np.asarray(result.counts) >= 0)
                                & np.isfinite(np.asarray(result.curve))))
    markers = [line for line in axes.get_lines() if line.get_marker() == "o"]
    # The deletion curve crossed the threshold: marked at its fraction. The
    # "never" curve has no fraction: no marker, and the legend says why.
    marked = [line.get_xdata() for line in markers if len(line.get_xdata())]
    assert len(marked) == 1
    assert curves["never"].get_label() == \
        f"never: n/a ({metrics.REASON_TEXT['cannot_flip']})"
    np.testing.assert_allclose(marked[0], [result.fraction], rtol=1e-6)
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == 0.96
               for line in axes.get_lines())


def _fill_rows(fill, method, centre, *, iterations="", undefined=False, pairs=6, seed=0):
    """Rows of `pairs` distinct pairs, both sides, (D, I) near `centre`; with
    `undefined`, Deletion is NaN (cannot_flip) in every row, so Table 1's
    average is NaN."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(pairs):
        for image, reference in ((f"a{p}", f"b{p}"), (f"b{p}", f"a{p}")):
            d, i = centre + 0.1 * rng.standard_normal(2)
            rows.append({"image": image, "reference": reference, "method": method,
                         "metric_fill": fill, "iterations": iterations, "match": 1,
                         "deletion": "" if undefined else f"{d:.6f}",
                         "deletion_reason": "cannot_flip" if undefined else "",
                         "insertion": f"{i:.6f}", "deletion_auc": f"{d:.6f}",
                         "insertion_auc": f"{i:.6f}"})
    return rows


@pytest.fixture
def fill_rows():
    """Two fills, planted so that "b@7" is best under "mean" and "a@100"
    under "blur"; "c" is undefined under "mean" only."""
    return {"mean": (_fill_rows("mean", "a@100", 0.35, seed=1)
                     + _fill_rows("mean", "b", 0.15, iterations="7", seed=2)
                     + _fill_rows("mean", "c", 0.3, undefined=True, seed=3)),
            "blur": (_fill_rows("blur", "a@100", 0.1, seed=4)
                     + _fill_rows("blur", "b", 0.45, iterations="7", seed=5)
                     + _fill_rows("blur", "c", 0.3, seed=6))}


def _marks(axes):
    return {line.get_gid(): line for line in axes.get_lines() if line.get_gid() is not None}


@pytest.mark.parametrize("metric", ["average", "insertion_auc"])
def test_fill_summary_draws_each_tables_means_intervals_and_best(tmp_path, fill_rows, metric):
    tables = {fill: benchmark.summarize(rows, num_resamples=300)
              for fill, rows in fill_rows.items()}
    path = tmp_path / "fills.png"
    figure = viz.plot_fill_summary(tables, metric=metric, path=path)
    with Image.open(path) as image:
        assert image.size == (round(figure.get_figwidth() * figure.dpi),
                              round(figure.get_figheight() * figure.dpi))
    panels = figure.get_axes()
    assert [axes.get_label() for axes in panels] == list(tables)
    shown = {"a@100": "a@100", "b": "b@7", "c": "c"}  # "b" with its iterations, as in the table
    labels = list(shown.values())
    assert [t.get_text() for t in panels[0].get_yticklabels()] == labels
    for axes, (fill, table) in zip(panels, tables.items()):
        marks = _marks(axes)
        for label, line in zip(labels, table):
            if np.isnan(line[metric]):
                continue
            np.testing.assert_allclose(marks[f"{label} mean"].get_xdata(), [line[metric]])
            np.testing.assert_allclose(marks[f"{label} interval"].get_xdata(),
                                       [line[f"{metric}_low"], line[f"{metric}_high"]])
            # One y per method, the same in every panel (the table's order).
            assert marks[f"{label} mean"].get_ydata()[0] == labels.index(label)
        # The best method, from the raw rows in NumPy: the lowest mean
        # (D + I) / 2 over rows where both are defined; the highest mean
        # insertion AUC.
        means = {}
        for row in fill_rows[fill]:
            d, i = float(row["deletion"] or "nan"), float(row["insertion"])
            value = (d + i) / 2 if metric == "average" else i
            means.setdefault(row["method"], []).append(value)
        means = {method: np.mean(values) for method, values in means.items()}
        pick = min if metric == "average" else max
        want = pick((m for m in means if np.isfinite(means[m])), key=means.get)
        if metric == "average":
            assert want == {"mean": "b", "blur": "a@100"}[fill]  # as planted
        assert [gid for gid in marks if gid.endswith(" best")] == [f"{shown[want]} best"]


def test_fill_summary_draws_an_undefined_method_as_na_at_the_left_edge(fill_rows):
    tables = {fill: benchmark.summarize(rows, num_resamples=100)
              for fill, rows in fill_rows.items()}
    assert np.isnan(tables["mean"][2]["average"])  # the planted undefined method
    figure = viz.plot_fill_summary(tables)
    mean_panel, blur_panel = figure.get_axes()
    marks = _marks(mean_panel)
    assert "c mean" not in marks and "c interval" not in marks
    na = marks["c n/a"]
    assert na.get_markerfacecolor() == "none"
    assert na.get_xdata()[0] == mean_panel.get_xlim()[0]
    assert na.get_ydata()[0] == 2
    assert [t.get_text() for t in mean_panel.texts] == ["n/a"]
    # Defined under the other fill: drawn there as any other method.
    assert "c mean" in _marks(blur_panel) and not blur_panel.texts
    # The x label names the metric and its direction.
    assert "average of Deletion and Insertion fractions, lower is better" in _texts(figure)


def test_fill_summary_has_one_panel_for_one_fill_and_refuses_bad_input(fill_rows):
    table = benchmark.summarize(fill_rows["blur"], num_resamples=100)
    assert len(viz.plot_fill_summary({"blur": table}).get_axes()) == 1
    with pytest.raises(ValueError, match="metric must be one of .*'auc'"):
        viz.plot_fill_summary({"blur": table}, metric="auc")
    with pytest.raises(ValueError, match="tables must hold at least one metric fill"):
        viz.plot_fill_summary({})


def test_fill_curves_draw_each_fills_mean_curves_in_one_style_per_method(tmp_path):
    rng = np.random.default_rng(0)
    methods = [f"m{k}" for k in range(13)]  # more methods than colours
    curves = {fill: {m: {mode: rng.uniform(size=(4, 9)) for mode in ("deletion", "insertion")}
                     for m in methods if not (fill == "blur" and m == "m3")}
              for fill in ("mean", "blur")}
    curves["mean"]["m0"]["deletion"][1, 4] = np.nan  # left out of the mean
    path = tmp_path / "curves.png"
    figure = viz.plot_fill_curves(curves, path=path, title="t")
    with Image.open(path) as image:
        assert image.format == "PNG"
    panels = {axes.get_label(): axes for axes in figure.get_axes()}
    assert list(panels) == ["mean deletion", "mean insertion", "blur deletion",
                            "blur insertion"]
    styles = {}
    for label, axes in panels.items():
        fill, mode = label.split()
        lines = {line.get_gid(): line for line in axes.get_lines()}
        assert list(lines) == [m for m in methods if m in curves[fill]]
        for method, line in lines.items():
            rows = curves[fill][method][mode]
            want = rows[np.all(np.isfinite(rows), axis=1)].mean(0)  # NumPy, finite rows
            np.testing.assert_allclose(line.get_ydata(), want, rtol=1e-12)
            np.testing.assert_allclose(line.get_xdata(), np.linspace(0, 1, 9))
            styles.setdefault(method, set()).add((line.get_color(), line.get_linestyle()))
    # One style per method in every panel, and no two methods alike.
    assert all(len(seen) == 1 for seen in styles.values())
    assert len({next(iter(seen)) for seen in styles.values()}) == 13
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == methods
    with pytest.raises(ValueError, match="at least one metric fill"):
        viz.plot_fill_curves({})
