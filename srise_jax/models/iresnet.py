"""iResNet face-embedding backbones (insightface ``arcface_torch``) in Flax linen.

The module tree mirrors the PyTorch state-dict names one to one (``layer1/0/bn1``
is ``layer1.0.bn1``), so converted weights need no renaming, only layout changes.

References:
  Duta et al., "Improved Residual Networks for Image and Video Recognition", 2020.
  https://github.com/deepinsight/insightface/blob/master/recognition/arcface_torch/backbones/iresnet.py
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from srise_jax.models.embedding import FeatureFns, module_embed_fn, module_feature_fns
from srise_jax.typing import EmbedFn, PyTree

ARCH_BLOCKS: dict[str, tuple[int, int, int, int]] = {
    "r18": (2, 2, 2, 2),
    "r34": (3, 4, 6, 3),
    "r50": (3, 4, 14, 3),
    "r100": (3, 13, 30, 3),
    "r200": (6, 26, 60, 6),
}
INPUT_SIZE = 112
EMBEDDING_DIM = 512
_STAGE_WIDTHS = (64, 128, 256, 512)
# PyTorch's BatchNorm default, which insightface keeps everywhere.
_BN_EPS = 1e-5
# Layer groups for the model-randomization sanity check (`srise_jax.sanity`),
# top (output) first: (group name, the top-level submodules it holds). One
# group per stage, so a check costs 7 maps however deep the arch.
LAYER_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("head", ("features", "fc", "bn2")),
    ("layer4", ("layer4",)), ("layer3", ("layer3",)),
    ("layer2", ("layer2",)), ("layer1", ("layer1",)),
    ("stem", ("conv1", "bn1", "prelu")),
)



def _conv(features: int, *, kernel: int, stride: int, dtype: Any, name: str) -> nn.Conv:
    """Bias-free convolution padded like PyTorch's ``padding=kernel // 2``.

    Explicit padding, not "SAME": for stride 2 "SAME" pads (0, 1) where PyTorch
    pads (1, 1), which shifts every strided output by one pixel.
    """
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=stride,
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
        name=name,
    )


def _batch_norm(*, dtype: Any, name: str) -> nn.BatchNorm:
    """Inference-mode batch norm (running statistics, nothing mutable)."""
    return nn.BatchNorm(use_running_average=True, epsilon=_BN_EPS, dtype=dtype, name=name)


class PReLU(nn.Module):
    """Per-channel PReLU, as ``torch.nn.PReLU(num_parameters=C)`` (slopes start at 0.25).

    Attributes:
      dtype: compute dtype; the slopes are stored in float32.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        slope = self.param("negative_slope", nn.initializers.constant(0.25), (x.shape[-1],))
        return jnp.where(x >= 0, x, slope.astype(self.dtype) * x)


