"""invoke diff: xen-pvh differs from upstream OvmfXen by exactly its listed deltas."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from ovmfgen.platform.resolve import resolved
from ovmfgen.platform.load import load_platform
from ovmfgen.paths import REPO_ROOT, Layout
from ovmfgen.edk2.tree import Edk2Tree
from ovmfgen.platform.diff import compare_platform, diff_platform, upstream_files


# The x2APIC-capable TimerLib (UefiCpuPkg's) replaces MdePkg's and brings LocalApicLib and its CpuLib along.
X2APIC_TIMER = {"TimerLib", "LocalApicLib", "CpuLib"}
# The processors above max_cpus halt: one patch per tree to MpInitLib's C and assembly.
MP_INIT_LIB = {("file", f"UefiCpuPkg/Library/MpInitLib/{name}")
               for name in ("MpLib.c", "MpLib.h", "MpEqu.inc", "X64/MpFuncs.nasm", "Ia32/MpFuncs.nasm")}


def _library_classes(diffs) -> set[str]:
    """The library classes whose resolution differs, in any component."""
    return {d.subject.split(": ")[-1] for d in diffs if d.kind == "library"}


def test_xen_pvh_shows_only_listed_deltas(edk2_tree) -> None:
    tree = edk2_tree.root
    platform = load_platform("xen-pvh")
    per_config, unexplained, stale = diff_platform(resolved(platform, edk2_tree), tree / "OvmfPkg/OvmfXen.dsc",
                                                   tree / "OvmfPkg/OvmfXen.fdf")
    assert unexplained == []
    assert stale == []
    default = {(d.kind, d.subject) for d in per_config["default"] if d.kind != "library"}
    assert default == {("define", "PLATFORM_NAME"), ("define", "PLATFORM_GUID"), ("define", "OUTPUT_DIRECTORY"),
                       ("define", "FLASH_DEFINITION"), ("fd-region", "FD.OVMF 0x0|0xe000"),
                       ("file", "OvmfPkg/Sec/SecMain.c"),
                       # The NvVars fix: one patch override changing two files.
                       ("file", "OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c"),
                       ("file", "OvmfPkg/Library/PlatformBootManagerLib/PlatformBootManagerLib.inf"),
                       # 202502 only: Xen's PEI ResetSystemLib made to compile (Tcg2Pei links it, feature tpm).
                       ("file", "OvmfPkg/Library/ResetSystemLib/BaseResetShutdownXen.c"),
                       ("file", "OvmfPkg/XenPlatformPei/Platform.c"),
                       ("file", "OvmfPkg/XenPlatformPei/XenPlatformPei.inf"),
                       # Feature max_cpus (128).
                       ("pcd", "gUefiCpuPkgTokenSpaceGuid.PcdCpuMaxLogicalProcessorNumber"),
                       # XenPlatformPei sets the processor count from the MADT.
                       ("pcd", "gUefiCpuPkgTokenSpaceGuid.PcdCpuBootLogicalProcessorNumber"), *MP_INIT_LIB}
    assert _library_classes(per_config["default"]) == X2APIC_TIMER
    four = {(d.kind, d.subject) for d in per_config["FD_SIZE_4MB=TRUE"]}
    assert ("fd-region", "FD.OVMF 0x0|0x40000") in four


def test_xen_pvh_shows_only_listed_deltas_on_202605(edk2_tree_202605) -> None:
    # The same platform file, loaded for the newer release, against that release's OvmfXen.
    tree = edk2_tree_202605.root
    platform = load_platform("xen-pvh", edk2=edk2_tree_202605.tag)
    per_config, unexplained, stale = diff_platform(resolved(platform, edk2_tree_202605), tree / "OvmfPkg/OvmfXen.dsc",
                                                   tree / "OvmfPkg/OvmfXen.fdf")
    assert (unexplained, stale) == ([], [])
    assert {(d.kind, d.subject) for d in per_config["default"] if d.kind != "library"} == {
        ("define", "PLATFORM_NAME"), ("define", "PLATFORM_GUID"), ("define", "OUTPUT_DIRECTORY"),
        ("define", "FLASH_DEFINITION"), ("fd-region", "FD.OVMF 0x0|0xe000"), ("file", "OvmfPkg/Sec/SecMain.c"),
        # 202605's own two fixes (edk2: edk2-stable202605 overrides and deltas); the NvVars patch applies
        # on top of 202605's Shell patch and to the INF.
        ("file", "OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c"),
        ("file", "OvmfPkg/Library/PlatformBootManagerLib/PlatformBootManagerLib.inf"),
        ("file", "OvmfPkg/Library/PlatformDebugLibIoPort/PlatformRomDebugLibIoPortNocheck.inf"),
        ("file", "OvmfPkg/XenPlatformPei/Platform.c"), ("file", "OvmfPkg/XenPlatformPei/XenPlatformPei.inf"),
        ("pcd", "gUefiCpuPkgTokenSpaceGuid.PcdCpuMaxLogicalProcessorNumber"),
        ("pcd", "gUefiCpuPkgTokenSpaceGuid.PcdCpuBootLogicalProcessorNumber"), *MP_INIT_LIB}
    assert _library_classes(per_config["default"]) == X2APIC_TIMER
    # With the hypervisor console the fixed INF makes every module resolve MemDebugLogLib (upstream: no link).
    assert _library_classes(per_config["DEBUG_ON_HYPERVISOR_CONSOLE=TRUE"]) == {"MemDebugLogLib", *X2APIC_TIMER}


def test_diff_never_refuses(edk2_tree_202605, real_cache: None) -> None:
    # xen-pvh as written for 202502 only does not validate against 202605: diff still shows what
    # upstream changed (semantically, libraries summarised per class), then the validation error.
    old = "tests/data/rebase/xen-pvh.yaml"
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "diff", "--platform", old, "--edk2", "edk2-stable202605"],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert " ! MdeModulePkg/Application/BootManagerMenuApp/BootManagerMenuApp.inf: (no overrides) -> (absent)" in out
    assert " ! MemDebugLogLib: OvmfPkg/Library/MemDebugLogLib/MemDebugLogLibNull.inf -> (no mapping)   (in " in out
    assert " ! gEfiMdeModulePkgTokenSpaceGuid.PcdConOutUgaSupport: (absent) -> FALSE" in out
    assert "FV.DXEFV: MdeModulePkg/Application/BootManagerMenuApp/BootManagerMenuApp.inf" in out
    assert out.rstrip().endswith("xen-pvh does not validate against edk2-stable202605:")
    assert proc.stderr.strip().splitlines() == [
        f"{old}:479:9: error: library class MemDebugLogLib has no mapping for OvmfPkg/Sec/SecMain.inf (SEC) "
        "(needed by OvmfPkg/Library/PlatformDebugLibIoPort/PlatformRomDebugLibIoPort.inf)"]


def test_unexplained_delta_fails(tmp_path: Path, edk2_tree) -> None:
    tree = edk2_tree.root
    text = (REPO_ROOT / "platforms" / "xen-pvh.yaml").read_text()
    text = text.replace("      - OvmfPkg/XenPvBlkDxe/XenPvBlkDxe.inf\n", "", 1)
    path = tmp_path / "xen-pvh.yaml"  # the name finds its overrides/xen-pvh/
    path.write_text(text)
    platform = load_platform(path, platforms_dir=tmp_path)
    _, unexplained, _ = diff_platform(resolved(platform, edk2_tree), tree / "OvmfPkg/OvmfXen.dsc",
                                      tree / "OvmfPkg/OvmfXen.fdf")
    assert ("component", "OvmfPkg/XenPvBlkDxe/XenPvBlkDxe.inf") in [(d.kind, d.subject) for d in unexplained]
    # Everything else it reports is that module's library resolution, gone with it.
    assert all("XenPvBlkDxe" in d.subject for d in unexplained)


def test_diff_command_exit_status(edk2_tree, real_cache: None) -> None:
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "diff", "--platform", "xen-pvh", "--against",
                           "edk2/OvmfPkg/OvmfXen.dsc"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PLATFORM_NAME: Ovmf -> XenOvmf" in proc.stdout
    assert "delta:" in proc.stdout and "unexplained" not in proc.stdout
    # Without --against: the platform's upstream (upstream: dsc/fdf) in the default tree.
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "diff", "--platform", "xen-pvh"], cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PLATFORM_NAME: Ovmf -> XenOvmf" in proc.stdout and "unexplained" not in proc.stdout
    # The SEC fix: one patch for both trees, named as the file's source.
    assert ("OvmfPkg/Sec/SecMain.c: edk2 -> overrides/xen-pvh/patches/Sec-PEI-PPI-list-at-run-time.patch\n"
            "      delta: SEC builds") in proc.stdout


def test_an_override_equal_to_upstream_is_a_stale_delta(tmp_path: Path, edk2_tree) -> None:
    # The SEC fix's entry as a whole file that is the tree's own SecMain.c: the delta explains nothing.
    tree = edk2_tree.root
    text = (REPO_ROOT / "platforms" / "xen-pvh.yaml").read_text()
    entry = "  - patch: patches/Sec-PEI-PPI-list-at-run-time.patch\n"
    assert text.count(entry) == 1
    path = tmp_path / "platforms" / "xen-pvh.yaml"
    path.parent.mkdir()
    path.write_text(text.replace(entry, "  - path: OvmfPkg/Sec/SecMain.c\n"))
    overrides = tmp_path / "overrides" / "xen-pvh"
    shutil.copytree(Layout().overrides_for("xen-pvh"), overrides)   # patches/ and the per-tree <tag>/patches/
    (overrides / "OvmfPkg/Sec").mkdir(parents=True)
    (overrides / "OvmfPkg/Sec/SecMain.c").write_bytes((tree / "OvmfPkg/Sec/SecMain.c").read_bytes())
    platform = load_platform(path, platforms_dir=path.parent)
    _, unexplained, stale = diff_platform(resolved(platform, edk2_tree, Layout(overrides_dir=tmp_path / "overrides")),
                                          tree / "OvmfPkg/OvmfXen.dsc", tree / "OvmfPkg/OvmfXen.fdf")
    assert unexplained == []
    assert stale == ["file OvmfPkg/Sec/SecMain.c"]


def test_a_tree_past_the_release_carries_its_one_release_entries(edk2_tree_202605, capsys) -> None:
    # The 202605 tree under a checkout's name past it (upstream changed nothing since): xen-pvh's 202605-only
    # fixes are carried, each patch still applies and each delta is still observed, one located line each.
    later = "edk2-stable202605-7-g0123456789ab"
    tree = Edk2Tree(edk2_tree_202605.root, edk2_tree_202605.basetools, {**edk2_tree_202605.identity, "tag": later})
    r = resolved(load_platform("xen-pvh", edk2=later), tree)
    drift = compare_platform(r, *upstream_files(r))
    assert (drift.unexplained, drift.stale) == ([], [])
    text = (REPO_ROOT / "platforms/xen-pvh.yaml").read_text(encoding="utf-8").splitlines()

    def patch(name: str) -> str:
        line = text.index(f"  - patch: patches/{name}") + 1
        return (f"platforms/xen-pvh.yaml:{line}:5: note: override patch overrides/xen-pvh/patches/{name}, written "
                f"for edk2-stable202605, still applies to {later}: carried")

    def delta(kind: str, subject: str) -> str:
        # The delta's item starts on the line before its subject (the '- kind:' line).
        line = next(n for n, t in enumerate(text) if t == f"    subject: {subject}" and text[n - 1] == f"  - kind: {kind}"
                    and text[n + 1] == "    edk2: edk2-stable202605")
        return (f"platforms/xen-pvh.yaml:{line}:5: note: delta {kind} {subject}, written for edk2-stable202605, is "
                f"still observed on {later}: carried")

    assert [c.line() for c in drift.carried] == [
        patch("PlatformDebugLibIoPort-Nocheck-MemDebugLogLib.patch"),
        patch("PlatformBootManagerLib-Shell-boot-option.patch"),
        delta("file", "OvmfPkg/Library/PlatformDebugLibIoPort/PlatformRomDebugLibIoPortNocheck.inf"),
        delta("library", "MemDebugLogLib"),
        delta("file", "OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c"),
    ]
    assert capsys.readouterr().err == ""   # kept entries are said only where asked (rebase, the nightly)
