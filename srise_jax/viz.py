"""Figures: S-RISE and other maps, curves, Table 1 per metric fill, convergence, sanity.

The functions build `matplotlib.figure.Figure` objects directly, without
pyplot: no display is needed, the global backend is left alone, and no figure
is kept alive by pyplot's registry. They draw; they never print. Given a
`path`, they write a PNG atomically (`srise_jax.outputs.atomic_file`: a
temporary file beside it, then a rename), so a crash never leaves a
half-written figure.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from matplotlib import cm, colors, ticker
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from srise_jax import metrics, srise
from srise_jax.metrics import MetricResult
# The file writer moved to `srise_jax.outputs`; `viz.atomic_file` stays for callers.
from srise_jax.outputs import atomic_file

if TYPE_CHECKING:  # for annotations only: drawing needs no model code
    from srise_jax.sanity import SanityResult

# The four maps of a triplet, each named "<image>_vs_<reference>": the image
# the map explains and the intact image it was compared with.
MAP_NAMES = ("probe_vs_mate", "mate_vs_probe", "probe_vs_nonmate", "nonmate_vs_probe")
# The faces of a triplet, in order, as `plot_triplet` names them by default.
ROLES = ("probe", "mate", "nonmate")
_CMAP = "jet"
# Signed maps (each minus its mean score) need a scale whose middle is zero.
_DIVERGING_CMAP = "RdBu_r"
_OVERLAY_ALPHA = 0.5
_PANEL_INCHES = 2.3
# Text under a map: characters per line at fontsize "small", and line height.
_NOTE_CHARS = 40
# Characters of a small-font caption per inch of figure width.
_CAPTION_CHARS_PER_INCH = 11
# Characters of a figure title (font size "large") per inch of figure width.
_TITLE_CHARS_PER_INCH = 8
_NOTE_LINE_INCHES = 0.15
_DPI = 100
# The two panels of the mean-curve figures, left to right.
_CURVE_MODES = ("deletion", "insertion")


def triplet_maps(probe: ArrayLike, mate: ArrayLike, nonmate: ArrayLike,
                 triplet: srise.TripletSaliency) -> dict:
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
    probe: ArrayLike,
    mate: ArrayLike,
    nonmate: ArrayLike,
    triplet: srise.TripletSaliency,
    *,
    path: str | Path | None = None,
    title: str | None = None,
    scores: Mapping[str, Mapping[str, MetricResult | float]] | None = None,
    threshold: float | None = None,
    roles: Sequence[str] = ROLES,
    normalize: str = "coverage",
) -> Figure:
    """The S-RISE maps of a triplet over its faces, as in the paper's Fig. 3.

    Left the pair (probe, mate), right the pair (probe, nonmate), each titled
    with its cosine similarity and, given `threshold`, the model's decision
    ("match at 0.907" / "no match at 0.907"): the titles follow the score,
    never the position, since a caller's "nonmate" may be accepted (the
    paper's self-occlusion triplets) and a "mate" rejected. The top row shows
    the faces, named by `roles`; the bottom row each face under its map.

    What the colours show depends on how the maps were made; the maps do not
    record it, so the caller passes `normalize` as given to `SRiseConfig`:

    - "coverage": a map is, at each pixel, the mean masked cosine of the
      masks weighted by how much they keep that pixel: cosine units, always
      within the range of its masked scores. Such a map sits near its own
      mean masked score; the spread inside a map (about 0.007 for dlib on the
      sample photos, N = 100) is small next to the offsets between maps
      (about 0.05), so one colour scale over the values as they are paints
      each map as a flat field. The overlays therefore show each map minus
      the mean of the masked scores that weighed it (how much keeping the
      pixel raises the masked cosine: red raises it, blue lowers it), all
      four on ONE scale centred on zero, so the structures are comparable.
      The paper's cue that the non-match maps are "much shallower" (section
      4.3) is the maps' level, which that view removes; the panel beside the
      colour bar draws it: each map's range and mean in cosine units, on one
      axis with each pair's cosine and the threshold, and each map's title
      gives its mean masked cosine. (A scale centred on the threshold would
      not do: masked scores sit well below an unmasked threshold, 0.82 to
      0.88 against dlib's 0.907 on the sample photos, so all four maps would
      be one colour.)
    - "none": the paper's plain sums sum_i s_i M_i, which are not in cosine
      units (they grow with N and carry the masks' centre prior). They are
      shown as in the paper: all four scaled jointly to [0, 1]
      (`srise.normalize_jointly`), where a pair with lower masked scores is
      shallower in the colours themselves; the panel draws each map's mean
      masked cosine.

    Args:
      probe, mate, nonmate: Float[Array, "h w 3"] RGB in [0, 1].
      triplet: `srise_triplet(...)` of these images.
      path: if given, the figure is also written there as a PNG.
      title: the figure's title.
      scores: optional numbers printed under the maps: for every name of
        `MAP_NAMES` a mapping such as {"deletion": MetricResult, "insertion":
        0.4}; a NaN prints as "n/a", with its reason when a `MetricResult`
        carries one (see `fraction_text`).
      threshold: the verification threshold; the pairs' titles then say
        whether the model accepts each pair.
      roles: the names of the three faces, e.g. ("probe", "mate", "probe
        with a surgical mask").
      normalize: an estimator of `srise.NORMALIZE`, as the maps were
        computed ("none", "centred" and "regression" maps are shown scaled
        to [0, 1] jointly).

    Returns:
      The figure. The overlays carry the map name as their gid; the level
      panel is the axes labelled "levels", its markers carry gids
      "<map name> range" and "<map name> mean".

    Raises:
      ValueError: unknown `normalize`, not three roles, `scores` without
        exactly the four map names, or maps called "coverage" that leave their
        masked scores' range (plain sums: pass normalize="none").
    """
    if normalize not in srise.NORMALIZE:
        raise ValueError(f"normalize must be one of {srise.NORMALIZE}, got {normalize!r}")
    roles = tuple(roles)
    if len(roles) != 3 or not all(isinstance(role, str) for role in roles):
        raise ValueError(f"roles must name the three faces, got {roles!r}")
    if scores is not None and set(scores) != set(MAP_NAMES):
        raise ValueError(f"scores must have the keys {MAP_NAMES}, got {tuple(scores)}")
    levels = _levels(triplet)
    if normalize == "coverage":
        _check_coverage(levels)
        limit = max(max(np.abs(level.values - level.mean).max() for level in levels.values()),
                    1e-12)
        norm, cmap = colors.Normalize(-limit, limit), _DIVERGING_CMAP
        shown = {name: level.values - level.mean for name, level in levels.items()}
        label = ("each map minus the mean of its masked scores: how much keeping the "
                 "pixel raises the masked cosine (one scale for all four maps; their "
                 "levels on the right)")
    else:
        norm, cmap = colors.Normalize(0.0, 1.0), _CMAP
        joint = srise.normalize_jointly(triplet)
        shown = {name: np.asarray(saliency, np.float32)
                 for name, (_, _, saliency) in triplet_maps(probe, mate, nonmate, joint).items()}
        label = ("plain sum of score-weighted masks (the paper's estimator)"
                 if normalize == "none" else
                 f"control-variate map (normalize={normalize!r})") + \
            ", scaled to [0, 1] jointly over the four maps"
    faces = dict(zip(ROLES, (probe, mate, nonmate)))
    by_face = dict(zip(ROLES, roles))
    # An undefined score's reason is a phrase: wrapped to the panel's width.
    notes = {name: "\n".join(textwrap.fill(f"{metric} {fraction_text(value)}", _NOTE_CHARS)
                             for metric, value in by_metric.items())
             for name, by_metric in (scores or {}).items()}
    note_lines = max((note.count("\n") + 1 for note in notes.values()), default=0)
    pairs_height = 2 * _PANEL_INCHES + 0.9 + _NOTE_LINE_INCHES * note_lines
    bar_height = 2.0
    figure = Figure(figsize=(4 * _PANEL_INCHES, pairs_height + bar_height), dpi=_DPI,
                    layout="constrained")
    pairs_area, bar_area = figure.subfigures(2, 1, height_ratios=(pairs_height, bar_height))
    pair_names = (MAP_NAMES[:2], MAP_NAMES[2:])
    for pair_figure, names, other, pair in zip(pairs_area.subfigures(1, 2), pair_names,
                                               roles[1:], triplet):
        pair_figure.suptitle(f"{roles[0]} vs {other}\n"
                             f"{_decision_text(float(pair.similarity), threshold)}")
        for column, name in zip(pair_figure.subplots(2, 2).T, names):
            image = name.split("_vs_")[0]
            face = np.clip(np.asarray(faces[image], np.float32), 0.0, 1.0)
            column[0].imshow(face)
            column[0].set_title(by_face[image], fontsize="medium")
            column[1].imshow(face)
            overlay = column[1].imshow(shown[name], cmap=cmap, norm=norm, alpha=_OVERLAY_ALPHA)
            overlay.set_gid(name)
            column[1].set_title(f"mean masked cosine {levels[name].mean:.3f}",
                                fontsize="small")
            if scores is not None:
                # Padded to one height: the two pairs' rows then line up.
                padding = "\n" * (note_lines - 1 - notes[name].count("\n"))
                column[1].set_xlabel(notes[name] + padding, fontsize="small")
            for axes in column:
                axes.set_xticks([])
                axes.set_yticks([])
    bar_figure, level_figure = bar_area.subfigures(1, 2, width_ratios=(1.0, 1.5))
    # Placed by hand: constrained layout would stretch the bar to the
    # height of the level panel beside it.
    bar_axes = bar_figure.add_axes((0.08, 0.66, 0.84, 0.12), label="colorbar")
    bar_figure.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), cax=bar_axes,
                        orientation="horizontal", ticks=ticker.MaxNLocator(4))
    bar_axes.tick_params(labelsize="small")
    bar_figure.text(0.5, 0.42, label, ha="center", va="top", fontsize="small", wrap=True)
    level_axes = level_figure.subplots()
    _draw_levels(level_axes, levels, triplet, roles=roles, threshold=threshold,
                 with_range=normalize == "coverage")
    if title is not None:
        figure.suptitle(title)
    if path is not None:
        save_png(figure, path)
    return figure


class _Level(NamedTuple):
    """A map's values and the mean and range of the masked scores that weighed it."""

    values: np.ndarray
    mean: float
    low: float
    high: float


def _levels(triplet: srise.TripletSaliency) -> dict[str, _Level]:
    """Each map with its masked scores' mean and range, by `MAP_NAMES`."""
    maps = (triplet.mate.saliency_a, triplet.mate.saliency_b,
            triplet.nonmate.saliency_a, triplet.nonmate.saliency_b)
    scores = (triplet.mate.scores_a, triplet.mate.scores_b,
              triplet.nonmate.scores_a, triplet.nonmate.scores_b)
    levels = {}
    for name, saliency, masked in zip(MAP_NAMES, maps, scores):
        values, masked = np.asarray(saliency, np.float32), np.asarray(masked, np.float64)
        if not (np.isfinite(values).all() and np.isfinite(masked).all()):
            raise ValueError(f"map {name} or its masked scores hold NaN or infinite values: "
                             f"the model's embeddings were not finite")
        levels[name] = _Level(values, float(masked.mean()), float(masked.min()),
                              float(masked.max()))
    return levels


def _check_coverage(levels: Mapping[str, _Level]) -> None:
    """Coverage maps are weighted means of their scores: anything else is mislabelled."""
    for name, level in levels.items():
        # float32 sums of a few thousand terms: a relative error far below 1e-3.
        slack = 1e-3 * max(abs(level.low), abs(level.high), level.high - level.low, 1e-3)
        low, high = float(level.values.min()), float(level.values.max())
        if not (level.low - slack <= low and high <= level.high + slack):
            raise ValueError(
                f"map {name} spans [{low:.4g}, {high:.4g}], outside its masked scores' "
                f"range [{level.low:.4g}, {level.high:.4g}]: it is not a coverage-normalized "
                f"map; pass normalize='none' for plain sums")


def _draw_levels(axes, levels: Mapping[str, _Level], triplet: srise.TripletSaliency, *,
                 roles: Sequence[str], threshold: float | None,
                 with_range: bool) -> None:
    """Where each map lies in cosine units: the paper's "shallower" cue, made explicit."""
    axes.set_label("levels")
    rows = range(len(MAP_NAMES), 0, -1)  # the first map on top
    similarities = [float(pair.similarity) for pair in triplet for _ in range(2)]
    for row, (name, level), similarity in zip(rows, levels.items(), similarities):
        colour = "C0" if name in MAP_NAMES[:2] else "C1"
        legend = row == len(MAP_NAMES)  # one legend entry per kind of mark
        if with_range:
            (line,) = axes.plot([level.values.min(), level.values.max()], [row, row],
                                color=colour, linewidth=6, solid_capstyle="butt", alpha=0.6,
                                label="map's range" if legend else None)
            line.set_gid(f"{name} range")
        (dot,) = axes.plot([level.mean], [row], "o", color=colour, markersize=5,
                           label="mean masked cosine" if legend else None)
        dot.set_gid(f"{name} mean")
        axes.plot([similarity], [row], "|", color=colour, markersize=12, markeredgewidth=2,
                  label="the pair's cosine" if legend else None)
    if threshold is not None:
        axes.axvline(threshold, color="black", linestyle="--", linewidth=1,
                     label=f"threshold {threshold:.3f}")
    axes.set_yticks(list(rows), [map_label(name, roles) for name in MAP_NAMES],
                    fontsize="x-small")
    axes.set_ylim(0.4, len(MAP_NAMES) + 0.6)
    axes.tick_params(axis="x", labelsize="x-small")
    axes.set_xlabel("cosine similarity", fontsize="small")
    axes.set_title("each map's level in cosine units: lower is shallower", fontsize="small")
    axes.legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))


