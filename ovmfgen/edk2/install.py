"""Make an edk2 tree ready: put it in place (or adopt a checkout), build its BaseTools, record its identity.

The identity (``identity.json``) is written last: its presence says the tree is complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2.basetools import build_basetools
from ovmfgen.edk2.debian import debian_removed_files, ensure_downloads
from ovmfgen.edk2.fetch import clean_stale, empty_submodules, setup_lock, unpack_tarball
from ovmfgen.edk2.tree import PIN, Edk2Tree
from ovmfgen.errors import OvmfgenError
from ovmfgen.fsutil import atomic_write_bytes
from ovmfgen.ui import say


def debian_identity(record: dict, removed: list[str], empty: list[str]) -> dict:
    """The identity of the pinned tree unpacked from Debian's orig tarball."""
    return {
        "schema": edk2.IDENTITY_SCHEMA,
        "tag": PIN.tag,
        "commit": PIN.commit,
        "url": PIN.url,
        "release_date": PIN.release_date,
        "source": "debian",
        "debian": {
            "package": record["package"],
            "version": record["version"],
            "suite": record["suite"],
            "checked_against": "the Sources index of the apt-verified (signed) InRelease, and the pin",
            "tarballs": record["tarballs"],
        },
        "debian_removed_files": removed,
        "empty_submodules": empty,
        "changes": list(edk2.CHANGES),
        "basetools_applications": list(edk2.BASETOOLS_APPLICATIONS),
    }


def write_identity(directory: Path, identity: dict) -> None:
    """Record ``identity`` (the last step: its presence says the tree is complete)."""
    atomic_write_bytes(directory / edk2.IDENTITY_FILE,
                       (json.dumps(identity, indent=2, sort_keys=True) + "\n").encode())


def install_debian_tree(directory: Path, downloads: Path, record: dict) -> dict:
    """Unpack the verified orig tarball to ``directory/tree`` and record its identity."""
    # Invalidate first: from here until write_identity the tree is not known complete, and BaseTools
    # built from a previous tree are not trusted with the new one.
    (directory / edk2.IDENTITY_FILE).unlink(missing_ok=True)
    (directory / edk2.BASETOOLS_DIR / edk2.BASETOOLS_MARKER).unlink(missing_ok=True)
    root = directory / "tree"
    say(f"unpacking {PIN.orig_tarball} to {root}")
    unpack_tarball(downloads / PIN.orig_tarball, root, PIN.orig_topdir)
    if not (root / "OvmfPkg").is_dir():
        raise OvmfgenError(f"{PIN.orig_tarball} unpacked without OvmfPkg/: not an edk2 tree")
    debian_tar = next(n for n in record["tarballs"] if n != PIN.orig_tarball)
    removed = debian_removed_files(downloads / debian_tar)
    present = [f for f in removed if (root / f).exists()]
    if present:
        raise OvmfgenError(f"{PIN.orig_tarball}: files Debian says it removed are present: {present}")
    identity = debian_identity(record, removed, empty_submodules(root))
    write_identity(directory, identity)
    return identity


def local_identity(root: Path, source: str) -> dict:
    """The identity of a tree outside the cache (submodule or $OVMFGEN_EDK2 checkout)."""
    commit = edk2.git_head(root)
    pinned = commit == PIN.commit
    return {
        "schema": edk2.IDENTITY_SCHEMA,
        "tag": PIN.tag if pinned else None,
        "commit": commit,
        "url": PIN.url,
        "release_date": PIN.release_date if pinned else None,
        "source": source,
        "empty_submodules": empty_submodules(root),
        "changes": list(edk2.CHANGES),
        "basetools_applications": list(edk2.BASETOOLS_APPLICATIONS),
    }


def ensure_local_tree(root: Path, source: str, force: bool = False) -> bool:
    """BaseTools and identity for a submodule/$OVMFGEN_EDK2 tree. Returns True if it did something."""
    if not (root / "OvmfPkg").is_dir():
        raise OvmfgenError(f"{root} is not an edk2 tree (no OvmfPkg/)")
    missing = edk2.missing_submodules(root)
    if missing:
        raise OvmfgenError(f"{root} lacks submodules the firmware needs: run "
                           f"`git -C {root} submodule update --init {' '.join(missing)}`")
    directory = edk2.local_dir(root)
    clean_stale(directory)
    identity = edk2.read_identity(directory)
    wanted = local_identity(root, source)
    if not force and identity == wanted and edk2.basetools_ready(directory):
        return False
    (directory / edk2.IDENTITY_FILE).unlink(missing_ok=True)
    build_basetools(root, directory)
    write_identity(directory, wanted)
    return True


def ensure_debian_tree(force: bool = False) -> bool:
    """The pinned tree from Debian's orig tarball, and its BaseTools. Returns True if it did something."""
    directory = edk2.debian_dir()
    stale = clean_stale(directory)
    if stale:
        say(f"removed what an interrupted setup left: {', '.join(p.name for p in stale)}")
    did = False
    identity = edk2.read_identity(directory)
    if force or identity is None or not (directory / "tree" / "OvmfPkg").is_dir():
        downloads, record = ensure_downloads(force)
        install_debian_tree(directory, downloads, record)
        did = True
    if force or not edk2.basetools_ready(directory):
        build_basetools(edk2.debian_tree_root(), directory)
        did = True
    return did


def ensure_edk2(force: bool = False) -> tuple[Edk2Tree, bool]:
    """Make the tree ``edk2.locate()`` will choose ready; return it and whether anything was done."""
    override = os.environ.get("OVMFGEN_EDK2")
    with setup_lock():
        if override:
            did = ensure_local_tree(Path(override).expanduser().resolve(), "env", force)
        elif edk2.submodule_initialised():
            did = ensure_local_tree(edk2.submodule_root().resolve(), "submodule", force)
        else:
            did = ensure_debian_tree(force)
    return edk2.locate(), did
