"""Several edk2 trees for real: the newest release set up from its verified tarball, beside the default.

``invoke test`` sets the newest tree up before pytest when ``$OVMFGEN_EDK2_TARBALLS`` is set (CI points
it at ``../shared/edk2``); run alone, the fixture sets it up from there (unpack + BaseTools: 1-2
minutes on a quiet machine, 7 under a loaded one).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from ovmfgen import paths
from ovmfgen.edk2 import releases
from ovmfgen.edk2 import tree as edk2
from ovmfgen.edk2.fetch import TARBALLS_ENV
from ovmfgen.edk2.install import ensure_release

pytestmark = pytest.mark.integration

NEW = releases.NEWEST_TAG
SHARED = paths.REPO_ROOT.parent / "shared" / "edk2"


@pytest.fixture(scope="session")
def newest_tree() -> edk2.Edk2Tree:
    """The newest known tree, set up from the release tarball directory when it is not yet."""
    with pytest.MonkeyPatch.context() as mp:
        if not os.environ.get(TARBALLS_ENV):
            mp.setenv(TARBALLS_ENV, str(SHARED))  # what .ci/run exports
        return ensure_release(NEW)[0]


def test_the_newest_tree_comes_from_its_verified_tarball(newest_tree: edk2.Edk2Tree) -> None:
    rel = releases.release(NEW)
    ident = newest_tree.identity
    assert newest_tree.tag == NEW and newest_tree.release_date == "2026-05-08"
    assert (ident["source"], ident["commit"]) == ("tarball", rel.commit)
    assert ident["tarball"] == {"name": "edk2-stable202605.tar.xz", "sha256": rel.sha256, "size": rel.size,
                                "checked_against": "the sha256 pinned in ovmfgen/edk2/releases.py"}
    assert ident["assembly"]["first_line"] == (
        "edk2-stable202605 (commit b03a21a63e3bd001f52c527e5a57feddb53a690b, tagged 2026-05-08), assembled offline.")
    assert newest_tree.root == edk2.tree_dir(NEW) / "tree"
    assert (newest_tree.root / "OvmfPkg/OvmfXen.dsc").is_file()
    assert (newest_tree.basetools / "Source/C/bin/GenFw").is_file()
    # Side by side with the default tree, each with its own BaseTools.
    default = edk2.locate()
    assert default.tag != NEW and default.basetools != newest_tree.basetools
    # `invoke setup --edk2 TAG` once it is there: a quick no-op saying so.
    env = {k: v for k, v in os.environ.items() if k != "OVMFGEN_EDK2"}
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "setup", "--edk2", NEW], cwd=paths.REPO_ROOT,
                          env=env, capture_output=True, text=True)
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stderr and NEW in proc.stderr, proc.stderr
    print(f"no-op setup --edk2 {NEW}: {took:.2f} s")


def test_render_and_diff_against_the_newest_tree(newest_tree: edk2.Edk2Tree) -> None:
    """The one description renders, validates and diffs against the newest tree with --edk2."""
    env = {k: v for k, v in os.environ.items() if k != "OVMFGEN_EDK2"}
    render = subprocess.run([sys.executable, "-m", "ovmfgen", "render", "--platform", "xen-pvh", "--edk2", NEW],
                            cwd=paths.REPO_ROOT, env=env, capture_output=True, text=True)
    assert render.returncode == 0, render.stderr
    assert f"build/{NEW}/xen-pvh/OvmfPkg/XenOvmf.dsc" in render.stderr
    dsc = (paths.BUILD_DIR / NEW / "xen-pvh" / "OvmfPkg" / "XenOvmf.dsc").read_bytes()
    assert b"MemDebugLogLib" in dsc and b"\r\n" in dsc  # 202605's library class, CRLF as EDK2 files are
    diff = subprocess.run([sys.executable, "-m", "ovmfgen", "diff", "--platform", "xen-pvh", "--against",
                           "edk2/OvmfPkg/OvmfXen.dsc", "--edk2", NEW], cwd=paths.REPO_ROOT, env=env,
                          capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert "PLATFORM_NAME: Ovmf -> XenOvmf" in diff.stdout and "unexplained" not in diff.stdout
