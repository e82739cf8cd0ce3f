"""invoke rebase: upstream's 202502 -> 202605 change merged into platforms written for 202502 only; a checkout
past 202605 (the 202605 tree mirrored with upstream-like edits, helpers.shadow_tree) merged into the shipped
xen-pvh, its one-release overrides and deltas carried forward or reported.

tests/data/rebase/ holds xen-pvh.yaml and qemu-x64.yaml as they stood before release conditions
existed. Rebased to edk2-stable202605 they must serve both trees:

* xen-pvh: the result renders byte-identical XenOvmf.dsc/.fdf (but for the generated-from line) to the
  shipped platforms/xen-pvh.yaml for both releases and both feature sets of the golden files. The shipped
  platform diffs clean against both trees' OvmfXen (test_semantic) and the 202605 integration build
  builds and boots it, so this shows that the rebased platform does too (without a second build in CI).
* qemu-x64: the shipped platforms/qemu-x64.yaml *is* the rebase's output, byte for byte; it diffs clean
  against OvmfPkgX64 of both trees (test below).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import shadow_tree
from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.resolve import resolved
from ovmfgen.paths import REPO_ROOT
from ovmfgen.platform.diff import diff_platform
from ovmfgen.platform.load import load_platform
from ovmfgen.platform.rebase import plan_rebase, rebase, release_conditions, written_for
from ovmfgen.platform.render import render

OLD = REPO_ROOT / "tests" / "data" / "rebase"
FEATURE_SETS = ({}, {"debug_output": "hypervisor-console", "fd_size": "4"})


def _copy(tmp_path: Path, name: str, edit=None) -> Path:
    path = tmp_path / f"{name}.yaml"
    text = (OLD / f"{name}.yaml").read_text(encoding="utf-8")
    path.write_text(edit(text) if edit else text, encoding="utf-8")
    return path


def test_xen_pvh_rebased_renders_like_the_shipped_platform(tmp_path: Path, edk2_tree, edk2_tree_202605) -> None:
    path = _copy(tmp_path, "xen-pvh")
    assert written_for(path.read_text()) == "edk2-stable202502"
    result = rebase(path, edk2_tree, edk2_tree_202605)
    assert result.conflicts == ()
    assert "added component MdeModulePkg/Application/BootManagerMenuApp/BootManagerMenuApp.inf" in result.changes
    assert "added library class MemDebugLogLib" in result.changes
    path.write_text(result.text, encoding="utf-8")
    assert written_for(result.text) == "edk2-stable202605"
    for tag in (edk2_tree.tag, edk2_tree_202605.tag):
        for features in FEATURE_SETS:
            ours = load_platform(path, platforms_dir=tmp_path, edk2=tag, feature_overrides=features)
            shipped = load_platform("xen-pvh", edk2=tag, feature_overrides=features)
            for name, data in render(ours).files().items():
                data = data.replace(ours.source.encode(), shipped.source.encode())
                assert data == render(shipped).files()[name], (tag, features, name)


def test_rebase_keeps_everything_it_did_not_touch(tmp_path: Path, edk2_tree, edk2_tree_202605) -> None:
    # A reviewable change: only whole lines inserted or replaced; every old line is still there, in order.
    text = (OLD / "xen-pvh.yaml").read_text(encoding="utf-8")
    result = rebase(_copy(tmp_path, "xen-pvh"), edk2_tree, edk2_tree_202605)
    new_lines = iter(line.strip() for line in result.text.splitlines())
    assert all(line.strip() in new_lines for line in text.splitlines())
    assert result.text.count('when: {edk2: ">= edk2-stable202605"}') >= 5
    assert "deltas:\n  - kind: define\n    subject: PLATFORM_NAME" in result.text


def test_qemu_x64_rebased_is_the_shipped_platform(tmp_path: Path, edk2_tree, edk2_tree_202605) -> None:
    result = rebase(_copy(tmp_path, "qemu-x64"), edk2_tree, edk2_tree_202605)
    assert result.conflicts == ()
    assert result.text == (REPO_ROOT / "platforms" / "qemu-x64.yaml").read_text(encoding="utf-8")


@pytest.mark.parametrize("which", ["edk2_tree", "edk2_tree_202605"])
def test_qemu_x64_diffs_clean_against_both_trees(which: str, request: pytest.FixtureRequest) -> None:
    tree = request.getfixturevalue(which)
    platform = load_platform("qemu-x64", edk2=tree.tag)
    per_config, unexplained, stale = diff_platform(resolved(platform, tree), tree.root / "OvmfPkg/OvmfPkgX64.dsc",
                                                   tree.root / "OvmfPkg/OvmfPkgX64.fdf")
    assert (unexplained, stale) == ([], [])
    assert {(d.kind, d.subject) for d in per_config["default"]} == {
        ("define", "PLATFORM_NAME"), ("define", "OUTPUT_DIRECTORY"), ("define", "FLASH_DEFINITION")}


def _where(text: str, item: str, nth: int = 0) -> str:
    """line:col of the nth list item whose text after '- ' starts with ``item``."""
    hits = [(n + 1, line.index("- ") + 3) for n, line in enumerate(text.splitlines())
            if line.lstrip().startswith(f"- {item}")]
    return f"{hits[nth][0]}:{hits[nth][1]}"


def test_conflicts_are_located_and_nothing_is_written(tmp_path: Path, edk2_tree, edk2_tree_202605,
                                                      real_cache: None) -> None:
    def edit(text: str) -> str:
        # Our own change to a PCD upstream dropped, and a delta on a component upstream changed.
        text = text.replace("PcdConOutUgaSupport: FALSE", "PcdConOutUgaSupport: TRUE")
        return text.replace("deltas:\n", "deltas:\n  - kind: component\n    subject: SecurityPkg/Hash2DxeCrypto/"
                                         "Hash2DxeCrypto.inf\n    reason: Hash2 stays in every build.\n", 1)

    path = _copy(tmp_path, "xen-pvh", edit)
    before = path.read_bytes()
    text = before.decode()
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "rebase", "--platform", str(path), "--to",
                           edk2_tree_202605.tag], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 1
    shown = str(path)
    assert proc.stderr.splitlines() == [
        f"{shown}:{_where(text, 'gEfiMdeModulePkgTokenSpaceGuid.PcdConOutUgaSupport')}: conflict: upstream changed "
        "PCD gEfiMdeModulePkgTokenSpaceGuid.PcdConOutUgaSupport (removed it) which the platform also changes",
        f"{shown}:{_where(text, 'SecurityPkg/Hash2DxeCrypto/Hash2DxeCrypto.inf')}: conflict: upstream changed "
        "component SecurityPkg/Hash2DxeCrypto/Hash2DxeCrypto.inf which delta 'component "
        "SecurityPkg/Hash2DxeCrypto/Hash2DxeCrypto.inf' also changes",
        f"{shown}:{_where(text, 'INF: SecurityPkg/Hash2DxeCrypto/Hash2DxeCrypto.inf')}: conflict: upstream changed "
        "FV entry SecurityPkg/Hash2DxeCrypto/Hash2DxeCrypto.inf which delta 'component "
        "SecurityPkg/Hash2DxeCrypto/Hash2DxeCrypto.inf' also changes",
        "error: 3 conflict(s): nothing written",
    ]
    assert path.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name != path.name]   # no temp file left beside it


def test_dry_run_prints_the_change_and_writes_nothing(tmp_path: Path, edk2_tree, edk2_tree_202605,
                                                      real_cache: None) -> None:
    path = _copy(tmp_path, "xen-pvh")
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "rebase", "--platform", str(path), "--to",
                           edk2_tree_202605.tag, "--dry-run"], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert '+      - when: {edk2: ">= edk2-stable202605"}' in proc.stdout
    assert "-      - IntrinsicLib: CryptoPkg/Library/IntrinsicLib/IntrinsicLib.inf" in proc.stdout
    assert path.read_bytes() == before
    # Without --dry-run it writes; a second rebase has nothing left to do.
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "rebase", "--platform", str(path), "--to",
                           edk2_tree_202605.tag], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert path.read_bytes() != before
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "rebase", "--platform", str(path), "--to",
                           edk2_tree_202605.tag], cwd=REPO_ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "is not newer than edk2-stable202605" in proc.stderr


def test_the_old_platforms_predate_release_conditions() -> None:
    # The rebase tests start from platforms written for one release: no edk2 condition anywhere.
    for name in ("xen-pvh", "qemu-x64"):
        assert "edk2:" not in (OLD / f"{name}.yaml").read_text(encoding="utf-8")


# --- a checkout past the release the platform is written for ----------------------------------------------

XEN_PVH = REPO_ROOT / "platforms" / "xen-pvh.yaml"
LATER = "edk2-stable202605-2-gabcdef1"
SERIAL = (b"gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial|FALSE",
          b"gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial|TRUE")
NOCHECK_INF = "OvmfPkg/Library/PlatformDebugLibIoPort/PlatformRomDebugLibIoPortNocheck.inf"


def _platform_copy(tmp_path: Path) -> Path:
    """Where a copy of xen-pvh.yaml can be written (beside its key sets; platforms/common/ is always read)."""
    path = tmp_path / "platforms" / "xen-pvh.yaml"
    shutil.copytree(REPO_ROOT / "platforms" / "keys", path.parent / "keys")
    return path


def _line(item: str) -> int:
    """The line of the platform's list item ``item``."""
    return XEN_PVH.read_text(encoding="utf-8").splitlines().index(item) + 1


