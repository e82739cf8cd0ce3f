"""Atomic publish of a build's artifacts into dist/.

Artifacts are written to a staging directory beside the final one, then swapped in with one
``renameat2(RENAME_EXCHANGE)`` (falling back to ``fsutil.replace_dir``): a failed or killed build
leaves the previous good artifacts in place, never a mix.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from ovmfgen.paths import MANIFEST_NAME
from ovmfgen.fsutil import replace_dir

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE). False when unsupported here."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def recover_dist(final: Path) -> None:
    """Clean what an interrupted publish left beside ``final`` (and restore it if only the old copy is left)."""
    parent = final.parent
    if not parent.is_dir():
        return
    old = parent / f".{final.name}.old"
    if old.is_dir() and not final.exists():
        os.replace(old, final)  # fsutil.replace_dir was interrupted between its two renames
    for stale in parent.glob(f".{final.name}.staging-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def publish(files: Mapping[str, bytes], final: Path) -> None:
    """Write ``files`` into a staging dir beside ``final`` and swap it in atomically.

    ``manifest.json`` is written last; until the swap, ``final`` keeps the previous artifacts.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    recover_dist(final)
    staging = final.parent / f".{final.name}.staging-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    try:
        names = sorted(files, key=lambda n: (n == MANIFEST_NAME, n))
        for name in names:
            with open(staging / name, "wb") as fh:
                fh.write(files[name])
                fh.flush()
                os.fsync(fh.fileno())
        dfd = os.open(staging, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        if final.exists() and _exchange(staging, final):
            shutil.rmtree(staging, ignore_errors=True)  # now holds the previous artifacts
        else:
            replace_dir(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
