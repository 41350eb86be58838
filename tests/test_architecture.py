"""The import graph of srise_jax/ and weights_conversion/: no cycle, no private name, layers down.

The graph is read from the source with `ast`, not from a running interpreter,
so an import inside a function counts as much as one at the top of a module:
it runs the first time the function is called, and a cycle that only closes
then is still a cycle (and still couples the two modules).

Edges. `import a.b.c` and `from a.b import c` (c a submodule) are edges to
`a.b.c`. Python runs a package's `__init__` before any of its submodules, so
they are edges to `a` and `a.b` too, unless the importer is itself inside
that package: its `__init__` has then already started before the importer
ran, and counting that edge would report every package that imports one of
its own submodules as a cycle. `from a.b import name` (name not a submodule)
is an edge to `a.b`. Imports under `if TYPE_CHECKING:` count: they run for no
one, but they are still a dependency of the source on the layer it names.
`importlib.import_module("srise_jax...")` with a literal name counts too,
except in `srise_jax/__init__.py`, whose lazy table imports a submodule only
when the user asks for one of its names (see `LAZY_EXPORTERS`).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("srise_jax", "weights_conversion")
LAZY_EXPORTERS = frozenset({"srise_jax"})

# The layers of DESIGN.md ("Layers"), lowest first. A module may import
# modules of its own rank or a lower one. Every module must match an entry,
# so a new module has to be placed here; an entry ending in ".*" matches the
# package and everything under it.
RANKS: dict[str, int] = {
    # base: the lazy package root, checks, types, similarity, files
    "srise_jax": 0,
    "srise_jax._helpers": 0,
    "srise_jax.typing": 0,
    "srise_jax.similarity": 0,
    "srise_jax.images": 0,
    "srise_jax.outputs": 0,
    # models
    "srise_jax.models.*": 1,
    # pre-processing
    "srise_jax.detect": 2,
    "srise_jax.align": 2,
    "srise_jax.data": 2,
    # kernel
    "srise_jax.masks": 3,
    "srise_jax.srise": 3,
    "srise_jax.metrics": 3,
    "srise_jax.config": 3,
    "srise_jax.presets": 3,
    "srise_jax.stats": 3,
    "srise_jax.fills": 3,
    # explainers
    "srise_jax.explainers.*": 4,
    # evaluation
    "srise_jax.benchmark.*": 5,
    "srise_jax.sanity": 5,
    "srise_jax.thresholds": 5,
    "srise_jax.protocols": 5,
    "srise_jax.ablation": 5,
    "srise_jax.viz": 5,
    # command line
    "srise_jax.cli.*": 6,
    # converters: on top of the library, never imported by it
    "weights_conversion.*": 7,
}


# ---------------------------------------------------------------------------
# Reading the graph
# ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Import:
    """One dependency of `source` on `target`, at `path`:`line`."""

    source: str
    target: str
    path: str  # relative to the root the modules were read from
    line: int

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclasses.dataclass(frozen=True)
class Module:
    name: str
    path: Path
    relative_path: str
    is_package: bool


def find_modules(root: Path, packages: Iterable[str]) -> dict[str, Module]:
    """Every module of `packages` under `root`, by dotted name."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = Module(name, path, path.relative_to(root).as_posix(), is_package)
    return modules


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _resolve(module: Module, level: int, target: str | None) -> str:
    """The absolute name of `from <level dots><target> import ...` in `module`."""
    if level == 0:
        return target or ""
    parts = module.name.split(".")
    if not module.is_package:
        parts = parts[:-1]
    parts = parts[:len(parts) - (level - 1)]
    return ".".join([*parts, target] if target else parts)


