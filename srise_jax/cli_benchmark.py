"""`srise-jax benchmark` and `srise-jax figures`: the paper's section 4 from the command line.

    srise-jax benchmark --data sample|DIR [--model dlib|arcface --weights DIR]
        [--methods srise@500,gradient,...] [--num-triplets 50] --out DIR
    srise-jax benchmark --ablation --data DIR --out DIR
    srise-jax figures [--out DIR]

A benchmark directory holds `run.json` (what was asked), `triplets.csv`,
`results.csv` (one row per triplet, pair, side and method, appended triplet by
triplet), `table.md` (Table 1), `curves.png`, `convergence.png` and
`maps/tripletNNN.npz` for the first triplets. A rerun with the same settings
skips the (triplet, method) rows already written, so an interrupted run
loses at most the triplet in flight; new methods are added to finished
triplets.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

import srise_jax
from srise_jax import ablation, align, benchmark, cli, data, images, models, protocols, viz
from srise_jax.explainers import perturbation

COLUMNS = ("triplet", "pair", "side", "image", "reference", "method", "iterations",
           "similarity", "match", "deletion", "insertion", "deletion_auc",
           "insertion_auc", "seconds", "deletion_curve", "insertion_curve")
# Settings that must agree for a rerun to add to a directory's results.
_RUN_KEYS = ("model", "weights", "data", "num_triplets", "seed", "threshold", "size",
             "metric_step", "curve_points", "ablation")
_SAMPLE = "sample"
_DEFAULT_NUM_TRIPLETS = 50


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add `benchmark` and `figures` to the `srise-jax` parser."""
    bench = commands.add_parser(
        "benchmark", help="Deletion/Insertion of many explainers on many triplets (Table 1)",
        description="Run every method on the same triplets, score each map of every pair "
                    "the model accepts with the paper's Deletion and Insertion fractions "
                    "and the deletion/insertion AUCs, and write OUT/results.csv (one row "
                    "per triplet, pair, side, method), OUT/table.md (Table 1 with 95%% "
                    "bootstrap intervals over triplets), OUT/curves.png and "
                    "OUT/convergence.png. Rerunning with the same OUT resumes.")
    cli._add_model_options(bench)
    bench.add_argument("--data", required=True,
                       help="'sample' (the bundled protocol: nine triplets of the sample "
                            "photos, four of them self-occlusions) or a directory of "
                            "per-identity folders of photos (LFW layout), detected and "
                            "aligned here")
    bench.add_argument("--methods", default=",".join(benchmark.DEFAULT_METHODS),
                       help="comma-separated explainers, name or name@N (masks, samples "
                            "or steps) (default: %(default)s)")
    bench.add_argument("--num-triplets", type=cli._positive_int,
                       help=f"triplets drawn from DIR (default: {_DEFAULT_NUM_TRIPLETS}; "
                            "with --data sample: all nine)")
    bench.add_argument("--ablation", action="store_true",
                       help="instead of --methods, run S-RISE in each setting of the "
                            "ablation grid (srise_jax.ablation.GRID: the paper's preset "
                            "and one change at a time) and tabulate each setting")
    bench.add_argument("--num-masks", type=cli._positive_int, default=200,
                       help="masks per map in the ablation (default: %(default)s)")
    bench.add_argument("--seed", type=cli._seed, default=0,
                       help="seed of the triplet sampler and the explainers "
                            "(default: %(default)s)")
    bench.add_argument("--threshold", type=cli._similarity,
                       help="verification threshold on the cosine similarity (default: "
                            f"the model's: dlib {models.DLIB_THRESHOLD:.4g}, ArcFace "
                            f"{cli._ARCFACE_THRESHOLD:g})")
    bench.add_argument("--batch-size", type=cli._positive_int, default=64,
                       help="images per forward pass of the explainers (default: %(default)s)")
    bench.add_argument("--metric-batch", type=cli._positive_int, default=32,
                       help="images per forward pass of Deletion/Insertion (default: "
                            "%(default)s)")
    bench.add_argument("--metric-step", type=cli._positive_int,
                       help="Deletion/Insertion coarse-search step (default: sqrt of the "
                            "pixel count; the fractions are exact either way)")
    bench.add_argument("--curve-points", type=cli._integer_in(2, 100_001, "an integer >= 2"),
                       default=33, help="points of each AUC curve (default: %(default)s)")
    bench.add_argument("--explain-rejected", action="store_true",
                       help="also explain the pairs the model rejects (they are never "
                            "scored; by default their rows hold only the similarity)")
    bench.add_argument("--save-maps", type=cli._integer_in(0, sys.maxsize, "an integer >= 0"),
                       default=2, help="keep the maps of the first K triplets in OUT/maps "
                                       "(default: %(default)s)")
    bench.add_argument("--bootstrap", type=cli._positive_int, default=10_000,
                       help="bootstrap resamples for the intervals (default: %(default)s)")
    bench.add_argument("--out", required=True, type=Path, help="directory for the results")
    bench.set_defaults(command=_benchmark)

    figures = commands.add_parser(
        "figures", help="the paper's Figures 3-6 on the sample photos",
        description="Regenerate the paper's figures on the bundled sample photos with a "
                    "real model: fig3 (a verification triplet), fig4 (the hardest "
                    "non-match pair of the sample protocol), fig5 (self-occlusion: mask "
                    "and sunglasses), fig6 (S-RISE after 10, 100, 500 and 1000 masks).")
    cli._add_model_options(figures)
    figures.add_argument("--num-masks", type=cli._positive_int, default=500,
                         help="masks per pair for figs 3-5 (default: %(default)s)")
    figures.add_argument("--batch-size", type=cli._positive_int, default=64,
                         help="images per forward pass (default: %(default)s)")
    figures.add_argument("--seed", type=cli._seed, default=0,
                         help="random seed (default: %(default)s)")
    figures.add_argument("--convergence", type=_counts,
                         default=benchmark.PAPER_ITERATIONS,
                         help="mask counts of fig6, comma-separated (default: "
                              "10,100,500,1000)")
    figures.add_argument("--out", type=Path, default=Path("srise-figures"),
                         help="directory for fig3.png ... fig6.png (default: %(default)s)")
    figures.set_defaults(command=_figures)


