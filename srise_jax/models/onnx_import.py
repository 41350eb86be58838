"""Any ONNX face-recognition network as a pure, differentiable JAX function.

    embed_fn, params = srise_jax.load_onnx("~/.insightface/models/buffalo_l/w600k_r50.onnx")
    embed_fn(params, crops)     # crops: float32 [B, 112, 112, 3] RGB in [0, 1] -> [B, 512]

The file is parsed with the `onnx` package (protobuf only; no ONNX Runtime at
run time). `embed_fn` evaluates the graph's nodes in order with the operators
of `srise_jax.models.onnx_ops` while it is traced, so `jit` compiles the
whole network into one XLA program, and `vmap`, `grad` and sharding work
through it as through the library's own models.

Input conventions follow insightface's loader (`model_zoo/arcface_onnx.py`):
the network is fed ``(255 x - 127.5) / 127.5`` in RGB; when one of the
graph's first eight nodes is a Sub and one a Mul (insightface looks at the
node names, "Sub"/"_minus" and "Mul"/"_mul"; the op types are looked at too),
the graph normalises its input itself and is fed ``255 x``. `input_mean`,
`input_std` and `bgr` override this.

`params` is ``{"params": {initializer: array}, "batch_stats": {...}}``: the
graph's floating-point initializers, float32 (fp16 ones upcast), with the
running means and variances of BatchNormalization nodes under "batch_stats"
as the library's Flax models keep them (the sanity check leaves them alone).
Convolution kernels are stored HWIO, converted once here, because the graph
runs channels-last. Float Constant nodes of more than 64 elements (weights
some exporters store that way) are parameters too; integer initializers
(shapes, axes, pads) and small constants are constants of the graph.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from srise_jax.models.embedding import FeatureFns
from srise_jax.models.onnx_ops import (
    OPS,
    ChannelsLast,
    ConvKernel,
    Node,
    OnnxError,
    Value,
    logical,
    logical_shape,
)
from srise_jax.typing import EmbedFn, PyTree

# The opsets of the default domain the operators are written for.
OPSETS = range(9, 19)
# insightface's rule for graphs that normalise their own input: a Sub and a
# Mul among the first nodes.
_NORMALISING_NODES = 8
# Float Constant nodes with more elements than this are weights: parameters.
_LARGEST_CLOSED_CONSTANT = 64
# insightface's default normalisation: the network sees (255 x - 127.5) / 127.5.
DEFAULT_INPUT_MEAN = 127.5
DEFAULT_INPUT_STD = 127.5


@dataclasses.dataclass(frozen=True)
class OnnxGraph:
    """A parsed face-recognition graph: what `onnx_embed_fn` and `onnx_feature_fns` run.

    Attributes:
      path: the .onnx file.
      nodes: the graph's nodes in evaluation order.
      input_name: the graph input that takes the images.
      output_name: the graph output that is the embedding.
      input_size: the side S of the [B, 3, S, S] input the graph declares.
      constants: integer initializers (shapes, axes, pads) and what the graph
        computes from constants alone, as NumPy arrays.
      conv_kernels: initializers stored HWIO in `params` (convolution weights).
      input_mean, input_std, bgr: the network is fed ``(255 x - input_mean)
        / input_std``, channels reversed when `bgr`.
      opset: the model's opset of the default domain.
      shapes: each tensor's shape as ONNX sees it, for a batch of one.
      embedding_dim: D of the [B, D] output.
    """

    path: Path
    nodes: tuple[Node, ...]
    input_name: str
    output_name: str
    input_size: int
    constants: dict[str, np.ndarray]
    conv_kernels: frozenset[str]
    input_mean: float
    input_std: float
    bgr: bool
    opset: int
    shapes: dict[str, tuple[int, ...]]
    embedding_dim: int


# ----------------------------------------------------------------------------
# Reading the file
# ----------------------------------------------------------------------------

def _onnx() -> Any:
    try:
        import onnx
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "loading ONNX models needs the onnx package: pip install 'srise-jax[onnx]'") from error
    return onnx


def _read_model(path: Path) -> Any:
    """The ModelProto of `path`, its external data loaded; one error line otherwise."""
    onnx = _onnx()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise OnnxError(f"{path}: not a readable ONNX model ({type(error).__name__}: "
                        f"{error})") from None
    if not model.HasField("graph") or not model.graph.node or not model.graph.input:
        raise OnnxError(f"{path}: not an ONNX model (no graph, nodes or inputs)")
    external = [t.name for t in model.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        from onnx.external_data_helper import load_external_data_for_model
        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as error:
            raise OnnxError(
                f"{path}: its initializers ({external[0]!r} and {len(external) - 1} more) are "
                f"stored in external data files beside it that cannot be read "
                f"({type(error).__name__}: {error}); keep them in {path.parent}") from None
    return model


def _opset(path: Path, model: Any) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise OnnxError(f"{path}: the model imports no opset of the default ONNX domain")
    opset = int(versions[0])
    if opset not in OPSETS:
        raise OnnxError(f"{path}: opset {opset} is not supported (opsets {OPSETS.start}-"
                        f"{OPSETS.stop - 1}); re-export the model with one of them")
    return opset


def _attributes(onnx: Any, node: Any) -> dict[str, Any]:
    attrs = {}
    for attribute in node.attribute:
        value = onnx.helper.get_attribute_value(attribute)
        if isinstance(value, onnx.TensorProto):
            value = onnx.numpy_helper.to_array(value)
        elif isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, list):
            value = [v.decode() if isinstance(v, bytes) else v for v in value]
        attrs[attribute.name] = value
    return attrs


def _parse_nodes(path: Path, onnx: Any, model: Any, opset: int) -> tuple[Node, ...]:
    nodes = []
    supported = ", ".join(sorted(OPS))
    for index, proto in enumerate(model.graph.node):
        name = proto.name or f"#{index}"
        if proto.domain not in ("", "ai.onnx") or proto.op_type not in OPS:
            domain = f" of domain {proto.domain!r}" if proto.domain else ""
            raise OnnxError(f"{path}: node {name!r} has operator {proto.op_type!r}"
                            f"{domain}, which is not supported; supported: {supported}")
        node = Node(name, proto.op_type, tuple(proto.input), tuple(proto.output),
                    _attributes(onnx, proto), opset)
        try:
            node.check_attributes()
        except OnnxError as error:
            raise OnnxError(f"{path}: {error}") from None
        nodes.append(node)
    return tuple(nodes)


def _input(path: Path, model: Any) -> tuple[str, int]:
    """The image input's name and side, from the declared [B, 3, S, S] shape."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        raise OnnxError(f"{path}: expected one image input, the graph has "
                        f"{[i.name for i in inputs]}")
    (graph_input,) = inputs
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in graph_input.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3:
        raise OnnxError(f"{path}: input {graph_input.name!r} has shape {dims}; a "
                        "[batch, 3, height, width] image input is expected")
    height, width = dims[2], dims[3]
    if not isinstance(height, int) or not isinstance(width, int) or height == 0:
        raise OnnxError(f"{path}: input {graph_input.name!r} has a dynamic image size "
                        f"{dims}, which is not supported; export it with a fixed size "
                        "(112x112 for insightface's models)")
    if height != width:
        raise OnnxError(f"{path}: input {graph_input.name!r} is {height}x{width}; only "
                        "square inputs are supported")
    return graph_input.name, int(height)


