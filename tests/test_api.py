"""The public API: everything `srise_jax.__all__` names exists and is documented."""

import inspect

import srise_jax
from srise_jax import explainers


def test_every_public_name_exists_and_has_a_docstring():
    undocumented = []
    for name in srise_jax.__all__:
        value = getattr(srise_jax, name)  # AttributeError names a stale entry
        if (inspect.isfunction(value) or inspect.isclass(value)) and not inspect.getdoc(value):
            undocumented.append(name)
    assert undocumented == []


def test_every_registered_explainer_is_documented():
    names = explainers.list_explainers()
    assert {"srise", "rise", "gradient", "random", "centre_prior"} <= set(names)
    assert [n for n in names if not inspect.getdoc(explainers.get_explainer(n))] == []
