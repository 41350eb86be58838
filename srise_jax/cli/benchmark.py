"""`srise-jax benchmark` and `srise-jax figures`: the paper's section 4 from the command line.

    srise-jax benchmark --data sample|DIR [--model dlib|arcface --weights DIR]
        [--methods srise@500,gradient,...] [--num-triplets 50] [--triplet-batch K]
        --out DIR
    srise-jax benchmark --ablation --data DIR --out DIR
    srise-jax benchmark --distributed --coordinator HOST:PORT --num-processes N
        --process-id I --data DIR --out DIR        (one command per process)
    srise-jax figures [--out DIR]

A benchmark directory holds `run.json` (what was asked), `triplets.csv`,
`results.csv` (one row per triplet, pair, side and method, appended triplet by
triplet), `table.md` (Table 1), `curves.png`, `convergence.png` and
`maps/tripletNNN.npz` for the first triplets. A rerun with the same settings
skips the (triplet, method) rows already written, so an interrupted run
loses at most the triplet in flight; new methods are added to finished
triplets. A run holds a lock on the directory (`.lock`, naming its pid, host
and start time): a second run on it fails at once. Lines a rerun leaves out
of results.csv (a cut block, duplicates) are named on stderr; finished rows
are kept.

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
import collections
import contextlib
import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

import srise_jax
from srise_jax import (ablation, align, benchmark, images, metrics, models,
                       outputs, protocols, viz)
from srise_jax.cli import common

COLUMNS = ("triplet", "pair", "side", "image", "reference", "method", "iterations",
           "similarity", "match", "deletion", "insertion", "deletion_reason",
           "insertion_reason", "deletion_auc", "insertion_auc", "seconds",
           "deletion_curve", "insertion_curve")


# What results.csv held before the reason columns: its undefined fractions
# can read 1.0 (Deletion that never flips), so its rows cannot be resumed.
_COLUMNS_WITHOUT_REASONS = tuple(c for c in COLUMNS if not c.endswith("_reason"))


# Settings that must agree for a rerun to add to a directory's results.
_RUN_KEYS = ("model", "weights", "data", "num_triplets", "seed", "threshold", "size",
             "metric_step", "curve_points", "ablation")


_SAMPLE = "sample"


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
                    "per triplet, pair, side, method), OUT/table.md (Table 1 with 95%% "
                    "bootstrap intervals over distinct pairs), OUT/curves.png and "
                    "OUT/convergence.png. Rerunning with the same OUT resumes. "
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
    bench.add_argument("--seed", type=common.seed_value, default=0,
                       help="seed of the triplet sampler and the explainers "
                            "(default: %(default)s)")
    bench.add_argument("--threshold", type=common.threshold_value,
                       help="verification threshold on the cosine similarity (default: "
                            f"the model's: dlib {models.DLIB_THRESHOLD:.4g}, ArcFace "
                            f"{common.ARCFACE_THRESHOLD:g})")
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
    name = common.model_name(args)
    size, template = common.FRAMES[name]
    triplets = _triplets(args)
    process, processes = _start_processes(args)
    # Before the model loads, so that a second run on this directory fails at
    # once. Each process of a distributed run holds its own lock; process 0's
    # is the one a single-process run takes.
    held.enter_context(outputs.lock_directory(
        out, name=_LOCK if process == 0 else f"{_LOCK}.{process}"))
    model = common.load_model(args, name)
    threshold = model.threshold if args.threshold is None else args.threshold
    step = args.metric_step or math.isqrt(size * size)
    run = {"model": model.settings, "weights": str(args.weights) if args.weights else None,
           "data": args.data, "num_triplets": len(triplets), "seed": args.seed,
           "threshold": threshold, "size": size, "metric_step": step,
           "curve_points": args.curve_points,
           "ablation": {"num_masks": args.num_masks} if args.ablation else None}
    out.mkdir(parents=True, exist_ok=True)
    _start_run(out, run, triplets, write=process == 0)
    results = out / "results.csv"
    if processes == 1:
        _merge_parts(out)
        mine = results
        done = _finished(results)
    else:
        # Read-only views of the merged rows and the other parts (a changed
        # process count can move a finished triplet to another process).
        mine = out / f"results.part{process}.csv"
        done = _finished(mine)
        for path in [results, *_part_files(out)]:
            if path != mine:
                done |= set(_keys(_complete_rows(path).kept))

    score = benchmark.make_score_fn(model.embed_fn, step=step, batch_size=args.metric_batch,
                                    num_points=args.curve_points)
    if args.ablation:
        parts = ablation.make_explain_fns(model.embed_fn, settings,
                                          num_masks=args.num_masks, batch_size=args.batch_size)
        labels = tuple(settings)
        iterations = {label: args.num_masks for label in labels}
    else:
        parts = benchmark.make_explain_fns(model.embed_fn, methods,
                                           feature_fns=model.feature_fns,
                                           batch_size=args.batch_size)
        labels = tuple(m.label for m in methods)
        iterations = {m.label: m.iterations or "" for m in methods}
    batched = _Batched.make(parts, score, args.triplet_batch)

    root = jax.random.key(args.seed)
    pending = [(t, [label for label in labels if (t, label) not in done])
               for t in range(process, len(triplets), processes)]
    pending = [(t, todo) for t, todo in pending if todo]
    where = f" (process {process} of {processes})" if processes > 1 else ""
    print(f"{model.label}, threshold {threshold:g}: {len(triplets)} triplets x "
          f"{len(labels)} methods; {len(pending)} triplets to run{where}", flush=True)
    faces = _FaceCache(args.data, size, template)
    skipped = 0
    with tqdm(total=sum(len(todo) for _, todo in pending), desc="benchmark", unit="method",
              file=sys.stderr, disable=None) as bar:
        for batch, todo in _batches(pending, args.triplet_batch):
            loaded = []
            for t in batch:
                try:
                    loaded.append((t, tuple(faces.get(entry) for entry in triplets[t])))
                except (align.NoFaceError, images.ImageError) as err:
                    print(f"{common.PROG}: warning: triplet {t} skipped: "
                          f"{common.first_line(err)}", file=sys.stderr)
                    skipped += 1
                    bar.update(len(todo))
            if not loaded:
                continue
            done_batch = _run_batch(model, parts, batched, loaded, triplets, todo,
                                    iterations=iterations, threshold=threshold, key=root,
                                    explain_rejected=args.explain_rejected)
            for (t, triplet_faces), (rows, maps) in zip(loaded, done_batch):
                _append_rows(mine, rows)
                if t < args.save_maps:
                    _save_maps(out / "maps" / f"triplet{t:03d}.npz", triplet_faces, maps)
                bar.update(len(todo))
    if skipped:
        print(f"{skipped} triplet(s) skipped (no face found); rerun after fixing them "
              "to complete the table", file=sys.stderr)
    if processes > 1:
        multihost_utils.sync_global_devices("srise-jax benchmark: all parts written")
        if process != 0:
            print(f"wrote {mine}; process 0 merges the parts and writes the reports")
            return 1 if skipped else 0
        _merge_parts(out)
    written = _write_reports(out, run, labels, model, args)
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 1 if skipped else 0


# The environment variables --distributed reads when a flag is not given.
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
        raise common.UsageError(f"--distributed: {common.first_line(err)}") from None
    return jax.process_index(), jax.process_count()


def _batches(pending: Sequence[tuple[int, list[str]]], size: int):
    """Runs of at most `size` consecutive pending triplets that need the same methods."""
    batch: list[int] = []
    todo = None
    for t, methods in pending:
        if batch and (methods != todo or len(batch) == size):
            yield batch, todo
            batch = []
        batch.append(t)
        todo = methods
    if batch:
        yield batch, todo


def _triplets(args: argparse.Namespace) -> list[protocols.Triplet]:
    """The run's triplets: the bundled protocol or a seeded draw from DIR."""
    if args.data == _SAMPLE:
        triplets = protocols.sample_protocol()
        if args.num_triplets is not None:
            triplets = triplets[:args.num_triplets]
        return triplets
    root = Path(args.data)
    if not root.is_dir():
        raise common.UsageError(f"--data {args.data}: not a directory (or 'sample')")
    identities = protocols.read_identity_folders(root)
    count = args.num_triplets or _DEFAULT_NUM_TRIPLETS
    return [protocols.Triplet(*(str(Path(p).relative_to(root)) for p in triplet))
            for triplet in protocols.sample_triplets(identities, count, seed=args.seed)]