def _normalises_itself(nodes: tuple[Node, ...]) -> bool:
    """insightface's test for a graph that normalises its own input (see the module doc)."""
    first = nodes[:_NORMALISING_NODES]
    sub = any(n.op_type == "Sub" or n.name.startswith(("Sub", "_minus")) for n in first)
    mul = any(n.op_type == "Mul" or n.name.startswith(("Mul", "_mul")) for n in first)
    return sub and mul


def _weight_constants(nodes: tuple[Node, ...]) -> tuple[tuple[Node, ...], dict[str, np.ndarray]]:
    """Float Constant nodes larger than `_LARGEST_CLOSED_CONSTANT`, taken out of the graph.

    Some exporters store weights as Constant nodes instead of initializers;
    as parameters they are arguments of `embed_fn`, not constants compiled
    into the program.
    """
    kept, weights = [], {}
    for node in nodes:
        value = node.attrs.get("value") if node.op_type == "Constant" else None
        if (isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.floating)
                and value.size > _LARGEST_CLOSED_CONSTANT):
            weights[node.outputs[0]] = value
        else:
            kept.append(node)
    return tuple(kept), weights


def _split_initializers(path: Path, onnx: Any, model: Any, nodes: tuple[Node, ...],
                        extra: dict[str, np.ndarray]
                        ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray],
                                   dict[str, np.ndarray], frozenset[str]]:
    """(params, batch_stats, constants, conv kernel names) from the graph's initializers
    and the `extra` weights of `_weight_constants`."""
    uses: dict[str, set[tuple[str, int]]] = {}
    for node in nodes:
        for position, name in enumerate(node.inputs):
            uses.setdefault(name, set()).add((node.op_type, position))
    params, stats, constants, kernels = {}, {}, {}, set()
    tensors = [(t.name, t) for t in model.graph.initializer] + list(extra.items())
    for name, tensor in tensors:
        try:
            array = tensor if isinstance(tensor, np.ndarray) else onnx.numpy_helper.to_array(tensor)
        except Exception as error:
            raise OnnxError(f"{path}: initializer {name!r} cannot be read "
                            f"({type(error).__name__}: {error})") from None
        if not np.issubdtype(array.dtype, np.floating):
            constants[name] = array
            continue
        array = array.astype(np.float32)  # fp16 and fp64 initializers: float32 parameters
        used = uses.get(name, set())
        if used == {("Conv", 1)} and array.ndim == 4:
            params[name] = np.ascontiguousarray(np.transpose(array, (2, 3, 1, 0)))
            kernels.add(name)
        elif used and all(op == "BatchNormalization" and position in (3, 4)
                          for op, position in used):
            stats[name] = array
        else:
            params[name] = array
    return params, stats, constants, frozenset(kernels)


