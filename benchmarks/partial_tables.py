"""Table 1 per metric fill from the triplets a benchmark run has finished so far.

    python benchmarks/partial_tables.py benchmarks/runs/lfw100 /tmp/lfw100-partial
    python benchmarks/partial_tables.py benchmarks/runs/lfw100 /tmp/lfw100-held-out \\
        --held-out-from benchmarks/runs/ablation14 benchmarks/runs/ablation17

A long `srise-jax benchmark` run writes its tables only at the end. This
copies the run's results.csv (with the results.partI.csv of a distributed
run's processes, merged in the copy by `benchmark.merge_parts`), triplets.csv
and run.json into OUT; the run itself is not touched, and may keep running
(a block cut by a write under way is left out). It sets the copy's triplet
count to the triplets that have rows, and writes OUT/table.md and the
figures with the library's own `benchmark.write_reports`, with the paired
tables against `--paired-with`. The title and the command line of table.md
say which triplets these are.

`--held-out-from` keeps only the triplets that share no identity
(`protocols.image_identity`) with any triplet of the runs named: tables of
identities that the settings chosen on those runs (ablations) never saw.
`--first K` keeps triplets 0 to K-1: the tables a run gave when it had K
triplets, to check a resumed or restarted run against them.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from srise_jax import benchmark, protocols

_IMAGES = ("probe", "mate", "nonmate")


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or ()), list(reader)


def _write(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _identities(triplets: list[dict[str, str]]) -> set[str]:
    return {protocols.image_identity(t[image]) for t in triplets for image in _IMAGES}


def _finished_rows(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The columns and complete rows of a run's results, parts merged, the run untouched."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path in run.glob("results*.csv"):
            shutil.copy(path, Path(tmp) / path.name)
        benchmark.merge_parts(Path(tmp))
        merged = Path(tmp) / "results.csv"
        # complete_rows: a copy taken while the run appends may end in a cut block.
        found = ((_read(merged)[0], benchmark.complete_rows(merged).kept)
                 if merged.exists() else ([], []))
    for warning in caught:  # named by the run's files, not the copies'
        print(f"note: {str(warning.message).replace(tmp, str(run))}", file=sys.stderr)
    return found


def _default_reference(methods: list[str]) -> str | None:
    """`benchmark.default_reference` of a run's labels; None for an ablation's settings."""
    try:
        return benchmark.default_reference(benchmark.parse_methods(methods))
    except ValueError:  # ablation labels ("paper", "default+...") are not method labels
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the benchmark's --out directory")
    parser.add_argument("out", type=Path, help="where to write the partial tables (replaced)")
    parser.add_argument("--paired-with", metavar="LABEL",
                        help="the reference of the paired tables (default: the default "
                             "S-RISE at its largest count among the run's methods)")
    parser.add_argument("--held-out-from", type=Path, nargs="+", default=[], metavar="RUN",
                        help="keep only the triplets sharing no identity with a triplet "
                             "of these runs' triplets.csv")
    parser.add_argument("--first", type=int, metavar="K",
                        help="keep only triplets 0 to K-1")
    args = parser.parse_args()
    if args.first is not None and args.first < 1:
        parser.error(f"--first: {args.first} keeps no triplet; give K >= 1")
    columns, rows = _finished_rows(args.run)
    triplet_columns, triplets = _read(args.run / "triplets.csv")
    triplets_kept = [t for t in triplets
                     if args.first is None or int(t["triplet"]) < args.first]
    if args.held_out_from:
        try:
            seen = set().union(*(_identities(_read(run / "triplets.csv")[1])
                                 for run in args.held_out_from))
            triplets_kept = [t for t in triplets_kept if not _identities([t]) & seen]
        except ValueError as err:  # names without an identity (the bundled photos)
            parser.error(f"--held-out-from: {err}")
    if not rows:
        parser.error(f"{args.run}: no finished triplet yet; no table to write")
    kept = {t["triplet"] for t in triplets_kept}
    rows = [row for row in rows if row["triplet"] in kept]
    done = sorted({int(row["triplet"]) for row in rows})
    if not done:
        parser.error(f"{args.run}: --first / --held-out-from keep none of its finished "
                     f"triplets; no table to write")
    # The order the run scored them in: the order of its --methods and --metric-fill.
    methods = list(dict.fromkeys(row["method"] for row in rows))
    fills = list(dict.fromkeys(row.get("metric_fill") or "mean" for row in rows))
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    _write(args.out / "results.csv", columns, rows)
    _write(args.out / "triplets.csv", triplet_columns,
           [t for t in triplets if int(t["triplet"]) in done])
    run = json.loads((args.run / "run.json").read_text())
    total = run["num_triplets"]
    run["num_triplets"] = len(done)
    (args.out / "run.json").write_text(json.dumps(run, indent=2))
    paired_with = args.paired_with or _default_reference(methods)
    held_out = (f", those sharing no identity with the triplets of "
                f"{', '.join(map(str, args.held_out_from))}" if args.held_out_from else "")
    reports = benchmark.write_reports(
        args.out, model_label=run["model"]["model"], labels=methods, fills=fills,
        paired_with=paired_with,
        command=f"partial: the {len(done)} triplets {done} finished of the {total} of "
                f"{args.run}{held_out}")
    print(f"triplets: {done} of {total}{held_out}")
    print(benchmark.format_tables(reports.tables, paired=reports.paired))


if __name__ == "__main__":
    main()