def _counts(text: str) -> tuple[int, ...]:
    """An argparse type: increasing positive integers "10,100,500"."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or counts[0] < 1 or any(b <= a for a, b in zip(counts, counts[1:])):
        raise argparse.ArgumentTypeError(
            f"must be increasing positive integers separated by commas, got {text!r}")
    return counts


# ----------------------------------------------------------------------------
# srise-jax benchmark
# ----------------------------------------------------------------------------

def _benchmark(args: argparse.Namespace) -> int:
    out = args.out
    if out.exists() and not out.is_dir():
        raise cli._UsageError(f"{out}: exists and is not a directory")
    if not args.ablation:
        methods = benchmark.parse_methods(args.methods)
    name = cli._model_name(args)
    size, template = cli._FRAMES[name]
    triplets = _triplets(args)
    model = cli._load_model(args, name)
    threshold = model.threshold if args.threshold is None else args.threshold
    step = args.metric_step or math.isqrt(size * size)
    run = {"model": model.settings, "weights": str(args.weights) if args.weights else None,
           "data": args.data, "num_triplets": len(triplets), "seed": args.seed,
           "threshold": threshold, "size": size, "metric_step": step,
           "curve_points": args.curve_points,
           "ablation": {"num_masks": args.num_masks} if args.ablation else None}
    out.mkdir(parents=True, exist_ok=True)
    _start_run(out, run, triplets)
    results = out / "results.csv"
    done = _finished(results)

    score = benchmark.make_score_fn(model.embed_fn, step=step, batch_size=args.metric_batch,
                                    num_points=args.curve_points)
    if args.ablation:
        parts = ablation.make_explain_fns(model.embed_fn, ablation.GRID,
                                          num_masks=args.num_masks, batch_size=args.batch_size)
        labels = tuple(ablation.GRID)
        iterations = {label: args.num_masks for label in labels}
    else:
        parts = benchmark.make_explain_fns(model.embed_fn, methods,
                                           feature_fns=model.feature_fns,
                                           batch_size=args.batch_size)
        labels = tuple(m.label for m in methods)
        iterations = {m.label: m.iterations or "" for m in methods}

    root = jax.random.key(args.seed)
    pending = [(t, [label for label in labels if (t, label) not in done])
               for t in range(len(triplets))]
    pending = [(t, todo) for t, todo in pending if todo]
    print(f"{model.label}, threshold {threshold:g}: {len(triplets)} triplets x "
          f"{len(labels)} methods; {len(pending)} triplets to run", flush=True)
    faces = _FaceCache(args.data, size, template)
    skipped = 0
    with tqdm(total=sum(len(todo) for _, todo in pending), desc="benchmark", unit="method",
              file=sys.stderr, disable=None) as bar:
        for t, todo in pending:
            try:
                probe, mate, nonmate = (faces.get(entry) for entry in triplets[t])
            except (align.NoFaceError, images.ImageError) as err:
                print(f"{cli.PROG}: warning: triplet {t} skipped: {cli._first_line(err)}",
                      file=sys.stderr)
                skipped += 1
                bar.update(len(todo))
                continue
            rows, maps = _run_triplet(
                model, parts, score, t, triplets[t], (probe, mate, nonmate), todo,
                iterations=iterations, threshold=threshold, key=root,
                explain_rejected=args.explain_rejected, bar=bar)
            _append_rows(results, rows)
            if t < args.save_maps:
                _save_maps(out / "maps" / f"triplet{t:03d}.npz", (probe, mate, nonmate), maps)
    written = _write_reports(out, run, labels, model, args)
    if skipped:
        print(f"{skipped} triplet(s) skipped (no face found); rerun after fixing them "
              "to complete the table", file=sys.stderr)
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 1 if skipped else 0


def _triplets(args: argparse.Namespace) -> list[protocols.Triplet]:
    """The run's triplets: the bundled protocol or a seeded draw from DIR."""
    if args.data == _SAMPLE:
        triplets = protocols.sample_protocol()
        if args.num_triplets is not None:
            triplets = triplets[:args.num_triplets]
        return triplets
    root = Path(args.data)
    if not root.is_dir():
        raise cli._UsageError(f"--data {args.data}: not a directory (or 'sample')")
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