def _fold_constants(path: Path, nodes: tuple[Node, ...], constants: dict[str, np.ndarray]
                    ) -> dict[str, np.ndarray]:
    """`constants` plus every tensor computed from constants alone (Constant nodes and their
    arithmetic), so that a network split for Grad-CAM still has them after the split."""
    constants = dict(constants)
    for node in nodes:
        if not all(name in constants for name in node.inputs if name):
            continue
        try:
            outputs = OPS[node.op_type](node, [constants[n] if n else None for n in node.inputs])
        except OnnxError as error:
            raise OnnxError(f"{path}: {error}") from None
        if all(isinstance(value, np.ndarray) for value in outputs):
            constants.update((name, value) for name, value in zip(node.outputs, outputs) if name)
    return constants


def read_onnx(path: str | Path, *, input_mean: float | None = None,
              input_std: float | None = None, bgr: bool = False
              ) -> tuple[OnnxGraph, PyTree]:
    """Parse an ONNX face-recognition model: its graph and its parameters.

    Args:
      path: the .onnx file (external-data files beside it are read too).
      input_mean, input_std: the network is fed ``(255 x - input_mean) /
        input_std``; default insightface's choice (see the module doc).
      bgr: feed the channels in BGR order (default RGB, as insightface does).

    Returns:
      ``(graph, params)``; `params` as the module doc describes.

    Raises:
      FileNotFoundError: `path` does not exist.
      OnnxError: the file is not ONNX, its external data is missing, its
        opset, an operator, attribute or input shape is not supported, or its
        output is not a [B, D] embedding (one line naming the file and node).
      ModuleNotFoundError: the onnx package is not installed.
    """
    path = Path(os.path.expanduser(str(path)))
    onnx = _onnx()
    model = _read_model(path)
    opset = _opset(path, model)
    nodes = _parse_nodes(path, onnx, model, opset)
    input_name, input_size = _input(path, model)
    nodes, weights = _weight_constants(nodes)
    params, stats, constants, kernels = _split_initializers(path, onnx, model, nodes, weights)
    constants = _fold_constants(path, nodes, constants)
    normalised = _normalises_itself(nodes)
    mean = (0.0 if normalised else DEFAULT_INPUT_MEAN) if input_mean is None else float(input_mean)
    std = (1.0 if normalised else DEFAULT_INPUT_STD) if input_std is None else float(input_std)
    if not (np.isfinite(mean) and np.isfinite(std) and std != 0):
        raise ValueError(f"input_mean and input_std must be finite and input_std non-zero, "
                         f"got {mean} and {std}")
    variables = {"params": {k: jnp.asarray(v) for k, v in params.items()},
                 "batch_stats": {k: jnp.asarray(v) for k, v in stats.items()}}
    output_name = model.graph.output[0].name
    graph = OnnxGraph(path, nodes, input_name, output_name, input_size, constants, kernels,
                      mean, std, bool(bgr), opset, {}, 0)
    shapes = _trace_shapes(graph, variables)
    output_shape = shapes.get(output_name)
    if output_shape is None or len(output_shape) != 2:
        raise OnnxError(f"{path}: output {output_name!r} has shape {output_shape}; an "
                        "embedding [batch, D] is expected")
    graph = dataclasses.replace(graph, shapes=shapes, embedding_dim=int(output_shape[1]))
    return graph, variables


