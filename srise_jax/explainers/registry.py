"""Explainers by name, so the command line and the benchmark can list and pick them.

Every explainer has one signature:

    explainer(embed_fn, params, image, reference, key, **options) -> saliency

(`srise_jax.typing.Explainer`: five positional arguments, keyword-only options) with `image` and `reference` Float[Array, "h w 3"] RGB in [0, 1] and
`saliency` Float[Array, "h w"] explaining `image`'s pixels for the cosine
similarity of its embedding to `reference`'s (higher: more important). It is
pure: jit it with `embed_fn` and the options static, vmap it over (image,
reference, key).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

from srise_jax import _helpers as checks
from srise_jax.typing import EmbedFn, Explainer, PyTree

KINDS = ("perturbation", "gradient", "reference", "optimisation")


class Entry(NamedTuple):
    """A registered explainer: the function and what kind of method it is."""

    fn: Explainer
    kind: str


_REGISTRY: dict[str, Entry] = {}


def register(name: str, *, kind: str) -> Callable[[Callable[..., Any]], Explainer]:
    """Decorator: make an explainer available as `get_explainer(name)`.

    Args:
      name: the public name (lower case, as the command line spells it).
      kind: one of `KINDS`.

    Returns:
      The decorator; it registers the function and returns it wrapped in
      the input checks every explainer shares (float, finite (H, W, 3)
      `image` and `reference` of one shape, else one clear error naming the
      argument and its dtype or shape); "reference" maps, which read only
      the image's shape, are returned unchanged.

    Raises:
      ValueError: `kind` is not in `KINDS`; or, when decorating, `name` is
        already registered.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def add(fn: Callable[..., Any]) -> Explainer:
        if name in _REGISTRY:
            raise ValueError(f"an explainer named {name!r} is already registered")

        @functools.wraps(fn)
        def checked(embed_fn: EmbedFn, params: PyTree, image: Any, reference: Any,
                    *args: Any, **kwargs: Any) -> Any:
            checks.check_images(image=image, reference=reference)
            return fn(embed_fn, params, image, reference, *args, **kwargs)

        # Reference maps read only the image's shape (tests pass no reference).
        wrapped = fn if kind == "reference" else checked
        _REGISTRY[name] = Entry(wrapped, kind)
        return wrapped

    return add


def get_explainer(name: str) -> Explainer:
    """The explainer registered as `name`.

    Args:
      name: a name of `list_explainers()`.

    Returns:
      `explainer(embed_fn, params, image, reference, key, **options) ->
      Float[Array, "h w"]` (the contract in this module's docstring).

    Raises:
      ValueError: unknown name (the message lists the registered ones).
    """
    try:
        return _REGISTRY[name].fn
    except KeyError:
        raise ValueError(f"unknown explainer {name!r}; available: "
                         f"{', '.join(list_explainers())}") from None


def explainer_kind(name: str) -> str:
    """The kind (`KINDS`) of the explainer registered as `name`.

    Args:
      name: a name of `list_explainers()`.

    Returns:
      One of `KINDS`.

    Raises:
      ValueError: unknown name (as in `get_explainer`).
    """
    get_explainer(name)
    return _REGISTRY[name].kind


def list_explainers(kind: str | None = None) -> tuple[str, ...]:
    """The registered names, sorted; only those of `kind` if given.

    Args:
      kind: one of `KINDS`, or None for every explainer.

    Returns:
      The names, in alphabetical order.
    """
    return tuple(sorted(name for name, entry in _REGISTRY.items()
                        if kind is None or entry.kind == kind))
