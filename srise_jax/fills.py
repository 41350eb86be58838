"""What replaces removed pixels: a Gaussian blur, and ROAD's noisy linear imputation.

S-RISE's own masks (`srise.py`, fill "blur") and the Deletion/Insertion
metrics (`metrics.py`, fills "blur" and "impute") both fill from here, so a
map and the metric that scores it blur the same way when asked to.

References:
  Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and Efficient
  Evaluation Strategy for Attribution Methods" (ROAD), ICML 2022
  (arXiv:2202.00449); reference code github.com/tleemann/road_evaluation,
  `road/imputations.py`, `NoisyLinearImputer`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

# ROAD's neighbour weights (`neighbors_weights` in road/imputations.py):
# 1/6 for the 4 direct neighbours, 1/12 for the 4 diagonal ones. The
# stencil is symmetric, so correlation and convolution agree.
ROAD_WEIGHTS = np.array([[1 / 12, 1 / 6, 1 / 12],
                         [1 / 6, 0.0, 1 / 6],
                         [1 / 12, 1 / 6, 1 / 12]], np.float32)

# ROAD's default noise (`NoisyLinearImputer(noise=0.01)`): the standard
# deviation of the Gaussian noise added to imputed pixels, for [0, 1] images.
IMPUTE_NOISE = 0.01

# The solver stops when every removed pixel differs from the weighted mean
# of its neighbours by at most this (in [0, 1] pixel units), or after
# `impute_iterations(H, W)` steps, whichever comes first.
IMPUTE_TOL = 1e-5

# The key of the imputation noise when the caller gives none.
DEFAULT_IMPUTE_SEED = 0


def gaussian_blur(image: jax.Array, *, sigma: float | None = None) -> jax.Array:
    """The image blurred by a separable Gaussian, edge-padded.

    Each axis is one matrix product with a (n, n) banded matrix that holds
    the taps and folds the edge padding in (`blur_matrix`): inside a jitted
    model, XLA fused the equivalent sum of 2 x (2r + 1) shifted slices into
    the first layer and recomputed it per read, which made a dlib forward
    pass of a blur-filled batch 3.5x slower; the products cost next to
    nothing and agree with the sum to float32 rounding.

    Args:
      image: Float[Array, "h w c"].
      sigma: standard deviation in pixels, a Python float (static); None
        means ``max(H, W) / 20`` (5.6 pixels at 112x112). The kernel is cut
        at ``int(3 * sigma)`` pixels each side and renormalized.

    Returns:
      Float[Array, "h w c"], the blurred image, same dtype as ``image``.
    """
    height, width = image.shape[:2]
    if sigma is None:
        sigma = max(height, width) / 20.0
    rows = jnp.asarray(blur_matrix(height, float(sigma)))
    cols = jnp.asarray(blur_matrix(width, float(sigma)))
    x = image.astype(jnp.float32)
    out = jnp.einsum("ij,jwc->iwc", rows, x, precision=lax.Precision.HIGHEST)
    out = jnp.einsum("kw,iwc->ikc", cols, out, precision=lax.Precision.HIGHEST)
    return out.astype(image.dtype)


@functools.lru_cache(maxsize=64)
def blur_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) float32 matrix B with (B @ x) the edge-padded Gaussian blur of x.

    Row i holds the taps ``exp(-k**2 / (2 sigma**2))``, k = -r..r with r =
    ``int(3 * sigma)``, normalized to sum 1, at columns ``clip(i + k, 0,
    size - 1)``: edge padding, as ``np.pad(mode="edge")`` then a valid
    convolution gives.

    Args:
      size: the axis length.
      sigma: the Gaussian's standard deviation in pixels.

    Returns:
      The matrix, read-only.
    """
    radius = int(3 * sigma)
    offsets = np.arange(-radius, radius + 1)
    taps = np.exp(-offsets.astype(np.float64) ** 2 / (2 * sigma**2))
    taps /= taps.sum()
    matrix = np.zeros((size, size))
    rows = np.repeat(np.arange(size), len(offsets))
    columns = np.clip(rows + np.tile(offsets, size), 0, size - 1)
    np.add.at(matrix, (rows, columns), np.tile(taps, size))
    matrix = matrix.astype(np.float32)
    matrix.flags.writeable = False
    return matrix