def map_label(name: str, roles: Sequence[str] = ROLES) -> str:
    """A map of `MAP_NAMES` named by the faces' roles: "<its image> vs <the intact one>".

    Args:
      name: one of `MAP_NAMES`, e.g. "probe_vs_nonmate".
      roles: the names of (probe, mate, nonmate), as in `plot_triplet`.

    Returns:
      E.g. "probe vs probe with a surgical mask".
    """
    role_of = dict(zip(ROLES, roles))
    return " vs ".join(role_of[face] for face in name.split("_vs_"))


def map_pair(name: str) -> str:
    """The pair a map of `MAP_NAMES` belongs to: the face in its name other than the probe.

    Args:
      name: one of `MAP_NAMES`, e.g. "nonmate_vs_probe".

    Returns:
      "mate" or "nonmate".
    """
    return next(face for face in name.split("_vs_") if face != "probe")


def _decision_text(similarity: float, threshold: float | None) -> str:
    """'cosine 0.934, match at 0.907': the verdict comes from the score alone."""
    if threshold is None:
        return f"cosine {similarity:.3f}"
    verdict = "match" if similarity >= threshold else "no match"
    return f"cosine {similarity:.3f}, {verdict} at {threshold:.3f}"


def fraction_text(value: MetricResult | float) -> str:
    """A Deletion/Insertion fraction as printed: "0.125", or "n/a (why)".

    Args:
      value: a `metrics.MetricResult` or its fraction as a float.

    Returns:
      The fraction with three decimals; for NaN "n/a", followed by the short
      reason (`metrics.REASON_TEXT`) when `value` is a `MetricResult`.
    """
    fraction = float(value.fraction if isinstance(value, MetricResult) else value)
    if not np.isnan(fraction):
        return f"{fraction:.3f}"
    reason = metrics.undefined_reason(value) if isinstance(value, MetricResult) else None
    return "n/a" if reason is None else f"n/a ({metrics.REASON_TEXT[reason]})"


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
    the decision flipped is marked, and the legend gives the fraction
    (`fraction_text`: "n/a" and the reason when it is undefined).

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
                            label=f"{label}: {fraction_text(result)}")
        # A defined fraction is where the decision flipped (one that never
        # flips is undefined, NaN).
        if np.isfinite(fraction):
            flip = seen & (counts == round(fraction * num_pixels))
            axes.plot(counts[flip] / num_pixels, curve[flip], linestyle="none", marker="o",
                      markersize=9, markerfacecolor="none", color=line.get_color())
    axes.axhline(threshold, color="black", linestyle="--", linewidth=1,
                 label=f"threshold {threshold:.3f}")
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
    panels = dict(zip(_CURVE_MODES, figure.subplots(1, 2, sharey=True)))
    for number, (method, by_mode) in enumerate(curves.items()):
        for mode, axes in panels.items():
            drawn = _mean_curve(axes, by_mode[mode], number)
            if drawn is not None:
                line, rows = drawn
                auc = np.trapezoid(line.get_ydata(), line.get_xdata())
                line.set_label(f"{method} (AUC {auc:.3f}, n={rows})")
    for mode, axes in panels.items():
        _curve_axes(axes, mode)
        axes.legend(fontsize="x-small")
    panels["deletion"].set_ylabel("mean cosine similarity to the intact reference")
    if title is not None:
        figure.suptitle(title)
    if path is not None:
        save_png(figure, path)
    return figure


