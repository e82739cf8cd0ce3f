"""ovmfgen.boot.qemu: the QEMU command lines for the PVH entry and the reset vector (TCG, never KVM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovmfgen.boot.qemu import qemu_argv
from ovmfgen.errors import OvmfgenError


def _value(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


def test_qemu_argv_pvh_loads_the_elf_as_a_kernel():
    argv = qemu_argv(Path("/d/ovmf.elf"), "pvh", Path("/d/boot-pvh.log"))
    assert argv[0] == "qemu-system-x86_64"
    assert _value(argv, "-kernel") == "/d/ovmf.elf"
    assert "-bios" not in argv
    assert _value(argv, "-accel") == "tcg"
    assert _value(argv, "-m") == "512"
    assert _value(argv, "-debugcon") == "file:/d/boot-pvh.log"
    assert _value(argv, "-global") == "isa-debugcon.iobase=0x402"
    assert _value(argv, "-display") == "none"
    assert _value(argv, "-net") == "none"
    assert "-no-reboot" in argv


def test_qemu_argv_reset_maps_the_same_image_as_bios():
    argv = qemu_argv(Path("/d/ovmf.elf"), "reset", Path("/d/boot-reset.log"), memory_mb=256)
    assert _value(argv, "-bios") == "/d/ovmf.elf"
    assert "-kernel" not in argv
    assert _value(argv, "-m") == "256"
    pvh = qemu_argv(Path("/d/ovmf.elf"), "pvh", Path("/d/boot-reset.log"), memory_mb=256)
    # Only the way the image is handed to QEMU differs between the two entries.
    assert [a for a in argv if a != "-bios"] == [a for a in pvh if a != "-kernel"]


def test_qemu_argv_never_uses_kvm():
    argv = qemu_argv(Path("x.elf"), "pvh", Path("x.log"))
    assert "-enable-kvm" not in argv
    assert not any("kvm" in a for a in argv)


def test_qemu_argv_escapes_commas_in_the_log_path():
    argv = qemu_argv(Path("x.elf"), "pvh", Path("/a,b/boot.log"))
    assert _value(argv, "-debugcon") == "file:/a,,b/boot.log"


def test_qemu_argv_rejects_unknown_entry():
    with pytest.raises(OvmfgenError, match="unknown boot entry 'hvm'"):
        qemu_argv(Path("x.elf"), "hvm", Path("x.log"))
