"""MTCNN's three face-detection networks (P-Net, R-Net, O-Net) in Flax linen.

The networks and their weights are facenet-pytorch's (2.6.0, MIT licence),
converted by ``weights_conversion.mtcnn`` into ``srise_jax/assets/mtcnn.npz``.
Layer names match the PyTorch state dicts (``conv4_1`` is ``conv4_1``), NHWC
instead of NCHW. Inputs are normalised pixels, ``(x - 127.5) / 128`` for x in
0..255, as in facenet-pytorch; ``srise_jax.detect`` does that and the rest.

References:
  Zhang et al., "Joint Face Detection and Alignment Using Multitask Cascaded
  Convolutional Networks", IEEE Signal Processing Letters, 2016.
  https://github.com/timesler/facenet-pytorch/blob/master/models/mtcnn.py
"""

from __future__ import annotations

import functools
import importlib.resources
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from srise_jax.models.iresnet import PReLU

NETS = ("pnet", "rnet", "onet")
# Input side of each network: P-Net's 12x12 is its receptive field (it runs on
# whole images), R-Net and O-Net take crops of exactly this size.
INPUT_SIZES = {"pnet": 12, "rnet": 24, "onet": 48}
_NPZ_KEY_SEPARATOR = "/"
# Full float32 matrix products: accelerators default to reduced precision
# (TF32, bf16 passes), which moves boxes and landmarks; these nets are cheap.
_PRECISION = jax.lax.Precision.HIGHEST


def _conv(features: int, kernel: int, name: str) -> nn.Conv:
    """Unpadded convolution with bias, as ``torch.nn.Conv2d(..., kernel_size=kernel)``."""
    return nn.Conv(features, (kernel, kernel), padding="VALID", precision=_PRECISION, name=name)


def _dense(features: int, name: str) -> nn.Dense:
    """Dense layer with bias, as ``torch.nn.Linear(..., features)`` (kernel transposed)."""
    return nn.Dense(features, precision=_PRECISION, name=name)


