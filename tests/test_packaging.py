"""The wheel built from the repository works outside it: installed in a fresh venv, run from /tmp.

A test run from the repository imports `srise_jax` from the working tree, so
a file missing from the wheel (an asset, a subpackage the package finder
misses, `py.typed`) would go unnoticed: this test installs the wheel in a
venv outside the repository and runs `srise-jax demo` there, checking its
answers with dlib (the suite's one dlib demo run). About 40 s of CPU time:
the demo's detection, two triplets and their Deletion/Insertion curves; the
wheel, the venv and dlib's conversion take a few seconds.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from srise_jax.metrics import UNDEFINED_REASONS

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("srise_jax", "weights_conversion")

needs_dlib = pytest.mark.skipif(
    importlib.util.find_spec("face_recognition_models") is None,
    reason="the demo needs dlib's weights: the face_recognition_models package "
           "(pip install '.[test]')")


def _run(command, **kwargs):
    """`subprocess.run`, failing the test with the command's output when it fails."""
    out = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert out.returncode == 0, f"{command} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
    return out


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of a copy of the repository (an in-tree build could ship a stale build/)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(
        ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"))
    # The build backend of this environment, when it has one that fits, saves
    # the few seconds an isolated build spends installing setuptools.
    isolation = ["--no-build-isolation"] if _has_setuptools(64) else []
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-w", str(tmp / "dist"),
          str(source)])
    (path,) = (tmp / "dist").glob("srise_jax-*.whl")
    return path


def _has_setuptools(major: int) -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= major


def test_the_wheel_holds_every_module_the_assets_and_py_typed(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    sources = {path.relative_to(REPO).as_posix() for package in PACKAGES
               for path in (REPO / package).rglob("*.py")}
    assert sources - names == set(), "modules missing from the wheel"
    assets = {path.relative_to(REPO).as_posix()
              for path in (REPO / "srise_jax" / "assets").rglob("*") if path.is_file()}
    assert assets and assets - names == set(), "assets missing from the wheel"
    assert "srise_jax/py.typed" in names
    assert not any(name.startswith("tests/") for name in names)


@needs_dlib
def test_the_installed_wheel_runs_the_demo_from_outside_the_repository(wheel, tmp_path):
    venv = tmp_path / "venv"
    # --system-site-packages: jax, flax, ... come from this environment (no
    # download); the wheel itself goes into the venv, which comes first on its
    # sys.path. --ignore-installed: pip leaves alone the srise-jax that this
    # environment may hold (a reinstall would try to uninstall it).
    _run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)])
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "--no-deps", "--ignore-installed", "--no-index",
          str(wheel)])
    # Not the suite's shared XLA cache (tests/conftest.py): the command line
    # keeps its compiled programs in its own cache root.
    env = {name: value for name, value in os.environ.items()
           if name not in ("PYTHONPATH", "JAX_COMPILATION_CACHE_DIR")}
    # A fresh cache: the installed wheel converts dlib's .dat itself.
    env["SRISE_JAX_CACHE"] = str(tmp_path / "cache")
    where = _run([python, "-c", "import srise_jax; print(srise_jax.__file__)"],
                 cwd=tmp_path, env=env).stdout.strip()
    assert Path(where).is_relative_to(venv), where

    out = tmp_path / "demo"
    # The default --metric-step (the image side, 150): a coarse step of 2250
    # leaves up to 2249 counts to search inside the bracket, and took 2.3x as long.
    printed = _run([venv / "bin" / "srise-jax", "demo", "--num-masks", "16", "--out", out],
                   cwd=tmp_path, env=env, timeout=300).stdout
    assert sorted(path.name for path in out.iterdir()) == ["occlusion.png", "scores.json",
                                                           "triplet.png"]
    assert all(path.stat().st_size > 0 for path in out.iterdir())
    # The next command loads the compiled programs instead of compiling them.
    assert list((tmp_path / "cache" / "xla").glob("jit_*-cache")), "no compiled program kept"
    # The demo's answers with dlib (this is the suite's only dlib demo run).
    report = json.loads((out / "scores.json").read_text())
    assert report["model"].startswith("dlib")
    # dlib's own rule on the sample photos: obama matches obama2, not biden.
    assert report["triplet"]["match"] == {"mate": True, "nonmate": False}
    # No fraction that no map could change: the rejected pair's four are
    # undefined (Insertion used to report 1.0 there), each with its reason.
    for name in ("probe_vs_nonmate", "nonmate_vs_probe"):
        for metric in ("deletion", "insertion"):
            entry = report["triplet"]["metrics"][name][metric]
            assert entry["fraction"] is None and entry["reason"] == "rejected", entry
    for triplet in ("triplet", "occlusion"):
        assert all(-1.0 <= v <= 1.0 for v in report[triplet]["similarity"].values())
        for by_metric in report[triplet]["metrics"].values():
            for entry in by_metric.values():
                assert (0.0 < entry["fraction"] < 1.0 if entry["fraction"] is not None
                        else entry["reason"] in UNDEFINED_REASONS), entry
    # The masked probe is named for what it is, and its pair by the decision.
    assert "probe vs probe with a surgical mask" in printed
