"""The `embed_fn(params, images)` contract, made from a Flax module."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

EmbedFn = Callable[[Any, jax.Array], jax.Array]


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
    """
    expected = (input_size, input_size, 3)

    def embed_fn(params: Any, images: jax.Array) -> jax.Array:
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"{label} expects images of shape [B, {input_size}, {input_size}, 3], "
                             f"got {tuple(images.shape)}")
        return model.apply(params, images)

    embed_fn.__name__ = embed_fn.__qualname__ = name
    embed_fn.__doc__ = doc
    return embed_fn
