"""ovmfgen.patch.write: the whole series, generated twice (byte-identical), split bisectably, PatchCheck-clean,
for both trees."""

from __future__ import annotations

import email
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SIGNER
from ovmfgen.edk2 import tree as edk2
from ovmfgen.patch import intree as patch_intree
from ovmfgen.patch import write as patch_write
from ovmfgen.patch.series import parse_signoff
from ovmfgen.paths import REPO_ROOT
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request


# --- the whole series ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def series_dirs(tmp_path_factory: pytest.TempPathFactory, tree: edk2.Edk2Tree) -> tuple[patch_write.Generated, Path]:
    """The series generated twice from the same inputs into two directories."""
    r = resolve(make_request("xen-pvh"))
    first = patch_write.generate(r, tmp_path_factory.mktemp("series") / "a", signer=parse_signoff(SIGNER))
    second = patch_write.generate(r, tmp_path_factory.mktemp("series") / "b", signer=parse_signoff(SIGNER))
    return first, second.out_dir


# The MpInitLib fix (processors above PcdCpuMaxLogicalProcessorNumber halt), one commit, its files in path order.
MP_INIT_LIB = tuple(f"UefiCpuPkg/Library/MpInitLib/{name}" for name in (
    "Ia32/MpFuncs.nasm", "MpEqu.inc", "MpLib.c", "MpLib.h", "X64/MpFuncs.nasm"))

def _messages(gen: patch_write.Generated) -> list[email.message.Message]:
    return [email.message_from_bytes(p.read_bytes()) for p in gen.patches]


