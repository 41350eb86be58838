"""What the converters share: the error type, PyTorch-to-Flax layouts, messages, the CLI ending."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from srise_jax.models.checkpoint import is_taken

# Axis order that turns a PyTorch array into its Flax layout, by rank:
# conv (O, I, kh, kw) -> (kh, kw, I, O); linear (out, in) -> (in, out).
_FLAX_AXES = {4: (2, 3, 1, 0), 2: (1, 0)}
# Missing or unexpected keys named in one error message, at most.
_LISTED_KEYS = 3


class ConversionError(ValueError):
    """A state dict or file that cannot be converted; the message says which key and why."""


def torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of a parameter whose Flax shape is ``flax_shape``."""
    axes = _FLAX_AXES.get(len(flax_shape))
    if axes is None:
        return flax_shape
    return tuple(flax_shape[i] for i in np.argsort(axes))


def to_flax_layout(array: np.ndarray) -> np.ndarray:
    """A PyTorch-layout parameter rearranged into Flax's layout."""
    axes = _FLAX_AXES.get(array.ndim)
    return array if axes is None else np.ascontiguousarray(np.transpose(array, axes))


def as_float32(value: Any, key: str) -> np.ndarray:
    """A tensor or array as float32 NumPy (fp16/bf16 weights are widened)."""
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
    """One line naming the first few missing or unexpected keys (with shapes)."""
    verb = "expected" if kind == "missing" else "found"
    shown = ", ".join(f"{key!r} {verb} shape {shapes[key]}" for key in keys[:_LISTED_KEYS])
    more = f" and {len(keys) - _LISTED_KEYS} more" if len(keys) > _LISTED_KEYS else ""
    return f"{kind} key{'s' if len(keys) > 1 else ''}: {shown}{more}"


def first_sentence(err: BaseException) -> str:
    """The opening sentence of an exception message (torch's run to paragraphs)."""
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


def run_conversion(convert: Callable[[], Path]) -> int:
    """Run one conversion for a command line.

    Prints ``wrote OUT`` and returns 0, or prints ``error: ...`` (one line) and
    returns 2 for an unconvertible input or an unwritable destination; each
    warning is one ``warning: ...`` line.

    Args:
      convert: does the work; returns the directory written.

    Returns:
      The exit status.
    """
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = convert()
        except (ConversionError, OSError) as err:
            error = (str(err).strip() or type(err).__name__).splitlines()[0]
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    if error is not None:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0
