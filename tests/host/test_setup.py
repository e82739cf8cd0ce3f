"""Setting up: ovmfgen.edk2 (debian, fetch, install, basetools) and ovmfgen.host.setup/testrun.

Checksum checks, atomic unpack/BaseTools, recovery from a killed run, the no-op rerun."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ovmfgen import cacheentry, fsutil
from ovmfgen.edk2 import debian, fetch, install
from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2.debian import SourceRelease
from ovmfgen.edk2.tree import PIN
from ovmfgen.errors import OvmfgenError
from ovmfgen.host import setup
from helpers import REPO, etc_apt



# ---- the signed index


SHOWSRC = f"""\
Package: edk2
Version: 2025.02-8+deb13u1
Format: 3.0 (quilt)
Checksums-Sha256:
 9e2115e7d75a3930b082216ef3378cca040fde049c86f4547e8ed6da1515ffee 2656 edk2_2025.02-8+deb13u1.dsc
 {PIN.orig_sha256} {PIN.orig_size} {PIN.orig_tarball}
 e2a7f6fc58640818416a028d6d5e9dfc255697a7cdc60c14566c236df6bd9b08 53652 edk2_2025.02-8+deb13u1.debian.tar.xz
Directory: pool/main/e/edk2

Package: edk2
Version: 2024.11-5
Checksums-Sha256:
 {'0' * 64} 1 edk2_2024.11.orig.tar.xz

Package: edk2-other
Version: 2025.02-1
Checksums-Sha256:
 {'1' * 64} 2 edk2-other_2025.02.orig.tar.xz
"""


def test_parse_showsrc_keeps_the_pinned_upstream_version() -> None:
    (rel,) = debian.parse_showsrc(SHOWSRC)
    assert rel.version == "2025.02-8+deb13u1"
    assert rel.files[PIN.orig_tarball] == {"sha256": PIN.orig_sha256, "size": PIN.orig_size}
    assert rel.debian_tarball == "edk2_2025.02-8+deb13u1.debian.tar.xz"


# ---- checksums


def _staging_with(tmp_path: Path, orig: bytes, deb: bytes) -> tuple[Path, SourceRelease, Path]:
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / PIN.orig_tarball).write_bytes(orig)
    deb_name = "edk2_2025.02-1.debian.tar.xz"
    (staging / deb_name).write_bytes(deb)
    files = {n: {"sha256": fsutil.sha256_file(staging / n), "size": (staging / n).stat().st_size}
             for n in (PIN.orig_tarball, deb_name)}
    return staging, SourceRelease(version="2025.02-1", files=files), tmp_path / "downloads"


def test_checksum_mismatch_against_the_index_is_one_line_and_moves_nothing(tmp_path: Path) -> None:
    staging, release, downloads = _staging_with(tmp_path, b"orig", b"debian")
    (staging / release.debian_tarball).write_bytes(b"tampered")
    with pytest.raises(OvmfgenError) as ei:
        debian.adopt_downloads(staging, release, downloads)
    msg = str(ei.value)
    assert "checksum mismatch" in msg and release.debian_tarball in msg and "signed index" in msg
    assert "\n" not in msg
    assert not downloads.exists() or not any(downloads.iterdir())


def test_checksum_mismatch_against_the_pin_is_one_line_and_moves_nothing(tmp_path: Path) -> None:
    # The index agrees with the file, but the file is not the pinned orig tarball.
    staging, release, downloads = _staging_with(tmp_path, b"not the real orig", b"debian")
    with pytest.raises(OvmfgenError) as ei:
        debian.adopt_downloads(staging, release, downloads)
    msg = str(ei.value)
    assert "checksum mismatch" in msg and PIN.orig_sha256 in msg and "pinned" in msg and "\n" not in msg
    assert not downloads.exists() or not any(downloads.iterdir())


def test_cached_downloads_rejects_a_corrupted_tarball(tmp_path: Path) -> None:
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    (downloads / PIN.orig_tarball).write_bytes(b"short")
    record = {"tarballs": {PIN.orig_tarball: {"sha256": PIN.orig_sha256, "size": PIN.orig_size}}}
    (downloads / debian.SOURCES_FILE).write_text(json.dumps(record))
    assert debian.cached_downloads(downloads) is None
    assert debian.cached_downloads(tmp_path / "absent") is None


# ---- atomic unpack, recovery, BaseTools out of the tree


KILL_CHILD = """\
import sys, tarfile, time
from pathlib import Path
from ovmfgen.edk2 import install
count = 0
real = tarfile.TarFile._extract_member
def slow(self, *a, **k):
    global count
    real(self, *a, **k)
    count += 1
    if count == 40:                      # well into the unpack: tell the parent, then wait to be killed
        Path(sys.argv[4]).write_text("mid-way")
        time.sleep(120)
