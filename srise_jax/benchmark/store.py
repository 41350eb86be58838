"""The resumable store of a benchmark run: run.json, triplets.csv, results.csv, maps.

A run directory holds `run.json` (what was asked), `triplets.csv`,
`results.csv` (`COLUMNS`, one row per triplet, pair, side, method and
metric fill, appended one triplet at a time by `append_rows`) and
`maps/tripletNNN.npz`. A rerun with the same settings (`start_run` checks
them; the metric fills are not among them) keeps every complete (triplet,
method, metric fill) block and runs the rest (`open_results`), so an
interrupted run loses at most the triplet in flight, and methods and metric
fills can be added to finished triplets. Each process of a distributed run appends to
its own `results.partI.csv`; `merge_parts` folds them into results.csv.

Lines a rerun leaves out of a results file (a block cut short by a kill,
rows two runs wrote twice) are named in a `UserWarning`; finished rows are
kept.
"""

from __future__ import annotations

import collections
import csv
import io
import json
import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

import srise_jax
from srise_jax import metrics, outputs, protocols
from srise_jax.benchmark.methods import PAIRS, SIDES
from srise_jax.benchmark.table import REJECTED

COLUMNS = ("triplet", "pair", "side", "image", "reference", "method", "metric_fill",
           "iterations", "similarity", "match", "deletion", "insertion", "deletion_reason",
           "insertion_reason", "deletion_auc", "insertion_auc", "seconds",
           "deletion_curve", "insertion_curve")

# The fill every row was scored with before the metric_fill column existed.
MEAN_FILL = "mean"

# What results.csv held before the metric_fill column. Its rows were all
# scored with the mean fill, whose definition has not changed, so they are
# exactly the rows this version writes with metric_fill "mean": a rerun
# migrates the file in place (rewritten atomically, with a warning saying
# so) instead of refusing, which would throw away hours of finished maps.
# Readers of rows (`summarize`, `rows_by_fill`) read a row without the column
# as "mean" for the same reason; no row is ever given another fill.
_COLUMNS_BEFORE_FILLS = tuple(c for c in COLUMNS if c != "metric_fill")

# What results.csv held before the reason columns (and the metric_fill
# column): its undefined fractions can read 1.0 (Deletion that never flips),
# so its rows cannot be resumed.
_COLUMNS_WITHOUT_REASONS = tuple(c for c in _COLUMNS_BEFORE_FILLS
                                 if not c.endswith("_reason"))

# Settings that must agree for a rerun to add to a directory's results.
_RUN_KEYS = ("model", "weights", "data", "num_triplets", "seed", "threshold", "size",
             "metric_step", "curve_points", "ablation")

# Rows per (triplet, method, metric fill) block: one per pair and side.
_BLOCK = len(PAIRS) * len(SIDES)


