"""Perturbation explainers: random masks, one similarity score per masked image.

Each explainer masks `image` only (the reference stays intact), embeds every
masked image once, and turns the N cosine similarities to the reference into a
map: S-RISE and RISE weigh the masks by the scores, CorrRISE correlates them
with the scores pixel by pixel. The masked embeddings come from the S-RISE
kernel (`srise._run`) with a single job, so an explanation costs N forward
passes, not the 2N of `srise.srise_pair`, and for S-RISE and RISE the masks are
made chunk by chunk inside the compiled loop (memory O(batch_size)).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from srise_jax import masks as masks_lib
from srise_jax import _helpers as checks
from srise_jax import srise
from srise_jax.explainers.registry import register

# The one job of `srise._run`: mask target 0 (the image), compare with target 1
# (the intact reference).
_IMAGE_JOB = ((0, 1),)


def _masked_sums(embed_fn, params, image, reference, sources, make_masks, *,
                 batch_size: int, fill, compute_dtype=None) -> srise.SaliencySums:
    """Score-weighted mask sums of `image` masked by each mask against `reference`."""
    checks.check_images(image=image, reference=reference, channels=None)
    sums, _ = srise._run(embed_fn, params, jnp.stack([image, reference]),
                         _IMAGE_JOB, sources, make_masks,
                         batch_size=batch_size, fill=fill, mesh=None,
                         compute_dtype=compute_dtype)
    return sums


def _rise_maker(shape: tuple[int, int], grid: int, p: float):
    return jax.vmap(functools.partial(masks_lib.rise_mask, shape=shape,
                                      grid=grid, p=p))


@register("srise", kind="perturbation")
def srise_map(embed_fn, params, image, reference, key, *,
              num_masks: int = 500, batch_size: int = 64,
              num_patches: int = 100, kernel_size: int = 40,
              sigma: float = 7.0, fill=0.0,
              normalize: str = "coverage", combine: str = "max",
              compute_dtype=None) -> jax.Array:
    """S-RISE map of `image` for its similarity to `reference`.

    Equals `srise.srise_pair(..., gaussian_masks(key, num_masks, ...))
    .saliency_a` (mask i from `jax.random.split(key, num_masks)[i]`), but
    masks only `image` and makes the masks inside the compiled loop.

    Args:
      embed_fn: `embed_fn(params, images[B, H, W, 3]) -> [B, D]`.
      params: the model's parameter pytree.
      image: Float[Array, "h w 3"] RGB in [0, 1], the image explained.
      reference: Float[Array, "h w 3"], kept intact.
      key: a `jax.random` key.
      num_masks, batch_size, num_patches, kernel_size, sigma, fill,
        normalize, combine, compute_dtype: as in `srise.SRiseConfig`.

    Returns:
      Float[Array, "h w"].

    References:
      Lu and Ebrahimi, arXiv:2304.06118, section 3.2.
    """
    config = srise.SRiseConfig(num_masks=num_masks, num_patches=num_patches,
                               kernel_size=kernel_size, sigma=sigma,
                               batch_size=batch_size, fill=fill,
                               normalize=normalize, combine=combine)
    sums = _masked_sums(embed_fn, params, image, reference,
                        jax.random.split(key, num_masks),
                        srise._mask_maker(config, image.shape[:2]),
                        batch_size=batch_size, fill=fill, compute_dtype=compute_dtype)
    return srise._finalize(sums.weighted, sums.coverage, sums.scores,
                           normalize)[0]


def srise_convergence(embed_fn, params, image, reference, key, *,
                      counts: tuple[int, ...] = (10, 100, 500, 1000),
                      batch_size: int = 64, num_patches: int = 100,
                      kernel_size: int = 40, sigma: float = 7.0, fill=0.0,
                      normalize: str = "coverage", combine: str = "max") -> jax.Array:
    """S-RISE maps of `image` after the first `counts[k]` masks of one run.

    One sequence of max(counts) masks is drawn (mask i from
    `jax.random.split(key, max(counts))[i]`) and the map is read off after
    each count, so the whole series (the paper's Fig. 6 and Table 1 rows at
    10, 100, 500 and 1000 masks) costs max(counts) forward passes instead of
    their sum. The first n masks of the sequence are n independent draws, so
    the map at n is an S-RISE map with n masks; the last one equals
    `srise_map(..., key, num_masks=max(counts))` exactly.

    Args:
      embed_fn, params, image, reference, key: as in `srise_map`.
      counts: increasing positive mask counts (static).
      batch_size, num_patches, kernel_size, sigma, fill, normalize, combine:
        as in `srise_map`.

    Returns:
      Float[Array, "k h w"], the map after each count.
    """
    counts = tuple(int(c) for c in counts)
    if not counts or counts[0] < 1 or any(b <= a for a, b in zip(counts, counts[1:])):
        raise ValueError(f"counts must be increasing positive ints, got {counts}")
    config = srise.SRiseConfig(num_masks=counts[-1], num_patches=num_patches,
                               kernel_size=kernel_size, sigma=sigma,
                               batch_size=batch_size, fill=fill,
                               normalize=normalize, combine=combine)
    keys = jax.random.split(key, counts[-1])
    make = srise._mask_maker(config, image.shape[:2])
    maps, total, start = [], None, 0
    for stop in counts:
        sums = _masked_sums(embed_fn, params, image, reference, keys[start:stop],
                            make, batch_size=batch_size, fill=fill)
        total = sums if total is None else srise.add_sums(total, sums)
        maps.append(srise._finalize(total.weighted, total.coverage, total.scores,
                                    normalize)[0])
        start = stop
    return jnp.stack(maps)


@register("rise", kind="perturbation")
def rise_map(embed_fn, params, image, reference, key, *,
             num_masks: int = 500, batch_size: int = 64, grid: int = 7,
             p: float = 0.5, fill=0.0) -> jax.Array:
    """Classic RISE masks weighed by the cosine similarity to `reference`.

    RISE divides sum_i s_i M_i by N * p, the expected coverage of a pixel;
    dividing by the actual coverage sum_i M_i is the same in expectation and
    removes the masks' border and sampling bias, as S-RISE's "coverage" does.

    Args:
      embed_fn, params, image, reference, key: as in `srise_map`.
      num_masks: N.
      batch_size: masked images per `embed_fn` call.
      grid: cells per side of the binary grid (`masks.rise_mask`).
      p: probability that a cell is kept.
      fill: value of the masked-out pixels.

    Returns:
      Float[Array, "h w"].

    References:
      Petsiuk, Das and Saenko, "RISE: Randomized Input Sampling for
      Explanation of Black-box Models", BMVC 2018.
    """
    sums = _masked_sums(embed_fn, params, image, reference,
                        jax.random.split(key, num_masks),
                        _rise_maker(image.shape[:2], grid, p),
                        batch_size=batch_size, fill=fill)
    return srise._finalize(sums.weighted, sums.coverage, sums.scores,
                           "coverage")[0]


def average_ranks(x: jax.Array) -> jax.Array:
    """0-based ranks along axis 0, ties given the mean of their ranks.

    Vectorised over the other axes: a value's average rank is the mean of
    (number of values below it) and (number of values at or below it) - 1,
    both read off the sorted column with `searchsorted`.

    Args:
      x: Float[Array, "n ..."].

    Returns:
      Float[Array, "n ..."] ranks in [0, n - 1].
    """
    flat = x.reshape(x.shape[0], -1)
    ordered = jnp.sort(flat, axis=0)
    count = lambda side: jax.vmap(
        functools.partial(jnp.searchsorted, side=side),
        in_axes=1, out_axes=1)(ordered, flat)
    ranks = (count("left") + count("right") - 1).astype(jnp.float32) / 2.0
    return ranks.reshape(x.shape)


def spearman(scores: jax.Array, values: jax.Array) -> jax.Array:
    """Spearman rank correlation of `scores` with each column of `values`.

    Pearson correlation of the average ranks; a column with no variation
    (e.g. a pixel no mask ever touched) gets 0.

    Args:
      scores: Float[Array, "n"].
      values: Float[Array, "n ..."].

    Returns:
      Float[Array, "..."] in [-1, 1].
    """
    rs = average_ranks(scores)
    rv = average_ranks(values).reshape(values.shape[0], -1)
    rs = rs - rs.mean()
    rv = rv - rv.mean(0)
    cov = rs @ rv
    scale = jnp.sqrt((rs * rs).sum() * (rv * rv).sum(0))
    r = jnp.where(scale > 0, cov / jnp.where(scale > 0, scale, 1.0), 0.0)
    return r.reshape(values.shape[1:])


def corrrise(embed_fn, params, image, reference, key, *,
             num_masks: int = 500, batch_size: int = 64,
             masks: str = "gaussian", num_patches: int = 100,
             kernel_size: int = 40, sigma: float = 7.0, grid: int = 7,
             p: float = 0.5, fill=0.0) -> tuple[jax.Array, jax.Array]:
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
      embed_fn, params, image, reference, key: as in `srise_map`.
      num_masks: N.
      batch_size: masked images per `embed_fn` call.
      masks: "gaussian" (S-RISE masks: num_patches, kernel_size, sigma) or
        "rise" (binary grid masks: grid, p; their many exact 0s and 1s tie,
        which the average ranks handle).
      fill: value of the masked-out pixels.

    Returns:
      (similar, dissimilar), each Float[Array, "h w"] in [-1, 1],
      dissimilar = -similar.

    References:
      Lu, Xu and Ebrahimi, "Towards Visual Saliency Explanations of Face
      Verification", WACV 2024, arXiv:2305.08546.
    """
    shape = image.shape[:2]
    if masks == "gaussian":
        make = srise._mask_maker(
            srise.SRiseConfig(num_masks=num_masks, num_patches=num_patches,
                              kernel_size=kernel_size, sigma=sigma,
                              batch_size=batch_size), shape)
    elif masks == "rise":
        make = _rise_maker(shape, grid, p)
    else:
        raise ValueError(f"masks must be 'gaussian' or 'rise', got {masks!r}")
    all_masks = make(jax.random.split(key, num_masks))
    sums = _masked_sums(embed_fn, params, image, reference, all_masks,
                        lambda m: m, batch_size=batch_size, fill=fill)
    similar = spearman(sums.scores[0], all_masks)
    return similar, -similar


