"""The sanity check's pair for the benchmark scripts: obama and obama2, aligned for a model.

The bundled sample photos, detected and aligned to the model's crop size and
template, as `srise-jax sanity` and `tests/test_sanity.py` use them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from srise_jax import align, data
from srise_jax.models import FaceModel


def sample_pair(model: FaceModel) -> tuple[jax.Array, jax.Array]:
    """(probe, mate): obama and obama2 as float32 (S, S, 3) crops for `model`."""
    photos = data.sample_faces()
    return tuple(jnp.asarray(align.detect_and_align(
        photos[name], size=model.image_size, template=model.template).face)
        for name in ("obama", "obama2"))
