"""Output files of the command line: atomic files, all of a command's files or none, run-directory locks.

A command that writes several files (a figure, its scores, its curves) must
leave either all of them or none: a run that fails after minutes of
computation, or halfway through writing, should not leave a figure behind
that its scores never joined. `staged_outputs` gives each output a
temporary file beside it the moment the command starts (so an unwritable
location fails at once, before any work), the command writes the
temporaries, and only once the whole command has succeeded are they renamed
onto their final names, one after the other with nothing left to compute.

`lock_directory` keeps two runs from writing into one directory at once
(`srise-jax benchmark --out DIR` twice): an exclusive `fcntl.flock` on a lock
file in it, which records who holds it so that the second run can say so.
The lock ends with the process that holds it, so a killed run never leaves a
stale lock. On network filesystems it is as reliable as their `flock`.

`atomic_file` is the single-file writer beneath them: a file that replaces
its final name only once it is written whole (the figures of `srise_jax.viz`
are saved with it).

`cache_root` is where the library keeps what it can rebuild (dlib's
converted weights, the command line's compiled XLA programs).

Nothing here prints: the command line reports `OutputError` as one line.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# Temporary names start with a dot and at most this much of the final name,
# so that they stay far below NAME_MAX whatever the final name's length.
_TEMPORARY_STEM = 64
_DEFAULT_NAME_MAX = 255


class OutputError(OSError):
    """An output location that cannot be written, or a directory another run holds.

    The message names the path and the reason, in one line.
    """


def cache_root() -> Path:
    """Where srise-jax keeps what it can rebuild: ``$SRISE_JAX_CACHE``, else ``srise-jax`` under the user's cache.

    The user's cache is ``$XDG_CACHE_HOME``, default ``~/.cache``. It holds
    dlib's converted weights (`srise_jax.models.dlib_weights.cache_dir`) and
    the command line's compiled XLA programs (``xla/``); deleting it costs
    only the time to rebuild them.

    Returns:
      The directory's path (not created here).
    """
    root = os.environ.get("SRISE_JAX_CACHE")
    if root:
        return Path(root).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "srise-jax"


def check_writable(path: str | os.PathLike) -> None:
    """Fail unless `path` names a file this process may create or replace.

    Checks what can be seen without writing: the name is not a directory,
    its directory exists, the name is not too long for the filesystem, and
    an existing file is writable. `StagedOutputs.file` also creates a file
    beside it, which finds what cannot be seen (a read-only filesystem, a
    full quota, permissions).

    Args:
      path: the output file.

    Raises:
      OutputError: one of the above, naming `path`.
    """
    path = Path(path)
    parent = path.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: directory {parent} does not exist")
    # Before any look at the file itself: stat() of a too long name raises.
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):  # not every platform or filesystem reports it
        name_max = _DEFAULT_NAME_MAX
    if len(os.fsencode(path.name)) > name_max:
        raise OutputError(f"{path}: file name too long (the filesystem allows "
                          f"{name_max} bytes)")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory, expected a file name")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{path}: exists and is read-only")


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file that replaces `path` only once the block has succeeded.

    The data goes to a temporary file in the same directory (so the final
    `os.replace` is an atomic rename); if the block raises, the temporary
    file is removed and `path` is left as it was.

    Args:
      path: the file to write; its directory must exist.

    Yields:
      The temporary file, open for binary writing.
    """
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
        # mkstemp makes the file private (0600); give it the permissions an
        # ordinary open() would have.
        os.chmod(temporary, 0o666 & ~_umask())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def write_json(path: str | os.PathLike, document: dict) -> None:
    """Write `document` as indented JSON, atomically (`atomic_file`).

    NaN and infinities are refused (JSON has none): write null, with a reason.

    Args:
      path: the file to write.
      document: a JSON-able dict.

    Raises:
      ValueError: the document holds NaN or an infinity.
      OSError: the file cannot be written (nothing partial is left).
    """
    text = json.dumps(document, indent=2, allow_nan=False) + "\n"
    with atomic_file(path) as file:
        file.write(text.encode())


def _umask() -> int:
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


