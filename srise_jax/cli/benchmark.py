"""`srise-jax benchmark`: the paper's Table 1 from the command line.

    srise-jax benchmark --data sample|DIR [--model dlib|arcface|onnx --weights DIR|FILE.onnx]
        [--methods srise@500,gradient,...] [--metric-fill mean,blur,impute]
        [--num-triplets 50] [--triplet-batch K] --out DIR
    srise-jax benchmark --ablation --data DIR --out DIR
    srise-jax benchmark --distributed --coordinator HOST:PORT --num-processes N
        --process-id I --data DIR --out DIR        (one command per process)

A benchmark directory holds `run.json` (what was asked), `triplets.csv`,
`results.csv` (one row per triplet, pair, side, method and metric fill,
appended triplet by triplet), `table.md` (one Table 1 per metric fill,
after an overview of every fill's averages side by side),
`fills.png` (each method's mean and interval per metric fill), `curves.png`, `convergence.png` and `maps/tripletNNN.npz` for the first
triplets. A rerun with the same settings skips the (triplet, method, metric
fill) rows already written, so an interrupted run loses at most the triplet
in flight; new methods and new metric fills are added to finished triplets
(a new fill computes the maps again, with the same keys, to score them).

`--metric-fill` says what replaces the removed pixels of Deletion and
Insertion: "mean" (the paper's, the default), "blur", "impute" (ROAD's
noisy linear imputation; its noise is drawn from
`benchmark.metric_key(job key, "impute")`, so a rerun gives the same rows),
or several, comma-separated: each map is scored under each. A results.csv
written before the metric_fill column is kept as the mean fill's (its rows
were scored with it) and rewritten with the column, saying so on stderr. A run holds a lock on the directory (`.lock`, naming its pid, host
and start time): a second run on it fails at once. Lines a rerun leaves out
of results.csv (a cut block, duplicates) are named on stderr; finished rows
are kept.

The run itself is the library's (`srise_jax.benchmark`: `Runner` over the
store of `benchmark.store`, `write_reports`); this command adds the options,
the lock, the processes of a distributed run, the progress bar and what is
printed.

Scale. `--triplet-batch K` explains and scores K triplets at once: each job
(pair, side) of the K triplets runs as one vmapped program whose triplet
axis is sharded over a 1-D mesh of the process's devices
(`benchmark.shard_over_triplets`), with the keys of one triplet at a time
(`benchmark.job_key`). With K at most the device count (one triplet per
device) the rows are those of K = 1; with more, a device vectorizes several
triplets and float rounding can move a fraction by a pixel (see
`benchmark.shard_over_triplets`). A batch holds consecutive triplets that
need the same methods; its rows are appended triplet by triplet once the
batch is done, `seconds` being the batch's time per triplet.

`--distributed` runs one process per host, each started by the user (or a
cluster scheduler) with the same options and coordinated by
`jax.distributed.initialize`: process I takes the triplets whose index is I
modulo the process count, appends its rows to `results.partI.csv`
(resumable the same way), and once every process is done
(`multihost_utils.sync_global_devices`) process 0 merges the parts into
`results.csv` (sorted by triplet: a single-process run's order) and writes
the reports. A process that fails leaves the others waiting at that barrier
until JAX's coordination service gives up; rerun all of them to resume. A
single-process run in a directory with parts of an interrupted distributed
run merges them first.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

import jax
from jax.experimental import multihost_utils
from tqdm import tqdm

from srise_jax import ablation, benchmark, metrics, models, outputs, protocols
from srise_jax._helpers import first_line
from srise_jax.cli import common

_DEFAULT_NUM_TRIPLETS = 50

# The run directory's lock file (`outputs.lock_directory`): two runs appending
# to one results.csv would write every row twice.
_LOCK = ".lock"


def add_command(commands: argparse._SubParsersAction) -> None:
    """Add `benchmark` to the `srise-jax` parser."""
    bench = commands.add_parser(
        "benchmark", help="Deletion/Insertion of many explainers on many triplets (Table 1)",
        description="Run every method on the same triplets, score each map of every pair "
                    "the model accepts with the paper's Deletion and Insertion fractions "
                    "and the deletion/insertion AUCs, and write OUT/results.csv (one row "
                    "per triplet, pair, side, method), OUT/table.md (Table 1 with 95% "
                    "bootstrap intervals over distinct pairs), OUT/fills.png (each "
                    "method's mean and interval per metric fill), OUT/curves.png and "
                    "OUT/convergence.png; with several --metric-fill, one Table 1 per "
                    "fill after an overview of every fill's averages. Rerunning with the "
                    "same OUT resumes. "
                    "--triplet-batch spreads batches of triplets over the devices; "
                    "--distributed spreads the triplets over processes on several hosts.")
    common.add_model_options(bench)
    bench.add_argument("--data", required=True,
                       help="'sample' (the bundled protocol: nine triplets of the sample "
                            "photos, four of them self-occlusions) or a directory of "
                            "per-identity folders of photos (LFW layout), detected and "
                            "aligned here")
    bench.add_argument("--methods", default=",".join(benchmark.DEFAULT_METHODS),
                       help="comma-separated explainers, name or name@N (masks, samples "
                            "or steps) (default: %(default)s)")
    bench.add_argument("--metric-fill", default="mean",
                       help="comma-separated fills of the removed pixels of Deletion and "
                            f"Insertion, from {', '.join(metrics.METRIC_FILLS)}: "
                            "'mean' the image's mean colour (the paper's), 'blur' a strong "
                            "Gaussian blur, 'impute' ROAD's noisy linear imputation; each "
                            "map is scored under each, one Table 1 per fill; a rerun may "
                            "add fills (default: %(default)s)")
    bench.add_argument("--num-triplets", type=common.positive_int,
                       help=f"triplets drawn from DIR (default: {_DEFAULT_NUM_TRIPLETS}; "
                            "with --data sample: all nine)")
    bench.add_argument("--ablation", action="store_true",
                       help="instead of --methods, run S-RISE in each setting of the "
                            "ablation grid (srise_jax.ablation.GRID: the paper's preset "
                            "and one change at a time) and tabulate each setting")
    bench.add_argument("--settings",
                       help="with --ablation: comma-separated settings of the grid to run "
                            f"(default: all: {', '.join(ablation.GRID)})")
    bench.add_argument("--num-masks", type=common.positive_int, default=200,
                       help="masks per map in the ablation (default: %(default)s)")
    bench.add_argument("--seed", type=common.seed, default=0,
                       help="seed of the triplet sampler and the explainers "
                            "(default: %(default)s)")
    bench.add_argument("--threshold", type=common.similarity,
                       help="verification threshold on the cosine similarity (default: "
                            f"the model's: dlib {models.DLIB_THRESHOLD:.4g}, ArcFace "
                            f"and ONNX {models.ARCFACE_THRESHOLD:g})")
    bench.add_argument("--batch-size", type=common.positive_int, default=64,
                       help="images per forward pass of the explainers (default: %(default)s)")
    bench.add_argument("--metric-batch", type=common.positive_int, default=32,
                       help="images per forward pass of Deletion/Insertion (default: "
                            "%(default)s)")
    bench.add_argument("--metric-step", type=common.positive_int,
                       help="Deletion/Insertion coarse-search step (default: sqrt of the "
                            "pixel count; the fractions are exact either way)")
    bench.add_argument("--curve-points", type=common.integer_in(2, 100_001, "an integer >= 2"),
                       default=33, help="points of each AUC curve (default: %(default)s)")
    bench.add_argument("--explain-rejected", action="store_true",
                       help="also explain the pairs the model rejects (they are never "
                            "scored; by default their rows hold only the similarity)")
    bench.add_argument("--save-maps", type=common.integer_in(0, sys.maxsize, "an integer >= 0"),
                       default=2, help="keep the maps of the first K triplets in OUT/maps "
                                       "(default: %(default)s)")
    bench.add_argument("--paired-with", metavar="LABEL",
                       help="after each Table 1, every other method minus LABEL on the same "
                            "maps, with a paired bootstrap interval: whether a method beats "
                            "LABEL, which overlapping Table 1 intervals do not say; 'none' "
                            "for no paired tables (default: the default S-RISE at its "
                            "largest count among --methods, e.g. srise@500; with "
                            "--ablation: none)")
    bench.add_argument("--bootstrap", type=common.positive_int, default=10_000,
                       help="bootstrap resamples for the intervals (default: %(default)s)")
    bench.add_argument("--triplet-batch", type=common.positive_int, default=1, metavar="K",
                       help="explain and score K triplets at once, vmapped, the batch "
                            "sharded over all devices of the process (padded to a "
                            "multiple of the device count); with K <= devices the rows "
                            "equal K = 1's, with more a fraction can move by a pixel "
                            "from float rounding (default: %(default)s)")
    bench.add_argument("--distributed", action="store_true",
                       help="one of several processes (one per host, each started with "
                            "the same options) coordinated by jax.distributed: process I "
                            "takes triplets I, I+N, ..., writes OUT/results.partI.csv, and "
                            "process 0 merges the parts into OUT/results.csv and writes "
                            "the reports once all are done")
    bench.add_argument("--coordinator", metavar="HOST:PORT",
                       help="with --distributed: address of process 0's coordination "
                            "service (default: $JAX_COORDINATOR_ADDRESS)")
    bench.add_argument("--num-processes", type=common.positive_int, metavar="N",
                       help="with --distributed: number of processes (default: "
                            "$JAX_NUM_PROCESSES)")
    bench.add_argument("--process-id", type=common.integer_in(0, sys.maxsize,
                                                            "an integer >= 0"),
                       metavar="I", help="with --distributed: this process's index in "
                                         "[0, N) (default: $JAX_PROCESS_ID)")
    bench.add_argument("--out", required=True, type=Path, help="directory for the results")
    bench.set_defaults(command=run)

def _settings_grid(spec: str | None) -> dict:
    """The ablation settings --settings names (all of `ablation.GRID` by default)."""
    if spec is None:
        return dict(ablation.GRID)
    names = [name.strip() for name in spec.split(",") if name.strip()]
    unknown = [name for name in names if name not in ablation.GRID]
    if unknown or not names:
        raise common.UsageError(f"--settings: unknown setting(s) {', '.join(unknown) or '(none)'}; "
                                f"available: {', '.join(ablation.GRID)}")
    return {name: ablation.GRID[name] for name in names}


def _paired_with(spec: str | None, labels: list[str], default: str | None) -> str | None:
    """The reference of the paired tables: --paired-with, checked against the run's labels."""
    if spec is None:
        return default
    if spec.strip().lower() == "none":
        return None
    if spec.strip() not in labels:
        raise common.UsageError(f"--paired-with {spec}: not one of this run's methods "
                                f"({', '.join(labels)})")
    return spec.strip()


