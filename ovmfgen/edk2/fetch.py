"""Shared plumbing for putting edk2 trees in the cache: the setup lock, checks, unpacking.

Everything goes to a temp file/dir beside its final place and is renamed in (``cacheentry.staged``), so a
killed run never leaves something that looks complete; the next run removes the leftovers
(``cacheentry.clean_stale``, under the setup lock).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path

from ovmfgen.cacheentry import staged
from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2.releases import Release
from ovmfgen.errors import OvmfgenError
from ovmfgen.fsutil import exclusive, sha256_file

# A directory of release tarballs (named as in releases.RELEASES); CI points it at ../shared/edk2.
TARBALLS_ENV = "OVMFGEN_EDK2_TARBALLS"
# What a tree assembled offline says about how it differs from its tag (recorded in its identity).
ASSEMBLY_FILE = "OFFLINE-ASSEMBLY.txt"


@contextlib.contextmanager
def setup_lock() -> Iterator[None]:
    """Hold ``<cache>/edk2/.lock`` so two setups never work on the cache at once."""
    with exclusive(edk2.edk2_cache() / ".lock", "another `invoke setup` is running"):
        yield


def check_file(path: Path, sha256: str, size: int, what: str) -> None:
    """Raise a one-line OvmfgenError unless ``path`` has this size and sha256."""
    if not path.is_file():
        raise OvmfgenError(f"{what}: {path.name} was not downloaded")
    actual_size = path.stat().st_size
    actual = sha256_file(path)
    if actual != sha256 or actual_size != size:
        raise OvmfgenError(
            f"checksum mismatch for {path.name} ({what}): sha256 {actual} ({actual_size} bytes), "
            f"expected {sha256} ({size} bytes)"
        )


def unpack_tarball(tarball: Path, final: Path, topdir: str) -> None:
    """Unpack ``tarball``'s ``topdir/`` to ``final`` atomically: into a temp dir beside it, then rename.

    A run killed mid-way leaves only a ``.NAME.tmp-*`` dir, which ``cacheentry.clean_stale`` removes;
    ``final`` is either absent, the previous tree, or the complete new one.
    """
    with staged(final, content=topdir) as staging:
        with tarfile.open(tarball) as tar:
            # The tarball is checksum-verified; the `tar` filter still refuses paths escaping `staging`
            # while keeping edk2's own absolute symlink (EmulatorPkg's X11IncludeHack).
            tar.extractall(staging, filter="tar")
        if not (staging / topdir).is_dir():
            raise OvmfgenError(f"{tarball.name} has no {topdir}/ directory")


def empty_submodules(root: Path) -> list[str]:
    """Submodule paths in the tree's .gitmodules that are absent or empty (not shipped)."""
    gm = root / ".gitmodules"
    if not gm.is_file():
        return []
    out = []
    for m in re.finditer(r"^\s*path\s*=\s*(\S+)\s*$", gm.read_text(encoding="utf-8"), re.M):
        d = root / m.group(1)
        if not d.is_dir() or not any(d.iterdir()):
            out.append(m.group(1))
    return sorted(out)


def local_tarball(rel: Release) -> Path | None:
    """``rel``'s tarball in ``$OVMFGEN_EDK2_TARBALLS``, when that is set and holds it (not yet verified)."""
    directory = os.environ.get(TARBALLS_ENV)
    if not directory:
        return None
    path = Path(directory).expanduser() / rel.tarball
    return path if path.is_file() else None


def assembly_record(root: Path) -> dict | None:
    """How the tree at ``root`` was assembled: its OFFLINE-ASSEMBLY.txt's sha256 and first line, if any."""
    path = root / ASSEMBLY_FILE
    if not path.is_file():
        return None
    data = path.read_bytes()
    lines = data.decode("utf-8", errors="replace").splitlines()
    return {"file": ASSEMBLY_FILE, "sha256": hashlib.sha256(data).hexdigest(),
            "first_line": lines[0].strip() if lines else ""}