def neighbour_sum(x: jax.Array) -> jax.Array:
    """Sum of ROAD's weights times the in-image neighbours, per pixel.

    Args:
      x: Float[Array, "h w c"].

    Returns:
      Float[Array, "h w c"]: ``sum_j w_ij x_j`` over the 8 neighbours ``j``
      of each pixel ``i`` that lie inside the image (those outside count 0).
    """
    height, width = x.shape[:2]
    padded = jnp.pad(x, ((1, 1), (1, 1), (0, 0)))
    return sum(float(ROAD_WEIGHTS[dy, dx]) * padded[dy:dy + height, dx:dx + width]
               for dy in range(3) for dx in range(3) if ROAD_WEIGHTS[dy, dx] > 0)


def _degree(height: int, width: int) -> jax.Array:
    """(H, W, 1) ``d_i``: the sum of ROAD's weights of each pixel's in-image neighbours."""
    return neighbour_sum(jnp.ones((height, width, 1), jnp.float32))


def impute_iterations(height: int, width: int) -> int:
    """The solver's iteration cap for an image of ``height`` x ``width``.

    Conjugate gradients preconditioned by the diagonal alone need about as
    many steps as the removed region is wide (the condition number grows
    with the square of the width); ``4 * (H + W)`` leaves room for that.
    With `multilevel_preconditioner` (the default) the solves stop far
    earlier, at `IMPUTE_TOL`; the cap then only bounds a pathological case.

    Args:
      height, width: the image size.

    Returns:
      The cap, an int.
    """
    return 4 * (height + width)


def linear_impute(image: jax.Array, removed: jax.Array, *,
                  tol: float = IMPUTE_TOL, max_iterations: int | None = None,
                  preconditioner: str = "multilevel") -> jax.Array:
    """ROAD's linear imputation, without the noise: removed pixels solved from kept ones.

    Every removed pixel ``i`` is set to the weighted mean of its in-image
    neighbours ``j`` (weights `ROAD_WEIGHTS`, renormalized by their sum
    ``d_i`` where the image border cuts some off), kept or removed alike::

      d_i x_i - sum_{j removed} w_ij x_j = sum_{j kept} w_ij image_j

    one sparse, symmetric linear system per channel whose unknowns are the
    removed pixels, the system ROAD solves with a sparse direct solver. Here
    it is solved by conjugate gradients with BPX's multilevel preconditioner
    (`multilevel_preconditioner`), until
    ``max |x_i - (sum_j w_ij x_j) / d_i| <= tol`` over the removed pixels
    or after ``max_iterations`` steps: fixed shapes, so it jits and vmaps
    (over masks, e.g.). Kept pixels are returned bit-identical. The rule
    bounds the residual; the error to the exact solution can be larger (by
    up to the system's condition number): measured within 2e-4 of a dense
    float64 solve for a 64x64 image with 3% of its pixels kept
    (tests/test_metric_fills.py).

    The start is coarse to fine (nested iteration, as in full multigrid):
    the image and its removed pixels are halved (a half-size pixel is
    removed when its 2x2 block is; its value the mean of the block's kept
    pixels), imputed the same way, recursively down to `COARSEST_SIDE`,
    and the coarse answer, bilinearly upsampled, starts the solve. The
    start changes the iterations, not the system or the stopping rule. With
    the diagonal preconditioner it halved them; the multilevel one already
    carries the smooth part of the error, and the start saves it little
    (warm solves, `linear_impute_sequence`, use it for their first set
    only).

    When every pixel is removed, nothing anchors the system (any constant
    image solves it); the result is then the per-channel mean of ``image``,
    the "mean" fill.

    Args:
      image: Float[Array, "h w c"].
      removed: Bool[Array, "h w"], True where the pixel is replaced.
      tol: the stopping residual (see above), in pixel units.
      max_iterations: the iteration cap at full size (static); None means
        `impute_iterations` ``(H, W)``. Coarser levels use their own
        `impute_iterations`.
      preconditioner: "multilevel" (`multilevel_preconditioner`, the
        default) or "diagonal" (``d`` alone, Jacobi: what this solver used
        before, kept for comparison, `benchmarks/bench_fills.py`). Both stop
        by the same rule; the multilevel answer is the closer to the exact
        solution.

    Returns:
      Float[Array, "h w c"]: ``image`` with its removed pixels imputed.

    Raises:
      ValueError: an unknown `preconditioner`.

    References:
      Rong et al., "A Consistent and Efficient Evaluation Strategy for
      Attribution Methods", ICML 2022, section 4 (noisy linear imputation).
    """
    _check_preconditioner(preconditioner)
    start = _coarse_start(image.astype(jnp.float32), removed, tol=tol,
                          preconditioner=preconditioner)
    return _impute_from(image, removed, start, tol=tol, max_iterations=max_iterations,
                        preconditioner=preconditioner)