def _delta_line(kind: str, subject: str) -> int:
    """The line of xen-pvh's one-release delta ``kind subject``."""
    text = XEN_PVH.read_text(encoding="utf-8").splitlines()
    return next(n + 1 for n in range(len(text) - 2) if text[n:n + 3] == [
        f"  - kind: {kind}", f"    subject: {subject}", "    edk2: edk2-stable202605"])


@pytest.mark.parametrize("base, target, conditions", [
    ("edk2-stable202502", "edk2-stable202605", (">= edk2-stable202605", "< edk2-stable202605")),
    ("edk2-stable202605", "edk2-stable202605-3-g5ccd4da", ("> edk2-stable202605", "<= edk2-stable202605")),
    ("edk2-stable202605", "edk2-stable202605-3-g5ccd4da-dirty", ("> edk2-stable202605", "<= edk2-stable202605")),
])
def test_release_conditions(base: str, target: str, conditions: tuple[str, str]) -> None:
    assert release_conditions(base, target) == conditions


@pytest.mark.parametrize("base, target, message", [
    ("edk2-stable202605", "edk2-stable202605", "--to edk2-stable202605 is not newer than edk2-stable202605, the "
                                               "release p.yaml is written for"),
    ("edk2-stable202605", "edk2-stable202502-9-gabcdef1", "is not newer than"),
    ("edk2-stable202502", "edk2-stable202605-3-g5ccd4da", "edk2-stable202605-3-g5ccd4da is a checkout past "
     "edk2-stable202605, but p.yaml is written for edk2-stable202502: rebase to edk2-stable202605 first, then to "
     "the checkout"),
    ("edk2-stable202605", "edk2-0123456789ab", "cannot tell where edk2-0123456789ab stands among edk2 releases"),
])
def test_release_conditions_refuse(base: str, target: str, message: str) -> None:
    with pytest.raises(OvmfgenError, match=re.escape(message)):
        release_conditions(base, target, "p.yaml")


