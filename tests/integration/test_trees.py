"""Several edk2 trees for real: the newest release set up from its verified tarball, beside the default;
xen-pvh rendered, diffed and built against it, and booted through both entry points.

``invoke test`` sets the newest tree up before pytest when ``$OVMFGEN_EDK2_TARBALLS`` is set (CI points
it at ``../shared/edk2``); run alone, the fixture sets it up from there (unpack + BaseTools: 1-2
minutes on a quiet machine, 7 under a loaded one). The build is one DEBUG 2M session fixture
(``published_xen_pvh_newest``, tests/integration/conftest.py): 4-6 minutes on a quiet 2-core machine.
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

from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen import elf, paths
from ovmfgen.boot.qemu import boot_qemu
from ovmfgen.boot.verdict import ENTRIES, Verdict
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
    dsc = (paths.build_root() / NEW / "xen-pvh" / "OvmfPkg" / "XenOvmf.dsc").read_bytes()
    assert b"MemDebugLogLib" in dsc and b"\r\n" in dsc  # 202605's library class, CRLF as EDK2 files are
    diff = subprocess.run([sys.executable, "-m", "ovmfgen", "diff", "--platform", "xen-pvh", "--against",
                           "edk2/OvmfPkg/OvmfXen.dsc", "--edk2", NEW], cwd=paths.REPO_ROOT, env=env,
                          capture_output=True, text=True)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert "PLATFORM_NAME: Ovmf -> XenOvmf" in diff.stdout and "unexplained" not in diff.stdout


def _explain(result) -> str:
    return (f"{result.summary()}\n--- last lines of {result.log_path} ---\n{result.log_tail or '(empty)'}"
            + (f"\n--- QEMU output ---\n{result.qemu_output}" if result.qemu_output.strip() else ""))


def test_the_newest_build_is_published_apart_and_names_its_tree(published_xen_pvh_newest: Path,
                                                                newest_tree: edk2.Edk2Tree) -> None:
    dist = published_xen_pvh_newest
    assert dist == resolve(make_request("xen-pvh", "DEBUG", edk2=NEW)).dist == paths.dist_root() / "xen-pvh" / NEW / "DEBUG"
    m = json.loads((dist / "manifest.json").read_text())
    assert m["edk2"]["tag"] == NEW and m["edk2"]["digest"] == newest_tree.digest
    assert m["edk2"]["source"] == "tarball" and m["edk2"]["release_date"] == "2026-05-08"
    assert m["version_string"] == f"{NEW}-ovmfgen-0.1.0" and m["release_date"] == "05/08/2026"
    assert m["toolchain"] == "GCC"  # 202605 dropped GCC5: the tree's tools_def decides
    image = (dist / "ovmf.elf").read_bytes()
    assert [f.rule for f in elf.check_elf(image) if not f.ok] == []
    # 202605 moved SECFV in the 2 MiB layout (0x1CC000 in 202502): read from the image, not assumed.
    assert elf.boot_fv_offset(image) == 0x1DC000
    usage = ", ".join(f"{fv} {u['used'] * 100 // u['size']}%" for fv, u in sorted(m["fv_usage"].items()))
    print(f"{NEW} DEBUG 2M: built in {m['build_seconds']:.0f} s; FV usage: {usage}")


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed")
@pytest.mark.parametrize("entry", ENTRIES)
def test_the_newest_build_reaches_xen_platform_pei(published_xen_pvh_newest: Path, entry: str,
                                                   tmp_path: Path) -> None:
    image = published_xen_pvh_newest / "ovmf.elf"
    result = boot_qemu(image, entry, tmp_path, timeout=60)
    assert result.verdict is Verdict.REACHED_XEN_PLATFORM_PEI, _explain(result)
    assert result.proven_entry == entry
    assert result.boot_fv == elf.boot_fv_address(image.read_bytes(), entry)
    print(result.summary())
