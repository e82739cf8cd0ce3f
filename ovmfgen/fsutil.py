"""Atomic file output (a temp file beside the target, then a rename; write only if changed), sha256 of a
file, and the one exclusive lock every cache entry, workspace and Xen run takes."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ovmfgen.errors import display_path
from ovmfgen.ui import say


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        # mkstemp makes the file 0600; published files get the ordinary mode the umask allows.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def write_if_changed(path: Path, data: bytes) -> bool:
    """Atomically write ``data`` unless ``path`` already holds exactly it. Returns True if written."""
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write_bytes(path, data)
    return True


def replace_dir(staging: Path, final: Path) -> None:
    """Move a fully written ``staging`` directory to ``final``, replacing any previous one.

    The old directory is renamed aside first and removed only after the new one is in place, so a
    crash leaves either the old or the new content at ``final``, never a mix.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Lock:
    """An acquired lock: an open, flocked file (``fd``; a child given it keeps the lock while it runs)."""

    path: Path
    fd: int


@contextlib.contextmanager
def exclusive(path: Path, what: str) -> Iterator[Lock]:
    """Hold an exclusive ``fcntl`` lock on ``path`` (created with its directory); when someone else holds
    it, say ``waiting for lock PATH: WHAT`` (with the holder's pid) and wait. Released on exit, or when
    the last process holding the fd (a child it was passed to) ends."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = ""
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            except OSError:
                pass
            say(f"waiting for lock {display_path(path)}: {what}" + (f" (pid {holder})" if holder.isdigit() else ""))
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield Lock(path, fd)
    finally:
        os.close(fd)

