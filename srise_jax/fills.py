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

    Args:
      image: Float[Array, "h w c"].
      sigma: standard deviation in pixels, a Python float (static); None
        means ``max(H, W) / 20`` (5.6 pixels at 112x112). The kernel is cut
        at ``int(3 * sigma)`` pixels each side and renormalized.

    Returns:
      Float[Array, "h w c"], the blurred image, same dtype as ``image``.
    """
    if sigma is None:
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
        out = sum(taps[i] * lax.slice_in_dim(padded, i, i + n, axis=axis)
                  for i in range(2 * radius + 1))
    return out


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


def impute_iterations(height: int, width: int) -> int:
    """The solver's iteration cap for an image of ``height`` x ``width``.

    Conjugate gradients on this Laplacian-like system need about as many
    steps as the removed region is wide (its condition number grows with
    the square of the width); ``4 * (H + W)`` leaves room for thin, winding
    kept regions. Most systems stop far earlier, at `IMPUTE_TOL`.

    Args:
      height, width: the image size.

    Returns:
      The cap, an int.
    """
    return 4 * (height + width)


def linear_impute(image: jax.Array, removed: jax.Array, *,
                  tol: float = IMPUTE_TOL, max_iterations: int | None = None) -> jax.Array:
    """ROAD's linear imputation, without the noise: removed pixels solved from kept ones.

    Every removed pixel ``i`` is set to the weighted mean of its in-image
    neighbours ``j`` (weights `ROAD_WEIGHTS`, renormalized by their sum
    ``d_i`` where the image border cuts some off), kept or removed alike::

      d_i x_i - sum_{j removed} w_ij x_j = sum_{j kept} w_ij image_j

    one sparse, symmetric linear system per channel whose unknowns are the
    removed pixels, the system ROAD solves with a sparse direct solver. Here
    it is solved by conjugate gradients preconditioned by ``d``, started
    from the per-channel mean of ``image``, until ``max |x_i - (sum_j w_ij
    x_j) / d_i| <= tol`` over the removed pixels or after
    ``max_iterations`` steps: fixed shapes, so it jits and vmaps (over
    masks, e.g.). Kept pixels are returned bit-identical.

    When every pixel is removed, nothing anchors the system (any constant
    image solves it); the result is then the per-channel mean of ``image``,
    the "mean" fill.

    Args:
      image: Float[Array, "h w c"].
      removed: Bool[Array, "h w"], True where the pixel is replaced.
      tol: the stopping residual (see above), in pixel units.
      max_iterations: the iteration cap (static); None means
        `impute_iterations` ``(H, W)``.

    Returns:
      Float[Array, "h w c"]: ``image`` with its removed pixels imputed.

    References:
      Rong et al., "A Consistent and Efficient Evaluation Strategy for
      Attribution Methods", ICML 2022, section 4 (noisy linear imputation).
    """
    height, width, _ = image.shape
    if max_iterations is None:
        max_iterations = impute_iterations(height, width)
    out_dtype = image.dtype
    image = image.astype(jnp.float32)
    r = removed[..., None]
    degree = neighbour_sum(jnp.ones((height, width, 1), jnp.float32))
    mean = jnp.mean(image, axis=(0, 1))
    rhs = jnp.where(r, neighbour_sum(jnp.where(r, 0.0, image)), 0.0)

    def apply(u):  # u is 0 at kept pixels
        return jnp.where(r, degree * u - neighbour_sum(u), 0.0)

    def dot(a, b):  # per channel
        return jnp.sum(a * b, axis=(0, 1))

    def safe_div(num, den):
        # A converged channel has a zero direction: it stops moving.
        ok = den > 0
        return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)

    u = jnp.where(r, mean, 0.0)
    res = rhs - apply(u)
    z = res / degree
    rz = dot(res, z)

    def cond(state):
        i, _, _, z, _, _ = state
        return (i < max_iterations) & (jnp.max(jnp.abs(z)) > tol)

    def body(state):
        i, u, res, z, p, rz = state
        ap = apply(p)
        alpha = safe_div(rz, dot(p, ap))
        u = u + alpha * p
        res = res - alpha * ap
        z = res / degree
        rz_new = dot(res, z)
        p = z + safe_div(rz_new, rz) * p
        return i + 1, u, res, z, p, rz_new

    _, u, _, _, _, _ = lax.while_loop(cond, body, (jnp.int32(0), u, res, z, z, rz))
    u = jnp.where(jnp.all(removed), mean, u)
    return jnp.where(r, u, image).astype(out_dtype)


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
