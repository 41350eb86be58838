"""What a benchmark runs: methods by name, their keys, their jitted maps and scores.

`parse_methods` reads "srise@500,gradient,..." into `Method`s;
`make_explain_fns` compiles them (the S-RISE counts of one preset as one
convergence run) and `prepare_methods` adds each label's iterations for
results.csv; `make_score_fn` scores a map with Deletion/Insertion and the
AUCs under one metric fill (`parse_metric_fills`). Keys come from the run's key, the triplet, the job and a hash of the
method's label (`job_key`, `method_key`), so every map is reproducible on
its own; the metric's noise ("impute") from the job's key and a hash of the
fill's name (`metric_key`).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from srise_jax import metrics, presets
from srise_jax.explainers import perturbation, registry
from srise_jax.similarity import unit_normalize
from srise_jax.typing import EmbedFn, PyTree

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
      preset: for "srise" only, a name of `presets.PRESETS` whose settings
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
        options = dict(presets.PRESETS[self.preset]) if self.preset is not None else {}
        if self.iterations is not None:
            options[self.option] = self.iterations
        return options


def parse_methods(spec: str | Iterable[str]) -> tuple[Method, ...]:
    """Methods from "srise@500,gradient,..." (or a list of such labels).

    Args:
      spec: comma-separated labels "name" or "name@N" (blanks ignored), or an
        iterable of labels; each name from `explainers.list_explainers()`;
        S-RISE also as "srise[preset]@N" with a preset of `presets.PRESETS`.

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
            if name != "srise" or preset not in presets.PRESETS or not head.endswith("]"):
                raise ValueError(f"method {label!r}: presets are srise[name] with name one "
                                 f"of {', '.join(presets.PRESETS)}")
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


def default_reference(methods: Sequence[Method]) -> str | None:
    """The method a run's paired tables compare the others with, by default.

    The library's default S-RISE ("srise" without a preset), at its largest
    mask count: the method the benchmark exists to judge. A count left
    unset is the explainer's default `num_masks`.

    Args:
      methods: a run's methods (`parse_methods`).

    Returns:
      That method's label, or None when the run has no default S-RISE.
    """
    plain = [m for m in methods if m.name == "srise" and m.preset is None]
    if not plain:
        return None
    unset = inspect.signature(registry.get_explainer("srise")).parameters["num_masks"].default
    return max(plain, key=lambda m: unset if m.iterations is None else m.iterations).label


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


