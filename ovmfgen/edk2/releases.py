"""The edk2 releases ovmfgen knows: tag, commit, release date, and the tarball that carries each.

A tree of a known release is a named, verified input: its tarball (in ``$OVMFGEN_EDK2_TARBALLS``, or
for the default release Debian's source package) must match the sha256 pinned here. Adding a release
is one ``Release(...)`` entry below.
"""

from __future__ import annotations

from dataclasses import dataclass

from ovmfgen.errors import OvmfgenError

UPSTREAM_URL = "https://github.com/tianocore/edk2.git"


@dataclass(frozen=True)
class DebianSource:
    """Where Debian ships a release: its source package, upstream version and suite."""

    package: str
    upstream_version: str
    suite: str


@dataclass(frozen=True)
class Release:
    """One edk2 release: what it is (tag, commit, date) and the tarball that carries it."""

    tag: str
    commit: str
    # The tag's date, YYYY-MM-DD: the SMBIOS release date the firmware carries.
    release_date: str
    # The tarball's file name (looked for in $OVMFGEN_EDK2_TARBALLS), sha256, size and top directory.
    tarball: str
    sha256: str
    size: int
    topdir: str
    # Set when Debian's source package of this release can be fetched through apt (its orig tarball is
    # ``tarball``); None when only a local tarball or a checkout can provide the tree.
    debian: DebianSource | None = None


RELEASES: dict[str, Release] = {r.tag: r for r in (
    Release(
        tag="edk2-stable202502",
        commit="fbe0805b2091393406952e84724188f8c1941837",
        # Every file not from a submodule carries this date in Debian's orig tarball (its get-orig-source
        # uses `git archive`, which stamps the commit time, 2025-02-21 00:50:36 UTC).
        release_date="2025-02-21",
        tarball="edk2_2025.02.orig.tar.xz",
        sha256="b63b6053d6d89c74d9291f9e96fde1584be99e6fb9c169ba9511505129d6b049",
        size=29646336,
        topdir="edk2-2025.02",
        debian=DebianSource(package="edk2", upstream_version="2025.02", suite="trixie"),
    ),
    Release(
        tag="edk2-stable202605",
        commit="b03a21a63e3bd001f52c527e5a57feddb53a690b",
        release_date="2026-05-08",
        # Assembled offline (its OFFLINE-ASSEMBLY.txt says how it differs from the tag); no Debian source.
        tarball="edk2-stable202605.tar.xz",
        sha256="c7e8d6e3d98affdc2d9c64b5eabcd53e75be108ab383826628c9f67baca7508c",
        size=58889904,
        topdir="edk2-stable202605",
    ),
)}

#: Every known tag, oldest first.
KNOWN_TAGS: tuple[str, ...] = tuple(sorted(RELEASES))
#: The tree every stage uses when no ``--edk2`` is given (Debian trixie's edk2).
DEFAULT_TAG = "edk2-stable202502"
#: The newest known release (``invoke patch`` targets it by default).
NEWEST_TAG = KNOWN_TAGS[-1]


def release(tag: str) -> Release:
    """The known release ``tag``; a one-line OvmfgenError naming the known tags otherwise."""
    try:
        return RELEASES[tag]
    except KeyError:
        raise OvmfgenError(f"unknown edk2 tag '{tag}' (known: {', '.join(KNOWN_TAGS)})") from None


def by_commit(commit: str | None) -> Release | None:
    """The known release whose tag points at ``commit``, if any."""
    for r in RELEASES.values():
        if commit and r.commit == commit:
            return r
    return None


def path_part(tag: str | None) -> str:
    """The directory naming a tree in dist/ and build/: "" for the default tree (its paths stay as they
    were before there were several trees), else the tag."""
    return "" if tag in (None, "", DEFAULT_TAG) else str(tag)


def setup_hint(tag: str | None) -> str:
    """How to set up the tree of ``tag`` (the default tree needs no ``--edk2``)."""
    if tag is None or tag == DEFAULT_TAG:
        return "run `invoke setup`"
    return f"run `invoke setup --edk2 {tag}`"
