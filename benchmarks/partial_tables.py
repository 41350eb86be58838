"""Table 1 per metric fill from the triplets a benchmark run has finished so far.

    python benchmarks/partial_tables.py runs/lfw100 /tmp/lfw100-partial

A long `srise-jax benchmark` run writes its tables only at the end. This
copies the run's results.csv, triplets.csv and run.json into OUT (the run
itself is not touched, and may keep running), sets the copy's triplet count
to the triplets that have rows, and writes OUT/table.md and the figures with
the library's own `benchmark.write_reports`. The title and the command line
of table.md say which triplets these are.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
from pathlib import Path

from srise_jax import benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="the benchmark's --out directory")
    parser.add_argument("out", type=Path, help="where to write the partial tables (replaced)")
    parser.add_argument("--paired-with", metavar="LABEL",
                        help="the reference of the paired tables (default: the default "
                             "S-RISE at its largest count among the run's methods)")
    args = parser.parse_args()
    with open(args.run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    done = sorted({int(row["triplet"]) for row in rows})
    # The order the run scored them in: the order of its --methods and --metric-fill.
    methods = list(dict.fromkeys(row["method"] for row in rows))
    fills = list(dict.fromkeys(row.get("metric_fill") or "mean" for row in rows))
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    for name in ("results.csv", "triplets.csv"):
        shutil.copy(args.run / name, args.out / name)
    run = json.loads((args.run / "run.json").read_text())
    total = run["num_triplets"]
    run["num_triplets"] = len(done)
    (args.out / "run.json").write_text(json.dumps(run, indent=2))
    paired_with = args.paired_with or benchmark.default_reference(
        benchmark.parse_methods(methods))
    reports = benchmark.write_reports(
        args.out, model_label=run["model"]["model"], labels=methods, fills=fills,
        paired_with=paired_with,
        command=f"partial: the {len(done)} triplets {done} finished of the {total} of {args.run}")
    print(f"triplets finished: {done} of {total}")
    print(benchmark.format_tables(reports.tables, paired=reports.paired))


if __name__ == "__main__":
    main()
