"""Atomic file writes: a reader or a crash never sees a half-written file.

Data goes to a temporary file in the target's folder (same filesystem, so the final
rename is atomic), is fsynced, and is renamed over the target; the folder is then
fsynced so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from common.errors import UserError


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make renames inside `directory` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temp_path(path: Path) -> Path:
    """A hidden temporary name next to `path`, unique to this process."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def replace_durably(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """fsync `src`, rename it over `dst`, fsync the folder."""
    with open(src, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(src, dst)
    fsync_dir(Path(dst).parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing; on success it replaces `path`, else it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


class OutputError(UserError, OSError):
    """An output file cannot be written where it was asked for."""


def check_writable(path: str | os.PathLike, flag: str = "") -> None:
    """Fail now, naming the path (and `flag`), if a file cannot be written at `path`
    later: it is a folder, a parent is a file, or the folder is not writable. Nothing is
    left behind by the check."""
    path = Path(path)
    name = f"{flag} {path}" if flag else str(path)
    if path.is_dir():
        raise OutputError(f"{name} is a folder: give a file name")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{name} cannot be written: {folder} is not a folder")
    if folder != path.parent:  # created at the write: its nearest existing ancestor decides
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"{name} cannot be written: {folder} is not writable")
        return
    probe = temp_path(path)
    try:
        with open(probe, "wb"):
            pass
    except OSError as exc:
        raise OutputError(f"{name} cannot be written: {exc.strerror}") from exc
    finally:
        probe.unlink(missing_ok=True)
