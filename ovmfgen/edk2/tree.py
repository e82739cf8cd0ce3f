"""Where an edk2 tree is, which edk2 it is, and where its BaseTools are.

``locate(tag)`` answers on every render/build, so it only reads small files: the identity recorded by
``invoke setup`` (``identity.json``) and the BaseTools completion marker. It never hashes the tree.

Which tree serves ``tag`` (None: the default tree, ``releases.DEFAULT_TAG``), in this order:

1. ``$OVMFGEN_EDK2``: a developer's own edk2 checkout ("env"): the default tree, and the tree of the
   tag it was set up under (``git describe``, or the tag the developer stated);
2. the ``edk2`` submodule of this repository, when initialised ("submodule"): likewise;
3. the cache's tree of a known release (``releases.RELEASES``), unpacked from its verified tarball
   ("tarball", from ``$OVMFGEN_EDK2_TARBALLS``) or Debian's source package ("debian").

Cache layout (``paths.cache_dir()``)::

    edk2/<tag>/                      one known release, e.g. edk2-stable202502, edk2-stable202605
        tree/                        the release's content, unpacked from its verified tarball
        basetools/BaseTools/         BaseTools copied out of the tree and built there
        basetools/.complete          marker: the BaseTools build finished
        identity.json                written last: the tree is complete
    edk2/local-<hash of path>/       for a submodule or $OVMFGEN_EDK2 tree: identity.json, basetools/
    edk2/downloads/                  the verified Debian tarballs and what the signed index said of them
    apt/                             the private apt configuration used to fetch them
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ovmfgen import paths
from ovmfgen.edk2.releases import (  # noqa: F401  (KNOWN_TAGS, NEWEST_TAG: re-exported for callers)
    DEFAULT_TAG, KNOWN_TAGS, NEWEST_TAG, RELEASES, UPSTREAM_URL, Release, release, setup_hint,
)
from ovmfgen.errors import OvmfgenError
from ovmfgen.run import run


@dataclass(frozen=True)
class Pin:
    """The default release as Debian ships it (kept for the code written before ``releases``)."""

    tag: str
    commit: str
    url: str
    debian_source: str
    upstream_version: str
    suite: str
    orig_tarball: str
    orig_sha256: str
    orig_size: int
    release_date: str
    # The top-level directory inside the orig tarball.
    orig_topdir: str


def _pin(r: Release) -> Pin:
    assert r.debian is not None
    return Pin(tag=r.tag, commit=r.commit, url=UPSTREAM_URL, debian_source=r.debian.package,
               upstream_version=r.debian.upstream_version, suite=r.debian.suite, orig_tarball=r.tarball,
               orig_sha256=r.sha256, orig_size=r.size, release_date=r.release_date, orig_topdir=r.topdir)


PIN = _pin(RELEASES[DEFAULT_TAG])

# The one change ovmfgen makes to how edk2 is built (recorded in every identity).
CHANGES = (
    "BaseTools built without BrotliCompress (brotli submodule is empty in the Debian orig tarball; "
    "OVMF does not use it)",
)

# BaseTools/Source/C/GNUmakefile's APPLICATIONS less BrotliCompress (its brotli submodule is empty).
BASETOOLS_APPLICATIONS = (
    "VfrCompile", "EfiRom", "GenFfs", "GenFv", "GenFw", "GenSec", "GenCrc32",
    "LzmaCompress", "TianoCompress", "VolInfo", "DevicePath",
)

# The submodules Debian embeds in its orig tarball (debian/rules EMBEDDED_SUBMODULES): what building the
# firmware needs. A submodule or $OVMFGEN_EDK2 checkout must have them populated too.
REQUIRED_SUBMODULES = (
    "CryptoPkg/Library/MbedTlsLib/mbedtls",
    "CryptoPkg/Library/OpensslLib/openssl",
    "MdeModulePkg/Library/BrotliCustomDecompressLib/brotli",
    "MdePkg/Library/BaseFdtLib/libfdt",
    "MdePkg/Library/MipiSysTLib/mipisyst",
    "SecurityPkg/DeviceSecurity/SpdmLib/libspdm",
)

IDENTITY_FILE = "identity.json"
BASETOOLS_DIR = "basetools"
BASETOOLS_MARKER = ".complete"
IDENTITY_SCHEMA = 1

SETUP_HINT = setup_hint(None)


@dataclass(frozen=True)
class Edk2Tree:
    """A ready edk2 tree: its root (WORKSPACE/PACKAGES_PATH), BaseTools (EDK_TOOLS_PATH), identity."""

    root: Path
    basetools: Path
    identity: dict = field(hash=False)

    @property
    def digest(self) -> str:
        """sha256 of the canonical JSON of ``identity``: what the build's input hash uses."""
        return identity_digest(self.identity)

    @property
    def tag(self) -> str:
        """The tree's name: its release tag (``edk2-stable202502``), else ``git describe`` or the commit."""
        return tree_name(self.identity)

    @property
    def release_date(self) -> str:
        """The release date (YYYY-MM-DD): the tag's, else the checkout's commit date, as set up."""
        date = self.identity.get("release_date")
        if not date:
            raise OvmfgenError(f"the edk2 tree at {self.root} has no recorded release date "
                               f"(set up by an older ovmfgen): {SETUP_HINT}")
        return str(date)