def result_row(*, triplet: int, pair: str, side: str, image: str, reference: str,
               method: str, iterations: int | str, similarity: float, match: bool,
               metric_fill: str = MEAN_FILL, seconds: float | None = None,
               scores: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One results.csv row, its numbers formatted as the file holds them.

    Args:
      triplet: the triplet's index in the run.
      pair: one of `PAIRS`.
      side: one of `SIDES`.
      image: the name of the explained image.
      reference: the name of the intact image it is compared with.
      method: the method's label.
      iterations: its "iterations" cell (`MethodSet.iterations`).
      similarity: the pair's cosine similarity.
      match: whether the model accepts the pair.
      metric_fill: the fill the scores were computed with (`make_score_fn`).
      seconds: the map's time; None for a map not computed.
      scores: the map's scores (`make_score_fn`'s dict, as NumPy values);
        None for a pair the model rejects, which is not scored.

    Returns:
      {column: value} for every column of `COLUMNS`; an undefined metric is
      "" with its reason in "<metric>_reason" (`REJECTED` when not scored).
    """
    row = {"triplet": triplet, "pair": pair, "side": side, "image": image,
           "reference": reference, "method": method, "metric_fill": metric_fill,
           "iterations": iterations,
           "similarity": f"{similarity:.6f}", "match": int(match),
           "seconds": "" if seconds is None else f"{seconds:.3f}"}
    for metric in ("deletion", "insertion", "deletion_auc", "insertion_auc"):
        value = math.nan if scores is None else float(scores[metric])
        row[metric] = "" if math.isnan(value) else f"{value:.6f}"
    for metric in ("deletion", "insertion"):
        row[f"{metric}_reason"] = (REJECTED if scores is None
                                   else metrics.reason_name(scores[f"{metric}_reason"]) or "")
    for metric in ("deletion_curve", "insertion_curve"):
        row[metric] = ("" if scores is None else
                       " ".join(f"{v:.5f}" for v in np.asarray(scores[metric])))
    return row


def start_run(out: Path, run: Mapping[str, Any], triplets: Sequence[protocols.Triplet], *,
              write: bool = True) -> None:
    """Write run.json and triplets.csv, or check that a resumed run asks the same.

    Args:
      out: the run directory (it exists).
      run: what the run asks: every key of the settings a rerun must repeat
        ("model", "weights", "data", "num_triplets", "seed", "threshold",
        "size", "metric_step", "curve_points", "ablation"), JSON-able.
      triplets: the run's triplets, for triplets.csv.
      write: False for the processes other than 0 of a distributed run:
        only the check is made, process 0 writes the files.

    Raises:
      ValueError: run.json is not a run file, or it holds a run whose
        settings differ from `run` (the message names the first that does).
    """
    path = out / "run.json"
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a benchmark run file ({err})") from None
        for key in _RUN_KEYS:
            if before.get(key) != json.loads(json.dumps(run[key])):
                raise ValueError(
                    f"{out} holds a run with {key} = {json.dumps(before.get(key))}, "
                    f"this one asks for {json.dumps(run[key])}: use another --out")
        return
    if not write:
        return
    listing = io.StringIO()
    writer = csv.writer(listing, lineterminator="\n")
    writer.writerow(("triplet", "probe", "mate", "nonmate"))
    writer.writerows((t, *triplet) for t, triplet in enumerate(triplets))
    with outputs.atomic_file(out / "triplets.csv") as file:
        file.write(listing.getvalue().encode())
    outputs.write_json(path, {**run, "srise_jax_version": srise_jax.__version__})


class CompleteRows(NamedTuple):
    """A results file's rows that can be kept, and what was left out.

    Attributes:
      kept: the rows of its complete (triplet, method, metric fill) blocks,
        each (triplet, pair, side, method, metric fill) once.
      dropped: one phrase per kind of line left out; empty if none.
      before_fills: the file was written before the metric_fill column; its
        rows, all scored with the mean fill, are read with metric_fill "mean".
    """

    kept: list[dict[str, str]]
    dropped: list[str]
    before_fills: bool = False


def complete_rows(results: Path) -> CompleteRows:
    """The rows of a results file's complete (triplet, method, fill) blocks, each job once.

    A run killed while appending can leave a triplet's block cut short: a
    last line without its newline, and methods with fewer rows than jobs;
    those rows are left out (to be run again). Two runs appending to one
    file at once (possible before runs locked their directory) wrote every
    row twice and the header again: each job's first row is kept, so the
    finished rows survive. A file written before the metric_fill column is
    read with metric_fill "mean" (`CompleteRows.before_fills`). The file is
    only read.

    Args:
      results: a results.csv (or a process's part); missing means empty.

    Returns:
      The `CompleteRows`, rows as `csv.DictReader` reads them.

    Raises:
      ValueError: the file has other columns than `COLUMNS` or those before
        the metric_fill column (one written before the reason columns is
        named as such), or a line that is not a row of them.
    """
    if not results.exists():
        return CompleteRows([], [])
    text = results.read_text()
    body = text[:text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(body))
    columns = COLUMNS
    if reader.fieldnames is not None and tuple(reader.fieldnames) != COLUMNS:
        if tuple(reader.fieldnames) != _COLUMNS_BEFORE_FILLS:
            raise ValueError(_columns_error(results, reader.fieldnames))
        columns = _COLUMNS_BEFORE_FILLS
    rows, seen = [], set()
    headers = duplicates = 0
    for row in reader:
        if tuple(row.values()) == columns:
            headers += 1
            continue
        if None in row or None in row.values() or not row["triplet"].isdigit():
            raise ValueError(f"{results}: line {reader.line_num} is not a row of "
                             f"{len(columns)} columns with a triplet number")
        if columns != COLUMNS:
            row = {column: row.get(column, MEAN_FILL) for column in COLUMNS}
        job = (row["triplet"], row["pair"], row["side"], row["method"], row["metric_fill"])
        if job in seen:
            duplicates += 1
            continue
        seen.add(job)
        rows.append(row)
    counts = collections.Counter(_keys(rows))
    kept = [row for row, key in zip(rows, _keys(rows)) if counts[key] == _BLOCK]
    dropped = []
    if duplicates:
        dropped.append(f"{duplicates} duplicate row(s) (copies of kept rows: two runs "
                       "wrote here at once)")
    if headers:
        dropped.append(f"{headers} repeated header line(s)")
    unfinished = sorted(key for key, count in counts.items() if count != _BLOCK)
    if unfinished:
        named = ", ".join(f"triplet {t} {method}" + ("" if fill == MEAN_FILL else f" ({fill})")
                          for t, method, fill in unfinished[:3])
        more = f" and {len(unfinished) - 3} more" if len(unfinished) > 3 else ""
        dropped.append(f"the {len(rows) - len(kept)} row(s) of {len(unfinished)} "
                       f"unfinished (triplet, method) block(s) ({named}{more}), to run again")
    if body != text:
        dropped.append("a last line cut short")
    return CompleteRows(kept, dropped, columns != COLUMNS)


def _columns_error(results: Path, columns: Sequence[str]) -> str:
    """Why a results file with these columns cannot be resumed, in one line."""
    if tuple(columns) == _COLUMNS_WITHOUT_REASONS:
        return (f"{results}: written by an older srise-jax, without the deletion_reason "
                f"and insertion_reason columns (a Deletion that never flips reads 1.0 "
                f"there, not n/a), so its rows cannot be mixed with new ones: use another "
                f"--out, or delete {results.name} to compute its rows again")
    return f"{results}: unexpected columns {list(columns)}; expected {list(COLUMNS)}"


def _keys(rows: Iterable[Mapping[str, Any]]) -> list[tuple[int, str, str]]:
    """(triplet, method, metric fill) of each row."""
    return [(int(row["triplet"]), row["method"], row["metric_fill"]) for row in rows]


def _warn_dropped(results: Path, found: CompleteRows) -> None:
    """Say, in one warning, which lines of a results file were left out."""
    if found.dropped:
        warnings.warn(f"{results}: left out {'; '.join(found.dropped)}; "
                      f"kept {len(found.kept)} row(s)", stacklevel=3)


def _finished(results: Path) -> set[tuple[int, str, str]]:
    """(triplet, method, fill) blocks complete in a results file, which keeps only those.

    The lines `complete_rows` leaves out are removed (the file is rewritten
    atomically, and a warning says what went) and the unfinished blocks run
    again, so no row is ever written twice and no finished row is lost. A
    file written before the metric_fill column is rewritten with it (every
    row "mean", the fill it was scored with), with a warning, before any
    row is appended.
    """
    found = complete_rows(results)
    if found.before_fills:
        _warn_migrated(results)
    if found.dropped:
        _warn_dropped(results, found)
    if found.dropped or found.before_fills:
        _write_rows(results, found.kept)
    return set(_keys(found.kept))


def _warn_migrated(results: Path) -> None:
    """Say that a results file without the metric_fill column is read as the mean fill's."""
    warnings.warn(f"{results}: written before the metric_fill column; its rows were all "
                  f"scored with the mean fill, so they are kept as metric_fill "
                  f"{MEAN_FILL!r} (the file is rewritten with the column)", stacklevel=3)


def _write_rows(results: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replace a results file by these rows, atomically."""
    block = io.StringIO()
    writer = csv.DictWriter(block, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with outputs.atomic_file(results) as file:
        file.write(block.getvalue().encode())


class OpenResults(NamedTuple):
    """Where a process appends its rows, and what the run has finished.

    Attributes:
      path: results.csv, or results.partI.csv for process I of several.
      finished: the (triplet, method, metric fill) blocks complete in any
        results file of the run directory.
    """

    path: Path
    finished: set[tuple[int, str]]


def open_results(out: Path, *, process: int = 0, processes: int = 1) -> OpenResults:
    """Open a run directory's results for appending: repaired, merged, and what is done.

    A single process first merges the parts an interrupted distributed run
    left (`merge_parts`). Each process's own file loses the lines
    `complete_rows` leaves out (rewritten atomically, with a warning); the
    other processes' files are only read (a changed process count can move
    a finished triplet to another process).

    Args:
      out: the run directory.
      process: this process's index in [0, processes).
      processes: the number of processes of the run.

    Returns:
      The `OpenResults`.

    Raises:
      ValueError: as `complete_rows`.

    Warns:
      UserWarning: a results file had lines that were left out.
    """
    results = out / "results.csv"
    if processes == 1:
        merge_parts(out)
        return OpenResults(results, _finished(results))
    mine = out / f"results.part{process}.csv"
    done = _finished(mine)
    for path in [results, *_part_files(out)]:
        if path != mine:
            done |= set(_keys(complete_rows(path).kept))
    return OpenResults(mine, done)


def _part_files(out: Path) -> list[Path]:
    """The results.partI.csv of a distributed run, by process index."""
    parts = [p for p in out.glob("results.part*.csv")
             if p.name[len("results.part"):-len(".csv")].isdigit()]
    return sorted(parts, key=lambda p: int(p.name[len("results.part"):-len(".csv")]))


def merge_parts(out: Path) -> None:
    """Fold the processes' results.partI.csv into results.csv, then remove them.

    Rows are sorted by triplet; a stable sort keeps each triplet's rows in
    the order they were written, which is a single-process run's order. A
    (triplet, pair, side, method, metric fill) row found twice is kept once;
    lines `complete_rows` leaves out are dropped with a warning; files
    written before the metric_fill column are read as the mean fill's.

    Args:
      out: the run directory; without parts, nothing is done.

    Raises:
      ValueError: as `complete_rows`.

    Warns:
      UserWarning: a results file had lines that were left out, or was
        written before the metric_fill column.
    """
    parts = _part_files(out)
    if not parts:
        return
    merged, seen = [], set()
    for path in [out / "results.csv", *parts]:
        found = complete_rows(path)
        if found.before_fills:
            _warn_migrated(path)
        _warn_dropped(path, found)
        for row in found.kept:
            job = (int(row["triplet"]), row["pair"], row["side"], row["method"],
                   row["metric_fill"])
            if job not in seen:
                seen.add(job)
                merged.append(row)
    merged.sort(key=lambda row: int(row["triplet"]))
    _write_rows(out / "results.csv", merged)
    for path in parts:
        path.unlink()


def append_rows(results: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Append one triplet's rows in a single write, then flush them to disk.

    Args:
      results: the results file; its header is written first if it is new
        or empty.
      rows: rows of `COLUMNS` (`result_row`).
    """
    block = io.StringIO()
    writer = csv.DictWriter(block, fieldnames=COLUMNS, lineterminator="\n")
    if not results.exists() or results.stat().st_size == 0:
        writer.writeheader()
    writer.writerows(rows)
    with open(results, "ab") as file:
        file.write(block.getvalue().encode())
        file.flush()
        os.fsync(file.fileno())


def save_maps(path: Path, faces: Sequence[np.ndarray], maps: Mapping[str, np.ndarray]) -> None:
    """Keep a triplet's faces and maps, merged with those an earlier run kept there.

    Args:
      path: the .npz file (its folder is made if needed), written atomically.
      faces: the triplet's (probe, mate, nonmate) crops.
      maps: {"<label>/<pair>/<side>": map}, stored as float32.
    """
    path.parent.mkdir(exist_ok=True)
    merged = {}
    if path.exists():
        with np.load(path) as old:
            merged = {k: old[k] for k in old.files}
    merged.update({"probe": faces[0], "mate": faces[1], "nonmate": faces[2]})
    merged.update({k: np.asarray(v).astype(np.float32) for k, v in maps.items()})
    with outputs.atomic_file(path) as file:
        np.savez_compressed(file, **merged)


def read_rows(results: str | os.PathLike) -> list[dict[str, str]]:
    """Every row of a results file, as `csv.DictReader` reads them.

    Args:
      results: a results.csv; missing means no rows.

    Returns:
      The rows, in file order.
    """
    results = Path(results)
    if not results.exists():
        return []
    with open(results, newline="") as file:
        return list(csv.DictReader(file))
