"""Make an edk2 tree ready: put it in place (or adopt a checkout), build its BaseTools, record its identity.

The identity (``identity.json``) is written last: its presence says the tree is complete.
"""

from __future__ import annotations

import os
from pathlib import Path

from ovmfgen.cacheentry import clean_stale, write_stamp
from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2.basetools import build_basetools
from ovmfgen.edk2.debian import debian_removed_files, ensure_downloads
from ovmfgen.edk2.fetch import (
    TARBALLS_ENV, assembly_record, check_file, empty_submodules, local_tarball, setup_lock, unpack_tarball,
)
from ovmfgen.edk2.releases import DEFAULT_TAG, KNOWN_TAGS, RELEASES, UPSTREAM_URL, Release, by_commit, release
from ovmfgen.edk2.tree import PIN, Edk2Tree
from ovmfgen.errors import OvmfgenError
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
    write_stamp(directory, identity, edk2.IDENTITY_FILE)


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


def tarball_identity(rel: Release, root: Path) -> dict:
    """The identity of a known release unpacked from its verified tarball (``$OVMFGEN_EDK2_TARBALLS``)."""
    return {
        "schema": edk2.IDENTITY_SCHEMA,
        "tag": rel.tag,
        "commit": rel.commit,
        "url": UPSTREAM_URL,
        "release_date": rel.release_date,
        "source": "tarball",
        "tarball": {"name": rel.tarball, "sha256": rel.sha256, "size": rel.size,
                    "checked_against": "the sha256 pinned in ovmfgen/edk2/releases.py"},
        "assembly": assembly_record(root),
        "empty_submodules": empty_submodules(root),
        "changes": list(edk2.CHANGES),
        "basetools_applications": list(edk2.BASETOOLS_APPLICATIONS),
    }


def install_tarball_tree(directory: Path, rel: Release, tarball: Path) -> dict:
    """Check ``tarball`` against the pinned sha256, unpack it to ``directory/tree``, record its identity."""
    (directory / edk2.IDENTITY_FILE).unlink(missing_ok=True)
    (directory / edk2.BASETOOLS_DIR / edk2.BASETOOLS_MARKER).unlink(missing_ok=True)
    check_file(tarball, rel.sha256, rel.size, f"pinned for {rel.tag}")
    root = directory / "tree"
    say(f"unpacking {tarball} to {root}")
    unpack_tarball(tarball, root, rel.topdir)
    if not (root / "OvmfPkg").is_dir():
        raise OvmfgenError(f"{rel.tarball} unpacked without OvmfPkg/: not an edk2 tree")
    missing = edk2.missing_submodules(root)
    if missing:
        raise OvmfgenError(f"{rel.tarball} lacks submodules the firmware needs: {', '.join(missing)}")
    identity = tarball_identity(rel, root)
    write_identity(directory, identity)
    return identity


def local_identity(root: Path, source: str, stated: str | None = None) -> dict:
    """The identity of a tree outside the cache (submodule or $OVMFGEN_EDK2 checkout).

    Its tag is the one ``stated`` (``--edk2 TAG``), else the known release at its commit, else what
    ``git describe`` says; its release date is the known release's, else the commit date.
    """
    commit = edk2.git_head(root)
    known = by_commit(commit)
    if stated:
        tag, tag_from, rel = stated, "stated", RELEASES.get(stated)
        if rel is not None and commit and commit != rel.commit:
            say(f"note: {root} is at commit {commit}, not at {stated}'s {rel.commit}; recorded as {stated}, "
                f"as stated")
    elif known is not None:
        tag, tag_from, rel = known.tag, "commit", known
    else:
        tag, rel = edk2.git_describe(root), None
        tag_from = "git describe" if tag else None
    release_date = rel.release_date if rel is not None else edk2.commit_date(root)
    if commit is None and not stated:
        raise OvmfgenError(f"{root} is not a git checkout: say which edk2 it is with `--edk2 TAG` "
                           f"(known: {', '.join(KNOWN_TAGS)})")
    if not release_date:
        raise OvmfgenError(f"cannot tell the release date of {root} ({stated} is not a known release and it is "
                           f"not a git checkout; known: {', '.join(KNOWN_TAGS)})")
    return {
        "schema": edk2.IDENTITY_SCHEMA,
        "tag": tag,
        "tag_from": tag_from,
        "commit": commit,
        "url": UPSTREAM_URL,
        "release_date": release_date,
        "source": source,
        "assembly": assembly_record(root),
        "empty_submodules": empty_submodules(root),
        "changes": list(edk2.CHANGES),
        "basetools_applications": list(edk2.BASETOOLS_APPLICATIONS),
    }


