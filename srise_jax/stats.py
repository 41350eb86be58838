"""Rank statistics in JAX: average ranks with ties, Spearman's correlation.

CorrRISE correlates each pixel's mask values with the similarity scores, and
the sanity check compares maps by rank; both need ranks that treat ties
(the many exact 0s and 1s of binary masks) as the textbook does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


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
