"""dlib's face-recognition ResNet as its ``.dat`` file describes it: the architecture and a NumPy reader.

``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp`` is written
here once (`LEVELS`, `STEM_FILTERS`, `EMBEDDING_DIM`, the input layer's
`INPUT_SIZE`, `MEAN_RGB` and `INPUT_SCALE`); `srise_jax.models.dlib_resnet`
builds the Flax network from the same constants, and `dat_to_variables` reads
``dlib_face_recognition_resnet_model_v1.dat`` into its variables, with NumPy
only (the dlib package is not needed).

The format, from dlib's ``serialize.h``, ``float_details.h``, ``dnn/core.h``,
``dnn/layers.h``, ``dnn/input.h``, ``dnn/loss.h`` and ``dnn/tensor.h``:

- integers: a control byte (bit 7: negative; low 4 bits: byte count), then the
  magnitude's bytes, little endian;
- floats and doubles: ``float_details``, an int64 mantissa and an int16
  exponent (each an integer as above); the value is ``mantissa * 2**exponent``;
- strings: a length (integer), then the bytes; bools: the characters '0'/'1';
- tensors: version 1 (portable floats) or 2 (raw little-endian float32), then
  ``num_samples, k, nr, nc`` and the values in NCHW order;
- a network is nested from the loss layer down: every wrapper writes its
  version, then its subnetwork, then its own layer details. So the file holds
  every wrapper's version from the output down to the input, the input layer,
  then each layer's details from the input up to the output.

A .dat other than the one ``face_recognition_models`` 0.3.0 ships (see
``OFFICIAL_SHA256``) is converted all the same, with a warning: your own
weights are legitimate, but should not pass for dlib's.

References:
  https://github.com/davisking/dlib/blob/master/examples/dnn_face_recognition_ex.cpp
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from srise_jax.models.conversion import ConversionError, to_flax_layout

# ------------------------------------------------------------ the architecture
# input_rgb_image_sized<150>: 150x150 RGB chips; per-channel means subtracted
# on 0..255 values, then divided by 256.
INPUT_SIZE = 150
MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SCALE = 256.0
# The residual stages of anet_type in forward order (alevel4 .. alevel0):
# (filters, blocks, first block halves the resolution).
LEVELS: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False),
    (64, 4, True),
    (128, 3, True),
    (256, 3, True),
    (256, 1, True),
)
STEM_FILTERS = 32
EMBEDDING_DIM = 128

# ------------------------------------------------------------------ the file
# SHA-256 of dlib_face_recognition_resnet_model_v1.dat (22,466,066 bytes) as
# shipped in the face_recognition_models 0.3.0 wheel, whose RECORD lists the
# same digest (base64 VVM7KKlYAKVRulRrpi_mliXH6VpwYcM4rf_q0IcZ2jA).
OFFICIAL_SHA256 = "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30"
OFFICIAL_SOURCE = "face_recognition_models 0.3.0"

# float_details' special exponents (dlib/float_details.h).
_EXP_INF, _EXP_NINF, _EXP_NAN = 32000, 32001, 32002
# ``layer_mode`` of affine_ (dlib/dnn/layers.h): per-channel, not per-element.
_CONV_MODE = 0
# Wrapper versions this reader knows (dlib/dnn/core.h).
_ADD_LAYER_VERSIONS = (1, 2)
_INPUT_ADD_LAYER_VERSIONS = (2, 3)


@dataclass
class Layer:
    """One layer's details as stored: its type string and what it holds.

    Attributes:
      kind: dlib's serialization tag, e.g. ``"con_4"``, ``"affine_"``, ``"relu_"``.
      offset: byte offset of the details in the file.
      arrays: named float32 arrays (``"params"`` in dlib's flat layout).
      meta: named integers and floats (filter sizes, strides, padding, ...).
    """

    kind: str
    offset: int
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


class DatReader:
    """Sequential reader over dlib's serialization; every failure names the byte offset.

    Each method reads one value at `pos` and advances past it; ``what`` names
    the value in error messages.

    Attributes:
      data: the file's bytes.
      name: how error messages name the file (its path).
      pos: byte offset of the next value; set it to read from elsewhere.
    """

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        self.pos = 0

    def fail(self, what: str, at: int | None = None) -> ConversionError:
        """The error to raise for a problem with the value at byte ``at`` (default `pos`)."""
        at = self.pos if at is None else at
        return ConversionError(f"{self.name}: {what} at byte offset {at}")

    def take(self, n: int, what: str) -> bytes:
        """The next ``n`` raw bytes; a truncated file is a `ConversionError`."""
        if self.pos + n > len(self.data):
            raise self.fail(f"truncated file: {what} needs {n} bytes, {len(self.data) - self.pos} left")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int_(self, what: str, *, max_bytes: int = 8) -> int:
        """An integer (dlib's ``pack_int``) of at most ``max_bytes`` magnitude bytes."""
        start = self.pos
        control = self.take(1, what)[0]
        size = control & 0x0F
        if control & 0x70 or size > max_bytes:
            raise self.fail(f"bad integer control byte 0x{control:02x} in {what}", start)
        value = int.from_bytes(self.take(size, what), "little")
        return -value if control & 0x80 else value

    def float_(self, what: str) -> float:
        """A float or double (dlib's portable ``float_details``), infinities and NaN included."""
        start = self.pos
        if self.data[start : start + 1] and self.data[start] & 0x70:
            raise self.fail(f"{what}: old ASCII float encoding is not supported", start)
        mantissa = self.int_(what)
        exponent = self.int_(what, max_bytes=2)
        if exponent < _EXP_INF:
            return float(np.ldexp(float(mantissa), exponent))
        return {_EXP_INF: np.inf, _EXP_NINF: -np.inf}.get(exponent, np.nan)

    def string(self, what: str) -> str:
        """An ASCII string: its length, then its bytes."""
        length = self.int_(what)
        raw = self.take(length, what)
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not text", self.pos - length) from None

    def bool_(self, what: str) -> bool:
        """A bool, stored as the character '0' or '1'."""
        start = self.pos
        char = self.take(1, what)
        if char not in (b"0", b"1"):
            raise self.fail(f"{what}: expected '0' or '1', found {char!r}", start)
        return char == b"1"

    def version(self, what: str, allowed: Sequence[int]) -> int:
        """A version integer, which must be one of ``allowed``."""
        start = self.pos
        found = self.int_(what)
        if found not in allowed:
            raise self.fail(f"{what}: version {found}, expected one of {list(allowed)}", start)
        return found

    def tensor(self, what: str) -> np.ndarray:
        """A tensor (version 1: portable floats, 2: raw float32) as float32 ``[n, k, nr, nc]``."""
        version = self.version(f"{what} tensor", (1, 2))
        shape = tuple(self.int_(f"{what} tensor shape") for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"{what}: negative tensor shape {shape}")
        count = int(np.prod(shape))
        if version == 2:
            raw = self.take(4 * count, f"{what} tensor data")
            return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape)
        values = [self.float_(f"{what} tensor data") for _ in range(count)]
        return np.asarray(values, dtype=np.float32).reshape(shape)

    def alias_tensor(self, what: str) -> tuple[int, int, int, int]:
        """An ``alias_tensor``: a view's shape, no values."""
        self.version(f"{what} alias_tensor", (1,))
        return tuple(self.int_(f"{what} alias_tensor shape") for _ in range(4))

    def ints(self, what: str, names: Sequence[str]) -> dict[str, int]:
        """Consecutive integers, keyed by ``names``."""
        return {name: self.int_(f"{what} {name}") for name in names}


def _expected_kind(reader: DatReader, expected: str) -> tuple[str, int]:
    """``(layer type, its offset)`` of the next layer, which must be ``expected``."""
    start = reader.pos
    kind = reader.string("layer type")
    if kind != expected:
        raise reader.fail(f"expected a {expected!r} layer, found {kind!r}", start)
    return kind, start


_POOL_FIELDS = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")


def _read_details(reader: DatReader, expected: str) -> Layer:
    """One layer's details (``layer_details`` of an add_layer)."""
    kind, start = _expected_kind(reader, expected)
    layer = Layer(kind, start)
    if kind == "con_4":
        layer.arrays["params"] = reader.tensor("con_")
        layer.meta.update(reader.ints("con_", ("num_filters", "nr", "nc", "stride_y", "stride_x")))
        layer.meta.update(reader.ints("con_", ("padding_y", "padding_x")))
        layer.meta["filters"] = reader.alias_tensor("con_ filters")
        layer.meta["biases"] = reader.alias_tensor("con_ biases")
        for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
            reader.float_(f"con_ {name}")
    elif kind == "affine_":
        layer.arrays["params"] = reader.tensor("affine_")
        layer.meta["gamma"] = reader.alias_tensor("affine_ gamma")
        layer.meta["beta"] = reader.alias_tensor("affine_ beta")
        layer.meta["mode"] = reader.int_("affine_ mode")
    elif kind in ("max_pool_2", "avg_pool_2"):
        layer.meta.update(reader.ints(kind, _POOL_FIELDS))
    elif kind == "fc_2":
        layer.meta.update(reader.ints("fc_", ("num_outputs", "num_inputs")))
        layer.arrays["params"] = reader.tensor("fc_")
        layer.meta["weights"] = reader.alias_tensor("fc_ weights")
        layer.meta["biases"] = reader.alias_tensor("fc_ biases")
        layer.meta["bias_mode"] = reader.int_("fc_ bias mode")
        for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
            reader.float_(f"fc_ {name}")
    elif kind not in ("relu_", "add_prev_"):
        raise reader.fail(f"unsupported layer type {kind!r}", start)
    return layer


def _read_add_layer_tail(reader: DatReader, version: int, *, input_layer: bool) -> None:
    """What add_layer stores after its details: state flags and scratch tensors (ignored)."""
    for name in ("setup_called", "gradient_input_is_stale", "output_disabled"):
        reader.bool_(f"add_layer {name}")
    reader.tensor("add_layer x_grad")
    reader.tensor("add_layer cached_output")
    if input_layer:
        reader.tensor("add_layer grad_final")
        if version >= 3:
            reader.int_("add_layer sample_expansion_factor")
    elif version >= 2:
        reader.tensor("add_layer params_grad")


def network_layers() -> list[str]:
    """The layers of anet_type from the input up, as the .dat lists them (reversed).

    Returns:
      dlib layer type strings ("con_4", "affine_", ...) and the markers
      "tag"/"skip" of the residual branches, input first.
    """
    layers = ["con_4", "affine_", "relu_", "max_pool_2"]
    block = ["con_4", "affine_", "relu_", "con_4", "affine_"]
    for _, blocks, downsample in LEVELS:
        for i in range(blocks):
            if downsample and i == 0:
                layers += ["tag", *block, "tag", "skip", "avg_pool_2", "add_prev_", "relu_"]
            else:
                layers += ["tag", *block, "add_prev_", "relu_"]
    return layers + ["avg_pool_2", "fc_2"]


def read_dat(path: str | Path) -> list[Layer]:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat`` into its computational layers.

    Args:
      path: the .dat file (as shipped, not bz2-compressed).

    Returns:
      The layers with details (no tag/skip layers), input first; the first is
      the input layer (``kind == "input_rgb_image_sized"``, the per-channel
      means in ``meta["mean"]``).

    Raises:
      ConversionError: the file is missing, truncated, or holds another network;
        the message names the byte offset.
    """
    return _parse_dat(_read_bytes(path), str(path))


def _read_bytes(path: str | Path) -> bytes:
    """A file's bytes, or a ConversionError naming it."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ConversionError(f"{path}: cannot read ({err.strerror})") from None


def _parse_dat(data: bytes, name: str) -> list[Layer]:
    """The layers of a .dat's bytes; see `read_dat`."""
    reader = DatReader(data, name)
    reader.version("loss layer", (1,))
    kind, start = _expected_kind(reader, "loss_metric_2")
    loss = Layer(kind, start, meta={"margin": reader.float_("margin"), "distance_threshold": reader.float_("dist")})

    layers = network_layers()
    versions = []
    for i, name in enumerate(reversed(layers)):
        if name in ("tag", "skip"):
            versions.append(reader.version(f"{name} layer", (1,)))
        elif i == len(layers) - 1:
            versions.append(reader.version("input add_layer", _INPUT_ADD_LAYER_VERSIONS))
        else:
            versions.append(reader.version("add_layer", _ADD_LAYER_VERSIONS))
    versions.reverse()

    _, start = _expected_kind(reader, "input_rgb_image_sized")
    mean = tuple(reader.float_(f"input mean {c}") for c in "rgb")
    size = reader.ints("input", ("nr", "nc"))
    parsed = [Layer("input_rgb_image_sized", start, meta={"mean": mean, **size}), loss]
    for i, (name, version) in enumerate(zip(layers, versions)):
        if name in ("tag", "skip"):
            continue
        parsed.append(_read_details(reader, name))
        _read_add_layer_tail(reader, version, input_layer=i == 0)
    if reader.pos != len(data):
        raise reader.fail(f"{len(data) - reader.pos} unexpected bytes after the network")
    # The loss layer sits second so that callers find the input first.
    return [parsed[0], *parsed[2:], parsed[1]]


def _conv(layer: Layer, reader_name: str, *, in_channels: int, filters: int, size: int, stride: int) -> dict:
    meta = layer.meta
    expected = {"num_filters": filters, "nr": size, "nc": size, "stride_y": stride, "stride_x": stride}
    found = {key: meta[key] for key in expected}
    if found != expected:
        raise ConversionError(f"{reader_name}: con_ at byte offset {layer.offset} is {found}, expected {expected}")
    params = layer.arrays["params"].reshape(-1)
    n_weights = filters * in_channels * size * size
    if params.size != n_weights + filters:
        raise ConversionError(
            f"{reader_name}: con_ at byte offset {layer.offset} holds {params.size} values, "
            f"expected {n_weights + filters}"
        )
    kernel = params[:n_weights].reshape(filters, in_channels, size, size)
    return {"kernel": to_flax_layout(kernel), "bias": params[n_weights:].copy()}


def _affine(layer: Layer, reader_name: str, *, channels: int) -> dict:
    params = layer.arrays["params"].reshape(-1)
    if layer.meta["mode"] != _CONV_MODE or params.size != 2 * channels:
        raise ConversionError(
            f"{reader_name}: affine_ at byte offset {layer.offset} is not a per-channel affine of {channels} channels"
        )
    return {"scale": params[:channels].copy(), "bias": params[channels:].copy()}


def dat_to_variables(path: str | Path) -> dict[str, Any]:
    """The Flax variables of ``srise_jax.models.dlib_resnet.DlibResNet`` from dlib's .dat.

    Args:
      path: ``dlib_face_recognition_resnet_model_v1.dat``.

    Returns:
      ``{"params": ...}`` of float32 NumPy arrays: ``conv``/``affine`` (stem),
      ``block0`` .. ``block13`` (each ``conv1``, ``affine1``, ``conv2``,
      ``affine2``) and ``fc`` (``kernel`` of shape (256, 128), no bias).

    Raises:
      ConversionError: unreadable file or another network.

    Warns:
      UserWarning: a well-formed network, but not the file of
        ``OFFICIAL_SOURCE`` (its SHA-256 differs from ``OFFICIAL_SHA256``).
    """
    name = str(path)
    data = _read_bytes(path)
    layers = [layer for layer in _parse_dat(data, name) if layer.kind in ("con_4", "affine_", "fc_2")]
    digest = hashlib.sha256(data).hexdigest()
    if digest != OFFICIAL_SHA256:
        warnings.warn(f"{name}: not the dlib_face_recognition_resnet_model_v1.dat of {OFFICIAL_SOURCE} "
                      f"(SHA-256 {digest[:16]}..., expected {OFFICIAL_SHA256[:16]}...); "
                      "converting it as your own weights", UserWarning, stacklevel=2)
    it = iter(layers)
    params: dict[str, Any] = {
        "conv": _conv(next(it), name, in_channels=3, filters=STEM_FILTERS, size=7, stride=2),
        "affine": _affine(next(it), name, channels=STEM_FILTERS),
    }
    channels = STEM_FILTERS
    index = 0
    for filters, blocks, downsample in LEVELS:
        for i in range(blocks):
            stride = 2 if downsample and i == 0 else 1
            params[f"block{index}"] = {
                "conv1": _conv(next(it), name, in_channels=channels, filters=filters, size=3, stride=stride),
                "affine1": _affine(next(it), name, channels=filters),
                "conv2": _conv(next(it), name, in_channels=filters, filters=filters, size=3, stride=1),
                "affine2": _affine(next(it), name, channels=filters),
            }
            channels = filters
            index += 1
    fc = next(it)
    if fc.meta["num_inputs"] != channels or fc.meta["num_outputs"] != EMBEDDING_DIM or fc.meta["bias_mode"] != 1:
        raise ConversionError(f"{name}: fc_ at byte offset {fc.offset} is not fc_no_bias<{EMBEDDING_DIM}>")
    # dlib's fc_ multiplies the flattened input by params viewed as (num_inputs,
    # num_outputs): already Flax's Dense layout.
    params["fc"] = {"kernel": fc.arrays["params"].reshape(channels, EMBEDDING_DIM).copy()}
    return {"params": params}
