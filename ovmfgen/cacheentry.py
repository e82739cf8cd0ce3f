"""One cache entry: a directory in ovmfgen's cache that is either absent or complete, never half made.

An entry is made under a lock, in a temp dir beside its final place (same file system), with a stamp
file (JSON) written last into it, and renamed into place (``fsutil.replace_dir``): a run killed at any
point leaves either the previous entry or the new one at the final path, plus perhaps a temp dir that the
next run removes under the same lock (``clean_stale``). The stamp says what the entry was made of; an
entry whose stamp does not hold what the caller expects is made again.

``ensure(final, make, stamp=..., lock=...)`` does all of it; the edk2 trees, whose entry is several
parts made at different times (the tree, its BaseTools, the identity beside them), use the pieces:
``clean_stale``, ``staged`` and ``write_stamp``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from ovmfgen.fsutil import Lock, atomic_write_bytes, exclusive, replace_dir
from ovmfgen.ui import say

#: The stamp file inside an entry made by ``ensure``.
STAMP_FILE = "stamp.json"
#: In the name of every temp dir ``staging_dir`` makes: ``.<final name>.tmp-<random>``.
TMP_INFIX = ".tmp-"


def clean_stale(directory: Path) -> list[Path]:
    """Remove what killed runs left in ``directory``: temp dirs/files and ``replace_dir``'s ``.NAME.old``.

    Call it only under the lock that guards ``directory``'s entries (a live run's temp dir looks the same).
    Matches dot-names holding ``.tmp-`` (``staging_dir``), ending in ``.tmp`` (``atomic_write_bytes``'s
    temp files, and the Xen cache's temp dirs before this module) or ending in ``.old``.
    """
    removed = []
    if directory.is_dir():
        for p in sorted(directory.iterdir()):
            name = p.name
            if name.startswith(".") and (TMP_INFIX in name or name.endswith((".tmp", ".old"))):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
    return removed


def staging_dir(final: Path) -> Path:
    """A fresh temp dir beside ``final`` (same file system, so it can be renamed into place)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=f".{final.name}{TMP_INFIX}", dir=final.parent))
    d.chmod(0o755)  # mkdtemp's 0700 would follow the directory when it is renamed into place
    return d


@contextlib.contextmanager
def staged(final: Path, content: str | None = None) -> Iterator[Path]:
    """Yield a fresh temp dir beside ``final``; when the block ends without an exception, the dir (or its
    subdirectory ``content``, e.g. a tarball's top dir) replaces ``final``. The temp dir is gone afterwards
    whatever happened; a killed run leaves it for ``clean_stale``."""
    stage = staging_dir(final)
    try:
        yield stage
        replace_dir(stage / content if content else stage, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_stamp(directory: Path, info: Mapping[str, object], name: str = STAMP_FILE) -> None:
    """Write ``info`` as ``directory/name`` (sorted JSON, indent 2, newline; atomically)."""
    atomic_write_bytes(directory / name, (json.dumps(info, indent=2, sort_keys=True) + "\n").encode())


def read_stamp(directory: Path, name: str = STAMP_FILE) -> dict | None:
    """The stamp in ``directory``, or None when there is none or it is not a JSON object."""
    try:
        data = json.loads((directory / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current(final: Path, stamp: Mapping[str, object],
               complete: Callable[[Path], bool] | None = None) -> bool:
    """True when ``final`` has a stamp holding every item of ``stamp`` (and ``complete(final)`` agrees)."""
    found = read_stamp(final)
    if found is None or any(found.get(k, _MISSING) != v for k, v in stamp.items()):
        return False
    return complete is None or complete(final)


_MISSING = object()


def ensure(final: Path, make: Callable[[Path], Mapping[str, object] | None], *,
           stamp: Mapping[str, object], lock: Path | Lock, what: str = "",
           complete: Callable[[Path], bool] | None = None, siblings: str | None = None) -> Path:
    """The entry ``final``, made now by ``make`` unless it is current (``is_current(final, stamp, complete)``).

    - ``make(stage)`` fills the fresh temp dir ``stage``; what it returns is added to the stamp (facts
      only known once made, e.g. a checksum). Whatever it leaves in ``stage`` becomes the entry.
    - ``stamp``: what the entry is made of; a present entry whose stamp differs is made again.
    - ``lock``: the lock file guarding ``final.parent``, taken here (``what`` says why one waits), or the
      ``fsutil.Lock`` the caller already holds. A second caller waits on it, then finds the entry made.
    - ``siblings``: a glob (``"dom0-*"``) of older entries of the same kind, removed once a new one is in.

    Under the lock, what killed runs left in ``final.parent`` is removed first. Returns ``final``.
    """
    if isinstance(lock, Lock):
        return _ensure_locked(final, make, stamp, complete, siblings)
    if is_current(final, stamp, complete):  # a finished entry needs no lock
        return final
    with exclusive(lock, what):
        return _ensure_locked(final, make, stamp, complete, siblings)


def _ensure_locked(final: Path, make: Callable[[Path], Mapping[str, object] | None], stamp: Mapping[str, object],
                   complete: Callable[[Path], bool] | None, siblings: str | None) -> Path:
    stale = clean_stale(final.parent)
    if stale:
        say(f"removed what an interrupted run left: {', '.join(p.name for p in stale)}")
    if is_current(final, stamp, complete):
        return final
    with staged(final) as stage:
        extra = make(stage) or {}
        write_stamp(stage, {**stamp, **extra})
    if siblings:
        for p in final.parent.glob(siblings):
            if p != final and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
    return final
