"""A planted face model for the benchmark tests: 32x32 crops of which one region counts.

Importable by the tests and by the subprocess driver of test_benchmark_scale.
"""

import jax.numpy as jnp
from conftest import region_embed

from srise_jax import align, models

# The pixels the model reads (y0, y1, x0, x1); the bundled protocol's pairs
# give both accepted and rejected pairs at `THRESHOLD` with this region.
REGION = (8, 20, 6, 26)
THRESHOLD = 0.2
NAME = "planted"


def planted_model() -> models.FaceModel:
    """The planted `FaceModel`: `region_embed(REGION)` on 32x32 crops."""
    params = {"const": jnp.full((16,), 0.2, jnp.float32), "offset": jnp.float32(0.5)}
    return models.FaceModel(NAME, "planted", region_embed(REGION), params, 32,
                            align.ARCFACE_112, THRESHOLD, (), None, {"model": NAME})


def register_planted() -> None:
    """Make `--model planted` load `planted_model()` (made when the CLI loads it)."""
    models.register_model(NAME, lambda weights, *, dtype: planted_model(), overwrite=True)
