"""Model-parameter randomization: does an explanation depend on the model?

The cascading test re-initialises a model's layer groups from the output down,
one more group at each step, and compares the explainer's map under each
randomized model with its map under the trained one. A map that survives the
loss of the weights explains the image, not the model.

References:
  Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018,
  arXiv:1810.03292, section 3.1.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from srise_jax.explainers.perturbation import spearman as _spearman

# Layer groups of the known models, top (output) first: group name -> the
# top-level submodules it holds. A tree is recognised by its exact key set.
_IRESNET_GROUPS = (
    ("head", ("features", "fc", "bn2")),
    ("layer4", ("layer4",)), ("layer3", ("layer3",)),
    ("layer2", ("layer2",)), ("layer1", ("layer1",)),
    ("stem", ("conv1", "bn1", "prelu")),
)
# dlib's residual levels (`dlib_resnet._LEVELS`: 3, 4, 3, 3, 1 blocks): one
# group per level, as for the iResNet's stages, so a check costs 7 maps, not 16.
_DLIB_GROUPS = (
    ("fc", ("fc",)),
    ("level5", ("block13",)),
    ("level4", ("block10", "block11", "block12")),
    ("level3", ("block7", "block8", "block9")),
    ("level2", ("block3", "block4", "block5", "block6")),
    ("level1", ("block0", "block1", "block2")),
    ("stem", ("conv", "affine")),
)
_KNOWN_GROUPS = tuple(
    (frozenset(key for _, keys in table for key in keys), table)
    for table in (_IRESNET_GROUPS, _DLIB_GROUPS))

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
        original.
      ssim: Float[Array, "s"] SSIM of each step's map with the original.
    """

    steps: tuple[str, ...]
    maps: jax.Array
    spearman: jax.Array
    ssim: jax.Array


def _top_keys(variables: Any) -> set[str]:
    return {key for collection in variables.values() for key in collection}


def _natural(key: str) -> list:
    """Sort key that puts layer2 before layer10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _group_table(variables: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """(name, top-level keys) of each layer group, top first."""
    keys = _top_keys(variables)
    for known, table in _KNOWN_GROUPS:
        if keys == known:
            return table
    # Flax trees come back with sorted keys (jit and eval_shape flatten them),
    # so the definition order is lost; the reverse natural order matches
    # models that number their layers and name the head last alphabetically
    # (conv1, conv2, fc). Pass `groups` explicitly otherwise.
    return tuple((key, (key,)) for key in sorted(keys, key=_natural, reverse=True))


def layer_groups(variables: Any) -> list[str]:
    """The layer groups of a Flax model, top (output) first.

    Args:
      variables: the model's variables, {"params": ..., and e.g.
        "batch_stats": ...}.

    Returns:
      Group names: for the iResNet "head" (bn2, fc, features), "layer4" ..
      "layer1", "stem" (conv1, bn1, prelu); for dlib's ResNet "fc", "level5"
      .. "level1" (its residual levels), "stem" (conv, affine); for another
      model each top-level submodule in reverse natural order.
    """
    return [name for name, _ in _group_table(variables)]


def _resolve(variables: Any, groups: Sequence[str]) -> set[str]:
    """The top-level keys of `groups`; a group is a table name or a top-level key."""
    table = dict(_group_table(variables))
    keys = _top_keys(variables)
    chosen = set()
    for group in groups:
        if group in table:
            chosen.update(table[group])
        elif group in keys:
            chosen.add(group)
        else:
            raise ValueError(f"unknown layer group {group!r}; available: "
                             f"{', '.join(table)} or a top-level key")
    return chosen


def randomize(variables: Any, groups: Sequence[str], key: jax.Array) -> Any:
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
      groups: names from `layer_groups` (or top-level keys of "params").
      key: a `jax.random` key; leaf i uses `jax.random.fold_in(key, i)`.

    Returns:
      A tree of the same structure, shapes and dtypes; the leaves outside the
      groups are the original arrays.
    """
    chosen = _resolve(variables, groups)
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
      Float[Array, ""] in [-1, 1]; 0 if either map is constant.
    """
    return _spearman(a.ravel(), b.ravel())


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


def cascading_randomization(explainer: Callable, embed_fn: Callable, params: Any,
                            image: jax.Array, reference: jax.Array, key: jax.Array, *,
                            groups: Sequence[str] | None = None) -> SanityResult:
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
      groups: the groups to randomize, in order; default `layer_groups(params)`.

    Returns:
      A `SanityResult` with S = len(groups) steps.

    References:
      Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.
    """
    groups = tuple(layer_groups(params) if groups is None else groups)
    _resolve(params, groups)  # fail before the first map
    explain_key, model_key = jax.random.split(key)
    explain = jax.jit(explainer, static_argnums=0)
    maps = [explain(embed_fn, params, image, reference, explain_key)]
    current = params
    for step, group in enumerate(groups):
        current = randomize(current, (group,), jax.random.fold_in(model_key, step))
        maps.append(explain(embed_fn, current, image, reference, explain_key))
    maps = jnp.stack(maps)
    rho, structural = _compare(maps[0], maps[1:]) if groups else (jnp.zeros(0), jnp.zeros(0))
    return SanityResult(groups, maps, rho, structural)