def _internal(name: str, modules: Mapping[str, Module]) -> str | None:
    """The longest prefix of dotted `name` that is one of `modules`."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in modules:
            return prefix
    return None


@dataclasses.dataclass
class ModuleImports:
    """What one module's source imports and uses from the other modules."""

    imports: list[Import] = dataclasses.field(default_factory=list)
    # (line, text) of each `_private` name taken from another module.
    private: list[tuple[int, str]] = dataclasses.field(default_factory=list)
    # (line, name) of each name taken from a lazy package root (not a submodule).
    lazy_names: list[tuple[int, str]] = dataclasses.field(default_factory=list)


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def read_module(module: Module, modules: Mapping[str, Module]) -> ModuleImports:
    """The imports of `module` (function-level ones too) and its uses of private names."""
    tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
    found = ModuleImports()
    bound: dict[str, str] = {}  # local name -> the internal module it is bound to

    def add(target: str, line: int) -> None:
        for name in (*_ancestors(target), target):
            inside = module.name == name or module.name.startswith(name + ".")
            if name in modules and name != module.name and not inside:
                found.imports.append(Import(module.name, name, module.relative_path, line))

    def take_name(source: str, name: str, line: int) -> None:
        """`from source import name`: a submodule, a private name, or a lazy root's name."""
        submodule = f"{source}.{name}"
        if submodule in modules:
            add(submodule, line)
            return
        add(source, line)
        if _is_private(name):
            found.private.append((line, f"from {source} import {name}"))
        elif source in LAZY_EXPORTERS and source != module.name:
            found.lazy_names.append((line, name))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _internal(alias.name, modules)
                if target is None:
                    continue
                add(target, node.lineno)
                if alias.asname:
                    bound[alias.asname] = target
                else:
                    top = alias.name.split(".")[0]
                    bound[top] = top
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node.level, node.module)
            if _internal(source, modules) is None:
                continue
            for alias in node.names:
                if alias.name == "*":
                    add(source, node.lineno)
                    continue
                take_name(source, alias.name, node.lineno)
                if f"{source}.{alias.name}" in modules:
                    bound[alias.asname or alias.name] = f"{source}.{alias.name}"
        elif (isinstance(node, ast.Call) and isinstance(node.func, (ast.Attribute, ast.Name))
              and (getattr(node.func, "attr", None) or getattr(node.func, "id", None))
              in ("import_module", "__import__")
              and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and module.name not in LAZY_EXPORTERS):
            target = _internal(node.args[0].value, modules)
            if target is not None:
                add(target, node.lineno)

    # `mod._name` on a bound module: a second walk, once every binding is known
    # (an import inside a function binds a local name; a module-wide table is
    # a slight over-approximation that only a shadowing local could fool).
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not isinstance(node.ctx, ast.Load):
            continue
        chain, base = [node.attr], node.value
        while isinstance(base, ast.Attribute):
            chain.append(base.attr)
            base = base.value
        if not isinstance(base, ast.Name) or base.id not in bound:
            continue
        chain.reverse()  # attributes after the base name, outermost last
        dotted = bound[base.id]
        for attr in chain:
            if f"{dotted}.{attr}" in modules:
                dotted = f"{dotted}.{attr}"
                continue
            if dotted != module.name:
                if _is_private(attr):
                    found.private.append((node.lineno, f"{dotted}.{attr}"))
                elif dotted in LAZY_EXPORTERS and not attr.startswith("__"):
                    found.lazy_names.append((node.lineno, attr))
            break
    found.imports = sorted(set(found.imports), key=lambda i: (i.line, i.target))
    found.private = sorted(set(found.private))
    found.lazy_names = sorted(set(found.lazy_names))
    return found


def read_graph(root: Path, packages: Iterable[str]) -> tuple[dict[str, Module],
                                                             dict[str, ModuleImports]]:
    modules = find_modules(root, packages)
    return modules, {name: read_module(module, modules) for name, module in modules.items()}


# ---------------------------------------------------------------------------
# The checks, as functions of the graph (so that a planted graph can test them)
# ---------------------------------------------------------------------------