def test_rebase_to_a_checkout_holds_after_the_release(tmp_path: Path, edk2_tree_202605) -> None:
    # Upstream changed a PCD the platform takes as it is: merged as data for every tree after 202605.
    later = shadow_tree(edk2_tree_202605, tmp_path / "edk2", LATER, {"OvmfPkg/OvmfXen.dsc": SERIAL})
    result = plan_rebase(XEN_PVH, edk2_tree_202605, later)
    assert (result.status, result.changes, result.remaining) == (
        "clean", ("changed PCD gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial",), ())
    assert ('      - when: {edk2: "> edk2-stable202605"}\n        then:\n'
            "          - gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial: TRUE\n        else:\n"
            "          - gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial: FALSE\n") in result.text
    # Every one-release entry is carried: its patch applies, its delta is still observed; one line each.
    assert [c.kept for c in result.carried] == [True] * 5
    assert result.carried[0].line() == (
        f"platforms/xen-pvh.yaml:{_line('  - patch: patches/PlatformDebugLibIoPort-Nocheck-MemDebugLogLib.patch')}:5: "
        "note: override patch overrides/xen-pvh/patches/PlatformDebugLibIoPort-Nocheck-MemDebugLogLib.patch, written "
        f"for edk2-stable202605, still applies to {LATER}: carried")
    path = _platform_copy(tmp_path)
    path.write_text(result.text, encoding="utf-8")
    for tag, value in ((edk2_tree_202605.tag, "FALSE"), (LATER, "TRUE")):
        dsc = render(load_platform(path, platforms_dir=path.parent, edk2=tag)).files()["XenOvmf.dsc"].decode()
        assert f"gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial|{value}" in dsc, tag
    assert XEN_PVH.read_text(encoding="utf-8") != result.text   # plan_rebase writes nothing


