"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in Flax linen.

The network is ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp``
(99.38% on LFW with jittering, 99.13% without; weights CC0), for 150x150 RGB
face chips, NHWC. Its architecture's constants and the NumPy reader of its
``.dat`` are in `srise_jax.models.dlib_dat`; its trained weights are loaded
(converted once, cached, verified) by `srise_jax.models.dlib_weights.load_dlib`.

References:
  https://github.com/davisking/dlib/blob/master/examples/dnn_face_recognition_ex.cpp
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from srise_jax.models.dlib_dat import (
    EMBEDDING_DIM,
    INPUT_SCALE,
    INPUT_SIZE,
    LEVELS,
    MEAN_RGB,
    STEM_FILTERS,
)
from srise_jax.models.embedding import EmbedFn, FeatureFns, module_embed_fn, module_feature_fns

# dlib's rule: two descriptors are the same person when their Euclidean
# distance is below 0.6 (dnn_face_recognition_ex.cpp, "the decision threshold
# the network was trained to use"; also loss_metric's distance_threshold).
DLIB_DISTANCE_THRESHOLD = 0.6
# The same rule as a cosine similarity. dlib's descriptors are NOT unit norm:
# their norms are 1.36-1.41 on the reference chips (mean squared norm 1.93), so
# for two descriptors of that norm d**2 = 2 * |x|**2 * (1 - cos) and d = 0.6
# is cos = 1 - 0.36 / (2 * 1.93) = 0.907 (not the 0.82 that unit vectors would give).
DLIB_THRESHOLD = 0.907

# Layer groups for the model-randomization sanity check (`srise_jax.sanity`),
# top (output) first: (group name, the top-level submodules it holds). One
# group per residual level of `LEVELS` (3, 4, 3, 3, 1 blocks), as for the
# iResNet's stages, so a check costs 7 maps, not 16.
LAYER_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("fc", ("fc",)),
    ("level5", ("block13",)),
    ("level4", ("block10", "block11", "block12")),
    ("level3", ("block7", "block8", "block9")),
    ("level2", ("block3", "block4", "block5", "block6")),
    ("level1", ("block0", "block1", "block2")),
    ("stem", ("conv", "affine")),
)

def dlib_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(low, high) padding that reproduces dlib's con_ on one spatial axis.

    dlib pads ``kernel // 2`` only for stride 1 (con_'s default template
    argument), outputs ``1 + (size + 2 * pad - kernel) / stride`` rows with C's
    truncating division, and reads zeros where a window runs past the bottom or
    right edge (a 3x3 stride-2 filter on the last 2x2 map gives one output).

    Args:
      size: the input's length along the axis.
      kernel: the filter's length along it.
      stride: the filter's stride along it.

    Returns:
      ``(low, high)`` zero padding for `nn.Conv`'s ``padding``.
    """
    pad = kernel // 2 if stride == 1 else 0
    out = 1 + int((size + 2 * pad - kernel) / stride)
    overrun = max(0, (out - 1) * stride + kernel - (size + 2 * pad))
    return pad, pad + overrun


def normalize_input(images: jax.Array) -> jax.Array:
    """dlib's ``input_rgb_image_sized`` normalisation: ``(255 * x - MEAN_RGB) / INPUT_SCALE``.

    Args:
      images: Float[Array, "b h w 3"], RGB in [0, 1].

    Returns:
      The network's input, same shape, per-channel means removed on 0..255 values.
    """
    return (images * 255.0 - jnp.asarray(MEAN_RGB, jnp.float32)) / INPUT_SCALE


def _conv(x: jax.Array, features: int, *, kernel: int, stride: int, dtype: Any, name: str) -> jax.Array:
    """dlib's ``con_<features, kernel, kernel, stride, stride>`` (with bias) applied to ``x``."""
    padding = tuple(dlib_padding(n, kernel, stride) for n in x.shape[1:3])
    conv = nn.Conv(features, (kernel, kernel), strides=stride, padding=padding, dtype=dtype, name=name)
    return conv(x)