def find_cycles(graph: Mapping[str, ModuleImports]) -> list[list[Import]]:
    """One cycle (as its list of imports) per strongly connected component that has one."""
    edges: dict[str, dict[str, Import]] = {name: {} for name in graph}
    for name, found in graph.items():
        for imp in found.imports:
            edges[name].setdefault(imp.target, imp)

    # Tarjan's strongly connected components, iteratively (no recursion limit).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in edges:
                    continue
                if succ not in index:
                    index[succ] = low[succ] = len(index)
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(edges[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(component)

    cycles = []
    for component in components:
        # The shortest cycle through the component's first module: breadth first.
        start = min(component)
        parents: dict[str, Import] = {}
        frontier = [start]
        while frontier and start not in parents:
            following = []
            for node in frontier:
                for target, imp in sorted(edges[node].items()):
                    if target in component and target not in parents:
                        parents[target] = imp
                        following.append(target)
            frontier = following
        path, node = [], start
        while True:
            imp = parents[node]
            path.append(imp)
            node = imp.source
            if node == start:
                break
        cycles.append(path[::-1])
    return cycles


def describe_cycle(cycle: list[Import]) -> str:
    names = " -> ".join([cycle[0].source, *(imp.target for imp in cycle)])
    return f"{names}  ({', '.join(imp.where() for imp in cycle)})"


def private_uses(graph: Mapping[str, ModuleImports]) -> list[str]:
    """`module:line: text` for each private name one module takes from another."""
    return [f"{name}:{line}: {text}"
            for name, found in sorted(graph.items()) for line, text in found.private]


def rank_of(name: str, ranks: Mapping[str, int]) -> int | None:
    if name in ranks:
        return ranks[name]
    for prefix in _ancestors(name)[::-1] + [name]:
        if f"{prefix}.*" in ranks:
            return ranks[f"{prefix}.*"]
    return None


def unranked(graph: Mapping[str, ModuleImports], ranks: Mapping[str, int]) -> list[str]:
    return sorted(name for name in graph if rank_of(name, ranks) is None)


def layer_violations(graph: Mapping[str, ModuleImports], ranks: Mapping[str, int]) -> list[str]:
    """Each import of a higher-ranked module, with both ranks and where it is."""
    found = []
    for name, imports in sorted(graph.items()):
        own = rank_of(name, ranks)
        upward = [imp for imp in imports.imports
                  if own is not None and (rank_of(imp.target, ranks) or -1) > own]
        for imp in upward:
            # `import a.b` is an edge to `a` and to `a.b`: name the deepest.
            if any(other.line == imp.line and other.target.startswith(imp.target + ".")
                   for other in upward):
                continue
            theirs = rank_of(imp.target, ranks)
            found.append(f"{imp.where()}: {name} (rank {own}) imports {imp.target} "
                             f"(rank {theirs})")
    return found


# ---------------------------------------------------------------------------
# The repository's graph
# ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def repo_graph():
    return read_graph(REPO, PACKAGES)


def test_no_import_cycles(repo_graph):
    _, graph = repo_graph
    cycles = find_cycles(graph)
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(
        describe_cycle(cycle) for cycle in cycles)


def test_no_module_takes_a_private_name_from_another(repo_graph):
    # `from m import _name` and `m._name` both count; a module whose own name
    # starts with "_" (srise_jax._helpers) is package-internal API and may be
    # imported, but a `_name` inside it stays its own.
    _, graph = repo_graph
    uses = private_uses(graph)
    assert not uses, "private names used across modules:\n" + "\n".join(uses)


def test_every_module_has_a_layer(repo_graph):
    _, graph = repo_graph
    missing = unranked(graph, RANKS)
    assert not missing, f"place these modules in RANKS (tests/test_architecture.py): {missing}"


def test_dependencies_point_down_the_layers(repo_graph):
    _, graph = repo_graph
    upward = layer_violations(graph, RANKS)
    library_on_converters = [line for line in upward
                             if line.split(": ", 1)[1].startswith("srise_jax")
                             and " imports weights_conversion" in line]
    assert not library_on_converters, ("srise_jax must never import weights_conversion:\n"
                                       + "\n".join(library_on_converters))
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_the_library_imports_submodules_not_the_lazy_root_names(repo_graph):
    # srise_jax/__init__ resolves its names on first access; a library module
    # that takes one from it (`from srise_jax import srise_pair`) hides its real
    # dependency from this check and can meet a half-initialised package.
    _, graph = repo_graph
    used = [f"{name}:{line}: {attr}" for name, found in sorted(graph.items())
            for line, attr in found.lazy_names]
    assert not used, "names taken from srise_jax/__init__ (import the submodule):\n" + \
        "\n".join(used)


def test_the_lazy_table_is_all(repo_graph):
    import srise_jax

    assert sorted(srise_jax.__all__) == sorted(vars(srise_jax)["_LAZY"])
    assert len(srise_jax.__all__) == len(set(srise_jax.__all__))


# ---------------------------------------------------------------------------
# The checker itself can fail: a planted package
# ---------------------------------------------------------------------------

def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_checker_finds_a_planted_cycle_private_names_and_an_upward_import(tmp_path):
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/_helpers.py": "def check(): pass\ndef _inner(): pass\n",
        # low -> high at module level, high -> low inside a function: a cycle.
        "pkg/low.py": "from pkg import high\nfrom pkg import _helpers\n"
                      "def _secret(): pass\n",
        "pkg/high.py": "def f():\n    from .low import _secret\n    return _secret\n",
        "pkg/user.py": "import pkg.low as low\nfrom pkg._helpers import check\n"
                       "def g():\n    return low._secret()\n",
        "pkg/sub/__init__.py": "from pkg.sub import leaf\n",
        "pkg/sub/leaf.py": "from pkg.sub import __name__ as _n\nfrom pkg._helpers import _inner\n",
        "other/__init__.py": "",
        "other/top.py": "import pkg.sub.leaf\n",
    })
    modules, graph = read_graph(tmp_path, ("pkg", "other"))

    cycles = find_cycles(graph)
    assert [describe_cycle(c).split("  ")[0] for c in cycles] == ["pkg.high -> pkg.low -> pkg.high"]
    assert describe_cycle(cycles[0]).endswith("(pkg/high.py:2, pkg/low.py:1)")

    assert private_uses(graph) == [
        "pkg.high:2: from pkg.low import _secret",
        "pkg.sub.leaf:2: from pkg._helpers import _inner",
        "pkg.user:4: pkg.low._secret",
    ]
    # A package importing its own submodule is no cycle; an outside import of
    # pkg.sub.leaf runs pkg.sub's __init__ first, so it depends on pkg.sub.
    assert {imp.target for imp in graph["other.top"].imports} == {"pkg", "pkg.sub",
                                                                  "pkg.sub.leaf"}
    ranks = {"pkg": 0, "pkg._helpers": 0, "pkg.low": 1, "pkg.high": 2, "pkg.user": 2,
             "pkg.sub.*": 0, "other.*": 3}
    assert unranked(graph, ranks) == []
    assert unranked(graph, {"pkg": 0}) == sorted(set(graph) - {"pkg"})
    assert layer_violations(graph, ranks) == [
        "pkg/low.py:1: pkg.low (rank 1) imports pkg.high (rank 2)"]


