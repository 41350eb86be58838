"""The S-RISE kernel: similarity-weighted random masks explain a face-verification pair.

For a pair (a, b) and masks M_i, S-RISE embeds the masked image a * M_i (b kept
intact), weighs M_i by the cosine similarity s_i of that embedding to b's, and
sums: H_a = sum_i s_i M_i; then the same with the roles swapped (paper section
3.2.2). A triplet (probe, mate, nonmate) is explained as two independent pairs.

Everything here is a pure function of (embed_fn, params, images, masks or key,
options): the user jits at the boundary with `embed_fn` and the options static,
e.g. `jax.jit(srise_triplet, static_argnames=("embed_fn", "config"))`. Masks
and masked images are made chunk by chunk inside one `lax.scan`, so memory is
O(batch_size), not O(num_masks); with a `mesh`, the chunks are split over its
devices with `jax.shard_map` and the partial sums reduced with `psum`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from srise_jax import _helpers as checks
from srise_jax import masks as masks_lib
from srise_jax.similarity import unit_normalize as _unit

EmbedFn = Callable[[object, jax.Array], jax.Array]
# The estimators `normalize` selects (see `SRiseConfig`).
NORMALIZE = ("coverage", "none")


@dataclasses.dataclass(frozen=True)
class SRiseConfig:
    """Options of `srise_triplet` (hashable: pass it as a static argument).

    The defaults take the paper's masks (section 4.1.2: 500 masks of 100
    Gaussian patches, kernel 40, sigma 7, a fresh set for each pair) and
    this library's estimator, which is NOT the paper's: coverage
    normalisation (`normalize="coverage"`) where the paper takes the plain
    weighted sum (section 3.2.2, `normalize="none"`), with black fill (the
    paper's I * M). `PRESETS["paper"]` is the paper as written.

    Why coverage: the patches are clipped at the border, so the masks' mean
    value is 0.71 at the centre of a 112x112 image and 0.41 in its corners
    (0.58 and 0.28 on dlib's 150x150 chips; 2000 masks, key 0). The plain
    sum sum_i s_i M_i therefore carries that centre prior whatever the
    model does; dividing by sum_i M_i, pixel by pixel, leaves the mean
    score of the masks that kept the pixel. (RISE divides by the constant
    N * p instead, which is the same only when every pixel is kept equally
    often.)

    Attributes:
      num_masks: N, masks per pair.
      num_patches: Gaussian patches per mask.
      kernel_size: truncation window of each patch, in pixels.
      sigma: standard deviation of each patch, in pixels.
      batch_size: masked images per `embed_fn` call (and masks per chunk).
      fill: what replaces the masked-out part of the image: a value (scalar,
        or one per channel; the paper's image * mask is 0), "mean" (the
        image's per-channel mean, what Deletion/Insertion fill with) or
        "blur" (the image blurred by a Gaussian of sigma = max(H, W) / 20).
      combine: how a mask's patches combine: "max", "sum" (clipped) or
        "occlude" (see `masks.gaussian_mask`).
      compute_dtype: dtype of the masked images handed to `embed_fn` (e.g.
        jnp.bfloat16, with a model built for it: `load_dlib(dtype=...)`,
        `load_arcface(..., dtype=...)`); None keeps float32. Scores, mask
        sums and saliency accumulate in float32 either way.
      normalize: "coverage" for sum_i s_i M_i / sum_i M_i (the mean score of
        the masks that keep each pixel, free of the masks' border bias; see
        above), "none" for the paper's plain sum.
      share_probe_masks: if True, both pairs use the same masks and the
        probe's masked embeddings serve both (3N forward passes instead of 4N);
        the mate pair's maps are then identical to the default's.
    """

    num_masks: int = 500
    num_patches: int = 100
    kernel_size: int = 40
    sigma: float = 7.0
    batch_size: int = 64
    fill: float | tuple[float, float, float] | str = 0.0
    normalize: str = "coverage"
    share_probe_masks: bool = False
    combine: str = "max"
    compute_dtype: Any = None

    def __post_init__(self):
        if self.num_masks < 1 or self.batch_size < 1:
            raise ValueError(
                f"num_masks and batch_size must be >= 1, got {self.num_masks} "
                f"and {self.batch_size}")
        _check_normalize(self.normalize)
        _check_fill(self.fill)
        if self.combine not in masks_lib.COMBINE:
            raise ValueError(f"combine must be one of {masks_lib.COMBINE}, got "
                             f"{self.combine!r}")


# Named S-RISE settings (options of `SRiseConfig` other than counts, batch
# and devices). "paper": section 4.1.2 and the estimator of section 3.2.2 as
# written (I * M, so black fill; plain weighted sum; the patch rule is not
# stated, "max" is this library's reading). "mean_fill": masked-out pixels
# filled with the image's mean (the fill Deletion/Insertion use) and coverage
# normalisation, clearly more faithful in the ablation (benchmarks/RESULTS.md).
PRESETS = {
    "paper": {"num_patches": 100, "kernel_size": 40, "sigma": 7.0, "fill": 0.0,
              "normalize": "none", "combine": "max"},
    "mean_fill": {"num_patches": 100, "kernel_size": 40, "sigma": 7.0, "fill": "mean",
                  "normalize": "coverage", "combine": "max"},
}


class PairSaliency(NamedTuple):
    """S-RISE explanation of one pair (a, b).

    Attributes:
      saliency_a: Float[Array, "h w"], a masked, b intact.
      saliency_b: Float[Array, "h w"], b masked, a intact.
      scores_a: Float[Array, "n"], cos(embed(a * M_i), embed(b)) per mask.
      scores_b: Float[Array, "n"], cos(embed(b * M_i), embed(a)) per mask.
      similarity: Float[Array, ""], cos(embed(a), embed(b)), unmasked.
    """

    saliency_a: jax.Array
    saliency_b: jax.Array
    scores_a: jax.Array
    scores_b: jax.Array
    similarity: jax.Array


class TripletSaliency(NamedTuple):
    """S-RISE explanation of a triplet: (probe, mate) and (probe, nonmate).

    In both pairs `a` is the probe: `mate.saliency_a` is the probe's map for
    the mate pair, `mate.saliency_b` the mate's map, and likewise `nonmate`.
    """

    mate: PairSaliency
    nonmate: PairSaliency


class SaliencySums(NamedTuple):
    """Partial sums over a range of masks; add them, then `finalize_triplet`.

    Attributes:
      weighted: Float[Array, "j h w"], sum_i s_ji M_i for each job j.
      coverage: Float[Array, "h w"], sum_i M_i.
      scores: Float[Array, "j n"], s_ji for the masks of the range.
    """

    weighted: jax.Array
    coverage: jax.Array
    scores: jax.Array


def _check_normalize(normalize: str) -> None:
    if normalize not in NORMALIZE:
        raise ValueError(
            f"normalize must be one of {NORMALIZE}, got {normalize!r}")


_FILLS = ("mean", "blur")


def _check_fill(fill) -> None:
    if isinstance(fill, str) and fill not in _FILLS:
        raise ValueError(f"fill must be a number, one per channel, or one of {_FILLS}, "
                         f"got {fill!r}")


def _blur(image: jax.Array) -> jax.Array:
    """(H, W, C) image blurred by a separable Gaussian, sigma = max(H, W) / 20."""
    sigma = max(image.shape[:2]) / 20.0
    radius = int(3 * sigma)
    taps = jnp.exp(-jnp.arange(-radius, radius + 1, dtype=jnp.float32) ** 2
                   / (2 * sigma**2))
    taps = taps / taps.sum()
    out = image
    for axis in (0, 1):
        # Edge padding: a zero border would darken the blurred face's rim.
        pad = [(0, 0)] * 3
        pad[axis] = (radius, radius)
        padded = jnp.pad(out, pad, mode="edge")
        n = out.shape[axis]
        out = sum(taps[i] * jax.lax.slice_in_dim(padded, i, i + n, axis=axis)
                  for i in range(2 * radius + 1))
    return out


def _fill_for(image: jax.Array, fill) -> jax.Array:
    """The fill of `image`'s masked-out pixels: broadcastable to (H, W, C)."""
    if isinstance(fill, str):
        _check_fill(fill)
        return image.mean((0, 1)) if fill == "mean" else _blur(image)
    return jnp.asarray(fill, image.dtype)


def _apply_mask(image: jax.Array, masks: jax.Array, fill,
                compute_dtype=None) -> jax.Array:
    """image (H,W,C), masks (B,H,W) -> (B,H,W,C): image * m + fill * (1 - m)."""
    m = masks[..., None].astype(image.dtype)
    fill = _fill_for(image, fill)
    out = image[None] * m + fill * (1.0 - m)
    return out if compute_dtype is None else out.astype(compute_dtype)


def _sums(embed_fn: EmbedFn, params, targets: jax.Array, ref_units: jax.Array,
          job_targets: tuple[int, ...], sources, valid: jax.Array,
          make_masks: Callable[[jax.Array], jax.Array], batch_size: int,
          fill, compute_dtype=None) -> SaliencySums:
    """Weighted mask sums for every job over `sources`, one chunk at a time.

    Full chunks of `batch_size` masks run in one `lax.scan`; a shorter last
    chunk runs once after it (at its own batch size) rather than being padded
    with wasted forward passes.

    Args:
      targets: (T, H, W, C) images that get masked, each embedded once per mask.
      ref_units: (J, D) unit reference embedding of each job.
      job_targets: for each job, the index of its masked target.
      sources: (N, ...) per-mask inputs of `make_masks` (keys, or the masks).
      valid: (N,) 1 for real masks, 0 for padding (multi-device only).
      make_masks: per-chunk inputs -> (B, H, W) masks.
    """
    height, width = targets.shape[1:3]

    def chunk(carry, inputs):
        weighted, coverage = carry
        source, ok = inputs
        m = make_masks(source).astype(jnp.float32) * ok[:, None, None]
        units = [_unit(embed_fn(params, _apply_mask(t, m, fill, compute_dtype)))
                 for t in targets]
        # scores[j, i] = cos(embed(target_j * M_i), reference_j)
        scores = jnp.stack([units[t] @ ref_units[j]
                            for j, t in enumerate(job_targets)])
        flat = m.reshape(m.shape[0], height * width)
        # Padding masks are all zero, so they add nothing to either sum.
        weighted = weighted + scores @ flat
        coverage = coverage + flat.sum(0)
        return (weighted, coverage), scores

    num = valid.shape[0]
    full = num // batch_size * batch_size
    carry = (jnp.zeros((len(job_targets), height * width), jnp.float32),
             jnp.zeros((height * width,), jnp.float32))
    scores = []
    if full:
        chunked = jax.tree.map(
            lambda x: x[:full].reshape((-1, batch_size) + x.shape[1:]),
            (sources, valid))
        carry, chunk_scores = jax.lax.scan(chunk, carry, chunked)
        scores.append(jnp.moveaxis(chunk_scores, 1, 0).reshape(
            len(job_targets), full))
    if num > full:
        carry, rest = chunk(carry, jax.tree.map(lambda x: x[full:],
                                                (sources, valid)))
        scores.append(rest)
    weighted, coverage = carry
    return SaliencySums(weighted.reshape(-1, height, width),
                        coverage.reshape(height, width),
                        jnp.concatenate(scores, axis=1))


def _run(embed_fn, params, targets, pairs, sources, make_masks, *,
         batch_size: int, fill, mesh: Mesh | None,
         compute_dtype=None) -> tuple[SaliencySums, jax.Array]:
    """Reference embeddings, then the mask sums, on one device or a mesh.

    `pairs` lists jobs as (masked target index, reference target index).
    Returns the sums (padding removed from the scores) and the (T, D) unit
    embeddings of the unmasked targets.
    """
    units = _unit(embed_fn(params, targets))
    ref_units = jnp.stack([units[r] for _, r in pairs])
    job_targets = tuple(t for t, _ in pairs)
    num = jax.tree.leaves(sources)[0].shape[0]
    body = functools.partial(_sums, embed_fn, params, targets, ref_units,
                             job_targets, make_masks=make_masks,
                             batch_size=batch_size, fill=fill,
                             compute_dtype=compute_dtype)
    if mesh is None:
        sums = body(sources, jnp.ones((num,), jnp.float32))
    else:
        axes = tuple(mesh.axis_names)
        # Equal shares per device; the padding (< mesh.size masks, copies of
        # real ones) is zeroed by `valid`.
        padded = -(-num // mesh.size) * mesh.size
        index = jnp.arange(padded) % num
        sources = jax.tree.map(lambda x: x[index], sources)
        valid = (jnp.arange(padded) < num).astype(jnp.float32)

        def per_device(src, ok):
            s = body(src, ok)
            # The scores come back whole (they are small: jobs x N floats):
            # an explicit-axes mesh refuses to slice the padding off an array
            # still sharded over a mask axis that N does not divide.
            return SaliencySums(
                jax.lax.psum(s.weighted, axes), jax.lax.psum(s.coverage, axes),
                jax.lax.all_gather(s.scores, axes, axis=1, tiled=True))

        sharded = jax.shard_map(
            per_device, mesh=mesh, in_specs=(P(axes), P(axes)),
            out_specs=SaliencySums(P(), P(), P()),
            # The scan's zero carry is device-invariant, its updates vary per
            # device; the psum above makes the outputs invariant again.
            check_vma=False)
        sums = sharded(*(_split_over(x, mesh, axes) for x in (sources, valid)))
    return sums._replace(scores=sums.scores[:, :num]), units


def _split_over(x: jax.Array, mesh: Mesh, axes: tuple[str, ...]) -> jax.Array:
    """Lay `x`'s leading axis over the mesh axes.

    An explicit-axes mesh (`jax.make_mesh`'s default) wants inputs that are
    already sharded as `in_specs` says; on an auto-axes mesh `shard_map`
    reshards by itself.
    """
    if all(t == AxisType.Explicit for t in mesh.axis_types):
        return jax.reshard(x, NamedSharding(mesh, P(axes)))
    return x


def _finalize(weighted: jax.Array, coverage: jax.Array, scores: jax.Array,
              normalize: str) -> jax.Array:
    if normalize == "none":
        return weighted
    # A pixel no mask touched carries no information: give it the mean score.
    mean = scores.mean(-1)[:, None, None]
    return jnp.where(coverage > 0, weighted / jnp.where(coverage > 0, coverage,
                                                        1.0), mean)


def _pair_from(sums: SaliencySums, units: jax.Array, jobs: tuple[int, int],
               normalize: str, a: int, b: int) -> PairSaliency:
    maps = _finalize(sums.weighted, sums.coverage, sums.scores, normalize)
    ja, jb = jobs
    return PairSaliency(maps[ja], maps[jb], sums.scores[ja], sums.scores[jb],
                        units[a] @ units[b])


def srise_pair(
    embed_fn: EmbedFn,
    params,
    image_a: jax.Array,
    image_b: jax.Array,
    masks: jax.Array,
    *,
    batch_size: int = 64,
    fill=0.0,
    normalize: str = "coverage",
    mesh: Mesh | None = None,
    compute_dtype=None,
) -> PairSaliency:
    """S-RISE saliency maps of both images of a pair, with given masks.

    A mask is applied to one image at a time (paper 3.2.2): `saliency_a` comes
    from a * M_i against intact b, `saliency_b` from b * M_i against intact a.

    Args:
      embed_fn: `embed_fn(params, images[B, H, W, 3]) -> [B, D]`.
      params: the model's parameter pytree.
      image_a: Float[Array, "h w 3"] RGB in [0, 1].
      image_b: Float[Array, "h w 3"].
      masks: Float[Array, "n h w"] in [0, 1], e.g. `gaussian_masks(key, n)`.
      batch_size: masked images per `embed_fn` call.
      fill: masked-out pixels: a value (scalar or per channel), "mean" or
        "blur" (as in `SRiseConfig`).
      normalize: "coverage" (sum s_i M_i / sum M_i) or "none" (plain sum).
      mesh: if given, the masks are split over all of its devices.
      compute_dtype: dtype of the masked images given to `embed_fn` (as in
        `SRiseConfig`).

    Returns:
      PairSaliency.

    References:
      Lu and Ebrahimi, arXiv:2304.06118, section 3.2.2.
    """
    _check_normalize(normalize)
    checks.check_images(image_a=image_a, image_b=image_b, channels=None)
    if masks.ndim != 3 or masks.shape[1:] != image_a.shape[:2]:
        raise ValueError(f"masks must be (N, {image_a.shape[0]}, "
                         f"{image_a.shape[1]}), got {tuple(masks.shape)}")
    checks.check_finite("masks", masks)
    targets = jnp.stack([image_a, image_b])
    sums, units = _run(embed_fn, params, targets, ((0, 1), (1, 0)), masks,
                       lambda m: m, batch_size=batch_size, fill=fill,
                       mesh=mesh, compute_dtype=compute_dtype)
    return _pair_from(sums, units, (0, 1), normalize, 0, 1)


def _mask_maker(config: SRiseConfig, shape: tuple[int, int]):
    return jax.vmap(functools.partial(
        masks_lib.gaussian_mask, shape=shape, num_patches=config.num_patches,
        kernel_size=config.kernel_size, sigma=config.sigma,
        combine=config.combine))


def triplet_sums(
    embed_fn: EmbedFn,
    params,
    probe: jax.Array,
    mate: jax.Array,
    nonmate: jax.Array,
    key: jax.Array,
    config: SRiseConfig = SRiseConfig(),
    *,
    start: int | jax.Array = 0,
    count: int | None = None,
    mesh: Mesh | None = None,
) -> tuple[SaliencySums, ...]:
    """Partial S-RISE sums of a triplet over masks [start, start + count) of N.

    The building block of `srise_triplet` for callers that want to report
    progress or checkpoint between ranges of masks (the CLI does): summing
    the `SaliencySums` of consecutive ranges with `add_sums` and passing them
    to `finalize_triplet` gives the maps of one full run, because mask i is
    made from `jax.random.split(pair_key, N)[i]` whatever the range.

    `count` is static (it sets the shapes), `start` may be traced: a loop
    over ranges of one length compiles once, whatever the start.

    Args:
      embed_fn, params, probe, mate, nonmate, key, config, mesh: as in
        `srise_triplet`.
      start: first mask of the range (a traced start is not range-checked).
      count: masks in the range; default: all N from `start`.

    Returns:
      One `SaliencySums` per mask set: (mate, nonmate) jobs; or a single one
      over the shared masks when `config.share_probe_masks`.
    """
    checks.check_images(probe=probe, mate=mate, nonmate=nonmate, channels=None)
    if count is None:
        count = config.num_masks - int(start)
    if not 0 < count <= config.num_masks or (
            isinstance(start, int) and not 0 <= start <= config.num_masks - count):
        raise ValueError(f"need 0 <= start < start + count <= num_masks, got "
                         f"start {start}, count {count}, num_masks "
                         f"{config.num_masks}")
    make = _mask_maker(config, probe.shape[:2])
    run = functools.partial(_run, embed_fn, params, make_masks=make,
                            batch_size=config.batch_size, fill=config.fill,
                            compute_dtype=config.compute_dtype,
                            mesh=mesh)
    key_mate, key_nonmate = jax.random.split(key)
    keys = lambda k: jax.lax.dynamic_slice_in_dim(
        jax.random.split(k, config.num_masks), start, count)
    if config.share_probe_masks:
        targets = jnp.stack([probe, mate, nonmate])
        sums, _ = run(targets, ((0, 1), (1, 0), (0, 2), (2, 0)),
                      keys(key_mate))
        return (sums,)
    sums_mate, _ = run(jnp.stack([probe, mate]), ((0, 1), (1, 0)),
                       keys(key_mate))
    sums_nonmate, _ = run(jnp.stack([probe, nonmate]), ((0, 1), (1, 0)),
                          keys(key_nonmate))
    return sums_mate, sums_nonmate


def add_sums(x: SaliencySums, y: SaliencySums) -> SaliencySums:
    """Combine the sums of two consecutive mask ranges.

    Args:
      x: the sums of masks [i, j), as `triplet_sums` returns them.
      y: the sums of masks [j, k), of the same jobs.

    Returns:
      SaliencySums of masks [i, k): weighted and coverage summed, scores
      concatenated along the mask axis.
    """
    return SaliencySums(x.weighted + y.weighted, x.coverage + y.coverage,
                        jnp.concatenate([x.scores, y.scores], axis=-1))


def finalize_triplet(
    embed_fn: EmbedFn,
    params,
    probe: jax.Array,
    mate: jax.Array,
    nonmate: jax.Array,
    sums: tuple[SaliencySums, ...],
    *,
    normalize: str = "coverage",
) -> TripletSaliency:
    """Turn the summed `triplet_sums` of all N masks into a `TripletSaliency`.

    Args:
      embed_fn, params, probe, mate, nonmate: as in `srise_triplet`.
      sums: `triplet_sums` over all N masks (ranges combined with `add_sums`).
      normalize: "coverage" or "none", as in `SRiseConfig`.

    Returns:
      TripletSaliency, equal to `srise_triplet`'s with the same key and config.

    References:
      Lu and Ebrahimi, arXiv:2304.06118, section 3.2.2.
    """
    _check_normalize(normalize)
    units = _unit(embed_fn(params, jnp.stack([probe, mate, nonmate])))
    if len(sums) == 1:
        (shared,) = sums
        return TripletSaliency(
            _pair_from(shared, units, (0, 1), normalize, 0, 1),
            _pair_from(shared, units, (2, 3), normalize, 0, 2))
    sums_mate, sums_nonmate = sums
    return TripletSaliency(
        _pair_from(sums_mate, units, (0, 1), normalize, 0, 1),
        _pair_from(sums_nonmate, units, (0, 1), normalize, 0, 2))


def srise_triplet(
    embed_fn: EmbedFn,
    params,
    probe: jax.Array,
    mate: jax.Array,
    nonmate: jax.Array,
    key: jax.Array,
    config: SRiseConfig = SRiseConfig(),
    *,
    mesh: Mesh | None = None,
) -> TripletSaliency:
    """S-RISE maps of a triplet: the (probe, mate) and (probe, nonmate) pairs.

    Masks are generated inside the compiled loop from `key` (mate pair from
    `split(key)[0]`, nonmate pair from `split(key)[1]`, mask i of a pair from
    `split(pair_key, N)[i]`), so `srise_triplet` equals `srise_pair` with
    `gaussian_masks(split(key)[0], N)` for the mate pair. Jit it with
    `embed_fn` and `config` static.

    Args:
      embed_fn: `embed_fn(params, images[B, H, W, 3]) -> [B, D]`.
      params: the model's parameter pytree.
      probe, mate, nonmate: Float[Array, "h w 3"] RGB in [0, 1].
      key: a `jax.random` key.
      config: `SRiseConfig`.
      mesh: if given, the masks are split over all of its devices.

    Returns:
      TripletSaliency; `normalize_jointly` scales its maps for display.

    References:
      Lu and Ebrahimi, arXiv:2304.06118, section 3.2.2 (steps 1-7).
    """
    sums = triplet_sums(embed_fn, params, probe, mate, nonmate, key, config,
                        mesh=mesh)
    return finalize_triplet(embed_fn, params, probe, mate, nonmate, sums,
                            normalize=config.normalize)


def normalize_jointly(triplet: TripletSaliency) -> TripletSaliency:
    """Scale a triplet's four maps to [0, 1] with ONE shared offset and scale.

    A shared scale keeps the non-match maps "shallower" than the match maps
    when the model finds the non-match less similar, as in the paper's Fig. 3;
    per-map normalization would hide exactly that.

    Args:
      triplet: the maps of `srise_triplet`.

    Returns:
      TripletSaliency with the four maps in [0, 1] (scores and similarities
      unchanged).

    References:
      Lu and Ebrahimi, arXiv:2304.06118, Fig. 3.
    """
    maps = jnp.stack([triplet.mate.saliency_a, triplet.mate.saliency_b,
                      triplet.nonmate.saliency_a, triplet.nonmate.saliency_b])
    low, high = maps.min(), maps.max()
    scaled = (maps - low) / jnp.maximum(high - low, 1e-12)
    return TripletSaliency(
        triplet.mate._replace(saliency_a=scaled[0], saliency_b=scaled[1]),
        triplet.nonmate._replace(saliency_a=scaled[2], saliency_b=scaled[3]))
