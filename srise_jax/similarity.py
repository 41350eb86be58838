"""Cosine similarity of embeddings, the score every explainer and metric weighs by."""

from __future__ import annotations

import jax
import jax.numpy as jnp

# Keeps the cosine finite (zero) for an all-zero embedding.
_NORM_EPS = 1e-12


def unit_normalize(embeddings: jax.Array) -> jax.Array:
    """Scale embeddings to unit L2 norm along the last axis, in float32.

    Float32 whatever the model's compute dtype, so that scores and saliency
    sums accumulate in full precision.

    Args:
      embeddings: Float[Array, "... d"], in any float dtype.

    Returns:
      Float[Array, "... d"] float32, each row divided by its L2 norm (by a
      tiny epsilon instead for a zero row, which stays zero).
    """
    x = embeddings.astype(jnp.float32)
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True),
                           _NORM_EPS)


def cosine_similarity(a: jax.Array, b: jax.Array) -> jax.Array:
    """Cosine similarity of `a` and `b` along the last axis (broadcasting).

    Args:
      a: Float[Array, "... d"].
      b: Float[Array, "... d"], broadcastable against `a`.

    Returns:
      Float[Array, "..."] float32 in [-1, 1] (0 against a zero vector).
    """
    return jnp.sum(unit_normalize(a) * unit_normalize(b), axis=-1)
