"""Faithfulness benchmark: every explainer on the same triplets, the paper's Table 1.

A benchmark run explains each image of each pair of each triplet with every
method, then scores every map whose pair the model accepts with the paper's
Deletion and Insertion fractions (`srise_jax.metrics`) and the threshold-free
deletion/insertion AUCs (`metrics.similarity_curve`). One result row per
(triplet, pair, side, method); `summarize` turns rows into Table 1 with 95%
bootstrap intervals that resample distinct pairs (`pair_identity`).

Everything here is pure computation on arrays and rows; reading photos,
writing `results.csv`, resuming and progress bars live in the CLI
(`srise-jax benchmark`). For dataset-scale runs, `shard_over_triplets` runs
the jobs of a batch of triplets as one vmapped program spread over a 1-D
device mesh (`triplet_mesh`); with one triplet per device its maps and
scores are those of one triplet at a time.

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

from __future__ import annotations

import collections
import dataclasses
import functools
import inspect
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from srise_jax import metrics, srise
from srise_jax.explainers import perturbation, registry
from srise_jax.similarity import unit_normalize

# The paper's Table 1 and Fig. 6: S-RISE after 10, 100, 500 and 1000 masks.
PAPER_ITERATIONS = (10, 100, 500, 1000)

DEFAULT_METHODS = (
    "srise@10", "srise@100", "srise@500", "srise@1000", "rise@500",
    "corrrise_similar@500", "gradient", "gradient_x_input", "smoothgrad",
    "integrated_gradients", "gradcam", "extremal", "random", "centre_prior",
)

# Pairs of a triplet and the two sides of a pair: side "probe" explains the
# probe (masked, perturbed) against the intact other image, side "other" the
# other image against the intact probe.
PAIRS = ("mate", "nonmate")
SIDES = ("probe", "other")

# The option "@N" sets, in the order looked for in an explainer's signature.
_ITERATION_OPTIONS = ("num_masks", "num_samples", "num_steps")


@dataclasses.dataclass(frozen=True)
class Method:
    """An explainer by registry name, with its iteration count if given.

    Attributes:
      name: a name of `srise_jax.explainers.list_explainers()`.
      iterations: masks (perturbation methods), samples (SmoothGrad) or steps
        (Integrated Gradients, extremal): the first of ``num_masks``,
        ``num_samples``, ``num_steps`` the explainer takes. None: its default.
      preset: for "srise" only, a name of `srise.PRESETS` whose settings
        replace the explainer's defaults; None: the defaults.
    """

    name: str
    iterations: int | None = None
    preset: str | None = None

    @property
    def label(self) -> str:
        """"name", "name[preset]", with "@iterations" if set, as the command line spells it."""
        label = self.name if self.preset is None else f"{self.name}[{self.preset}]"
        return label if self.iterations is None else f"{label}@{self.iterations}"

    @property
    def option(self) -> str | None:
        """The keyword `iterations` sets, or None."""
        parameters = inspect.signature(registry.get_explainer(self.name)).parameters
        return next((o for o in _ITERATION_OPTIONS if o in parameters), None)

    def options(self) -> dict[str, Any]:
        """Keyword options for the explainer: the preset's, then the iterations."""
        options = dict(srise.PRESETS[self.preset]) if self.preset is not None else {}
        if self.iterations is not None:
            options[self.option] = self.iterations
        return options