def test_a_carried_fix_upstream_made_is_one_line_each(tmp_path: Path, edk2_tree_202605) -> None:
    # Upstream fixed the Nocheck INF as xen-pvh's 202605-only patch does: the patch and both deltas that go with
    # it are reported, located at the platform's own lines; the rebase itself has nothing to merge.
    fix = (b"  DebugPrintErrorLevelLib\r\n", b"  DebugPrintErrorLevelLib\r\n  MemDebugLogLib\r\n")
    later = shadow_tree(edk2_tree_202605, tmp_path / "edk2", LATER, {NOCHECK_INF: fix})
    result = plan_rebase(XEN_PVH, edk2_tree_202605, later)
    assert (result.status, result.conflicts) == ("nothing", ())
    left = [c.line() for c in result.carried if not c.kept]
    assert left == [
        f"platforms/xen-pvh.yaml:{_line('  - patch: patches/PlatformDebugLibIoPort-Nocheck-MemDebugLogLib.patch')}:5: "
        "note: override patch overrides/xen-pvh/patches/PlatformDebugLibIoPort-Nocheck-MemDebugLogLib.patch does not "
        f"apply to {LATER}: patch failed: {NOCHECK_INF}:39 (git apply); written for edk2-stable202605, it is not "
        "applied to this later tree: if upstream fixed what it fixes, end its 'edk2:' at edk2-stable202605, else "
        "rewrite it",
        f"platforms/xen-pvh.yaml:{_delta_line('file', NOCHECK_INF)}:5: note: delta file {NOCHECK_INF}, "
        f"written for edk2-stable202605, is no longer observed on {LATER}: upstream now does the same; end its "
        "'edk2:' at edk2-stable202605",
        f"platforms/xen-pvh.yaml:{_delta_line('library', 'MemDebugLogLib')}:5: note: delta library "
        f"MemDebugLogLib, written for edk2-stable202605, is no longer observed on {LATER}: upstream now does the "
        "same; end its 'edk2:' at edk2-stable202605",
    ]
    assert [c.what for c in result.carried if c.kept] == [
        "override patch overrides/xen-pvh/patches/PlatformBootManagerLib-Shell-boot-option.patch",
        "delta file OvmfPkg/Library/PlatformBootManagerLib/BdsPlatform.c"]


def test_an_override_that_no_longer_applies_is_a_located_conflict(tmp_path: Path, edk2_tree_202605) -> None:
    # Upstream rewrote the lines of SecMain.c that xen-pvh's patch for every tree changes: a conflict at the
    # override entry (not a carried fix: nothing says upstream fixed it), and the platform's text is kept.
    sec = (b"EFI_PEI_TEMPORARY_RAM_SUPPORT_PPI  mTemporaryRamSupportPpi = {", b"EFI_PEI_TEMPORARY_RAM_SUPPORT_PPI  mTempRamSupportPpi = {")
    later = shadow_tree(edk2_tree_202605, tmp_path / "edk2", LATER,
                        {"OvmfPkg/OvmfXen.dsc": SERIAL, "OvmfPkg/Sec/SecMain.c": sec})
    result = plan_rebase(XEN_PVH, edk2_tree_202605, later)
    assert result.status == "conflicts" and result.changes == ()
    assert result.text == XEN_PVH.read_text(encoding="utf-8")
    [conflict] = result.conflicts
    assert conflict.line().startswith(
        f"platforms/xen-pvh.yaml:{_line('  - patch: patches/Sec-PEI-PPI-list-at-run-time.patch')}:5: conflict: "
        f"override patch overrides/xen-pvh/patches/Sec-PEI-PPI-list-at-run-time.patch does not apply to {LATER}: ")


def test_a_change_the_platform_makes_too_is_a_located_conflict(tmp_path: Path, edk2_tree_202605) -> None:
    later = shadow_tree(edk2_tree_202605, tmp_path / "edk2", LATER, {"OvmfPkg/OvmfXen.dsc": SERIAL})
    path = _platform_copy(tmp_path)
    item = "      - gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial: FALSE"
    path.write_text(XEN_PVH.read_text(encoding="utf-8").replace(item, item.replace("FALSE", "TRUE")), encoding="utf-8")
    result = plan_rebase(path, edk2_tree_202605, later)
    assert [c.line() for c in result.conflicts] == [
        f"{path}:{_line(item)}:9: conflict: upstream changed PCD gEfiMdeModulePkgTokenSpaceGuid.PcdStatusCodeUseSerial "
        "which the platform also changes (it differs from upstream's previous release there)"]