def test_series_is_byte_identical_when_regenerated(series_dirs) -> None:
    first, second = series_dirs
    names = sorted(p.name for p in first.out_dir.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert names[0] == "0000-cover-letter.patch" and len(names) == 10
    for name in names:
        assert (first.out_dir / name).read_bytes() == (second / name).read_bytes(), name
    # No commit hash leaks (--zero-commit) and the dates come from the edk2 release, not the clock.
    text = b"".join((first.out_dir / n).read_bytes() for n in names).decode()
    assert set(re.findall(r"^From ([0-9a-f]{40}) ", text, re.M)) == {"0" * 40}
    assert set(re.findall(r"^Date: (.*)$", text, re.M)) <= {
        f"Fri, 21 Feb 2025 00:{i:02d}:00 +0000" for i in range(1, 10)}


def test_series_commits_split_bisectably(series_dirs) -> None:
    gen, _ = series_dirs
    files = [c.paths for c in gen.series.commits]
    assert files == [
        ("OvmfPkg/Sec/SecMain.c",),
        ("OvmfPkg/Library/ResetSystemLib/BaseResetShutdownXen.c",),
        ("OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c",
         "OvmfPkg/Library/PlatformBootManagerLib/PlatformBootManagerLib.inf"),
        ("OvmfPkg/XenPlatformPei/Platform.c", "OvmfPkg/XenPlatformPei/XenPlatformPei.inf"),
        ("OvmfPkg/XenPlatformPei/Platform.c", "OvmfPkg/XenPlatformPei/XenPlatformPei.inf"),
        MP_INIT_LIB,
        ("OvmfPkg/XenOvmfElfHeader.fdf.inc",),
        ("OvmfPkg/XenOvmf.dsc", "OvmfPkg/XenOvmf.fdf"),
        ("Maintainers.txt", "OvmfPkg/PlatformCI/.azurepipelines/Ubuntu-GCC5.yml", "OvmfPkg/PlatformCI/XenOvmfBuild.py"),
    ]
    # The override patches (overrides/xen-pvh/patches/: the SEC fix, on edk2-stable202502 the PEI
    # ResetSystemLib's build fix, the NvVars fix, the Secure Boot store, the MADT's processor count,
    # MpInitLib's processors above the limit) come first; the header exists before the FDF that includes it.
    assert [c.builds for c in gen.series.commits] == [False] * 7 + [True, True]


def test_series_subjects_bodies_and_trailers(series_dirs) -> None:
    gen, _ = series_dirs
    msgs = _messages(gen)
    for i, (msg, commit) in enumerate(zip(msgs, gen.series.commits), 1):
        subject = " ".join(msg["Subject"].split())
        assert subject == f"[PATCH {i}/9] {commit.subject}"
        assert len(commit.subject) <= 75 and re.match(
            r"^(OvmfPkg(/Sec|/ResetSystemLib|/PlatformBootManagerLib|/XenPlatformPei)?|UefiCpuPkg/MpInitLib): [A-Z]",
                                                      commit.subject)
        assert msg["From"] == SIGNER
        assert msg["To"] == "devel@edk2.groups.io"
        body = msg.get_payload().split("\n---\n")[0]
        assert all(len(line) < 76 for line in body.splitlines()), body
        trailers = body.rstrip("\n").split("\n\n")[-1].splitlines()
        assert trailers[-1] == f"Signed-off-by: {SIGNER}"
        cc = [t for t in trailers if t.startswith("Cc: ")]
        assert len(cc) == len(trailers) - 1 and cc == sorted(cc)
        # GetMaintainer.py with the series' Maintainers.txt: the Xen reviewer is on every patch of the
        # platform, OvmfPkg's maintainers on the SEC and ResetSystemLib fixes.
        if commit.paths in (("OvmfPkg/Sec/SecMain.c",), ("OvmfPkg/Library/ResetSystemLib/BaseResetShutdownXen.c",)):
            assert "Cc: Gerd Hoffmann <kraxel@redhat.com>" in cc
        elif commit.paths == MP_INIT_LIB:
            assert any("UefiCpuPkg" in line or "Ray Ni" in line for line in cc), cc
        else:
            assert "Cc: Anthony Perard <anthony@xenproject.org>" in cc
    # Patch 9 touches Maintainers.txt, so its maintainers are asked too.
    assert any("Michael D Kinney" in line for line in msgs[8].get_payload().splitlines())
    # Patch 1, the SEC fix, says what breaks, why, and how it was tested.
    sec = msgs[0].get_payload()
    assert "Install PPI: 00000000-0000-0000-0000-000000000000" in sec and "Tested with" in sec
    # Patch 2, the ResetSystemLib build fix: what did not compile, and the release that fixed it upstream.
    assert "XenHypercallSchedOp" in msgs[1].get_payload() and "edk2-stable202605" in msgs[1].get_payload()
    # Patch 3, the NvVars fix: why PVH guests lose their variables, and the test that shows they no longer do.
    nvvars = msgs[2].get_payload()
    assert "XenIoPvhDxe" in nvvars and "Tested: " in nvvars and "+  if (XenPvhDetected ()) {\r" in nvvars
    # Patch 4, the Secure Boot store: fails closed, and says so.
    store = msgs[3].get_payload()
    assert "Fail closed" in store and "+    XenRestoreVarStoreTemplate ((VOID *)(UINTN)VariableStore);\r" in store
    # Patch 5, the processor count: what was lost, where the count comes from, what was tested.
    madt = msgs[4].get_payload()
    assert "found 126" in madt and "+  XenCpuCountInitialization ();\r" in madt and "Tested: " in madt
    # Patch 6, MpInitLib: what happens above the limit, the log line that replaces it, what was tested.
    mp = msgs[5].get_payload()
    assert "edk2 issue 11323" in mp and "processors woke up" in mp and "Tested: " in mp
    # Patch 7, the ELF header; patch 8, the platform.
    assert "p_align 4" in msgs[6].get_payload() and "1 MiB" in msgs[6].get_payload()
    assert "LAPIC" in msgs[7].get_payload() or "local APIC timer" in msgs[7].get_payload()


def test_series_added_lines_are_crlf(series_dirs) -> None:
    gen, _ = series_dirs
    for p in gen.patches:
        added = [ln for ln in p.read_bytes().split(b"\n") if ln.startswith(b"+") and not ln.startswith(b"+++")]
        assert added and all(ln.endswith(b"\r") for ln in added), p.name


def test_cover_letter_names_the_upstream_base(series_dirs) -> None:
    gen, _ = series_dirs
    text = gen.cover.read_text()
    assert "[PATCH 0/9] OvmfPkg: Add XenOvmf" in text
    assert " - patch 1 fixes what the platform needs fixed first:\n   OvmfPkg/Sec: Build" in text
    assert "*** SUBJECT HERE ***" not in text and "*** BLURB HERE ***" not in text
    assert f"It is based on {edk2.PIN.tag},\ncommit {edk2.PIN.commit}." in text
    assert text.endswith(f"\nbase-commit: {edk2.PIN.commit}\n")
    assert "platforms/xen-pvh.yaml" in text


def test_patchcheck_passes_every_patch(series_dirs, tree: edk2.Edk2Tree) -> None:
    gen, _ = series_dirs
    assert [c.clean for c in gen.checks] == [True] * 10    # nine files and the commit range
    # Independently of the generator's own check: the tree's PatchCheck.py, file by file.
    for p in gen.patches:
        proc = subprocess.run([sys.executable, str(tree.root / "BaseTools/Scripts/PatchCheck.py"), str(p)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout
        assert "The commit message format passed all checks." in proc.stdout
        assert "The code passed all checks." in proc.stdout
        assert "WARNING" not in proc.stdout


def test_series_header_include_in_patch_7_is_the_generated_one(series_dirs, platform) -> None:
    gen, _ = series_dirs
    added = [ln[1:] for ln in gen.patches[6].read_bytes().split(b"\n")
             if ln.startswith(b"+") and not ln.startswith(b"+++")]
    assert b"\n".join(added) + b"\n" == patch_intree.elf_header_include(platform).encode()


def test_series_sec_fix_in_patch_1_turns_upstream_secmain_into_the_override(series_dirs, tree, tmp_path) -> None:
    # The commit's file is the tree's own SecMain.c with the override's patch applied (by git apply itself).
    gen, _ = series_dirs
    sec = tmp_path / "OvmfPkg/Sec/SecMain.c"
    sec.parent.mkdir(parents=True)
    sec.write_bytes((tree.root / "OvmfPkg/Sec/SecMain.c").read_bytes())
    subprocess.run(["git", "apply", str(REPO_ROOT / "overrides/xen-pvh/patches/Sec-PEI-PPI-list-at-run-time.patch")],
                   cwd=tmp_path, check=True, env={**os.environ, "GIT_CEILING_DIRECTORIES": str(tmp_path)})
    assert gen.series.commits[0].files == (("OvmfPkg/Sec/SecMain.c", sec.read_bytes()),)
    text = gen.patches[0].read_bytes()
    assert b"+  PrivateDispatchTable[0].Guid  = &gEfiTemporaryRamSupportPpiGuid;\r\n" in text
    assert b"-EFI_PEI_PPI_DESCRIPTOR  mPrivateDispatchTableMp[] = {\r\n" in text


def test_the_series_for_the_newest_tree(tmp_path: Path, edk2_tree_202605: edk2.Edk2Tree) -> None:
    """--edk2 edk2-stable202605: based on that release, its GCC tool chain and its Ubuntu-GCC pipeline."""
    r = resolve(make_request("xen-pvh", edk2="edk2-stable202605"))
    gen = patch_write.generate(r, tmp_path / "new", signer=parse_signoff(SIGNER))
    assert patch_write.default_output_dir(r) == \
        patch_write.default_output_dir(resolve(make_request("xen-pvh"))) / "edk2-stable202605"
    assert (gen.series.tag, gen.series.upstream_commit) == ("edk2-stable202605", edk2_tree_202605.identity["commit"])
    # The SEC fix (the same patch as for 202502), then that release's two fixes of its own (edk2: edk2-stable202605
    # overrides: the Nocheck DebugLib's MemDebugLogLib, the Shell as the boot option of last resort),
    # then the NvVars patch, on top of the Shell commit's BdsPlatform.c, then the Secure Boot store and
    # the MADT's processor count.
    assert [c.paths for c in gen.series.commits[:6]] == [
        ("OvmfPkg/Sec/SecMain.c",),
        ("OvmfPkg/Library/PlatformDebugLibIoPort/PlatformRomDebugLibIoPortNocheck.inf",),
        ("OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c",),
        ("OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c",
         "OvmfPkg/Library/PlatformBootManagerLib/PlatformBootManagerLib.inf"),
        ("OvmfPkg/XenPlatformPei/Platform.c", "OvmfPkg/XenPlatformPei/XenPlatformPei.inf"),
        ("OvmfPkg/XenPlatformPei/Platform.c", "OvmfPkg/XenPlatformPei/XenPlatformPei.inf")]
    shell, nvvars = dict(gen.series.commits[2].files), dict(gen.series.commits[3].files)
    bds = "OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c"
    assert b"    LOAD_OPTION_ACTIVE,\r\n" in shell[bds] and b"gXenIoProtocolGuid" not in shell[bds]
    assert b"    LOAD_OPTION_ACTIVE,\r\n" in nvvars[bds] and b"&gXenIoProtocolGuid,\r\n" in nvvars[bds]
    assert gen.series.commits[6].paths == MP_INIT_LIB
    assert gen.series.commits[9].paths == (
        "Maintainers.txt", "OvmfPkg/PlatformCI/.azurepipelines/Ubuntu-GCC.yml", "OvmfPkg/PlatformCI/XenOvmfBuild.py")
    text = gen.cover.read_text()
    assert "It is based on edk2-stable202605,\ncommit b03a21a63e3bd001f52c527e5a57feddb53a690b." in text
    assert "TOOL_CHAIN_TAG=GCC\n" in gen.patches[9].read_text().replace("\r", "")
    assert [c.clean for c in gen.checks] == [True] * 11    # ten files and the commit range
    dates = set(re.findall(r"^Date: (.*)$", "".join(p.read_text() for p in gen.patches), re.M))
    assert dates <= {f"Fri, 8 May 2026 00:{i:02d}:00 +0000" for i in range(1, 11)}, dates
