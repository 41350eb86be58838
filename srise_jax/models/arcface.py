"""ArcFace iResNet checkpoints on disk: an orbax checkpoint plus a JSON metadata file.

Layout of a checkpoint directory (written by ``python -m weights_conversion.arcface``)::

    DIR/metadata.json   {"format": "srise-jax-arcface", "format_version": 1, "arch": "r50", "source": "backbone.pth"}
    DIR/variables/      orbax StandardCheckpointer tree {"params": ..., "batch_stats": ...}, float32
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import orbax.checkpoint as ocp

from srise_jax.models.iresnet import ARCH_BLOCKS, EmbedFn, abstract_variables, arch_blocks, iresnet_embed_fn

FORMAT = "srise-jax-arcface"
FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"


def save_arcface(variables: Any, directory: str | Path, *, arch: str, source: str) -> Path:
    """Write iResNet variables and their metadata into a new directory.

    Args:
      variables: Flax variables ``{"params": ..., "batch_stats": ...}`` of ``arch``.
      directory: where to write; must not exist yet (callers that want an
        atomic result write to a temporary directory and rename it).
      arch: one of ``ARCH_BLOCKS``.
      source: name of the file the weights came from, kept for provenance.

    Returns:
      The directory, resolved.
    """
    arch_blocks(arch)  # refuse an unknown arch before anything is written
    directory = Path(directory).resolve()
    directory.mkdir(parents=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / VARIABLES_DIR, variables)
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch, "source": source}
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return directory


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The validated metadata of a checkpoint directory.

    Args:
      directory: a directory written by ``save_arcface``.

    Returns:
      The metadata dict; ``metadata["arch"]`` is a key of ``ARCH_BLOCKS``.

    Raises:
      FileNotFoundError: the directory or its metadata file is missing.
      ValueError: the metadata is unreadable or of another format or version.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    path = directory / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; is {directory} a converted ArcFace checkpoint?")
    try:
        metadata = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: corrupt metadata ({err})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: not {FORMAT} metadata")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format version {metadata.get('format_version')!r}, this srise-jax reads {FORMAT_VERSION}"
        )
    if metadata.get("arch") not in ARCH_BLOCKS:
        raise ValueError(f"{path}: unknown architecture {metadata.get('arch')!r}")
    return metadata


def load_arcface(directory: str | Path, *, dtype: Any = jnp.float32) -> tuple[EmbedFn, Any]:
    """Load a converted ArcFace iResNet.

    Args:
      directory: a directory written by ``python -m weights_conversion.arcface``.
      dtype: compute dtype of the returned embed function; params are float32.

    Returns:
      ``(embed_fn, params)``, as ``iresnet_init`` returns them.

    Raises:
      FileNotFoundError: the directory or part of it is missing.
      ValueError: the directory is corrupt or holds something else.
    """
    directory = Path(directory).resolve()
    arch = read_metadata(directory)["arch"]
    variables_dir = directory / VARIABLES_DIR
    if not variables_dir.is_dir():
        raise FileNotFoundError(f"{variables_dir}: missing; the checkpoint in {directory} is incomplete")
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            params = checkpointer.restore(variables_dir, abstract_variables(arch))
    # orbax and tensorstore raise many exception types for damaged files; at
    # this boundary all of them mean the same thing to the caller.
    except Exception as err:  # noqa: BLE001
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{variables_dir}: corrupt {arch} checkpoint ({first_line})") from err
    return iresnet_embed_fn(arch, dtype=dtype), params