class Downsample(nn.Module):
    """Strided 1x1 convolution + batch norm on the shortcut (``downsample.0``, ``.1``).

    Attributes:
      features: output channels.
      stride: spatial stride.
      dtype: compute dtype.
    """

    features: int
    stride: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = _conv(self.features, kernel=1, stride=self.stride, dtype=self.dtype, name="0")(x)
        return _batch_norm(dtype=self.dtype, name="1")(x)


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN, conv, BN, PReLU, conv (strided), BN, + shortcut.

    There is no activation after the addition, and the stride sits on ``conv2``.

    Attributes:
      features: output channels.
      stride: spatial stride of ``conv2`` and of the shortcut.
      dtype: compute dtype.
    """

    features: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        out = _batch_norm(dtype=self.dtype, name="bn1")(x)
        out = _conv(self.features, kernel=3, stride=1, dtype=self.dtype, name="conv1")(out)
        out = _batch_norm(dtype=self.dtype, name="bn2")(out)
        out = PReLU(dtype=self.dtype, name="prelu")(out)
        out = _conv(self.features, kernel=3, stride=self.stride, dtype=self.dtype, name="conv2")(out)
        out = _batch_norm(dtype=self.dtype, name="bn3")(out)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = Downsample(self.features, self.stride, dtype=self.dtype, name="downsample")(x)
        return out + shortcut


class Stage(nn.Module):
    """A run of blocks at one width; the first halves the resolution (``layerN``).

    Attributes:
      features: channels of every block.
      num_blocks: number of blocks.
      dtype: compute dtype.
    """

    features: int
    num_blocks: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_blocks):
            stride = 2 if i == 0 else 1
            x = IBasicBlock(self.features, stride, dtype=self.dtype, name=str(i))(x)
        return x


class IResNet(nn.Module):
    """iResNet embedding network for 112x112 aligned faces, inference mode.

    Input images are ``[B, 112, 112, 3]`` RGB in [0, 1]; the network applies
    insightface's ``(x - 0.5) / 0.5`` itself and returns ``[B, 512]`` features,
    not L2-normalised. Dropout before ``fc`` is omitted: it is the identity in
    evaluation.

    Attributes:
      stage_blocks: blocks per stage, e.g. ``ARCH_BLOCKS["r50"]``.
      dtype: compute dtype of the convolutional body; ``fc`` and ``features``
        always run in float32, as insightface does in its fp16 mode. Parameters
        are float32 either way.
    """

    stage_blocks: tuple[int, ...]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, *, part: str = "all") -> jax.Array:
        """Embeddings of ``images``; ``part`` runs only the body or only the head.

        Args:
          images: ``[B, 112, 112, 3]`` RGB in [0, 1]; for ``part="head"`` the
            body's output ``[B, 7, 7, 512]`` instead.
          part: "all" (the embedding), "features" (``layer4``'s output, before
            ``bn2``: the last convolutional stage, as Grad-CAM reads it) or
            "head" (the rest of the network applied to such features). Every
            submodule is named explicitly, so skipping some leaves the
            parameter tree unchanged.

        Returns:
          ``[B, 512]`` embeddings, or ``[B, 7, 7, 512]`` features for "features".
        """
        if part not in ("all", "features", "head"):
            raise ValueError(f"part must be 'all', 'features' or 'head', got {part!r}")
        x = images
        if part != "head":
            x = ((x - 0.5) / 0.5).astype(self.dtype)
            x = _conv(_STAGE_WIDTHS[0], kernel=3, stride=1, dtype=self.dtype, name="conv1")(x)
            x = _batch_norm(dtype=self.dtype, name="bn1")(x)
            x = PReLU(dtype=self.dtype, name="prelu")(x)
            for i, (width, blocks) in enumerate(zip(_STAGE_WIDTHS, self.stage_blocks), start=1):
                x = Stage(width, blocks, dtype=self.dtype, name=f"layer{i}")(x)
            if part == "features":
                return x
        x = _batch_norm(dtype=self.dtype, name="bn2")(x)
        # PyTorch flattens NCHW; flattening in that order lets ``fc`` keep its
        # PyTorch column order (a transposed NHWC flatten would need permuted weights).
        x = jnp.transpose(x, (0, 3, 1, 2)).reshape(x.shape[0], -1).astype(jnp.float32)
        x = nn.Dense(EMBEDDING_DIM, name="fc")(x)
        return _batch_norm(dtype=jnp.float32, name="features")(x)

    def features(self, images: jax.Array) -> jax.Array:
        """``layer4``'s output ``[B, 7, 7, 512]`` (compute dtype), for ``apply(..., method=)``."""
        return self(images, part="features")

    def head(self, features: jax.Array) -> jax.Array:
        """The embedding ``[B, 512]`` from ``features``; ``head(features(x)) == self(x)``."""
        return self(features, part="head")


def arch_blocks(arch: str) -> tuple[int, int, int, int]:
    """Blocks per stage of an architecture name.

    Args:
      arch: one of ``ARCH_BLOCKS``.

    Returns:
      ``ARCH_BLOCKS[arch]``.

    Raises:
      ValueError: ``arch`` is unknown (the message lists the known names).
    """
    if arch not in ARCH_BLOCKS:
        raise ValueError(f"unknown iResNet architecture {arch!r}; expected one of {sorted(ARCH_BLOCKS)}")
    return ARCH_BLOCKS[arch]


