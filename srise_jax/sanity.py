"""Model-parameter randomization: does an explanation depend on the model?

The cascading test re-initialises a model's layer groups from the output down,
one more group at each step, and compares the explainer's map under each
randomized model with its map under the trained one. A map that survives the
loss of the weights explains the image, not the model. Each model declares
its groups (`srise_jax.models.FaceModel.layer_groups`); pass them as `groups`.

References:
  Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018,
  arXiv:1810.03292, section 3.1.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from srise_jax.models.loading import LayerGroups, known_layer_groups
from srise_jax.stats import spearman
from srise_jax.typing import EmbedFn, PyTree

# A layer group as callers name it: a name of the model's default groups (or
# a top-level parameter name), or a (name, top-level parameter names) pair
# such as the items of `srise_jax.models.FaceModel.layer_groups`.
Group = str | tuple[str, Sequence[str]]

_SSIM_WINDOW = 11
_SSIM_SIGMA = 1.5
# Wang et al.'s constants for a dynamic range of 1.
_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2


class SanityResult(NamedTuple):
    """What `cascading_randomization` found.

    Attributes:
      steps: the group randomized at each step, top first (S names).
      maps: Float[Array, "s+1 h w"]: the original model's map, then the map
        after each step.
      spearman: Float[Array, "s"] rank correlation of each step's map with the
        original (`rank_correlation`: NaN where either map is constant).
      ssim: Float[Array, "s"] SSIM of each step's map with the original.
    """

    steps: tuple[str, ...]
    maps: jax.Array
    spearman: jax.Array
    ssim: jax.Array


def _top_keys(variables: PyTree) -> set[str]:
    return {key for collection in variables.values() for key in collection}


def _natural(key: str) -> list:
    """Sort key that puts layer2 before layer10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _default_groups(variables: PyTree) -> LayerGroups:
    """A built-in model's declared groups, else one group per top-level submodule."""
    declared = known_layer_groups(variables)
    if declared is not None:
        return declared
    # Flax trees come back with sorted keys (jit and eval_shape flatten them),
    # so the definition order is lost; the reverse natural order matches
    # models that number their layers and name the head last alphabetically
    # (conv1, conv2, fc). Pass `groups` explicitly otherwise.
    return tuple((key, (key,)) for key in sorted(_top_keys(variables), key=_natural, reverse=True))


def _as_groups(variables: PyTree, groups: Sequence[Group] | None) -> LayerGroups:
    """`groups` as (name, top-level keys) pairs, each checked against `variables`."""
    defaults = _default_groups(variables)
    if groups is None:
        return defaults
    table = dict(defaults)
    keys = _top_keys(variables)
    pairs = []
    for group in groups:
        if isinstance(group, str):
            if group in table:
                pairs.append((group, tuple(table[group])))
            elif group in keys:
                pairs.append((group, (group,)))
            else:
                raise ValueError(f"unknown layer group {group!r}; available: "
                                 f"{', '.join(table)} or a top-level key")
            continue
        name, members = group
        missing = [key for key in members if key not in keys]
        if missing:
            raise ValueError(f"layer group {name!r}: the model has no top-level parameter "
                             f"{', '.join(map(repr, missing))}")
        pairs.append((name, tuple(members)))
    return tuple(pairs)


def layer_groups(variables: PyTree, *, groups: Sequence[Group] | None = None) -> list[str]:
    """The names of a model's layer groups, top (output) first.

    Args:
      variables: the model's variables, {"params": ..., and e.g.
        "batch_stats": ...}.
      groups: the groups, as `FaceModel.layer_groups` gives them ((name,
        top-level keys) pairs), or names; checked against `variables`.
        Default: the groups a built-in model declares (`LAYER_GROUPS` of
        `srise_jax.models.iresnet` and `srise_jax.models.dlib_resnet`, found
        by the model's top-level keys), or for another model each top-level
        submodule in reverse natural order.

    Returns:
      Group names: for the iResNet "head" (bn2, fc, features), "layer4" ..
      "layer1", "stem" (conv1, bn1, prelu); for dlib's ResNet "fc", "level5"
      .. "level1" (its residual levels), "stem" (conv, affine).

    Raises:
      ValueError: a group names a key the model does not have.
    """
    return [name for name, _ in _as_groups(variables, groups)]


