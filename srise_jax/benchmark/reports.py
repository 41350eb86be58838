"""A run directory's reports: table.md (Table 1 per fill), fills.png, curves.png, convergence.png."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from srise_jax import outputs, viz
from srise_jax.benchmark import store
from srise_jax.benchmark.table import (
    format_tables,
    metric_fill,
    paired_differences,
    rows_by_fill,
    summarize,
)


class Reports(NamedTuple):
    """What `write_reports` wrote.

    Attributes:
      tables: {metric fill: Table 1 of its rows, one dict per method
        (`summarize`)}, in the order of table.md.
      paths: the files written: table.md, curves.png, fills.png and, when
        written, convergence.png.
      paired: {metric fill: each method minus the reference on the same
        maps (`paired_differences`)}; empty without a reference.
    """

    tables: dict[str, list[dict[str, Any]]]
    paths: list[Path]
    paired: dict[str, list[dict[str, Any]]]

    @property
    def table(self) -> list[dict[str, Any]]:
        """The first metric fill's Table 1 (the only one in a run of one fill)."""
        return next(iter(self.tables.values()), [])


def write_reports(out: str | os.PathLike, *, model_label: str, labels: Sequence[str] = (),
                  fills: Sequence[str] = (), command: str | None = None,
                  paired_with: str | None = None, num_resamples: int = 10_000) -> Reports:
    """Table 1 per metric fill and the figures of a run directory's results.csv.

    table.md holds a title line (model, threshold, data, triplets), the
    command if given, and `format_tables`'s tables: with several fills
    first every method's average under each fill side by side
    (`format_overview`), then one Table 1 per metric fill of the rows,
    under a heading naming it, each followed, with `paired_with`, by every
    other method minus that one on the same maps
    (`paired_differences`); fills.png the same tables
    as a picture, one panel per fill (one when the run has one), each
    method's mean average of Deletion and Insertion with its interval
    (`viz.plot_fill_summary`); curves.png the mean
    deletion/insertion curves of each method over its scored maps
    (`viz.plot_mean_curves`; with several fills one row of panels per fill,
    `viz.plot_fill_curves`);
    convergence.png (with several S-RISE counts, from the maps kept in
    `out`/maps) each kept triplet's probe-vs-mate map at every count, as
    in the paper's Fig. 6.

    The title gives run.json's threshold, data and triplet count; the
    bootstrap's seed is the run's.

    Args:
      out: the run directory (`run_benchmark`'s).
      model_label: the model's name for titles (`FaceModel.label`).
      labels: the methods in the table's order; methods of results.csv
        not named follow, sorted.
      fills: the metric fills in the order of the tables; fills of
        results.csv not named follow in order of appearance.
      command: the command line that made the run, quoted in table.md.
      paired_with: the reference method of the paired tables (e.g. the
        default S-RISE, `default_reference`); None, or a method without
        rows: no paired tables.
      num_resamples: bootstrap resamples of the intervals (`summarize`).

    Returns:
      The `Reports`.
    """
    out = Path(out)
    run = json.loads((out / "run.json").read_text())
    rows = store.read_rows(out / "results.csv")
    present = {row["method"] for row in rows}
    order = [label for label in labels if label in present]
    order += sorted(present - set(order))
    by_fill = rows_by_fill(rows, fills=fills)
    tables = {fill: summarize(fill_rows, methods=order, num_resamples=num_resamples,
                              seed=run["seed"])
              for fill, fill_rows in by_fill.items()}
    paired = ({fill: paired_differences(fill_rows, reference=paired_with, methods=order,
                                        num_resamples=num_resamples, seed=run["seed"])
               for fill, fill_rows in by_fill.items()}
              if paired_with in present else {})
    title = (f"{model_label}, threshold {run['threshold']:g}, data {run['data']}, "
             f"{run['num_triplets']} triplets")
    quoted = "" if command is None else f"Command: `{command}`\n\n"
    text = (f"# Deletion / Insertion benchmark\n\n{title}.\n\n{quoted}"
            + format_tables(tables, paired=paired))
    written = [out / "table.md", out / "curves.png", out / "fills.png"]
    with outputs.atomic_file(written[0]) as file:
        file.write(text.encode())
    curves: dict[tuple[str, str], dict[str, list[list[float]]]] = {}
    for row in rows:
        if row["deletion_curve"]:
            entry = curves.setdefault((row["method"], metric_fill(row)),
                                      {"deletion": [], "insertion": []})
            for mode in ("deletion", "insertion"):
                entry[mode].append([float(v) for v in row[f"{mode}_curve"].split()])
    curve_title = f"Deletion / insertion curves, mean over scored maps: {title}"
    by_fill_curves = {f: {m: curves[m, f] for m in order if (m, f) in curves} for f in by_fill}
    if len(by_fill) == 1:
        viz.plot_mean_curves(next(iter(by_fill_curves.values())), path=written[1],
                             title=curve_title)
    else:
        viz.plot_fill_curves(by_fill_curves, path=written[1], title=curve_title)
    viz.plot_fill_summary(tables, path=written[2],
                          title=f"Table 1 per metric fill: {title}")
    figure_rows = _convergence_rows(out / "maps", order)
    if figure_rows:
        written.append(out / "convergence.png")
        viz.plot_convergence(figure_rows, path=written[-1],
                             title=f"S-RISE after N masks (Fig. 6), {model_label}")
    return Reports(tables, written, paired)


def _convergence_rows(maps: Path, order: Sequence[str]) -> dict[str, tuple]:
    """Fig. 6's rows: each kept triplet's probe-vs-mate S-RISE map at every count.

    Only with several S-RISE counts, and for the triplets whose .npz holds
    all of them.
    """
    srise_labels = [label for label in order if label.split("@")[0] == "srise"]
    examples = sorted(maps.glob("triplet*.npz")) if maps.is_dir() else []
    if len(srise_labels) < 2:
        return {}
    figure_rows = {}
    for path in examples:
        with np.load(path) as saved:
            keys = [f"{label}/mate/probe" for label in srise_labels]
            if all(k in saved.files for k in keys):
                counts = {label.split("@")[1] if "@" in label else "500": saved[k]
                          for label, k in zip(srise_labels, keys)}
                figure_rows[f"{path.stem}: probe vs mate"] = (
                    saved["probe"], {f"N = {n}": m for n, m in counts.items()})
    return figure_rows
