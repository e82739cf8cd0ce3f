"""The qemu-x64 platform (the nightly's QEMU cell): shared fragments, and no difference from upstream
OvmfPkgX64 but its listed deltas."""

from __future__ import annotations


from helpers import REPO



def test_qemu_x64_shares_the_common_fragments_and_lists_its_deltas():
    from ovmfgen.platform.load import load_platform
    from ovmfgen.platform.model import Block, Field, LibraryMapping

    text = (REPO / "platforms" / "qemu-x64.yaml").read_text()
    assert text.count("- use: fv-attributes") == 4 and "- use: ovmf-rules" in text and "- use: timer-library" in text
    p = load_platform("qemu-x64")
    assert (p.dsc_path, p.fdf_path) == ("OvmfPkg/QemuOvmfX64.dsc", "OvmfPkg/QemuOvmfX64.fdf")
    assert p.header_field("PLATFORM_NAME") == "QemuOvmfX64" and p.header_field("OUTPUT_DIRECTORY") == "Build/QemuOvmfX64"
    assert p.upstream is not None and p.upstream.dsc == "OvmfPkg/OvmfPkgX64.dsc"
    assert p.elf is None and p.feature("timer") == "acpi" and p.feature("fd_size") == "4"
    assert sorted(d.subject for d in p.deltas) == ["FLASH_DEFINITION", "OUTPUT_DIRECTORY", "PLATFORM_NAME"]
    assert all(d.reason for d in p.deltas)
    # The fragments expanded: every FV declares the shared attributes, the shared rules are there
    # (plus the two SMM rules only this platform has), the ACPI timer comes from timer-library.
    fvs = [s for s in p.fdf if s.kind == "FV"]
    assert len(fvs) == 4
    for fv in fvs:
        assert Field("ERASE_POLARITY", "1") in fv.body and Field("READ_LOCK_STATUS", "TRUE") in fv.body
    rules = [s.header for s in p.fdf if s.kind == "Rule"]
    assert rules[0] == "Rule.Common.SEC" and rules[-2:] == ["Rule.Common.SMM_CORE", "Rule.Common.DXE_SMM_DRIVER"]
    assert all(isinstance(s.body[0], Block) for s in p.fdf if s.kind == "Rule")
    lib = next(s for s in p.dsc if s.header == "LibraryClasses")
    assert LibraryMapping("TimerLib", "OvmfPkg/Library/AcpiTimerLib/BaseAcpiTimerLib.inf") in lib.body


def test_qemu_x64_matches_upstream_but_for_its_listed_deltas(edk2_tree):
    """`invoke diff --platform qemu-x64 --against edk2/OvmfPkg/OvmfPkgX64.dsc` exits 0 (needs the edk2 tree)."""
    from ovmfgen.platform.load import load_platform
    from ovmfgen.platform.diff import diff_platform
    from ovmfgen.platform.resolve import resolved
    from ovmfgen.platform.validate import validate

    tree = edk2_tree.root
    r = resolved(load_platform("qemu-x64"), edk2_tree)
    validate(r, use_cache=False)
    per_config, unexplained, stale = diff_platform(r, tree / "OvmfPkg/OvmfPkgX64.dsc", tree / "OvmfPkg/OvmfPkgX64.fdf")
    assert unexplained == [] and stale == []
    default = {d.subject for d in per_config["default"]}
    assert default == {"FLASH_DEFINITION", "OUTPUT_DIRECTORY", "PLATFORM_NAME"}
