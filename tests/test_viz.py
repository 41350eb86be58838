"""Tests for srise_jax.viz: the figures are valid PNGs, the four maps share one scale."""

import jax.numpy as jnp
import numpy as np
import pytest
from matplotlib.image import AxesImage
from PIL import Image

from srise_jax import metrics, srise, viz
from srise_jax.images import synthetic_faces


def _blob(cy, cx, height):
    yy, xx = np.mgrid[0:112, 0:112]
    return jnp.asarray(height * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 450.0),
                       jnp.float32)


def _pair(map_a, map_b, similarity):
    scores = jnp.zeros(4, jnp.float32)
    return srise.PairSaliency(map_a, map_b, scores, scores, jnp.float32(similarity))


@pytest.fixture
def triplet():
    """Maps whose non-match pair peaks at 0.4, the match pair at 1.0, over an offset."""
    return srise.TripletSaliency(
        _pair(_blob(45, 40, 1.0) + 0.2, _blob(45, 70, 0.9) + 0.2, 0.83),
        _pair(_blob(80, 56, 0.4) + 0.2, _blob(45, 56, 0.3) + 0.2, 0.21))


@pytest.fixture
def faces():
    return synthetic_faces(0)


def _overlays(figure):
    return {image.get_gid(): image for image in figure.findobj(AxesImage)
            if image.get_gid() is not None}


def test_triplet_png_has_the_figure_size_and_nothing_else_is_left(tmp_path, faces, triplet):
    path = tmp_path / "triplet.png"
    figure = viz.plot_triplet(*faces, triplet, path=path, title="t")
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = figure.get_size_inches() * figure.dpi
        assert image.size == (round(width), round(height))
    assert [p.name for p in tmp_path.iterdir()] == ["triplet.png"]


def test_four_maps_share_one_colour_scale_from_normalize_jointly(faces, triplet):
    figure = viz.plot_triplet(*faces, triplet)
    overlays = _overlays(figure)
    assert tuple(overlays) == viz.MAP_NAMES
    assert {image.get_clim() for image in overlays.values()} == {(0.0, 1.0)}
    expected = dict(zip(viz.MAP_NAMES, (
        m for pair in srise.normalize_jointly(triplet)
        for m in (pair.saliency_a, pair.saliency_b))))
    for name, image in overlays.items():
        np.testing.assert_allclose(image.get_array(), expected[name], atol=1e-6)
    # One scale for all four: the shallower non-match maps stay shallow,
    # where per-map scaling would stretch each to [0, 1].
    assert overlays["probe_vs_mate"].get_array().max() == pytest.approx(1.0)
    assert overlays["probe_vs_nonmate"].get_array().max() < 0.5
    assert overlays["probe_vs_mate"].get_array().min() == pytest.approx(0.0, abs=1e-3)


def test_colour_bar_uses_the_overlays_scale(faces, triplet):
    figure = viz.plot_triplet(*faces, triplet)
    bars = [axes for axes in figure.get_axes() if axes.get_label() == "colorbar"]
    assert len(bars) == 1
    assert bars[0].get_xlim() == (0.0, 1.0)


def test_scores_are_written_under_each_map(faces, triplet):
    scores = {name: {"deletion": 0.125, "insertion": float("nan")} for name in viz.MAP_NAMES}
    figure = viz.plot_triplet(*faces, triplet, scores=scores)
    labels = [axes.get_xlabel() for axes in figure.get_axes() if axes.get_xlabel()]
    assert labels.count("deletion 0.125  insertion n/a") == 4


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
    never = metrics.MetricResult(jnp.float32(1.0), jnp.asarray([0, 512, 1024]),
                                 jnp.asarray([0.99, 0.98, 0.97], jnp.float32))
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
    # "never" curve ends at 1.0 without crossing: its marker line is empty.
    marked = [line.get_xdata() for line in markers if len(line.get_xdata())]
    assert len(marked) == 1
    np.testing.assert_allclose(marked[0], [result.fraction], rtol=1e-6)
    assert any(line.get_linestyle() == "--" and line.get_ydata()[0] == 0.96
               for line in axes.get_lines())


def test_atomic_file_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with viz.atomic_file(path) as file:
            file.write(b"partial")
            raise RuntimeError("crash mid-write")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_atomic_file_has_ordinary_permissions(tmp_path):
    path = tmp_path / "out.bin"
    with viz.atomic_file(path) as file:
        file.write(b"new")
    assert path.read_bytes() == b"new"
    ordinary = tmp_path / "ordinary.bin"
    ordinary.write_bytes(b"")
    assert path.stat().st_mode == ordinary.stat().st_mode


def test_relative_view_removes_each_pairs_mean_score(faces):
    """Coverage maps sit near their pair's mean score: the offset must not hide the structure."""
    def pair(offset, peak, similarity):
        blob = _blob(50, 56, peak)
        scores = jnp.full(4, offset, jnp.float32)
        return srise.PairSaliency(blob + offset, blob + offset, scores, scores,
                                  jnp.float32(similarity))

    triplet = srise.TripletSaliency(pair(0.7, 0.05, 0.8), pair(0.1, 0.02, 0.2))
    absolute = _overlays(viz.plot_triplet(*faces, triplet, relative=False))
    relative = _overlays(viz.plot_triplet(*faces, triplet))
    spread = lambda image: float(np.ptp(image.get_array()))
    # As they are, the 0.6 offset between pairs takes the whole scale.
    assert spread(absolute["probe_vs_mate"]) < 0.1
    # Relative to each pair's mean, the match map's blob fills the scale and
    # the weaker non-match blob stays shallower on the same scale.
    assert spread(relative["probe_vs_mate"]) == pytest.approx(1.0, abs=1e-3)
    assert 0.2 < spread(relative["probe_vs_nonmate"]) < 0.6
