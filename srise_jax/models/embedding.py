"""The `embed_fn(params, images)` contract, made from a Flax module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax

from srise_jax.typing import EmbedFn


class FeatureFns(NamedTuple):
    """A network split at its last convolutional stage (what Grad-CAM weighs).

    ``head_fn(params, features_fn(params, images))`` equals the network's
    ``embed_fn(params, images)``.
    """

    features_fn: Callable[[Any, jax.Array], jax.Array]
    head_fn: Callable[[Any, jax.Array], jax.Array]


def _standard_promotion() -> Any:
    """JAX's standard dtype promotion while a model is traced.

    Flax's BatchNorm mixes a bfloat16 input with its float32 statistics,
    which a caller's `jax_numpy_dtype_promotion="strict"` refuses; the
    models' own code casts explicitly, so only Flax's mixing is let through.
    """
    return jax.numpy_dtype_promotion("standard")


def module_embed_fn(model: nn.Module, *, input_size: int, label: str, name: str,
                    doc: str) -> EmbedFn:
    """`embed_fn(params, images) = model.apply(params, images)`, with a shape check.

    The caller caches the result (one object per model and dtype) so that jit
    caches keyed on the function are shared.

    Args:
      model: a Flax module mapping [B, input_size, input_size, 3] to [B, D].
      input_size: the square input side the model expects.
      label: the model's name in error messages.
      name: the function's `__name__`.
      doc: the function's docstring.

    Returns:
      `embed_fn(params, images[B, input_size, input_size, 3]) -> [B, D]`;
      it raises ValueError on images of another shape.
    """
    expected = (input_size, input_size, 3)

    def embed_fn(params: Any, images: jax.Array) -> jax.Array:
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"{label} expects images of shape [B, {input_size}, {input_size}, 3], "
                             f"got {tuple(images.shape)}")
        with _standard_promotion():
            return model.apply(params, images)

    embed_fn.__name__ = embed_fn.__qualname__ = name
    embed_fn.__doc__ = doc
    return embed_fn


def module_feature_fns(model: nn.Module, *, input_size: int, label: str) -> FeatureFns:
    """`FeatureFns` of a Flax module with `features` and `head` methods.

    The caller caches the result, as for `module_embed_fn`.

    Args:
      model: a Flax module whose `features(images)` returns [B, h, w, C] and
        whose `head(features)` returns the embeddings [B, D].
      input_size: the square input side the model expects.
      label: the model's name in error messages.

    Returns:
      `FeatureFns(features_fn, head_fn)`: `features_fn(params, images)`
      checks the images' shape as `module_embed_fn` does.
    """
    expected = (input_size, input_size, 3)

    def features_fn(params: Any, images: jax.Array) -> jax.Array:
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"{label} expects images of shape [B, {input_size}, {input_size}, 3], "
                             f"got {tuple(images.shape)}")
        with _standard_promotion():
            return model.apply(params, images, method=type(model).features)

    def head_fn(params: Any, features: jax.Array) -> jax.Array:
        with _standard_promotion():
            return model.apply(params, features, method=type(model).head)

    return FeatureFns(features_fn, head_fn)