def test_the_checker_finds_a_lazy_root_name(tmp_path):
    _write(tmp_path, {
        "srise_jax/__init__.py": "import importlib\nimportlib.import_module('srise_jax.a')\n",
        "srise_jax/a.py": "import srise_jax\nfrom srise_jax import b, srise_pair\n"
                          "x = srise_jax.b.f, srise_jax.viz_name, srise_jax.__version__\n",
        "srise_jax/b.py": "def f(): pass\n",
    })
    _, graph = read_graph(tmp_path, ("srise_jax",))
    assert graph["srise_jax"].imports == []  # the lazy table is no edge
    assert graph["srise_jax.a"].lazy_names == [(2, "srise_pair"), (3, "viz_name")]


# ---------------------------------------------------------------------------
# Cheap import (acceptance b)
# ---------------------------------------------------------------------------

HEAVY = ("matplotlib", "torch", "orbax")


@pytest.mark.parametrize("module", ["srise_jax", "srise_jax.srise", "srise_jax.metrics",
                                    "srise_jax.masks"])
def test_importing_the_package_and_kernel_loads_no_heavy_library(module):
    # A fresh interpreter: this one has long since imported everything.
    line = (f"import {module}, sys; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules if m.startswith({HEAVY!r})}}))")
    out = subprocess.run([sys.executable, "-c", line], capture_output=True, text=True,
                         check=True, cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_acceptance_line_prints_false():
    line = ("import srise_jax, sys; "
            "print(any(m.startswith(('matplotlib','torch','orbax')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", line], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.strip() == "False", out.stderr


def test_lazy_names_resolve_to_their_submodules():
    line = ("import srise_jax, sys; f = srise_jax.srise_pair; v = srise_jax.viz; "
            "print(f.__module__, v.__name__, 'srise_jax.viz' in sys.modules, "
            "'srise_pair' in dir(srise_jax))")
    out = subprocess.run([sys.executable, "-c", line], capture_output=True, text=True,
                         check=True, cwd=REPO)
    assert out.stdout.split() == ["srise_jax.srise", "srise_jax.viz", "True", "True"]
    missing = subprocess.run([sys.executable, "-c", "import srise_jax; srise_jax.no_such_name"],
                             capture_output=True, text=True, cwd=REPO)
    assert "AttributeError: module 'srise_jax' has no attribute 'no_such_name'" in missing.stderr