@functools.lru_cache(maxsize=None)
def _cached_embed_fn(arch: str, dtype_name: str) -> EmbedFn:
    """One embed function per (arch, dtype), so jit caches keyed on it are shared."""
    return module_embed_fn(
        IResNet(ARCH_BLOCKS[arch], dtype=jnp.dtype(dtype_name)), input_size=INPUT_SIZE,
        label="iResNet", name=f"iresnet_{arch}_{dtype_name}_embed",
        doc=f"iResNet-{arch[1:]} ({dtype_name} compute): params, [B, 112, 112, 3] RGB in "
            "[0, 1] -> [B, 512].")


def iresnet_embed_fn(arch: str, *, dtype: Any = jnp.float32) -> EmbedFn:
    """The embed function of an iResNet architecture, the same object on every call.

    Args:
      arch: one of ``ARCH_BLOCKS`` ("r18", "r34", "r50", "r100", "r200").
      dtype: compute dtype (e.g. ``jnp.bfloat16``); params stay float32.

    Returns:
      ``embed_fn(params, images) -> [B, 512]`` with ``images`` float32
      ``[B, 112, 112, 3]`` RGB in [0, 1] and ``params`` the whole Flax variables
      dict (``{"params": ..., "batch_stats": ...}``).
    """
    arch_blocks(arch)  # the clear error for an unknown name, before the cache sees it
    return _cached_embed_fn(arch, jnp.dtype(dtype).name)


@functools.lru_cache(maxsize=None)
def _cached_feature_fns(arch: str, dtype_name: str) -> FeatureFns:
    """One pair of feature functions per (arch, dtype), like ``_cached_embed_fn``."""
    return module_feature_fns(IResNet(ARCH_BLOCKS[arch], dtype=jnp.dtype(dtype_name)),
                              input_size=INPUT_SIZE, label="iResNet")


def iresnet_feature_fns(arch: str, *, dtype: Any = jnp.float32) -> FeatureFns:
    """The network split at its last convolutional stage, for Grad-CAM.

    Args:
      arch: one of ``ARCH_BLOCKS``.
      dtype: compute dtype; params stay float32.

    Returns:
      ``(features_fn, head_fn)``, the same objects on every call:
      ``features_fn(params, images) -> [B, 7, 7, 512]`` is ``layer4``'s output
      (before ``bn2``) and ``head_fn(params, features) -> [B, 512]`` the rest, so
      that ``head_fn(params, features_fn(params, x)) == iresnet_embed_fn(arch)(params, x)``.
    """
    arch_blocks(arch)
    return _cached_feature_fns(arch, jnp.dtype(dtype).name)


def abstract_variables(arch: str) -> PyTree:
    """Shapes and dtypes of an iResNet's variables, computed without allocating them.

    Args:
      arch: one of ``ARCH_BLOCKS``.

    Returns:
      A pytree of ``jax.ShapeDtypeStruct`` shaped like ``iresnet_init``'s params.
    """
    model = IResNet(arch_blocks(arch))
    images = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), images)


def iresnet_init(arch: str, key: jax.Array, *, dtype: Any = jnp.float32) -> tuple[EmbedFn, PyTree]:
    """A randomly initialised iResNet (Flax default initialisers).

    Args:
      arch: one of ``ARCH_BLOCKS``.
      key: PRNG key for the weights.
      dtype: compute dtype of the returned embed function; params are float32.

    Returns:
      ``(embed_fn, params)``: see ``iresnet_embed_fn``; params hold running
      statistics of mean 0, variance 1.
    """
    images = jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    params = _jitted_init(arch)(key, images)
    return iresnet_embed_fn(arch, dtype=dtype), params


@functools.lru_cache(maxsize=None)
def _jitted_init(arch: str) -> Callable[[jax.Array, jax.Array], PyTree]:
    """``IResNet.init`` of ``arch``, jitted once: compiling its random draws takes seconds on CPU."""
    return jax.jit(IResNet(arch_blocks(arch)).init)
