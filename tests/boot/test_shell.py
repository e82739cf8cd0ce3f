"""ovmfgen.boot.shell: a full OVMF to the UEFI Shell in QEMU (startup script, FAT disk, pflash, classification)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ovmfgen.boot import shell as boot_shell


# --- QEMU shell boot helpers ---------------------------------------------------------------------

def test_startup_script_never_contains_the_marker_itself():
    script = boot_shell.startup_script()
    assert boot_shell.SHELL_MARKER not in script
    assert script.startswith("@echo -off") and "reset -s" in script


def test_shell_boot_classification():
    ok = f"\x1b[0mPress ESC in 1 seconds\r\n\x1b[1m{boot_shell.SHELL_MARKER}\x1b[0m\r\nReset with"
    assert boot_shell.classify_shell_boot(ok, "")[0] == "SHELL_REACHED"
    echoed = f"Shell> echo {boot_shell.SHELL_MARKER}\r\n"  # a command line mentioning it is not the output
    assert boot_shell.classify_shell_boot(echoed, "", timed_out=True)[0] == "TIMEOUT"
    assert boot_shell.classify_shell_boot("", "ASSERT [DxeCore] x.c(1): y\n")[0] == "FIRMWARE_ERROR"
    verdict, detail = boot_shell.classify_shell_boot("UEFI Interactive Shell v2.2", "", returncode=0)
    assert verdict == "QEMU_FAILED" and "the Shell started" in detail


def test_shell_boot_names_the_boot_option_that_started_the_shell():
    serial = ('BdsDxe: loading Boot0002 "UEFI Non-Block Boot Device" from PciRoot(0x0)/Pci(0x3,0x0)\r\n'
              'BdsDxe: starting Boot0002 "UEFI Non-Block Boot Device" from PciRoot(0x0)/Pci(0x3,0x0)\r\n'
              f"UEFI Interactive Shell v2.2\r\n{boot_shell.SHELL_MARKER}\r\n")
    verdict, detail = boot_shell.classify_shell_boot(serial, "")
    assert verdict == "SHELL_REACHED" and detail.endswith('(started by Boot0002 "UEFI Non-Block Boot Device")')
    assert "started by" not in boot_shell.classify_shell_boot(f"{boot_shell.SHELL_MARKER}\r\n", "")[1]


def test_shell_qemu_argv_uses_pflash_a_fat_disk_and_tcg():
    argv = boot_shell.shell_qemu_argv(Path("/f/CODE.fd"), Path("/f/VARS.fd"), Path("/f/disk.img"), Path("/f/s.log"),
                                Path("/f/d,1.log"))
    text = " ".join(argv)
    assert "-accel tcg" in text and "kvm" not in text
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/f/CODE.fd" in argv
    assert "if=pflash,format=raw,unit=1,file=/f/VARS.fd" in argv
    assert "if=virtio,format=raw,file=/f/disk.img" in argv
    assert "file:/f/s.log" in argv and "file:/f/d,,1.log" in argv


@pytest.mark.skipif(shutil.which("mkfs.fat") is None or shutil.which("mcopy") is None,
                    reason="dosfstools/mtools not installed (invoke setup installs them)")
def test_fat_image_holds_the_startup_script(tmp_path: Path):
    img = boot_shell.make_fat_image(tmp_path / "disk.img", {"startup.nsh": boot_shell.startup_script().encode()})
    assert img.stat().st_size == boot_shell.FAT_IMAGE_KIB * 1024
    from ovmfgen.run import run

    out = run(["mtype", "-i", str(img), "::/startup.nsh"], env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
    assert out.stdout.replace("\r", "") == boot_shell.startup_script().replace("\r", "")


@pytest.mark.skipif(shutil.which("mkfs.fat") is None or shutil.which("mmd") is None,
                    reason="dosfstools/mtools not installed (invoke setup installs them)")
def test_fat_image_makes_the_folders_of_the_default_boot_path(tmp_path: Path):
    img = boot_shell.make_fat_image(tmp_path / "disk.img", {"startup.nsh": b"x", boot_shell.DEFAULT_BOOT_PATH: b"MZ"})
    from ovmfgen.run import run

    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    assert run(["mtype", "-i", str(img), "::/EFI/BOOT/BOOTX64.EFI"], env=env).stdout == "MZ"
    assert run(["mtype", "-i", str(img), "::/startup.nsh"], env=env).stdout == "x"
