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

The engine is public for other mask explainers: `masked_sums` (any masks,
any jobs (masked image, intact reference)) and `finalize` (sums -> maps);
`masks.gaussian_mask_fn` makes S-RISE's masks from keys inside it.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P
from jax.typing import DTypeLike

from srise_jax import _helpers as checks
from srise_jax import config as config_lib
from srise_jax import fills
from srise_jax import masks as masks_lib
from srise_jax import presets
from srise_jax.config import Fill, SRiseConfig, config_options
from srise_jax.similarity import unit_normalize as _unit
from srise_jax.typing import EmbedFn, PyTree

__all__ = [
    "NORMALIZE", "PRESETS", "PairSaliency", "SRiseConfig", "SaliencySums",
    "TripletSaliency", "add_sums", "finalize", "finalize_triplet", "masked_sums",
    "normalize_jointly", "srise_pair", "srise_triplet", "triplet_sums",
    "config_masks", "config_sources", "fill_noise",
]

# The options live in `srise_jax.config` and the named settings in
# `srise_jax.presets` (one definition each); these names stay for callers
# that found them here.
NORMALIZE = config_lib.NORMALIZE
PRESETS = presets.PRESETS


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
    """Partial sums over a range of masks; add them, then `finalize`.

    Job j masks target t_j and compares it with the intact target r_j
    (`masked_sums`'s `pairs`); s_ji is the cosine similarity of
    embed(t_j masked by M_i) to embed(r_j).

    Attributes:
      weighted: Float[Array, "j h w"], sum_i s_ji M_i for each job j.
      coverage: Float[Array, "h w"], sum_i M_i.
      scores: Float[Array, "j n"], s_ji for the masks of the range.
      similarity: Float[Array, "j"], cos(embed(t_j), embed(r_j)), unmasked
        (the same for every range of masks).
      coverage_sq: Float[Array, "h w"], sum_i M_i**2 (the "regression"
        estimator's denominator); None in sums built by hand before it existed.
    """

    weighted: jax.Array
    coverage: jax.Array
    scores: jax.Array
    similarity: jax.Array
    coverage_sq: jax.Array | None = None


# The "noise" fill's base field: `normal(key(FILL_NOISE_SEED), (H, W, C))`.
FILL_NOISE_SEED = 0


def fill_noise(shape: tuple[int, int, int], keys: jax.Array) -> jax.Array:
    """The standard normal fields of the "noise" fill, one per mask key.

    Mask k's field is one fixed i.i.d. field (`FILL_NOISE_SEED`) cyclically
    shifted by an offset (dy, dx) drawn uniformly from
    `jax.random.fold_in(k, 1)`: every pixel's value is a fresh draw of the
    field for each mask, at the cost of two random integers per mask instead
    of H * W * C normals (which took a fifth of a dlib forward pass).

    Args:
      shape: (H, W, C) of the image.
      keys: (B,) the masks' keys.

    Returns:
      Float[Array, "b h w c"], field b = roll(base, (-dy_b, -dx_b)).
    """
    height, width, _ = shape
    base = jax.random.normal(jax.random.key(FILL_NOISE_SEED), shape, jnp.float32)
    tiled = jnp.tile(base, (2, 2, 1))

    def shifted(k: jax.Array) -> jax.Array:
        dy, dx = jax.random.randint(jax.random.fold_in(k, 1), (2,), 0,
                                    jnp.array([height, width]))
        return jax.lax.dynamic_slice(tiled, (dy, dx, 0), shape)

    return jax.vmap(shifted)(keys)


def _fill_for(image: jax.Array, fill: Fill, keys: jax.Array | None) -> jax.Array:
    """The fill of `image`'s masked-out pixels: broadcastable to (B, H, W, C).

    The random fills draw from each mask's key folded with a constant, so a
    mask's fill is as reproducible as the mask, whatever the chunking.
    """
    if not isinstance(fill, str):
        return jnp.asarray(fill, image.dtype)
    mean = image.mean((0, 1))
    if fill == "mean":
        return mean
    blurred = fills.gaussian_blur(image)
    if fill == "blur":
        return blurred
    std = image.std((0, 1))
    noisy = mean + std * fill_noise(image.shape, keys).astype(image.dtype)
    if fill == "noise":
        return noisy
    kind = jax.vmap(lambda k: jax.random.randint(jax.random.fold_in(k, 2), (), 0, 3))(keys)
    kind = kind[:, None, None, None]
    return jnp.where(kind == 0, mean, jnp.where(kind == 1, blurred, noisy))