def run(args: argparse.Namespace) -> int:
    """`srise-jax benchmark`, holding the lock on --out (`_run_benchmark`) until it ends."""
    with contextlib.ExitStack() as held:
        return _run_benchmark(args, held)


def _run_benchmark(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    """The benchmark; the run directory's lock goes on `held`, which outlives it."""
    out = args.out
    if out.exists() and not out.is_dir():
        raise common.UsageError(f"{out}: exists and is not a directory")
    if args.ablation:
        settings = _settings_grid(args.settings)
    else:
        methods = benchmark.parse_methods(args.methods)
    metric_fills = benchmark.parse_metric_fills(args.metric_fill)
    paired_with = _paired_with(args.paired_with,
                               list(settings) if args.ablation else [m.label for m in methods],
                               None if args.ablation else benchmark.default_reference(methods))
    common.model_name(args)  # a wrong --model/--weights fails before anything runs
    triplets = _triplets(args)
    process, processes = _start_processes(args)
    # Before the model loads, so that a second run on this directory fails at
    # once. Each process of a distributed run holds its own lock; process 0's
    # is the one a single-process run takes.
    held.enter_context(outputs.lock_directory(
        out, name=_LOCK if process == 0 else f"{_LOCK}.{process}"))
    model = common.load_model(args)
    if args.ablation:
        methods = ablation.prepare_grid(model.embed_fn, settings, num_masks=args.num_masks,
                                        batch_size=args.batch_size)
    with common.warning_lines():  # lines of results.csv left out
        runner = benchmark.Runner(
            model, triplets, methods, out, data=args.data, threshold=args.threshold,
            seed=args.seed, batch_size=args.batch_size, metric_batch=args.metric_batch,
            metric_step=args.metric_step, curve_points=args.curve_points,
            explain_rejected=args.explain_rejected, save_maps=args.save_maps,
            triplet_batch=args.triplet_batch, process=process, processes=processes,
            metric_fills=metric_fills)
    pending = runner.pending
    where = f" (process {process} of {processes})" if processes > 1 else ""
    fills = (f" x {len(metric_fills)} metric fills ({', '.join(metric_fills)})"
             if len(metric_fills) > 1 else
             "" if metric_fills == ("mean",) else f" (metric fill {metric_fills[0]})")
    print(f"{model.label}, threshold {runner.threshold:g}: {len(triplets)} triplets x "
          f"{len(runner.methods.labels)} methods{fills}; {len(pending)} triplets to "
          f"run{where}", flush=True)
    # Warnings (triplets skipped) print once the bar is closed.
    with common.warning_lines(), tqdm(total=sum(len(p.blocks) for p in pending),
                                      desc="benchmark", unit="block", file=sys.stderr,
                                      disable=None) as bar:
        skipped = len(runner.run(progress=bar.update).skipped)
    if skipped:
        print(f"{skipped} triplet(s) skipped (no face found); rerun after fixing them "
              "to complete the table", file=sys.stderr)
    if processes > 1:
        multihost_utils.sync_global_devices("srise-jax benchmark: all parts written")
        if process != 0:
            print(f"wrote {runner.results}; process 0 merges the parts and writes the reports")
            return 1 if skipped else 0
        with common.warning_lines():
            benchmark.merge_parts(out)
    reports = benchmark.write_reports(out, model_label=model.label,
                                      labels=runner.methods.labels, fills=metric_fills,
                                      command=" ".join([common.PROG, *sys.argv[1:]]),
                                      paired_with=paired_with, num_resamples=args.bootstrap)
    print(benchmark.format_tables(reports.tables, paired=reports.paired))
    print(f"wrote {', '.join(str(path) for path in reports.paths)}")
    return 1 if skipped else 0


_DISTRIBUTED_ENV = {"coordinator": "JAX_COORDINATOR_ADDRESS",
                    "num_processes": "JAX_NUM_PROCESSES", "process_id": "JAX_PROCESS_ID"}


def _start_processes(args: argparse.Namespace) -> tuple[int, int]:
    """(this process's index, the process count): (0, 1) unless --distributed.

    With --distributed, joins the other processes through
    `jax.distributed.initialize`, which must come before any other use of
    JAX in the process (the model is loaded after it).
    """
    flags = {name: "--" + name.replace("_", "-") for name in _DISTRIBUTED_ENV}
    if not args.distributed:
        given = [flags[name] for name in flags if getattr(args, name) is not None]
        if given:
            raise common.UsageError(f"{', '.join(given)}: only with --distributed")
        return 0, 1
    parsers = {"coordinator": str, "num_processes": common.positive_int,
               "process_id": common.integer_in(0, sys.maxsize, "an integer >= 0")}
    values, missing = {}, []
    for name, variable in _DISTRIBUTED_ENV.items():
        value = getattr(args, name)
        if value is None and os.environ.get(variable):
            try:
                value = parsers[name](os.environ[variable])
            except argparse.ArgumentTypeError as err:
                raise common.UsageError(f"${variable}: {err}") from None
        if value is None:
            missing.append(f"{flags[name]} (or ${variable})")
        values[name] = value
    if missing:
        raise common.UsageError(f"--distributed needs {', '.join(missing)}")
    host, _, port = values["coordinator"].rpartition(":")
    if not host or not port.isdigit():
        raise common.UsageError(f"--coordinator {values['coordinator']}: expected HOST:PORT")
    if values["process_id"] >= values["num_processes"]:
        raise common.UsageError(f"--process-id {values['process_id']} is not below "
                                f"--num-processes {values['num_processes']}")
    try:
        jax.distributed.initialize(coordinator_address=values["coordinator"],
                                   num_processes=values["num_processes"],
                                   process_id=values["process_id"])
    except RuntimeError as err:
        raise common.UsageError(f"--distributed: {first_line(err)}") from None
    return jax.process_index(), jax.process_count()



def _triplets(args: argparse.Namespace) -> list[protocols.Triplet]:
    """The run's triplets: the bundled protocol or a seeded draw from DIR."""
    if args.data == benchmark.SAMPLE:
        triplets = protocols.sample_protocol()
        if args.num_triplets is not None:
            triplets = triplets[:args.num_triplets]
        return triplets
    if not Path(args.data).is_dir():
        raise common.UsageError(f"--data {args.data}: not a directory (or 'sample')")
    return benchmark.dataset_triplets(args.data, args.num_triplets or _DEFAULT_NUM_TRIPLETS,
                                      seed=args.seed)