class StagedOutputs:
    """Files that replace their final names together, once everything succeeded.

    Made by `staged_outputs`; see there.
    """

    def __init__(self) -> None:
        self._temporary: dict[Path, Path] = {}
        self._created: list[Path] = []

    def directory(self, path: str | os.PathLike) -> Path:
        """A directory for outputs, created now (with its parents) if missing.

        A directory created here is removed again if the command fails
        (and it is still empty).

        Args:
          path: the directory.

        Returns:
          `path`, as a `Path`.

        Raises:
          OutputError: `path` exists and is not a directory, or cannot be created.
        """
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise OutputError(f"{path}: exists and is not a directory")
        missing = []
        for parent in (path, *path.parents):
            if parent.exists():
                break
            missing.append(parent)
        for parent in reversed(missing):
            try:
                parent.mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                raise OutputError(f"{path}: cannot create the directory "
                                  f"({err.strerror or err})") from None
            self._created.append(parent)
        return path

    def file(self, path: str | os.PathLike) -> Path:
        """Reserve an output file: check it, and create its temporary beside it.

        Creating the temporary is the real test that the directory takes new
        files, made before the command does any work.

        Args:
          path: the final file name.

        Returns:
          The temporary path to write instead of `path` (the same one for
          every call with one `path`); it exists, empty.

        Raises:
          OutputError: `path` cannot be written (see `check_writable`), or
            no file can be created in its directory.
        """
        path = Path(path)
        if path in self._temporary:
            return self._temporary[path]
        check_writable(path)
        temporary = path.with_name(
            f".{path.name[:_TEMPORARY_STEM]}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 through the umask: an ordinary file's permissions.
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as err:
            raise OutputError(f"{path}: cannot write in {path.parent} "
                              f"({err.strerror or err})") from None
        self._temporary[path] = temporary
        return temporary

    def commit(self) -> list[Path]:
        """Rename every temporary onto its final name, in the order reserved.

        Returns:
          The final paths written.

        Raises:
          OutputError: a rename failed; the temporaries not yet renamed are
            removed (the files already renamed stay).
        """
        done = []
        try:
            for path, temporary in self._temporary.items():
                os.replace(temporary, path)
                done.append(path)
        except OSError as err:
            self._temporary = {p: t for p, t in self._temporary.items() if p not in done}
            self.discard()
            raise OutputError(f"{path}: cannot replace it ({err.strerror or err})") from None
        self._temporary = {}
        return done

    def discard(self) -> None:
        """Remove the temporaries, and the directories created here if empty."""
        for temporary in self._temporary.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        self._temporary = {}
        for directory in reversed(self._created):
            with contextlib.suppress(OSError):  # not empty: something else wrote there
                directory.rmdir()
        self._created = []


@contextlib.contextmanager
def staged_outputs() -> Iterator[StagedOutputs]:
    """Write a command's files to temporaries; rename them all if the block succeeds.

    Reserve every output first (`.file(path)`, `.directory(path)`), before
    any work: a location that cannot be written fails there. Then write each
    output to the temporary path `.file` returned. If the block raises
    (including KeyboardInterrupt), the temporaries and any directory made for
    them are removed and no final file is touched; otherwise they replace
    their final names.

        with staged_outputs() as staged:
            figure, scores = staged.file(out), staged.file(json_path)
            ...                       # compute, then write figure and scores
        # here both files exist, or the exception propagated and neither changed

    Yields:
      The `StagedOutputs` of the block.
    """
    staged = StagedOutputs()
    try:
        yield staged
    except BaseException:
        staged.discard()
        raise
    staged.commit()


def _describe_holder() -> str:
    """Who holds a lock: this process, its host and the time, for another run's error."""
    started = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return f"pid {os.getpid()} on {socket.gethostname()}, started {started}"


@contextlib.contextmanager
def lock_directory(path: str | os.PathLike, *, name: str = ".lock") -> Iterator[Path]:
    """Hold an exclusive lock on a run directory, or fail at once if another run holds it.

    The directory (and its parents) is created if missing. The lock is an
    `fcntl.flock` on the file `name` in it, which records the holder (pid,
    host, start time) for the error another run gets. The lock file stays
    after the block (removing it could let a third run lock a file that a
    second one is about to lock); the lock itself ends with the block or
    the process. If the block raises and the directory was created here and
    holds nothing but the lock file, both are removed again.

    Args:
      path: the run directory.
      name: the lock file's name in it (e.g. one per process of a
        distributed run).

    Yields:
      The lock file's path.

    Raises:
      OutputError: another run holds the lock (the message names it), or
        the directory or the lock file cannot be made.
    """
    path = Path(path)
    staged = StagedOutputs()
    staged.directory(path)
    lock = path / name
    try:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        staged.discard()
        raise OutputError(f"{lock}: cannot create the lock file "
                          f"({err.strerror or err})") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 1024, 0).decode(errors="replace").strip()
            raise OutputError(
                f"{path}: in use by another run ({holder or 'which has not yet written its name'}"
                f"; lock file {lock}): wait for it to finish or use another directory"
            ) from None
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (_describe_holder() + "\n").encode(), 0)
        try:
            yield lock
        except BaseException:
            if staged._created and [p.name for p in path.iterdir()] == [name]:
                lock.unlink()
                staged.discard()
            raise
    finally:
        os.close(descriptor)  # releases the flock