def tree_name(identity: dict) -> str:
    """A tree's name from its identity: the tag, else ``edk2-<commit[:12]>`` (``edk2-unknown`` without one)."""
    tag = identity.get("tag")
    if tag:
        return str(tag)
    commit = str(identity.get("commit") or "")
    return f"edk2-{commit[:12]}" if commit else "edk2-unknown"


def identity_digest(identity: dict) -> str:
    """sha256 (hex) of ``identity`` as canonical JSON (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def edk2_cache() -> Path:
    """``<cache>/edk2``: everything ovmfgen keeps about edk2 trees."""
    return paths.cache_dir() / "edk2"


def tree_dir(tag: str = DEFAULT_TAG) -> Path:
    """The cache directory of a known release's tree (``tree/``, ``basetools/``, ``identity.json``)."""
    return edk2_cache() / release(tag).tag


def debian_dir() -> Path:
    """The cache directory of the default tree (unpacked from Debian's orig tarball)."""
    return tree_dir(DEFAULT_TAG)


def debian_tree_root() -> Path:
    """Where the default Debian tree is unpacked."""
    return debian_dir() / "tree"


def local_dir(root: Path) -> Path:
    """The cache directory (identity, BaseTools) for a tree living elsewhere, keyed by its resolved path."""
    key = hashlib.sha256(str(root.resolve()).encode("utf-8")).hexdigest()[:16]
    return edk2_cache() / f"local-{key}"


def submodule_root(repo_root: Path | None = None) -> Path:
    """The path of the ``edk2`` submodule of this repository."""
    return (repo_root or paths.REPO_ROOT) / "edk2"


def submodule_initialised(repo_root: Path | None = None) -> bool:
    """True when the submodule holds a checkout (it has OvmfPkg/), not just the empty gitlink directory."""
    return (submodule_root(repo_root) / "OvmfPkg").is_dir()


def git_head(root: Path) -> str | None:
    """The commit checked out at ``root``, or None when it is not a git checkout (or git is missing)."""
    if not (root / ".git").exists():
        return None
    try:
        proc = run(["git", "-C", root, "rev-parse", "--verify", "HEAD"], check=False)
    except OvmfgenError:
        return None
    head = proc.stdout.strip()
    return head if proc.returncode == 0 and len(head) == 40 else None


def git_describe(root: Path) -> str | None:
    """``git describe --tags`` of the checkout at ``root`` (``TAG`` or ``TAG-N-gHASH``), None without tags."""
    try:
        proc = run(["git", "-C", root, "describe", "--tags", "HEAD"], check=False)
    except OvmfgenError:
        return None
    text = proc.stdout.strip()
    return text if proc.returncode == 0 and text else None


def commit_date(root: Path) -> str | None:
    """The committer date (YYYY-MM-DD) of the checkout's HEAD, None when it is not a git checkout."""
    try:
        # --no-mailmap: the date needs no .mailmap, and git's warning about one it cannot read (a symbolic
        # link, which git refuses) would land in the output (run() merges stderr).
        proc = run(["git", "-C", root, "log", "--no-mailmap", "-1", "--format=%cs", "HEAD"], check=False)
    except OvmfgenError:
        return None
    text = proc.stdout.strip()
    return text if proc.returncode == 0 and text else None


def missing_submodules(root: Path) -> list[str]:
    """The REQUIRED_SUBMODULES that are absent or empty under ``root``."""
    missing = []
    for rel in REQUIRED_SUBMODULES:
        d = root / rel
        if not d.is_dir() or not any(d.iterdir()):
            missing.append(rel)
    return missing


