"""ArcFace iResNet checkpoints on disk: an orbax checkpoint plus a JSON metadata file.

Layout of a checkpoint directory (written by ``python -m weights_conversion.arcface``)::

    DIR/metadata.json   {"format": "srise-jax-arcface", "format_version": 1, "arch": "r50", "source": "backbone.pth",
                         "array_sha256": {"params/conv1/kernel": "...", ...}}
    DIR/variables/      orbax StandardCheckpointer tree {"params": ..., "batch_stats": ...}, float32

``load_arcface`` checks every array against ``array_sha256`` and refuses a
damaged checkpoint, naming the array. Checkpoints converted before srise-jax
recorded the digests (same format version, no ``array_sha256``) still load,
with a warning that they cannot be verified: convert them again to add it.
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
from srise_jax.models.iresnet import ARCH_BLOCKS, abstract_variables, arch_blocks, iresnet_embed_fn
from srise_jax.typing import EmbedFn, PyTree

# A usual operating point of insightface's r50/r100 ArcFace models on LFW-like
# pairs, on the cosine similarity; calibrate your own with
# `srise_jax.thresholds.calibrate_threshold` on your data.
ARCFACE_THRESHOLD = 0.3

FORMAT = "srise-jax-arcface"
FORMAT_VERSION = 1


def save_arcface(variables: PyTree, directory: str | Path, *, arch: str, source: str,
                 overwrite: bool = False) -> Path:
    """Write iResNet variables, their metadata and checksums into a directory, atomically.

    Args:
      variables: Flax variables ``{"params": ..., "batch_stats": ...}`` of ``arch``.
      directory: where to write (see `save_checkpoint`).
      arch: one of ``ARCH_BLOCKS``.
      source: name of the file the weights came from, kept for provenance.
      overwrite: replace an existing non-empty ``directory``.

    Returns:
      The directory, resolved.

    Raises:
      FileExistsError: ``directory`` is taken and ``overwrite`` is False.
      OSError: ``directory`` cannot be written.
    """
    arch_blocks(arch)  # refuse an unknown arch before anything is written
    return save_checkpoint(variables, directory, overwrite=overwrite, metadata={
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


def load_arcface(directory: str | Path, *, dtype: Any = jnp.float32) -> tuple[EmbedFn, PyTree]:
    """Load a converted ArcFace iResNet.

    Args:
      directory: a directory written by ``python -m weights_conversion.arcface``.
      dtype: compute dtype of the returned embed function; params are float32.

    Returns:
      ``(embed_fn, params)``, as ``iresnet_init`` returns them.

    Raises:
      FileNotFoundError: the directory or part of it is missing.
      ValueError: the directory is corrupt, holds something else, or an array
        differs from its recorded checksum (the message names the directory
        and the array).

    Warns:
      UserWarning: the checkpoint predates recorded checksums and cannot be verified.
    """
    metadata = read_metadata(directory)
    arch = metadata["arch"]
    params = restore_variables(directory, abstract_variables(arch), metadata=metadata,
                               what=f"{arch} checkpoint")
    return iresnet_embed_fn(arch, dtype=dtype), params
