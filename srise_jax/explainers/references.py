"""Reference "explainers" that look at neither the model nor the image.

A benchmark needs floors: a method should beat a map of noise, and a face
method should beat the centre of the face, which any aligned face crop makes
look plausible (the paper warns about heatmaps on the centre of the face,
section 4.2). Both share the explainer signature and ignore what they ignore.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from srise_jax.explainers.registry import register
from srise_jax.typing import EmbedFn, PyTree


@register("random", kind="reference")
def random_map(embed_fn: EmbedFn | None, params: PyTree, image: jax.Array,
               reference: jax.Array | None, key: jax.Array) -> jax.Array:
    """Uniform noise in [0, 1): depends on `key` and the image's shape only.

    Args:
      embed_fn, params, reference: ignored.
      image: Float[Array, "h w 3"], only its shape is used.
      key: a `jax.random` key.

    Returns:
      Float[Array, "h w"].
    """
    return jax.random.uniform(key, image.shape[:2], jnp.float32)


@register("centre_prior", kind="reference")
def centre_prior(embed_fn: EmbedFn | None, params: PyTree, image: jax.Array,
                 reference: jax.Array | None, key: jax.Array | None, *,
                 sigma_fraction: float = 0.25) -> jax.Array:
    """A centred isotropic Gaussian, peak 1 at the image centre.

    Args:
      embed_fn, params, reference, key: ignored.
      image: Float[Array, "h w 3"], only its shape is used.
      sigma_fraction: standard deviation as a fraction of min(H, W).

    Returns:
      Float[Array, "h w"] in (0, 1].

    References:
      Lu and Ebrahimi, arXiv:2304.06118, section 4.2.
    """
    height, width = image.shape[:2]
    sigma = sigma_fraction * min(height, width)
    y = jnp.arange(height, dtype=jnp.float32) - (height - 1) / 2
    x = jnp.arange(width, dtype=jnp.float32) - (width - 1) / 2
    dist2 = y[:, None] ** 2 + x[None, :] ** 2
    return jnp.exp(-dist2 / (2.0 * sigma**2))
