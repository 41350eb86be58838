"""The public API: everything `srise_jax.__all__` names exists and is documented."""

import importlib
import inspect
import pkgutil
import re

import srise_jax
from srise_jax import explainers

# The command line (srise_jax.cli and its modules) documents itself through
# argparse help, not docstrings: it is skipped below.
_ARGS = re.compile(r"^\s*Args:\s*$|as in `[\w.]+`", re.MULTILINE)
_RETURNS = re.compile(r"^\s*(Returns|Yields):\s*$", re.MULTILINE)


def _public_modules():
    for info in pkgutil.walk_packages(srise_jax.__path__, prefix="srise_jax."):
        name = info.name
        if name.split(".")[:2] == ["srise_jax", "cli"] or any(part.startswith("_") for part in name.split(".")):
            continue
        yield importlib.import_module(name)


def _public_definitions():
    """Yields (dotted name, object) for each public function and class defined in the package."""
    for module in _public_modules():
        for name, value in vars(module).items():
            if (not name.startswith("_")
                    and (inspect.isfunction(value) or inspect.isclass(value))
                    and value.__module__ == module.__name__):
                yield f"{module.__name__}.{name}", value


def _returns_something(function):
    # Unannotated counts as returning: only `-> None` exempts a function.
    return inspect.signature(function).return_annotation not in (None, "None")


def test_every_public_name_exists_and_has_a_docstring():
    undocumented = []
    for name in srise_jax.__all__:
        value = getattr(srise_jax, name)  # AttributeError names a stale entry
        if (inspect.isfunction(value) or inspect.isclass(value)) and not inspect.getdoc(value):
            undocumented.append(name)
    assert undocumented == []


def test_every_public_definition_in_every_module_has_a_docstring():
    undocumented = [name for name, value in _public_definitions() if not inspect.getdoc(value)]
    assert not undocumented, f"no docstring: {undocumented}"


def test_every_public_function_documents_its_args_and_returns():
    missing_args, missing_returns = [], []
    for name, value in _public_definitions():
        doc = inspect.getdoc(value)
        if not inspect.isfunction(value) or not doc:
            continue
        if inspect.signature(value).parameters and not _ARGS.search(doc):
            missing_args.append(name)
        if _returns_something(value) and not _RETURNS.search(doc):
            missing_returns.append(name)
    assert not missing_args, f"no Args: section nor 'as in `other`': {missing_args}"
    assert not missing_returns, f"no Returns: or Yields: section: {missing_returns}"


def test_every_public_function_is_annotated():
    # py.typed promises type checkers an annotated API: every parameter and
    # the return of each public library function (the CLI excepted).
    unannotated = []
    for name, value in _public_definitions():
        if not inspect.isfunction(value):
            continue
        signature = inspect.signature(value)
        if (any(p.annotation is inspect.Parameter.empty for p in signature.parameters.values())
                or signature.return_annotation is inspect.Signature.empty):
            unannotated.append(name)
    assert not unannotated, f"not fully annotated: {unannotated}"


def test_every_registered_explainer_is_documented():
    names = explainers.list_explainers()
    assert {"srise", "rise", "gradient", "random", "centre_prior"} <= set(names)
    assert [n for n in names if not inspect.getdoc(explainers.get_explainer(n))] == []


def test_star_import_gives_every_public_name():
    # `srise_jax` resolves its names lazily (module __getattr__); `import *`
    # must still bind every name of `__all__`, each the object of its submodule.
    namespace = {}
    exec("from srise_jax import *", namespace)
    assert sorted(set(namespace) - {"__builtins__"}) == sorted(srise_jax.__all__)
    assert namespace["srise_pair"] is importlib.import_module("srise_jax.srise").srise_pair
    assert namespace["load_model"] is importlib.import_module("srise_jax.models").load
