"""The types every layer shares: the model contract, parameter trees, explainers.

    embed_fn(params, images[B, H, W, 3]) -> embeddings[B, D]

is the one model contract of the library (`srise_jax.models` builds such
functions; a user plugs in their own). An explainer maps an image and the
intact reference it is compared with to an (H, W) saliency map.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import jax

# A model's parameters (or any nested container of arrays): typed loosely,
# as JAX itself does, because flax, haiku and plain dicts all qualify.
PyTree = Any

# `embed_fn(params, images)`: images Float[Array, "b h w 3"] RGB in [0, 1],
# embeddings Float[Array, "b d"]; pure, so that it can be jitted and vmapped.
EmbedFn = Callable[[PyTree, jax.Array], jax.Array]


@runtime_checkable
class Explainer(Protocol):
    """`explainer(embed_fn, params, image, reference, key, **options) -> map`.

    `image` and `reference` are Float[Array, "h w 3"] RGB in [0, 1]; the map
    is Float[Array, "h w"], higher where `image`'s pixels matter more for the
    cosine similarity of its embedding to `reference`'s. Options are
    keyword-only and static under `jax.jit`; `key` is a `jax.random` key
    (ignored by deterministic methods).

    Runtime `isinstance` checks only that the object is callable (the
    `typing.Protocol` rule); `inspect.signature` shows the options.
    """

    def __call__(self, embed_fn: EmbedFn, params: PyTree, image: jax.Array,
                 reference: jax.Array, key: jax.Array, /,
                 **options: Any) -> jax.Array:
        ...
