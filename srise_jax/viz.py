"""Figures: a triplet's S-RISE maps, Deletion/Insertion curves, convergence.

The functions build `matplotlib.figure.Figure` objects directly, without
pyplot: no display is needed, the global backend is left alone, and no figure
is kept alive by pyplot's registry. They draw; they never print. Given a
`path`, they write a PNG atomically (a temporary file beside it, then a
rename), so a crash never leaves a half-written figure.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np
from matplotlib import cm, colors
from matplotlib.figure import Figure

from srise_jax import srise
from srise_jax.metrics import MetricResult

# The four maps of a triplet, each named "<image>_vs_<reference>": the image
# the map explains and the intact image it was compared with.
MAP_NAMES = ("probe_vs_mate", "mate_vs_probe", "probe_vs_nonmate", "nonmate_vs_probe")
_CMAP = "jet"
_OVERLAY_ALPHA = 0.5
_PANEL_INCHES = 2.3
_DPI = 100


def triplet_maps(probe, mate, nonmate, triplet: srise.TripletSaliency) -> dict:
    """The four maps of a triplet with the images they belong to.

    Args:
      probe, mate, nonmate: Float[Array, "h w 3"], the explained images.
      triplet: their `TripletSaliency`.

    Returns:
      {name: (image, reference, saliency)} in `MAP_NAMES` order: the map
      `saliency` of `image`, computed against the intact `reference`.
    """
    return {
        "probe_vs_mate": (probe, mate, triplet.mate.saliency_a),
        "mate_vs_probe": (mate, probe, triplet.mate.saliency_b),
        "probe_vs_nonmate": (probe, nonmate, triplet.nonmate.saliency_a),
        "nonmate_vs_probe": (nonmate, probe, triplet.nonmate.saliency_b),
    }


def plot_triplet(
    probe,
    mate,
    nonmate,
    triplet: srise.TripletSaliency,
    *,
    path: str | Path | None = None,
    title: str | None = None,
    scores: Mapping[str, Mapping[str, float]] | None = None,
    relative: bool = True,
) -> Figure:
    """The S-RISE maps of a triplet over its faces, as in the paper's Fig. 3.

    Left, the match pair (probe, mate); right, the non-match pair (probe,
    nonmate); the top row shows the faces, the bottom row each face under its
    map. All four maps share ONE colour scale (`srise.normalize_jointly`), so
    a pair the model finds less similar shows "shallower" maps; per-map
    scaling would hide exactly that. Each pair's title gives its cosine
    similarity.

    A coverage-normalized map is the mean masked score where a pixel is kept:
    it sits near its pair's mean score everywhere, and on one scale with the
    other pair the offset between pairs dwarfs the structure inside each map.
    With `relative` (default) each map is shown minus its masks' mean score
    (how much keeping a pixel raises the similarity), still on one shared
    scale; `relative=False` shows the maps as they are.

    Args:
      probe, mate, nonmate: Float[Array, "h w 3"] RGB in [0, 1].
      triplet: `srise_triplet(...)` of these images.
      path: if given, the figure is also written there as a PNG.
      title: the figure's title.
      scores: optional numbers printed under the maps: for every name of
        `MAP_NAMES` a mapping such as {"deletion": 0.12, "insertion": nan};
        NaN prints as "n/a".
      relative: show each map minus its masks' mean score (for the default
        coverage-normalized maps; see above).

    Returns:
      The figure (the overlays carry the map name as their gid).
    """
    if scores is not None and set(scores) != set(MAP_NAMES):
        raise ValueError(f"scores must have the keys {MAP_NAMES}, got {tuple(scores)}")
    shared = srise.normalize_jointly(_centred(triplet) if relative else triplet)
    maps = triplet_maps(probe, mate, nonmate, shared)
    pairs_height, bar_height = 2 * _PANEL_INCHES + 1.0, 0.8
    figure = Figure(figsize=(4 * _PANEL_INCHES, pairs_height + bar_height), dpi=_DPI,
                    layout="constrained")
    pairs_area, bar_area = figure.subfigures(2, 1, height_ratios=(pairs_height, bar_height))
    pair_figures = pairs_area.subfigures(1, 2)
    norm = colors.Normalize(0.0, 1.0)
    similarities = (float(triplet.mate.similarity), float(triplet.nonmate.similarity))
    headers = ("match pair", "non-match pair")
    names = iter(maps)
    for pair_figure, header, similarity in zip(pair_figures, headers, similarities):
        pair_figure.suptitle(f"{header}: cosine {similarity:.3f}")
        for column in pair_figure.subplots(2, 2).T:
            name = next(names)
            image, _, saliency = maps[name]
            face = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
            column[0].imshow(face)
            column[0].set_title(name.split("_vs_")[0])
            column[1].imshow(face)
            overlay = column[1].imshow(np.asarray(saliency), cmap=_CMAP, norm=norm,
                                       alpha=_OVERLAY_ALPHA)
            overlay.set_gid(name)
            if scores is not None:
                column[1].set_xlabel(_score_text(scores[name]))
            for axes in column:
                axes.set_xticks([])
                axes.set_yticks([])
    bar_axes = bar_area.add_axes((0.25, 0.6, 0.5, 0.25), label="colorbar")
    bar_area.colorbar(cm.ScalarMappable(norm=norm, cmap=_CMAP), cax=bar_axes,
                      orientation="horizontal",
                      label=("saliency minus its pair's mean masked score" if relative
                             else "saliency") + ", one scale for all four maps")
    if title is not None:
        figure.suptitle(title)
    if path is not None:
        save_png(figure, path)
    return figure


def _centred(triplet: srise.TripletSaliency) -> srise.TripletSaliency:
    """Each map minus the mean of the scores that weighed it."""
    def pair(p: srise.PairSaliency) -> srise.PairSaliency:
        return p._replace(saliency_a=p.saliency_a - p.scores_a.mean(),
                          saliency_b=p.saliency_b - p.scores_b.mean())
    return srise.TripletSaliency(pair(triplet.mate), pair(triplet.nonmate))


def _score_text(values: Mapping[str, float]) -> str:
    return "  ".join(f"{key} {'n/a' if np.isnan(value) else f'{value:.3f}'}"
                     for key, value in values.items())


def plot_curves(
    results: Mapping[str, MetricResult],
    *,
    threshold: float,
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Deletion/Insertion curves: similarity against the fraction of pixels changed.

    Each curve is drawn where it was evaluated (a `MetricResult` leaves NaN
    after the search stopped, and -1 in unused count slots); the point where
    the decision flipped is marked, and the legend gives the fraction ("n/a"
    when it is NaN).

    Args:
      results: {label: MetricResult}, e.g. {"deletion probe_vs_mate": ...}.
      threshold: the verification threshold, drawn as a horizontal line.
      path: if given, the figure is also written there as a PNG.
      title: the figure's title.

    Returns:
      The figure.
    """
    figure = Figure(figsize=(9.0, 4.4), dpi=_DPI, layout="constrained")
    axes = figure.subplots()
    for label, result in results.items():
        counts = np.asarray(result.counts)
        curve = np.asarray(result.curve)
        num_pixels = counts.max()
        seen = (counts >= 0) & np.isfinite(curve)
        fraction = float(result.fraction)
        (line,) = axes.plot(counts[seen] / num_pixels, curve[seen], marker=".",
                            markersize=3,
                            label=f"{label}: {'n/a' if np.isnan(fraction) else f'{fraction:.3f}'}")
        if np.isfinite(fraction):
            at = seen & (counts == round(fraction * num_pixels))
            # The fraction is 1.0 also when the decision never flips: mark
            # the point only where the curve has crossed the threshold.
            flip = at & ((curve >= threshold) != (curve[0] >= threshold))
            axes.plot(counts[flip] / num_pixels, curve[flip], linestyle="none", marker="o",
                      markersize=9, markerfacecolor="none", color=line.get_color())
    axes.axhline(threshold, color="black", linestyle="--", linewidth=1,
                 label=f"threshold {threshold:g}")
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("fraction of pixels changed, most salient first")
    axes.set_ylabel("cosine similarity to the intact reference")
    if title is not None:
        axes.set_title(title)
    figure.legend(loc="outside right upper", fontsize="small")
    if path is not None:
        save_png(figure, path)
    return figure