def _start_run(out: Path, run: dict, triplets: list[protocols.Triplet]) -> None:
    """Write run.json and triplets.csv, or check a resumed run asks the same."""
    path = out / "run.json"
    if path.exists():
        try:
            before = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not a benchmark run file ({err})") from None
        for key in _RUN_KEYS:
            if before.get(key) != json.loads(json.dumps(run[key])):
                raise cli._UsageError(
                    f"{out} holds a run with {key} = {json.dumps(before.get(key))}, "
                    f"this one asks for {json.dumps(run[key])}: use another --out")
        return
    listing = io.StringIO()
    writer = csv.writer(listing, lineterminator="\n")
    writer.writerow(("triplet", "probe", "mate", "nonmate"))
    writer.writerows((t, *triplet) for t, triplet in enumerate(triplets))
    with viz.atomic_file(out / "triplets.csv") as file:
        file.write(listing.getvalue().encode())
    cli._write_json(path, {**run, "srise_jax_version": srise_jax.__version__})


def _finished(results: Path) -> set[tuple[int, str]]:
    """(triplet, method) pairs with all their rows in results.csv.

    A run killed while appending can leave a triplet's block cut short: a
    last line without its newline, and methods with fewer rows than jobs.
    Those rows are dropped (the file is rewritten atomically) and run again,
    so no row is ever written twice.
    """
    if not results.exists():
        return set()
    text = results.read_text()
    reader = csv.DictReader(io.StringIO(text[:text.rfind("\n") + 1]))
    if reader.fieldnames is not None and tuple(reader.fieldnames) != COLUMNS:
        raise ValueError(f"{results}: unexpected columns {reader.fieldnames}; "
                         f"expected {list(COLUMNS)}")
    rows = list(reader)
    counts: dict[tuple[int, str], int] = {}
    for row in rows:
        key = (int(row["triplet"]), row["method"])
        counts[key] = counts.get(key, 0) + 1
    jobs = len(benchmark.PAIRS) * len(benchmark.SIDES)
    done = {key for key, count in counts.items() if count == jobs}
    if not text.endswith("\n") or len(done) * jobs != len(rows):
        kept = [row for row in rows if (int(row["triplet"]), row["method"]) in done]
        block = io.StringIO()
        writer = csv.DictWriter(block, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(kept)
        with viz.atomic_file(results) as file:
            file.write(block.getvalue().encode())
    return done


def _run_triplet(model, parts, score, t: int, entries, faces, todo: Sequence[str], *,
                 iterations: dict, threshold: float, key: jax.Array, explain_rejected: bool,
                 bar) -> tuple[list, dict]:
    """Explain and score one triplet for the methods in `todo`; its rows and maps.

    A pair the model rejects is not scored (see `srise_jax.benchmark`), so
    its maps are computed only with `explain_rejected`; its rows are written
    either way, with the similarity and empty metrics.
    """
    probe, mate, nonmate = faces
    similarity = benchmark.triplet_similarities(model.embed_fn, model.params, *faces)
    others = {"mate": (mate, entries.mate), "nonmate": (nonmate, entries.nonmate)}
    needed = [part for part in parts if set(part.labels) & set(todo)]
    rows, maps = [], {}
    for pair in benchmark.PAIRS:
        other, other_entry = others[pair]
        match = similarity[pair] >= threshold
        for side in benchmark.SIDES:
            image, reference = (probe, other) if side == "probe" else (other, probe)
            names = ((entries.probe, other_entry) if side == "probe"
                     else (other_entry, entries.probe))
            job = benchmark.job_key(key, t, pair, side)
            if not (match or explain_rejected):
                rows += [_row(t, pair, side, names, label, iterations[label],
                              similarity[pair], match, None, None) for label in todo]
                continue
            for part in needed:
                start = time.perf_counter()
                part_maps = jax.block_until_ready(part.fn(model.params, image, reference, job))
                seconds = time.perf_counter() - start
                for label in part.labels:
                    if label not in todo:
                        continue
                    saliency = part_maps[label]
                    maps[f"{label}/{pair}/{side}"] = np.asarray(saliency)
                    scored = (score(model.params, image, reference, saliency, threshold)
                              if match else None)
                    rows.append(_row(t, pair, side, names, label, iterations[label],
                                     similarity[pair], match, seconds, scored))
    for _ in todo:
        bar.update()
    return rows, maps


def _row(t, pair, side, names, label, iterations, similarity, match, seconds, scored) -> dict:
    row = {"triplet": t, "pair": pair, "side": side, "image": names[0],
           "reference": names[1], "method": label, "iterations": iterations,
           "similarity": f"{similarity:.6f}", "match": int(match),
           "seconds": "" if seconds is None else f"{seconds:.3f}"}
    for metric in ("deletion", "insertion", "deletion_auc", "insertion_auc"):
        value = math.nan if scored is None else float(scored[metric])
        row[metric] = "" if math.isnan(value) else f"{value:.6f}"
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
            f"Command: `{' '.join([cli.PROG, *sys.argv[1:]])}`\n\n"
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


# ----------------------------------------------------------------------------
# srise-jax figures
# ----------------------------------------------------------------------------

def _figures(args: argparse.Namespace) -> int:
    out = args.out
    if out.exists() and not out.is_dir():
        raise cli._UsageError(f"{out}: exists and is not a directory")
    name = cli._model_name(args)
    model = cli._load_model(args, name)
    threshold = model.threshold
    face = lambda entry: protocols.load_protocol_face(entry, size=model.size,
                                                      template=model.template)
    run_args = argparse.Namespace(num_masks=args.num_masks, batch_size=args.batch_size,
                                  normalize="coverage", share_probe_masks=False,
                                  metric_step=None, seed=args.seed)
    out.mkdir(parents=True, exist_ok=True)
    written = []

    def triplet_figure(path: Path, entries: Sequence[str], title: str) -> None:
        faces = tuple(face(e) for e in entries)
        run = cli._compute(run_args, model, faces, threshold=threshold, with_metrics=True)
        viz.plot_triplet(*faces, run.triplet, path=path, scores=cli._fractions(run),
                         title=f"{title} ({model.label}, N = {args.num_masks})")
        written.append(path)

    print("fig3: verification triplet", flush=True)
    triplet_figure(out / "fig3.png", ("obama", "obama2", "biden"),
                   "Fig. 3: probe, mate, nonmate")
    # Fig. 4 of the paper shows a false match. The sample photos have none, so
    # the figure shows the protocol's non-match pair closest to a match.
    hardest = max((t for t in protocols.sample_protocol() if "+" not in t.nonmate),
                  key=lambda t: benchmark.triplet_similarities(
                      model.embed_fn, model.params, *(face(e) for e in t))["nonmate"])
    print(f"fig4: hardest non-match pair {hardest.probe} / {hardest.nonmate}", flush=True)
    triplet_figure(out / "fig4.png", hardest,
                   f"Fig. 4: the non-match pair closest to a match "
                   f"({hardest.probe} vs {hardest.nonmate}; no false match on the samples)")
    for kind in data.OCCLUSION_KINDS:
        print(f"fig5: self-occlusion with a {kind}", flush=True)
        triplet_figure(out / f"fig5_{kind}.png", ("obama", "obama2", f"obama+{kind}"),
                       f"Fig. 5: probe, mate, probe with a {kind}")
    print("fig6: convergence", flush=True)
    convergence = jax.jit(perturbation.srise_convergence, static_argnums=(0,),
                          static_argnames=("counts", "batch_size"))
    figure_rows = {}
    for t, (probe_name, mate_name) in enumerate((("obama", "obama2"), ("obama2", "obama3"))):
        probe, mate = face(probe_name), face(mate_name)
        maps = convergence(model.embed_fn, model.params, probe, mate,
                           jax.random.fold_in(jax.random.key(args.seed), t),
                           counts=args.convergence, batch_size=args.batch_size)
        figure_rows[f"{probe_name} vs {mate_name}"] = (
            probe, {f"N = {n}": m for n, m in zip(args.convergence, maps)})
    written.append(out / "fig6.png")
    viz.plot_convergence(figure_rows, path=written[-1],
                         title=f"Fig. 6: S-RISE after N masks ({model.label})")
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0
