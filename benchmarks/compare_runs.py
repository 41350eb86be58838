"""How two benchmark results.csv files differ on the rows they share.

    python benchmarks/compare_runs.py BEFORE.csv AFTER.csv [--fill impute]

For a change that should move the numbers little (a solver, a batch size),
run the same triplets before and after it and compare: per method, over the
scored rows both files hold for the same (triplet, pair, side, method,
metric fill), how many Deletion and Insertion fractions differ, by how much
at most, and the mean of their average (the Table 1 number) in each file.
A fraction undefined (NaN) in one file and defined in the other counts as a
difference and is listed.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path

KEY = ("triplet", "pair", "side", "method", "metric_fill")
METRICS = ("deletion", "insertion")


def read_scored(path: Path, fill: str | None) -> dict[tuple[str, ...], dict[str, float]]:
    """{row key: {metric: fraction}} of the scored rows (match 1), NaN where undefined."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in (*KEY, "match", *METRICS) if c not in (rows[0] if rows else {})]
    if missing:
        raise SystemExit(f"{path}: not a benchmark results.csv (no column {missing[0]!r})")
    return {tuple(row[c] for c in KEY): {m: float(row[m]) if row[m] else math.nan
                                         for m in METRICS}
            for row in rows
            if row["match"] == "1" and (fill is None or row["metric_fill"] == fill)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--fill", default=None,
                        help="compare only this metric fill's rows (default: all)")
    args = parser.parse_args()
    before, after = read_scored(args.before, args.fill), read_scored(args.after, args.fill)
    shared = sorted(set(before) & set(after), key=lambda k: (int(k[0]), *k[1:]))
    if not shared:
        raise SystemExit("the two files share no scored rows")
    by_method: dict[tuple[str, str], list[tuple[str, ...]]] = defaultdict(list)
    for key in shared:
        by_method[key[3], key[4]].append(key)
    triplets = sorted({int(k[0]) for k in shared})
    print(f"{len(shared)} scored rows in both files, triplets {triplets[0]}-{triplets[-1]} "
          f"({len(triplets)})")
    print("\n| method | fill | rows | deletion differs | max abs diff | insertion differs "
          "| max abs diff | mean (D+I)/2 before | after |")
    print("|---|---|---|---|---|---|---|---|---|")
    one_sided = []
    # The before run's order of methods and fills (the order of its --methods).
    order = {mf: i for i, mf in enumerate(dict.fromkeys(k[3:] for k in before))}
    for (method, fill), keys in sorted(by_method.items(), key=lambda item: order[item[0]]):
        cells = []
        for metric in METRICS:
            diffs = []
            for key in keys:
                a, b = before[key][metric], after[key][metric]
                if math.isnan(a) != math.isnan(b):
                    one_sided.append((key, metric, a, b))
                    diffs.append(math.inf)
                elif not math.isnan(a):
                    diffs.append(abs(a - b))
            changed = sum(d > 0 for d in diffs)
            cells += [f"{changed} of {len(diffs)}", f"{max(diffs, default=0.0):.2g}"]
        means = []
        for table in (before, after):
            averages = [(table[k]["deletion"] + table[k]["insertion"]) / 2 for k in keys]
            defined = [v for v in averages if not math.isnan(v)]
            means.append(f"{sum(defined) / len(defined):.3f}" if defined else "nan")
        print(f"| {method} | {fill} | {len(keys)} | " + " | ".join(cells) + " | "
              + " | ".join(means) + " |")
    for key, metric, a, b in one_sided:
        print(f"defined in one file only: {'/'.join(key)} {metric}: {a} -> {b}")


if __name__ == "__main__":
    main()
