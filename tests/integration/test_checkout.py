"""A release nobody pinned, end to end: an edk2 checkout past edk2-stable202605 (tests/integration/checkout.py:
the 202605 tree as a git repository, tagged, with three upstream-like commits on top) through setup,
render, diff and build, with no edit to the code and no entry in releases.yaml.

- its identity comes from git: ``git describe`` (edk2-stable202605-3-g<sha>), the commit, the commit date;
- its position decides xen-pvh's release conditions (``>= edk2-stable202605`` holds);
- xen-pvh's 202605-only fixes are carried: the Shell patch still applies; the MemDebugLogLib patch, which
  upstream's commit made unnecessary, no longer does, and render says so in one located note;
- ``invoke diff`` shows the drift (upstream's changed PCD) as an unexplained difference;
- the build publishes under the checkout's name, and the manifest names its commit.

The checkout is made in a temp dir (unpack + git: ~15 s); its BaseTools are built once per checkout path
(~1 min); the build is a full DEBUG build (4-10 minutes on a shared 2-core machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ovmfgen import paths
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


def test_build(checkout: tuple[Path, str]) -> None:
    root, describe = checkout
    start = time.monotonic()
    proc = _ovmfgen(root, "build", "--platform", "xen-pvh")
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-4000:]
    dist = paths.dist_root() / "xen-pvh" / describe / "DEBUG"
    manifest = json.loads((dist / "manifest.json").read_text(encoding="utf-8"))
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert manifest["edk2"]["commit"] == head and manifest["edk2"]["tag"] == describe
    assert (dist / paths.ELF_NAME).is_file()
    print(f"build of xen-pvh DEBUG on {describe}: {took:.0f} s")
