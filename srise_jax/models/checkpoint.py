"""Model checkpoints on disk: orbax variables plus a small JSON metadata file.

Every converted model (ArcFace, dlib's ResNet) is a directory holding
`metadata.json` (format name and version, provenance, the SHA-256 of every file
and of every array) and `variables/` (an orbax `StandardCheckpointer` checkpoint, restored
against an abstract tree).

orbax restores damaged bytes without complaint when the damage leaves the
files' structure intact (a flipped block inside an array reads back as garbage
or NaN), and a truncated file makes it fail noisily. So the files are checked
against the digests recorded when they were written before orbax reads them,
and the restored arrays against theirs after. Checkpoints written before the
digests existed (no ``array_sha256`` in their metadata) still load, with a
warning that they cannot be verified.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

METADATA_FILE = "metadata.json"
VARIABLES_DIR = "variables"
# Metadata entry: tree path of each array ("params/conv/kernel") -> hex SHA-256.
CHECKSUMS_KEY = "array_sha256"
# Metadata entry: path of each file under `VARIABLES_DIR` -> hex SHA-256. They
# are checked before orbax reads anything: a truncated or altered file is then
# one clear error instead of a failed restore, whose abandoned asynchronous
# reads print tracebacks through several channels for a while afterwards.
FILE_CHECKSUMS_KEY = "file_sha256"


def file_checksums(directory: str | Path) -> dict[str, str]:
    """The SHA-256 of every file below `directory`, keyed by its relative path.

    Args:
      directory: a directory, e.g. a checkpoint's `VARIABLES_DIR`.

    Returns:
      ``{"manifest.ocdbt": hex digest, ...}`` in sorted path order.
    """
    directory = Path(directory)
    digests = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        digests[path.relative_to(directory).as_posix()] = digest.hexdigest()
    return digests


def _array_digests(variables: Any) -> Iterator[tuple[str, str]]:
    """``(path, digest)`` for each array of a tree, one at a time (see `array_checksums`)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(variables)[0]:
        array = np.ascontiguousarray(np.asarray(leaf))
        yield jax.tree_util.keystr(path, simple=True, separator="/"), hashlib.sha256(array.data).hexdigest()


def array_checksums(variables: Any) -> dict[str, str]:
    """The SHA-256 of each array of a variables tree, keyed by its tree path.

    Args:
      variables: a pytree of arrays (NumPy or JAX).

    Returns:
      ``{"params/conv/kernel": hex digest, ...}``: each digest is of the
      array's bytes in C order (dtype and shape are checked by orbax against
      the abstract tree, not here).
    """
    return dict(_array_digests(variables))


def is_taken(directory: str | Path) -> bool:
    """Whether writing a checkpoint at ``directory`` would replace something.

    Args:
      directory: a path.

    Returns:
      True when it exists (or is a dangling link) and is not an empty directory.
    """
    directory = Path(directory)
    if directory.is_dir():
        return any(directory.iterdir())
    return directory.exists() or directory.is_symlink()


