"""The ONNX operators that face-recognition networks use, as JAX functions.

`srise_jax.models.onnx_import` walks a graph's nodes in order and calls
`OPS[node.op_type]` on each; everything here runs at trace time, so `jit`
compiles the whole graph into one XLA program.

Three kinds of value flow between the nodes:

- `numpy.ndarray`: a value known at trace time (a `Constant`, an integer
  initializer, a `Shape` and what is computed from it). Operators on such
  values compute with NumPy, which is how `Shape -> Gather -> Unsqueeze ->
  Concat -> Reshape` chains fold to constants.
- `jax.Array`: a traced tensor in ONNX's own layout.
- `ChannelsLast`: a 4-D tensor ONNX sees as NCHW, held as NHWC. Convolutions
  and pooling are several times faster channels-last on CPU, so the graph
  input enters as `ChannelsLast` and stays so through every operator that
  knows the layout (convolutions, pooling, normalisation, activations,
  element-wise arithmetic, padding, channel concatenation); any other
  operator first gets the NCHW tensor (`logical`). The layout is therefore
  invisible to the graph's semantics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# NCHW axis -> its position in NHWC storage.
_NCHW_TO_NHWC_AXIS = (0, 3, 1, 2)


class ChannelsLast(NamedTuple):
    """A tensor ONNX sees as [N, C, H, W], stored as `array` [N, H, W, C]."""

    array: jax.Array


class OnnxError(ValueError):
    """An ONNX file or graph the importer cannot read or run (one line naming the file or node)."""


class Node(NamedTuple):
    """One graph node, parsed: what an operator function receives.

    Attributes:
      name: the node's name, or "#index" when the graph gives none.
      op_type: the ONNX operator.
      inputs: input tensor names ("" for an omitted optional input).
      outputs: output tensor names.
      attrs: attribute name -> Python value (ints, floats, str, lists, or a
        NumPy array for tensor attributes).
      opset: the model's opset of the default domain.
    """

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    opset: int

    def error(self, message: str) -> OnnxError:
        """An `OnnxError` that names this node and its operator."""
        return OnnxError(f"node {self.name!r} ({self.op_type}): {message}")

    def check_attributes(self) -> None:
        """Refuse an attribute the operator's implementation does not read.

        Raises:
          OnnxError: naming the node, the attribute and the supported ones.
        """
        known = ATTRIBUTES.get(self.op_type, frozenset())
        unknown = sorted(set(self.attrs) - known)
        if unknown:
            raise self.error(f"attribute {unknown[0]!r} is not supported (supported: "
                             f"{', '.join(sorted(known)) or 'none'})")
        if self.op_type == "BatchNormalization" and self.attrs.get("spatial", 1) != 1:
            raise self.error("spatial=0 is not supported")


Value = Any  # np.ndarray | jax.Array | ChannelsLast | None (an omitted optional input)
OpFn = Callable[[Node, list[Value]], list[Value]]


# ----------------------------------------------------------------------------
# Layout and kind helpers
# ----------------------------------------------------------------------------

def logical(value: Value) -> Value:
    """The value in ONNX's layout.

    Args:
      value: a value flowing through the graph.

    Returns:
      NCHW for a `ChannelsLast`, else `value` itself.
    """
    if isinstance(value, ChannelsLast):
        return jnp.transpose(value.array, (0, 3, 1, 2))
    return value


def _channels_last(value: Value) -> jax.Array | np.ndarray:
    """A value broadcastable against a `ChannelsLast`, in NHWC storage order.

    An operand of rank <= 4 is right-aligned to NCHW as broadcasting does
    (a [C, 1, 1] slope becomes [1, C, 1, 1]) and then transposed.
    """
    if isinstance(value, ChannelsLast):
        return value.array
    shape = (1,) * (4 - np.ndim(value)) + tuple(np.shape(value))
    if isinstance(value, np.ndarray):
        return np.transpose(value.reshape(shape), (0, 2, 3, 1))
    return jnp.transpose(jnp.reshape(value, shape), (0, 2, 3, 1))


def _static(node: Node, value: Value, what: str) -> np.ndarray:
    """A value that must be known at trace time (a shape, axes, pads)."""
    if not isinstance(value, np.ndarray):
        raise node.error(f"{what} must be a constant (computed from constants and shapes "
                         f"only); a {what} that depends on the data is a dynamic shape, "
                         "which is not supported")
    return value


def _is_static(values: Sequence[Value]) -> bool:
    return all(isinstance(v, np.ndarray) or v is None for v in values)


def _match_float(values: list[Value]) -> list[Value]:
    """Cast the float operands of one operator to the narrowest float dtype among the traced ones.

    Activations carry the compute dtype (bfloat16, say) and weights stay
    float32 in `params`: without this, adding a float32 bias (or a NumPy
    constant, which is not weakly typed) would promote the rest of the
    network to float32.
    """
    traced = [v for v in values if not isinstance(v, np.ndarray) and v is not None]
    floats = {jnp.dtype(_dtype(v)) for v in traced if jnp.issubdtype(_dtype(v), jnp.floating)}
    if not floats:
        return values
    dtype = min(floats, key=lambda d: d.itemsize)
    out = []
    for v in values:
        if v is None or not jnp.issubdtype(_dtype(v), jnp.floating) or _dtype(v) == dtype:
            out.append(v)
        elif isinstance(v, ChannelsLast):
            out.append(ChannelsLast(v.array.astype(dtype)))
        else:
            out.append(v.astype(dtype))
    return out


def _dtype(value: Value) -> Any:
    return (value.array if isinstance(value, ChannelsLast) else value).dtype


def _rank(value: Value) -> int:
    """The value's rank as ONNX sees it."""
    return 4 if isinstance(value, ChannelsLast) else np.ndim(value)