def plot_fill_curves(
    curves: Mapping[str, Mapping[str, Mapping[str, np.ndarray]]],
    *,
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Mean deletion and insertion curves per metric fill: one row of panels per fill.

    `plot_mean_curves` with several fills would put every (method, fill) in
    one pair of panels, a legend longer than the plot. Here each fill has
    its own row, a method keeps its colour and line style in every panel,
    and one legend beside the panels names the methods (the AUCs are in
    Table 1).

    Args:
      curves: {metric fill: {method: {"deletion": (R, K) array,
        "insertion": (R, K) array}}}, rows as `plot_mean_curves` takes them.
      path: if given, the figure is also written there as a PNG.
      title: the figure's title.

    Returns:
      The figure: per fill, a deletion and an insertion axes labelled
      "<fill> deletion" / "<fill> insertion"; each curve line's gid is its
      method.

    Raises:
      ValueError: no fills.
    """
    if not curves:
        raise ValueError("curves must hold at least one metric fill, got none")
    methods = list(dict.fromkeys(m for by_method in curves.values() for m in by_method))
    figure = Figure(figsize=(13.0, 0.6 + 3.2 * len(curves)), dpi=_DPI, layout="constrained")
    grid = figure.subplots(len(curves), 2, sharex=True, sharey=True, squeeze=False)
    for row, (panels, (fill, by_method)) in enumerate(zip(grid, curves.items())):
        for axes, mode in zip(panels, _CURVE_MODES):
            axes.set_label(f"{fill} {mode}")
            for method, by_mode in by_method.items():
                drawn = _mean_curve(axes, by_mode[mode], methods.index(method))
                if drawn is not None:
                    drawn[0].set_gid(method)
            _curve_axes(axes, mode, fill=fill, last_row=row == len(curves) - 1)
        panels[0].set_ylabel("mean cosine similarity")
    proxies = [Line2D([], [], label=method, **_curve_style(number))
               for number, method in enumerate(methods)]
    figure.legend(handles=proxies, loc="outside right upper", fontsize="small")
    if title is not None:
        figure.suptitle(title)
    if path is not None:
        save_png(figure, path)
    return figure



def _curve_style(number: int) -> dict[str, Any]:
    """The colour and line style of the `number`-th method: distinct for 40 methods."""
    return {"color": f"C{number % 10}", "linestyle": ("-", "--", ":", "-.")[number // 10 % 4]}


def _mean_curve(axes, rows: ArrayLike, number: int):
    """Draw the mean of the finite rows of curves: (its line, rows averaged), or None."""
    rows = np.asarray(rows, np.float64)
    rows = rows[np.all(np.isfinite(rows), axis=1)] if rows.size else rows
    if not len(rows):
        return None
    fractions = np.linspace(0.0, 1.0, rows.shape[1])
    (line,) = axes.plot(fractions, rows.mean(0), **_curve_style(number))
    return line, len(rows)


def _curve_axes(axes, mode: str, *, fill: str | None = None, last_row: bool = True) -> None:
    better = "lower" if mode == "deletion" else "higher"
    axes.set_title(f"{'' if fill is None else f'metric fill {fill}: '}{mode} "
                   f"({better} AUC is better)")
    if last_row:
        axes.set_xlabel("fraction of pixels changed, most salient first")
    axes.set_xlim(0.0, 1.0)


# What each Table 1 metric measures, under `plot_fill_summary`'s panels,
# and which way is better.
_METRIC_AXIS = {
    "deletion": "Deletion fraction, lower is better",
    "insertion": "Insertion fraction, lower is better",
    "average": "average of Deletion and Insertion fractions, lower is better",
    "deletion_auc": "deletion AUC, lower is better",
    "insertion_auc": "insertion AUC, higher is better",
}
_HIGHER_IS_BETTER = frozenset({"insertion_auc"})
_BEST_COLOUR = "C3"


def _method_text(line: Mapping[str, Any]) -> str:
    """A Table 1 line's method with its count, as the table shows both: "srise@500"."""
    method, iterations = str(line["method"]), line.get("iterations", "")
    return method if "@" in method or iterations in ("", None) else f"{method}@{iterations}"


def plot_fill_summary(
    tables: Mapping[str, Sequence[Mapping[str, Any]]],
    *,
    metric: str = "average",
    level: float = 0.95,
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Table 1 as a picture: each method's mean and interval, one panel per metric fill.

    The panels stand side by side on one y axis, the methods in table order
    (the first on top, across all fills: a method missing from one fill's
    table counts as undefined there), and one x axis, so a method's position
    can be compared across fills. Each method is a dot at its mean with a
    horizontal bar over its bootstrap interval (no bar when the table has
    none: a single pair); the best mean of each panel (lowest, highest for
    the insertion AUC) is drawn in another colour inside a ring. A method
    whose mean is undefined (NaN: no row where the metric is defined) is a
    hollow marker at the left edge labelled "n/a", not left out.

    Args:
      tables: {metric fill: `benchmark.summarize`'s table of that fill's
        rows}, in the order of the panels (`benchmark.format_tables`'s input).
      metric: the Table 1 metric drawn: "average" (of Deletion and
        Insertion), "deletion", "insertion", "deletion_auc" or
        "insertion_auc".
      level: the interval level `summarize` used, for the legend.
      path: if given, the figure is also written there as a PNG.
      title: the figure's title.

    Returns:
      The figure: one axes per fill, labelled with the fill's name; in each,
      the lines with gids "<method> mean", "<method> interval" (when it has
      one) and "<method> best" (the ring), or "<method> n/a", where <method>
      is the line's "method", with "@<iterations>" appended when it has
      iterations and no "@" of its own.

    Raises:
      ValueError: no tables, or an unknown `metric`.
    """
    if metric not in _METRIC_AXIS:
        raise ValueError(f"metric must be one of {tuple(_METRIC_AXIS)}, got {metric!r}")
    if not tables:
        raise ValueError("tables must hold at least one metric fill, got none")
    by_fill = {fill: {_method_text(line): line for line in table}
               for fill, table in tables.items()}
    labels = list(dict.fromkeys(label for lines in by_fill.values() for label in lines))
    values = {fill: {label: tuple(float(lines[label][key]) if label in lines else np.nan
                                  for key in (metric, f"{metric}_low", f"{metric}_high"))
                     for label in labels}
              for fill, lines in by_fill.items()}
    finite = [v for by_label in values.values() for triple in by_label.values()
              for v in triple if np.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
    pad = 0.08 * (high - low) if high > low else 0.05
    undefined = any(np.isnan(mean) for by_label in values.values()
                    for mean, _, _ in by_label.values())
    # Room on the left for the undefined methods' markers and their "n/a".
    left = low - pad * (3.0 if undefined else 1.0)
    figure = Figure(figsize=(3.6 + 3.4 * len(tables), 1.6 + 0.32 * len(labels)),
                    dpi=_DPI, layout="constrained")
    panels = figure.subplots(1, len(tables), sharex=True, sharey=True, squeeze=False)[0]
    rows = dict(zip(labels, range(len(labels))))
    pick = np.nanargmax if metric in _HIGHER_IS_BETTER else np.nanargmin
    for axes, (fill, by_label) in zip(panels, values.items()):
        axes.set_label(fill)
        means = np.array([mean for mean, _, _ in by_label.values()])
        best = labels[int(pick(means))] if np.isfinite(means).any() else None
        for label, (mean, interval_low, interval_high) in by_label.items():
            row = rows[label]
            if np.isnan(mean):
                (mark,) = axes.plot([left], [row], "o", markerfacecolor="none", color="grey",
                                    clip_on=False)
                mark.set_gid(f"{label} n/a")
                axes.annotate("n/a", (left, row), xytext=(6, 0), textcoords="offset points",
                              va="center", fontsize="small", color="grey")
                continue
            colour = _BEST_COLOUR if label == best else "C0"
            if np.isfinite(interval_low) and np.isfinite(interval_high):
                (bar,) = axes.plot([interval_low, interval_high], [row, row], color=colour,
                                   marker="|", markersize=8, linewidth=1.5)
                bar.set_gid(f"{label} interval")
            (dot,) = axes.plot([mean], [row], "o", color=colour, markersize=6)
            dot.set_gid(f"{label} mean")
            if label == best:
                (ring,) = axes.plot([mean], [row], "o", markersize=13, markerfacecolor="none",
                                    markeredgewidth=1.5, color=colour)
                ring.set_gid(f"{label} best")
        axes.set_title(f"metric fill: {fill}")
        axes.grid(axis="x", alpha=0.3)
        axes.tick_params(axis="x", labelsize="small")
    panels[0].set_yticks(range(len(labels)), labels, fontsize="small")
    panels[0].set_ylim(len(labels) - 0.5, -0.5)  # the table's first method on top
    panels[0].set_xlim(left, high + pad)
    figure.supxlabel(_METRIC_AXIS[metric], fontsize="medium")
    proxies = [Line2D([], [], color="C0", marker="o", markersize=6, label=f"mean, "
                      f"{100 * level:g}% bootstrap interval"),
               Line2D([], [], color=_BEST_COLOUR, marker="o", markersize=10,
                      markerfacecolor="none", linestyle="none", label="best mean of the fill")]
    if undefined:
        proxies.append(Line2D([], [], color="grey", marker="o", markerfacecolor="none",
                              linestyle="none", label="n/a: undefined"))
    # Midway down the right: clear of the title's and the x label's lines,
    # which span the figure.
    figure.legend(handles=proxies, loc="outside right center", fontsize="small")
    if title is not None:
        figure.suptitle(textwrap.fill(title, int(figure.get_figwidth() * _TITLE_CHARS_PER_INCH)))
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


def plot_maps(
    maps: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
    *,
    similarity: Mapping[str, float] | None = None,
    threshold: float | None = None,
    scores: Mapping[str, Mapping[str, MetricResult | float]] | None = None,
    roles: Sequence[str] = ROLES,
    path: str | Path | None = None,
    title: str | None = None,
) -> Figure:
    """Any explainer's maps of a pair or a triplet, one column per map.

    Each column shows the face a map explains, then the map over it. Maps of
    different methods are in different units (cosine, gradient, rank), so
    each is scaled to its own range: the figure shows where a map puts its
    weight, not how strong it is. (`plot_triplet` draws S-RISE triplets with
    their levels.)

    Args:
      maps: {name: (image, reference, saliency)} as `triplet_maps` gives
        them, names "<image>_vs_<reference>" of `MAP_NAMES` (the first two
        for a pair); images Float[ndarray, "h w 3"] in [0, 1], maps
        Float[ndarray, "h w"].
      similarity: {"mate": cosine, "nonmate": cosine} of the pairs shown;
        each map's panel then gives its pair's cosine (and, with
        `threshold`, the model's decision).
      threshold: the verification threshold.
      scores: optional numbers printed under the maps, e.g. {name:
        {"deletion": MetricResult, "insertion": 0.4}} (see `fraction_text`).
      roles: the names of (probe, mate, nonmate), as in `plot_triplet`.
      path: if given, the figure is also written there as a PNG.
      title: the figure's title.

    Returns:
      The figure; each overlay carries its map's name as gid.

    Raises:
      ValueError: a name that is not "<image>_vs_<reference>" of `ROLES`,
        one of them the probe.
    """
    role_of = dict(zip(ROLES, roles))
    for name in maps:
        faces = name.split("_vs_")
        if len(faces) != 2 or not set(faces) <= set(ROLES) or "probe" not in faces:
            raise ValueError(f"map names must be <image>_vs_<reference> of {ROLES}, one of "
                             f"them the probe, got {name!r}")
    notes = {name: "\n".join(textwrap.fill(f"{metric} {fraction_text(value)}", _NOTE_CHARS)
                             for metric, value in by_metric.items())
             for name, by_metric in (scores or {}).items()}
    note_lines = max((note.count("\n") + 1 for note in notes.values()), default=0)
    figure = Figure(figsize=(len(maps) * _PANEL_INCHES,
                             2 * _PANEL_INCHES + 1.2 + _NOTE_LINE_INCHES * note_lines),
                    dpi=_DPI, layout="constrained")
    grid = np.asarray(figure.subplots(2, len(maps), squeeze=False))
    for column, (name, (image, _, saliency)) in zip(grid.T, maps.items()):
        face = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
        saliency = np.asarray(saliency, np.float32)
        low, high = saliency.min(), saliency.max()
        column[0].imshow(face)
        column[0].set_title(map_label(name, roles), fontsize="medium")
        column[1].imshow(face)
        overlay = column[1].imshow((saliency - low) / (high - low if high > low else 1.0),
                                   cmap=_CMAP, vmin=0.0, vmax=1.0, alpha=_OVERLAY_ALPHA)
        overlay.set_gid(name)
        if similarity is not None and map_pair(name) in similarity:
            column[1].set_title(_decision_text(float(similarity[map_pair(name)]), threshold),
                                fontsize="small")
        if name in notes:
            padding = "\n" * (note_lines - 1 - notes[name].count("\n"))
            column[1].set_xlabel(notes[name] + padding, fontsize="small")
        for axes in column:
            axes.set_xticks([])
            axes.set_yticks([])
    # Wrapped to the figure's width: two panels are narrower than the sentence.
    figure.supxlabel(textwrap.fill(
        f"each map scaled to its own range ({_CMAP} colours: blue least, red most "
        f"salient); the {role_of['probe']} is compared with each other face",
        int(len(maps) * _PANEL_INCHES * _CAPTION_CHARS_PER_INCH)), fontsize="small")
    if title is not None:
        figure.suptitle(title)
    if path is not None:
        save_png(figure, path)
    return figure


def plot_sanity(face: np.ndarray, result: SanityResult, *, path: str | Path | None = None,
                title: str | None = None) -> Figure:
    """A cascading randomization (`sanity.cascading_randomization`) as one row of maps.

    The face, the map under the trained model, then the map after each step,
    titled with the group randomized last and the map's Spearman correlation
    with the original. Each map is drawn on its own colour scale: the test
    asks whether the map's order survives, not its values.

    Args:
      face: Float[ndarray, "h w 3"] in [0, 1], the image explained.
      result: the `SanityResult` of its maps.
      path: if given, the figure is also written there as a PNG.
      title: the figure's title.

    Returns:
      The figure.
    """
    count = len(result.maps) + 1
    figure = Figure(figsize=(1.6 * count, 2.2), dpi=_DPI, layout="constrained")
    axes = figure.subplots(1, count, squeeze=False)[0]
    # NaN: a constant map, whose ranking is undefined (sanity.rank_correlation).
    titles = ["face", "original"] + [
        f"{group}\n\u03c1 = {float(rho):.2f}" if np.isfinite(rho) else f"{group}\nflat map"
        for group, rho in zip(result.steps, np.asarray(result.spearman))]
    axes[0].imshow(np.clip(np.asarray(face), 0.0, 1.0))
    for panel, saliency in zip(axes[1:], np.asarray(result.maps)):
        panel.imshow(saliency, cmap=_CMAP)
    for panel, text in zip(axes, titles):
        panel.set_title(text, fontsize=8)
        panel.set_xticks([])
        panel.set_yticks([])
    if title is not None:
        figure.suptitle(title, fontsize=9)
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
