"""Faithfulness benchmark: every explainer on the same triplets, the paper's Table 1.

A benchmark run explains each image of each pair of each triplet with every
method, then scores every map whose pair the model accepts with the paper's
Deletion and Insertion fractions (`srise_jax.metrics`) and the threshold-free
deletion/insertion AUCs (`metrics.similarity_curve`), under each metric
fill asked for (`metric_fills`: what replaces the removed pixels,
`metrics.METRIC_FILLS`; default the paper's mean fill). One result row per
(triplet, pair, side, method, metric fill); `summarize` turns one fill's
rows (`rows_by_fill`) into Table 1 with 95% bootstrap intervals that
resample distinct pairs (`pair_identity`); `format_tables` prints one
Table 1 per fill.

    result = benchmark.run_benchmark(srise_jax.models.load("dlib"),
                                     protocols.sample_protocol(), "srise@100,random", "run")
    print(benchmark.format_table(benchmark.summarize(result.rows)))

The modules, from the bottom up:

- `methods`: methods by name (`parse_methods`), their keys (`job_key`,
  `method_key`, `metric_key`), jitted maps (`make_explain_fns`,
  `prepare_methods`) and scores under a metric fill (`make_score_fn`,
  `parse_metric_fills`).
- `sharding`: a batch of triplets as one vmapped program over a 1-D device
  mesh (`shard_over_triplets`, `triplet_mesh`); with one triplet per device
  its maps and scores are those of one triplet at a time.
- `table`: Table 1 from rows (`summarize`, `format_table`), one per metric
  fill (`rows_by_fill`, `format_tables`), each method against one
  reference on the same maps (`paired_differences`, `format_paired`), and
  the averages of all fills side by side (`format_overview`).
- `store`: the resumable run directory (run.json, results.csv and its
  parts, maps); a rerun adds only what is missing.
- `runner`: the loop (`Runner`, `run_benchmark`), with progress through a
  callback and no printing: `srise-jax benchmark` adds the progress bar,
  the lock on the directory and the processes of a distributed run.
- `reports`: table.md and the figures of a run directory (`write_reports`).

Which pairs are scored: Deletion asks how many pixels break a match and
Insertion how many build it, so both are undefined for a pair the model
rejects (`metrics.deletion` / `insertion` return NaN, reason "rejected").
Only pairs the model accepts (genuine matches, and false matches if any) are
scored; the other rows keep their similarity and leave the metrics empty.
A scored fraction can still be undefined ("cannot_flip", "already_flipped":
`metrics.MetricResult`); `summarize` says how many rows each reason
excluded, and reports Deletion, Insertion and their average over the same
rows.

References:
  Lu and Ebrahimi, "Explanation of Face Recognition via Saliency Maps",
  arXiv:2304.06118, section 4.4 and Table 1.
"""

from srise_jax.benchmark.methods import (
    DEFAULT_METHODS,
    PAIRS,
    PAPER_ITERATIONS,
    SIDES,
    ExplainPart,
    Method,
    MethodSet,
    default_reference,
    job_key,
    make_explain_fns,
    make_score_fn,
    method_key,
    metric_key,
    parse_methods,
    parse_metric_fills,
    prepare_methods,
    triplet_similarities,
)
from srise_jax.benchmark.reports import Reports, write_reports
from srise_jax.benchmark.runner import (
    SAMPLE,
    Job,
    Pending,
    Runner,
    RunResult,
    dataset_triplets,
    make_job,
    run_benchmark,
)
from srise_jax.benchmark.sharding import TRIPLET_AXIS, shard_over_triplets, triplet_mesh
from srise_jax.benchmark.store import (
    COLUMNS,
    MEAN_FILL,
    CompleteRows,
    OpenResults,
    append_rows,
    complete_rows,
    merge_parts,
    open_results,
    read_rows,
    result_row,
    save_maps,
    start_run,
)
from srise_jax.benchmark.table import (
    AUCS,
    FILL_TEXT,
    FRACTIONS,
    NO_REASON,
    REJECTED,
    format_overview,
    format_paired,
    format_table,
    format_tables,
    metric_fill,
    pair_identity,
    paired_differences,
    rows_by_fill,
    summarize,
)

__all__ = [
    "AUCS",
    "COLUMNS",
    "DEFAULT_METHODS",
    "FILL_TEXT",
    "FRACTIONS",
    "NO_REASON",
    "MEAN_FILL",
    "PAIRS",
    "PAPER_ITERATIONS",
    "REJECTED",
    "SAMPLE",
    "SIDES",
    "TRIPLET_AXIS",
    "CompleteRows",
    "ExplainPart",
    "Job",
    "Method",
    "MethodSet",
    "OpenResults",
    "Pending",
    "Reports",
    "RunResult",
    "Runner",
    "append_rows",
    "complete_rows",
    "dataset_triplets",
    "default_reference",
    "format_overview",
    "format_paired",
    "format_table",
    "format_tables",
    "job_key",
    "make_explain_fns",
    "make_job",
    "make_score_fn",
    "merge_parts",
    "method_key",
    "metric_fill",
    "metric_key",
    "open_results",
    "pair_identity",
    "paired_differences",
    "parse_methods",
    "parse_metric_fills",
    "prepare_methods",
    "read_rows",
    "rows_by_fill",
    "result_row",
    "run_benchmark",
    "save_maps",
    "shard_over_triplets",
    "start_run",
    "summarize",
    "triplet_mesh",
    "triplet_similarities",
    "write_reports",
]
