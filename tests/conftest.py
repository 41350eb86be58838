"""Shared fixtures: fresh keys and small planted models whose answers are known."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_numpy_dtype_promotion", "standard")


@pytest.fixture
def key():
    return jax.random.key(0)


def region_embed(region):
    """An embed_fn that reads only the pixels of `region` (y0, y1, x0, x1).

    The embedding is the region's pixels followed by a constant block, so
    masking part of the region changes the cosine to an intact image (a pure
    linear read-out of the region would be scale invariant under cosine).
    """
    y0, y1, x0, x1 = region

    def embed_fn(params, images):
        inside = images[:, y0:y1, x0:x1, :].reshape(images.shape[0], -1)
        const = jnp.broadcast_to(params["const"], (images.shape[0],
                                                   params["const"].shape[0]))
        return jnp.concatenate([inside - params["offset"], const], axis=1)

    return embed_fn


@pytest.fixture
def planted_region():
    """(embed_fn, params, region, probe, mate) for a 32x32 planted model."""
    region = (8, 16, 12, 20)
    rng = np.random.default_rng(0)
    probe = rng.uniform(0.2, 1.0, (32, 32, 3)).astype(np.float32)
    mate = np.clip(probe + rng.normal(0, 0.05, probe.shape), 0, 1).astype(
        np.float32)
    params = {"const": jnp.full((64,), 0.5, jnp.float32),
              "offset": jnp.float32(0.0)}
    return region_embed(region), params, region, jnp.asarray(probe), \
        jnp.asarray(mate)