class _FaceCache:
    """Aligned crops of the run's images, each detected and aligned once."""

    def __init__(self, data_spec: str, size: int, template: np.ndarray):
        self.root = None if data_spec == _SAMPLE else Path(data_spec)
        self.size, self.template = size, template
        self.faces: dict[str, np.ndarray] = {}

    def get(self, entry: str) -> np.ndarray:
        if entry not in self.faces:
            if self.root is None:
                face = protocols.load_protocol_face(entry, size=self.size,
                                                    template=self.template)
            else:
                face = align.preprocess(self.root / entry, size=self.size,
                                        template=self.template)
            self.faces[entry] = face
        return self.faces[entry]


def _start_run(out: Path, run: dict, triplets: list[protocols.Triplet], *,
               write: bool = True) -> None:
    """Write run.json and triplets.csv, or check a resumed run asks the same.

    With `write` False (processes other than 0 of a distributed run) only the
    check is made; process 0 writes the files.
    """
    path = out / "run.json"
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a benchmark run file ({err})") from None
        for key in _RUN_KEYS:
            if before.get(key) != json.loads(json.dumps(run[key])):
                raise common.UsageError(
                    f"{out} holds a run with {key} = {json.dumps(before.get(key))}, "
                    f"this one asks for {json.dumps(run[key])}: use another --out")
        return
    if not write:
        return
    listing = io.StringIO()
    writer = csv.writer(listing, lineterminator="\n")
    writer.writerow(("triplet", "probe", "mate", "nonmate"))
    writer.writerows((t, *triplet) for t, triplet in enumerate(triplets))
    with viz.atomic_file(out / "triplets.csv") as file:
        file.write(listing.getvalue().encode())
    common.write_json(path, {**run, "srise_jax_version": srise_jax.__version__})


