"""Where the edk2 tree is, which edk2 it is, and where its BaseTools are.

``locate()`` answers on every render/build, so it only reads small files: the identity recorded by
``ovmfgen.host.setup`` (``identity.json``) and the BaseTools completion marker. It never hashes the tree.

Three sources, in this order:

1. ``$OVMFGEN_EDK2``: a developer's own edk2 checkout ("env");
2. the ``edk2`` submodule of this repository, when initialised ("submodule");
3. the Debian orig tarball of the pinned release, unpacked in the cache ("debian").

Cache layout (``paths.cache_dir()``)::

    edk2/edk2-stable202502/          the pinned Debian tree
        tree/                        upstream's content, unpacked from the verified orig tarball
        basetools/BaseTools/         BaseTools copied out of the tree and built there
        basetools/.complete          marker: the BaseTools build finished
        identity.json                written last: the tree is complete
    edk2/local-<hash of path>/       for a submodule or $OVMFGEN_EDK2 tree: identity.json, basetools/
    edk2/downloads/                  the verified tarballs and what the signed index said of them
    apt/                             the private apt configuration used to fetch them
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from ovmfgen import paths
from ovmfgen.errors import OvmfgenError
from ovmfgen.run import run


@dataclass(frozen=True)
class Pin:
    """The one edk2 release ovmfgen builds against."""

    tag: str
    commit: str
    url: str
    debian_source: str
    upstream_version: str
    suite: str
    orig_tarball: str
    orig_sha256: str
    orig_size: int
    # The tag commit's date: every file that is not from a submodule carries this mtime in Debian's orig
    # tarball (its get-orig-source uses `git archive`, which stamps the commit time), 2025-02-21 00:50:36 UTC.
    release_date: str
    # The top-level directory inside the orig tarball.
    orig_topdir: str


PIN = Pin(
    tag="edk2-stable202502",
    commit="fbe0805b2091393406952e84724188f8c1941837",
    url="https://github.com/tianocore/edk2.git",
    debian_source="edk2",
    upstream_version="2025.02",
    suite="trixie",
    orig_tarball="edk2_2025.02.orig.tar.xz",
    orig_sha256="b63b6053d6d89c74d9291f9e96fde1584be99e6fb9c169ba9511505129d6b049",
    orig_size=29646336,
    release_date="2025-02-21",
    orig_topdir="edk2-2025.02",
)

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

SETUP_HINT = "run `invoke setup`"


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


def identity_digest(identity: dict) -> str:
    """sha256 (hex) of ``identity`` as canonical JSON (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def edk2_cache() -> Path:
    """``<cache>/edk2``: everything ovmfgen keeps about edk2 trees."""
    return paths.cache_dir() / "edk2"


def debian_dir() -> Path:
    """The cache directory of the pinned tree unpacked from Debian's orig tarball."""
    return edk2_cache() / PIN.tag


def debian_tree_root() -> Path:
    """Where the pinned Debian tree is unpacked."""
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


def locate(repo_root: Path | None = None) -> Edk2Tree:
    """Find the edk2 tree to build against: ``$OVMFGEN_EDK2``, else the submodule, else the Debian cache.

    Raises OvmfgenError (pointing at ``invoke setup``) when the chosen tree has no recorded identity or
    no BaseTools. ``repo_root`` is for tests (default: this repository).
    """
    override = os.environ.get("OVMFGEN_EDK2")
    if override:
        root = Path(override).expanduser()
        if not (root / "OvmfPkg").is_dir():
            raise OvmfgenError(f"OVMFGEN_EDK2={override} is not an edk2 tree (no OvmfPkg/)")
        return _locate_local(root.resolve(), "env", f"OVMFGEN_EDK2={override}")
    if submodule_initialised(repo_root):
        return _locate_local(submodule_root(repo_root).resolve(), "submodule", "the edk2 submodule")
    directory = debian_dir()
    identity = read_identity(directory)
    root = debian_tree_root()
    if identity is None or not (root / "OvmfPkg").is_dir():
        if directory.exists():
            raise OvmfgenError(f"edk2 tree in {directory} is incomplete (interrupted setup?): {SETUP_HINT}")
        raise OvmfgenError(f"edk2 tree not set up: {SETUP_HINT}")
    if not basetools_ready(directory):
        raise OvmfgenError(f"edk2 BaseTools not built in {directory / BASETOOLS_DIR}: {SETUP_HINT}")
    return Edk2Tree(root=root, basetools=basetools_path(directory), identity=identity)


def _locate_local(root: Path, source: str, what: str) -> Edk2Tree:
    """A tree outside the cache: its identity and BaseTools live in ``local_dir(root)``."""
    directory = local_dir(root)
    identity = read_identity(directory)
    if identity is None or identity.get("source") != source or not basetools_ready(directory):
        raise OvmfgenError(f"BaseTools not built for {what} ({root}): {SETUP_HINT}")
    # The identity names a commit; a checkout moved since setup would be built under the wrong name
    # (and with BaseTools of another commit). One `git rev-parse` is cheap enough for every call.
    head = git_head(root)
    if head != identity.get("commit"):
        raise OvmfgenError(
            f"{what} ({root}) is at commit {head or 'unknown'} but was set up at "
            f"{identity.get('commit') or 'unknown'}: {SETUP_HINT}"
        )
    return Edk2Tree(root=root, basetools=basetools_path(directory), identity=identity)
