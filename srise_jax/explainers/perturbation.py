"""Perturbation explainers: random masks, one similarity score per masked image.

Each explainer masks `image` only (the reference stays intact), embeds every
masked image once, and turns the N cosine similarities to the reference into a
map: S-RISE and RISE weigh the masks by the scores, CorrRISE correlates them
with the scores pixel by pixel. The masked embeddings come from the S-RISE
engine (`srise.masked_sums`) with a single job, so an explanation costs N
forward passes, not the 2N of `srise.srise_pair`, and for S-RISE and RISE the
masks are made chunk by chunk inside the compiled loop (memory O(batch_size)).

Their S-RISE options are the fields of `SRiseConfig`, with its defaults
(`config.config_options`); `mesh=` splits the masks over a device mesh.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from srise_jax import _helpers as checks
from srise_jax import masks as masks_lib
from srise_jax import srise
from srise_jax.config import SRiseConfig, config_options
from srise_jax.explainers.registry import register
from srise_jax.stats import average_ranks, spearman
from srise_jax.typing import EmbedFn, PyTree

__all__ = [
    "average_ranks", "corrrise", "corrrise_dissimilar", "corrrise_similar",
    "rise_map", "spearman", "srise_convergence", "srise_map",
]

# The one job of `srise.masked_sums`: mask target 0 (the image), compare with
# target 1 (the intact reference).
_IMAGE_JOB = ((0, 1),)

# `SRiseConfig` fields that are options of a single-image S-RISE map (sharing
# masks between the pairs of a triplet means nothing here).
_SRISE_OPTIONS = ("num_masks", "num_patches", "kernel_size", "sigma", "batch_size",
                  "fill", "normalize", "combine", "compute_dtype", "reference_side",
                  "centres", "scales", "antithetic")
# The mask options of S-RISE's Gaussian masks (CorrRISE takes them too).
_MASK_OPTIONS = ("num_patches", "kernel_size", "sigma", "combine", "reference_side",
                 "centres", "scales", "antithetic")


def _masked_sums(embed_fn: EmbedFn, params: PyTree, image: jax.Array,
                 reference: jax.Array, sources: Any,
                 make_masks: Callable[[Any], jax.Array], *, config: SRiseConfig,
                 mesh: Mesh | None) -> srise.SaliencySums:
    """Score-weighted mask sums of `image` masked by each mask against `reference`."""
    checks.check_images(image=image, reference=reference, channels=None)
    return srise.masked_sums(embed_fn, params, jnp.stack([image, reference]),
                             _IMAGE_JOB, sources, make_masks,
                             batch_size=config.batch_size, fill=config.fill,
                             mesh=mesh, compute_dtype=config.compute_dtype)


@register("srise", kind="perturbation")
@config_options(*_SRISE_OPTIONS)
def srise_map(embed_fn: EmbedFn, params: PyTree, image: jax.Array,
              reference: jax.Array, key: jax.Array, *, config: SRiseConfig,
              mesh: Mesh | None = None) -> jax.Array:
    """S-RISE map of `image` for its similarity to `reference`.

    Equals `srise.srise_pair(..., masks).saliency_a` with the same masks
    (`srise.config_masks(config, shape)(srise.config_sources(config, key))`;
    with the default options mask i is `gaussian_masks`' from
    `jax.random.split(key, num_masks)[i]`, patches scaled to the image by
    `SRiseConfig.patch_size`), but masks only `image` and makes the masks
    inside the compiled loop.

    Args:
      embed_fn: `embed_fn(params, images[B, H, W, 3]) -> [B, D]`.
      params: the model's parameter pytree.
      image: Float[Array, "h w 3"] RGB in [0, 1], the image explained.
      reference: Float[Array, "h w 3"], kept intact.
      key: a `jax.random` key.
      num_masks, num_patches, kernel_size, sigma, batch_size, fill,
        normalize, combine, compute_dtype, reference_side, centres, scales,
        antithetic: keyword options, the fields of `srise.SRiseConfig`
        (with its defaults).
      mesh: if given, the masks are split over all of its devices.

    Returns:
      Float[Array, "h w"].

    References:
      Lu and Ebrahimi, arXiv:2304.06118, section 3.2.
    """
    sums = _masked_sums(embed_fn, params, image, reference,
                        srise.config_sources(config, key),
                        srise.config_masks(config, image.shape[:2]),
                        config=config, mesh=mesh)
    return srise.finalize(sums, normalize=config.normalize)[0]


@config_options(*(name for name in _SRISE_OPTIONS if name != "num_masks"))
def srise_convergence(embed_fn: EmbedFn, params: PyTree, image: jax.Array,
                      reference: jax.Array, key: jax.Array, *,
                      counts: tuple[int, ...] = (10, 100, 500, 1000),
                      config: SRiseConfig, mesh: Mesh | None = None) -> jax.Array:
    """S-RISE maps of `image` after the first `counts[k]` masks of one run.

    One sequence of max(counts) masks is drawn (as `srise_map` draws them
    with num_masks = max(counts)) and the map is read off after
    each count, so the whole series (the paper's Fig. 6 and Table 1 rows at
    10, 100, 500 and 1000 masks) costs max(counts) forward passes instead of
    their sum. The first n masks of the sequence are n independent draws, so
    the map at n is an S-RISE map with n masks; the last one equals
    `srise_map(..., key, num_masks=max(counts))` exactly.

    Args:
      embed_fn, params, image, reference, key, mesh: as in `srise_map`.
      counts: increasing positive mask counts (static).
      num_patches, kernel_size, sigma, batch_size, fill, normalize, combine,
        compute_dtype, reference_side, centres, scales, antithetic: as in
        `srise_map`.

    Returns:
      Float[Array, "k h w"], the map after each count.
    """
    counts = tuple(int(c) for c in counts)
    if not counts or counts[0] < 1 or any(b <= a for a, b in zip(counts, counts[1:])):
        raise ValueError(f"counts must be increasing positive ints, got {counts}")
    config = dataclasses.replace(config, num_masks=counts[-1])
    sources = srise.config_sources(config, key)
    make = srise.config_masks(config, image.shape[:2])
    maps, total, start = [], None, 0
    for stop in counts:
        part = jax.tree.map(lambda x, a=start, b=stop: x[a:b], sources)
        sums = _masked_sums(embed_fn, params, image, reference, part,
                            make, config=config, mesh=mesh)
        total = sums if total is None else srise.add_sums(total, sums)
        maps.append(srise.finalize(total, normalize=config.normalize)[0])
        start = stop
    return jnp.stack(maps)


@register("rise", kind="perturbation")
@config_options("num_masks", "batch_size", "fill", "compute_dtype")
def rise_map(embed_fn: EmbedFn, params: PyTree, image: jax.Array,
             reference: jax.Array, key: jax.Array, *, grid: int = 7,
             p: float = 0.5, config: SRiseConfig,
             mesh: Mesh | None = None) -> jax.Array:
    """Classic RISE masks weighed by the cosine similarity to `reference`.

    RISE divides sum_i s_i M_i by N * p, the expected coverage of a pixel;
    dividing by the actual coverage sum_i M_i is the same in expectation and
    removes the masks' border and sampling bias, as S-RISE's "coverage" does.
    The fill is S-RISE's default (the image's mean), so that the two mask
    explainers differ only by their masks; RISE's own I * M is `fill=0.0`.

    Args:
      embed_fn, params, image, reference, key, mesh: as in `srise_map`.
      num_masks, batch_size, fill, compute_dtype: as in `srise_map`.
      grid: cells per side of the binary grid (`masks.rise_mask`).
      p: probability that a cell is kept.

    Returns:
      Float[Array, "h w"].

    References:
      Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for
      Explanation of Black-box Models", BMVC 2018.
    """
    rise = masks_lib.rise_mask_fn(image.shape[:2], grid=grid, p=p)
    sums = _masked_sums(embed_fn, params, image, reference,
                        masks_lib.mask_sources(key, config.num_masks),
                        lambda source: rise(source[0]), config=config, mesh=mesh)
    return srise.finalize(sums, normalize="coverage")[0]


@config_options("num_masks", "batch_size", "fill", "compute_dtype", *_MASK_OPTIONS)
def corrrise(embed_fn: EmbedFn, params: PyTree, image: jax.Array,
             reference: jax.Array, key: jax.Array, *, masks: str = "gaussian",
             grid: int = 7, p: float = 0.5, config: SRiseConfig,
             mesh: Mesh | None = None) -> tuple[jax.Array, jax.Array]:
    """CorrRISE: per-pixel rank correlation of the masks with the similarity.

    r(x) = Spearman(M_1(x) .. M_N(x); s_1 .. s_N) with s_i the cosine
    similarity of embed(image * M_i) to embed(reference). r > 0: keeping the
    pixel raises the similarity ("similar" regions); r < 0: keeping it lowers
    it ("dissimilar" regions). The maps are r and -r, signed: their positive
    parts are the paper's two maps, and keeping the rest (rather than clipping
    it to 0) keeps every pixel's order, which deletion-style metrics need.

    Ranking a pixel needs all N of its mask values, so the masks are made up
    front: N x H x W floats (500 x 112 x 112 float32 = 25 MB).

    Args:
      embed_fn, params, image, reference, key, mesh: as in `srise_map`.
      num_masks, batch_size, fill, compute_dtype, num_patches, kernel_size,
        sigma, combine, reference_side, centres, scales, antithetic: as in
        `srise_map`.
      masks: "gaussian" (S-RISE masks: the mask options above) or "rise" (binary grid masks: grid, p; their many exact 0s
        and 1s tie, which the average ranks handle).
      grid, p: as in `rise_map`.

    Returns:
      (similar, dissimilar), each Float[Array, "h w"] in [-1, 1],
      dissimilar = -similar.

    References:
      Lu, Xu and Ebrahimi, "Towards Visual Saliency Explanations of Face
      Verification", WACV 2024, arXiv:2305.08546.
    """
    shape = image.shape[:2]
    sources = srise.config_sources(config, key)
    if masks == "gaussian":
        make = srise.config_masks(config, shape)
    elif masks == "rise":
        rise = masks_lib.rise_mask_fn(shape, grid=grid, p=p)
        make = lambda source: rise(source[0])
    else:
        raise ValueError(f"masks must be 'gaussian' or 'rise', got {masks!r}")
    # The engine remakes each chunk's masks from the same sources (cheap next
    # to the forward passes), so per-mask random fills draw as in `srise_map`.
    all_masks = make(sources)
    sums = _masked_sums(embed_fn, params, image, reference, sources, make,
                        config=config, mesh=mesh)
    similar = spearman(sums.scores[0], all_masks)
    return similar, -similar


def _options_of(source: Callable[..., Any]) -> Callable[[Callable[..., Any]],
                                                       Callable[..., Any]]:
    """Decorator: give a function that forwards its options to `source` its signature.

    The arguments and options (with their defaults) stay those of `source`,
    which checks them; the return annotation stays the function's own.
    """
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__signature__ = inspect.signature(source).replace(  # type: ignore[attr-defined]
            return_annotation=inspect.signature(fn).return_annotation)
        return fn

    return decorate


@register("corrrise_similar", kind="perturbation")
@_options_of(corrrise)
def corrrise_similar(embed_fn: EmbedFn, params: PyTree, image: jax.Array,
                     reference: jax.Array, key: jax.Array, **options: Any) -> jax.Array:
    """CorrRISE's similar map: high where keeping the pixel raises the similarity.

    Args:
      embed_fn, params, image, reference, key, **options: as in `corrrise`.

    Returns:
      Float[Array, "h w"] in [-1, 1], `corrrise`'s first map.

    References:
      Lu, Xu and Ebrahimi, "Towards Visual Saliency Explanations of Face
      Verification", WACV 2024, arXiv:2305.08546.
    """
    return corrrise(embed_fn, params, image, reference, key, **options)[0]


@register("corrrise_dissimilar", kind="perturbation")
@_options_of(corrrise)
def corrrise_dissimilar(embed_fn: EmbedFn, params: PyTree, image: jax.Array,
                        reference: jax.Array, key: jax.Array, **options: Any) -> jax.Array:
    """CorrRISE's dissimilar map: high where keeping the pixel lowers the similarity.

    Args:
      embed_fn, params, image, reference, key, **options: as in `corrrise`.

    Returns:
      Float[Array, "h w"] in [-1, 1], `corrrise`'s second map (minus the first).

    References:
      Lu, Xu and Ebrahimi, "Towards Visual Saliency Explanations of Face
      Verification", WACV 2024, arXiv:2305.08546.
    """
    return corrrise(embed_fn, params, image, reference, key, **options)[1]