def _apply_mask(image: jax.Array, masks: jax.Array, fill: Fill,
                compute_dtype: DTypeLike | None = None,
                keys: jax.Array | None = None) -> jax.Array:
    """image (H,W,C), masks (B,H,W) -> (B,H,W,C): image * m + fill * (1 - m)."""
    m = masks[..., None].astype(image.dtype)
    fill = _fill_for(image, fill, keys)
    out = image[None] * m + fill * (1.0 - m)
    return out if compute_dtype is None else out.astype(compute_dtype)


def _is_keyed(sources: PyTree) -> bool:
    """Whether `sources` are `masks.mask_sources`' (keys, index), as random fills need."""
    return (isinstance(sources, tuple) and len(sources) == 2
            and jax.dtypes.issubdtype(getattr(sources[0], "dtype", None),
                                      jax.dtypes.prng_key))


def _sums(embed_fn: EmbedFn, params: PyTree, targets: jax.Array, ref_units: jax.Array,
          job_targets: tuple[int, ...], sources: PyTree, valid: jax.Array,
          make_masks: Callable[[Any], jax.Array], batch_size: int,
          fill: Fill, compute_dtype: DTypeLike | None = None
          ) -> tuple[jax.Array, jax.Array, jax.Array]:
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

    Returns:
      (weighted (J, H, W), coverage (H, W), coverage_sq (H, W), scores (J, N)).
    """
    height, width = targets.shape[1:3]
    keyed = isinstance(fill, str) and fill in config_lib.RANDOM_FILLS

    def chunk(carry: tuple[jax.Array, jax.Array, jax.Array],
              inputs: tuple[PyTree, jax.Array]
              ) -> tuple[tuple[jax.Array, jax.Array, jax.Array], jax.Array]:
        weighted, coverage, coverage_sq = carry
        source, ok = inputs
        m = make_masks(source).astype(jnp.float32) * ok[:, None, None]
        keys = source[0] if keyed else None
        units = [_unit(embed_fn(params, _apply_mask(t, m, fill, compute_dtype, keys)))
                 for t in targets]
        # scores[j, i] = cos(embed(target_j * M_i), reference_j)
        scores = jnp.stack([units[t] @ ref_units[j]
                            for j, t in enumerate(job_targets)])
        flat = m.reshape(m.shape[0], height * width)
        # Padding masks are all zero, so they add nothing to any sum.
        weighted = weighted + scores @ flat
        coverage = coverage + flat.sum(0)
        coverage_sq = coverage_sq + (flat * flat).sum(0)
        return (weighted, coverage, coverage_sq), scores

    num = valid.shape[0]
    full = num // batch_size * batch_size
    carry = (jnp.zeros((len(job_targets), height * width), jnp.float32),
             jnp.zeros((height * width,), jnp.float32),
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
    weighted, coverage, coverage_sq = carry
    return (weighted.reshape(-1, height, width), coverage.reshape(height, width),
            coverage_sq.reshape(height, width), jnp.concatenate(scores, axis=1))


def masked_sums(
    embed_fn: EmbedFn,
    params: PyTree,
    targets: jax.Array,
    pairs: Sequence[tuple[int, int]],
    sources: PyTree,
    make_masks: Callable[[Any], jax.Array],
    *,
    batch_size: int,
    fill: Fill,
    mesh: Mesh | None = None,
    compute_dtype: DTypeLike | None = None,
) -> SaliencySums:
    """The engine of every mask explainer: score-weighted mask sums per job.

    Each job j = (t, r) of `pairs` masks target t and compares it with the
    intact target r: for every mask M_i, s_ji = cos(embed(t * M_i + fill *
    (1 - M_i)), embed(r)). All jobs share the masks, and a target masked by
    several jobs is embedded once per mask. The masks are made chunk by
    chunk from `sources` inside one `lax.scan` (memory O(batch_size), not
    O(N)); full chunks of `batch_size` run in the scan and a shorter last
    chunk runs once after it, at its own size, rather than being padded with
    wasted forward passes. With a `mesh`, the masks are split over all of
    its devices (`jax.shard_map`) and the partial sums reduced with `psum`.

    Pure and jittable with `embed_fn`, `pairs`, `make_masks` and the options
    static. `srise_pair`, `triplet_sums` and the explainers of
    `srise_jax.explainers.perturbation` are built on it; `finalize` turns
    its sums into maps.

    Args:
      embed_fn: `embed_fn(params, images[B, H, W, 3]) -> [B, D]`.
      params: the model's parameter pytree.
      targets: Float[Array, "t h w c"], the images masked or compared.
      pairs: the jobs, as (masked target index, reference target index).
      sources: per-mask inputs of `make_masks`, a pytree whose leaves have
        the leading axis N: keys (`jax.random.split(key, N)`) or the masks
        themselves.
      make_masks: a chunk of `sources` (leading axis B) -> Float[Array,
        "b h w"] in [0, 1]: e.g. `masks.gaussian_mask_fn(shape, ...)` for
        keys, `lambda m: m` for masks.
      batch_size: masked images per `embed_fn` call (masks per chunk).
      fill: masked-out pixels: a value (scalar or per channel), "mean",
        "blur", or one drawn per mask, "noise" or "mixed" (as in
        `SRiseConfig`); these two need `sources` = `masks.mask_sources`'
        (keys, index) and draw from each mask's key.
      mesh: if given, the masks are split over all of its devices.
      compute_dtype: dtype of the masked images given to `embed_fn`; None
        keeps the targets' dtype. Sums accumulate in float32 either way.

    Returns:
      SaliencySums over the N masks: weighted Float[Array, "j h w"],
      coverage Float[Array, "h w"], scores Float[Array, "j n"], similarity
      Float[Array, "j"], coverage_sq Float[Array, "h w"].

    Raises:
      ValueError: an unknown fill, a random fill without keyed sources, or
        batch_size < 1.
    """
    config_lib.check_fill(fill)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if isinstance(fill, str) and fill in config_lib.RANDOM_FILLS and not _is_keyed(sources):
        raise ValueError(f"fill {fill!r} is drawn per mask from the mask's key: sources must be "
                         f"masks.mask_sources(key, N) (keys, index), not given masks")
    units = _unit(embed_fn(params, targets))
    ref_units = jnp.stack([units[r] for _, r in pairs])
    job_targets = tuple(t for t, _ in pairs)
    similarity = jnp.stack([units[t] @ ref_units[j]
                            for j, t in enumerate(job_targets)])
    num = jax.tree.leaves(sources)[0].shape[0]
    body = functools.partial(_sums, embed_fn, params, targets, ref_units,
                             job_targets, make_masks=make_masks,
                             batch_size=batch_size, fill=fill,
                             compute_dtype=compute_dtype)
    if mesh is None:
        weighted, coverage, coverage_sq, scores = body(sources, jnp.ones((num,), jnp.float32))
    else:
        axes = tuple(mesh.axis_names)
        # Equal shares per device; the padding (< mesh.size masks, copies of
        # real ones) is zeroed by `valid`.
        padded = -(-num // mesh.size) * mesh.size
        index = jnp.arange(padded) % num
        sources = jax.tree.map(lambda x: x[index], sources)
        valid = (jnp.arange(padded) < num).astype(jnp.float32)

        def per_device(src: PyTree, ok: jax.Array
                       ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
            w, c, c2, s = body(src, ok)
            # The scores come back whole (they are small: jobs x N floats):
            # an explicit-axes mesh refuses to slice the padding off an array
            # still sharded over a mask axis that N does not divide.
            return (jax.lax.psum(w, axes), jax.lax.psum(c, axes), jax.lax.psum(c2, axes),
                    jax.lax.all_gather(s, axes, axis=1, tiled=True))

        sharded = jax.shard_map(
            per_device, mesh=mesh, in_specs=(P(axes), P(axes)),
            out_specs=(P(), P(), P(), P()),
            # The scan's zero carry is device-invariant, its updates vary per
            # device; the psum above makes the outputs invariant again.
            check_vma=False)
        weighted, coverage, coverage_sq, scores = sharded(
            *(_split_over(x, mesh, axes) for x in (sources, valid)))
    return SaliencySums(weighted, coverage, scores[:, :num], similarity, coverage_sq)


def _split_over(x: jax.Array, mesh: Mesh, axes: tuple[str, ...]) -> jax.Array:
    """Lay `x`'s leading axis over the mesh axes.

    An explicit-axes mesh (`jax.make_mesh`'s default) wants inputs that are
    already sharded as `in_specs` says; on an auto-axes mesh `shard_map`
    reshards by itself.
    """
    if all(t == AxisType.Explicit for t in mesh.axis_types):
        return jax.reshard(x, NamedSharding(mesh, P(axes)))
    return x


def finalize(sums: SaliencySums, *, normalize: str) -> jax.Array:
    """The saliency map of each job from its summed masks.

    Args:
      sums: `masked_sums` over all N masks (ranges combined with `add_sums`).
      normalize: "coverage": sum_i s_ji M_i / sum_i M_i, the mean score of
        the masks that keep each pixel (a pixel no mask touched gets the mean
        score of all masks); "none": the paper's plain sum sum_i s_ji M_i;
        "centred": sum_i (s_ji - mean_i s_ji) M_i / N, the plain sum with
        the masks' mean score as control variate (no centre prior from the
        masks' coverage); "regression": per pixel, the least-squares slope
        of s_ji on M_i(x), sum_i (s_ji - mean s) M_i(x) / (sum_i M_i(x)**2 -
        (sum_i M_i(x))**2 / N), a per-pixel baseline that also divides out
        how much the masks vary there (a pixel whose mask value never varies
        gets 0: no evidence either way).

    Returns:
      Float[Array, "j h w"], one map per job.

    Raises:
      ValueError: unknown `normalize`, or "regression" on sums without
        `coverage_sq`.

    References:
      Lu and Ebrahimi, arXiv:2304.06118, section 3.2.2.
    """
    config_lib.check_normalize(normalize)
    if normalize == "none":
        return sums.weighted
    mean = sums.scores.mean(-1)[:, None, None]
    if normalize in ("centred", "regression"):
        num = sums.scores.shape[-1]
        centred = sums.weighted - mean * sums.coverage
        if normalize == "centred":
            return centred / num
        if sums.coverage_sq is None:
            raise ValueError("normalize='regression' needs the sums' coverage_sq "
                             "(sums from masked_sums have it)")
        spread = sums.coverage_sq - sums.coverage**2 / num
        # Float32 cancellation leaves ~1e-7 * N where the masks never vary.
        varies = spread > 1e-6 * num
        return jnp.where(varies, centred / jnp.where(varies, spread, 1.0), 0.0)
    # A pixel no mask touched carries no information: give it the mean score.
    covered = sums.coverage > 0
    return jnp.where(covered, sums.weighted / jnp.where(covered, sums.coverage, 1.0),
                     mean)


def _pair_from(sums: SaliencySums, jobs: tuple[int, int],
               normalize: str) -> PairSaliency:
    """The pair whose a-side is job `jobs[0]` and b-side job `jobs[1]`."""
    maps = finalize(sums, normalize=normalize)
    ja, jb = jobs
    return PairSaliency(maps[ja], maps[jb], sums.scores[ja], sums.scores[jb],
                        sums.similarity[ja])


@config_options("batch_size", "fill", "normalize", "compute_dtype")
def srise_pair(
    embed_fn: EmbedFn,
    params: PyTree,
    image_a: jax.Array,
    image_b: jax.Array,
    masks: jax.Array,
    *,
    config: SRiseConfig,
    mesh: Mesh | None = None,
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
      batch_size, fill, normalize, compute_dtype: keyword options, the
        fields of `SRiseConfig` (with its defaults).
      mesh: if given, the masks are split over all of its devices.

    Returns:
      PairSaliency.

    References:
      Lu and Ebrahimi, arXiv:2304.06118, section 3.2.2.
    """
    checks.check_images(image_a=image_a, image_b=image_b, channels=None)
    if masks.ndim != 3 or masks.shape[1:] != image_a.shape[:2]:
        raise ValueError(f"masks must be (N, {image_a.shape[0]}, "
                         f"{image_a.shape[1]}), got {tuple(masks.shape)}")
    checks.check_finite("masks", masks)
    targets = jnp.stack([image_a, image_b])
    sums = masked_sums(embed_fn, params, targets, ((0, 1), (1, 0)), masks,
                       lambda m: m, batch_size=config.batch_size, fill=config.fill,
                       mesh=mesh, compute_dtype=config.compute_dtype)
    return _pair_from(sums, (0, 1), config.normalize)


def config_masks(config: SRiseConfig, shape: tuple[int, int]
                 ) -> Callable[[tuple[jax.Array, jax.Array]], jax.Array]:
    """The mask maker of `config` for images of `shape` (`masks.srise_mask_fn`).

    The patch size is `config.patch_size(shape)` (scaled from
    `reference_side`), with the config's centres, scales, antithetic pairs
    and combination rule.

    Args:
      config: the S-RISE settings.
      shape: (H, W) of the images.

    Returns:
      `make(sources)`, sources from `config_sources` (or a slice of them).
    """
    kernel_size, sigma = config.patch_size(shape)
    return masks_lib.srise_mask_fn(
        shape, num_patches=config.num_patches, kernel_size=kernel_size, sigma=sigma,
        combine=config.combine, centres=config.centres, scales=config.scales,
        antithetic=config.antithetic)


def config_sources(config: SRiseConfig, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The N per-mask inputs (keys, index) of `config_masks` from one key.

    Without antithetic pairs, mask i's key is `jax.random.split(key, N)[i]`,
    as `masks.gaussian_masks` draws it.

    Args:
      config: the S-RISE settings (`num_masks`, `antithetic`).
      key: a `jax.random` key.

    Returns:
      (keys (N,), index (N,) int32), `masks.mask_sources`'.
    """
    return masks_lib.mask_sources(key, config.num_masks, antithetic=config.antithetic)


def triplet_sums(
    embed_fn: EmbedFn,
    params: PyTree,
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
    to `finalize_triplet(sums, normalize=config.normalize)` gives the maps of one full run, because mask i is
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
    run = functools.partial(masked_sums, embed_fn, params,
                            make_masks=config_masks(config, probe.shape[:2]),
                            batch_size=config.batch_size, fill=config.fill,
                            compute_dtype=config.compute_dtype,
                            mesh=mesh)
    key_mate, key_nonmate = jax.random.split(key)
    keys = lambda k: jax.tree.map(
        lambda x: jax.lax.dynamic_slice_in_dim(x, start, count),
        config_sources(config, k))
    if config.share_probe_masks:
        targets = jnp.stack([probe, mate, nonmate])
        return (run(targets, ((0, 1), (1, 0), (0, 2), (2, 0)), keys(key_mate)),)
    return (run(jnp.stack([probe, mate]), ((0, 1), (1, 0)), keys(key_mate)),
            run(jnp.stack([probe, nonmate]), ((0, 1), (1, 0)), keys(key_nonmate)))


def add_sums(x: SaliencySums, y: SaliencySums) -> SaliencySums:
    """Combine the sums of two consecutive mask ranges.

    Args:
      x: the sums of masks [i, j), as `triplet_sums` returns them.
      y: the sums of masks [j, k), of the same jobs.

    Returns:
      SaliencySums of masks [i, k): weighted and coverage summed, scores
      concatenated along the mask axis, the (unmasked) similarity kept.
    """
    coverage_sq = (None if x.coverage_sq is None or y.coverage_sq is None
                   else x.coverage_sq + y.coverage_sq)
    return SaliencySums(x.weighted + y.weighted, x.coverage + y.coverage,
                        jnp.concatenate([x.scores, y.scores], axis=-1),
                        x.similarity, coverage_sq)


def finalize_triplet(
    sums: tuple[SaliencySums, ...],
    *deprecated: Any,
    normalize: str = "coverage",
) -> TripletSaliency:
    """Turn the summed `triplet_sums` of all N masks into a `TripletSaliency`.

    Jit it with `normalize` static: `jax.jit(finalize_triplet,
    static_argnames="normalize")`.

    Args:
      sums: `triplet_sums` over all N masks (ranges combined with `add_sums`).
      *deprecated: the old call `finalize_triplet(embed_fn, params, probe,
        mate, nonmate, sums)`, which still works with a DeprecationWarning:
        the sums now carry the similarities it embedded the images for.
      normalize: an estimator of `NORMALIZE`, as in `SRiseConfig`.

    Returns:
      TripletSaliency, equal to `srise_triplet`'s with the same key and config.

    References:
      Lu and Ebrahimi, arXiv:2304.06118, section 3.2.2.
    """
    if deprecated:
        if len(deprecated) != 5:
            raise TypeError("finalize_triplet takes the sums alone (the old form: "
                            "embed_fn, params, probe, mate, nonmate, sums)")
        warnings.warn(
            "finalize_triplet(embed_fn, params, probe, mate, nonmate, sums) is "
            "deprecated: call finalize_triplet(sums, normalize=...); the sums carry "
            "the similarities", DeprecationWarning, stacklevel=2)
        sums = deprecated[-1]
    config_lib.check_normalize(normalize)
    if len(sums) == 1:
        (shared,) = sums
        return TripletSaliency(_pair_from(shared, (0, 1), normalize),
                               _pair_from(shared, (2, 3), normalize))
    sums_mate, sums_nonmate = sums
    return TripletSaliency(_pair_from(sums_mate, (0, 1), normalize),
                           _pair_from(sums_nonmate, (0, 1), normalize))


def srise_triplet(
    embed_fn: EmbedFn,
    params: PyTree,
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
    return finalize_triplet(sums, normalize=config.normalize)


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
