"""The upstream series, checked like a maintainer would: PatchCheck.py, git am, build after every commit, boot.

ONE full edk2 build: ``verify_series(each=True)`` builds in one workspace after each commit (commits 1-6
have nothing to build: five fixes and the header; commit 7 is the full build, commit 8 an incremental one). The build is plain
upstream ``build -p OvmfPkg/XenOvmf.dsc`` in a pristine clone of the pinned tree with the series
applied; the FD it writes must itself be the PVH ELF (no ovmfgen post-processing) and boot in QEMU.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ovmfgen.patch.series import parse_signoff
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen import elf
from ovmfgen.boot.qemu import boot_qemu
from ovmfgen.boot.verdict import Verdict
from ovmfgen.edk2 import tree as edk2
from ovmfgen.patch import verify as patch_verify
from ovmfgen.patch import write as patch_write

pytestmark = pytest.mark.integration

SIGNER = "Test Submitter <submitter@example.com>"


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> patch_write.Generated:
    return patch_write.generate(resolve(make_request("xen-pvh")), tmp_path_factory.mktemp("patches") / "xen-pvh",
                                signer=parse_signoff(SIGNER))


@pytest.fixture(scope="module")
def verified(series: patch_write.Generated, tmp_path_factory: pytest.TempPathFactory) -> patch_verify.Verification:
    return patch_verify.verify_series(series.out_dir, tmp_path_factory.mktemp("check"), resolve(make_request("xen-pvh")),
                                      each=True)


def test_patchcheck_passes_every_patch_of_the_series(series: patch_write.Generated, edk2_tree: edk2.Edk2Tree) -> None:
    script = edk2_tree.root / "BaseTools" / "Scripts" / "PatchCheck.py"
    # the SEC fix, the PEI ResetSystemLib's build fix (edk2-stable202502), the NvVars fix, the Secure Boot store,
    # the MADT processor count, MpInitLib above the limit, the ELF header, the platform, PlatformCI
    assert len(series.patches) == 9
    for p in series.patches:
        proc = subprocess.run([sys.executable, str(script), str(p)], cwd=edk2_tree.root, capture_output=True,
                              text=True)
        assert proc.returncode == 0 and "WARNING" not in proc.stdout, proc.stdout
    size = sum(p.stat().st_size for p in (series.cover, *series.patches))
    print(f"series: cover letter + {len(series.patches)} patches, {size} bytes; PatchCheck.py: all pass")


def test_git_am_applies_to_a_pristine_tree_and_it_builds_after_every_commit(
        series: patch_write.Generated, verified: patch_verify.Verification, edk2_tree: edk2.Edk2Tree) -> None:
    assert len(verified.commits) == 9
    # The clone is the pinned tree plus exactly the series.
    changed = subprocess.run(["git", "-C", str(verified.repo), "diff", "--name-only", f"{series.base.commit}..HEAD"],
                             capture_output=True, text=True, check=True).stdout.split()
    assert sorted(changed) == sorted({p for c in series.series.commits for p in c.paths})
    assert (verified.repo / "OvmfPkg/XenOvmf.dsc").read_bytes() == dict(series.series.commits[7].files)[
        "OvmfPkg/XenOvmf.dsc"]
    for s in verified.steps:
        print(s.line(len(verified.commits)))
    assert [s.status for s in verified.steps] == ["nothing to build"] * 7 + ["built", "built"], \
        [s.line(9) for s in verified.steps]
    assert verified.ok


def test_in_tree_fd_is_the_pvh_elf_and_boots_through_the_pvh_entry(verified: patch_verify.Verification,
                                                                   tmp_path: Path) -> None:
    fd = verified.fd
    assert fd is not None and fd.is_file()
    data = fd.read_bytes()
    assert len(data) == 2 * elf.MIB
    # No post-processor: the header is in the FD upstream's build wrote.
    assert data[: elf.HEADER_SIZE] == elf.pvh_header(len(data), 0x100000)
    findings = elf.check_elf(data)
    assert [f for f in findings if not f.ok] == []
    result = boot_qemu(fd, "pvh", tmp_path)
    print(f"boot: {result.summary()}")
    assert result.verdict is Verdict.REACHED_XEN_PLATFORM_PEI, result.summary()
