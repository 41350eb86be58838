"""Tests for srise_jax.models.iresnet: architecture sizes, embed_fn contract, random init.

Numerical parity with PyTorch is in test_conversion.py.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util
from torch_iresnet import TorchIResNet

from srise_jax.models import ARCH_BLOCKS, EMBEDDING_DIM, iresnet_embed_fn, iresnet_init
from srise_jax.models.iresnet import abstract_variables


def _images(n, seed=0):
    return jnp.asarray(np.random.default_rng(seed).random((n, 112, 112, 3), dtype=np.float32))


@pytest.fixture(scope="module")
def r18():
    """A random iResNet-18, (embed_fn, params), shared: initialising compiles for seconds."""
    return iresnet_init("r18", jax.random.key(0))


@pytest.mark.parametrize("arch", list(ARCH_BLOCKS))
def test_variable_count_equals_torch_reference(arch):
    # The independent PyTorch model, built on the meta device (no memory),
    # counts parameters plus BN running statistics (the step counters aside).
    with torch.device("meta"):
        reference = TorchIResNet(ARCH_BLOCKS[arch])
    expected = sum(t.numel() for name, t in reference.state_dict().items() if "num_batches_tracked" not in name)
    leaves = jax.tree.leaves(abstract_variables(arch))
    assert sum(leaf.size for leaf in leaves) == expected


def test_module_names_follow_insightface_state_dict():
    names = {"/".join(path) for path in traverse_util.flatten_dict(abstract_variables("r18"))}
    # A first block (stride 2, shortcut) and a second one, as in insightface's r18.
    for name in [
        "params/conv1/kernel",
        "params/prelu/negative_slope",
        "params/layer2/0/downsample/0/kernel",
        "batch_stats/layer2/0/downsample/1/var",
        "params/layer4/1/conv2/kernel",
        "batch_stats/layer4/1/bn3/mean",
        "params/fc/kernel",
        "params/features/scale",
        "batch_stats/features/mean",
    ]:
        assert name in names
    assert not any(name.startswith("params/layer1/1/downsample") for name in names)


def test_embed_fn_is_one_object_per_arch_and_dtype(r18):
    embed_fn, _ = r18
    assert embed_fn is iresnet_embed_fn("r18")
    assert embed_fn is iresnet_embed_fn("r18", dtype=jnp.float32)
    assert iresnet_embed_fn("r18", dtype="bfloat16") is iresnet_embed_fn("r18", dtype=jnp.bfloat16)
    assert iresnet_embed_fn("r18", dtype=jnp.bfloat16) is not embed_fn
    assert iresnet_embed_fn("r34") is not embed_fn


def test_random_init_gives_distinct_finite_embeddings(r18):
    embed_fn, params = r18
    embeddings = np.asarray(jax.jit(embed_fn)(params, _images(3)))
    assert embeddings.shape == (3, EMBEDDING_DIM) and embeddings.dtype == np.float32
    assert np.all(np.isfinite(embeddings))
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosines = (unit @ unit.T)[np.triu_indices(3, k=1)]
    assert np.all(cosines < 0.95), cosines


def test_bfloat16_compute_stays_close_to_float32(r18):
    embed_fn, params = r18
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    images = _images(2)
    reference = np.asarray(jax.jit(embed_fn)(params, images))
    low = jax.jit(iresnet_embed_fn("r18", dtype=jnp.bfloat16))(params, images)
    assert low.dtype == jnp.float32  # fc and features run in float32, as in insightface's fp16 mode
    low = np.asarray(low)
    cosine = np.sum(low * reference, axis=1) / (np.linalg.norm(low, axis=1) * np.linalg.norm(reference, axis=1))
    assert np.all(cosine > 0.99), cosine


def test_wrong_image_size_is_a_clear_error(r18):
    embed_fn, params = r18
    with pytest.raises(ValueError, match=r"\[B, 112, 112, 3\], got \(1, 64, 64, 3\)"):
        embed_fn(params, jnp.zeros((1, 64, 64, 3)))


def test_unknown_arch_is_a_clear_error(key):
    with pytest.raises(ValueError, match="unknown iResNet architecture 'r51'"):
        iresnet_init("r51", key)