def read_identity(directory: Path) -> dict | None:
    """The identity recorded in ``directory``, or None when there is none (not set up, or interrupted)."""
    try:
        data = json.loads((directory / IDENTITY_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise OvmfgenError(f"unreadable edk2 identity {directory / IDENTITY_FILE} ({exc}): {SETUP_HINT}") from None
    if not isinstance(data, dict) or data.get("schema") != IDENTITY_SCHEMA:
        return None
    return data


def basetools_ready(directory: Path) -> bool:
    """True when ``directory/basetools`` holds a completed BaseTools build."""
    return (directory / BASETOOLS_DIR / BASETOOLS_MARKER).is_file()


def basetools_path(directory: Path) -> Path:
    """EDK_TOOLS_PATH for the BaseTools built in ``directory``."""
    return directory / BASETOOLS_DIR / "BaseTools"


def checkout_argument(tag: str | None) -> str | None:
    """``--edk2 PATH``: a value naming a directory (it has a '/' or is one) is an edk2 checkout, the same
    as ``OVMFGEN_EDK2=PATH`` (set here, so child processes see it too); the tree is then the default one
    (None). A tag is returned as it is."""
    if not tag or ("/" not in tag and not Path(tag).is_dir()):
        return tag
    root = Path(tag).expanduser()
    if not (root / "OvmfPkg").is_dir():
        raise OvmfgenError(f"--edk2 {tag}: not an edk2 tree (no OvmfPkg/); --edk2 takes a release tag or a "
                           f"checkout's path")
    os.environ["OVMFGEN_EDK2"] = str(root.resolve())
    return None


def locate(tag: str | None = None, repo_root: Path | None = None) -> Edk2Tree:
    """The edk2 tree of ``tag`` (None: the default tree), ready to build with.

    A tree the developer provides comes first: ``$OVMFGEN_EDK2``, else an initialised ``edk2`` submodule.
    It is the default tree, and the tree of ``tag`` when its recorded identity has that tag; otherwise
    the tree of a known ``tag`` is the one ``invoke setup --edk2 TAG`` unpacked in the cache. Raises a
    one-line OvmfgenError for an unknown tag and for a tree that is not set up (pointing at ``invoke
    setup``). ``repo_root`` is for tests (default: this repository).
    """
    tag = checkout_argument(tag)
    override = os.environ.get("OVMFGEN_EDK2")
    if override:
        root = Path(override).expanduser()
        if not (root / "OvmfPkg").is_dir():
            raise OvmfgenError(f"OVMFGEN_EDK2={override} is not an edk2 tree (no OvmfPkg/)")
        root = root.resolve()
        if _serves(root, tag, "env"):
            return _locate_local(root, "env", f"OVMFGEN_EDK2={override}", tag)
    if submodule_initialised(repo_root):
        root = submodule_root(repo_root).resolve()
        if _serves(root, tag, "submodule"):
            return _locate_local(root, "submodule", "the edk2 submodule", tag)
    wanted = release(tag or DEFAULT_TAG).tag
    hint = setup_hint(wanted)
    directory = tree_dir(wanted)
    identity = read_identity(directory)
    root = directory / "tree"
    if identity is None or not (root / "OvmfPkg").is_dir():
        if directory.exists():
            raise OvmfgenError(f"edk2 tree {wanted} in {directory} is incomplete (interrupted setup?): {hint}")
        raise OvmfgenError(f"edk2 tree {wanted} not set up: {hint}")
    if not basetools_ready(directory):
        raise OvmfgenError(f"edk2 BaseTools not built in {directory / BASETOOLS_DIR}: {hint}")
    return Edk2Tree(root=root, basetools=basetools_path(directory), identity=identity)


def _serves(root: Path, tag: str | None, source: str) -> bool:
    """True when the provided tree at ``root`` is the one to use for ``tag``.

    It is the default tree; for a named tag it serves when it was set up under that tag. Not set up
    yet, an $OVMFGEN_EDK2 tree still serves (the error then points at its setup, which is what the
    developer meant), a submodule only when it is checked out at that release's commit.
    """
    if tag is None:
        return True
    identity = read_identity(local_dir(root))
    if identity is not None:
        # Its name as Edk2Tree.tag gives it, so that locate(tree.tag) finds the same tree again.
        return tree_name(identity) == tag
    if source == "env":
        return True
    known = RELEASES.get(tag)
    return known is not None and git_head(root) == known.commit


def _locate_local(root: Path, source: str, what: str, tag: str | None) -> Edk2Tree:
    """A tree outside the cache: its identity and BaseTools live in ``local_dir(root)``."""
    directory = local_dir(root)
    identity = read_identity(directory)
    hint = setup_hint(tag)
    if identity is None or identity.get("source") != source or not basetools_ready(directory):
        raise OvmfgenError(f"BaseTools not built for {what} ({root}): {hint}")
    # The identity names a commit; a checkout moved since setup would be built under the wrong name
    # (and with BaseTools of another commit). One `git rev-parse` is cheap enough for every call.
    head = git_head(root)
    if head != identity.get("commit"):
        raise OvmfgenError(
            f"{what} ({root}) is at commit {head or 'unknown'} but was set up at "
            f"{identity.get('commit') or 'unknown'}: {hint}"
        )
    return Edk2Tree(root=root, basetools=basetools_path(directory), identity=identity)