def parse_methods(spec: str | Iterable[str]) -> tuple[Method, ...]:
    """Methods from "srise@500,gradient,..." (or a list of such labels).

    Args:
      spec: comma-separated labels "name" or "name@N" (blanks ignored), or an
        iterable of labels; each name from `explainers.list_explainers()`;
        S-RISE also as "srise[preset]@N" with a preset of `srise.PRESETS`.

    Returns:
      The `Method`s in the order given.

    Raises:
      ValueError: an unknown name (the message lists the known ones), a bad
        or non-positive count, "@N" on a method without iterations, or a
        label given twice.
    """
    labels = spec.split(",") if isinstance(spec, str) else list(spec)
    methods = []
    for label in (text.strip() for text in labels if text.strip()):
        head, at, count = label.partition("@")
        name, bracket, preset = head.partition("[")
        registry.get_explainer(name)
        iterations = None
        if at:
            if not count.isdigit() or int(count) < 1:
                raise ValueError(f"method {label!r}: expected name@N with N a positive "
                                 f"integer")
            iterations = int(count)
        if bracket:
            preset = preset.removesuffix("]")
            if name != "srise" or preset not in srise.PRESETS or not head.endswith("]"):
                raise ValueError(f"method {label!r}: presets are srise[name] with name one "
                                 f"of {', '.join(srise.PRESETS)}")
        method = Method(name, iterations, preset or None)
        if iterations is not None and method.option is None:
            raise ValueError(f"method {label!r}: {name} has no iteration count to set")
        methods.append(method)
    seen = [m.label for m in methods]
    duplicates = sorted({label for label in seen if seen.count(label) > 1})
    if duplicates:
        raise ValueError(f"methods given twice: {', '.join(duplicates)}")
    if not methods:
        raise ValueError("no methods given")
    return tuple(methods)


def method_key(key: jax.Array, label: str) -> jax.Array:
    """The key a method gets from a job's key: independent of the method list.

    Folding in a hash of the label (not the method's position) keeps each
    method's maps the same when methods are added to or dropped from a run,
    which is what lets a resumed run add methods to finished triplets.

    Args:
      key: a job's `jax.random` key (`job_key`).
      label: the method's `Method.label`, e.g. "srise@500".

    Returns:
      A `jax.random` key: `key` folded with the label's CRC-32.
    """
    return jax.random.fold_in(key, zlib.crc32(label.encode()) & 0x7FFFFFFF)


def job_key(key: jax.Array, triplet: int, pair: str, side: str) -> jax.Array:
    """The key of one (triplet, pair, side) explanation job.

    Args:
      key: the run's `jax.random` key.
      triplet: the triplet's index in the run.
      pair: one of `PAIRS` ("mate", "nonmate").
      side: one of `SIDES` ("probe", "other").

    Returns:
      A `jax.random` key, distinct for each (triplet, pair, side).
    """
    key = jax.random.fold_in(key, triplet)
    return jax.random.fold_in(key, 2 * PAIRS.index(pair) + SIDES.index(side))


class ExplainPart(NamedTuple):
    """One compiled piece of a benchmark's explainers.

    Attributes:
      labels: the method labels it produces.
      fn: jitted ``fn(params, image, reference, key) -> {label: map}``.
    """

    labels: tuple[str, ...]
    fn: Callable


def make_explain_fns(embed_fn: Callable, methods: Sequence[Method], *,
                     feature_fns: tuple[Callable, Callable] | None = None,
                     batch_size: int = 64) -> tuple[ExplainPart, ...]:
    """The methods as jitted functions of ``(params, image, reference, key)``.

    ``key`` is the job's key (`job_key`); each method folds in its own label
    (`method_key`). Each other method is one part; merging the parts' dicts
    gives every method's map.

    The S-RISE methods (``srise`` at several mask counts, with default
    options) are computed together by `perturbation.srise_convergence`: one
    sequence of max(counts) masks read off at each count, as in the paper's
    Fig. 6, so the series costs the largest count's forward passes.

    Args:
      embed_fn: the model (static).
      methods: what to run.
      feature_fns: the model's `(features_fn, head_fn)` for "gradcam".
      batch_size: forward-pass batch of the perturbation methods.

    Returns:
      `ExplainPart`s, S-RISE's first; each map is Float[Array, "h w"].
    """
    # Each S-RISE method reads the map at its own count (default 500 masks);
    # one run per preset, all from the same key (the same patch centres).
    parts: list[ExplainPart] = []
    for preset in dict.fromkeys(m.preset for m in methods if m.name == "srise"):
        srise_at = {m.label: m.iterations or 500 for m in methods
                    if m.name == "srise" and m.preset == preset}
        counts = tuple(sorted(set(srise_at.values())))
        settings = dict(srise.PRESETS[preset]) if preset is not None else {}

        def run_srise(params, image, reference, key, _at=srise_at, _counts=counts,
                      _settings=settings):
            maps = perturbation.srise_convergence(
                embed_fn, params, image, reference, method_key(key, "srise"),
                counts=_counts, batch_size=batch_size, **_settings)
            return {label: maps[_counts.index(n)] for label, n in _at.items()}

        parts.append(ExplainPart(tuple(srise_at), jax.jit(run_srise)))
    for method in methods:
        if method.name == "srise":
            continue
        fn = registry.get_explainer(method.name)
        options = method.options()
        parameters = inspect.signature(fn).parameters
        if "batch_size" in parameters:
            options["batch_size"] = batch_size
        if method.name == "gradcam":
            if feature_fns is None:
                raise ValueError("gradcam needs the model's feature_fns "
                                 "(iresnet_feature_fns(arch) or dlib_feature_fns())")
            options["feature_fns"] = feature_fns
        bound = functools.partial(fn, embed_fn, **options)

        def run_one(params, image, reference, key, _bound=bound, _label=method.label):
            return {_label: _bound(params, image, reference, method_key(key, _label))}

        parts.append(ExplainPart((method.label,), jax.jit(run_one)))
    return tuple(parts)