tarfile.TarFile._extract_member = slow
import json
downloads, directory = Path(sys.argv[1]), Path(sys.argv[2])
record = json.loads(sys.argv[3])
install.install_debian_tree(directory, downloads, record)
"""


def test_killed_unpack_leaves_nothing_complete_and_the_rerun_recovers(
    isolated_cache: Path, fake_downloads, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    downloads, record = fake_downloads(files_per_dir=400)
    directory = edk2.debian_dir()
    ready = tmp_path / "ready"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", KILL_CHILD, str(downloads), str(directory), json.dumps(record), str(ready)], env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():
            assert child.poll() is None, "the unpack ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    assert child.returncode == -signal.SIGKILL
    # What the kill left: a partial temp dir, no tree, no identity.
    leftovers = [p.name for p in directory.iterdir()]
    assert any(n.startswith(".tree.tmp-") for n in leftovers), leftovers
    assert not (directory / "tree").exists() and not (directory / edk2.IDENTITY_FILE).exists()
    # locate() sees the half-done cache and says so in one line.
    with pytest.raises(OvmfgenError) as ei:
        edk2.locate(repo_root=tmp_path)
    assert "incomplete" in str(ei.value) and "invoke setup" in str(ei.value) and "\n" not in str(ei.value)

    # The rerun (network fetch replaced by the generated tarballs) recovers and completes.
    monkeypatch.setattr(install, "ensure_downloads", lambda force=False: (downloads, record))
    assert install.ensure_debian_tree() is True
    assert not [p for p in directory.iterdir() if cacheentry.TMP_INFIX in p.name]
    tree = edk2.locate(repo_root=tmp_path)
    assert tree.root == directory / "tree"
    assert len(list((tree.root / "MdePkg/Library/Fake").iterdir())) == 400
    assert tree.identity == json.loads((directory / edk2.IDENTITY_FILE).read_text())
    assert tree.identity["debian_removed_files"] == ["BaseTools/Bin/GccLto/liblto-arm.a", "IntelFsp2Pkg/x.raw"]
    assert tree.identity["empty_submodules"] == ["BaseTools/Source/C/BrotliCompress/brotli"]
    # BaseTools were built in the cache, with EDK2_PATH pointing at the tree, and the tree was not written.
    bin_dir = tree.basetools / "Source/C/bin"
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(edk2.BASETOOLS_APPLICATIONS)
    assert (bin_dir / "GenFw").read_text().strip() == str(tree.root)
    assert not (tree.root / "BaseTools/Source/C/bin").exists()
    # And a further run has nothing to do.
    assert install.ensure_debian_tree() is False


def test_interrupted_basetools_build_is_redone(
    isolated_cache: Path, fake_downloads, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    downloads, record = fake_downloads()
    monkeypatch.setattr(install, "ensure_downloads", lambda force=False: (downloads, record))
    install.ensure_debian_tree()
    directory = edk2.debian_dir()
    # A build killed before its rename leaves a temp dir and no marker; simulate the marker-less state.
    (directory / edk2.BASETOOLS_DIR / edk2.BASETOOLS_MARKER).unlink()
    (directory / ".basetools.tmp-dead").mkdir()
    with pytest.raises(OvmfgenError, match="BaseTools not built"):
        edk2.locate(repo_root=tmp_path)
    assert install.ensure_debian_tree() is True
    assert not (directory / ".basetools.tmp-dead").exists()
    assert edk2.locate(repo_root=tmp_path).basetools.is_dir()


def test_unpack_of_a_tarball_without_the_top_dir_fails_cleanly(tmp_path: Path) -> None:
    from helpers import make_tar_xz

    tb = make_tar_xz(tmp_path / "x.tar.xz", {"other/file": b"x"})
    final = tmp_path / "out" / "tree"
    with pytest.raises(OvmfgenError, match="has no edk2-2025.02/ directory"):
        fetch.unpack_tarball(tb, final, PIN.orig_topdir)
    assert not final.exists() and list(final.parent.iterdir()) == []


def test_local_tree_setup_and_missing_submodules(isolated_cache: Path, fake_git_edk2) -> None:
    root = fake_git_edk2("mine")
    assert install.ensure_local_tree(root, "env") is True
    assert install.ensure_local_tree(root, "env") is False
    ident = edk2.read_identity(edk2.local_dir(root))
    assert ident["source"] == "env" and ident["tag"] is None and len(ident["commit"]) == 40
    shutil.rmtree(root / "CryptoPkg/Library/OpensslLib/openssl")
    with pytest.raises(OvmfgenError, match="lacks submodules.*OpensslLib/openssl"):
        install.ensure_local_tree(root, "env")


# ---- the real thing


@pytest.mark.integration
def test_setup_all_twice_second_is_a_quick_noop(capsys: pytest.CaptureFixture[str]) -> None:
    setup.setup_all()
    capsys.readouterr()
    start = time.monotonic()
    setup.setup_all()
    took = time.monotonic() - start
    err = capsys.readouterr().err
    assert took < 2.0, f"no-op setup took {took:.2f} s"
    assert "nothing to do" in err
    tree = edk2.locate()
    assert tree.identity["commit"] == PIN.commit
    assert (tree.root / "OvmfPkg/OvmfXen.dsc").is_file()
    assert (tree.basetools / "Source/C/bin/GenFw").is_file()


# ---- ovmfgen.host.testrun (the `invoke test` runner)


def test_pytest_argv_fast_deselects_integration_and_xen() -> None:
    from ovmfgen.host import testrun

    full = testrun.pytest_argv()
    assert full[1:3] == ["-m", "pytest"] and full[3].endswith("tests") and "-m" not in full[4:]
    assert "--durations=25" in full
    fast = testrun.pytest_argv(keyword="render", fast=True)
    assert fast[4:] == ["-m", "not integration and not xen", "-k", "render"]  # no durations report


def test_run_tests_passes_fails_and_treats_no_tests_as_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real pytest child over a tiny suite: pass -> None, fail -> exit 1, nothing collected -> exit 5."""
    from ovmfgen import paths
    from ovmfgen.host import testrun

    (tmp_path / "tests").mkdir()
    (tmp_path / "tests/test_tiny.py").write_text(
        "def test_good():\n    assert True\n\ndef test_bad():\n    assert False\n")
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(testrun, "setup_all", lambda: None)  # the real one is covered above
    monkeypatch.delenv("OVMFGEN_EDK2_TARBALLS", raising=False)
    testrun.run_tests(keyword="good")
    with pytest.raises(testrun.TestsFailed) as ei:
        testrun.run_tests(keyword="bad")
    assert ei.value.exit_code == 1
    with pytest.raises(testrun.TestsFailed) as ei:
        testrun.run_tests(keyword="no_such_test")
    assert ei.value.exit_code == 5 and "no tests collected" in str(ei.value)


def test_unreachable_archive_is_one_line_error_and_leaves_nothing(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A real apt-get update against a closed loopback port: the 'no network' path."""
    d = etc_apt(tmp_path, parts={"debian.list": "deb http://127.0.0.1:9/debian bookworm main\n"})
    conf = tmp_path / "apt.conf"
    conf.write_text('Acquire::Retries "0";\n')  # apt's back-off retries only make the test slow
    monkeypatch.setenv("APT_CONFIG", str(conf))
    downloads = tmp_path / "downloads"
    with pytest.raises(OvmfgenError) as ei:
        debian.fetch_source_package(downloads, etc_apt=d)
    msg = str(ei.value)
    assert msg.startswith("error: could not fetch Debian's trixie source index (no network?)"), msg
    assert "\n" not in msg and "full output:" in msg and "127.0.0.1:9" in msg
    assert not downloads.exists() or not any(downloads.iterdir())
    # The private apt configuration lives in the cache and names the derived archive.
    written = (isolated_cache / "apt/sources.list.d" / debian.APT_SOURCES_NAME).read_text()
    assert "URIs: http://127.0.0.1:9/debian\nSuites: trixie\n" in written
