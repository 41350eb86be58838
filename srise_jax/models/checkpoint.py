"""Model checkpoints on disk: orbax variables plus a small JSON metadata file.

Every converted model (ArcFace, dlib's ResNet) is a directory holding
`metadata.json` (format name and version, provenance) and `variables/` (an
orbax `StandardCheckpointer` checkpoint, restored against an abstract tree).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"


def save_checkpoint(variables: Any, directory: str | Path, *, metadata: dict[str, Any]) -> Path:
    """Write variables and their metadata into a new directory.

    Args:
      variables: the Flax variables pytree.
      directory: where to write; must not exist yet (callers that want an
        atomic result write to a temporary directory and rename it).
      metadata: JSON-serialisable; must hold "format" and "format_version".

    Returns:
      The directory, resolved.
    """
    directory = Path(directory).resolve()
    directory.mkdir(parents=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(directory / VARIABLES_DIR, variables)
    (directory / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return directory


def read_checkpoint_metadata(directory: str | Path, *, format: str, version: int,
                             what: str) -> dict[str, Any]:
    """The metadata of a checkpoint directory, checked for format and version.

    Args:
      directory: a directory written by `save_checkpoint`.
      format: the expected "format" entry.
      version: the expected "format_version" entry.
      what: what the directory should hold, for messages ("a converted ArcFace
        checkpoint").

    Returns:
      The metadata, a dict parsed from the directory's JSON file.

    Raises:
      FileNotFoundError: the directory or its metadata file is missing.
      ValueError: the metadata is unreadable or of another format or version.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory}: no such checkpoint directory")
    path = directory / METADATA_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; is {directory} {what}?")
    try:
        metadata = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: corrupt metadata ({err})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != format:
        raise ValueError(f"{path}: not {format} metadata")
    if metadata.get("format_version") != version:
        raise ValueError(
            f"{path}: format version {metadata.get('format_version')!r}, this srise-jax reads {version}"
        )
    return metadata


def restore_variables(directory: str | Path, abstract: Any, *, what: str) -> Any:
    """Restore a checkpoint's variables against an abstract tree.

    Args:
      directory: a directory written by `save_checkpoint` (metadata already checked).
      abstract: the expected tree of `jax.ShapeDtypeStruct`s.
      what: what it holds, for messages ("r50 checkpoint").

    Returns:
      The variables, a tree shaped as `abstract` holding arrays.

    Raises:
      FileNotFoundError: the variables are missing.
      ValueError: they are corrupt, truncated or of another shape.
    """
    directory = Path(directory).resolve()
    variables_dir = directory / VARIABLES_DIR
    if not variables_dir.is_dir():
        raise FileNotFoundError(f"{variables_dir}: missing; the checkpoint in {directory} is incomplete")
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(variables_dir, abstract)
    # orbax and tensorstore raise many exception types for damaged files; at
    # this boundary all of them mean the same thing to the caller.
    except Exception as err:  # noqa: BLE001
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{variables_dir}: corrupt {what} ({first_line})") from err