def randomize(variables: PyTree, groups: Sequence[Group], key: jax.Array) -> PyTree:
    """`variables` with the parameters of `groups` re-initialised at random.

    Each parameter leaf of the groups becomes N(0, rms^2) noise of its shape
    and dtype, rms the leaf's root mean square: kernels keep their scale (their
    mean is near 0, so rms is their std), and a normalisation scale of ones
    stays of order one instead of collapsing to 0. Biases and scales are
    randomized too, as Adebayo et al. do; a leaf of zeros stays zero. Running
    statistics ("batch_stats") are kept: they are not learned weights, and
    keeping them isolates the effect of the weights.

    Args:
      variables: the model's variables, {"params": ..., ...}.
      groups: (name, top-level keys) pairs (e.g. from
        `FaceModel.layer_groups`), or names from `layer_groups` (or
        top-level keys of "params").
      key: a `jax.random` key; leaf i uses `jax.random.fold_in(key, i)`.

    Returns:
      A tree of the same structure, shapes and dtypes; the leaves outside the
      groups are the original arrays.
    """
    chosen = {key for _, members in _as_groups(variables, groups) for key in members}
    leaves, treedef = jax.tree_util.tree_flatten_with_path(variables)
    out = []
    for index, (path, leaf) in enumerate(leaves):
        collection, top = path[0].key, path[1].key
        if collection != "params" or top not in chosen:
            out.append(leaf)
            continue
        scale = jnp.sqrt(jnp.mean(jnp.square(leaf.astype(jnp.float32))))
        noise = jax.random.normal(jax.random.fold_in(key, index), leaf.shape)
        out.append((noise * scale).astype(leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, out)


def rank_correlation(a: jax.Array, b: jax.Array) -> jax.Array:
    """Spearman rank correlation of two maps, pixel by pixel (ties averaged).

    Args:
      a, b: Float[Array, "h w"].

    Returns:
      Float[Array, ""] in [-1, 1]; NaN if either map is constant. A map
      that randomization flattened has no ranking left to compare: it is
      undefined, not "decorrelated" (a 0 would pass the check's < 0.5).
    """
    flat = (jnp.max(a) == jnp.min(a)) | (jnp.max(b) == jnp.min(b))
    return jnp.where(flat, jnp.nan, spearman(a.ravel(), b.ravel()))


def _gaussian_window() -> np.ndarray:
    offsets = np.arange(_SSIM_WINDOW) - (_SSIM_WINDOW - 1) / 2
    window = np.exp(-offsets**2 / (2 * _SSIM_SIGMA**2))
    return window / window.sum()


def _unit_range(x: jax.Array) -> jax.Array:
    """`x` rescaled to [0, 1]; a constant map becomes 0."""
    low, high = x.min(), x.max()
    span = high - low
    return jnp.where(span > 0, (x - low) / jnp.where(span > 0, span, 1.0), 0.0)


def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
    """Single-scale SSIM of two maps, each first rescaled to [0, 1].

    Local means, variances and covariance under an 11x11 Gaussian window
    (sigma 1.5), over the windows that fit inside the map ("valid"), averaged.

    Args:
      a, b: Float[Array, "h w"], at least 11 pixels a side.

    Returns:
      Float[Array, ""] in [-1, 1]; 1 for maps equal up to an increasing
      affine map.

    References:
      Wang et al., "Image Quality Assessment: From Error Visibility to
      Structural Similarity", IEEE TIP 2004.
    """
    if min(a.shape) < _SSIM_WINDOW:
        raise ValueError(f"ssim needs maps of at least {_SSIM_WINDOW} pixels a side, "
                         f"got {a.shape}")
    window = jnp.asarray(_gaussian_window(), jnp.float32)

    def blur(x):
        rows = jax.vmap(lambda r: jnp.convolve(r, window, mode="valid"))(x)
        return jax.vmap(lambda c: jnp.convolve(c, window, mode="valid"),
                        in_axes=1, out_axes=1)(rows)

    x, y = _unit_range(a.astype(jnp.float32)), _unit_range(b.astype(jnp.float32))
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx * mx
    vy = blur(y * y) - my * my
    cov = blur(x * y) - mx * my
    local = ((2 * mx * my + _SSIM_C1) * (2 * cov + _SSIM_C2)
             / ((mx * mx + my * my + _SSIM_C1) * (vx + vy + _SSIM_C2)))
    return local.mean()


@jax.jit
def _compare(original: jax.Array, maps: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Spearman and SSIM of each of `maps` with `original`."""
    return jax.vmap(lambda m: (rank_correlation(original, m), ssim(original, m)))(maps)


def cascading_randomization(explainer: Callable[..., jax.Array], embed_fn: EmbedFn, params: PyTree,
                            image: jax.Array, reference: jax.Array, key: jax.Array, *,
                            groups: Sequence[Group] | None = None) -> SanityResult:
    """Maps of `image` as the model's layer groups are randomized, top down.

    Step k randomizes group k on top of steps 1..k-1 (cumulatively). Every
    map uses the same explainer key, so the maps differ only by the model.
    The maps are compared as they are (signed), not by absolute value: a
    perturbation map's sign says whether keeping a pixel raises or lowers
    the similarity, and its order is what the explanation shows.

    Args:
      explainer: `explainer(embed_fn, params, image, reference, key) -> (h, w)`
        (the registry's signature with its options bound, e.g. by
        `functools.partial`); it is jitted here once for all steps.
      embed_fn: `embed_fn(params, images[B, H, W, 3]) -> [B, D]`.
      params: the model's variables.
      image, reference: Float[Array, "h w 3"] RGB in [0, 1].
      key: a `jax.random` key, split into the explainer's and the weights'.
      groups: the groups to randomize, in order: (name, top-level keys)
        pairs such as `FaceModel.layer_groups`, or names (see
        `layer_groups`); default the model's groups from `layer_groups`.

    Returns:
      A `SanityResult` with S = len(groups) steps.

    References:
      Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    groups = _as_groups(params, groups)  # fails before the first map
    explain_key, model_key = jax.random.split(key)
    explain = jax.jit(explainer, static_argnums=0)
    maps = [explain(embed_fn, params, image, reference, explain_key)]
    current = params
    for step, group in enumerate(groups):
        current = randomize(current, (group,), jax.random.fold_in(model_key, step))
        maps.append(explain(embed_fn, current, image, reference, explain_key))
    maps = jnp.stack(maps)
    rho, structural = _compare(maps[0], maps[1:]) if groups else (jnp.zeros(0), jnp.zeros(0))
    return SanityResult(tuple(name for name, _ in groups), maps, rho, structural)
