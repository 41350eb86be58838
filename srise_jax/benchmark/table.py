"""Table 1 from result rows: means over the same rows, pair-bootstrap intervals, Markdown.

Pure computation on rows (mappings, as `results.csv` holds them or as
numbers): `summarize` averages each method's Deletion, Insertion, their
average and the AUCs with 95% bootstrap intervals that resample distinct
pairs (`pair_identity`); `format_table` prints the paper's Table 1.
`paired_differences` compares each method with one reference on the same
maps (a paired bootstrap), which Table 1's per-method intervals cannot.

One table per metric fill: a row's "metric_fill" says what replaced the
removed pixels when it was scored (`metrics.METRIC_FILLS`; a row without
the column, written before it existed, was scored with the mean fill).
Scores under different fills are different measurements, so `summarize`
refuses rows of several fills; `rows_by_fill` splits them and
`format_tables` prints one Table 1 per fill under a heading naming it,
after `format_overview`'s averages of all fills side by side.
"""

from __future__ import annotations

import collections
import math
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from srise_jax import metrics

# Table 1's metrics. The paper's two fractions and their average are means
# over the SAME rows (those where both fractions are defined), so the
# average column is the average of the two beside it; each AUC is a mean
# over the scored rows where it is defined.
FRACTIONS = ("deletion", "insertion", "average")
AUCS = ("deletion_auc", "insertion_auc")

# Why `summarize` excluded a row: a pair the model rejects is not scored
# (the row's "match" is false); a NaN or empty fraction of a row that gives
# no "<metric>_reason" (rows written before reasons existed) is `NO_REASON`.
REJECTED = metrics.UNDEFINED_REASONS[0]  # "rejected", as metrics names it
NO_REASON = "no_reason_given"
_NO_REASON_TEXT = "NaN or empty, and the row gives no reason"

# The fill of a row without a "metric_fill" (one written before the column
# existed: every such row was scored with the paper's mean fill).
DEFAULT_FILL = "mean"

# What each metric fill puts in place of a removed pixel, for the headings.
FILL_TEXT = {
    "mean": "removed pixels take the image's per-channel mean (the paper's)",
    "blur": "removed pixels take a strong Gaussian blur of the image",
    "impute": "removed pixels take ROAD's noisy linear imputation from their kept "
              "neighbours (Rong et al., ICML 2022)",
}

# The keys `summarize` reads from every row.
_ROW_KEYS = ("method", "image", "reference", "match", "deletion", "insertion")


def pair_identity(row: Mapping[str, Any]) -> frozenset[str]:
    """The pair a result row scores: its two images, unordered.

    Table 1's bootstrap resamples these, not rows or triplets: a pair that
    recurs in several triplets (the bundled protocol has (obama, obama2) and
    (obama2, obama3) in three triplets each) gives rows that are near-copies,
    and both sides of a pair explain one decision.

    Args:
      row: a result row with "image" and "reference" (image names or paths
        relative to the data folder, as `results.csv` holds them).

    Returns:
      {image, reference}: equal for the rows of one pair in any triplet, on
      either side.
    """
    return frozenset((str(row["image"]), str(row["reference"])))


def metric_fill(row: Mapping[str, Any]) -> str:
    """The metric fill a result row was scored with.

    Args:
      row: a result row.

    Returns:
      Its "metric_fill"; `DEFAULT_FILL` ("mean") for a row without one (a
      results.csv written before the column: those rows were all scored with
      the mean fill).
    """
    return str(row.get("metric_fill") or DEFAULT_FILL)


def rows_by_fill(rows: Iterable[Mapping[str, Any]], *,
                 fills: Sequence[str] = ()) -> dict[str, list[Mapping[str, Any]]]:
    """Result rows split by metric fill (`metric_fill`), each fill's rows in order.

    Args:
      rows: result rows.
      fills: the fills in the order wanted; fills of the rows not named
        follow in order of appearance. A named fill without rows is left out.

    Returns:
      {fill: its rows}.
    """
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(metric_fill(row), []).append(row)
    order = [fill for fill in fills if fill in groups]
    order += [fill for fill in groups if fill not in order]
    return {fill: groups[fill] for fill in order}


def _number(value: Any) -> float:
    """A CSV cell or a float as a float; empty or missing -> NaN."""
    if value is None or value == "":
        return math.nan
    return float(value)


class _Interval(NamedTuple):
    mean: float
    low: float
    high: float
    n: int  # values in the mean
    pairs: int  # clusters the bootstrap resamples


