"""The `srise-jax` command line: explain a face triplet, convert weights, run a demo.

    srise-jax explain --weights DIR --probe P --mate M --nonmate N --out fig.png \\
        [--json scores.json] [--curves curves.png] [--num-masks 500] [--threshold 0.3]
    srise-jax convert backbone.pth DIR [--arch r50]
    srise-jax align photo.jpg ... --out DIR [--size 112]
    srise-jax demo [--out srise-demo]

File I/O, printing and progress bars live here; the library functions called
stay pure. Every failure a user can cause (a missing or corrupt file, a bad
option) ends in ONE line `srise-jax: error: ...` on stderr and exit status 2,
and every output is written atomically, so a failed run leaves none behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import jax
import numpy as np
from PIL import Image
from tqdm import tqdm

import srise_jax
from srise_jax import align, data, images, metrics, models, srise, viz
from srise_jax.models.arcface import read_metadata
from weights_conversion.arcface import convert_file

PROG = "srise-jax"
_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130
_DEMO_ARCH = "r18"
# Masks per compiled call, in units of the batch size: the progress bar moves
# once per call. The range start is traced, so the kernel compiles at most
# twice (the full span and a shorter tail) whatever the number of masks.
_RANGE_BATCHES = 4

_RANDOM_MODEL_NOTICE = f"""\
NOTE: this demo explains a RANDOMLY INITIALISED iResNet-18 on the bundled sample
photos (obama, obama2, biden; detected and aligned with MTCNN). Its saliency maps
are MEANINGLESS: a random model has learnt nothing, so its maps explain nothing
(the sanity check of the S-RISE paper, Fig. 2). The demo only shows the pipeline
run end to end. To explain a real face-recognition model:
  1. get an insightface arcface_torch backbone.pth (e.g. ms1mv3_arcface_r50),
  2. {PROG} convert backbone.pth arcface-r50/
  3. {PROG} explain --weights arcface-r50/ --align --probe probe.jpg \\
       --mate mate.jpg --nonmate nonmate.jpg --out explanation.png --json scores.json
     (--align detects and aligns raw photos; without it, give 112x112 aligned crops)."""

# Module level so that repeated runs in one process (tests, notebooks) reuse
# the compilations; the model and the options are static, params are not.
_triplet_sums = jax.jit(srise.triplet_sums, static_argnums=(0, 6),
                        static_argnames=("count",))
_finalize_triplet = jax.jit(srise.finalize_triplet, static_argnums=(0,),
                            static_argnames=("normalize",))
_METRICS = {
    "deletion": jax.jit(metrics.deletion, static_argnums=(0,),
                        static_argnames=("step", "batch_size")),
    "insertion": jax.jit(metrics.insertion, static_argnums=(0,),
                         static_argnames=("step", "batch_size")),
}


class _UsageError(Exception):
    """A bad command line; `main` prints it as one line."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, printed by `main`."""

    def error(self, message):
        raise _UsageError(f"{message} (see {self.prog} --help)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
      argv: the arguments without the program name; `sys.argv[1:]` if None.

    Returns:
      The exit status: 0 on success, 2 on a usage or input error.
    """
    parser = _build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:  # --help and --version end here
            return done.code or 0
        return args.command(args)
    # ValueError covers ImageError and ConversionError; OSError covers missing
    # checkpoints and unwritable outputs.
    except (_UsageError, ValueError, OSError) as err:
        print(f"{PROG}: error: {_first_line(err)}", file=sys.stderr)
        return _EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return _EXIT_INTERRUPTED


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message (library messages can run longer)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ----------------------------------------------------------------------------
# Argument parsing
# ----------------------------------------------------------------------------

def _integer_in(low: int, high: int, what: str):
    """An argparse type: an integer in [low, high), else a one-line message."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value < high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    return parse


_positive_int = _integer_in(1, sys.maxsize, "a positive integer")
_seed = _integer_in(0, 2**32, "an integer in [0, 2**32)")


def _similarity(text: str) -> float:
    """An argparse type: a threshold on the cosine similarity."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a cosine similarity in [-1, 1], got {text!r}")
    return value


def _build_parser() -> argparse.ArgumentParser:
    """The parser of all three commands; each sets `command` to its function."""
    parser = _Parser(
        prog=PROG,
        description="S-RISE saliency maps that explain face-verification decisions.")
    parser.add_argument("--version", action="version",
                        version=f"{PROG} {srise_jax.__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    explain = commands.add_parser(
        "explain", help="explain a (probe, mate, nonmate) triplet of aligned face crops",
        description="Explain why a face-recognition model matches a probe with its mate "
                    "and not with a nonmate: S-RISE maps of both pairs, as a figure; "
                    "with --json, also the similarities and Deletion/Insertion scores.")
    explain.add_argument("--weights", required=True, type=Path,
                         help=f"checkpoint directory written by `{PROG} convert`")
    for role in ("probe", "mate", "nonmate"):
        explain.add_argument(f"--{role}", required=True, type=Path,
                             help=f"{role} image: a face crop aligned like the model's "
                                  "training data (112x112; other sizes are resized)")
    explain.add_argument("--align", action="store_true",
                         help="the images are raw photos: detect (MTCNN) and align the "
                              "largest face of each first; the figure shows the crops")
    explain.add_argument("--out", required=True, type=Path, help="figure to write (PNG)")
    explain.add_argument("--json", type=Path,
                         help="also write similarities, Deletion/Insertion and settings here")
    explain.add_argument("--curves", type=Path,
                         help="also plot the Deletion/Insertion curves here (PNG)")
    _add_run_options(explain, num_masks=500, batch_size=64, threshold=0.3)
    explain.set_defaults(command=_explain)

    convert = commands.add_parser(
        "convert", help="convert an arcface_torch iResNet state dict for `explain`",
        description="Convert an insightface arcface_torch iResNet state dict (.pth, read "
                    "with torch.load(weights_only=True)) into a checkpoint directory.")
    convert.add_argument("pth", type=Path, help="the PyTorch state dict, e.g. backbone.pth")
    convert.add_argument("out_dir", type=Path, help="checkpoint directory to create")
    convert.add_argument("--arch", choices=list(models.ARCH_BLOCKS),
                         help="default: inferred from the number of blocks per stage")
    convert.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    convert.set_defaults(command=_convert)

    align_cmd = commands.add_parser(
        "align", help="detect and align faces in photos, writing the crops",
        description="Detect faces (MTCNN) in each photo and write the largest one, "
                    "aligned on the ArcFace template, as OUT/<name>.png. A photo without "
                    "a face is reported and skipped; the exit status is then 1.")
    align_cmd.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="photos")
    align_cmd.add_argument("--out", required=True, type=Path, help="directory for the crops")
    align_cmd.add_argument("--size", type=_positive_int, default=models.INPUT_SIZE,
                           help="side of the square crops in pixels (default: %(default)s)")
    align_cmd.set_defaults(command=_align)

    demo = commands.add_parser(
        "demo", help="run the whole pipeline on a random model and the sample photos",
        description="Explain a randomly initialised iResNet-18 on the bundled sample "
                    "photos: shows "
                    "the pipeline end to end; the maps themselves are meaningless.")
    demo.add_argument("--out", type=Path, default=Path("srise-demo"),
                      help="directory for the faces, figures and scores (default: %(default)s)")
    # A random model finds all faces alike (seed 0: 0.54 for the mate pair,
    # 0.46 for the nonmate pair), so a threshold between the two, higher than
    # a trained ArcFace's, lets the metrics flip.
    _add_run_options(demo, num_masks=128, batch_size=32, threshold=0.5)
    demo.set_defaults(command=_demo)
    return parser


def _add_run_options(parser: argparse.ArgumentParser, *, num_masks: int, batch_size: int,
                     threshold: float) -> None:
    """The S-RISE and metric options that `explain` and `demo` share."""
    parser.add_argument("--num-masks", type=_positive_int, default=num_masks,
                        help="masks per pair, N (default: %(default)s; paper: 500)")
    parser.add_argument("--batch-size", type=_positive_int, default=batch_size,
                        help="images per forward pass (default: %(default)s)")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="random seed (default: %(default)s)")
    parser.add_argument("--threshold", type=_similarity, default=threshold,
                        help="verification threshold on the cosine similarity "
                             "(default: %(default)s)")
    parser.add_argument("--share-probe-masks", action="store_true",
                        help="one mask set for both pairs: 3N forward passes instead of 4N")
    parser.add_argument("--normalize", choices=("coverage", "none"), default="coverage",
                        help="'coverage': sum s_i M_i / sum M_i; 'none': the paper's plain "
                             "sum (default: %(default)s)")
    parser.add_argument("--metric-step", type=_positive_int,
                        help="Deletion/Insertion coarse-search step in pixels (default: "
                             "sqrt of the pixel count, about 2*sqrt forward passes per curve)")


def _check_output(path: Path) -> None:
    """Fail before any work if `path` cannot be written."""
    if path.is_dir():
        raise _UsageError(f"{path}: is a directory, expected a file name")
    if not path.parent.is_dir():
        raise _UsageError(f"{path}: directory {path.parent} does not exist")


# ----------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------

def _explain(args: argparse.Namespace) -> int:
    """`srise-jax explain`: maps, figure and scores of a converted model on three crops."""
    outputs = [path for path in (args.out, args.json, args.curves) if path is not None]
    for path in outputs:
        _check_output(path)
    if len({path.resolve() for path in outputs}) != len(outputs):
        raise _UsageError("--out, --json and --curves must be different files")
    paths = (args.probe, args.mate, args.nonmate)
    if args.align:
        faces = tuple(align.preprocess(path, size=models.INPUT_SIZE) for path in paths)
    else:
        faces = _load_faces(*paths)
    embed_fn, params = models.load_arcface(args.weights)
    arch = read_metadata(args.weights)["arch"]
    run = _compute(args, embed_fn, params, faces,
                   with_metrics=args.json is not None or args.curves is not None)
    settings = {
        "weights": str(args.weights), "arch": arch,
        "probe": str(args.probe), "mate": str(args.mate), "nonmate": str(args.nonmate),
    }
    written = _write(run, args, faces, settings=settings,
                     title=f"S-RISE, ArcFace {arch}, N = {args.num_masks}",
                     figure=args.out, curves=args.curves, scores=args.json)
    _print_summary(run, threshold=args.threshold, written=written)
    return 0


def _demo(args: argparse.Namespace) -> int:
    """`srise-jax demo`: the explain pipeline on a random iResNet-18 and the sample photos."""
    out = args.out
    if out.exists() and not out.is_dir():
        raise _UsageError(f"{out}: exists and is not a directory")
    print(_RANDOM_MODEL_NOTICE, end="\n\n", flush=True)
    faces = data.sample_triplet(models.INPUT_SIZE)
    embed_fn, params = models.iresnet_init(_DEMO_ARCH, jax.random.key(args.seed))
    run = _compute(args, embed_fn, params, faces, with_metrics=True)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"weights": f"random {_DEMO_ARCH} (demo: the maps are meaningless)",
                "arch": _DEMO_ARCH, "images": "sample_triplet(): obama, obama2, biden"}
    written = _write(
        run, args, faces, settings=settings,
        title=f"RANDOM iResNet-18, sample photos: maps are meaningless (N = {args.num_masks})",
        figure=out / "explanation.png", curves=out / "curves.png", scores=out / "scores.json")
    for role, face in zip(("probe", "mate", "nonmate"), faces):
        _save_face(out / f"{role}.png", face)
        written.append(out / f"{role}.png")
    _print_summary(run, threshold=args.threshold, written=written)
    print("\nReminder: a random model's maps are meaningless; see the NOTE above for "
          "real weights.")
    return 0


def _align(args: argparse.Namespace) -> int:
    """`srise-jax align`: one aligned crop per photo; failures reported, not fatal."""
    if args.out.exists() and not args.out.is_dir():
        raise _UsageError(f"{args.out}: exists and is not a directory")
    args.out.mkdir(parents=True, exist_ok=True)
    failed, used = 0, set()
    for path in args.images:
        try:
            found = align.detect_and_align(path, size=args.size)
        except ValueError as err:  # ImageError, NoFaceError
            print(f"{path}: FAILED: {_first_line(err)}")
            failed += 1
            continue
        name = path.stem
        while name in used:  # photos of one name from different folders
            name += "_"
        used.add(name)
        target = args.out / f"{name}.png"
        _save_face(target, found.face)
        count = len(found.faces.scores)
        print(f"{path}: {count} face{'s' if count != 1 else ''}, aligned the largest "
              f"(score {float(found.faces.scores[found.index]):.4f}) -> {target}")
    if failed:
        print(f"{PROG}: {failed} of {len(args.images)} photos failed", file=sys.stderr)
        return 1
    return 0


def _convert(args: argparse.Namespace) -> int:
    """`srise-jax convert`: an arcface_torch state dict to a checkpoint directory."""
    # weights_conversion.arcface.main prints its errors in its own format;
    # convert_file does the same work and leaves the exception to `main`.
    out_dir = convert_file(args.pth, args.out_dir, arch=args.arch, overwrite=args.overwrite)
    print(f"wrote {out_dir}")
    return 0


# ----------------------------------------------------------------------------
# The pipeline shared by explain and demo
# ----------------------------------------------------------------------------

class _Run(NamedTuple):
    """What `_compute` found: the maps and, optionally, their metrics."""

    triplet: srise.TripletSaliency
    results: dict[str, dict[str, metrics.MetricResult]] | None
    config: srise.SRiseConfig
    metric_step: int


def _load_faces(*paths: Path) -> tuple[np.ndarray, ...]:
    """Load the face crops, with each loader warning as one stderr line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        faces = tuple(images.load_face(path, size=models.INPUT_SIZE) for path in paths)
    for warning in caught:
        print(f"{PROG}: warning: {warning.message}", file=sys.stderr)
    return faces


def _save_face(path: Path, face: np.ndarray) -> None:
    """Write a float RGB image in [0, 1] as an 8-bit PNG, atomically."""
    with viz.atomic_file(path) as file:
        Image.fromarray(np.round(face * 255).astype(np.uint8)).save(file, format="PNG")


def _compute(args: argparse.Namespace, embed_fn, params, faces, *,
             with_metrics: bool) -> _Run:
    """S-RISE maps of the triplet, then (optionally) Deletion/Insertion of each."""
    config = srise.SRiseConfig(num_masks=args.num_masks, batch_size=args.batch_size,
                               normalize=args.normalize,
                               share_probe_masks=args.share_probe_masks)
    height, width = faces[0].shape[:2]
    step = args.metric_step or math.isqrt(height * width)
    triplet = _saliency(embed_fn, params, faces, config, jax.random.key(args.seed))
    results = None
    if with_metrics:
        results = _faithfulness(embed_fn, params, viz.triplet_maps(*faces, triplet),
                                threshold=args.threshold, step=step,
                                batch_size=config.batch_size)
    return _Run(triplet, results, config, step)


def _write(run: _Run, args: argparse.Namespace, faces, *, settings: dict, title: str,
           figure: Path, curves: Path | None, scores: Path | None) -> list[Path]:
    """Write the figure, and the curves and the JSON report if asked; return the paths."""
    fractions = None if run.results is None else {
        name: {metric: float(result.fraction) for metric, result in by_metric.items()}
        for name, by_metric in run.results.items()}
    viz.plot_triplet(*faces, run.triplet, path=figure, title=title, scores=fractions)
    written = [figure]
    if curves is not None:
        viz.plot_curves({f"{metric} {name}": result
                         for name, by_metric in run.results.items()
                         for metric, result in by_metric.items()},
                        threshold=args.threshold, path=curves,
                        title=f"Deletion/Insertion, threshold {args.threshold:g}")
        written.append(curves)
    if scores is not None:
        settings = {**settings, "seed": args.seed, "threshold": args.threshold,
                    "metric_step": run.metric_step, "config": dataclasses.asdict(run.config),
                    "srise_jax_version": srise_jax.__version__}
        report = _report(run, threshold=args.threshold, settings=settings)
        with viz.atomic_file(scores) as file:
            file.write((json.dumps(report, indent=2, allow_nan=False) + "\n").encode())
        written.append(scores)
    return written


def _saliency(embed_fn, params, faces, config: srise.SRiseConfig,
              key: jax.Array) -> srise.TripletSaliency:
    """`srise_triplet`, one range of masks per compiled call, with a progress bar."""
    span = _RANGE_BATCHES * config.batch_size
    total = None
    with tqdm(total=config.num_masks, desc="S-RISE", unit="mask", file=sys.stderr,
              disable=None) as bar:
        for start in range(0, config.num_masks, span):
            count = min(span, config.num_masks - start)
            sums = jax.block_until_ready(
                _triplet_sums(embed_fn, params, *faces, key, config, start=start, count=count))
            total = sums if total is None else tuple(map(srise.add_sums, total, sums))
            bar.update(count)
    return _finalize_triplet(embed_fn, params, *faces, total, normalize=config.normalize)


def _faithfulness(embed_fn, params, maps: dict, *, threshold: float, step: int,
                  batch_size: int) -> dict[str, dict[str, metrics.MetricResult]]:
    """Deletion and Insertion of each map against its pair's other image."""
    results = {}
    with tqdm(total=len(maps) * len(_METRICS), desc="Deletion/Insertion", unit="curve",
              file=sys.stderr, disable=None) as bar:
        for name, (image, reference, saliency) in maps.items():
            results[name] = {}
            for metric, function in _METRICS.items():
                results[name][metric] = jax.block_until_ready(function(
                    embed_fn, params, image, reference, saliency, threshold,
                    step=step, batch_size=batch_size))
                bar.update()
    return results


def _report(run: _Run, *, threshold: float, settings: dict) -> dict:
    """The JSON document: similarities, decisions, metrics (NaN -> null + reason)."""
    similarity = {"mate": float(run.triplet.mate.similarity),
                  "nonmate": float(run.triplet.nonmate.similarity)}
    return {
        "similarity": similarity,
        "match": {pair: value >= threshold for pair, value in similarity.items()},
        "threshold": threshold,
        "metrics": {
            name: {metric: _metric_entry(metric, result, threshold)
                   for metric, result in by_metric.items()}
            for name, by_metric in run.results.items()},
        "settings": settings,
    }


def _metric_entry(metric: str, result: metrics.MetricResult, threshold: float) -> dict:
    """{"fraction": x}, or {"fraction": None, "reason": why} when x is NaN."""
    fraction = float(result.fraction)
    if not math.isnan(fraction):
        return {"fraction": fraction}
    start = float(result.curve[0])
    if metric == "deletion":
        reason = (f"undefined: the pair does not match at threshold {threshold:g} "
                  f"(similarity {start:.4f}), so there is no match for deletion to break")
    else:
        reason = (f"undefined: the mean-filled start image already matches at threshold "
                  f"{threshold:g} (similarity {start:.4f}), so insertion measures nothing")
    return {"fraction": None, "reason": reason}


def _print_summary(run: _Run, *, threshold: float, written: list[Path]) -> None:
    """Similarities, decisions and metric fractions on stdout, then the files written."""
    for label, pair in (("probe-mate", run.triplet.mate),
                        ("probe-nonmate", run.triplet.nonmate)):
        value = float(pair.similarity)
        verdict = "match" if value >= threshold else "no match"
        print(f"{label:<14} cosine {value:+.4f}  {verdict} at threshold {threshold:g}")
    if run.results is not None:
        print("fraction of pixels that flips the decision (smaller is better):")
        print(f"  {'map':<18} {'deletion':>9} {'insertion':>9}")
        for name, by_metric in run.results.items():
            cells = ["n/a" if math.isnan(float(r.fraction)) else f"{float(r.fraction):.4f}"
                     for r in by_metric.values()]
            print(f"  {name:<18} {cells[0]:>9} {cells[1]:>9}")
    print("wrote " + ", ".join(str(path) for path in written))
