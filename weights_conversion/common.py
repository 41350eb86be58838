"""The converters' command-line ending; the rest of what they share is `srise_jax.models.conversion`.

The error type and the layout helpers moved into the library (which needs them
to convert dlib's weights on first use); they stay importable from here.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from srise_jax.models.conversion import (
    ConversionError,
    as_float32,
    check_destination,
    first_sentence,
    key_list,
    to_flax_layout,
    torch_load,
    torch_shape,
)

__all__ = [
    "ConversionError",
    "as_float32",
    "check_destination",
    "first_sentence",
    "key_list",
    "run_conversion",
    "to_flax_layout",
    "torch_load",
    "torch_shape",
]


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
