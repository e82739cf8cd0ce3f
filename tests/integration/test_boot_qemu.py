"""The published ELF boots in QEMU (TCG) through both entry points and reaches XenPlatformPei.

``published_xen_pvh`` (tests/integration/conftest.py) builds and publishes dist/xen-pvh/DEBUG/ once
per session and returns that directory.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest

from ovmfgen.fvfile import file_pe32
from ovmfgen.boot.qemu import boot_qemu
from ovmfgen.boot.verdict import ENTRIES, Verdict
from ovmfgen.boot.verdict import installed_ppis
from ovmfgen import paths

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86_64 not installed"),
]

# Both entries must get there well within a minute under TCG (about a second on a 2-core machine).
DEADLINE = 60


def _explain(result) -> str:
    return (f"{result.summary()}\n--- last lines of {result.log_path} ---\n{result.log_tail or '(empty)'}"
            + (f"\n--- QEMU output ---\n{result.qemu_output}" if result.qemu_output.strip() else ""))


@pytest.mark.parametrize("entry", ENTRIES)
def test_published_elf_reaches_xen_platform_pei(published_xen_pvh: Path, entry: str, tmp_path: Path):
    elf = published_xen_pvh / "ovmf.elf"
    result = boot_qemu(elf, entry, tmp_path, timeout=DEADLINE)
    assert result.verdict is Verdict.REACHED_XEN_PLATFORM_PEI, _explain(result)
    assert result.proven_entry == entry, _explain(result)
    assert result.milestones == ("sec", "pei_core", "xen_platform_pei", "xen_not_detected")
    assert result.duration is not None and result.duration < DEADLINE
    assert result.log_path == tmp_path / f"boot-{entry}.log"
    assert "ERROR: Xen isn't detected" in result.log_path.read_text(errors="replace")
    print(result.summary())


def test_the_same_image_runs_from_ram_and_from_flash(published_xen_pvh: Path, tmp_path: Path):
    # One file, two entries: SEC's boot FV sits in RAM above 1 MiB for PVH and in flash below 4 GiB
    # for the reset vector, at the same offset within the image.
    elf = published_xen_pvh / "ovmf.elf"
    pvh = boot_qemu(elf, "pvh", tmp_path / "pvh", timeout=DEADLINE)
    reset = boot_qemu(elf, "reset", tmp_path / "reset", timeout=DEADLINE)
    assert pvh.ok and reset.ok, _explain(pvh if not pvh.ok else reset)
    size = elf.stat().st_size
    assert pvh.boot_fv is not None and reset.boot_fv is not None
    assert reset.boot_fv - (0x1_0000_0000 - size) == pvh.boot_fv - 0x100000


# What SEC hands to the PEI core (OvmfPkg/Sec/SecMain.c): gEfiTemporaryRamSupportPpiGuid and
# gEfiPeiMpInitLibMpDepPpiGuid. Upstream's table of flash addresses reads as zeros through the PVH entry;
# overrides/xen-pvh/patches/Sec-PEI-PPI-list-at-run-time.patch builds it at run time.
TEMPORARY_RAM_SUPPORT = "DBE23AA9-A345-4B97-85B6-B226F1617389"
MP_INIT_LIB_MP_DEP = "138F9CF4-F0E7-4721-8F49-F5FFECF42D40"
ZERO_GUID = "00000000-0000-0000-0000-000000000000"


@pytest.mark.parametrize("build", ["published_xen_pvh", "published_xen_pvh_newest"], ids=["default-tree", "newest-tree"])
def test_sec_hands_pei_the_same_ppis_through_both_entries(build: str, request: pytest.FixtureRequest, tmp_path: Path):
    # Both trees: the one SEC patch, applied to each tree's own SecMain.c.
    elf = request.getfixturevalue(build) / "ovmf.elf"
    ppis = {}
    for entry in ENTRIES:
        result = boot_qemu(elf, entry, tmp_path, timeout=DEADLINE)
        assert result.ok, _explain(result)
        ppis[entry] = installed_ppis(result.log_path.read_text(errors="replace"))
        print(entry, " ".join(ppis[entry]))
    for entry, guids in ppis.items():
        assert ZERO_GUID not in guids, f"{entry}: a PPI with an all-zero GUID: {guids}"
        # SEC's two, next to each other, in the order of its table.
        i = guids.index(TEMPORARY_RAM_SUPPORT)
        assert guids[i:i + 2] == (TEMPORARY_RAM_SUPPORT, MP_INIT_LIB_MP_DEP), f"{entry}: {guids}"
    # One image: the entry it started from changes nothing PEI is given.
    assert ppis["pvh"] == ppis["reset"]


def _phys32_entry_to_spin_loop(elf_path: Path) -> bytes:
    """The image with ``jmp $`` planted after the ELF notes and the PHYS32 entry pointed at it."""
    from elftools.elf.elffile import ELFFile

    data = bytearray(elf_path.read_bytes())
    with open(elf_path, "rb") as fh:
        elf = ELFFile(fh)
        load = next(s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD")
        notes = [(seg, n) for seg in elf.iter_segments() if seg["p_type"] == "PT_NOTE" for n in seg.iter_notes()]
    entry_notes = [n for _, n in notes if n["n_name"] == "Xen" and n["n_type"] == 18]  # PHYS32_ENTRY
    assert entry_notes, "no XEN_ELFNOTE_PHYS32_ENTRY note in the published ELF"
    spin = max(seg["p_offset"] + seg["p_filesz"] for seg, _ in notes)
    spin = (spin + 15) & ~15
    assert load["p_offset"] <= spin < load["p_offset"] + load["p_filesz"]
    data[spin:spin + 2] = b"\xeb\xfe"  # jmp $
    note = entry_notes[0]
    desc = note["n_offset"] + 12 + ((note["n_namesz"] + 3) & ~3)
    struct.pack_into("<I", data, desc, load["p_paddr"] + spin - load["p_offset"])
    return bytes(data)


def test_a_silent_hang_is_judged_stalled_quickly(published_xen_pvh: Path, tmp_path: Path):
    # The guest spins at its entry without printing: boot_qemu must give up after the stall
    # window (not the whole timeout), stop QEMU and say where the log stopped.
    broken = tmp_path / "spin.elf"
    broken.write_bytes(_phys32_entry_to_spin_loop(published_xen_pvh / "ovmf.elf"))
    result = boot_qemu(broken, "pvh", tmp_path, timeout=DEADLINE, stall_seconds=3)
    assert result.verdict is Verdict.STALLED, _explain(result)
    assert "no output for" in result.detail
    assert result.milestones == ()
    assert result.duration is not None and result.duration < 15


def test_time_limit_stops_qemu(published_xen_pvh: Path, tmp_path: Path):
    # Far too little time to boot: the verdict is TIMEOUT and QEMU is gone when boot_qemu returns.
    result = boot_qemu(published_xen_pvh / "ovmf.elf", "reset", tmp_path, timeout=0.05)
    assert result.verdict is Verdict.TIMEOUT, _explain(result)
    assert result.duration is not None and result.duration < 5
    assert result.log_path is not None and result.log_path.exists()
    assert not list(tmp_path.glob(".boot-*"))


@pytest.mark.parametrize("build, workspace", [("published_xen_pvh", "xen-pvh"),
                                              ("published_xen_pvh_newest", "edk2-stable202605/xen-pvh")])
def test_the_shell_boot_takes_the_builds_own_shell_from_the_image(build: str, workspace: str,
                                                                   request: pytest.FixtureRequest):
    """ovmfgen.fvfile finds the Shell in the published image (DXEFV, inside FVMAIN_COMPACT's LZMA section):
    the same bytes as the build's Shell.efi, in the FD and in the PVH ELF, for both trees."""
    dist = request.getfixturevalue(build)
    built = sorted((paths.build_root() / workspace / "Build").glob("*/DEBUG_*/X64/Shell.efi"))
    assert len(built) == 1, built
    for name in ("OVMF.fd", "ovmf.elf"):
        assert file_pe32((dist / name).read_bytes()) == built[0].read_bytes(), name
