"""What every weights conversion needs: the error type, PyTorch-to-Flax layouts, messages, torch files.

The converters of the library (`srise_jax.models.arcface_torch`,
`srise_jax.models.dlib_dat`) and the command lines of `weights_conversion`
share these; nothing here imports torch at module level (torch is an optional
extra, imported by `torch_load` when a file is read).
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import jax
import jax.numpy as jnp
import numpy as np

from srise_jax.models.checkpoint import is_taken

# Axis order that turns a PyTorch array into its Flax layout, by rank:
# conv (O, I, kh, kw) -> (kh, kw, I, O); linear (out, in) -> (in, out).
_FLAX_AXES = {4: (2, 3, 1, 0), 2: (1, 0)}
# Missing or unexpected keys named in one error message, at most.
_LISTED_KEYS = 3
_TORCH_HINT = "converting PyTorch weights needs torch: pip install 'srise-jax[convert]'"


class ConversionError(ValueError):
    """A state dict or file that cannot be converted; the message says which key and why."""


def torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of a parameter whose Flax shape is ``flax_shape``.

    Args:
      flax_shape: a Flax parameter's shape (conv kernels (kh, kw, I, O), dense (in, out)).

    Returns:
      The shape PyTorch stores it in ((O, I, kh, kw), (out, in)); other ranks unchanged.
    """
    axes = _FLAX_AXES.get(len(flax_shape))
    if axes is None:
        return flax_shape
    return tuple(flax_shape[i] for i in np.argsort(axes))


def to_flax_layout(array: np.ndarray) -> np.ndarray:
    """A PyTorch-layout parameter rearranged into Flax's layout (the inverse of `torch_shape`).

    Args:
      array: conv weights (O, I, kh, kw), linear weights (out, in), or any other rank.

    Returns:
      A C-contiguous (kh, kw, I, O) or (in, out) array; other ranks unchanged.
    """
    axes = _FLAX_AXES.get(array.ndim)
    return array if axes is None else np.ascontiguousarray(np.transpose(array, axes))


def as_float32(value: Any, key: str) -> np.ndarray:
    """A tensor or array as float32 NumPy (fp16/bf16 weights are widened).

    Args:
      value: a torch tensor, a NumPy array or a JAX array.
      key: its state-dict key, for the error message.

    Returns:
      The values as a float32 NumPy array.

    Raises:
      ConversionError: ``value`` is not an array, or not floating point.
    """
    if hasattr(value, "detach"):  # a torch.Tensor; torch itself is not imported here
        if not value.is_floating_point():
            raise ConversionError(f"key {key!r}: expected floating-point weights, found {value.dtype}")
        return value.detach().cpu().float().numpy()
    if not isinstance(value, np.ndarray | jax.Array):
        raise ConversionError(f"key {key!r}: expected a tensor, found {type(value).__name__}")
    if not jnp.issubdtype(value.dtype, jnp.floating):  # unlike NumPy's, knows bfloat16
        raise ConversionError(f"key {key!r}: expected floating-point weights, found {value.dtype}")
    return np.asarray(value, dtype=np.float32)


def key_list(kind: str, keys: Sequence[str], shapes: Mapping[str, tuple[int, ...]]) -> str:
    """One line naming the first few missing or unexpected keys (with shapes).

    Args:
      kind: "missing" or "unexpected".
      keys: the keys, in the order to name them.
      shapes: each key's shape (expected for missing keys, found for unexpected ones).

    Returns:
      E.g. ``"missing keys: 'fc.weight' expected shape (512, 25088) and 2 more"``.
    """
    verb = "expected" if kind == "missing" else "found"
    shown = ", ".join(f"{key!r} {verb} shape {shapes[key]}" for key in keys[:_LISTED_KEYS])
    more = f" and {len(keys) - _LISTED_KEYS} more" if len(keys) > _LISTED_KEYS else ""
    return f"{kind} key{'s' if len(keys) > 1 else ''}: {shown}{more}"


def first_sentence(err: BaseException) -> str:
    """The opening sentence of an exception message (torch's run to paragraphs).

    Args:
      err: any exception.

    Returns:
      Its message up to the first line break or ". "; its type's name when empty.
    """
    text = str(err).strip()
    if not text:
        return type(err).__name__
    return text.splitlines()[0].split(". ")[0]


def check_destination(out_dir: Path, *, overwrite: bool) -> None:
    """Refuse to replace an existing non-empty destination unless asked to.

    Converters call this before reading their input, so that a taken
    destination is reported before a long conversion rather than after it.

    Args:
      out_dir: the checkpoint directory a converter is about to write.
      overwrite: whether replacing it was asked for (``--overwrite``).

    Raises:
      ConversionError: ``out_dir`` exists, is not an empty directory, and
        ``overwrite`` is False.
    """
    if not overwrite and is_taken(out_dir):
        raise ConversionError(f"{out_dir}: already exists and is not empty; pass --overwrite to replace it")


def torch_load(file: str | Path | IO[bytes], *, where: str, refusal_hint: str = "") -> Any:
    """What a PyTorch file holds, read with ``torch.load(weights_only=True)`` only.

    A file holding anything but tensors and plain containers is refused, never
    unpickled. torch is imported here, so that the rest of srise-jax works
    without it.

    Args:
      file: the file's path, or a binary stream of its bytes.
      where: how error messages name the file.
      refusal_hint: appended to the message when torch refuses the file's
        objects (e.g. what to save instead).

    Returns:
      The loaded object (usually a state dict of CPU tensors).

    Raises:
      ConversionError: torch is not installed, the file holds objects other
        than tensors, or it is damaged.
    """
    try:
        import torch  # torch is an optional extra, needed only to convert
    except ImportError:
        raise ConversionError(_TORCH_HINT) from None
    try:
        with warnings.catch_warnings():
            # torch warns about pickle protocols before refusing foreign files;
            # the error below says all there is to say.
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConversionError(
            f"{where}: refused by torch.load(weights_only=True): it holds objects other than tensors{refusal_hint}"
        ) from None
    # torch raises RuntimeError, EOFError, OSError, ... for damaged files.
    except Exception as err:  # noqa: BLE001
        raise ConversionError(f"{where}: not a readable PyTorch file (truncated?): {first_sentence(err)}") from None
