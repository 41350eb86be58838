"""Shared fixtures: fresh keys and small planted models whose answers are known."""

import os
import shutil
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_numpy_dtype_promotion", "strict")

# One XLA compilation cache for the whole run, shared by the xdist workers and
# by the processes tests start (CLI, notebooks, the wheel's demo, the
# multi-device scripts): many tests compile the same programs, and on 2 CPU
# cores compiling is much of the suite's time. The process that makes the
# directory (the xdist controller, or pytest without workers) removes it at
# the end; workers and subprocesses inherit it through the environment.
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    # Every program, however quick to compile: the suite compiles thousands.
    os.environ.update(JAX_COMPILATION_CACHE_DIR=tempfile.mkdtemp(prefix="srise-jax-tests-xla-"),
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
jax.config.update("jax_persistent_cache_min_compile_time_secs",
                  float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", 1)))
jax.config.update("jax_persistent_cache_min_entry_size_bytes",
                  int(os.environ.get("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", 0)))


def pytest_unconfigure(config):
    if _OWN_CACHE:
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject's addopts): one worker per usable core, at most 4.

    Each worker holds its own JAX runtime and models (1-3 GB at peak), and
    XLA already spreads one computation over the cores, so more workers
    than 4 add memory, not speed. `-n 0` runs the suite in one process.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, 4))


# CI clones the repository beside ../shared, which holds data/lfw-dev. The
# tests that need lfw-dev skip with a reason naming it; where ../shared
# exists, such a skip means a test lost its path to the data, so it fails
# instead of passing unnoticed.
SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if report.skipped and SHARED.is_dir() and "lfw-dev" in str(report.longrepr):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{reason}, although {SHARED} exists (CI must run this test)"


@pytest.fixture
def key():
    return jax.random.key(0)


def region_embed(region):
    """An embed_fn that reads only the pixels of `region` (y0, y1, x0, x1).

    The embedding is the region's pixels followed by a constant block, so
    masking part of the region changes the cosine to an intact image (a pure
    linear read-out of the region would be scale invariant under cosine).
    """
    y0, y1, x0, x1 = region

    def embed_fn(params, images):
        inside = images[:, y0:y1, x0:x1, :].reshape(images.shape[0], -1)
        const = jnp.broadcast_to(params["const"], (images.shape[0],
                                                   params["const"].shape[0]))
        return jnp.concatenate([inside - params["offset"], const], axis=1)

    return embed_fn


@pytest.fixture
def planted_region():
    """(embed_fn, params, region, probe, mate) for a 32x32 planted model."""
    region = (8, 16, 12, 20)
    rng = np.random.default_rng(0)
    probe = rng.uniform(0.2, 1.0, (32, 32, 3)).astype(np.float32)
    mate = np.clip(probe + rng.normal(0, 0.05, probe.shape), 0, 1).astype(
        np.float32)
    params = {"const": jnp.full((64,), 0.5, jnp.float32),
              "offset": jnp.float32(0.0)}
    return region_embed(region), params, region, jnp.asarray(probe), \
        jnp.asarray(mate)


@pytest.fixture(scope="session")
def r18_pth(tmp_path_factory):
    """A random iResNet-18 saved as a PyTorch state dict by tests/torch_iresnet.py."""
    import torch
    from torch_iresnet import TorchIResNet, randomize_

    from srise_jax.models import ARCH_BLOCKS

    path = tmp_path_factory.mktemp("torch") / "backbone.pth"
    torch.save(randomize_(TorchIResNet(ARCH_BLOCKS["r18"]), seed=0).state_dict(), path)
    return path


@pytest.fixture(scope="session")
def weights(tmp_path_factory, r18_pth):
    """That r18 converted by weights_conversion.arcface: a checkpoint directory."""
    from weights_conversion.arcface import convert_file

    return convert_file(r18_pth, tmp_path_factory.mktemp("ckpt") / "r18")


def assert_one_error_line(status, capsys, *needles):
    """The command failed with status 2 and ONE stderr line containing `needles`."""
    out, err = capsys.readouterr()
    assert status == 2
    assert len(err.splitlines()) == 1, err
    assert err.startswith("srise-jax: error: ")
    for needle in needles:
        assert needle in err
    return out