def plot_mean_curves(
    curves: Mapping[str, Mapping[str, np.ndarray]],
    *,
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Mean deletion and insertion curves of several methods, side by side.

    Args:
      curves: {method: {"deletion": (R, K) array, "insertion": (R, K) array}}:
        each row a curve of `metrics.similarity_curve` at K evenly spaced
        fractions from 0 to 1 (rows with NaN are left out of the mean).
      path: if given, the figure is also written there as a PNG.
      title: the figure's title.

    Returns:
      The figure; each legend entry gives the method's mean AUC.
    """
    figure = Figure(figsize=(11.0, 4.6), dpi=_DPI, layout="constrained")
    panels = dict(zip(("deletion", "insertion"), figure.subplots(1, 2, sharey=True)))
    for method, by_mode in curves.items():
        for mode, axes in panels.items():
            rows = np.asarray(by_mode[mode], np.float64)
            rows = rows[np.all(np.isfinite(rows), axis=1)] if rows.size else rows
            if not len(rows):
                continue
            fractions = np.linspace(0.0, 1.0, rows.shape[1])
            mean = rows.mean(0)
            axes.plot(fractions, mean,
                      label=f"{method} (AUC {np.trapezoid(mean, fractions):.3f}, n={len(rows)})")
    for mode, axes in panels.items():
        better = "lower" if mode == "deletion" else "higher"
        axes.set_title(f"{mode} ({better} AUC is better)")
        axes.set_xlabel("fraction of pixels changed, most salient first")
        axes.set_xlim(0.0, 1.0)
        axes.legend(fontsize="x-small")
    panels["deletion"].set_ylabel("mean cosine similarity to the intact reference")
    if title is not None:
        figure.suptitle(title)
    if path is not None:
        save_png(figure, path)
    return figure


def plot_convergence(
    rows: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]],
    *,
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Maps after more and more masks, one example per row (the paper's Fig. 6).

    Each row shows the face, then its map at each count over it; every map is
    scaled to its own range, since the question is where the map settles,
    not how strong it is.

    Args:
      rows: {row label: (face Float[ndarray, "h w 3"], {column label: map})}.
      path: if given, the figure is also written there as a PNG.
      title: the figure's title.

    Returns:
      The figure.
    """
    columns = max(len(maps) for _, maps in rows.values()) + 1
    figure = Figure(figsize=(columns * _PANEL_INCHES, len(rows) * _PANEL_INCHES + 0.6),
                    dpi=_DPI, layout="constrained")
    grid = np.asarray(figure.subplots(len(rows), columns, squeeze=False))
    for axes_row, (label, (face, maps)) in zip(grid, rows.items()):
        face = np.clip(np.asarray(face, np.float32), 0.0, 1.0)
        axes_row[0].imshow(face)
        axes_row[0].set_title(label, fontsize="small")
        for axes, (name, saliency) in zip(axes_row[1:], maps.items()):
            saliency = np.asarray(saliency, np.float32)
            low, high = saliency.min(), saliency.max()
            axes.imshow(face)
            axes.imshow((saliency - low) / (high - low if high > low else 1.0), cmap=_CMAP,
                        vmin=0.0, vmax=1.0, alpha=_OVERLAY_ALPHA)
            axes.set_title(name, fontsize="small")
        for axes in axes_row:
            axes.set_xticks([])
            axes.set_yticks([])
    if title is not None:
        figure.suptitle(title)
    if path is not None:
        save_png(figure, path)
    return figure


def save_png(figure: Figure, path: str | Path) -> None:
    """Write `figure` as a PNG at its own size and resolution, atomically.

    Args:
      figure: a Matplotlib figure, e.g. from `plot_triplet`.
      path: the file to write (replaced whole, or left untouched on error).
    """
    with atomic_file(path) as file:
        figure.savefig(file, format="png", dpi=figure.dpi)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` only once the block has succeeded.

    The data goes to a temporary file in the same directory (so the final
    `os.replace` is an atomic rename); if the block raises, the temporary
    file is removed and `path` is left as it was.

    Args:
      path: the file to write; its directory must exist.

    Yields:
      The temporary file, open for binary writing.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
        # mkstemp makes the file private (0600); give it the permissions an
        # ordinary open() would have.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