# ----------------------------------------------------------------------------
# Running the graph
# ----------------------------------------------------------------------------

def _network_input(graph: OnnxGraph, images: jax.Array, dtype: Any) -> ChannelsLast:
    """Crops in [0, 1], RGB, NHWC -> what the network expects, kept channels-last."""
    x = jnp.asarray(images, jnp.float32)
    if graph.bgr:
        x = x[..., ::-1]
    x = (255.0 * x - graph.input_mean) / graph.input_std
    return ChannelsLast(x.astype(dtype))


def _evaluate(graph: OnnxGraph, variables: PyTree, env: dict[str, Value], *, start: int = 0,
              stop: str | None = None, record: dict[str, tuple[int, ...]] | None = None
              ) -> dict[str, Value]:
    """Run the nodes from index `start` on, until tensor `stop` exists; returns the tensors."""
    env = dict(env)
    for name, array in variables["params"].items():
        env[name] = ConvKernel(array) if name in graph.conv_kernels else array
    env.update(variables["batch_stats"])
    env.update(graph.constants)
    for node in graph.nodes[start:]:
        try:
            inputs = [env[name] if name else None for name in node.inputs]
        except KeyError as missing:
            raise OnnxError(f"node {node.name!r} ({node.op_type}): input {missing} is not "
                            "computed before it (the graph is not in topological order, or "
                            "the network was split at a layer that other branches skip)"
                              ) from None
        outputs = OPS[node.op_type](node, inputs)
        for name, value in zip(node.outputs, outputs):
            if name:
                env[name] = value
                if record is not None:
                    record[name] = logical_shape(value)
        if stop is not None and stop in env:
            break
    return env


def _with_path(graph: OnnxGraph, fn: Callable[[], Any]) -> Any:
    """Run fn; an unsupported attribute or shape met while tracing names the file."""
    try:
        return fn()
    except OnnxError as error:
        raise OnnxError(f"{graph.path}: {error}") from None


def _trace_shapes(graph: OnnxGraph, variables: PyTree) -> dict[str, tuple[int, ...]]:
    """Each tensor's ONNX shape for a batch of one, by tracing the graph once (no compile)."""
    record: dict[str, tuple[int, ...]] = {}

    def run(variables: PyTree) -> None:
        images = jnp.zeros((1, graph.input_size, graph.input_size, 3), jnp.float32)
        env = {graph.input_name: _network_input(graph, images, jnp.float32)}
        with jax.numpy_dtype_promotion("standard"):
            _evaluate(graph, variables, env, record=record)

    _with_path(graph, lambda: jax.eval_shape(run, variables))
    return record


def _check_images(graph: OnnxGraph, images: jax.Array) -> None:
    expected = (graph.input_size, graph.input_size, 3)
    if images.ndim != 4 or tuple(images.shape[1:]) != expected:
        raise ValueError(f"{graph.path.name} expects images of shape [B, {graph.input_size}, "
                         f"{graph.input_size}, 3], got {tuple(images.shape)}")