def make_score_fn(embed_fn: Callable, *, step: int, batch_size: int = 32,
                  num_points: int = 33) -> Callable:
    """Jitted `score(params, image, reference, saliency, threshold) -> dict`.

    The dict holds () arrays "deletion", "insertion" (the paper's fractions,
    exact: `metrics.deletion` / `insertion` with this coarse `step`; NaN
    when undefined), "deletion_reason", "insertion_reason" (int32
    `metrics.MetricResult.reason`: 0 when defined; `metrics.reason_name` names
    it), "deletion_auc", "insertion_auc" and (num_points,)
    "deletion_curve", "insertion_curve" (`metrics.similarity_curve`).

    Args:
      embed_fn: `embed_fn(params, images[B, H, W, 3]) -> [B, D]`.
      step: the coarse grid of the exact fractions' search, as in
        `metrics.deletion` (the same answer as step=1 when the similarity
        crosses the threshold once).
      batch_size: perturbed images per `embed_fn` call.
      num_points: points of each similarity curve.

    Returns:
      The jitted `score`; its `image`, `reference` are Float[Array, "h w 3"],
      `saliency` Float[Array, "h w"] (`image`'s map) and `threshold` the
      model's match threshold on the cosine similarity.

    References:
      Lu and Ebrahimi, arXiv:2304.06118, section 4.4 (Deletion, Insertion).
    """

    def score(params, image, reference, saliency, threshold):
        args = (embed_fn, params, image, reference, saliency)
        out = {}
        for mode, exact in (("deletion", metrics.deletion), ("insertion", metrics.insertion)):
            result = exact(*args, threshold, step=step, batch_size=batch_size)
            out[mode], out[f"{mode}_reason"] = result.fraction, result.reason
            curve = metrics.similarity_curve(*args, mode=mode, num_points=num_points,
                                             batch_size=batch_size)
            out[f"{mode}_auc"] = curve.auc
            out[f"{mode}_curve"] = curve.similarity
        return out

    return jax.jit(score)


def triplet_similarities(embed_fn: Callable, params: Any, probe: jax.Array,
                         mate: jax.Array, nonmate: jax.Array) -> dict[str, float]:
    """{"mate": cos(probe, mate), "nonmate": cos(probe, nonmate)}.

    Args:
      embed_fn: `embed_fn(params, images[B, H, W, 3]) -> [B, D]`.
      params: the model's parameter pytree.
      probe, mate, nonmate: Float[Array, "h w 3"] RGB in [0, 1].

    Returns:
      The two cosine similarities of the intact images, as Python floats.
    """
    sims = np.asarray(_probe_cosines(embed_fn, params, jnp.stack([probe, mate, nonmate])))
    return {"mate": float(sims[0]), "nonmate": float(sims[1])}