class _Rows(NamedTuple):
    """A results file's rows that can be kept, and what was left out."""

    kept: list[dict]
    dropped: list[str]  # one phrase per kind of line left out; empty if none


def _complete_rows(results: Path) -> _Rows:
    """The rows of a results file's complete (triplet, method) blocks, each job once.

    A run killed while appending can leave a triplet's block cut short: a
    last line without its newline, and methods with fewer rows than jobs;
    those rows are left out (to be run again). Two runs appending to one
    file at once (possible before runs locked their directory) wrote every
    row twice and the header again: each job's first row is kept, so the
    finished rows survive.
    """
    if not results.exists():
        return _Rows([], [])
    text = results.read_text()
    body = text[:text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(body))
    if reader.fieldnames is not None and tuple(reader.fieldnames) != COLUMNS:
        raise ValueError(_columns_error(results, reader.fieldnames))
    rows, seen = [], set()
    headers = duplicates = 0
    for row in reader:
        if tuple(row.values()) == COLUMNS:
            headers += 1
            continue
        if None in row or None in row.values() or not row["triplet"].isdigit():
            raise ValueError(f"{results}: line {reader.line_num} is not a row of "
                             f"{len(COLUMNS)} columns with a triplet number")
        job = (row["triplet"], row["pair"], row["side"], row["method"])
        if job in seen:
            duplicates += 1
            continue
        seen.add(job)
        rows.append(row)
    counts = collections.Counter(_keys(rows))
    jobs = len(benchmark.PAIRS) * len(benchmark.SIDES)
    kept = [row for row, key in zip(rows, _keys(rows)) if counts[key] == jobs]
    dropped = []
    if duplicates:
        dropped.append(f"{duplicates} duplicate row(s) (copies of kept rows: two runs "
                       "wrote here at once)")
    if headers:
        dropped.append(f"{headers} repeated header line(s)")
    unfinished = sorted(key for key, count in counts.items() if count != jobs)
    if unfinished:
        named = ", ".join(f"triplet {t} {method}" for t, method in unfinished[:3])
        more = f" and {len(unfinished) - 3} more" if len(unfinished) > 3 else ""
        dropped.append(f"the {len(rows) - len(kept)} row(s) of {len(unfinished)} "
                       f"unfinished (triplet, method) block(s) ({named}{more}), to run again")
    if body != text:
        dropped.append("a last line cut short")
    return _Rows(kept, dropped)


