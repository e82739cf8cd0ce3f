"""Shared fixtures: an isolated cache for unit tests, small generated edk2-like trees, the real tree.

Unit tests never download anything: they use ``isolated_cache`` (a temp OVMFGEN_CACHE with
OVMFGEN_EDK2 unset) and the generated trees below. Integration tests use the real cache (``edk2_tree``).
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from ovmfgen.edk2 import tree as edk2

# A stand-in for BaseTools/Source/C/GNUmakefile: "builds" each of $(APPLICATIONS) into bin/, recording
# EDK2_PATH, so a test can see that the build ran out of the tree with the right arguments.
FAKE_BASETOOLS_MAKEFILE = """\
all: $(addprefix bin/,$(APPLICATIONS))
bin/%:
\tmkdir -p bin && echo "$(EDK2_PATH)" > $@
.PHONY: all
"""


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty ovmfgen cache for this test; the user's OVMFGEN_EDK2 is ignored."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("OVMFGEN_CACHE", str(cache))
    monkeypatch.delenv("OVMFGEN_EDK2", raising=False)
    return cache


def fake_edk2_files(files_per_dir: int = 3) -> dict[str, bytes]:
    """The files of a tiny edk2-like tree (OvmfPkg/, the required submodules, a fake BaseTools)."""
    files: dict[str, bytes] = {
        "OvmfPkg/OvmfXen.dsc": b"[Defines]\n  PLATFORM_NAME = OvmfXen\n",
        "MdePkg/Include/Uefi.h": b"/* fake */\n",
        "BaseTools/Source/C/GNUmakefile": FAKE_BASETOOLS_MAKEFILE.encode(),
        "BaseTools/BinWrappers/PosixLike/GenFw": b"#!/bin/sh\n",
        ".gitmodules": b'[submodule "x"]\n\tpath = BaseTools/Source/C/BrotliCompress/brotli\n'
                       b'[submodule "y"]\n\tpath = CryptoPkg/Library/OpensslLib/openssl\n',
    }
    for sub in edk2.REQUIRED_SUBMODULES:
        files[f"{sub}/README"] = b"submodule content\n"
    for i in range(files_per_dir):
        files[f"MdePkg/Library/Fake/file{i:05d}.c"] = f"int f{i};\n".encode() * 64
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` under ``root`` (plus the empty brotli submodule directory)."""
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    (root / "BaseTools/Source/C/BrotliCompress/brotli").mkdir(parents=True, exist_ok=True)
    return root


def make_tar_xz(path: Path, members: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    """Write a .tar.xz holding ``members`` (name -> content) and empty ``dirs``."""
    with tarfile.open(path, "w:xz", preset=0) as tar:
        for d in dirs:
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def fake_downloads(tmp_path: Path) -> Callable[..., tuple[Path, dict]]:
    """Factory: a downloads dir with a small generated orig tarball and debian tarball, and their record.

    Named like the pinned tarballs (the content is not the real one: the checksum step is tested apart).
    """

    def make(files_per_dir: int = 3) -> tuple[Path, dict]:
        downloads = tmp_path / "downloads"
        downloads.mkdir(exist_ok=True)
        top = edk2.PIN.orig_topdir
        files = {f"{top}/{k}": v for k, v in fake_edk2_files(files_per_dir).items()}
        orig = make_tar_xz(downloads / edk2.PIN.orig_tarball, files,
                           dirs=(f"{top}/BaseTools/Source/C/BrotliCompress/brotli",))
        deb_name = "edk2_2025.02-1.debian.tar.xz"
        deb = make_tar_xz(downloads / deb_name, {
            "debian/binary-check.remove": b"BaseTools/Bin/GccLto/liblto-arm.a\nIntelFsp2Pkg/x.raw\n",
        })
        from ovmfgen.fsutil import sha256_file

        record = {
            "package": "edk2", "version": "2025.02-1", "suite": "trixie",
            "tarballs": {p.name: {"sha256": sha256_file(p), "size": p.stat().st_size} for p in (orig, deb)},
        }
        return downloads, record

    return make


@pytest.fixture
def fake_git_edk2(tmp_path: Path) -> Callable[[str], Path]:
    """Factory: a small edk2-like git checkout (one commit) at tmp_path/NAME."""

    def make(name: str = "edk2") -> Path:
        root = write_tree(tmp_path / name, fake_edk2_files())
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-C", str(root)]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "fake edk2"], check=True)
        return root

    return make


@pytest.fixture(scope="session")
def edk2_tree() -> edk2.Edk2Tree:
    """The real edk2 tree `invoke setup` prepared (integration tests); fails, not skips, when absent."""
    return edk2.locate()


@pytest.fixture(scope="session")
def edk2_tree_202605() -> edk2.Edk2Tree:
    """The edk2-stable202605 tree: set up from the release tarball directory when it is not yet
    (``$OVMFGEN_EDK2_TARBALLS``, else ``../shared/edk2`` as .ci/run exports it), so that the fast suite
    works on a fresh clone too; fails, not skips, when it cannot be."""
    from ovmfgen import paths
    from ovmfgen.edk2.fetch import TARBALLS_ENV
    from ovmfgen.edk2.install import ensure_release

    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get(TARBALLS_ENV):
            mp.setenv(TARBALLS_ENV, str(paths.REPO_ROOT.parent / "shared" / "edk2"))
        return ensure_release("edk2-stable202605")[0]
