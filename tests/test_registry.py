"""The explainer registry: names, kinds and clear errors."""

import pytest

from srise_jax.explainers import registry


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