def _attr(node: Node, name: str, default: Any = None) -> Any:
    return node.attrs.get(name, default)


def _axis(node: Node, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise node.error(f"axis {axis} is out of range for a rank-{rank} input")
    return axis % rank


def _optional_input(inputs: list[Value], index: int) -> Value:
    return inputs[index] if index < len(inputs) else None


# ----------------------------------------------------------------------------
# Element-wise operators
# ----------------------------------------------------------------------------

def _unary(fn: Callable[[Any], Any], np_fn: Callable[[Any], Any] | None = None) -> OpFn:
    """An element-wise operator that keeps the layout."""
    def op(node: Node, inputs: list[Value]) -> list[Value]:
        x = inputs[0]
        if isinstance(x, np.ndarray):
            return [np.asarray((np_fn or fn)(x), dtype=x.dtype)]
        if isinstance(x, ChannelsLast):
            return [ChannelsLast(fn(x.array))]
        return [fn(x)]
    return op


def _binary(fn: Callable[[Any, Any], Any], np_fn: Callable[[Any, Any], Any]) -> OpFn:
    """A broadcasting element-wise operator (NumPy on constants, channels-last if any input is)."""
    def op(node: Node, inputs: list[Value]) -> list[Value]:
        a, b = inputs
        if _is_static([a, b]):
            return [np.asarray(np_fn(a, b))]
        a, b = _match_float([a, b])
        if isinstance(a, ChannelsLast) or isinstance(b, ChannelsLast):
            if max(_rank(a), _rank(b)) <= 4:
                return [ChannelsLast(fn(_channels_last(a), _channels_last(b)))]
            a, b = logical(a), logical(b)
        return [fn(a, b)]
    return op


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ONNX's Div: integer division truncates toward zero."""
    if np.issubdtype(np.result_type(a, b), np.integer):
        return np.trunc(np.asarray(a) / np.asarray(b)).astype(np.result_type(a, b))
    return np.asarray(a) / np.asarray(b)


def _leaky_relu(node: Node, inputs: list[Value]) -> list[Value]:
    alpha = float(_attr(node, "alpha", 0.01))
    return _unary(lambda x: jnp.where(x >= 0, x, alpha * x))(node, inputs)


def _prelu(node: Node, inputs: list[Value]) -> list[Value]:
    x, slope = _match_float(inputs[:2])
    if isinstance(x, ChannelsLast):
        if np.ndim(slope) > 4:
            raise node.error(f"slope of rank {np.ndim(slope)} on a 4-D input")
        slope = _channels_last(slope)
        return [ChannelsLast(jnp.where(x.array >= 0, x.array, slope * x.array))]
    x = jnp.asarray(x)
    return [jnp.where(x >= 0, x, slope * x)]


def _clip(node: Node, inputs: list[Value]) -> list[Value]:
    if node.opset < 11:
        low, high = _attr(node, "min"), _attr(node, "max")
    else:
        low, high = _optional_input(inputs, 1), _optional_input(inputs, 2)
    # Bounds are scalars: attributes, or (opset 11 on) 0-d or 1-element inputs.
    low, high = (None if v is None else jnp.reshape(v, ()) if not isinstance(v, float) else v
                 for v in (low, high))

    def fn(x: Any) -> Any:
        if low is not None:
            x = jnp.maximum(x, jnp.asarray(low, x.dtype))
        if high is not None:
            x = jnp.minimum(x, jnp.asarray(high, x.dtype))
        return x

    def np_fn(x: np.ndarray) -> np.ndarray:
        return np.clip(x, -np.inf if low is None else np.asarray(low),
                       np.inf if high is None else np.asarray(high))
    return _unary(fn, np_fn)(node, inputs[:1])


def _cast(node: Node, inputs: list[Value]) -> list[Value]:
    from_onnx = _attr(node, "to")
    dtype = ONNX_DTYPES.get(from_onnx)
    if dtype is None:
        raise node.error(f"cast to ONNX type {from_onnx} is not supported")
    x = inputs[0]
    if isinstance(x, np.ndarray):
        return [x.astype(dtype)]
    # A cast between float types would undo the compute dtype (bfloat16);
    # the model's precision is chosen by `load_onnx(dtype=)` instead.
    if np.issubdtype(dtype, np.floating):
        return [x]
    # int64 is int32 in JAX unless x64 is on: cast to what JAX will hold.
    target = jax.dtypes.canonicalize_dtype(dtype)
    return _unary(lambda v: v.astype(target))(node, [x])


def _dropout(node: Node, inputs: list[Value]) -> list[Value]:
    # Inference: the identity; the optional mask output is all True.
    if node.opset >= 12 and len(inputs) > 2 and inputs[2] is not None:
        training = _static(node, inputs[2], "training_mode")
        if bool(training):
            raise node.error("training_mode=True is not supported (inference only)")
    x = inputs[0]
    outputs = [x]
    if len(node.outputs) > 1:
        outputs.append(np.ones(logical_shape(x), dtype=bool))
    return outputs


# ----------------------------------------------------------------------------
# Linear algebra
# ----------------------------------------------------------------------------

def _head_float32(*values: Value) -> list[Any]:
    """Matrix products (the embedding head) in float32, as the library's models keep them."""
    out = []
    for v in values:
        v = logical(v)
        if v is not None and jnp.issubdtype(jnp.dtype(v.dtype), jnp.floating):
            v = jnp.asarray(v, jnp.float32)
        out.append(v)
    return out


def _matmul(node: Node, inputs: list[Value]) -> list[Value]:
    if _is_static(inputs):
        return [np.matmul(inputs[0], inputs[1])]
    a, b = _head_float32(*inputs[:2])
    return [jnp.matmul(a, b)]


def _gemm(node: Node, inputs: list[Value]) -> list[Value]:
    a, b = _head_float32(*inputs[:2])
    c = _optional_input(inputs, 2)
    if a.ndim != 2 or b.ndim != 2:
        raise node.error(f"Gemm takes 2-D inputs, got shapes {a.shape} and {b.shape}")
    if _attr(node, "transA", 0):
        a = a.T
    if _attr(node, "transB", 0):
        b = b.T
    out = float(_attr(node, "alpha", 1.0)) * jnp.matmul(a, b)
    if c is not None:
        (c,) = _head_float32(c)
        out = out + float(_attr(node, "beta", 1.0)) * c
    return [out]


# ----------------------------------------------------------------------------
# Convolution, normalisation, pooling
# ----------------------------------------------------------------------------

def _spatial_padding(node: Node, in_sizes: Sequence[int], kernel: Sequence[int],
                     strides: Sequence[int], dilations: Sequence[int]) -> list[tuple[int, int]]:
    """(before, after) padding per spatial axis from `pads` or `auto_pad`."""
    auto_pad = _attr(node, "auto_pad", "NOTSET")
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    rank = len(in_sizes)
    if auto_pad == "NOTSET":
        pads = list(_attr(node, "pads", [0] * (2 * rank)))
        return [(pads[i], pads[i + rank]) for i in range(rank)]
    if auto_pad == "VALID":
        return [(0, 0)] * rank
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            out.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
        return out
    raise node.error(f"auto_pad={auto_pad!r} is not supported")


def _conv(node: Node, inputs: list[Value]) -> list[Value]:
    x, w = inputs[0], inputs[1]
    bias = _optional_input(inputs, 2)
    if not isinstance(x, ChannelsLast):
        if np.ndim(x) != 4:
            raise node.error(f"only 2-D convolutions are supported (a 4-D input), got rank "
                             f"{np.ndim(x)}")
        x = ChannelsLast(jnp.transpose(jnp.asarray(x), (0, 2, 3, 1)))
    x, bias = _match_float([x, bias])
    if isinstance(w, ConvKernel):
        kernel = w.hwio
    else:  # a kernel that is not a plain initializer: OIHW, transposed per call
        kernel = jnp.transpose(jnp.asarray(w), (2, 3, 1, 0))
    kernel = kernel.astype(x.array.dtype)
    kernel_shape = tuple(_attr(node, "kernel_shape", kernel.shape[:2]))
    if len(kernel_shape) != 2 or tuple(kernel_shape) != tuple(kernel.shape[:2]):
        raise node.error(f"kernel_shape {kernel_shape} does not match the weights "
                         f"{tuple(kernel.shape[:2])}")
    strides = tuple(_attr(node, "strides", (1, 1)))
    dilations = tuple(_attr(node, "dilations", (1, 1)))
    group = int(_attr(node, "group", 1))
    padding = _spatial_padding(node, x.array.shape[1:3], kernel_shape, strides, dilations)
    out = jax.lax.conv_general_dilated(
        x.array, kernel, window_strides=strides, padding=padding, rhs_dilation=dilations,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=group)
    if bias is not None:
        out = out + jnp.asarray(bias).astype(out.dtype)
    return [ChannelsLast(out)]


class ConvKernel(NamedTuple):
    """A convolution's weights converted once at load time to HWIO (see `onnx_import`)."""

    hwio: jax.Array


def _batch_norm(node: Node, inputs: list[Value]) -> list[Value]:
    if _attr(node, "training_mode", 0):
        raise node.error("training_mode=1 is not supported (inference only)")
    if len(node.outputs) > 1 and any(node.outputs[1:]):
        raise node.error("the running-statistics outputs (training mode) are not supported")
    x = inputs[0]
    # The per-channel affine map in float32, then in the activations' dtype.
    scale, bias, mean, var = (jnp.asarray(v, jnp.float32) for v in inputs[1:5])
    epsilon = float(_attr(node, "epsilon", 1e-5))
    factor = scale * jax.lax.rsqrt(var + epsilon)
    shift = bias - mean * factor
    factor, shift = factor.astype(_dtype(x)), shift.astype(_dtype(x))
    if isinstance(x, ChannelsLast):
        return [ChannelsLast(x.array * factor + shift)]
    x = jnp.asarray(x)
    shape = (-1,) + (1,) * (x.ndim - 2)
    return [x * factor.reshape(shape) + shift.reshape(shape)]


def _pool_window(node: Node, x: jax.Array) -> tuple[tuple[int, int], tuple[int, int],
                                                     list[tuple[int, int]], list[int]]:
    """Kernel, strides, padding (with ceil_mode's extra) and that extra, per spatial axis."""
    kernel = tuple(_attr(node, "kernel_shape"))
    if len(kernel) != 2:
        raise node.error(f"only 2-D pooling is supported, kernel_shape={kernel}")
    strides = tuple(_attr(node, "strides", (1, 1)))
    dilations = tuple(_attr(node, "dilations", (1, 1)))
    if dilations != (1, 1):
        raise node.error(f"dilations={dilations} is not supported")
    padding = _spatial_padding(node, x.shape[1:3], kernel, strides, dilations)
    extra = []
    for i, size in enumerate(x.shape[1:3]):
        padded = size + padding[i][0] + padding[i][1]
        if _attr(node, "ceil_mode", 0):
            out = math.ceil((padded - kernel[i]) / strides[i]) + 1
            # A window may not start in the end padding (PyTorch's and ONNX Runtime's rule).
            if (out - 1) * strides[i] >= size + padding[i][0]:
                out -= 1
        else:
            out = (padded - kernel[i]) // strides[i] + 1
        extra.append(max((out - 1) * strides[i] + kernel[i] - padded, 0))
    full = [(before, after + e) for (before, after), e in zip(padding, extra)]
    return kernel, strides, full, extra


def _max_pool(node: Node, inputs: list[Value]) -> list[Value]:
    if len(node.outputs) > 1 and node.outputs[1]:
        raise node.error("the Indices output is not supported")
    x = inputs[0]
    x = x.array if isinstance(x, ChannelsLast) else jnp.transpose(jnp.asarray(x), (0, 2, 3, 1))
    kernel, strides, padding, _ = _pool_window(node, x)
    out = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, *kernel, 1), (1, *strides, 1),
                                [(0, 0), *padding, (0, 0)])
    return [ChannelsLast(out)]


