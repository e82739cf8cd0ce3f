"""A release nobody pinned, end to end: an edk2 checkout past edk2-stable202605 (tests/integration/checkout.py:
the 202605 tree as a git repository, tagged, with three upstream-like commits on top) through setup,
render, diff, rebase, patch and build, with no edit to the code and no entry in releases.yaml.

- its identity comes from git: ``git describe`` (edk2-stable202605-3-g<sha>), the commit, the commit date;
- its position decides xen-pvh's release conditions (``>= edk2-stable202605`` holds);
- xen-pvh's 202605-only fixes are carried: the Shell patch still applies; the MemDebugLogLib patch, which
  upstream's commit made unnecessary, no longer does, and render says so in one located note;
- ``invoke diff`` shows the drift (upstream's changed PCD) as an unexplained difference;
- ``invoke rebase --to CHECKOUT`` merges that change as data for every tree after 202605 and says what became
  of each carried fix; where the platform changes the same PCD, it is one located conflict and nothing is written;
- ``invoke patch`` with only $OVMFGEN_EDK2 set writes the series for the checkout: based on its commit, named by
  its ``git describe``, without the fix upstream made unnecessary; ``git am`` applies it to the checkout;
- the build publishes under the checkout's name, and the manifest names its commit;
- that build boots in QEMU through both entries (the PVH ELF with ``-kernel``, the reset vector with ``-bios``)
  to XenPlatformPei's "Xen isn't detected", as the release builds do (test_boot_qemu.py). Its boot under real
  Xen is the nightly's checkout cell (xen-pvh-DEBUG-2M-edk2-master), not CI's.

The checkout is made in a temp dir (unpack + git: ~15 s); its BaseTools are built once per checkout path
(~1 min); the build is a full DEBUG build (4-10 minutes on a shared 2-core machine), made once for the module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ovmfgen import paths
from ovmfgen.boot.qemu import boot_qemu
from ovmfgen.boot.verdict import ENTRIES, Verdict
from tests.integration.checkout import make_checkout

pytestmark = pytest.mark.integration

TARBALL = paths.REPO_ROOT.parent / "shared" / "edk2" / "edk2-stable202605.tar.xz"
_ENTRY = "  - patch: patches/PlatformDebugLibIoPort-Nocheck-MemDebugLogLib.patch"
#: The entry's line in the platform file (the note is located there, at the list item's dash).
_LINE = (paths.REPO_ROOT / "platforms/xen-pvh.yaml").read_text().splitlines().index(_ENTRY) + 1
NOTE = (f"platforms/xen-pvh.yaml:{_LINE}:5: note: override patch "
        "overrides/xen-pvh/patches/PlatformDebugLibIoPort-Nocheck-MemDebugLogLib.patch does not apply to ")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    tarball = Path(os.environ.get("OVMFGEN_EDK2_TARBALLS") or TARBALL.parent) / TARBALL.name
    root = make_checkout(tarball, tmp_path_factory.mktemp("checkout"))
    describe = subprocess.run(["git", "-C", str(root), "describe", "--tags"], capture_output=True, text=True,
                              check=True).stdout.strip()
    proc = _ovmfgen(root, "setup")
    assert proc.returncode == 0, proc.stderr
    return root, describe


def _ovmfgen(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OVMFGEN_EDK2": str(root)}
    return subprocess.run([sys.executable, "-m", "ovmfgen", *args], cwd=paths.REPO_ROOT, env=env,
                          capture_output=True, text=True)


def test_identity_from_git_and_render(checkout: tuple[Path, str]) -> None:
    root, describe = checkout
    assert describe.startswith("edk2-stable202605-3-g")
    proc = _ovmfgen(root, "render", "--platform", "xen-pvh")
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if ": note: " in line]
    assert len(notes) == 1 and notes[0].startswith(NOTE + describe + ": "), proc.stderr
    assert f"build/{describe}/xen-pvh/OvmfPkg/XenOvmf.dsc" in proc.stderr
    dsc = (paths.build_root() / describe / "xen-pvh" / "OvmfPkg" / "XenOvmf.dsc").read_text(encoding="utf-8")
    # ">= edk2-stable202605" holds for a checkout past it, "< edk2-stable202605" does not: TLS libraries.
    assert "!include OvmfPkg/Include/Dsc/OvmfTlsLibs.dsc.inc" in dsc
    assert "TlsLib|CryptoPkg/Library/TlsLib/TlsLib.inf" not in dsc


def test_diff_shows_the_drift(checkout: tuple[Path, str]) -> None:
    root, describe = checkout
    proc = _ovmfgen(root, "diff", "--platform", "xen-pvh")
    assert proc.returncode == 1
    assert " ! gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial: TRUE -> FALSE" in proc.stdout, proc.stdout
    assert proc.stdout.count(" ! ") == 1, proc.stdout
    assert f"differs from OvmfPkg/OvmfXen.dsc of {describe} beyond its listed deltas" in proc.stderr
    assert "note: delta file OvmfPkg/Library/PlatformDebugLibIoPort/PlatformRomDebugLibIoPortNocheck.inf, " \
           "written for edk2-stable202605, is no longer observed" in proc.stderr


def test_rebase_merges_the_drift_and_names_the_carried_fixes(checkout: tuple[Path, str]) -> None:
    root, describe = checkout
    platform = paths.REPO_ROOT / "platforms" / "xen-pvh.yaml"
    before = platform.read_bytes()
    proc = _ovmfgen(root, "rebase", "--platform", "xen-pvh", "--to", str(root), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert platform.read_bytes() == before
    assert ('-      - gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial: FALSE\n'
            '+      - when: {edk2: "> edk2-stable202605"}\n+        then:\n'
            '+          - gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial: TRUE\n') in proc.stdout, proc.stdout
    assert f"ovmfgen: {describe}: changed PCD gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial" in proc.stderr
    notes = [line for line in proc.stderr.splitlines() if ": note: " in line]
    # Each one-release fix carried to the checkout, one line: the Shell patch and its delta still needed; the
    # MemDebugLogLib patch upstream's commit made unnecessary left out, with the two deltas that go with it.
    assert len(notes) == 5 and notes[0].startswith(NOTE + describe + ": "), proc.stderr
    assert sum(line.endswith(": carried") for line in notes) == 2


def test_rebase_conflicts_are_located_and_nothing_is_written(checkout: tuple[Path, str], tmp_path: Path) -> None:
    root, _ = checkout
    item = "      - gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial: FALSE"
    text = (paths.REPO_ROOT / "platforms" / "xen-pvh.yaml").read_text(encoding="utf-8")
    path = tmp_path / "platforms" / "xen-pvh.yaml"
    shutil.copytree(paths.REPO_ROOT / "platforms" / "keys", path.parent / "keys")
    path.write_text(text.replace(item, item.replace("FALSE", "TRUE")), encoding="utf-8")   # ours changes it too
    before = path.read_bytes()
    proc = _ovmfgen(root, "rebase", "--platform", str(path), "--to", str(root))
    assert proc.returncode == 1
    line = text.splitlines().index(item) + 1
    assert f"{path}:{line}:9: conflict: upstream changed PCD gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial " \
           "which the platform also changes (it differs from upstream's previous release there)" in proc.stderr
    assert proc.stderr.rstrip().endswith("error: 1 conflict(s): nothing written") and "Traceback" not in proc.stderr
    assert path.read_bytes() == before


def test_patch_series_is_based_on_the_checkouts_commit(checkout: tuple[Path, str], tmp_path: Path) -> None:
    """``invoke patch`` with only $OVMFGEN_EDK2 set: the series is for the checkout (not the newest release),
    based on its commit, without the fix upstream made unnecessary, and ``git am`` puts it on the checkout."""
    root, describe = checkout
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    out = tmp_path / "series"
    proc = _ovmfgen(root, "patch", "--platform", "xen-pvh", "--output", str(out),
                    "--signoff", "Test Submitter <submitter@example.com>")
    assert proc.returncode == 0, proc.stderr
    assert f"based on {describe} ({head[:12]})" in proc.stderr
    cover = (out / "0000-cover-letter.patch").read_text(encoding="utf-8")
    assert f"It is based on {describe},\ncommit {head}." in cover
    assert cover.rstrip().endswith(f"base-commit: {head}")
    patches = sorted(p for p in out.glob("0*.patch") if p.name != "0000-cover-letter.patch")
    # The MemDebugLogLib fix is upstream's in this checkout: not in the series.
    assert not [p for p in patches if "MemDebugLogLib" in p.name or "Nocheck" in p.name]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(root), str(clone)], check=True, capture_output=True)
    am = subprocess.run(["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@example.com",
                         "am", "-q", "--keep-cr", *map(str, patches)], capture_output=True, text=True)
    assert am.returncode == 0, am.stderr
    assert (clone / "OvmfPkg" / "XenOvmf.dsc").is_file()


@pytest.fixture(scope="module")
def build(checkout: tuple[Path, str]) -> tuple[subprocess.CompletedProcess[str], float, Path]:
    """The checkout's build, once for the module: (the process, its seconds, its dist directory)."""
    root, describe = checkout
    start = time.monotonic()
    proc = _ovmfgen(root, "build", "--platform", "xen-pvh")
    return proc, time.monotonic() - start, paths.dist_root() / "xen-pvh" / describe / "DEBUG"


def test_build(checkout: tuple[Path, str], build) -> None:
    root, describe = checkout
    proc, took, dist = build
    assert proc.returncode == 0, proc.stderr[-4000:]
    manifest = json.loads((dist / "manifest.json").read_text(encoding="utf-8"))
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert manifest["edk2"]["commit"] == head and manifest["edk2"]["tag"] == describe
    assert (dist / paths.ELF_NAME).is_file()
    print(f"build of xen-pvh DEBUG on {describe}: {took:.0f} s")


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.parametrize("entry", ENTRIES)
def test_the_build_boots_in_qemu(build, entry: str, tmp_path: Path) -> None:
    proc, _, dist = build
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = boot_qemu(dist / paths.ELF_NAME, entry, tmp_path, timeout=60)
    assert result.verdict is Verdict.REACHED_XEN_PLATFORM_PEI, f"{result.summary()}\n{result.log_tail}"
    assert result.proven_entry == entry
    assert result.milestones == ("sec", "pei_core", "xen_platform_pei", "xen_not_detected")
    assert "ERROR: Xen isn't detected" in result.log_path.read_text(errors="replace")
    print(result.summary())
