"""Boot truth on real Xen: the xen-pvh ELF reaches the UEFI Shell as a PVH guest of Xen 4.17.

Xen runs nested under QEMU TCG with a Debian dom0 (see ovmfgen/boot/xen/). The first run on a
machine builds the cache (hypervisor, dom0 kernel, dom0 root file system: about a minute);
each boot then takes ~30-40 s of QEMU and ~2.5 GB of RAM.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from ovmfgen.boot.xen import Verdict, format_result, nested

pytestmark = [
    pytest.mark.integration,
    pytest.mark.xen,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 (debootstrap, chroot) needs root"),
]

XEN_ELFNOTE_PHYS32_ENTRY = 18


def _load_and_entry(elf: Path) -> tuple[int, int, int]:
    """(PT_LOAD file offset, PT_LOAD size, PVH entry) of a PVH ELF."""
    with open(elf, "rb") as fh:
        e = ELFFile(fh)
        load = next(s for s in e.iter_segments() if s["p_type"] == "PT_LOAD")
        entry = None
        for seg in e.iter_segments():
            if seg["p_type"] == "PT_NOTE":
                for note in seg.iter_notes():
                    if note["n_name"] == "Xen" and note["n_type"] == XEN_ELFNOTE_PHYS32_ENTRY:
                        desc = note["n_desc"]
                        raw = desc if isinstance(desc, bytes) else desc.encode("latin-1")
                        entry = int.from_bytes(raw[:4], "little")
        assert entry is not None, "no XEN_ELFNOTE_PHYS32_ENTRY note"
        return load["p_offset"] - load["p_paddr"], load["p_filesz"], entry


def test_xen_pvh_debug_reaches_shell_under_xen(published_xen_pvh_hvcon: Path):
    elf = Path(published_xen_pvh_hvcon) / "ovmf.elf"
    _, size, _ = _load_and_entry(elf)
    assert size == 2 * 1024 * 1024, f"expected the 2 MiB FD, PT_LOAD is {size:#x} bytes"

    result = nested.boot_xen(elf, elf.parent, timeout=600)  # roomy: CI machines are loaded
    print(format_result(result))

    assert result.verdict is Verdict.SHELL_REACHED, f"{result.verdict}: {result.detail} (see {result.serial_log})"
    assert result.serial_log == elf.parent / nested.SERIAL_LOG_NAME and result.serial_log.is_file()
    guest = (elf.parent / nested.GUEST_LOG_NAME).read_text(errors="replace")
    assert "UEFI Interactive Shell" in guest and "Shell>" in guest
    serial = result.serial_log.read_text(errors="replace")
    # The firmware's debug output reached Xen's console (DEBUG_ON_HYPERVISOR_CONSOLE): the PVH entry ran.
    assert "(d1) SecCoreStartupWithStack" in serial
    assert result.shell_seconds is not None and result.shell_seconds > 0


def test_broken_pvh_entry_is_reported_as_a_crash(published_xen_pvh_hvcon: Path, tmp_path: Path):
    """Negative control: the same image with ud2 at its PVH entry must not pass."""
    elf = Path(published_xen_pvh_hvcon) / "ovmf.elf"
    delta, _, entry = _load_and_entry(elf)
    broken = tmp_path / "broken.elf"
    shutil.copyfile(elf, broken)
    with open(broken, "r+b") as fh:
        fh.seek(entry + delta)
        fh.write(b"\x0f\x0b")  # ud2 before any IDT exists: #UD -> #DF -> triple fault

    result = nested.boot_xen(broken, tmp_path / "out", timeout=400)
    print(format_result(result))
    assert result.verdict is Verdict.GUEST_CRASHED, f"{result.verdict}: {result.detail}"
    assert "Triple fault" in result.detail
