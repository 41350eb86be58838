"""The explainer registry: names, kinds, one signature and clear errors."""

import inspect

import pytest

from srise_jax.explainers import registry
from srise_jax.typing import Explainer

POSITIONAL = ("embed_fn", "params", "image", "reference", "key")


def test_register_get_and_list_by_kind():
    name = "test-only-explainer"

    @registry.register(name, kind="reference")
    def explainer(embed_fn, params, image, reference, key):
        return image[..., 0]

    try:
        assert registry.get_explainer(name) is explainer
        assert registry.explainer_kind(name) == "reference"
        assert name in registry.list_explainers()
        assert name in registry.list_explainers("reference")
        assert name not in registry.list_explainers("gradient")
        with pytest.raises(ValueError, match="already registered"):
            registry.register(name, kind="reference")(explainer)
    finally:
        del registry._REGISTRY[name]


def test_unknown_names_and_kinds_are_clear_errors():
    with pytest.raises(ValueError, match="unknown explainer 'nope'; available: "):
        registry.get_explainer("nope")
    with pytest.raises(ValueError, match="kind must be one of"):
        registry.register("x", kind="magic")


@pytest.mark.parametrize("name", ["gradient", "srise", "integrated_gradients"])
def test_registered_explainers_refuse_integer_nan_and_mismatched_images(name):
    import jax
    import numpy as np

    def embed_fn(params, images):  # never reached: the checks come first
        raise AssertionError("the explainer ran on a bad input")

    explainer = registry.get_explainer(name)
    image = np.full((8, 8, 3), 0.5, np.float32)
    key = jax.random.key(0)
    with pytest.raises(TypeError, match="image has dtype uint8"):
        explainer(embed_fn, None, (image * 255).astype(np.uint8), image, key)
    broken = image.copy()
    broken[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="reference holds 1 NaN"):
        explainer(embed_fn, None, image, broken, key)
    with pytest.raises(ValueError, match=r"image \(8, 8, 3\), reference \(8, 6, 3\)"):
        explainer(embed_fn, None, image, image[:, :6], key)


@pytest.mark.parametrize("name", registry.list_explainers())
def test_every_explainer_takes_five_arguments_then_keyword_only_options(name):
    explainer = registry.get_explainer(name)
    assert isinstance(explainer, Explainer)
    parameters = list(inspect.signature(explainer).parameters.values())
    assert tuple(p.name for p in parameters[:5]) == POSITIONAL, name
    assert all(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
               and p.default is p.empty for p in parameters[:5]), name
    # Options are keyword-only and have defaults: a caller (the benchmark, the
    # command line) can always run an explainer with no option given.
    for p in parameters[5:]:
        assert p.kind == p.KEYWORD_ONLY and p.default is not p.empty, (name, p)