class PatchConv(nn.Module):
    """A convolution computed as one matmul of its input patches (same parameters as `nn.Conv`).

    For the stem (7x7, stride 2, 3 input channels) XLA's CPU convolution
    takes about 7x PyTorch's time, while a matmul of the 147-value patches
    runs at matmul speed: the dlib forward pass is about 1.4x faster this way
    on CPU (`benchmarks/profile_dlib.py`, benchmarks/RESULTS.md). Deeper layers, with 32 to 256 input
    channels, are faster as convolutions and stay so. Parameters are named
    and shaped as `nn.Conv`'s (``kernel`` [k, k, in, out], ``bias``), so
    converted weights load unchanged.

    Attributes:
      features: output channels.
      kernel_size: side of the square kernel.
      stride: stride on both spatial axes.
      padding: ((low, high), (low, high)) zero padding of H and W.
      dtype: compute dtype; parameters are float32.
    """

    features: int
    kernel_size: int
    stride: int
    padding: tuple[tuple[int, int], tuple[int, int]]
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """Args: x: [B, H, W, C]. Returns: [B, H', W', features] in `dtype`."""
        k, s = self.kernel_size, self.stride
        kernel = self.param("kernel", nn.initializers.lecun_normal(),
                            (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        x = jnp.pad(x.astype(self.dtype), ((0, 0), *self.padding, (0, 0)))
        out_h, out_w = (x.shape[1] - k) // s + 1, (x.shape[2] - k) // s + 1
        # Patches in (row offset, column offset, channel) order: the order of
        # kernel.reshape(k * k * C, features).
        columns = jnp.concatenate(
            [x[:, :, j:j + s * (out_w - 1) + 1:s] for j in range(k)], axis=-1)
        patches = jnp.concatenate(
            [columns[:, i:i + s * (out_h - 1) + 1:s] for i in range(k)], axis=-1)
        weights = kernel.reshape(-1, self.features).astype(self.dtype)
        return patches @ weights + bias.astype(self.dtype)


class Affine(nn.Module):
    """dlib's ``affine_`` in conv mode: batch norm folded into a per-channel ``x * scale + bias``.

    Attributes:
      dtype: compute dtype; parameters are float32.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        return x * scale.astype(self.dtype) + bias.astype(self.dtype)


def add_prev(a: jax.Array, b: jax.Array) -> jax.Array:
    """dlib's ``add_prev``: the sum over the larger shape, each input zero-padded at the end.

    dlib's ``tt::add(dest, src1, src2)`` sizes the output to the larger of each
    dimension and reads zeros outside either input, so a shortcut with fewer
    channels (or a larger map: 4x4 against the block's 3x3) is padded at the
    high-index end of each axis.

    Args:
      a: Float[Array, "b h1 w1 c1"], the block's output.
      b: Float[Array, "b h2 w2 c2"], the shortcut.

    Returns:
      Float[Array, "b max(h1,h2) max(w1,w2) max(c1,c2)"], the zero-padded sum.

    References:
      dlib, ``dlib/dnn/layers.h`` (``add_prev_``) and ``dlib/cuda/tensor_tools.h``
      (``tt::add``). https://github.com/davisking/dlib
    """
    shape = tuple(max(m, n) for m, n in zip(a.shape, b.shape))

    def pad(x: jax.Array) -> jax.Array:
        return jnp.pad(x, [(0, s - n) for s, n in zip(shape, x.shape)])

    return pad(a) + pad(b)


def _avg_pool_2x2(x: jax.Array) -> jax.Array:
    """dlib's ``avg_pool<2, 2, 2, 2>``: the mean of each 2x2 window, stride 2, no padding.

    The sum is divided by a Python float: `nn.avg_pool` divides by a NumPy
    integer, which strict dtype promotion refuses (the result is the same).
    """
    return nn.pool(x, 0.0, jax.lax.add, (2, 2), (2, 2), "VALID") / 4.0


class Residual(nn.Module):
    """dlib's ``ares`` / ``ares_down``: relu(add_prev(block(x), shortcut(x))).

    The block is con(stride) -> affine -> relu -> con -> affine; the shortcut is
    the identity, or a 2x2 stride-2 average pool when downsampling (no
    projection: the missing channels are zeros, see ``add_prev``).

    Attributes:
      features: channels of the block.
      downsample: halve the resolution (``ares_down``).
      dtype: compute dtype.
    """

    features: int
    downsample: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        stride = 2 if self.downsample else 1
        out = _conv(x, self.features, kernel=3, stride=stride, dtype=self.dtype, name="conv1")
        out = nn.relu(Affine(dtype=self.dtype, name="affine1")(out))
        out = _conv(out, self.features, kernel=3, stride=1, dtype=self.dtype, name="conv2")
        out = Affine(dtype=self.dtype, name="affine2")(out)
        shortcut = _avg_pool_2x2(x) if self.downsample else x
        return nn.relu(add_prev(out, shortcut))


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet (``anet_type``), inference only.

    Input images are ``[B, 150, 150, 3]`` RGB in [0, 1] (dlib face chips, e.g.
    ``get_face_chip(size=150, padding=0.25)``); the network applies dlib's
    ``input_rgb_image_sized`` normalisation itself and returns ``[B, 128]``
    descriptors, as dlib computes them (not L2-normalised).

    Attributes:
      dtype: compute dtype of the convolutional body; the final pooling and
        ``fc`` run in float32. Parameters are float32 either way.
    """

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array, *, part: str = "all") -> jax.Array:
        """Descriptors of ``images``; ``part`` runs only the body or only the head.

        Args:
          images: ``[B, 150, 150, 3]`` RGB in [0, 1]; for ``part="head"`` the
            body's output ``[B, h, w, 256]`` instead.
          part: "all" (the descriptor), "features" (the last residual level's
            output, before ``avg_pool_everything``: what Grad-CAM reads) or
            "head" (pooling and ``fc`` applied to such features). Every
            submodule is named explicitly, so skipping some leaves the
            parameter tree unchanged.

        Returns:
          ``[B, 128]`` descriptors, or ``[B, h, w, 256]`` features for "features".
        """
        if part not in ("all", "features", "head"):
            raise ValueError(f"part must be 'all', 'features' or 'head', got {part!r}")
        x = images
        if part != "head":
            x = normalize_input(x)
            padding = tuple(dlib_padding(n, 7, 2) for n in x.shape[1:3])
            x = PatchConv(STEM_FILTERS, 7, 2, padding, dtype=self.dtype, name="conv")(x)
            x = nn.relu(Affine(dtype=self.dtype, name="affine")(x))
            x = nn.max_pool(x, (3, 3), strides=(2, 2))
            index = 0
            for features, blocks, downsample in LEVELS:
                for i in range(blocks):
                    x = Residual(features, downsample and i == 0, dtype=self.dtype, name=f"block{index}")(x)
                    index += 1
            if part == "features":
                return x
        x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
        # dlib's fc_ computes x @ W with W stored as (num_inputs, num_outputs).
        return nn.Dense(EMBEDDING_DIM, use_bias=False, name="fc")(x)

    def features(self, images: jax.Array) -> jax.Array:
        """The last residual level's output ``[B, h, w, 256]``, for ``apply(..., method=)``."""
        return self(images, part="features")

    def head(self, features: jax.Array) -> jax.Array:
        """The descriptor ``[B, 128]`` from ``features``; ``head(features(x)) == self(x)``."""
        return self(features, part="head")


@functools.lru_cache(maxsize=None)
def _cached_embed_fn(dtype_name: str) -> EmbedFn:
    """One embed function per dtype, so jit caches keyed on it are shared."""
    return module_embed_fn(
        DlibResNet(dtype=jnp.dtype(dtype_name)), input_size=INPUT_SIZE, label="dlib ResNet",
        name=f"dlib_resnet_{dtype_name}_embed",
        doc=f"dlib ResNet ({dtype_name} compute): params, [B, 150, 150, 3] RGB in [0, 1] "
            "-> [B, 128].")


def dlib_embed_fn(*, dtype: Any = jnp.float32) -> EmbedFn:
    """The embed function of dlib's ResNet, the same object on every call.

    Args:
      dtype: compute dtype (e.g. ``jnp.bfloat16``); params stay float32.

    Returns:
      ``embed_fn(params, images) -> [B, 128]`` with ``images`` float32
      ``[B, 150, 150, 3]`` RGB in [0, 1] and ``params`` the Flax variables
      (``{"params": ...}``).
    """
    return _cached_embed_fn(jnp.dtype(dtype).name)


@functools.lru_cache(maxsize=None)
def _cached_feature_fns(dtype_name: str) -> FeatureFns:
    """One pair of feature functions per dtype, like ``_cached_embed_fn``."""
    return module_feature_fns(DlibResNet(dtype=jnp.dtype(dtype_name)), input_size=INPUT_SIZE,
                              label="dlib ResNet")


def dlib_feature_fns(*, dtype: Any = jnp.float32) -> FeatureFns:
    """dlib's ResNet split at its last residual level, for Grad-CAM.

    Args:
      dtype: compute dtype; params stay float32.

    Returns:
      ``(features_fn, head_fn)``, the same objects on every call:
      ``features_fn(params, images) -> [B, h, w, 256]`` is the last level's
      output (before ``avg_pool_everything``) and ``head_fn(params, features)
      -> [B, 128]`` the pooling and ``fc``, so that
      ``head_fn(params, features_fn(params, x)) == dlib_embed_fn()(params, x)``.
    """
    return _cached_feature_fns(jnp.dtype(dtype).name)


def abstract_variables() -> Any:
    """Shapes and dtypes of the network's variables, computed without allocating them.

    Returns:
      The variables tree of `DlibResNet`, as `jax.ShapeDtypeStruct`s.
    """
    images = jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
    return jax.eval_shape(DlibResNet().init, jax.random.key(0), images)