def _mean_ci(values: Sequence[tuple[Any, float]], *, num_resamples: int,
             rng: np.random.Generator, level: float) -> _Interval:
    """Mean of (cluster, value) values and its percentile bootstrap interval over clusters.

    Rows of one cluster (one pair) are not independent, so the bootstrap
    resamples whole clusters, in order of first appearance, and recomputes
    the mean over their rows: a pair's rows weigh as many rows in the mean
    but count once in the interval's width. One cluster has no spread to
    resample: its interval is NaN.
    """
    groups: dict[Any, list[float]] = {}
    for cluster, value in values:
        groups.setdefault(cluster, []).append(value)
    if not groups:
        return _Interval(math.nan, math.nan, math.nan, 0, 0)
    sums = np.array([np.sum(group) for group in groups.values()])
    counts = np.array([len(group) for group in groups.values()])
    mean = float(sums.sum() / counts.sum())
    if len(groups) < 2:
        return _Interval(mean, math.nan, math.nan, int(counts.sum()), 1)
    picks = rng.integers(len(groups), size=(num_resamples, len(groups)))
    resampled = sums[picks].sum(1) / counts[picks].sum(1)
    tail = (1 - level) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail])
    return _Interval(mean, float(low), float(high), int(counts.sum()), len(groups))


def _check_row(number: int, row: Mapping[str, Any], fills: dict[str, None]) -> None:
    """Raise if row `number` lacks a key `summarize` reads, or adds a second fill to `fills`."""
    missing = [key for key in _ROW_KEYS if key not in row]
    if missing:
        raise ValueError(f"result row {number}: no {', '.join(map(repr, missing))}")
    fills[metric_fill(row)] = None
    if len(fills) > 1:
        raise ValueError(f"result rows of several metric fills ({', '.join(fills)}): "
                         f"summarize each fill's rows (rows_by_fill)")


def summarize(rows: Iterable[Mapping[str, Any]], *, methods: Sequence[str] | None = None,
              num_resamples: int = 10_000, level: float = 0.95,
              seed: int = 0) -> list[dict[str, Any]]:
    """Table 1 from result rows: per method, means with pair-bootstrap intervals.

    Which rows count. A row whose pair the model rejects ("match" false)
    is not scored and is excluded as `REJECTED`. Of the scored rows,
    Deletion, Insertion and their average ((D + I) / 2 per row) are means
    over the SAME rows, those where both fractions are defined, so the
    average is the average of the two columns; a row with an undefined
    (NaN or empty) fraction is left out of all three and counted under
    "<metric> <reason>", its "<metric>_reason" (`metrics.UNDEFINED_REASONS`,
    e.g. "deletion cannot_flip"; `NO_REASON` when the row has none). Those
    reasons but "invalid_input" do not depend on the map ("rejected",
    "cannot_flip", "already_flipped" are decided by the intact and the
    all-mean images), so every method with finite maps is averaged over the
    same rows. Each AUC is a mean over the scored rows where it is defined.

    The rows must share one metric fill (`metric_fill`): scores under
    different fills are not averaged together (`rows_by_fill` splits them).

    Intervals: a percentile bootstrap over distinct pairs (`pair_identity`:
    the same two images, in any triplet, on either side), each resample
    recomputing the mean over its pairs' rows; with fewer than two pairs
    the interval is NaN.

    Args:
      rows: result rows: mappings with "method", "image", "reference",
        "match", "deletion", "insertion" and optionally "metric_fill",
        "iterations", "deletion_reason", "insertion_reason", "deletion_auc",
        "insertion_auc"; numbers or CSV strings, empty meaning NaN.
      methods: labels in the table's order; default: order of appearance.
      num_resamples: bootstrap resamples of the pairs.
      level: coverage of the interval.
      seed: the bootstrap's seed: each (method, metric) draws its resamples
        from ``numpy.random.default_rng([seed, zlib.crc32(b"<method>/<metric>")])``,
        so a method's interval does not depend on the other methods.

    Returns:
      One dict per method: "method", "metric_fill", "iterations"; for each metric of
      `FRACTIONS` and `AUCS`: "<metric>" (mean), "<metric>_low",
      "<metric>_high", "<metric>_n" (rows in the mean; one count for the
      three `FRACTIONS`) and "<metric>_pairs" (distinct pairs among them:
      what the bootstrap resamples); and "excluded": {`REJECTED` or
      "<metric> <reason>": rows}, a row undefined in both fractions
      counted under both.

    Raises:
      ValueError: a row lacks one of the keys above that are not optional,
        or the rows are of several metric fills.
    """
    by_method: dict[str, dict[str, Any]] = {}
    fills: dict[str, None] = {}
    for number, row in enumerate(rows):
        _check_row(number, row, fills)
        entry = by_method.setdefault(row["method"], {
            "iterations": row.get("iterations", ""), "excluded": collections.Counter(),
            "values": {metric: [] for metric in FRACTIONS + AUCS}})
        if str(row["match"]) not in ("1", "True", "true"):
            entry["excluded"][REJECTED] += 1
            continue
        pair = pair_identity(row)
        d, i = _number(row["deletion"]), _number(row["insertion"])
        undefined = [metric for metric, value in (("deletion", d), ("insertion", i))
                     if math.isnan(value)]
        for metric in undefined:
            entry["excluded"][f"{metric} {row.get(f'{metric}_reason') or NO_REASON}"] += 1
        if not undefined:
            for metric, value in zip(FRACTIONS, (d, i, (d + i) / 2)):
                entry["values"][metric].append((pair, value))
        for metric in AUCS:
            value = _number(row.get(metric))
            if not math.isnan(value):
                entry["values"][metric].append((pair, value))
    order = list(methods) if methods is not None else list(by_method)
    table = []
    for label in order:
        if label not in by_method:
            continue
        entry = by_method[label]
        line: dict[str, Any] = {"method": label, "metric_fill": next(iter(fills)),
                                "iterations": entry["iterations"]}
        for metric in FRACTIONS + AUCS:
            rng = np.random.default_rng([seed, zlib.crc32(f"{label}/{metric}".encode())])
            interval = _mean_ci(entry["values"][metric], num_resamples=num_resamples,
                                rng=rng, level=level)
            line.update({metric: interval.mean, f"{metric}_low": interval.low,
                         f"{metric}_high": interval.high, f"{metric}_n": interval.n,
                         f"{metric}_pairs": interval.pairs})
        line["excluded"] = dict(entry["excluded"])
        table.append(line)
    return table


