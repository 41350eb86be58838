"""Deletion and Insertion: how many salient pixels it takes to flip a decision.

A faithful saliency map ranks first the pixels the model relies on, so
changing few of them, in the map's order, should flip the verification
decision. Both metrics report that number as a fraction of the image
(smaller is better) and the similarity curve they walked along.

References:
  Lu and Ebrahimi, "Explanation of Face Recognition via Saliency Maps",
  SPIE Optics + Photonics 2023 (arXiv:2304.06118), section 3.3.
  Petsiuk et al., "RISE: Randomized Input Sampling for Explanation of
  Black-box Models", BMVC 2018 (arXiv:1806.07421): the original metrics.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from srise_jax import _helpers as checks
from srise_jax import fills
from srise_jax.similarity import unit_normalize as _unit
from srise_jax.typing import EmbedFn, PyTree

# What replaces the removed pixels (`fill=`): the image's per-channel mean
# (the paper's), a strong Gaussian blur of the image, or ROAD's noisy linear
# imputation. docs/metrics.md defines each.
METRIC_FILLS = ("mean", "blur", "impute")

# Why a fraction can be undefined; `MetricResult.reason` holds 0 when it is
# defined, else 1 + the index of its reason here. An undefined fraction is
# NaN, never 0.0 or 1.0: both would be scores that no map earned.
UNDEFINED_REASONS = ("rejected", "already_flipped", "cannot_flip", "invalid_input")

# A short phrase for each reason, for tables, figures and reports.
REASON_TEXT = {
    "rejected": "the model rejects the pair",
    "already_flipped": "the all-removed (fill) image already matches",
    "cannot_flip": "even the all-removed (fill) image matches",
    "invalid_input": "NaN or inf in the input",
}


class MetricResult(NamedTuple):
    """Result of `deletion` or `insertion` for one image and one map.

    Attributes:
      fraction: () float32. Pixels changed when the decision first flips,
        divided by H * W; NaN when no map could make the number mean
        anything (see `reason`).
      counts: (K,) int32 pixel counts of the curve, ascending. With
        ``step=1``, K = H*W + 1 and ``counts = arange(H*W + 1)``. With
        ``step > 1``, K = len(grid) + step - 1: the coarse grid
        ``0, step, 2*step, ..., H*W`` merged with the counts strictly inside
        the first flipping grid bracket; slots that bracket leaves unused
        (it is shorter than the step, or there is none) come last and hold -1.
      curve: (K,) float32 cosine similarity to the reference's embedding at
        each count; NaN where it was not evaluated (after the search stopped,
        or in an unused slot).
      reason: () int32, 0 when `fraction` is defined, else 1 + the index in
        `UNDEFINED_REASONS` of why it is NaN (`undefined_reason` names it):
        "rejected", the model rejects the pair (cos(image, reference) <
        threshold), so Deletion has no match to break and Insertion ends on
        a non-match whatever the map; "already_flipped", Insertion's
        all-removed start image (every pixel filled) already matches;
        "cannot_flip", Deletion never flips, not even with every pixel
        filled; "invalid_input",
        NaN or inf in the image, reference, map or threshold (raised as an
        error outside `jit`).
    """

    fraction: jax.Array
    counts: jax.Array
    curve: jax.Array
    reason: jax.Array


def undefined_reason(result: MetricResult) -> str | None:
    """Why `result.fraction` is undefined, by name, or None when it is defined.

    Args:
      result: a concrete (not traced) `MetricResult`.

    Returns:
      One of `UNDEFINED_REASONS` (`REASON_TEXT` has a phrase for each), or
      None.
    """
    return reason_name(result.reason)


def reason_name(code: int | jax.Array) -> str | None:
    """The name of a `MetricResult.reason` code, or None for 0 (defined).

    Args:
      code: an int or a concrete () integer array, e.g. from a vmapped
        batch of results.

    Returns:
      ``UNDEFINED_REASONS[code - 1]``, or None when ``code`` is 0.
    """
    code = int(code)
    return None if code == 0 else UNDEFINED_REASONS[code - 1]


def _code(reason: str) -> int:
    return 1 + UNDEFINED_REASONS.index(reason)


def deletion(
    embed_fn: EmbedFn,
    params: PyTree,
    image: jax.Array,
    reference: jax.Array,
    saliency: jax.Array,
    threshold: float | jax.Array,
    *,
    step: int = 1,
    batch_size: int = 64,
    fill: str = "mean",
    key: jax.Array | None = None,
) -> MetricResult:
    """Fraction of the most salient pixels to delete before a match is lost.

    Definition (paper section 3.3). Rank the H*W pixels of ``image`` by
    ``saliency``, highest first; equal values keep raster order (lower flat
    index ``row * W + col`` first). Let ``x_c`` be ``image`` with its ``c``
    first-ranked pixels removed, i.e. replaced in all three channels by the
    ``fill``: the per-channel mean of ``image`` (``"mean"``, the paper's),
    ``image`` blurred by a Gaussian of sigma ``max(H, W) / 20``
    (``"blur"``), or ROAD's noisy linear imputation from the kept pixels
    (``"impute"``, `fills.noisy_linear_impute`); kept pixels are never
    modified. Let ``s(c) = cos(embed(x_c), embed(reference))``.
    Then ``fraction = min{c : s(c) < threshold} / (H*W)``.

    The fraction is undefined (NaN, with `MetricResult.reason`) when no map
    could earn it: "rejected" when ``s(0) < threshold`` (the pair is
    already a non-match, so there is no decision to flip; 0.0 would score
    it as a perfect explanation), "cannot_flip" when no ``c`` in
    ``0..H*W`` qualifies (even the all-removed image, the fill's own, still
    matches; 1.0 would
    score every map alike).

    ``step=1`` evaluates ``s(0), s(1), ...`` in order, which is the paper's
    per-pixel definition. A larger ``step`` first evaluates the grid
    ``0, step, 2*step, ..., H*W`` and then every count inside the first
    grid bracket that flips, so it returns the first flipping count of that
    bracket: the same answer as ``step=1`` whenever the curve crosses the
    threshold once, for about ``H*W / step + step`` forward passes instead
    of up to ``H*W + 1``. Counts are evaluated ``batch_size`` per
    ``embed_fn`` call, and the search stops after the batch in which the
    decision flips.

    The function is pure and jit-compilable, with ``embed_fn``, ``step``
    and ``batch_size`` static; ``threshold`` may be traced::

      fn = jax.jit(functools.partial(deletion, embed_fn, step=16))
      result = fn(params, image, reference, saliency, 0.3)

    Args:
      embed_fn: ``embed_fn(params, images[B, H, W, 3]) -> [B, D]`` embeddings,
        not necessarily normalized.
      params: model parameters, passed through to ``embed_fn``.
      image: (H, W, 3) float32 RGB in [0, 1], the image the map explains.
      reference: (H', W', 3) float32 RGB in [0, 1], the other image of the
        pair; it is never modified.
      saliency: (H, W) saliency of ``image``, finite; larger means more
        important.
      threshold: the verification threshold on cosine similarity: a pair
        matches when ``cos >= threshold``; finite.
      step: grid spacing of the coarse search, a positive int.
      batch_size: pixel counts (masked images) per ``embed_fn`` call.
      fill: what replaces removed pixels, one of `METRIC_FILLS` (static);
        docs/metrics.md defines each.
      key: the PRNG key of the "impute" fill's noise (one noise field for
        every count); None means ``jax.random.key(0)``. Ignored by the
        other fills.

    Returns:
      A `MetricResult`.

    Raises:
      TypeError, ValueError: one line naming the argument, for a non-float
        image, a shape mismatch, or (outside ``jit``) NaN or inf in the
        images, the map or the threshold; under ``jit`` those values give
        reason "invalid_input" instead.

    References:
      Lu and Ebrahimi, "Explanation of Face Recognition via Saliency Maps",
      arXiv:2304.06118, section 3.3.
    """
    return _flip_search(
        embed_fn, params, image, reference, saliency, threshold,
        insert=False, step=step, batch_size=batch_size, fill=fill, key=key,
    )


def insertion(
    embed_fn: EmbedFn,
    params: PyTree,
    image: jax.Array,
    reference: jax.Array,
    saliency: jax.Array,
    threshold: float | jax.Array,
    *,
    step: int = 1,
    batch_size: int = 64,
    fill: str = "mean",
    key: jax.Array | None = None,
) -> MetricResult:
    """Fraction of the most salient pixels to restore before a match appears.

    Definition (paper section 3.3). Rank the pixels as in `deletion`. Let
    ``x_c`` be ``image`` with its ``c`` first-ranked pixels kept and all
    others removed, replaced by the ``fill`` of `deletion` (for
    ``"impute"``, imputed from the kept pixels; at ``c = 0`` nothing is
    kept and the image is the per-channel mean plus the noise), and ``s(c) =
    cos(embed(x_c), embed(reference))``. Then ``fraction = min{c : s(c) >=
    threshold} / (H*W)``.

    The fraction is undefined (NaN, with `MetricResult.reason`) when no map
    could earn it: "rejected" when the pair itself does not match
    (``cos(embed(image), embed(reference)) < threshold``: the last step is
    the original image, so the count would say nothing about the map, and
    1.0 would score every map alike), "already_flipped" when
    ``s(0) >= threshold`` (the fill's all-removed start image already matches;
    0.0 would score it as a perfect map). "rejected" wins when both hold.

    ``step``, ``batch_size``, early stopping and jit behave as in
    `deletion`.

    Args:
      embed_fn, params, image, reference, saliency, threshold, step,
      batch_size, fill, key: as in `deletion`; ``image`` is the image
      whose pixels are restored, one by one in ``saliency`` order, into its
      all-removed (filled) image.

    Returns:
      A `MetricResult`.

    References:
      Lu and Ebrahimi, "Explanation of Face Recognition via Saliency Maps",
      arXiv:2304.06118, section 3.3.
    """
    return _flip_search(
        embed_fn, params, image, reference, saliency, threshold,
        insert=True, step=step, batch_size=batch_size, fill=fill, key=key,
    )


def deletion_insertion(
    embed_fn: EmbedFn,
    params: PyTree,
    image: jax.Array,
    reference: jax.Array,
    saliency: jax.Array,
    threshold: float | jax.Array,
    *,
    step: int = 1,
    batch_size: int = 64,
    fill: str = "mean",
    key: jax.Array | None = None,
) -> tuple[MetricResult, MetricResult]:
    """Both metrics for one image of a pair: ``(deletion(...), insertion(...))``.

    Args and References: as in `deletion` (``fill`` and ``key`` included).

    Returns:
      ``(deletion_result, insertion_result)``, two `MetricResult`.
    """
    args = (embed_fn, params, image, reference, saliency, threshold)
    options = dict(step=step, batch_size=batch_size, fill=fill, key=key)
    return deletion(*args, **options), insertion(*args, **options)


class Curve(NamedTuple):
    """Result of `similarity_curve`: the whole deletion or insertion curve.

    Attributes:
      fractions: (K,) float32 fraction of pixels changed, 0 to 1 ascending.
      similarity: (K,) float32 cosine similarity to the reference there.
      auc: () float32 area under the curve over [0, 1] (trapezoid rule).
    """

    fractions: jax.Array
    similarity: jax.Array
    auc: jax.Array


def similarity_curve(
    embed_fn: EmbedFn,
    params: PyTree,
    image: jax.Array,
    reference: jax.Array,
    saliency: jax.Array,
    *,
    mode: str,
    num_points: int = 33,
    batch_size: int = 64,
    fill: str = "mean",
    key: jax.Array | None = None,
) -> Curve:
    """The deletion or insertion curve over the whole range, and its area.

    The images are those of `deletion` (``mode="deletion"``) or `insertion`
    (``mode="insertion"``), at the ``num_points`` pixel counts
    ``round(linspace(0, H*W, num_points))``; the area is that of the
    similarity over the fraction of pixels changed, by the trapezoid rule.

    This is the threshold-free AUC variant of RISE (Petsiuk et al., 2018),
    computed on the cosine similarity instead of a class probability: a
    faithful map gives a LOW deletion AUC (the similarity drops fast) and a
    HIGH insertion AUC. It complements, and differs from, the paper's
    fractions, which ask only where the curve crosses the threshold.

    Args:
      embed_fn, params, image, reference, saliency: as in `deletion`.
      mode: "deletion" or "insertion".
      num_points: points of the curve (static), at least 2.
      batch_size: the most images per `embed_fn` call (static); the points
        are spread evenly over the fewest batches of that size.
      fill, key: what replaces removed pixels, as in `deletion`.

    Returns:
      A `Curve`.

    References:
      Petsiuk et al., "RISE", BMVC 2018 (arXiv:1806.07421), section 4.1.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if isinstance(num_points, bool) or not isinstance(num_points, (int, np.integer)) \
            or num_points < 2:
        raise ValueError(f"num_points must be an int >= 2 (static under jit), "
                         f"got {num_points!r}")
    _check_args(image, reference, saliency, 1, batch_size)
    check_metric_fill(fill)
    image = jnp.asarray(image, jnp.float32)
    reference = jnp.asarray(reference, jnp.float32)
    saliency = jnp.asarray(saliency)
    num_pixels = image.shape[0] * image.shape[1]
    counts_np = np.round(np.linspace(0, num_pixels, num_points)).astype(np.int32)
    # As few batches as `batch_size` allows, of equal size, so at most
    # num_batches - 1 forward passes are padding (33 points at batch 32 run
    # as 2 x 17, not 2 x 32 with 31 padded).
    num_batches = -(-num_points // batch_size)
    batch_size = -(-num_points // num_batches)
    slots = num_batches * batch_size
    counts = jnp.asarray(np.pad(counts_np, (0, slots - num_points), mode="edge"))
    replace = _replacement(image, fill, key)
    rank = _pixel_rank(saliency)
    reference_unit = _unit(embed_fn(params, reference[None]))[0]

    def batch(_, chunk):
        images = _changed_images(image, rank, replace, chunk, insert=mode == "insertion")
        return None, _unit(embed_fn(params, images)) @ reference_unit

    _, sims = lax.scan(batch, None, counts.reshape(-1, batch_size))
    sims = sims.reshape(-1)[:num_points]
    fractions = jnp.asarray(counts_np / num_pixels, jnp.float32)
    return Curve(fractions, sims, jnp.trapezoid(sims, fractions))


class _Search(NamedTuple):
    """Carry of the search loop."""

    pos: jax.Array  # index of the next candidate within the current phase
    refining: jax.Array  # scanning the interior of the flipping grid bracket
    done: jax.Array
    hit: jax.Array  # grid index of the first flipping grid count; len(grid) if none
    fine_hit: jax.Array  # offset of the first flip inside the bracket; step - 1 if none
    sims: jax.Array  # grid similarities, then bracket-interior similarities


def _flip_search(
    embed_fn, params, image, reference, saliency, threshold, *, insert, step, batch_size,
    fill, key
) -> MetricResult:
    _check_args(image, reference, saliency, step, batch_size)
    check_metric_fill(fill)
    checks.check_finite("threshold", threshold)
    image = jnp.asarray(image, jnp.float32)
    reference = jnp.asarray(reference, jnp.float32)
    saliency = jnp.asarray(saliency)
    threshold = jnp.asarray(threshold, jnp.float32)
    height, width, _ = image.shape
    num_pixels = height * width

    replace = _replacement(image, fill, key)
    rank = _pixel_rank(saliency)
    reference_unit = _unit(embed_fn(params, reference[None]))[0]
    # Under jit the values cannot be checked above: bad ones stop the search
    # before it starts and give reason "invalid_input".
    invalid = ~(jnp.isfinite(threshold) & _all_finite(image, reference, saliency))
    # cos(image, reference): where Insertion ends whatever the map.
    rejected = (_unit(embed_fn(params, image[None]))[0] @ reference_unit) < threshold

    def similarities(counts):
        images = _changed_images(image, rank, replace, counts, insert=insert)
        return _unit(embed_fn(params, images)) @ reference_unit

    def flipped(sims):
        return sims >= threshold if insert else sims < threshold

    # Coarse grid 0, step, ..., always ending at H*W; padded (with
    # positions flagged invalid) to whole batches for static slicing.
    grid_np = np.minimum(np.arange(0, num_pixels + step, step), num_pixels)
    num_grid = len(grid_np)
    num_fine = step - 1
    grid_slots = -(-num_grid // batch_size) * batch_size
    fine_slots = -(-num_fine // batch_size) * batch_size
    grid = jnp.asarray(grid_np, jnp.int32)
    grid_padded = jnp.asarray(
        np.pad(grid_np, (0, grid_slots - num_grid), constant_values=num_pixels), jnp.int32
    )

    def bracket(hit):
        # The counts strictly between lo and hi are those step=1 would
        # evaluate before the grid count hi that flipped.
        return grid[jnp.clip(hit - 1, 0, num_grid - 1)], grid[jnp.clip(hit, 0, num_grid - 1)]

    def body(s: _Search) -> _Search:
        offsets = s.pos + jnp.arange(batch_size, dtype=jnp.int32)
        lo, hi = bracket(s.hit)
        fine_counts = lo + 1 + offsets
        grid_counts = lax.dynamic_slice(grid_padded, (jnp.where(s.refining, 0, s.pos),), (batch_size,))
        counts = jnp.where(s.refining, fine_counts, grid_counts)
        valid = jnp.where(s.refining, fine_counts < hi, offsets < num_grid)
        sims = jnp.where(valid, similarities(counts), jnp.nan)
        hits = valid & flipped(sims)
        any_hit = jnp.any(hits)
        first = s.pos + jnp.argmax(hits).astype(jnp.int32)

        write_at = jnp.where(s.refining, grid_slots, 0) + s.pos
        all_sims = lax.dynamic_update_slice(s.sims, sims, (write_at,))
        coarse_hit = ~s.refining & any_hit
        hit = jnp.where(coarse_hit, first, s.hit)
        fine_hit = jnp.where(s.refining & any_hit, first, s.fine_hit)
        new_lo, new_hi = bracket(first)
        # No bracket to refine when the start already flipped (NaN case) or
        # when the bracket has no interior (step=1, or a last short bracket).
        refine_next = coarse_hit & (first > 0) & (new_hi - new_lo > 1)
        pos = jnp.where(refine_next, 0, s.pos + batch_size)
        exhausted = jnp.where(s.refining, pos >= hi - lo - 1, pos >= num_grid)
        done = ~refine_next & (any_hit | exhausted)
        return _Search(pos, s.refining | refine_next, done, hit, fine_hit, all_sims)

    init = _Search(
        pos=jnp.int32(0),
        refining=jnp.bool_(False),
        done=invalid,
        hit=jnp.int32(num_grid),
        fine_hit=jnp.int32(num_fine),
        sims=jnp.full((grid_slots + fine_slots,), jnp.nan, jnp.float32),
    )
    final = lax.while_loop(lambda s: ~s.done, body, init)

    lo, hi = bracket(final.hit)
    flip_count = jnp.where(final.fine_hit < num_fine, lo + 1 + final.fine_hit, hi)
    # The search starts at the unchanged image for Deletion (so a hit at 0
    # means the pair is rejected) and at the all-removed image for Insertion.
    if insert:
        reasons = ((invalid, "invalid_input"), (rejected, "rejected"),
                   (final.hit == 0, "already_flipped"),
                   (final.hit == num_grid, "rejected"))
    else:
        reasons = ((invalid, "invalid_input"), (final.hit == 0, "rejected"),
                   (final.hit == num_grid, "cannot_flip"))
    reason = jnp.int32(0)
    for condition, name in reversed(reasons):  # the first that holds wins
        reason = jnp.where(condition, jnp.int32(_code(name)), reason)
    fraction = jnp.where(reason == 0, flip_count.astype(jnp.float32) / num_pixels,
                         jnp.nan).astype(jnp.float32)

    grid_curve = final.sims[:num_grid]
    if num_fine == 0:
        return MetricResult(fraction, grid, grid_curve, reason)
    fine_counts = lo + 1 + jnp.arange(num_fine, dtype=jnp.int32)
    fine_used = (final.hit > 0) & (final.hit < num_grid) & (fine_counts < hi)
    fine_curve = final.sims[grid_slots : grid_slots + num_fine]
    # Unused slots sort last under a key above every real count.
    keys = jnp.concatenate([grid, jnp.where(fine_used, fine_counts, num_pixels + 1)])
    keys, curve = lax.sort((keys, jnp.concatenate([grid_curve, fine_curve])), num_keys=1)
    counts = jnp.where(keys > num_pixels, -1, keys)
    return MetricResult(fraction, counts, curve, reason)


def _all_finite(*arrays) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in arrays]))


def check_metric_fill(fill: str) -> None:
    """Refuse a metric fill that is not one of `METRIC_FILLS`.

    Args:
      fill: the name given as ``fill=``.

    Raises:
      ValueError: one line naming the allowed fills.
    """
    if not isinstance(fill, str) or fill not in METRIC_FILLS:
        raise ValueError(f"fill must be one of {', '.join(METRIC_FILLS)}, got {fill!r}")


def _replacement(image, fill, key):
    """removed (K, H, W) bool -> the values of the removed pixels, broadcastable to (K, H, W, 3).

    Only "impute" depends on which pixels are removed; its noise field is
    the same for every count, so the curve moves only where pixels change.
    """
    if fill == "mean":
        values = jnp.mean(image, axis=(0, 1))
        return lambda removed: values
    if fill == "blur":
        # S-RISE's own "blur": sigma = max(H, W) / 20 (5.6 pixels at 112).
        values = fills.gaussian_blur(image)
        return lambda removed: values
    if key is None:
        key = jax.random.key(fills.DEFAULT_IMPUTE_SEED)
    field = fills.IMPUTE_NOISE * jax.random.normal(key, image.shape, jnp.float32)
    # A batch's counts ascend, so consecutive removed sets differ by a few
    # pixels: each solve starts from the previous one (`linear_impute_sequence`),
    # and the noise is `noisy_linear_impute`'s, one field for every count.
    return lambda removed: fills.linear_impute_sequence(image, removed) + field


def _changed_images(image, rank, replace, counts, *, insert: bool) -> jax.Array:
    """(K, H, W, 3): `image` with its `counts[k]` first-ranked pixels changed.

    A pixel is changed iff its rank is below the count: one comparison per
    pixel and image builds the whole batch, with no gathers. Deletion
    removes the changed pixels, Insertion restores them (removes the rest);
    kept pixels are `image`'s, bit for bit, whatever the fill.
    """
    changed = rank[None] < counts[:, None, None]
    removed = changed if not insert else ~changed
    return jnp.where(removed[..., None], replace(removed), image)


def _pixel_rank(saliency: jax.Array) -> jax.Array:
    """(H, W) int32 position of each pixel in the order highest saliency first.

    A stable sort keeps tied pixels in raster order, so the ranking, and
    hence the metric, does not depend on the backend's sort.
    """
    num_pixels = saliency.size
    order = jnp.argsort(saliency.reshape(-1), descending=True, stable=True)
    rank = jnp.zeros(num_pixels, jnp.int32).at[order].set(jnp.arange(num_pixels, dtype=jnp.int32))
    return rank.reshape(saliency.shape)


def _check_args(image, reference, saliency, step, batch_size) -> None:
    checks.check_image("image", image)
    checks.check_image("reference", reference)
    if np.shape(saliency) != np.shape(image)[:2]:
        raise ValueError(f"saliency must have shape {np.shape(image)[:2]} (the image's H, W), "
                         f"got {np.shape(saliency)}")
    checks.check_finite("saliency", saliency)
    for name, value in (("step", step), ("batch_size", batch_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int (static under jit), got {value!r}")
