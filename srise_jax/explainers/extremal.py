"""Extremal-perturbation-style mask optimisation for the similarity.

A smooth mask, kept low resolution so that it cannot pick out adversarial
single pixels, is optimised to keep s(x) = cos(embed(x), embed(reference))
while revealing as little of the image as possible.

References:
  Fong & Vedaldi, "Interpretable Explanations of Black Boxes by Meaningful
  Perturbation", 2017. https://arxiv.org/abs/1704.03296
  Fong et al., "Understanding Deep Networks via Extremal Perturbations and
  Smooth Masks", 2019. https://arxiv.org/abs/1910.08485
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from srise_jax.explainers.gradients import similarity_fn
from srise_jax.explainers.registry import register
from srise_jax.typing import EmbedFn, PyTree


def _upsample(logits: jax.Array, shape: tuple[int, int]) -> jax.Array:
    """The mask in [0, 1] at image resolution: sigmoid, then bilinear resize."""
    return jax.image.resize(jax.nn.sigmoid(logits), shape, method="bilinear")


@register("extremal", kind="optimisation")
def extremal(embed_fn: EmbedFn, params: PyTree, image: jax.Array,
             reference: jax.Array, key: jax.Array, *, mask_size: int = 14, num_steps: int = 100,
             learning_rate: float = 0.1, area_weight: float = 1.0, fill: float = 0.0) -> jax.Array:
    """The smallest smooth mask that keeps the similarity, found with Adam.

    Minimises -s(image * m + fill * (1 - m)) + area_weight * mean(m) over the
    logits of a `mask_size` x `mask_size` mask m (sigmoid, bilinear upsample),
    starting from all-zero logits (m = 0.5 everywhere), so the result is
    deterministic and the key is unused. A penalty on the area, not a target
    area: a pixel is kept when keeping it raises s by more than
    area_weight / (H * W).

    Args:
      embed_fn: `embed_fn(params, images) -> embeddings`.
      params: the model's variables.
      image: Float[Array, "h w 3"], the image explained.
      reference: Float[Array, "h w 3"], the image it is compared with.
      key: unused.
      mask_size: side of the mask's logit grid.
      num_steps: Adam steps (`lax.scan`, so the whole optimisation jits).
      learning_rate: Adam's step size on the logits.
      area_weight: price of revealing the whole image, in units of similarity.
      fill: the value hidden pixels take (0: black).

    Returns:
      Float[Array, "h w"], the final mask in [0, 1] (1: kept, important).
    """
    del key
    shape = image.shape[:2]
    score = similarity_fn(embed_fn, params, reference)

    def loss(logits: jax.Array) -> jax.Array:
        mask = _upsample(logits, shape)[..., None]
        return -score(image * mask + fill * (1.0 - mask)) + area_weight * jnp.mean(mask)

    optimiser = optax.adam(learning_rate)

    def step(carry: tuple[jax.Array, optax.OptState], _: None
             ) -> tuple[tuple[jax.Array, optax.OptState], None]:
        logits, state = carry
        grads = jax.grad(loss)(logits)
        # optax's Adam raises its decay rates to the power of an int32 step
        # count, a mixed float/int operation that strict dtype promotion
        # refuses: the standard rules apply to the optimiser's own arithmetic
        # only, whatever the caller's setting.
        with jax.numpy_dtype_promotion("standard"):
            updates, state = optimiser.update(grads, state)
            return (optax.apply_updates(logits, updates), state), None

    logits = jnp.zeros((mask_size, mask_size), jnp.float32)
    (logits, _), _ = jax.lax.scan(step, (logits, optimiser.init(logits)), None, length=num_steps)
    return _upsample(logits, shape)