def paired_differences(rows: Iterable[Mapping[str, Any]], *, reference: str,
                       methods: Sequence[str] | None = None, num_resamples: int = 10_000,
                       level: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
    """Each method minus `reference`, map by map, with a paired pair-bootstrap interval.

    Table 1's intervals are per method, so two methods' intervals can
    overlap although one is lower on nearly every pair: the pairs differ far
    more from each other than the methods do. Whether a method beats the
    reference is a paired question, answered here on the same maps: a row of
    the method and the reference's row of the same slot (the same image
    explained against the same reference in the same triplet), both scored
    and with both fractions defined, give one difference per metric of
    `FRACTIONS`. The mean of these differences is the difference of the two
    methods' Table 1 means when both are averaged over the same rows (as
    they are unless a map was invalid: `summarize`). The interval resamples
    distinct pairs (`pair_identity`) with the differences of all their rows,
    as `summarize` resamples rows.

    Args:
      rows: result rows of one metric fill, as `summarize` reads them, with
        "triplet" (optional: rows without one are one triplet).
      reference: the method every other is compared with, e.g. "srise@500".
      methods: labels in the table's order; default: order of appearance.
        The reference is left out.
      num_resamples: bootstrap resamples of the pairs.
      level: coverage of the interval.
      seed: the bootstrap's seed: each (method, metric) draws from
        ``numpy.random.default_rng([seed, zlib.crc32(b"<method>-<reference>/<metric>")])``.

    Returns:
      One dict per method other than the reference: "method", "reference",
      "metric_fill"; for each metric of `FRACTIONS`: "<metric>" (mean of
      method minus reference; negative: the method removes or adds fewer
      pixels to flip the decision), "<metric>_low", "<metric>_high"; "rows"
      and "pairs" (the paired rows and their distinct pairs); "lower",
      "higher", "tied": distinct pairs where the method's mean average
      ((D + I) / 2 over the pair's paired rows) is below, above or equal to
      the reference's; "unpaired": the method's defined rows without a
      defined reference row in their slot, or the reverse.

    Raises:
      ValueError: a row lacks a key `summarize` reads, the rows are of
        several metric fills, no row is of `reference`, or a method has two
        rows in one slot.
    """
    values: dict[str, dict[tuple[str, str, str], tuple[frozenset[str], tuple[float, ...]]]] = {}
    fills: dict[str, None] = {}
    for number, row in enumerate(rows):
        _check_row(number, row, fills)
        label = str(row["method"])
        slots = values.setdefault(label, {})
        slot = (str(row.get("triplet", "")), str(row["image"]), str(row["reference"]))
        if slot in slots:
            raise ValueError(f"result row {number}: a second row of {label!r} for "
                             f"{slot[1]} against {slot[2]} in triplet {slot[0] or '-'}")
        d, i = _number(row["deletion"]), _number(row["insertion"])
        scored = str(row["match"]) in ("1", "True", "true")
        slots[slot] = (pair_identity(row), (d, i, (d + i) / 2) if scored else (math.nan,) * 3)
    if reference not in values:
        raise ValueError(f"no result rows of the reference {reference!r}; methods: "
                         f"{', '.join(values) or 'none'}")
    defined = {label: {slot: value for slot, value in slots.items()
                       if not math.isnan(value[1][2])}
               for label, slots in values.items()}
    base = defined[reference]
    order = list(methods) if methods is not None else list(values)
    table = []
    for label in order:
        if label == reference or label not in values:
            continue
        own = defined[label]
        paired = [slot for slot in own if slot in base]
        line: dict[str, Any] = {"method": label, "reference": reference,
                                "metric_fill": next(iter(fills))}
        for k, metric in enumerate(FRACTIONS):
            name = f"{label}-{reference}/{metric}"
            rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
            interval = _mean_ci([(own[slot][0], own[slot][1][k] - base[slot][1][k])
                                 for slot in paired],
                                num_resamples=num_resamples, rng=rng, level=level)
            line.update({metric: interval.mean, f"{metric}_low": interval.low,
                         f"{metric}_high": interval.high})
        by_pair: dict[frozenset[str], list[float]] = {}
        for slot in paired:
            by_pair.setdefault(own[slot][0], []).append(own[slot][1][2] - base[slot][1][2])
        pair_means = np.array([np.mean(group) for group in by_pair.values()])
        line.update(rows=len(paired), pairs=len(by_pair),
                    lower=int(np.sum(pair_means < 0)), higher=int(np.sum(pair_means > 0)),
                    tied=int(np.sum(pair_means == 0)),
                    unpaired=len(own) + len(base) - 2 * len(paired))
        table.append(line)
    return table


def _cell(line: Mapping[str, Any], metric: str) -> str:
    mean = line[metric]
    if math.isnan(mean):
        return "n/a"
    if math.isnan(line[f"{metric}_low"]):
        return f"{mean:.4f} [one pair: no interval]"
    return f"{mean:.4f} [{line[f'{metric}_low']:.4f}, {line[f'{metric}_high']:.4f}]"


def _exclusion_order(names: Iterable[str]) -> list[str]:
    """Exclusion names in a table's order: `REJECTED` first, then by name."""
    return sorted(set(names), key=lambda name: (name != REJECTED, name))


def format_table(table: Sequence[Mapping[str, Any]], *, level: float = 0.95) -> str:
    """Markdown: the paper's Table 1 columns, with intervals, row counts and the AUCs.

    Each metric cell is "mean [low, high]" (the bootstrap interval at
    `level`). Deletion, Insertion and their average are over the same rows
    (column "rows", from "pairs" distinct pairs); "excluded rows" counts the
    rows left out, by reason; "AUC rows" gives the rows (and pairs) of each
    AUC. Deletion, Insertion, their average and the deletion AUC: smaller is
    better; insertion AUC: larger is better. The caption says which rows
    count, what the bootstrap resamples and what each exclusion means.

    Args:
      table: one row per method, as `summarize` returns them.
      level: the interval level `summarize` used, for the caption.

    Returns:
      The Markdown table and its caption, ending in a newline.

    References:
      Lu and Ebrahimi, arXiv:2304.06118, Table 1.
    """
    percent = f"{100 * level:g}%"
    header = ["method", "iterations", "deletion", "insertion", "average", "rows", "pairs",
              "excluded rows", "deletion AUC", "insertion AUC", "AUC rows (pairs)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for line in table:
        name, _, count = line["method"].partition("@")
        cells = [name, count or str(line["iterations"] or "-")]
        cells += [_cell(line, metric) for metric in FRACTIONS]
        cells += [str(line["average_n"]), str(line["average_pairs"])]
        excluded = line["excluded"]
        cells.append(", ".join(f"{excluded[exclusion]} {exclusion}"
                               for exclusion in _exclusion_order(excluded)) or "0")
        cells += [_cell(line, metric) for metric in AUCS]
        auc_rows = (f"{line[f'{metric}_n']} ({line[f'{metric}_pairs']})" for metric in AUCS)
        cells.append(" / ".join(dict.fromkeys(auc_rows)))  # once when both agree
        lines.append("| " + " | ".join(cells) + " |")
    pairs = {line["average_pairs"] for line in table}
    resampled = pairs.pop() if len(pairs) == 1 else None
    over = ("each method's distinct pairs (column pairs)" if resampled is None
            else f"{resampled} distinct pair{'' if resampled == 1 else 's'}")
    lines += ["", (
        f"Deletion, Insertion and their average ((D + I) / 2 per row) are means over "
        f"the same rows: the scored rows (pairs the model accepts, both images of each "
        f"pair) where both fractions are defined (column rows); lower is better. Each "
        f"AUC is a mean over the scored rows where it is defined (deletion AUC: lower "
        f"is better; insertion AUC: higher is better). {percent} CI: bootstrap over "
        f"{over}: the rows of one pair (the same two images, in any triplet, on either "
        f"side) are resampled together, so a pair that recurs in several triplets counts "
        f"once; no interval from a single pair.")]
    exclusions = _exclusion_order(e for line in table for e in line["excluded"])
    if exclusions:
        lines += ["", "Excluded rows (a row undefined in both fractions counts under both):"]
        for exclusion in exclusions:
            reason = exclusion.rpartition(" ")[2]
            text = (f"{metrics.REASON_TEXT[REJECTED]} (not scored)" if exclusion == REJECTED
                    else metrics.REASON_TEXT.get(reason, _NO_REASON_TEXT))
            lines.append(f"- {exclusion}: {text}")
    return "\n".join(lines) + "\n"


def format_paired(table: Sequence[Mapping[str, Any]], *, level: float = 0.95) -> str:
    """Markdown: each method minus the reference, map by map (`paired_differences`).

    Each cell is "difference [low, high]", signed; negative: the method is
    more faithful than the reference by that metric (fewer pixels to flip
    the decision). "pairs lower / higher / tied" counts the distinct pairs
    by the sign of their mean difference of the average.

    Args:
      table: one row per method, as `paired_differences` returns them.
      level: the interval level `paired_differences` used, for the caption.

    Returns:
      The Markdown table and its caption, ending in a newline; "" for an
      empty table.
    """
    if not table:
        return ""
    reference = table[0]["reference"]
    header = ["method", f"average - {reference}", f"deletion - {reference}",
              f"insertion - {reference}", "pairs lower / higher / tied", "rows (pairs)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for line in table:
        cells = [line["method"]]
        for metric in ("average", "deletion", "insertion"):
            mean, low, high = (line[metric], line[f"{metric}_low"], line[f"{metric}_high"])
            cells.append("n/a" if math.isnan(mean) else
                         f"{mean:+.4f} [one pair: no interval]" if math.isnan(low) else
                         f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]")
        cells.append(f"{line['lower']} / {line['higher']} / {line['tied']}")
        cells.append(f"{line['rows']} ({line['pairs']})")
        lines.append("| " + " | ".join(cells) + " |")
    unpaired = sum(line["unpaired"] for line in table)
    lines += ["", (
        f"Each method minus {reference} on the same maps' rows (the same image explained "
        f"against the same reference in the same triplet, both fractions defined for "
        f"both methods); negative: fewer pixels removed or added to flip the decision "
        f"than {reference}. {100 * level:g}% CI: paired bootstrap over distinct pairs, "
        f"both methods' rows of a pair resampled together. An interval that excludes 0 "
        f"separates the two methods on these pairs; overlapping Table 1 intervals do "
        f"not say they are tied."
        + (f" {unpaired} defined rows had no defined partner and are left out."
           if unpaired else ""))]
    return "\n".join(lines) + "\n"


def format_overview(tables: Mapping[str, Sequence[Mapping[str, Any]]], *,
                    paired: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                    level: float = 0.95) -> str:
    """Markdown: every method's average of Deletion and Insertion under every metric fill.

    The comparison a reader of a run with several fills looks for first, in
    one table: a row per method (in the first fill's order, then methods
    that only later fills have), a column per fill, each cell the "average"
    of that fill's Table 1 ("mean [low, high]", over its rows and pairs);
    "-" where the fill has no row of the method. With `paired`, a second
    table: each method minus the reference under each fill
    (`paired_differences`), "difference [low, high]; lower / higher / tied"
    (the distinct pairs by the sign of their mean difference).

    Args:
      tables: {metric fill: `summarize`'s table}, in the columns' order.
      paired: {metric fill: `paired_differences`'s table}; None or empty:
        no second table.
      level: the interval level, for the captions.

    Returns:
      "## Overview: ..." and the table(s) with their captions, ending in a
      newline; "" without tables.
    """
    if not tables:
        return ""
    fills = list(tables)
    percent = f"{100 * level:g}%"

    def grid(head: str, by_fill: Mapping[str, Sequence[Mapping[str, Any]]], cell) -> list[str]:
        cells = {fill: {line["method"]: cell(line) for line in table}
                 for fill, table in by_fill.items()}
        methods = list(dict.fromkeys(m for fill in fills for m in cells.get(fill, {})))
        lines = ["| " + " | ".join([head] + [f"{fill} fill" for fill in fills]) + " |",
                 "|" + "---|" * (len(fills) + 1)]
        lines += ["| " + " | ".join([method] + [cells.get(fill, {}).get(method, "-")
                                               for fill in fills]) + " |"
                  for method in methods]
        return lines

    lines = ["## Overview: average of Deletion and Insertion per metric fill", ""]
    lines += grid("method", tables, lambda line: _cell(line, "average"))
    lines += ["", (
        f"(D + I) / 2, mean [{percent} CI] over the rows and distinct pairs of each fill's "
        f"Table 1 below; lower is better. A fill can leave out rows that another keeps "
        f"(an undefined fraction under that fill), so the columns need not count the same "
        f"rows.")]
    if paired and any(paired.values()):
        reference = next(t for t in paired.values() if t)[0]["reference"]

        def difference(line: Mapping[str, Any]) -> str:
            mean, low, high = line["average"], line["average_low"], line["average_high"]
            counts = f"{line['lower']} / {line['higher']} / {line['tied']}"
            if math.isnan(mean):
                return "n/a"
            if math.isnan(low):
                return f"{mean:+.4f} [one pair: no interval]; {counts}"
            return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]; {counts}"

        lines += ["", f"### Paired with {reference}: average of Deletion and Insertion "
                      f"per metric fill", ""]
        lines += grid(f"method minus {reference}", paired, difference)
        lines += ["", (
            f"Each method minus {reference} on the same maps (each fill's paired table "
            f"below), mean [{percent} CI, paired bootstrap over distinct pairs]; then the "
            f"distinct pairs on which the method is lower / higher / tied. Negative: fewer "
            f"pixels to flip the decision than {reference}; an interval that excludes 0 "
            f"separates the two.")]
    return "\n".join(lines) + "\n"


def format_tables(tables: Mapping[str, Sequence[Mapping[str, Any]]], *,
                  paired: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                  level: float = 0.95, overview: bool = True) -> str:
    """Markdown: one Table 1 per metric fill, each under a heading naming its fill.

    Args:
      tables: {metric fill: `summarize`'s table of that fill's rows}, in
        the order to print.
      paired: {metric fill: `paired_differences`'s table of that fill's
        rows}; each follows its fill's Table 1. None: no paired tables.
      level: the interval level `summarize` used, for the captions.
      overview: with several fills, begin with `format_overview`'s
        side-by-side averages (and paired differences).

    Returns:
      With several fills and `overview`, `format_overview`'s section
      first. For each fill: "## Table 1, metric fill: <fill>", a line saying what
      the fill puts in place of removed pixels, and `format_table`'s table;
      then, when `paired` has the fill, "### Paired with <reference>, metric
      fill: <fill>" and `format_paired`'s table; sections separated by a
      blank line.
    """
    sections = ([format_overview(tables, paired=paired, level=level)]
                if overview and len(tables) > 1 else [])
    for fill, table in tables.items():
        text = FILL_TEXT.get(fill, "")
        sections.append(f"## Table 1, metric fill: {fill}\n\n"
                        + (f"Deletion and Insertion with the {fill} fill: {text}.\n\n"
                           if text else "")
                        + format_table(table, level=level))
        against = (paired or {}).get(fill)
        if against:
            sections.append(f"### Paired with {against[0]['reference']}, metric fill: {fill}\n\n"
                            + format_paired(against, level=level))
    return "\n".join(sections)