def _average_pool(node: Node, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    x = x.array if isinstance(x, ChannelsLast) else jnp.transpose(jnp.asarray(x), (0, 2, 3, 1))
    kernel, strides, padding, extra = _pool_window(node, x)
    window, step = (1, *kernel, 1), (1, *strides, 1)
    full = [(0, 0), *padding, (0, 0)]
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, step, full)
    # The divisor: the window's pixels inside the image, plus the explicit
    # padding when count_include_pad; ceil_mode's extra is never counted.
    counted = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
    if _attr(node, "count_include_pad", 0):
        counted = jnp.pad(counted, [(0, 0), *[(b, a - e) for (b, a), e in zip(padding, extra)],
                                    (0, 0)], constant_values=1)
        inner = [(0, 0), *[(0, e) for e in extra], (0, 0)]
    else:
        inner = full
    count = jax.lax.reduce_window(counted, 0.0, jax.lax.add, window, step, inner)
    return [ChannelsLast(total / count)]


def _global_average_pool(node: Node, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    if isinstance(x, ChannelsLast):
        return [ChannelsLast(jnp.mean(x.array, axis=(1, 2), keepdims=True))]
    x = jnp.asarray(x)
    return [jnp.mean(x, axis=tuple(range(2, x.ndim)), keepdims=True)]


# ----------------------------------------------------------------------------
# Shapes and data movement
# ----------------------------------------------------------------------------

def _shape(node: Node, inputs: list[Value]) -> list[Value]:
    shape = np.array(logical_shape(inputs[0]), dtype=np.int64)
    start, end = _attr(node, "start", 0), _attr(node, "end", None)
    return [shape[start:end]]


def logical_shape(value: Value) -> tuple[int, ...]:
    """The value's shape as ONNX sees it.

    Args:
      value: a value flowing through the graph.

    Returns:
      Its shape, NCHW for a `ChannelsLast`.
    """
    if isinstance(value, ChannelsLast):
        n, h, w, c = value.array.shape
        return (n, c, h, w)
    return tuple(np.shape(value))


def _reshape(node: Node, inputs: list[Value]) -> list[Value]:
    x = logical(inputs[0])
    target = [int(d) for d in _static(node, inputs[1], "the target shape")]
    if not _attr(node, "allowzero", 0):
        target = [np.shape(x)[i] if d == 0 else d for i, d in enumerate(target)]
    if isinstance(x, np.ndarray):
        return [x.reshape(target)]
    return [jnp.reshape(x, target)]


def _flatten(node: Node, inputs: list[Value]) -> list[Value]:
    x = logical(inputs[0])
    shape = np.shape(x)
    axis = _attr(node, "axis", 1)
    axis = axis % len(shape) if axis < 0 else axis
    target = (int(np.prod(shape[:axis])), int(np.prod(shape[axis:])))
    return [x.reshape(target) if isinstance(x, np.ndarray) else jnp.reshape(x, target)]


def _transpose(node: Node, inputs: list[Value]) -> list[Value]:
    x = logical(inputs[0])
    perm = _attr(node, "perm", None)
    perm = tuple(reversed(range(np.ndim(x)))) if perm is None else tuple(perm)
    return [np.transpose(x, perm) if isinstance(x, np.ndarray) else jnp.transpose(x, perm)]


def _concat(node: Node, inputs: list[Value]) -> list[Value]:
    values = [v for v in inputs if v is not None]
    if _is_static(values):
        return [np.concatenate(values, axis=_attr(node, "axis"))]
    values = _match_float(values)
    if all(isinstance(v, ChannelsLast) for v in values):
        axis = _NCHW_TO_NHWC_AXIS[_axis(node, _attr(node, "axis"), 4)]
        return [ChannelsLast(jnp.concatenate([v.array for v in values], axis=axis))]
    values = [logical(v) for v in values]
    rank = np.ndim(values[0])
    return [jnp.concatenate(values, axis=_axis(node, _attr(node, "axis"), rank))]


def _axes(node: Node, inputs: list[Value], *, attribute_until: int) -> list[int] | None:
    """The `axes` of Unsqueeze/Squeeze/ReduceMean: an attribute before opset `attribute_until`,
    an optional input from it on."""
    if node.opset < attribute_until:
        axes = _attr(node, "axes")
        return None if axes is None else [int(a) for a in axes]
    given = _optional_input(inputs, 1)
    return None if given is None else [int(a) for a in _static(node, given, "axes")]


def _unsqueeze(node: Node, inputs: list[Value]) -> list[Value]:
    x = logical(inputs[0])
    axes = _axes(node, inputs, attribute_until=13)
    if axes is None:
        raise node.error("Unsqueeze needs axes")
    rank = np.ndim(x) + len(axes)
    shape = list(np.shape(x))
    for axis in sorted(_axis(node, a, rank) for a in axes):
        shape.insert(axis, 1)
    return [x.reshape(shape) if isinstance(x, np.ndarray) else jnp.reshape(x, shape)]


def _squeeze(node: Node, inputs: list[Value]) -> list[Value]:
    x = logical(inputs[0])
    axes = _axes(node, inputs, attribute_until=13)
    shape = np.shape(x)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    axes = {_axis(node, a, len(shape)) for a in axes}
    target = [d for i, d in enumerate(shape) if i not in axes]
    return [x.reshape(target) if isinstance(x, np.ndarray) else jnp.reshape(x, target)]


def _gather(node: Node, inputs: list[Value]) -> list[Value]:
    data, indices = logical(inputs[0]), inputs[1]
    axis = _axis(node, _attr(node, "axis", 0), max(np.ndim(data), 1))
    if isinstance(data, np.ndarray) and isinstance(indices, np.ndarray):
        return [np.take(data, indices, axis=axis)]
    return [jnp.take(data, indices, axis=axis)]


def _pad(node: Node, inputs: list[Value]) -> list[Value]:
    mode = _attr(node, "mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("constant", "reflect", "edge"):
        raise node.error(f"mode={mode!r} is not supported (constant, reflect, edge)")
    x = inputs[0]
    rank = 4 if isinstance(x, ChannelsLast) else np.ndim(x)
    if node.opset < 11:
        pads = [int(p) for p in _attr(node, "pads")]
        value = float(_attr(node, "value", 0.0))
        axes = list(range(rank))
    else:
        pads = [int(p) for p in _static(node, inputs[1], "pads")]
        given = _optional_input(inputs, 2)
        value = 0.0 if given is None else float(np.asarray(_static(node, given, "constant_value")))
        axes_input = _optional_input(inputs, 3)
        axes = (list(range(rank)) if axes_input is None
                else [_axis(node, int(a), rank) for a in _static(node, axes_input, "axes")])
    if any(p < 0 for p in pads):
        raise node.error(f"negative pads {pads} are not supported")
    widths = [(0, 0)] * rank
    for i, axis in enumerate(axes):
        widths[axis] = (pads[i], pads[i + len(axes)])
    kwargs = {"constant_values": value} if mode == "constant" else {}
    if isinstance(x, ChannelsLast):
        stored = [widths[a] for a in (0, 2, 3, 1)]
        return [ChannelsLast(jnp.pad(x.array, stored, mode=mode, **kwargs))]
    if isinstance(x, np.ndarray):
        return [np.pad(x, widths, mode=mode, **kwargs)]
    return [jnp.pad(x, widths, mode=mode, **kwargs)]


def _reduce_mean(node: Node, inputs: list[Value]) -> list[Value]:
    x = inputs[0]
    axes = _axes(node, inputs, attribute_until=18)
    keepdims = bool(_attr(node, "keepdims", 1))
    rank = 4 if isinstance(x, ChannelsLast) else np.ndim(x)
    if axes is None:
        if node.opset >= 18 and _attr(node, "noop_with_empty_axes", 0):
            return [x]
        axes = list(range(rank))
    axes = tuple(sorted({_axis(node, a, rank) for a in axes}))
    if isinstance(x, ChannelsLast) and keepdims:
        stored = tuple(_NCHW_TO_NHWC_AXIS[a] for a in axes)
        return [ChannelsLast(jnp.mean(x.array, axis=stored, keepdims=True))]
    x = logical(x)
    if isinstance(x, np.ndarray):
        return [np.mean(x, axis=axes, keepdims=keepdims).astype(x.dtype)]
    return [jnp.mean(x, axis=axes, keepdims=keepdims)]


def _constant_of_shape(node: Node, inputs: list[Value]) -> list[Value]:
    shape = [int(d) for d in _static(node, inputs[0], "the shape")]
    value = node.attrs.get("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    return [np.full(shape, fill[0], dtype=fill.dtype)]


def _slice(node: Node, inputs: list[Value]) -> list[Value]:
    x = logical(inputs[0])
    rank = np.ndim(x)
    if node.opset < 10:
        starts, ends = _attr(node, "starts"), _attr(node, "ends")
        axes, steps = _attr(node, "axes"), None
    else:
        starts = _static(node, inputs[1], "starts")
        ends = _static(node, inputs[2], "ends")
        axes = _optional_input(inputs, 3)
        steps = _optional_input(inputs, 4)
        axes = None if axes is None else _static(node, axes, "axes")
        steps = None if steps is None else _static(node, steps, "steps")
    axes = range(len(starts)) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * rank
    for start, end, axis, step in zip(starts, ends, axes, steps):
        # ONNX clamps out-of-range bounds (INT64_MAX means "to the end"), as slice() does.
        size = np.shape(x)[_axis(node, int(axis), rank)]
        clamp = lambda v: int(max(min(int(v), size), -size - 1))  # noqa: E731
        index[_axis(node, int(axis), rank)] = slice(clamp(start), clamp(end), int(step))
    return [x[tuple(index)]]


def _identity(node: Node, inputs: list[Value]) -> list[Value]:
    return [inputs[0]]


def _constant(node: Node, inputs: list[Value]) -> list[Value]:
    for name, dtype in (("value", None), ("value_float", np.float32),
                        ("value_floats", np.float32), ("value_int", np.int64),
                        ("value_ints", np.int64)):
        if name in node.attrs:
            return [np.asarray(node.attrs[name], dtype=dtype)]
    raise node.error(f"only the attributes value, value_float(s), value_int(s) are supported, "
                     f"got {sorted(node.attrs)}")


# ONNX TensorProto data types -> NumPy (what Cast and initializers use).
ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64,
               9: np.bool_, 10: np.float16, 11: np.float64}

# The attributes each operator understands; any other one is refused when
# the graph is read (an attribute silently ignored could change the result).
_POOL = {"auto_pad", "ceil_mode", "kernel_shape", "pads", "strides"}
ATTRIBUTES: dict[str, frozenset[str]] = {op: frozenset(names) for op, names in {
    "Conv": {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides"},
    "BatchNormalization": {"epsilon", "momentum", "spatial", "training_mode"},
    "LeakyRelu": {"alpha"},
    "Clip": {"min", "max"},
    "Gemm": {"alpha", "beta", "transA", "transB"},
    "Flatten": {"axis"},
    "Reshape": {"allowzero"},
    "Transpose": {"perm"},
    "Concat": {"axis"},
    "Pad": {"mode", "pads", "value"},
    "MaxPool": _POOL | {"dilations", "storage_order"},
    "AveragePool": _POOL | {"count_include_pad", "dilations"},
    "ReduceMean": {"axes", "keepdims", "noop_with_empty_axes"},
    "Constant": {"value", "value_float", "value_floats", "value_int", "value_ints"},
    "Shape": {"start", "end"},
    "Gather": {"axis"},
    "Unsqueeze": {"axes"},
    "Squeeze": {"axes"},
    "Dropout": {"ratio", "seed", "is_test"},
    "Cast": {"to", "saturate"},
    "ConstantOfShape": {"value"},
    "Slice": {"starts", "ends", "axes"},
}.items()}

OPS: dict[str, OpFn] = {
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "PRelu": _prelu,
    "Relu": _unary(lambda x: jnp.maximum(x, 0), lambda x: np.maximum(x, 0)),
    "LeakyRelu": _leaky_relu,
    "Sigmoid": _unary(jax.nn.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    "Clip": _clip,
    "Add": _binary(jnp.add, np.add),
    "Sub": _binary(jnp.subtract, np.subtract),
    "Mul": _binary(jnp.multiply, np.multiply),
    "Div": _binary(jnp.divide, _int_div),
    "MatMul": _matmul,
    "Gemm": _gemm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Concat": _concat,
    "Pad": _pad,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": _global_average_pool,
    "ReduceMean": _reduce_mean,
    "Identity": _identity,
    "ConstantOfShape": _constant_of_shape,
    "Slice": _slice,
    "Constant": _constant,
    "Shape": _shape,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Dropout": _dropout,
    "Cast": _cast,
}
