"""Gradient explainers of the similarity s(x) = cos(embed(x), embed(reference)).

All of them differentiate the same score (`similarity_gradient`) with
`jax.grad`, so they share one contract: a pure, jittable function of
(embed_fn, params, image, reference, key) with static options, returning an
(H, W) map of `image`'s pixels.

References:
  Simonyan et al., "Deep Inside Convolutional Networks", 2014. https://arxiv.org/abs/1312.6034
  Shrikumar et al., "Not Just a Black Box", 2016. https://arxiv.org/abs/1605.01713
  Smilkov et al., "SmoothGrad: removing noise by adding noise", 2017. https://arxiv.org/abs/1706.03825
  Sundararajan et al., "Axiomatic Attribution for Deep Networks", 2017. https://arxiv.org/abs/1703.01365
  Selvaraju et al., "Grad-CAM", 2017. https://arxiv.org/abs/1610.02391
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from srise_jax.explainers.registry import register
from srise_jax.similarity import cosine_similarity
from srise_jax.typing import EmbedFn, PyTree


def similarity_fn(embed_fn: EmbedFn, params: PyTree,
                  reference: jax.Array) -> Callable[[jax.Array], jax.Array]:
    """s(x) = cos(embed(x), embed(reference)) for one image x (H, W, 3).

    The reference embedding is a constant of s: only `x` is explained.

    Args:
      embed_fn: `embed_fn(params, images [B, H, W, 3]) -> [B, D]`.
      params: the model's variables.
      reference: Float[Array, "h w 3"].

    Returns:
      `score(x) -> ()` float32.
    """
    target = jax.lax.stop_gradient(embed_fn(params, reference[None])[0])

    def score(x: jax.Array) -> jax.Array:
        return cosine_similarity(embed_fn(params, x[None])[0], target)

    return score


def similarity_gradient(embed_fn: EmbedFn, params: PyTree, image: jax.Array,
                        reference: jax.Array) -> jax.Array:
    """ds/dx, the raw gradient of the similarity with respect to `image`.

    Args:
      embed_fn, params, reference: as in `similarity_fn`.
      image: Float[Array, "h w 3"], the image explained.

    Returns:
      Float[Array, "h w 3"].
    """
    return jax.grad(similarity_fn(embed_fn, params, reference))(image)


def _max_abs_over_channels(gradients: jax.Array) -> jax.Array:
    """Simonyan et al.'s reduction: the largest |gradient| of a pixel's channels."""
    return jnp.max(jnp.abs(gradients), axis=-1)


@register("gradient", kind="gradient")
def gradient(embed_fn: EmbedFn, params: PyTree, image: jax.Array, reference: jax.Array,
             key: jax.Array) -> jax.Array:
    """Vanilla gradient: max over channels of |ds/dx| (the key is unused).

    Args:
      embed_fn: `embed_fn(params, images) -> embeddings`.
      params: the model's variables.
      image: Float[Array, "h w 3"], the image explained.
      reference: Float[Array, "h w 3"], the image it is compared with.
      key: unused (deterministic method).

    Returns:
      Float[Array, "h w"], non-negative.

    References:
      Simonyan et al., 2014. https://arxiv.org/abs/1312.6034
    """
    del key
    return _max_abs_over_channels(similarity_gradient(embed_fn, params, image, reference))


@register("gradient_x_input", kind="gradient")
def gradient_x_input(embed_fn: EmbedFn, params: PyTree, image: jax.Array, reference: jax.Array,
                     key: jax.Array) -> jax.Array:
    """Gradient x input: sum over channels of x * ds/dx (the key is unused).

    Signed: a positive value means the pixel, moved linearly from black to its
    value, raises the similarity; a negative one that it lowers it. Rank by
    absolute value for "how much does this pixel matter".

    Args:
      embed_fn, params, image, reference: as in `gradient`.
      key: unused (deterministic method).

    Returns:
      Float[Array, "h w"], signed.

    References:
      Shrikumar et al., 2016. https://arxiv.org/abs/1605.01713
    """
    del key
    return jnp.sum(image * similarity_gradient(embed_fn, params, image, reference), axis=-1)


@register("smoothgrad", kind="gradient")
def smoothgrad(embed_fn: EmbedFn, params: PyTree, image: jax.Array, reference: jax.Array,
               key: jax.Array, *, num_samples: int = 32, noise: float = 0.15) -> jax.Array:
    """SmoothGrad: the gradient averaged over noisy copies, reduced like `gradient`.

    Args:
      key: draws the Gaussian noise.
      num_samples: noisy copies, all differentiated at once (vmap).
      noise: noise standard deviation as a fraction of the image's value
        range (max - min), Smilkov et al.'s 10-20%.

    Returns:
      Float[Array, "h w"], non-negative: max over channels of |mean gradient|.

    References:
      Smilkov et al., 2017. https://arxiv.org/abs/1706.03825
    """
    sigma = noise * (jnp.max(image) - jnp.min(image))
    noisy = image + sigma * jax.random.normal(key, (num_samples, *image.shape), image.dtype)
    grads = jax.vmap(jax.grad(similarity_fn(embed_fn, params, reference)))(noisy)
    return _max_abs_over_channels(jnp.mean(grads, axis=0))


@register("integrated_gradients", kind="gradient")
def integrated_gradients(embed_fn: EmbedFn, params: PyTree, image: jax.Array, reference: jax.Array,
                         key: jax.Array, *, num_steps: int = 32,
                         batch_size: int = 8) -> jax.Array:
    """Integrated gradients from a black baseline (the key is unused).

    The path integral is the midpoint Riemann sum over `num_steps` points,
    evaluated `batch_size` points at a time (vmap inside, `lax.map` across
    batches) to bound memory. Completeness: the map sums to about
    s(image) - s(black).

    Args:
      num_steps: points on the straight path from black to `image`.
      batch_size: points differentiated together.

    Returns:
      Float[Array, "h w"], signed (sum over channels, as `gradient_x_input`).

    References:
      Sundararajan et al., 2017. https://arxiv.org/abs/1703.01365
    """
    del key
    baseline = jnp.zeros_like(image)
    alphas = (jnp.arange(num_steps, dtype=jnp.float32) + 0.5) / num_steps
    grad_fn = jax.grad(similarity_fn(embed_fn, params, reference))

    def point_gradient(alpha: jax.Array) -> jax.Array:
        return grad_fn(baseline + alpha * (image - baseline))

    grads = jax.lax.map(point_gradient, alphas, batch_size=batch_size)
    return jnp.sum((image - baseline) * jnp.mean(grads, axis=0), axis=-1)


@register("gradcam", kind="gradient")
def gradcam(embed_fn: EmbedFn, params: PyTree, image: jax.Array, reference: jax.Array,
            key: jax.Array, *, feature_fns: tuple[Callable, Callable] | None = None) -> jax.Array:
    """Grad-CAM of the similarity on the last convolutional stage (the key is unused).

    Channel weights are the spatial mean of ds/dA over the features A; the map
    is relu(sum_c w_c A_c), bilinearly resized to the image.

    Args:
      embed_fn: embeds `reference` (it must agree with `feature_fns`).
      feature_fns: `(features_fn, head_fn)` (static) with
        `features_fn(params, images) -> [B, h, w, C]` and
        `head_fn(params, features) -> [B, D]`; `iresnet_feature_fns(arch)` and
        `dlib_feature_fns()` in `srise_jax.models` provide them.

    Returns:
      Float[Array, "h w"], non-negative.

    Raises:
      ValueError: `feature_fns` is not given.

    References:
      Selvaraju et al., 2017. https://arxiv.org/abs/1610.02391
    """
    del key
    if feature_fns is None:
        raise ValueError(
            "gradcam needs feature_fns=(features_fn, head_fn) for the model's last convolutional "
            "stage; srise_jax.models.iresnet.iresnet_feature_fns(arch) (iResNet / ArcFace) and "
            "srise_jax.models.dlib_resnet.dlib_feature_fns() (dlib) provide them")
    features_fn, head_fn = feature_fns
    target = jax.lax.stop_gradient(embed_fn(params, reference[None])[0])
    activations = features_fn(params, image[None]).astype(jnp.float32)

    def score(a: jax.Array) -> jax.Array:
        return cosine_similarity(head_fn(params, a)[0], target)

    weights = jnp.mean(jax.grad(score)(activations)[0], axis=(0, 1))
    cam = jax.nn.relu(jnp.sum(weights * activations[0], axis=-1))
    return jax.image.resize(cam, image.shape[:2], method="bilinear")
