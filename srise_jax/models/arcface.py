"""ArcFace iResNet checkpoints on disk: an orbax checkpoint plus a JSON metadata file.

Layout of a checkpoint directory (written by ``python -m weights_conversion.arcface``)::

    DIR/metadata.json   {"format": "srise-jax-arcface", "format_version": 1, "arch": "r50", "source": "backbone.pth"}
    DIR/variables/      orbax StandardCheckpointer tree {"params": ..., "batch_stats": ...}, float32
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp

from srise_jax.models.checkpoint import (
    METADATA_FILE,
    read_checkpoint_metadata,
    restore_variables,
    save_checkpoint,
)
from srise_jax.models.iresnet import ARCH_BLOCKS, EmbedFn, abstract_variables, arch_blocks, iresnet_embed_fn

# A usual operating point of insightface's r50/r100 ArcFace models on LFW-like
# pairs, on the cosine similarity; calibrate your own with
# `srise_jax.thresholds.calibrate_threshold` on your data.
ARCFACE_THRESHOLD = 0.3

FORMAT = "srise-jax-arcface"
FORMAT_VERSION = 1


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
    return save_checkpoint(variables, directory, metadata={
        "format": FORMAT, "format_version": FORMAT_VERSION, "arch": arch, "source": source})


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
    metadata = read_checkpoint_metadata(directory, format=FORMAT, version=FORMAT_VERSION,
                                        what="a converted ArcFace checkpoint")
    if metadata.get("arch") not in ARCH_BLOCKS:
        raise ValueError(f"{Path(directory) / METADATA_FILE}: unknown architecture "
                         f"{metadata.get('arch')!r}")
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
    arch = read_metadata(directory)["arch"]
    params = restore_variables(directory, abstract_variables(arch), what=f"{arch} checkpoint")
    return iresnet_embed_fn(arch, dtype=dtype), params