def linear_impute_sequence(image: jax.Array, removed: jax.Array, *,
                           tol: float = IMPUTE_TOL,
                           max_iterations: int | None = None,
                           preconditioner: str = "multilevel") -> jax.Array:
    """`linear_impute` of one image under a sequence of removed sets, each solve warm-started.

    The first set is solved as `linear_impute` solves it; each next one
    starts from the previous answer (removed pixels imputed, the others the
    image's). Along a Deletion or Insertion curve consecutive sets differ by
    a few pixels, so a solve needs a few CG steps instead of a full one.
    Every answer meets the same stopping rule as `linear_impute`'s (it
    agrees with it to the solver's accuracy, not bit for bit: the start
    differs).

    Args:
      image: Float[Array, "h w c"].
      removed: Bool[Array, "k h w"], the removed pixels of each of K images,
        best ordered so that neighbours differ little.
      tol, max_iterations, preconditioner: as in `linear_impute`.

    Returns:
      Float[Array, "k h w c"], `image` with each set's removed pixels imputed.
    """
    first = linear_impute(image, removed[0], tol=tol, max_iterations=max_iterations,
                          preconditioner=preconditioner)

    def step(previous, gone):
        out = _impute_from(image, gone, previous.astype(jnp.float32), tol=tol,
                           preconditioner=preconditioner,
                           max_iterations=max_iterations)
        return out, out

    _, rest = lax.scan(step, first, removed[1:])
    return jnp.concatenate([first[None], rest])


def _impute_from(image, removed, start, *, tol, max_iterations, preconditioner):
    """`image` with its removed pixels solved by CG from `start` (H, W, C)."""
    height, width, _ = image.shape
    if max_iterations is None:
        max_iterations = impute_iterations(height, width)
    out_dtype = image.dtype
    image = image.astype(jnp.float32)
    mean = jnp.mean(image, axis=(0, 1))
    u = _conjugate_gradients(image, removed, start, tol=tol, max_iterations=max_iterations,
                             preconditioner=preconditioner)
    u = jnp.where(jnp.all(removed), mean, u)
    return jnp.where(removed[..., None], u, image).astype(out_dtype)


# Nested iteration stops halving below this side: a 10x10 system costs CG
# next to nothing from the flat (per-channel mean) start.
COARSEST_SIDE = 16