@functools.partial(jax.jit, static_argnums=0)
def _probe_cosines(embed_fn: Callable, params: Any, faces: jax.Array) -> jax.Array:
    """(2,) cos(faces[0], faces[1:]), compiled once per model and image size."""
    units = unit_normalize(embed_fn(params, faces))
    return units[1:] @ units[0]


# ----------------------------------------------------------------------------
# Batches of triplets over devices
# ----------------------------------------------------------------------------

# The mesh axis the triplets of a batch are spread over.
TRIPLET_AXIS = "triplets"


def triplet_mesh(devices: Sequence[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh with axis `TRIPLET_AXIS` over `devices` (default: all devices).

    In a multi-process run where each process takes its own triplets, pass
    `jax.local_devices()`.

    Args:
      devices: the devices of the mesh, in order; None: `jax.devices()`.

    Returns:
      A `jax.sharding.Mesh` of shape (len(devices),).
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.sharding.Mesh(np.asarray(devices), (TRIPLET_AXIS,))


def shard_over_triplets(fn: Callable, mesh: jax.sharding.Mesh, *,
                        batched: Sequence[bool], multiple: int | None = None) -> Callable:
    """`fn` on a batch of triplets: vmapped, jitted, the batch axis sharded over `mesh`.

    Each job of a benchmark (one pair and side of a triplet) is independent
    of the others, so K triplets' jobs run as one vmapped program whose
    batch axis is split over the mesh (``NamedSharding(mesh, P("triplets"))``)
    while the unbatched arguments (params, threshold) are replicated. The
    returned function pads the batch by repeating its last entry, places
    the arguments with `jax.device_put`, and drops the padding's outputs.

    With at most one triplet per device the outputs are those of `fn` on
    each triplet alone, bit for bit (measured on CPU). With several per
    device, the device runs them as one vectorized program whose float
    rounding differs (maps within ~1e-7); Deletion/Insertion rank pixels by
    saliency, so near-tied pixels can swap and a fraction move by a pixel
    (an AUC by ~1e-4 on a 4-mask S-RISE map, which has many near ties).

    Example, for an `ExplainPart` and a `make_score_fn` score::

        explain = shard_over_triplets(part.fn, mesh, batched=(False, True, True, True))
        maps = explain(params, images, references, keys)   # {label: (K, h, w)}
        score = shard_over_triplets(score_fn, mesh,
                                    batched=(False, True, True, True, False))

    Args:
      fn: a function of positional arguments, e.g. ``ExplainPart.fn``
        ``(params, image, reference, key)`` or the score of `make_score_fn`.
      mesh: a mesh with the axis `TRIPLET_AXIS` (`triplet_mesh`).
      batched: per argument of `fn`, whether the call passes it stacked along
        a leading triplet axis (images, references, keys, maps) or once for
        all (params, threshold).
      multiple: pad every batch to a multiple of this (a multiple of the
        mesh's size; default: the mesh's size). Giving the largest batch
        size keeps one compiled program for a short last batch.

    Returns:
      ``call(*args)``: `fn`'s outputs stacked along the leading axis, one
      entry per triplet of the batch (the padding left out).
    """
    devices = mesh.shape[TRIPLET_AXIS]
    multiple = devices if multiple is None else multiple
    if multiple % devices:
        raise ValueError(f"multiple={multiple} is not a multiple of the mesh's "
                         f"{devices} devices")
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(TRIPLET_AXIS))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    shardings = tuple(split if b else whole for b in batched)
    compiled = jax.jit(jax.vmap(fn, in_axes=tuple(0 if b else None for b in batched)),
                       in_shardings=shardings, out_shardings=split)

    def call(*args):
        if len(args) != len(batched):
            raise TypeError(f"expected {len(batched)} arguments, got {len(args)}")
        count = next(jax.tree.leaves(a)[0].shape[0] for a, b in zip(args, batched) if b)
        # Repeat the last triplet: its outputs are valid, merely unused.
        rows = np.minimum(np.arange(-(-count // multiple) * multiple), count - 1)
        padded = [jax.tree.map(lambda x: x[rows], a) if b else a
                  for a, b in zip(args, batched)]
        placed = [jax.device_put(a, s) for a, s in zip(padded, shardings)]
        return jax.tree.map(lambda x: x[:count], compiled(*placed))

    return call


# ----------------------------------------------------------------------------
# Table 1
# ----------------------------------------------------------------------------

# Table 1's metrics. The paper's two fractions and their average are means
# over the SAME rows (those where both fractions are defined), so the
# average column is the average of the two beside it; each AUC is a mean
# over the scored rows where it is defined.
FRACTIONS = ("deletion", "insertion", "average")
AUCS = ("deletion_auc", "insertion_auc")

# Why `summarize` excluded a row: a pair the model rejects is not scored
# (the row's "match" is false); a NaN or empty fraction of a row that gives
# no "<metric>_reason" (rows written before reasons existed) is `NO_REASON`.
REJECTED = metrics.UNDEFINED_REASONS[0]  # "rejected", as metrics names it
NO_REASON = "no_reason_given"
_NO_REASON_TEXT = "NaN or empty, and the row gives no reason"

# The keys `summarize` reads from every row.
_ROW_KEYS = ("method", "image", "reference", "match", "deletion", "insertion")


def pair_identity(row: Mapping[str, Any]) -> frozenset[str]:
    """The pair a result row scores: its two images, unordered.

    Table 1's bootstrap resamples these, not rows or triplets: a pair that
    recurs in several triplets (the bundled protocol has (obama, obama2) and
    (obama2, obama3) in three triplets each) gives rows that are near-copies,
    and both sides of a pair explain one decision.

    Args:
      row: a result row with "image" and "reference" (image names or paths
        relative to the data folder, as `results.csv` holds them).

    Returns:
      {image, reference}: equal for the rows of one pair in any triplet, on
      either side.
    """
    return frozenset((str(row["image"]), str(row["reference"])))


def _number(value: Any) -> float:
    """A CSV cell or a float as a float; empty or missing -> NaN."""
    if value is None or value == "":
        return math.nan
    return float(value)


class _Interval(NamedTuple):
    mean: float
    low: float
    high: float
    n: int  # values in the mean
    pairs: int  # clusters the bootstrap resamples


def _mean_ci(values: Sequence[tuple[Any, float]], *, num_resamples: int,
             rng: np.random.Generator, level: float) -> _Interval:
    """Mean of (cluster, value) values and its percentile bootstrap interval over clusters.

    Rows of one cluster (one pair) are not independent, so the bootstrap
    resamples whole clusters, in order of first appearance, and recomputes
    the mean over their rows: a pair's rows weigh as many rows in the mean
    but count once in the interval's width. One cluster has no spread to
    resample: its interval is NaN.
    """
    groups: dict[Any, list[float]] = {}
    for cluster, value in values:
        groups.setdefault(cluster, []).append(value)
    if not groups:
        return _Interval(math.nan, math.nan, math.nan, 0, 0)
    sums = np.array([np.sum(group) for group in groups.values()])
    counts = np.array([len(group) for group in groups.values()])
    mean = float(sums.sum() / counts.sum())
    if len(groups) < 2:
        return _Interval(mean, math.nan, math.nan, int(counts.sum()), 1)
    picks = rng.integers(len(groups), size=(num_resamples, len(groups)))
    resampled = sums[picks].sum(1) / counts[picks].sum(1)
    tail = (1 - level) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail])
    return _Interval(mean, float(low), float(high), int(counts.sum()), len(groups))


def summarize(rows: Iterable[Mapping[str, Any]], *, methods: Sequence[str] | None = None,
              num_resamples: int = 10_000, level: float = 0.95,
              seed: int = 0) -> list[dict[str, Any]]:
    """Table 1 from result rows: per method, means with pair-bootstrap intervals.

    Which rows count. A row whose pair the model rejects ("match" false)
    is not scored and is excluded as `REJECTED`. Of the scored rows,
    Deletion, Insertion and their average ((D + I) / 2 per row) are means
    over the SAME rows, those where both fractions are defined, so the
    average is the average of the two columns; a row with an undefined
    (NaN or empty) fraction is left out of all three and counted under
    "<metric> <reason>", its "<metric>_reason" (`metrics.UNDEFINED_REASONS`,
    e.g. "deletion cannot_flip"; `NO_REASON` when the row has none). Those
    reasons but "invalid_input" do not depend on the map ("rejected",
    "cannot_flip", "already_flipped" are decided by the intact and the
    all-mean images), so every method with finite maps is averaged over the
    same rows. Each AUC is a mean over the scored rows where it is defined.

    Intervals: a percentile bootstrap over distinct pairs (`pair_identity`:
    the same two images, in any triplet, on either side), each resample
    recomputing the mean over its pairs' rows; with fewer than two pairs
    the interval is NaN.

    Args:
      rows: result rows: mappings with "method", "image", "reference",
        "match", "deletion", "insertion" and optionally "iterations",
        "deletion_reason", "insertion_reason", "deletion_auc",
        "insertion_auc"; numbers or CSV strings, empty meaning NaN.
      methods: labels in the table's order; default: order of appearance.
      num_resamples: bootstrap resamples of the pairs.
      level: coverage of the interval.
      seed: the bootstrap's seed: each (method, metric) draws its resamples
        from ``numpy.random.default_rng([seed, zlib.crc32(b"<method>/<metric>")])``,
        so a method's interval does not depend on the other methods.

    Returns:
      One dict per method: "method", "iterations"; for each metric of
      `FRACTIONS` and `AUCS`: "<metric>" (mean), "<metric>_low",
      "<metric>_high", "<metric>_n" (rows in the mean; one count for the
      three `FRACTIONS`) and "<metric>_pairs" (distinct pairs among them:
      what the bootstrap resamples); and "excluded": {`REJECTED` or
      "<metric> <reason>": rows}, a row undefined in both fractions
      counted under both.

    Raises:
      ValueError: a row lacks one of the keys above that are not optional.
    """
    by_method: dict[str, dict[str, Any]] = {}
    for number, row in enumerate(rows):
        missing = [key for key in _ROW_KEYS if key not in row]
        if missing:
            raise ValueError(f"result row {number}: no {', '.join(map(repr, missing))}")
        entry = by_method.setdefault(row["method"], {
            "iterations": row.get("iterations", ""), "excluded": collections.Counter(),
            "values": {metric: [] for metric in FRACTIONS + AUCS}})
        if str(row["match"]) not in ("1", "True", "true"):
            entry["excluded"][REJECTED] += 1
            continue
        pair = pair_identity(row)
        d, i = _number(row["deletion"]), _number(row["insertion"])
        undefined = [metric for metric, value in (("deletion", d), ("insertion", i))
                     if math.isnan(value)]
        for metric in undefined:
            entry["excluded"][f"{metric} {row.get(f'{metric}_reason') or NO_REASON}"] += 1
        if not undefined:
            for metric, value in zip(FRACTIONS, (d, i, (d + i) / 2)):
                entry["values"][metric].append((pair, value))
        for metric in AUCS:
            value = _number(row.get(metric))
            if not math.isnan(value):
                entry["values"][metric].append((pair, value))
    order = list(methods) if methods is not None else list(by_method)
    table = []
    for label in order:
        if label not in by_method:
            continue
        entry = by_method[label]
        line: dict[str, Any] = {"method": label, "iterations": entry["iterations"]}
        for metric in FRACTIONS + AUCS:
            rng = np.random.default_rng([seed, zlib.crc32(f"{label}/{metric}".encode())])
            interval = _mean_ci(entry["values"][metric], num_resamples=num_resamples,
                                rng=rng, level=level)
            line.update({metric: interval.mean, f"{metric}_low": interval.low,
                         f"{metric}_high": interval.high, f"{metric}_n": interval.n,
                         f"{metric}_pairs": interval.pairs})
        line["excluded"] = dict(entry["excluded"])
        table.append(line)
    return table


def _cell(line: Mapping[str, Any], metric: str) -> str:
    mean = line[metric]
    if math.isnan(mean):
        return "n/a"
    if math.isnan(line[f"{metric}_low"]):
        return f"{mean:.4f} [one pair: no interval]"
    return f"{mean:.4f} [{line[f'{metric}_low']:.4f}, {line[f'{metric}_high']:.4f}]"


def _exclusion_order(names: Iterable[str]) -> list[str]:
    """Exclusion names in a table's order: `REJECTED` first, then by name."""
    return sorted(set(names), key=lambda name: (name != REJECTED, name))


def format_table(table: Sequence[Mapping[str, Any]], *, level: float = 0.95) -> str:
    """Markdown: the paper's Table 1 columns, with intervals, row counts and the AUCs.

    Each metric cell is "mean [low, high]" (the bootstrap interval at
    `level`). Deletion, Insertion and their average are over the same rows
    (column "rows", from "pairs" distinct pairs); "excluded rows" counts the
    rows left out, by reason; "AUC rows" gives the rows (and pairs) of each
    AUC. Deletion, Insertion, their average and the deletion AUC: smaller is
    better; insertion AUC: larger is better. The caption says which rows
    count, what the bootstrap resamples and what each exclusion means.

    Args:
      table: one row per method, as `summarize` returns them.
      level: the interval level `summarize` used, for the caption.

    Returns:
      The Markdown table and its caption, ending in a newline.

    References:
      Lu and Ebrahimi, arXiv:2304.06118, Table 1.
    """
    percent = f"{100 * level:g}%"
    header = ["method", "iterations", "deletion", "insertion", "average", "rows", "pairs",
              "excluded rows", "deletion AUC", "insertion AUC", "AUC rows (pairs)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for line in table:
        name, _, count = line["method"].partition("@")
        cells = [name, count or str(line["iterations"] or "-")]
        cells += [_cell(line, metric) for metric in FRACTIONS]
        cells += [str(line["average_n"]), str(line["average_pairs"])]
        excluded = line["excluded"]
        cells.append(", ".join(f"{excluded[exclusion]} {exclusion}"
                               for exclusion in _exclusion_order(excluded)) or "0")
        cells += [_cell(line, metric) for metric in AUCS]
        auc_rows = (f"{line[f'{metric}_n']} ({line[f'{metric}_pairs']})" for metric in AUCS)
        cells.append(" / ".join(dict.fromkeys(auc_rows)))  # once when both agree
        lines.append("| " + " | ".join(cells) + " |")
    pairs = {line["average_pairs"] for line in table}
    resampled = pairs.pop() if len(pairs) == 1 else None
    over = ("each method's distinct pairs (column pairs)" if resampled is None
            else f"{resampled} distinct pair{'' if resampled == 1 else 's'}")
    lines += ["", (
        f"Deletion, Insertion and their average ((D + I) / 2 per row) are means over "
        f"the same rows: the scored rows (pairs the model accepts, both images of each "
        f"pair) where both fractions are defined (column rows); lower is better. Each "
        f"AUC is a mean over the scored rows where it is defined (deletion AUC: lower "
        f"is better; insertion AUC: higher is better). {percent} CI: bootstrap over "
        f"{over}: the rows of one pair (the same two images, in any triplet, on either "
        f"side) are resampled together, so a pair that recurs in several triplets counts "
        f"once; no interval from a single pair.")]
    exclusions = _exclusion_order(e for line in table for e in line["excluded"])
    if exclusions:
        lines += ["", "Excluded rows (a row undefined in both fractions counts under both):"]
        for exclusion in exclusions:
            reason = exclusion.rpartition(" ")[2]
            text = (f"{metrics.REASON_TEXT[REJECTED]} (not scored)" if exclusion == REJECTED
                    else metrics.REASON_TEXT.get(reason, _NO_REASON_TEXT))
            lines.append(f"- {exclusion}: {text}")
    return "\n".join(lines) + "\n"