def _keys(rows: Sequence[dict]) -> list[tuple[int, str]]:
    """(triplet, method) of each row."""
    return [(int(row["triplet"]), row["method"]) for row in rows]


def _report_dropped(results: Path, found: _Rows) -> None:
    """Say on stderr, in one line, which lines of a results file were left out."""
    if found.dropped:
        print(f"{common.PROG}: warning: {results}: left out {'; '.join(found.dropped)}; "
              f"kept {len(found.kept)} row(s)", file=sys.stderr)


def _finished(results: Path) -> set[tuple[int, str]]:
    """(triplet, method) pairs with all their rows in a results file.

    The lines `_complete_rows` leaves out are removed (the file is rewritten
    atomically, and stderr says what went) and the unfinished blocks run
    again, so no row is ever written twice and no finished row is lost.
    """
    found = _complete_rows(results)
    if found.dropped:
        _report_dropped(results, found)
        _write_rows(results, found.kept)
    return set(_keys(found.kept))


def _write_rows(results: Path, rows: Sequence[dict]) -> None:
    """Replace a results file by these rows, atomically."""
    block = io.StringIO()
    writer = csv.DictWriter(block, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with viz.atomic_file(results) as file:
        file.write(block.getvalue().encode())


def _part_files(out: Path) -> list[Path]:
    """The results.partI.csv of a distributed run, by process index."""
    parts = [p for p in out.glob("results.part*.csv")
             if p.name[len("results.part"):-len(".csv")].isdigit()]
    return sorted(parts, key=lambda p: int(p.name[len("results.part"):-len(".csv")]))


def _merge_parts(out: Path) -> None:
    """Fold the processes' results.partI.csv into results.csv, then remove them.

    Rows are sorted by triplet; a stable sort keeps each triplet's rows in
    the order they were written, which is a single-process run's order. A
    (triplet, pair, side, method) row found twice is kept once.
    """
    parts = _part_files(out)
    if not parts:
        return
    merged, seen = [], set()
    for path in [out / "results.csv", *parts]:
        found = _complete_rows(path)
        _report_dropped(path, found)
        for row in found.kept:
            job = (int(row["triplet"]), row["pair"], row["side"], row["method"])
            if job not in seen:
                seen.add(job)
                merged.append(row)
    merged.sort(key=lambda row: int(row["triplet"]))
    _write_rows(out / "results.csv", merged)
    for path in parts:
        path.unlink()


class _Batched(NamedTuple):
    """The explain parts and the score as functions of a batch of triplets.

    Every argument but params and the threshold is stacked along a leading
    triplet axis, and so is every output.
    """

    explain: tuple[Callable, ...]  # per part: (params, images, references, keys)
    score: Callable  # (params, images, references, saliency, threshold)

    @classmethod
    def make(cls, parts, score: Callable, size: int) -> _Batched:
        """Batches of one: the parts as they are. Larger: vmapped and sharded."""
        explain_args, score_args = (False, True, True, True), (False, True, True, True, False)
        if size == 1:
            return cls(tuple(_one_at_a_time(part.fn, explain_args) for part in parts),
                       _one_at_a_time(score, score_args))
        mesh = benchmark.triplet_mesh(jax.local_devices())
        devices = mesh.shape[benchmark.TRIPLET_AXIS]
        multiple = -(-size // devices) * devices
        explain = tuple(benchmark.shard_over_triplets(part.fn, mesh, batched=explain_args,
                                                      multiple=multiple)
                        for part in parts)
        return cls(explain, benchmark.shard_over_triplets(score, mesh, batched=score_args,
                                                          multiple=multiple))


def _one_at_a_time(fn: Callable, batched: Sequence[bool]) -> Callable:
    """`fn` called as `shard_over_triplets` would call it, on a batch of one.

    The arguments flagged in `batched` are unstacked and the outputs stacked,
    so a default run computes exactly what it did before batches existed.
    """
    def call(*args):
        out = fn(*(a[0] if b else a for a, b in zip(args, batched)))
        return jax.tree.map(lambda x: x[None], out)
    return call


def _run_batch(model, parts, batched: _Batched, loaded, triplets, todo: Sequence[str], *,
               iterations: dict, threshold: float, key: jax.Array,
               explain_rejected: bool) -> list[tuple[list, dict]]:
    """Explain and score a batch of triplets for the methods in `todo`.

    A pair the model rejects is not scored (see `srise_jax.benchmark`), so
    its maps are computed only with `explain_rejected`; its rows are written
    either way, with the similarity and empty metrics. In a batch, a job
    runs for all triplets if any needs it, and only the rows and maps a
    one-triplet run would write are kept.

    Args:
      loaded: (triplet index, (probe, mate, nonmate) faces) of each triplet.

    Returns:
      Per triplet: its rows (in a one-triplet run's order) and its maps.
    """
    indices = [t for t, _ in loaded]
    similarity = [benchmark.triplet_similarities(model.embed_fn, model.params, *faces)
                  for _, faces in loaded]
    needed = [(part, fn) for part, fn in zip(parts, batched.explain)
              if set(part.labels) & set(todo)]
    rows: list[list] = [[] for _ in loaded]
    maps: list[dict] = [{} for _ in loaded]
    for pair in benchmark.PAIRS:
        match = [sims[pair] >= threshold for sims in similarity]
        explained = [m or explain_rejected for m in match]
        for side in benchmark.SIDES:
            # (image, reference) faces and names of each triplet's job.
            jobs = []
            for t, (probe, mate, nonmate) in loaded:
                entries = triplets[t]
                other = (mate, entries.mate) if pair == "mate" else (nonmate, entries.nonmate)
                own = (probe, entries.probe)
                jobs.append((own, other) if side == "probe" else (other, own))
            images = np.stack([image for (image, _), _ in jobs])
            references = np.stack([reference for _, (reference, _) in jobs])
            keys = jnp.stack([benchmark.job_key(key, t, pair, side) for t in indices])
            results = {}  # label -> (maps, seconds per triplet, scores or None)
            for part, explain in (needed if any(explained) else ()):
                start = time.perf_counter()
                part_maps = jax.block_until_ready(
                    explain(model.params, images, references, keys))
                seconds = (time.perf_counter() - start) / len(loaded)
                for label in part.labels:
                    if label not in todo:
                        continue
                    saliency = part_maps[label]
                    scored = (batched.score(model.params, images, references, saliency,
                                            threshold) if any(match) else None)
                    results[label] = (np.asarray(saliency), seconds,
                                      None if scored is None else
                                      jax.tree.map(np.asarray, scored))
            for i, (t, _) in enumerate(loaded):
                names = (jobs[i][0][1], jobs[i][1][1])
                if not explained[i]:
                    rows[i] += [_row(t, pair, side, names, label, iterations[label],
                                     similarity[i][pair], False, None, None)
                                for label in todo]
                    continue
                for label, (saliency, seconds, scored) in results.items():
                    maps[i][f"{label}/{pair}/{side}"] = saliency[i]
                    mine = ({name: value[i] for name, value in scored.items()}
                            if match[i] else None)
                    rows[i].append(_row(t, pair, side, names, label, iterations[label],
                                        similarity[i][pair], match[i], seconds, mine))
    return list(zip(rows, maps))


def _columns_error(results: Path, columns: Sequence[str]) -> str:
    """Why a results file with these columns cannot be resumed, in one line."""
    if tuple(columns) == _COLUMNS_WITHOUT_REASONS:
        return (f"{results}: written by an older srise-jax, without the deletion_reason "
                f"and insertion_reason columns (a Deletion that never flips reads 1.0 "
                f"there, not n/a), so its rows cannot be mixed with new ones: use another "
                f"--out, or delete {results.name} to compute its rows again")
    return f"{results}: unexpected columns {list(columns)}; expected {list(COLUMNS)}"


def _row(t, pair, side, names, label, iterations, similarity, match, seconds, scored) -> dict:
    """One results.csv row; `scored` None for a pair the model rejects (not scored)."""
    row = {"triplet": t, "pair": pair, "side": side, "image": names[0],
           "reference": names[1], "method": label, "iterations": iterations,
           "similarity": f"{similarity:.6f}", "match": int(match),
           "seconds": "" if seconds is None else f"{seconds:.3f}"}
    for metric in ("deletion", "insertion", "deletion_auc", "insertion_auc"):
        value = math.nan if scored is None else float(scored[metric])
        row[metric] = "" if math.isnan(value) else f"{value:.6f}"
    for metric in ("deletion", "insertion"):
        row[f"{metric}_reason"] = (benchmark.REJECTED if scored is None
                                   else metrics.reason_name(scored[f"{metric}_reason"]) or "")
    for metric in ("deletion_curve", "insertion_curve"):
        row[metric] = ("" if scored is None else
                       " ".join(f"{v:.5f}" for v in np.asarray(scored[metric])))
    return row


def _append_rows(results: Path, rows: list[dict]) -> None:
    """Append one triplet's rows in a single write, then flush them to disk."""
    block = io.StringIO()
    writer = csv.DictWriter(block, fieldnames=COLUMNS, lineterminator="\n")
    if not results.exists() or results.stat().st_size == 0:
        writer.writeheader()
    writer.writerows(rows)
    with open(results, "ab") as file:
        file.write(block.getvalue().encode())
        file.flush()
        os.fsync(file.fileno())


def _save_maps(path: Path, faces, maps: dict) -> None:
    """Keep a triplet's faces and maps (merged with the ones of earlier runs)."""
    path.parent.mkdir(exist_ok=True)
    merged = {}
    if path.exists():
        with np.load(path) as old:
            merged = {k: old[k] for k in old.files}
    merged.update({"probe": faces[0], "mate": faces[1], "nonmate": faces[2]})
    merged.update({k: v.astype(np.float32) for k, v in maps.items()})
    with viz.atomic_file(path) as file:
        np.savez_compressed(file, **merged)


def _read_rows(results: Path) -> list[dict]:
    if not results.exists():
        return []
    with open(results, newline="") as file:
        return list(csv.DictReader(file))


def _write_reports(out: Path, run: dict, labels: Sequence[str], model, args) -> list[Path]:
    """table.md, curves.png and (with several S-RISE counts) convergence.png."""
    rows = _read_rows(out / "results.csv")
    present = {row["method"] for row in rows}
    order = [label for label in labels if label in present]
    order += sorted(present - set(order))
    table = benchmark.summarize(rows, methods=order, num_resamples=args.bootstrap,
                                seed=args.seed)
    title = (f"{model.label}, threshold {run['threshold']:g}, data {run['data']}, "
             f"{run['num_triplets']} triplets")
    text = (f"# Deletion / Insertion benchmark\n\n{title}.\n\n"
            f"Command: `{' '.join([common.PROG, *sys.argv[1:]])}`\n\n"
            + benchmark.format_table(table))
    written = [out / "table.md", out / "curves.png"]
    with viz.atomic_file(written[0]) as file:
        file.write(text.encode())
    print(benchmark.format_table(table))
    curves = {}
    for row in rows:
        if row["deletion_curve"]:
            entry = curves.setdefault(row["method"], {"deletion": [], "insertion": []})
            for mode in ("deletion", "insertion"):
                entry[mode].append([float(v) for v in row[f"{mode}_curve"].split()])
    viz.plot_mean_curves({m: curves[m] for m in order if m in curves}, path=written[1],
                         title=f"Deletion / insertion curves, mean over scored maps: {title}")
    srise_labels = [label for label in order if label.split("@")[0] == "srise"]
    examples = sorted((out / "maps").glob("triplet*.npz")) if (out / "maps").is_dir() else []
    if len(srise_labels) > 1 and examples:
        figure_rows = {}
        for path in examples:
            with np.load(path) as saved:
                keys = [f"{label}/mate/probe" for label in srise_labels]
                if all(k in saved.files for k in keys):
                    counts = {label.split("@")[1] if "@" in label else "500": saved[k]
                              for label, k in zip(srise_labels, keys)}
                    figure_rows[f"{path.stem}: probe vs mate"] = (
                        saved["probe"], {f"N = {n}": m for n, m in counts.items()})
        if figure_rows:
            written.append(out / "convergence.png")
            viz.plot_convergence(figure_rows, path=written[-1],
                                 title=f"S-RISE after N masks (Fig. 6), {model.label}")
    return written