def make_explain_fns(embed_fn: EmbedFn, methods: Sequence[Method], *,
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
        settings = dict(presets.PRESETS[preset]) if preset is not None else {}

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


class MethodSet(NamedTuple):
    """What a benchmark run explains with: the compiled parts and each label's iterations.

    Attributes:
      parts: the `ExplainPart`s; together they produce every label.
      iterations: {label: the "iterations" cell of its results.csv rows}
        (an int, or "" for an explainer's default), in the table's order.
      ablation: the "ablation" entry of the run's run.json: None for a
        method list (`prepare_methods`), the settings every label shares
        for the ablation grid (`srise_jax.ablation.prepare_grid`). Runs of
        the two kinds never resume into one another.
    """

    parts: tuple[ExplainPart, ...]
    iterations: Mapping[str, int | str]
    ablation: Mapping[str, Any] | None = None

    @property
    def labels(self) -> tuple[str, ...]:
        """Every method's label, in the table's order."""
        return tuple(self.iterations)


def prepare_methods(embed_fn: EmbedFn, methods: str | Iterable[str] | Sequence[Method], *,
                    feature_fns: tuple[Callable, Callable] | None = None,
                    batch_size: int = 64) -> MethodSet:
    """The methods of a benchmark run, compiled (`make_explain_fns`) and labelled.

    Args:
      embed_fn: the model (static).
      methods: `Method`s, or labels as `parse_methods` reads them.
      feature_fns: the model's `(features_fn, head_fn)` for "gradcam".
      batch_size: forward-pass batch of the perturbation methods.

    Returns:
      The `MethodSet`: one label per method, in the order given, its
      iterations its `Method.iterations` ("" when not set).

    Raises:
      ValueError: as `parse_methods`, or "gradcam" without `feature_fns`.
    """
    methods = (parse_methods(methods) if isinstance(methods, str) else tuple(methods))
    if not all(isinstance(m, Method) for m in methods):
        methods = parse_methods(methods)
    parts = make_explain_fns(embed_fn, methods, feature_fns=feature_fns,
                             batch_size=batch_size)
    return MethodSet(parts, {m.label: m.iterations or "" for m in methods})


def metric_key(key: jax.Array, fill: str) -> jax.Array:
    """The key of a job's scores under one metric fill: independent of the fills run.

    Only ``"impute"`` draws from it (the noise of ROAD's imputation); the
    other fills are deterministic. Like `method_key`, it folds in a hash of
    the fill's name (not its position in the run's list), so a fill added to
    a finished run scores with the key a run of that fill alone would have
    used, and every method of a job is scored with the same noise (a paired
    comparison).

    Args:
      key: a job's `jax.random` key (`job_key`).
      fill: one of `metrics.METRIC_FILLS`.

    Returns:
      A `jax.random` key: `key` folded with the CRC-32 of "metric_fill/<fill>".
    """
    return jax.random.fold_in(key, zlib.crc32(f"metric_fill/{fill}".encode()) & 0x7FFFFFFF)


def parse_metric_fills(spec: str | Iterable[str]) -> tuple[str, ...]:
    """Metric fills from "mean,blur,impute" (or a list of names).

    Args:
      spec: comma-separated names of `metrics.METRIC_FILLS` (blanks
        ignored), or an iterable of names.

    Returns:
      The fills in the order given.

    Raises:
      ValueError: an unknown name (the message lists the known ones), a
        name given twice, or none.
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    fills = tuple(name.strip() for name in names if name.strip())
    known = tuple(metrics.METRIC_FILLS)
    unknown = [fill for fill in fills if fill not in known]
    if unknown:
        raise ValueError(f"unknown metric fill(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(known)}")
    duplicates = sorted({fill for fill in fills if fills.count(fill) > 1})
    if duplicates:
        raise ValueError(f"metric fills given twice: {', '.join(duplicates)}")
    if not fills:
        raise ValueError("no metric fill given")
    return fills


def make_score_fn(embed_fn: EmbedFn, *, step: int, batch_size: int = 32,
                  num_points: int = 33, fill: str = "mean") -> Callable:
    """Jitted `score(params, image, reference, saliency, threshold, key=None) -> dict`.

    The dict holds () arrays "deletion", "insertion" (the paper's fractions,
    exact: `metrics.deletion` / `insertion` with this coarse `step`; NaN
    when undefined), "deletion_reason", "insertion_reason" (int32
    `metrics.MetricResult.reason`: 0 when defined; `metrics.reason_name` names
    it), "deletion_auc", "insertion_auc" and (num_points,)
    "deletion_curve", "insertion_curve" (`metrics.similarity_curve`), every
    one with the removed pixels replaced as `fill` says.

    Args:
      embed_fn: `embed_fn(params, images[B, H, W, 3]) -> [B, D]`.
      step: the coarse grid of the exact fractions' search, as in
        `metrics.deletion` (the same answer as step=1 when the similarity
        crosses the threshold once).
      batch_size: perturbed images per `embed_fn` call.
      num_points: points of each similarity curve.
      fill: what replaces a removed pixel, one of `metrics.METRIC_FILLS`:
        "mean" (the paper's, the default), "blur", "impute".

    Returns:
      The jitted `score`; its `image`, `reference` are Float[Array, "h w 3"],
      `saliency` Float[Array, "h w"] (`image`'s map), `threshold` the
      model's match threshold on the cosine similarity and `key` the
      `jax.random` key of the fill's noise ("impute"; the benchmark passes
      `metric_key(job_key(...), fill)`), the same key for the two fractions
      and the two curves, so all four see the same imputed images.

    Raises:
      ValueError: an unknown `fill`.

    References:
      Lu and Ebrahimi, arXiv:2304.06118, section 4.4 (Deletion, Insertion).
    """
    (fill,) = parse_metric_fills([fill])

    def score(params, image, reference, saliency, threshold, key=None):
        args = (embed_fn, params, image, reference, saliency)
        options = {"fill": fill, "key": key}
        out = {}
        for mode, exact in (("deletion", metrics.deletion), ("insertion", metrics.insertion)):
            result = exact(*args, threshold, step=step, batch_size=batch_size, **options)
            out[mode], out[f"{mode}_reason"] = result.fraction, result.reason
            curve = metrics.similarity_curve(*args, mode=mode, num_points=num_points,
                                             batch_size=batch_size, **options)
            out[f"{mode}_auc"] = curve.auc
            out[f"{mode}_curve"] = curve.similarity
        return out

    return jax.jit(score)


def triplet_similarities(embed_fn: EmbedFn, params: PyTree, probe: jax.Array,
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
def _probe_cosines(embed_fn: EmbedFn, params: PyTree, faces: jax.Array) -> jax.Array:
    """(2,) cos(faces[0], faces[1:]), compiled once per model and image size."""
    units = unit_normalize(embed_fn(params, faces))
    return units[1:] @ units[0]
