"""Input checks at the library's public boundary, shared by the kernel and the explainers.

Every public function that takes images checks them here, so one bad input
gives one message that names the argument, its dtype or shape: never a deep
traceback, and never silently wrong maps (uint8 images would turn the masks'
fractional weights into zeros; one NaN pixel makes every map NaN).

Value checks (NaN, inf) need concrete numbers: under `jax.jit` the arrays
are tracers and only dtypes and shapes can be checked. The callers document
what they return in that case.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def is_traced(x) -> bool:
    """True if `x` is an abstract value inside a JAX transformation (no numbers to check).

    Args:
      x: an array, a tracer, or a Python number.

    Returns:
      Whether `x` is a `jax.core.Tracer`.
    """
    return isinstance(x, jax.core.Tracer)


def check_image(name: str, image, *, channels: int | None = 3) -> None:
    """Raise a one-line error unless `image` is one finite float (H, W, C) image.

    Args:
      name: the argument's name, for the message (e.g. "probe").
      image: the array to check.
      channels: the required C, or None for any.

    Raises:
      TypeError: the dtype is not floating (e.g. uint8: divide by 255 first).
      ValueError: the shape is not (H, W, C), or (when not traced) a pixel
        is NaN or infinite.
    """
    dtype = getattr(image, "dtype", None)
    if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(
            f"{name} has dtype {dtype}; images must be float RGB in [0, 1] "
            "(convert uint8 images with x / 255, or read files with "
            "srise_jax.load_face)")
    shape = tuple(np.shape(image))
    if len(shape) != 3 or (channels is not None and shape[-1] != channels):
        want = f"(H, W, {channels})" if channels is not None else "(H, W, C)"
        raise ValueError(f"{name} must be one image of shape {want}, got shape {shape}")
    check_finite(name, image)


def check_finite(name: str, values) -> None:
    """Raise a one-line ValueError if concrete `values` hold NaN or inf.

    Args:
      name: the argument's name, for the message.
      values: an array or number; nothing is checked while it is traced.

    Raises:
      ValueError: some value is NaN or infinite.
    """
    if is_traced(values):
        return
    array = np.asarray(values, np.float32)
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise ValueError(f"{name} holds {bad} NaN or infinite value"
                         f"{'s' if bad != 1 else ''} (shape {array.shape})")


def check_images(*, channels: int | None = 3, **images) -> None:
    """`check_image` on each of `images`, then `check_same_shape`.

    Args:
      channels: as in `check_image`.
      **images: name -> array.

    Raises:
      TypeError, ValueError: as `check_image` and `check_same_shape`.
    """
    for name, image in images.items():
        check_image(name, image, channels=channels)
    check_same_shape(**images)


def check_same_shape(**images) -> None:
    """Raise a one-line ValueError unless all `images` have one shape.

    Args:
      **images: name -> array.

    Raises:
      ValueError: naming every argument and its shape.
    """
    shapes = {name: tuple(np.shape(x)) for name, x in images.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"images must have one shape, got {listed}")


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name if it has none.

    Library messages can run over several lines; a command-line error, a
    warning about a skipped input or a wrapped error quotes only the first.
    """
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