def max_pool_ceil(x: jax.Array, window: int, stride: int) -> jax.Array:
    """Max pooling of ``[B, H, W, C]`` like ``torch.nn.MaxPool2d(window, stride, ceil_mode=True)``.

    Ceil mode keeps a last, partial window where the input does not divide
    evenly; it takes the maximum of the pixels it covers (the overhang is
    padded with -inf). Floor mode would drop P-Net's last row and column of
    cells and shrink R-Net's and O-Net's maps below their dense layers' inputs.

    Args:
      x: Float[Array, "b h w c"].
      window: side of the square pooling window.
      stride: step between windows, in both directions.

    Returns:
      Float[Array, "b ceil((h-window)/stride)+1 ceil((w-window)/stride)+1 c"].

    References:
      Zhang et al., "Joint Face Detection and Alignment using Multi-task
      Cascaded Convolutional Networks", 2016. https://arxiv.org/abs/1604.02878
    """
    padding = []
    for size in x.shape[1:3]:
        out = -(-(size - window) // stride) + 1
        padding.append((0, (out - 1) * stride + window - size))
    return nn.max_pool(x, (window, window), strides=(stride, stride), padding=padding)


def _window_inside(valid: jax.Array, window: int) -> jax.Array:
    """``(H - window + 1, W - window + 1)``: where a ``window`` x ``window`` patch of ``valid`` is all True."""
    patches = jax.lax.reduce_window(valid.astype(jnp.float32), 1.0, jax.lax.min, (window, window), (1, 1), "VALID")
    return patches > 0


def _flatten_like_torch(x: jax.Array) -> jax.Array:
    """Flatten ``[B, H, W, C]`` in the order facenet-pytorch feeds its dense layers.

    facenet-pytorch permutes NCHW to (N, W, H, C) before flattening (the
    weights come from Caffe's transposed images); any other order still runs,
    with the wrong weights on every input.
    """
    return jnp.transpose(x, (0, 2, 1, 3)).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: a fully convolutional 12x12 face/no-face scanner.

    Returns ``(regression, probabilities)``: ``[B, h, w, 4]`` box offsets
    (dx1, dy1, dx2, dy2, in units of the 12-pixel cell) and ``[B, h, w, 2]``
    softmax over (no face, face), one cell per 2 input pixels, where
    ``h = ceil((H - 2) / 2) - 4`` (same for ``w``).
    """

    @nn.compact
    def __call__(self, x: jax.Array, valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
        """Run on normalised images ``[B, H, W, 3]``.

        Args:
          x: normalised images.
          valid: optional ``(H, W)`` bool, True on image pixels, False on
            padding. If the image is one or more rectangles of True, each
            starting at an even row and column, every output cell whose 12x12
            window lies in one rectangle is exactly that of the rectangle's
            image alone: padding and packing let images of many sizes share
            one compiled shape.
        """
        x = PReLU(name="prelu1")(_conv(10, 3, "conv1")(x))
        if valid is not None:
            # The pool's last, partial window must not see activations of padding
            # (or of a neighbouring image): facenet's ceil-mode pool sees nothing there.
            x = jnp.where(_window_inside(valid, 3)[None, :, :, None], x, -jnp.inf)
        x = max_pool_ceil(x, 2, 2)
        if valid is not None:
            # Windows wholly outside hold -inf; zero keeps later layers finite.
            x = jnp.where(x == -jnp.inf, 0.0, x)
        x = PReLU(name="prelu2")(_conv(16, 3, "conv2")(x))
        x = PReLU(name="prelu3")(_conv(32, 3, "conv3")(x))
        probabilities = jax.nn.softmax(_conv(2, 1, "conv4_1")(x), axis=-1)
        regression = _conv(4, 1, "conv4_2")(x)
        return regression, probabilities


class RNet(nn.Module):
    """Refinement network on 24x24 crops.

    Returns ``(regression, probabilities)``: ``[B, 4]`` box offsets in units
    of the crop's box and ``[B, 2]`` softmax over (no face, face).
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = PReLU(name="prelu1")(_conv(28, 3, "conv1")(x))
        x = max_pool_ceil(x, 3, 2)
        x = PReLU(name="prelu2")(_conv(48, 3, "conv2")(x))
        x = max_pool_ceil(x, 3, 2)
        x = PReLU(name="prelu3")(_conv(64, 2, "conv3")(x))
        x = PReLU(name="prelu4")(_dense(128, "dense4")(_flatten_like_torch(x)))
        probabilities = jax.nn.softmax(_dense(2, "dense5_1")(x), axis=-1)
        regression = _dense(4, "dense5_2")(x)
        return regression, probabilities


class ONet(nn.Module):
    """Output network on 48x48 crops.

    Returns ``(regression, landmarks, probabilities)``: ``[B, 4]`` box offsets,
    ``[B, 10]`` landmarks as fractions of the box (five x, then five y: left
    eye, right eye, nose, left and right mouth corner as seen in the image)
    and ``[B, 2]`` softmax over (no face, face).
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        x = PReLU(name="prelu1")(_conv(32, 3, "conv1")(x))
        x = max_pool_ceil(x, 3, 2)
        x = PReLU(name="prelu2")(_conv(64, 3, "conv2")(x))
        x = max_pool_ceil(x, 3, 2)
        x = PReLU(name="prelu3")(_conv(64, 3, "conv3")(x))
        x = max_pool_ceil(x, 2, 2)
        x = PReLU(name="prelu4")(_conv(128, 2, "conv4")(x))
        x = PReLU(name="prelu5")(_dense(256, "dense5")(_flatten_like_torch(x)))
        probabilities = jax.nn.softmax(_dense(2, "dense6_1")(x), axis=-1)
        regression = _dense(4, "dense6_2")(x)
        landmarks = _dense(10, "dense6_3")(x)
        return regression, landmarks, probabilities


_MODULES = {"pnet": PNet(), "rnet": RNet(), "onet": ONet()}


def pnet_apply(variables: Any, images: jax.Array, valid: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """P-Net on normalised ``[B, H, W, 3]`` images; see ``PNet``.

    Args:
      variables: ``load_mtcnn()["pnet"]``.
      images: normalised images, H and W at least 12.
      valid: optional ``(H, W)`` bool map of image pixels in padded or packed images.

    Returns:
      ``(regression [B, h, w, 4], probabilities [B, h, w, 2])``.
    """
    return _MODULES["pnet"].apply(variables, images, valid)


def rnet_apply(variables: Any, crops: jax.Array) -> tuple[jax.Array, jax.Array]:
    """R-Net on normalised ``[B, 24, 24, 3]`` crops; see ``RNet``.

    Args:
      variables: ``load_mtcnn()["rnet"]``.
      crops: normalised crops.

    Returns:
      ``(regression [B, 4], probabilities [B, 2])``.
    """
    return _MODULES["rnet"].apply(variables, crops)


def onet_apply(variables: Any, crops: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """O-Net on normalised ``[B, 48, 48, 3]`` crops; see ``ONet``.

    Args:
      variables: ``load_mtcnn()["onet"]``.
      crops: normalised crops.

    Returns:
      ``(regression [B, 4], landmarks [B, 10], probabilities [B, 2])``.
    """
    return _MODULES["onet"].apply(variables, crops)


def abstract_variables() -> dict[str, Any]:
    """Shapes and dtypes of the three networks' variables, computed without allocating them.

    Returns:
      ``{"pnet": ..., "rnet": ..., "onet": ...}`` of ``jax.ShapeDtypeStruct``
      trees shaped like ``load_mtcnn()``'s.
    """
    shapes = {}
    for net, module in _MODULES.items():
        size = INPUT_SIZES[net]
        images = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
        shapes[net] = jax.eval_shape(module.init, jax.random.key(0), images)
    return shapes


def npz_key(path: tuple[str, ...]) -> str:
    """The ``.npz`` key of a variable: its path without ``params``, e.g. ``pnet/conv1/kernel``.

    Args:
      path: the variable's keys in the variables tree, outermost first.

    Returns:
      The keys other than "params", joined with "/".
    """
    return _NPZ_KEY_SEPARATOR.join(part for part in path if part != "params")


def _bundled_npz() -> Any:
    """The packaged ``mtcnn.npz`` as an importlib.resources traversable."""
    return importlib.resources.files("srise_jax") / "assets" / "mtcnn.npz"


@functools.lru_cache(maxsize=4)
def _load(path: str | None) -> dict[str, Any]:
    """``load_mtcnn``'s work, cached per path (None is the bundled file)."""
    source = _bundled_npz() if path is None else Path(path)
    with source.open("rb") as stream, np.load(stream) as npz:
        arrays = dict(npz)
    expected = traverse_util.flatten_dict(abstract_variables())
    variables = {}
    for tree_path, leaf in expected.items():
        key = npz_key(tree_path)
        if key not in arrays:
            raise ValueError(f"{source}: missing array {key!r} (expected shape {leaf.shape})")
        if arrays[key].shape != leaf.shape:
            raise ValueError(f"{source}: array {key!r} has shape {arrays[key].shape}, expected {leaf.shape}")
        variables[tree_path] = jnp.asarray(arrays.pop(key), dtype=jnp.float32)
    if arrays:
        raise ValueError(f"{source}: unexpected arrays {sorted(arrays)[:3]}")
    return traverse_util.unflatten_dict(variables)


def load_mtcnn(path: str | Path | None = None) -> dict[str, Any]:
    """MTCNN's weights: the bundled facenet-pytorch conversion, or another ``.npz``.

    Loaded once per path and cached; the arrays are immutable JAX arrays.

    Args:
      path: an ``.npz`` written by ``python -m weights_conversion.mtcnn``;
        None for the bundled ``srise_jax/assets/mtcnn.npz``.

    Returns:
      ``{"pnet": variables, "rnet": variables, "onet": variables}``, each
      ``{"params": ...}`` for ``pnet_apply`` / ``rnet_apply`` / ``onet_apply``.

    Raises:
      ValueError: the file lacks an array, holds an extra one, or a shape differs.
    """
    return _load(None if path is None else str(Path(path).resolve()))