def _run_until(graph: OnnxGraph, params: PyTree, images: jax.Array, dtype: Any,
               tensor: str) -> Value:
    """The value of `tensor` for these crops (nodes after it are not evaluated)."""
    _check_images(graph, images)

    def run() -> Value:
        env = {graph.input_name: _network_input(graph, images, dtype)}
        with jax.numpy_dtype_promotion("standard"):
            return _evaluate(graph, params, env, stop=tensor)[tensor]
    return _with_path(graph, run)


def onnx_embed_fn(graph: OnnxGraph, *, dtype: Any = jnp.float32) -> EmbedFn:
    """The embed function of a parsed graph.

    Args:
      graph: from `read_onnx`.
      dtype: compute dtype of the convolutional body (e.g. ``jnp.bfloat16``);
        matrix products (the embedding head) and the output are float32, and
        params stay float32.

    Returns:
      ``embed_fn(params, images) -> [B, D]`` float32, ``images`` float32
      ``[B, S, S, 3]`` RGB in [0, 1]; it raises ValueError on another shape.
    """
    dtype = jnp.dtype(dtype)

    def embed_fn(params: PyTree, images: jax.Array) -> jax.Array:
        output = _run_until(graph, params, images, dtype, graph.output_name)
        return jnp.asarray(logical(output), jnp.float32)

    embed_fn.__name__ = embed_fn.__qualname__ = f"onnx_embed_fn[{graph.path.name}]"
    embed_fn.__doc__ = (f"Embeddings [B, {graph.embedding_dim}] of {graph.path.name} for crops "
                        f"[B, {graph.input_size}, {graph.input_size}, 3] RGB in [0, 1].")
    return embed_fn


def load_onnx(path: str | Path, *, input_mean: float | None = None,
              input_std: float | None = None, bgr: bool = False,
              dtype: Any = jnp.float32) -> tuple[EmbedFn, PyTree]:
    """Load an ONNX face-recognition network as ``(embed_fn, params)``.

    Args:
      path: the .onnx file, e.g. insightface's
        ``~/.insightface/models/buffalo_l/w600k_r50.onnx``.
      input_mean, input_std: the network is fed ``(255 x - input_mean) /
        input_std``; default insightface's choice: 127.5 and 127.5, or 0 and
        1 when the graph normalises its input itself.
      bgr: feed BGR instead of RGB.
      dtype: compute dtype (e.g. ``jnp.bfloat16``); params stay float32.

    Returns:
      ``(embed_fn, params)``: ``embed_fn(params, images[B, S, S, 3]) ->
      [B, D]`` float32, S the graph's input side; `params` the graph's
      initializers (see the module doc), arguments of `embed_fn`, never
      constants closed over.

    Raises:
      FileNotFoundError, OnnxError, ModuleNotFoundError: see `read_onnx`.
    """
    graph, params = read_onnx(path, input_mean=input_mean, input_std=input_std, bgr=bgr)
    return onnx_embed_fn(graph, dtype=dtype), params


# ----------------------------------------------------------------------------
# Grad-CAM's split, and the sanity check's groups
# ----------------------------------------------------------------------------

def default_feature_layer(graph: OnnxGraph) -> str:
    """The last 4-D activation with more than one pixel before the network turns 2-D.

    That is Grad-CAM's layer: the last feature map (a GDC head's 1x1 output,
    as MobileFaceNet's, has no spatial extent to weigh).

    Args:
      graph: from `read_onnx`.

    Returns:
      The tensor's name.

    Raises:
      OnnxError: the graph has no such tensor.
    """
    best = None
    for node in graph.nodes:
        for name in node.outputs:
            shape = graph.shapes.get(name)
            if shape is None:
                continue
            if len(shape) == 4 and shape[2] * shape[3] > 1:
                best = name
            elif len(shape) == 2 and best is not None and name in _downstream(graph, best):
                return best
    if best is None:
        raise OnnxError(f"{graph.path}: no 4-D feature map for Grad-CAM")
    return best


def _downstream(graph: OnnxGraph, tensor: str) -> set[str]:
    reached = {tensor}
    for node in graph.nodes:
        if reached.intersection(node.inputs):
            reached.update(node.outputs)
    return reached