def _coarse_start(image: jax.Array, removed: jax.Array, *, tol: float,
                  preconditioner: str) -> jax.Array:
    """(H, W, C) start of the solve: the half-size imputation, upsampled, or the mean."""
    height, width, channels = image.shape
    mean = jnp.mean(image, axis=(0, 1))
    if min(height, width) < 2 * COARSEST_SIDE:
        return jnp.broadcast_to(mean, image.shape)
    # Pad to even sides by repeating the last row/column (kept as it is).
    ph, pw = height % 2, width % 2
    padded = jnp.pad(image, ((0, ph), (0, pw), (0, 0)), mode="edge")
    gone = jnp.pad(removed, ((0, ph), (0, pw)), mode="edge")
    kept = (~gone).astype(jnp.float32)[..., None]
    h2, w2 = padded.shape[0] // 2, padded.shape[1] // 2

    def blocks(x):
        return x.reshape(h2, 2, w2, 2, x.shape[-1]).sum(axis=(1, 3))

    count = blocks(kept)
    coarse_removed = count[..., 0] == 0
    coarse = jnp.where(count > 0, blocks(padded * kept) / jnp.maximum(count, 1.0), mean)
    solved = linear_impute(coarse, coarse_removed, tol=tol, preconditioner=preconditioner)
    up = jax.image.resize(solved, (2 * h2, 2 * w2, channels), method="linear")
    return up[:height, :width]


# `linear_impute`'s preconditioners.
PRECONDITIONERS = ("multilevel", "diagonal")


def _check_preconditioner(preconditioner: str) -> None:
    if preconditioner not in PRECONDITIONERS:
        raise ValueError(f"preconditioner must be one of {', '.join(PRECONDITIONERS)}, "
                         f"got {preconditioner!r}")


# The multilevel preconditioner halves the grid while its shorter side is at
# least this: 150 -> 75 -> 38 -> 19 -> 10 -> 5 -> 3, six coarser levels.
# Levels are cheap (a quarter of the pixels each); the coarsest ones are what
# a removed region spanning most of the image needs.
PYRAMID_MIN_SIDE = 4