def save_checkpoint(variables: Any, directory: str | Path, *, metadata: dict[str, Any],
                    overwrite: bool = False) -> Path:
    """Write variables and their metadata (with each array's SHA-256) into a directory, atomically.

    The checkpoint is assembled in a hidden directory beside ``directory`` and
    renamed into place, so a failed or interrupted write leaves ``directory``
    as it was and nothing partial under its name.

    Args:
      variables: the Flax variables pytree.
      directory: where to write; an existing empty directory is replaced.
      metadata: JSON-serialisable; must hold "format" and "format_version".
        ``array_sha256`` (see `array_checksums`) is added here.
      overwrite: replace an existing non-empty ``directory``.

    Returns:
      The directory, resolved.

    Raises:
      FileExistsError: ``directory`` exists, is not empty, and ``overwrite`` is False.
      OSError: ``directory`` cannot be created (read-only or missing parent,
        disk full); the message names it.
    """
    directory = Path(directory).resolve()
    if not overwrite and is_taken(directory):
        raise FileExistsError(f"{directory}: already exists and is not empty")
    metadata = {**metadata, CHECKSUMS_KEY: array_checksums(variables)}
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:  # mkdir's way of saying a parent is a file
        raise OSError(f"{directory}: cannot create it ({err.filename} is not a directory)") from None
    except OSError as err:
        raise OSError(f"{directory}: cannot create it ({_os_reason(err)})") from None
    try:
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", suffix=".tmp", dir=directory.parent))
    except OSError as err:
        raise OSError(f"{directory}: cannot create it ({err.strerror or err}: {directory.parent})") from None
    try:
        new = staging / "new"
        new.mkdir()
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(new / VARIABLES_DIR, variables)
        metadata[FILE_CHECKSUMS_KEY] = file_checksums(new / VARIABLES_DIR)
        (new / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        if directory.exists() or directory.is_symlink():
            directory.rename(staging / "old")  # deleted with the staging directory
        new.rename(directory)
    except OSError as err:
        raise OSError(f"{directory}: cannot write the checkpoint ({_os_reason(err)})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def _os_reason(err: OSError) -> str:
    """``strerror: filename`` of an OSError, or its message."""
    if err.strerror and err.filename:
        return f"{err.strerror}: {err.filename}"
    return err.strerror or str(err)


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
    for key in (CHECKSUMS_KEY, FILE_CHECKSUMS_KEY):
        checksums = metadata.get(key)
        if checksums is not None and not (
            isinstance(checksums, dict) and all(isinstance(v, str) for v in checksums.values())
        ):
            raise ValueError(f"{path}: corrupt metadata ({key} is not a table of digests)")
    return metadata


def _is_orbax_teardown_noise(unraisable: Any) -> bool:
    """Whether an unraisable exception is debris of a failed orbax restore.

    orbax runs a restore on a fresh event loop and, when one read fails, closes
    that loop without cancelling the reads still in flight
    (``orbax/checkpoint/_src/asyncio_utils.py``, ``_run_sync_via_new_loop``).
    TensorStore's threads then finish those reads and call back into the
    closed loop (a ``RuntimeError: Event loop is closed`` raised in
    ``call_soon_threadsafe``, called from C), and the abandoned coroutines,
    finalized later by the garbage collector, turn ``GeneratorExit`` into a
    new exception. Python prints each as an "Exception ignored" traceback:
    hundreds of stderr lines for one damaged file.
    """
    code = getattr(unraisable.object, "cr_code", None)
    if code is not None:
        return "orbax" in Path(code.co_filename).parts
    tb = unraisable.exc_traceback
    return (unraisable.object is None and isinstance(unraisable.exc_value, RuntimeError)
            and str(unraisable.exc_value) == "Event loop is closed"
            and tb is not None and tb.tb_frame.f_code.co_name == "call_soon_threadsafe")


def _silence_orbax_teardown() -> None:
    """Drop the debris of a failed restore from ``sys.unraisablehook``; pass on everything else.

    Installed once, before the first restore, and left in place: TensorStore's
    threads can report into the closed loop before the failed restore's
    exception even reaches the caller, and keep doing so for a while after
    it, so a hook installed on failure, or removed on return, would miss some
    (a race that printed a 7-line traceback in one of three runs). It drops
    nothing else: see `_is_orbax_teardown_noise`.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_srise_jax_filter", False):
        return

    def hook(unraisable: Any) -> None:
        if not _is_orbax_teardown_noise(unraisable):
            previous(unraisable)

    hook._srise_jax_filter = True
    sys.unraisablehook = hook


def _root_cause(err: BaseException) -> str:
    """The first line of the innermost exception behind ``err`` (orbax wraps TensorStore's)."""
    while err.__cause__ is not None:
        err = err.__cause__
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _verify(variables: Any, checksums: Mapping[str, str], directory: Path, what: str) -> None:
    """Raise ValueError naming the first array whose digest differs from the recorded one."""
    seen = set()
    for path, digest in _array_digests(variables):
        seen.add(path)
        if checksums.get(path) != digest:
            problem = "has no recorded checksum" if path not in checksums else "does not match its checksum"
            raise ValueError(f"{directory}: array {path} {problem} in {METADATA_FILE}: the {what} is "
                             "damaged; convert the weights again")
    extra = sorted(set(checksums) - seen)
    if extra:
        raise ValueError(f"{directory}: {METADATA_FILE} lists array {extra[0]}, which the {what} lacks")


def restore_variables(directory: str | Path, abstract: Any, *, metadata: Mapping[str, Any],
                      what: str) -> Any:
    """Restore a checkpoint's variables against an abstract tree and verify their checksums.

    A failed restore leaves orbax's abandoned reads behind, which Python would
    print as hundreds of lines of "Exception ignored" tracebacks; exactly those
    are dropped from ``sys.unraisablehook`` (installed before the first
    restore; see `_silence_orbax_teardown`), so the error raised here is the
    only report.

    Args:
      directory: a directory written by `save_checkpoint`.
      abstract: the expected tree of `jax.ShapeDtypeStruct`s.
      metadata: its metadata, as `read_checkpoint_metadata` returned it. Without
        ``array_sha256`` (a checkpoint written before srise-jax recorded them)
        the arrays are returned unverified, with a warning.
      what: what it holds, for messages ("r50 checkpoint").

    Returns:
      The variables, a tree shaped as `abstract` holding arrays.

    Raises:
      FileNotFoundError: the variables are missing.
      ValueError: they are corrupt, truncated, of another shape, or differ
        from their recorded checksums (the message names the directory and
        the first damaged array).
    """
    directory = Path(directory).resolve()
    variables_dir = directory / VARIABLES_DIR
    if not variables_dir.is_dir():
        raise FileNotFoundError(f"{variables_dir}: missing; the checkpoint in {directory} is incomplete")
    recorded = metadata.get(FILE_CHECKSUMS_KEY)
    if recorded is not None:
        found = file_checksums(variables_dir)
        for name, digest in recorded.items():
            if found.get(name) != digest:
                problem = "is missing" if name not in found else "does not match its checksum"
                raise ValueError(f"{variables_dir}: corrupt {what} (file {name} {problem} in "
                                 f"{METADATA_FILE}); convert the weights again")
    _silence_orbax_teardown()
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(variables_dir, abstract)
    # orbax and tensorstore raise many exception types for damaged files; at
    # this boundary all of them mean the same thing to the caller.
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{variables_dir}: corrupt {what} ({_root_cause(err)})") from err
    checksums = metadata.get(CHECKSUMS_KEY)
    if checksums is None:
        warnings.warn(f"{directory}: {METADATA_FILE} records no checksums (written by an older "
                      "srise-jax), so its arrays cannot be verified; convert the weights again "
                      "to add them", UserWarning, stacklevel=3)
    else:
        _verify(variables, checksums, directory, what)
    return variables
