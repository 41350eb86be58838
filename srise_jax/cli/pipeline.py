"""The commands' explanation pipeline: S-RISE options, maps with progress bars, Deletion/Insertion.

Two ways to explain a pair or a triplet of faces, both ending in an
`Explanation`:

- `compute_triplet`: S-RISE on a triplet with the kernel's engine, one
  range of masks per compiled call so that a progress bar can follow; the
  maps are `srise.srise_triplet`'s with the same key and config.
- `compute_maps`: any explainer (`srise_jax.explainers`) on a pair or a
  triplet, one map per compiled call.

Keys: pair i of the faces (i = 0 for the (probe, mate) pair, 1 for the
(probe, nonmate) pair) is explained with `jax.random.split(key)[i]`, and
both maps of a pair use that key. That is how `srise_triplet` keys its pairs,
so S-RISE gives the same maps either way (with `share_probe_masks`, the
kernel gives the nonmate pair the mate pair's key), and a pair's maps do not
change when a nonmate is added.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from srise_jax import metrics, models, presets, srise, viz
from srise_jax.cli import common
from srise_jax.config import NORMALIZE, SRiseConfig
from srise_jax.similarity import cosine_similarity

# The pairs of a triplet, in order: the probe against each other face.
PAIRS = ("mate", "nonmate")

# Masks per compiled call, in units of the batch size: the progress bar moves
# once per call. The range start is traced, so the kernel compiles at most
# twice (the full span and a shorter tail) whatever the number of masks.
RANGE_BATCHES = 4

# Module level so that repeated runs in one process (tests, notebooks) reuse
# the compilations; the model and the options are static, params are not.
_triplet_sums = jax.jit(srise.triplet_sums, static_argnums=(0, 6), static_argnames=("count",))
_finalize_triplet = jax.jit(srise.finalize_triplet, static_argnames=("normalize",))
_embed = jax.jit(lambda embed_fn, params, images: embed_fn(params, images), static_argnums=(0,))
_METRICS = {
    "deletion": jax.jit(metrics.deletion, static_argnums=(0,),
                        static_argnames=("step", "batch_size")),
    "insertion": jax.jit(metrics.insertion, static_argnums=(0,),
                         static_argnames=("step", "batch_size")),
}

# A map with the images it belongs to: (image, intact reference, saliency).
MapEntry = tuple[np.ndarray, np.ndarray, jax.Array]
MetricResults = dict[str, dict[str, metrics.MetricResult]]


# ----------------------------------------------------------------------------
# S-RISE options
# ----------------------------------------------------------------------------

def add_run_options(parser: argparse.ArgumentParser, *, batch_size: int) -> None:
    """The S-RISE and metric options that `explain` and `demo` share."""
    parser.add_argument("--num-masks", type=common.positive_int,
                        help=f"masks per pair, N (default: {SRiseConfig.num_masks}, the "
                             "paper's)")
    parser.add_argument("--batch-size", type=common.positive_int, default=batch_size,
                        help="images per forward pass (default: %(default)s)")
    parser.add_argument("--seed", type=common.seed, default=0,
                        help="random seed (default: %(default)s)")
    parser.add_argument("--threshold", type=common.similarity,
                        help="verification threshold on the cosine similarity (default: "
                             f"the model's: dlib {models.DLIB_THRESHOLD:.4g}, ArcFace "
                             f"and ONNX {models.ARCFACE_THRESHOLD:g})")
    parser.add_argument("--share-probe-masks", action="store_true",
                        help="one mask set for both pairs: 3N forward passes instead of 4N")
    parser.add_argument("--normalize", choices=NORMALIZE,
                        help="'coverage': sum s_i M_i / sum M_i; 'none': the paper's plain "
                             "sum; 'centred' and 'regression': control variates (the masks' "
                             "mean score; the per-pixel slope of the score on the mask) "
                             "(default: coverage)")
    parser.add_argument("--preset", choices=tuple(presets.PRESETS),
                        help="S-RISE settings by name instead of the defaults: 'paper' (black "
                             "fill, plain sum, absolute patch sizes) or 'mean_fill' (image-mean "
                             "fill, coverage: since issue 14 the same as the defaults); "
                             "overrides --normalize")
    parser.add_argument("--metric-step", type=common.positive_int,
                        help="Deletion/Insertion coarse-search step in pixels (default: "
                             "sqrt of the pixel count, about 2*sqrt forward passes per curve)")


def make_config(*, preset: str | None, normalize: str | None, **options: Any) -> SRiseConfig:
    """The `SRiseConfig` of a named preset, else of the defaults with `normalize`.

    Args:
      preset: a name of `presets.PRESETS`, or None.
      normalize: an estimator of `config.NORMALIZE`; None for the default. A preset sets its own.
      **options: the other fields (num_masks, batch_size, ...).

    Returns:
      The config.
    """
    if preset is not None:
        return presets.preset(preset, **options)
    return SRiseConfig(**options) if normalize is None else SRiseConfig(normalize=normalize,
                                                                        **options)


def config_from_args(args: argparse.Namespace, *, num_masks: int | None = None,
                     preset: str | None = None) -> SRiseConfig:
    """The `SRiseConfig` of `add_run_options`' options and --compute-dtype.

    Args:
      args: the parsed command line.
      num_masks: the mask count, if set elsewhere (`--method srise@N`).
      preset: the preset, if named elsewhere (`--method srise[NAME]`).

    Returns:
      The config.
    """
    options = {"batch_size": args.batch_size, "share_probe_masks": args.share_probe_masks,
               "compute_dtype": common.compute_dtype(args)}
    count = num_masks or args.num_masks
    if count is not None:
        options["num_masks"] = count
    return make_config(preset=preset or args.preset, normalize=args.normalize, **options)


# ----------------------------------------------------------------------------
# Explaining
# ----------------------------------------------------------------------------

class Explanation(NamedTuple):
    """The maps of a pair or a triplet, their pairs' cosines and, optionally, metrics.

    Attributes:
      maps: {name: (image, reference, saliency)} in `viz.MAP_NAMES` order (the
        first two for a pair).
      similarity: {pair: cosine of the probe and that face} for the pairs of
        `PAIRS` explained.
      results: {map name: {"deletion": MetricResult, "insertion": ...}}, or
        None when no metrics were asked for.
      metric_step: the Deletion/Insertion search step (used, or that would be).
      triplet: S-RISE's `TripletSaliency` (what `viz.plot_triplet` draws) from
        `compute_triplet`; None from `compute_maps`.
    """

    maps: dict[str, MapEntry]
    similarity: dict[str, float]
    results: MetricResults | None
    metric_step: int
    triplet: srise.TripletSaliency | None = None


def check_embeddings(model: models.FaceModel, faces: Mapping[str, np.ndarray]) -> np.ndarray:
    """Fail with one line about the model if it embeds any of `faces` as NaN or inf.

    Run before any work or output: a model with corrupt weights otherwise
    yields NaN similarities and maps, and a failure only when they are
    written (JSON has no NaN).

    Args:
      model: the loaded model.
      faces: {role: face crop}, the role naming the face in the message.

    Returns:
      Float[ndarray, "f d"], the faces' embeddings in order.
    """
    embeddings = np.asarray(_embed(model.embed_fn, model.params,
                                   jnp.stack(list(faces.values()))))
    bad = [role for role, row in zip(faces, embeddings) if not np.isfinite(row).all()]
    if bad:
        which = " and ".join([", ".join(bad[:-1]), bad[-1]] if len(bad) > 1 else bad)
        raise ValueError(f"{model.label}: the model returned NaN or infinite embeddings for "
                         f"the {which}: the weights may be corrupt")
    return embeddings


def compute_triplet(model: models.FaceModel, faces: Sequence[np.ndarray], *,
                    config: SRiseConfig, key: jax.Array, threshold: float, with_metrics: bool,
                    metric_step: int | None = None) -> Explanation:
    """S-RISE maps of a (probe, mate, nonmate) triplet, then (optionally) their metrics.

    Args:
      model: the model.
      faces: the probe, mate and nonmate crops, Float[ndarray, "s s 3"].
      config: the S-RISE options.
      key: the `jax.random` key of `srise.srise_triplet`.
      threshold: the verification threshold of Deletion/Insertion.
      with_metrics: whether to compute Deletion and Insertion of each map.
      metric_step: their coarse-search step; default the square root of the
        pixel count.

    Returns:
      The `Explanation`, `triplet` set.
    """
    check_embeddings(model, dict(zip(viz.ROLES, faces)))
    triplet = _triplet_saliency(model, faces, config, key)
    if not all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree.leaves(triplet)):
        raise ValueError(f"{model.label}: the model returned NaN or infinite embeddings for "
                         "masked copies of the faces: the weights may be corrupt")
    maps = viz.triplet_maps(*faces, triplet)
    similarity = {"mate": float(triplet.mate.similarity),
                  "nonmate": float(triplet.nonmate.similarity)}
    return _with_metrics(model, Explanation(maps, similarity, None, 0, triplet),
                         threshold=threshold, with_metrics=with_metrics,
                         metric_step=metric_step, batch_size=config.batch_size)


def compute_maps(model: models.FaceModel, faces: Sequence[np.ndarray],
                 explainer: Callable[..., jax.Array], *, label: str, key: jax.Array,
                 threshold: float, with_metrics: bool, batch_size: int,
                 metric_step: int | None = None) -> Explanation:
    """Any explainer's maps of a pair or a triplet, then (optionally) their metrics.

    Args:
      model: the model.
      faces: the probe and mate crops, and optionally the nonmate's.
      explainer: `explainer(params, image, reference, key) -> Float[Array,
        "s s"]`: a registered explainer with `model.embed_fn` and its options
        bound (jitted here, once for all maps).
      label: the method's name on the progress bar.
      key: the run's key; pair i is explained with `jax.random.split(key)[i]`.
      threshold: the verification threshold of Deletion/Insertion.
      with_metrics: whether to compute Deletion and Insertion of each map.
      batch_size: images per forward pass of the metrics.
      metric_step: their coarse-search step; default the square root of the
        pixel count.

    Returns:
      The `Explanation`, `triplet` None.
    """
    embeddings = check_embeddings(model, dict(zip(viz.ROLES, faces)))
    probe, others = faces[0], faces[1:]
    jobs, similarity = {}, {}
    for pair, other, embedding, pair_key in zip(PAIRS, others, embeddings[1:],
                                                jax.random.split(key)):
        similarity[pair] = float(cosine_similarity(embeddings[0], embedding))
        jobs[f"probe_vs_{pair}"] = (probe, other, pair_key)
        jobs[f"{pair}_vs_probe"] = (other, probe, pair_key)
    explain = jax.jit(explainer)
    maps = {}
    with tqdm(total=len(jobs), desc=label, unit="map", file=sys.stderr, disable=None) as bar:
        for name, (image, reference, pair_key) in jobs.items():
            saliency = jax.block_until_ready(explain(model.params, image, reference, pair_key))
            if not np.isfinite(np.asarray(saliency)).all():
                raise ValueError(f"{model.label}: {label} gave NaN or infinite values in the "
                                 f"map of the {viz.map_label(name)}: the weights may be corrupt")
            maps[name] = (image, reference, saliency)
            bar.update()
    return _with_metrics(model, Explanation(maps, similarity, None, 0),
                         threshold=threshold, with_metrics=with_metrics,
                         metric_step=metric_step, batch_size=batch_size)


def _triplet_saliency(model: models.FaceModel, faces: Sequence[np.ndarray],
                      config: SRiseConfig, key: jax.Array) -> srise.TripletSaliency:
    """`srise_triplet`, one range of masks per compiled call, with a progress bar."""
    span = RANGE_BATCHES * config.batch_size
    total = None
    with tqdm(total=config.num_masks, desc="S-RISE", unit="mask", file=sys.stderr,
              disable=None) as bar:
        for start in range(0, config.num_masks, span):
            count = min(span, config.num_masks - start)
            sums = jax.block_until_ready(_triplet_sums(
                model.embed_fn, model.params, *faces, key, config, start=start, count=count))
            total = sums if total is None else tuple(map(srise.add_sums, total, sums))
            bar.update(count)
    return _finalize_triplet(total, normalize=config.normalize)


def _with_metrics(model: models.FaceModel, explanation: Explanation, *, threshold: float,
                  with_metrics: bool, metric_step: int | None,
                  batch_size: int) -> Explanation:
    """`explanation` with its metric step and, if asked for, Deletion and Insertion."""
    height, width = next(iter(explanation.maps.values()))[0].shape[:2]
    step = metric_step or math.isqrt(height * width)
    if not with_metrics:
        return explanation._replace(metric_step=step)
    results: MetricResults = {}
    with tqdm(total=len(explanation.maps) * len(_METRICS), desc="Deletion/Insertion",
              unit="curve", file=sys.stderr, disable=None) as bar:
        for name, (image, reference, saliency) in explanation.maps.items():
            results[name] = {}
            for metric, function in _METRICS.items():
                results[name][metric] = jax.block_until_ready(function(
                    model.embed_fn, model.params, image, reference, saliency, threshold,
                    step=step, batch_size=batch_size))
                bar.update()
    return explanation._replace(results=results, metric_step=step)
