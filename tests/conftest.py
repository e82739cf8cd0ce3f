"""Shared fixtures: isolated roots for unit tests, small generated edk2-like trees, the real tree.

Every unit test runs isolated through the environment (the autouse ``_isolated_roots``): the ovmfgen
cache, the build root and the dist root ($OVMFGEN_CACHE, $OVMFGEN_BUILD_DIR, $OVMFGEN_DIST_DIR, which
ovmfgen reads when it needs them) are fresh folders under a temp directory and OVMFGEN_EDK2 is unset,
so a unit test reads nothing a previous run or the developer left and writes nothing into the checkout. Unit tests that need
the real edk2 tree ask for it (``edk2_tree``/``edk2_tree_202605``, which also keep the real cache for the
code under test, or ``real_cache`` alone, e.g. for a subprocess that locates the tree itself).
Integration tests (``integration``/``xen`` markers) keep the real cache, build and dist roots: they
need the real tree and share published builds through session fixtures.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ovmfgen import paths
from ovmfgen.edk2 import tree as edk2
from helpers import fake_edk2_files, make_tar_xz, write_tree

# The environment ovmfgen locates its cache and edk2 tree from, as the session started (before any
# test isolates it): what ``edk2_tree`` and ``real_cache`` put back.
REAL_ENV = {name: os.environ.get(name) for name in ("OVMFGEN_CACHE", "OVMFGEN_EDK2", "XDG_CACHE_HOME")}
# A unit test asking for one of these checks against the real tree: it keeps the real cache (isolated roots).
TREE_FIXTURES = frozenset({"edk2_tree", "edk2_tree_202605"})


@pytest.fixture(autouse=True)
def _isolated_roots(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                    monkeypatch: pytest.MonkeyPatch) -> Iterator[Path | None]:
    """Unit tests: cache, build and dist roots in a fresh temp folder, OVMFGEN_EDK2 unset (unless the
    test asks for a real tree: then only the build and dist roots).

    Yields that folder (``cache/``, ``build/``, ``dist/`` inside it, created by whoever writes
    there); integration tests get None and the real roots.
    """
    if request.node.get_closest_marker("integration") or request.node.get_closest_marker("xen"):
        yield None
        return
    root = tmp_path_factory.mktemp("roots")
    monkeypatch.setenv("OVMFGEN_CACHE", str(root / "cache"))
    monkeypatch.setenv(paths.BUILD_ENV, str(root / "build"))
    monkeypatch.setenv(paths.DIST_ENV, str(root / "dist"))
    monkeypatch.delenv("OVMFGEN_EDK2", raising=False)
    if TREE_FIXTURES & set(request.fixturenames):
        _real_env(monkeypatch)  # a test that asks for the real tree checks against it, wherever it looks it up
    yield root


@pytest.fixture
def isolated_cache(_isolated_roots: Path | None) -> Path:
    """This unit test's fresh, empty ovmfgen cache (OVMFGEN_CACHE); the user's OVMFGEN_EDK2 is ignored."""
    assert _isolated_roots is not None, "isolated_cache is for unit tests"
    return _isolated_roots / "cache"


def _real_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in REAL_ENV.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)


@pytest.fixture
def real_cache(monkeypatch: pytest.MonkeyPatch, _isolated_roots: Path | None) -> None:
    """The session's real cache and OVMFGEN_EDK2 for a test whose code locates the edk2 tree itself
    (build and dist roots stay isolated)."""
    _real_env(monkeypatch)


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
    """The real edk2 tree `invoke setup` prepared; fails, not skips, when absent."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _real_env(monkeypatch)
        return edk2.locate()


@pytest.fixture(scope="session")
def edk2_tree_202605() -> edk2.Edk2Tree:
    """The edk2-stable202605 tree: set up from the release tarball directory when it is not yet
    (``$OVMFGEN_EDK2_TARBALLS``, else ``../shared/edk2`` as .ci/run exports it), so that the fast suite
    works on a fresh clone too; fails, not skips, when it cannot be. Located and set up in the
    session's real cache, whatever test first asks for it."""
    from ovmfgen.edk2.fetch import TARBALLS_ENV
    from ovmfgen.edk2.install import ensure_release

    with pytest.MonkeyPatch.context() as mp:
        _real_env(mp)
        if not os.environ.get(TARBALLS_ENV):
            mp.setenv(TARBALLS_ENV, str(paths.REPO_ROOT.parent / "shared" / "edk2"))
        return ensure_release("edk2-stable202605")[0]