def _produced_by(graph: OnnxGraph, tensor: str) -> int:
    for index, node in enumerate(graph.nodes):
        if tensor in node.outputs:
            return index
    raise OnnxError(f"{graph.path}: no node computes a tensor named {tensor!r}; "
                    "name a node output as the layer")


def _check_split(graph: OnnxGraph, cut: int, layer: str) -> None:
    """The nodes after `cut` read only the layer, later tensors and constants."""
    available = {layer} | graph.constants.keys()
    after = graph.nodes[cut + 1:]
    produced = {name for node in after for name in node.outputs}
    for node in after:
        for name in node.inputs:
            computed = name in graph.shapes or name == graph.input_name
            if computed and name not in available | produced:
                raise OnnxError(
                    f"{graph.path}: layer {layer!r} does not split the network: node "
                    f"{node.name!r} after it reads {name!r}, computed before it")


def onnx_feature_fns(graph: OnnxGraph | str | Path, *, layer: str | None = None,
                     dtype: Any = jnp.float32) -> FeatureFns:
    """The network split at a feature map, for Grad-CAM.

    Args:
      graph: from `read_onnx`, or the .onnx file.
      layer: the tensor (a node output name) to split at; default
        `default_feature_layer`.
      dtype: compute dtype, as for `onnx_embed_fn`.

    Returns:
      `FeatureFns`: ``features_fn(params, images) -> [B, h, w, C]`` (NHWC)
      and ``head_fn(params, features) -> [B, D]``, params those of
      `read_onnx`/`load_onnx`.

    Raises:
      OnnxError: `layer` names no tensor, is not 4-D, or does not split
        the network (a branch skips over it).
    """
    if not isinstance(graph, OnnxGraph):
        graph, _ = read_onnx(graph)
    layer = default_feature_layer(graph) if layer is None else layer
    cut = _produced_by(graph, layer)
    shape = graph.shapes.get(layer)
    if shape is None or len(shape) != 4:
        raise OnnxError(f"{graph.path}: layer {layer!r} has shape {shape}; a 4-D "
                        "feature map is needed")
    _check_split(graph, cut, layer)
    dtype = jnp.dtype(dtype)

    def features_fn(params: PyTree, images: jax.Array) -> jax.Array:
        value = _run_until(graph, params, images, dtype, layer)
        if isinstance(value, ChannelsLast):
            return value.array
        return jnp.transpose(jnp.asarray(value), (0, 2, 3, 1))

    def head_fn(params: PyTree, features: jax.Array) -> jax.Array:
        def run() -> jax.Array:
            env = {layer: ChannelsLast(features)}
            with jax.numpy_dtype_promotion("standard"):
                env = _evaluate(graph, params, env, start=cut + 1, stop=graph.output_name)
            return jnp.asarray(logical(env[graph.output_name]), jnp.float32)
        return _with_path(graph, run)

    return FeatureFns(features_fn, head_fn)


def onnx_layer_groups(graph: OnnxGraph, variables: PyTree, *, count: int = 6
                      ) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The sanity check's groups: the parameters in `count` runs of the graph, output first.

    Each parameter belongs to the run of the node that first uses it; runs
    hold equal numbers of parameter-using nodes.

    Args:
      graph: from `read_onnx`.
      variables: its params.
      count: the number of groups.

    Returns:
      ((name, top-level parameter names), ...), top first; a name reads
      "nodes 120-179" (indices into the graph's nodes).
    """
    names = set(variables["params"])
    users = []
    seen: set[str] = set()
    for index, node in enumerate(graph.nodes):
        fresh = [n for n in node.inputs if n in names and n not in seen]
        if fresh:
            users.append((index, fresh))
            seen.update(fresh)
    if not users:
        return ()
    runs = np.array_split(np.arange(len(users)), min(count, len(users)))
    groups = []
    for run in runs:
        first, last = users[run[0]][0], users[run[-1]][0]
        members = tuple(n for i in run for n in users[i][1])
        groups.append((f"nodes {first}-{last}", members))
    return tuple(reversed(groups))