def multilevel_preconditioner(removed: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """BPX's multilevel preconditioner of the imputation system of `removed`.

    ``z = r / d + sum_l P_l P_l^T r``: the diagonal (Jacobi) term of the
    full-size grid plus, for each coarser level l of a pyramid of halvings,
    the residual restricted to that level and prolonged back. ``P_l`` is the
    product of one-level prolongations, each the bilinear 2x upsampling
    followed by the finer level's mask, so nothing reaches a kept pixel; a
    coarse pixel is in the pyramid when its whole 2x2 block is removed. The
    restriction is the exact transpose of the prolongation
    (`jax.linear_transpose`), so the preconditioner is symmetric positive
    definite on the removed pixels, as conjugate gradients needs.

    Why: with the diagonal alone, CG needs about as many steps as a removed
    region is wide (hundreds when Insertion starts from a nearly all-removed
    image); the coarse levels carry the smooth part of the error across the
    region in one step each.

    Args:
      removed: Bool[Array, "h w"], the unknowns.

    Returns:
      ``precondition(r)`` for Float[Array, "h w c"] residuals that are 0 at
      kept pixels.

    References:
      Bramble, Pasciak and Xu, "Parallel multilevel preconditioners",
      Mathematics of Computation 55 (1990).
    """
    height, width = removed.shape
    degree = _degree(height, width)
    masks = [removed]
    while min(masks[-1].shape) >= PYRAMID_MIN_SIDE:
        fine = masks[-1]
        # Odd sides: the last row/column is repeated, as `_coarse_start` does.
        padded = jnp.pad(fine, ((0, fine.shape[0] % 2), (0, fine.shape[1] % 2)), mode="edge")
        masks.append(padded.reshape(padded.shape[0] // 2, 2, padded.shape[1] // 2, 2)
                     .all(axis=(1, 3)))

    def prolong(level: int) -> Callable[[jax.Array], jax.Array]:
        fine_mask = masks[level - 1][..., None]
        h, w = fine_mask.shape[:2]

        def up(coarse):
            ch, cw, channels = coarse.shape
            doubled = jax.image.resize(coarse, (2 * ch, 2 * cw, channels), method="linear")
            return jnp.where(fine_mask, doubled[:h, :w], 0.0)
        return up

    def precondition(residual: jax.Array) -> jax.Array:
        if len(masks) == 1:  # too small for a coarser level
            return residual / degree
        channels = residual.shape[-1]
        restricted = [residual]
        for level in range(1, len(masks)):
            coarse = jnp.zeros((*masks[level].shape, channels), jnp.float32)
            (down,) = jax.linear_transpose(prolong(level), coarse)(restricted[-1])
            restricted.append(jnp.where(masks[level][..., None], down, 0.0))
        # sum_l P_l P_l^T r, accumulated from the coarsest level up.
        total = restricted[-1]
        for level in range(len(masks) - 1, 0, -1):
            total = prolong(level)(total)
            if level > 1:
                total = total + restricted[level - 1]
        return residual / degree + total

    return precondition


def _conjugate_gradients(image, removed, start, *, tol, max_iterations, preconditioner):
    """The removed pixels' values (H, W, C), 0 at kept pixels, by preconditioned CG."""
    height, width, _ = image.shape
    r = removed[..., None]
    degree = _degree(height, width)
    rhs = jnp.where(r, neighbour_sum(jnp.where(r, 0.0, image)), 0.0)
    precondition = (multilevel_preconditioner(removed) if preconditioner == "multilevel"
                    else lambda residual: residual / degree)

    def apply(u):  # u is 0 at kept pixels
        return jnp.where(r, degree * u - neighbour_sum(u), 0.0)

    def dot(a, b):  # per channel
        return jnp.sum(a * b, axis=(0, 1))

    def safe_div(num, den):
        # A converged channel has a zero direction: it stops moving.
        ok = den > 0
        return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)

    u = jnp.where(r, start, 0.0)
    res = rhs - apply(u)
    z = precondition(res)
    rz = dot(res, z)

    def cond(state):
        # The stopping rule is on res / degree (each removed pixel against its
        # neighbours' weighted mean), whatever the preconditioner.
        i, _, res, _, _, _ = state
        return (i < max_iterations) & (jnp.max(jnp.abs(res / degree)) > tol)

    def body(state):
        i, u, res, z, p, rz = state
        ap = apply(p)
        alpha = safe_div(rz, dot(p, ap))
        u = u + alpha * p
        res = res - alpha * ap
        z = precondition(res)
        rz_new = dot(res, z)
        p = z + safe_div(rz_new, rz) * p
        return i + 1, u, res, z, p, rz_new

    _, u, _, _, _, _ = lax.while_loop(cond, body, (jnp.int32(0), u, res, z, z, rz))
    return u


def noisy_linear_impute(image: jax.Array, removed: jax.Array, *, key: jax.Array,
                        noise: float = IMPUTE_NOISE) -> jax.Array:
    """ROAD's noisy linear imputation: `linear_impute` plus Gaussian noise on removed pixels.

    The noise keeps the fill from revealing the removed region's shape to
    the model by its perfectly smooth values (ROAD, section 4). It is one
    field ``noise * normal(key, (H, W, C))``, so the same key gives a pixel
    the same noise whichever pixels are removed around it.

    Args:
      image: Float[Array, "h w c"], values in [0, 1].
      removed: Bool[Array, "h w"], True where the pixel is replaced.
      key: a JAX PRNG key; the output is a deterministic function of it.
      noise: the noise's standard deviation (ROAD's default, 0.01).

    Returns:
      Float[Array, "h w c"]: kept pixels bit-identical, removed ones
      imputed plus noise (not clipped, as in ROAD).

    References:
      Rong et al., "A Consistent and Efficient Evaluation Strategy for
      Attribution Methods", ICML 2022.
    """
    field = noise * jax.random.normal(key, image.shape, jnp.float32)
    filled = linear_impute(image, removed) + field.astype(image.dtype)
    return jnp.where(removed[..., None], filled, image)
