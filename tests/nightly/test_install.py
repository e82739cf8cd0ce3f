"""The install layout and QEMU firmware descriptors (and the unified-FD split they rely on)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from helpers import REPO
from ovmfgen.boot import shell as boot_shell
from ovmfgen.errors import OvmfgenError
from ovmfgen.nightly import history, install, matrix
from ovmfgen.nightly.matrix import InstallSpec



def _fv_header(length: int) -> bytes:
    """A minimal valid PI firmware volume header (with its block map and checksum)."""
    head = bytearray(16 + 16) + struct.pack("<Q", length) + b"_FVH" + struct.pack("<I", 0x0004FEFF)
    head += struct.pack("<HHHBB", 0x48, 0, 0, 0, 2) + struct.pack("<II", length // 0x1000, 0x1000) + bytes(8)
    checksum = (-sum(struct.unpack("<36H", bytes(head)))) & 0xFFFF
    head[0x32:0x34] = struct.pack("<H", checksum)
    return bytes(head)


def _unified_fd(vars_size: int = 0x20000, size: int = 0x100000) -> bytes:
    varstore = _fv_header(0xE000) + b"\xff" * (vars_size - 0x48)
    code = _fv_header(size - vars_size) + b"\x90" * (size - vars_size - 0x48)
    return varstore + code


def test_split_unified_fd_finds_the_code_volume():
    fd = _unified_fd(0x84000, 0x400000)
    vars_, code = boot_shell.split_unified_fd(fd)
    assert len(vars_) == 0x84000 and len(code) == 0x400000 - 0x84000 and vars_ + code == fd
    bad = bytearray(fd)
    bad[0x84000 + 0x32] ^= 1  # a broken checksum is not a volume
    with pytest.raises(OvmfgenError, match="no code firmware volume"):
        boot_shell.split_unified_fd(bytes(bad))
    with pytest.raises(OvmfgenError, match="not a unified OVMF image"):
        boot_shell.split_unified_fd(b"\0" * 0x1000)


def test_split_matches_the_debian_ovmf_pair_when_installed():
    unified, code, vars_ = (Path("/usr/share/ovmf/OVMF.fd"), Path("/usr/share/OVMF/OVMF_CODE.fd"),
                            Path("/usr/share/OVMF/OVMF_VARS.fd"))
    if not (unified.is_file() and code.is_file() and vars_.is_file()):
        pytest.skip("Debian's ovmf package is not installed")
    v, c = boot_shell.split_unified_fd(unified.read_bytes())
    assert (v, c) == (vars_.read_bytes(), code.read_bytes())


def _installable_night(root: Path) -> tuple[dict, Path]:
    night = root / "2025-03-04"
    elf_cell, fd_cell = night / "cells" / "xen-pvh-RELEASE-2M", night / "cells" / "qemu-x64-DEBUG"
    (elf_cell / "artifacts").mkdir(parents=True)
    (fd_cell / "artifacts").mkdir(parents=True)
    (elf_cell / "artifacts" / "ovmf.elf").write_bytes(b"\x7fELF-pvh-firmware")
    (fd_cell / "artifacts" / "OVMF.fd").write_bytes(_unified_fd())
    cells = [
        {"name": "xen-pvh-RELEASE-2M", "status": "passed", "platform": "xen-pvh", "target": "RELEASE",
         "fd_size": "2M", "features": [], "description": "OVMF for Xen PVH", "manifest": {"features": {
             "debug_output": "debugcon", "timer": "lapic"}},
         "artifacts": {"ovmf.elf": "cells/xen-pvh-RELEASE-2M/artifacts/ovmf.elf"}},
        {"name": "qemu-x64-DEBUG", "status": "passed", "platform": "qemu-x64", "target": "DEBUG", "fd_size": "4M",
         "features": [], "manifest": {"features": {"debug_output": "debugcon"}},
         "artifacts": {"OVMF.fd": "cells/qemu-x64-DEBUG/artifacts/OVMF.fd"}},
        {"name": "broken", "status": "failed", "artifacts": {}},
    ]
    summary = history.make_summary("2025-03-04", cells, None, "nightly.yaml", 1, 1.0)
    summary["edk2"] = {"tag": "edk2-stable202502"}
    return summary, night


def test_install_lays_out_xen_and_qemu_firmware_with_descriptors(tmp_path: Path):
    summary, night = _installable_night(tmp_path / "nightly")
    specs = matrix.load_matrix(REPO / "nightly.yaml").install + (InstallSpec("broken", firmware="x/ovmf.bin"),)
    root = tmp_path / "root"
    written = install.install(summary, night, root, specs)
    rel = sorted(p.relative_to(root).as_posix() for p in written)
    assert rel == ["usr/lib/xen/boot/ovmf.bin", "usr/share/ovmfgen/qemu-x64/OVMF_CODE.fd",
                   "usr/share/ovmfgen/qemu-x64/OVMF_VARS.fd", "usr/share/qemu/firmware/60-ovmfgen-xen-pvh.json",
                   "usr/share/qemu/firmware/70-ovmfgen-qemu-x64.json"]  # the failed cell is not installed
    assert (root / "usr/lib/xen/boot/ovmf.bin").read_bytes() == b"\x7fELF-pvh-firmware"
    assert oct((root / "usr/lib/xen/boot/ovmf.bin").stat().st_mode & 0o777) == "0o644"
    v, c = boot_shell.split_unified_fd(_unified_fd())
    assert (root / "usr/share/ovmfgen/qemu-x64/OVMF_CODE.fd").read_bytes() == c
    assert (root / "usr/share/ovmfgen/qemu-x64/OVMF_VARS.fd").read_bytes() == v

    xen = json.loads((root / "usr/share/qemu/firmware/60-ovmfgen-xen-pvh.json").read_text())
    assert xen["interface-types"] == ["uefi"]
    assert xen["mapping"] == {"device": "kernel", "filename": "/usr/lib/xen/boot/ovmf.bin"}
    assert xen["targets"] == [{"architecture": "x86_64", "machines": ["pc-i440fx-*"]}]
    assert xen["features"] == []  # RELEASE: no debug log
    assert "xen-pvh-elf" in xen["tags"] and "edk2=edk2-stable202502" in xen["tags"]
    assert "OVMF for Xen PVH" in xen["description"] and "2025-03-04" in xen["description"]
    qemu = json.loads((root / "usr/share/qemu/firmware/70-ovmfgen-qemu-x64.json").read_text())
    assert qemu["mapping"] == {
        "device": "flash",
        "executable": {"filename": "/usr/share/ovmfgen/qemu-x64/OVMF_CODE.fd", "format": "raw"},
        "nvram-template": {"filename": "/usr/share/ovmfgen/qemu-x64/OVMF_VARS.fd", "format": "raw"}}
    assert qemu["features"] == ["verbose-dynamic"]  # DEBUG, log on the debug console (port 0x402)


def test_firmware_descriptor_has_exactly_the_schema_members():
    """The members of QEMU's docs/interop/firmware.json @Firmware, with values from its enums."""
    cell = {"platform": "xen-pvh", "target": "DEBUG", "fd_size": "2M",
            "features": ["debug_output=hypervisor-console"]}
    d = install.firmware_descriptor("kernel", "x", {"firmware": "/usr/lib/xen/boot/ovmf.bin"}, cell)
    assert list(d) == ["description", "interface-types", "mapping", "targets", "features", "tags"]
    assert set(d["interface-types"]) <= {"bios", "openfirmware", "uboot", "uefi"}
    assert d["mapping"]["device"] in ("flash", "kernel", "memory")
    assert d["features"] == []  # the log goes to Xen's console (port 0xe9), not the 0x402 debugcon
    assert "feature:debug_output=hypervisor-console" in d["tags"]
    with pytest.raises(OvmfgenError, match="unknown firmware mapping"):
        install.firmware_descriptor("rom", "x", {}, cell)