@register("corrrise_similar", kind="perturbation")
def corrrise_similar(embed_fn, params, image, reference, key, *,
                     num_masks: int = 500, batch_size: int = 64, **options) -> jax.Array:
    """CorrRISE's similar map: high where keeping the pixel raises the similarity.

    Args:
      embed_fn, params, image, reference, key, num_masks, batch_size,
        **options: as in `corrrise`.

    Returns:
      Float[Array, "h w"] in [-1, 1], `corrrise`'s first map.

    References:
      Lu, Xu and Ebrahimi, "Towards Visual Saliency Explanations of Face
      Verification", WACV 2024, arXiv:2305.08546.
    """
    return corrrise(embed_fn, params, image, reference, key, num_masks=num_masks,
                    batch_size=batch_size, **options)[0]


@register("corrrise_dissimilar", kind="perturbation")
def corrrise_dissimilar(embed_fn, params, image, reference, key, *,
                        num_masks: int = 500, batch_size: int = 64, **options) -> jax.Array:
    """CorrRISE's dissimilar map: high where keeping the pixel lowers the similarity.

    Args:
      embed_fn, params, image, reference, key, num_masks, batch_size,
        **options: as in `corrrise`.

    Returns:
      Float[Array, "h w"] in [-1, 1], `corrrise`'s second map (minus the first).

    References:
      Lu, Xu and Ebrahimi, "Towards Visual Saliency Explanations of Face
      Verification", WACV 2024, arXiv:2305.08546.
    """
    return corrrise(embed_fn, params, image, reference, key, num_masks=num_masks,
                    batch_size=batch_size, **options)[1]