def probe_checkout(root: Path) -> edk2.Edk2Tree:
    """The checkout at ``root`` as git names it (``local_identity``), without setting it up: for checks that
    only read its files (the nightly's check of a checkout cell's switches, before the cell sets it up and
    builds its BaseTools). Its ``basetools`` is where setup will put them, and may not exist yet."""
    return edk2.Edk2Tree(root=root, basetools=edk2.basetools_path(edk2.local_dir(root)),
                         identity=local_identity(root, "env"))


def ensure_local_tree(root: Path, source: str, force: bool = False, stated: str | None = None) -> bool:
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
    wanted = local_identity(root, source, stated)
    if not force and identity == wanted and edk2.basetools_ready(directory):
        return False
    (directory / edk2.IDENTITY_FILE).unlink(missing_ok=True)
    # BaseTools depend on the commit, not on the name: a re-statement of the tag keeps them.
    if force or identity is None or identity.get("commit") != wanted["commit"] or not edk2.basetools_ready(directory):
        build_basetools(root, directory)
    write_identity(directory, wanted)
    return True


def ensure_release_tree(tag: str, force: bool = False) -> bool:
    """The cache's tree of the known release ``tag`` and its BaseTools. Returns True if it did something.

    The tree comes from the release's tarball in ``$OVMFGEN_EDK2_TARBALLS`` when there is one, else from
    Debian's source package when Debian ships the release. Call it under ``setup_lock()``.
    """
    rel = release(tag)
    directory = edk2.tree_dir(rel.tag)
    stale = clean_stale(directory)
    if stale:
        say(f"removed what an interrupted setup left: {', '.join(p.name for p in stale)}")
    did = False
    identity = edk2.read_identity(directory)
    if force or identity is None or not (directory / "tree" / "OvmfPkg").is_dir():
        tarball = local_tarball(rel)
        if tarball is not None:
            install_tarball_tree(directory, rel, tarball)
        elif rel.debian is not None and rel.tag == PIN.tag:
            downloads, record = ensure_downloads(force)
            install_debian_tree(directory, downloads, record)
        else:
            raise OvmfgenError(
                f"no source for {rel.tag}: set {TARBALLS_ENV} to a directory holding {rel.tarball} "
                f"(sha256 {rel.sha256}), or OVMFGEN_EDK2 to a checkout and run `invoke setup --edk2 {rel.tag}`")
        did = True
    if force or not edk2.basetools_ready(directory):
        build_basetools(directory / "tree", directory)
        did = True
    return did


def ensure_debian_tree(force: bool = False) -> bool:
    """The default tree (Debian's orig tarball, or its tarball in $OVMFGEN_EDK2_TARBALLS), and its BaseTools."""
    return ensure_release_tree(DEFAULT_TAG, force)


def ensure_edk2(tag: str | None = None, force: bool = False) -> tuple[Edk2Tree, bool]:
    """Make the tree ``edk2.locate(tag)`` will choose ready; return it and whether anything was done.

    With ``$OVMFGEN_EDK2`` set, that checkout is set up, under ``tag`` when one is given (the developer
    states which edk2 it is). Otherwise an initialised submodule serves the default tree, and ``tag``
    when it is checked out at that release; else the cache's tree of ``tag`` (default: DEFAULT_TAG).
    """
    tag = edk2.checkout_argument(tag)
    override = os.environ.get("OVMFGEN_EDK2")
    with setup_lock():
        if override:
            did = ensure_local_tree(Path(override).expanduser().resolve(), "env", force, stated=tag)
        elif edk2.submodule_initialised() and (
                tag is None or edk2.git_head(edk2.submodule_root()) == release(tag).commit):
            did = ensure_local_tree(edk2.submodule_root().resolve(), "submodule", force)
        else:
            did = ensure_release_tree(tag or DEFAULT_TAG, force)
    return edk2.locate(tag), did


def ensure_release(tag: str) -> tuple[Edk2Tree, bool]:
    """The tree ``locate(tag)`` finds when it is ready, else the cache's tree of ``tag``, set up now.

    For ``invoke test``: unlike ``ensure_edk2``, it never states a tag for an $OVMFGEN_EDK2 checkout.
    """
    try:
        return edk2.locate(tag), False
    except OvmfgenError:
        with setup_lock():
            did = ensure_release_tree(tag)
        return edk2.locate(tag), did
