"""ovmfgen.boot.xen.sbdisks: the Secure Boot disks' init, GRUB config, signing and ESP contents (made for real from
the host's systemd-boot stub where the tools are installed; the cached disks made of Debian's packages in an
integration test)."""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from helpers import read_newc
from ovmfgen.boot.xen import gpt, osdisk, sbdisks
from ovmfgen.boot.xen.verdicts import OS_MARKER, PERSIST_MARKER, SB_MARKER
from ovmfgen.errors import OvmfgenError

KEYS = sbdisks.TEST_KEYS
STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("mcopy", "mkfs.fat", "objcopy", "sbsign", "sbverify", "faketime"))
    or not STUB.is_file(),
    reason="mtools, dosfstools, binutils, sbsigntool, faketime and systemd-boot-efi's stub needed")


def sbverify(image: Path, cert: Path) -> bool:
    return subprocess.run(["sbverify", "--cert", str(cert), str(image)], capture_output=True).returncode == 0


def test_init_reports_secure_boot_before_the_marker_and_powers_off():
    init = sbdisks._INIT
    assert init.startswith("#!/bin/busybox sh\n") and init.rstrip().endswith("poweroff -f")
    for marker in (OS_MARKER, SB_MARKER):  # assembled by the shell: the script never shows them whole
        assert marker not in init and marker[:11] in init and marker[11:] in init
    assert init.index('S="') < init.index('M="')
    assert f"/sys/firmware/efi/efivars/{sbdisks.SECURE_BOOT_VAR}" in init and "insmod /lib/efivarfs.ko" in init
    assert "grep -o 'Secure boot [a-z]*'" in init


def test_init_sets_the_test_variable_and_tries_db_before_the_marker():
    init = sbdisks._INIT
    assert PERSIST_MARKER not in init and PERSIST_MARKER[:11] in init and PERSIST_MARKER[11:] in init
    assert 'for line in "$S" "$R" "$M"' in init and init.index('S="') < init.index('R="') < init.index('M="')
    assert ' var=$P db=$DB db-write=$D"' in init
    var = "/sys/firmware/efi/efivars/OvmfgenPersist-5f3c9ad2-7a41-4a6e-9c1b-6f766d666765"
    db = "/sys/firmware/efi/efivars/db-d719b2cb-3d3a-4596-a3bc-dad00e67656f"  # EFI_IMAGE_SECURITY_DATABASE_GUID
    assert f"F={var}\n" in init and f"B={db}\n" in init and 'cat /db.bin > "$B" )' in init
    # Looked for before it is set; attributes NV|BS|RT (7), and for db NV|BS|RT|TIME_BASED_AUTH|APPEND (0x67).
    assert init.index('[ -f "$F" ] && P=present') < init.index('cat /persist.bin > "$F"')
    assert init.index('[ -f "$B" ] && DB=present') < init.index('cat /db.bin > "$B"')
    assert "printf '\\007\\000\\000\\000kept' > /persist.bin" in init
    assert "printf '\\147\\000\\000\\000ovmfgen' > /db.bin" in init
    for errno in ("EPERM", "EACCES", "EINVAL", "EROFS", "EIO"):
        assert f"D=refused:{errno} ;;" in init


def _run_persistence_part(efivars: Path, tmp: Path) -> str:
    """The init's efivarfs part, run by the host's sh on a directory standing in for efivarfs."""
    init = sbdisks._INIT
    start = init.index("    # What lasts")
    body = init[start:init.index("\nfi\n", start)]
    body = (body.replace("/sys/firmware/efi/efivars", str(efivars)).replace(sbdisks._BB + " ", "")
            .replace("/persist.bin", str(tmp / "persist.bin")).replace("/db.bin", str(tmp / "db.bin")))
    script = tmp / "part.sh"
    script.write_text('P=none\nDB=none\nD=none\n' + body + '\necho "var=$P db=$DB db-write=$D"\n')
    return subprocess.run(["sh", str(script)], capture_output=True, text=True, check=True).stdout.strip()


def test_init_persistence_part_reads_sets_and_reports_what_the_write_to_db_got(tmp_path):
    efivars = tmp_path / "efivars"
    efivars.mkdir()
    var = efivars / f"{sbdisks.PERSIST_VAR}"
    # A db whose write fails as a firmware's refusal would (here: a file that refuses writes with EIO).
    (efivars / sbdisks.DB_VAR).symlink_to("/proc/version")
    assert _run_persistence_part(efivars, tmp_path) == "var=absent->written db=present db-write=refused:EIO"
    assert var.read_bytes() == b"\x07\x00\x00\x00kept"
    assert (tmp_path / "db.bin").read_bytes() == b"\x67\x00\x00\x00ovmfgen"
    # A store that kept it: the next boot finds it.
    assert _run_persistence_part(efivars, tmp_path) == "var=present->written db=present db-write=refused:EIO"
    # A variable that cannot be set (here a directory: not a variable either), and no db at all (the write
    # creates the file: written).
    var.unlink()
    var.mkdir()
    (efivars / sbdisks.DB_VAR).unlink()
    assert _run_persistence_part(efivars, tmp_path) == "var=absent->failed db=absent db-write=written"


def test_initramfs_holds_busybox_efivarfs_and_the_init():
    data = sbdisks.sb_initramfs(b"BUSYBOX", b"EFIVARFS")
    assert data == sbdisks.sb_initramfs(b"BUSYBOX", b"EFIVARFS")
    files = read_newc(data)
    assert files["lib/efivarfs.ko"] == (0o100644, b"EFIVARFS") and files["bin/busybox"] == (0o100755, b"BUSYBOX")
    assert files["init"] == (0o100755, sbdisks._INIT.encode())


def test_grub_cfg_boots_the_kernel_on_the_esp_with_the_os_disks_command_line():
    cfg = sbdisks.GRUB_CFG
    assert f"linux /{sbdisks.GRUB_KERNEL} {osdisk.KERNEL_CMDLINE}\n" in cfg
    assert f"initrd /{sbdisks.GRUB_INITRD}\n" in cfg and cfg.rstrip().endswith("boot")
    assert cfg.count("echo ") == 3


def test_cache_key_follows_every_input():
    os_v = osdisk.OsDiskVersions("linux-image-6.1.0-1-amd64", "6.1.1-1", "252-1", "1:1.35-1")
    v = sbdisks.SbDiskVersions(os_v, "1.51", "2.06", "aa", "bb")
    assert v.key() == sbdisks.SbDiskVersions(*v.__dict__.values()).key()
    newer_kernel = osdisk.OsDiskVersions("linux-image-6.1.0-1-amd64", "6.1.1-2", "252-1", "1:1.35-1")
    for field, value in (("shim", "9"), ("grub", "9"), ("cert_sha256", "cc"), ("key_sha256", "cc"),
                         ("os", newer_kernel)):
        assert sbdisks.SbDiskVersions(**{**v.__dict__, field: value}).key() != v.key(), field


def test_a_key_set_without_db_is_one_clear_error(tmp_path):
    with pytest.raises(OvmfgenError, match=r"db\.pem: no such file \(a key set directory holds db\.pem and db\.key\)"):
        sbdisks.signing_pair(tmp_path)
    with pytest.raises(OvmfgenError, match="no Secure Boot disk 'x'"):
        sbdisks.SbDisks(tmp_path).path("x")


def test_signing_time_is_the_certificates_not_before():
    nb = sbdisks.cert_not_before(KEYS / "db.pem")
    assert nb.tzinfo is timezone.utc and datetime(2026, 1, 1, tzinfo=timezone.utc) < nb


def test_esps_are_sized_to_their_files(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"x" * 1000)
    big.write_bytes(b"x" * (10 * 1024 * 1024 + 1))
    assert sbdisks.esp_kib({"a": small}) == sbdisks.ESP_MIN_KIB
    assert sbdisks.esp_kib({"a": big, "b": small}) == 12 * 1024  # 10 MiB + 1 KiB + 1 KiB + the slack: 12 MiB


@needs_tools
def test_sign_image_is_reproducible_and_verifies_only_against_the_db_cert(tmp_path):
    cert, key = sbdisks.signing_pair(KEYS)
    a = sbdisks.sign_image(STUB, cert, key, tmp_path / "a.efi")
    b = sbdisks.sign_image(STUB, cert, key, tmp_path / "b.efi")
    assert a.read_bytes() == b.read_bytes() != STUB.read_bytes()
    assert sbverify(a, cert) and not sbverify(a, KEYS / "KEK.pem") and not sbverify(STUB, cert)


def _esp(disk: bytes, tmp_path: Path, name: str) -> str:
    [(kind, first, _, _)] = gpt.read_gpt_partitions(disk)
    assert kind == gpt.ESP_TYPE
    img = tmp_path / f"{name}.img"
    img.write_bytes(disk)
    return f"{img}@@{first * gpt.SECTOR}"


def _files(at: str) -> set[str]:
    out = subprocess.run(["mdir", "-/", "-b", "-i", at, "::/"], capture_output=True, text=True, check=True).stdout
    return {line.strip().removeprefix("::/") for line in out.splitlines() if not line.strip().endswith("/")}


def _get(at: str, path: str, dest: Path) -> Path:
    subprocess.run(["mcopy", "-n", "-i", at, f"::/{path}", str(dest)], check=True)
    return dest


@needs_tools
def test_disks_hold_the_chain_each_needs_and_are_reproducible(tmp_path):
    """The four disks from stand-ins (the host's stub as the kernel too; shim and GRUB as marked bytes)."""
    pieces = tmp_path / "pieces"
    pieces.mkdir()
    busybox, efivarfs, shim, grub = (pieces / n for n in ("busybox", "efivarfs.ko", "shim.efi", "grub.efi"))
    for p in (busybox, efivarfs, shim, grub):
        p.write_bytes(f"stand-in {p.name}".encode())
    cert, key = sbdisks.signing_pair(KEYS)
    disks = sbdisks.build_sb_disks(STUB, STUB, busybox, efivarfs, shim, grub, cert, key, tmp_path / "w1")
    again = sbdisks.build_sb_disks(STUB, STUB, busybox, efivarfs, shim, grub, cert, key, tmp_path / "w2")
    assert list(disks) == list(sbdisks.SB_DISK_NAMES) and disks == again
    at = {name: _esp(data, tmp_path, name) for name, data in disks.items()}
    assert _files(at["unsigned"]) == _files(at["signed"]) == {"EFI/BOOT/BOOTX64.EFI"}
    assert _files(at["shim-uki"]) == {"EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi"}
    assert _files(at["shim-grub"]) == {"EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/grubx64.efi", "EFI/BOOT/grub.cfg",
                                       "EFI/debian/grub.cfg", sbdisks.GRUB_KERNEL, sbdisks.GRUB_INITRD}
    unsigned = _get(at["unsigned"], "EFI/BOOT/BOOTX64.EFI", tmp_path / "u.efi")
    signed = _get(at["signed"], "EFI/BOOT/BOOTX64.EFI", tmp_path / "s.efi")
    assert not sbverify(unsigned, cert) and sbverify(signed, cert) and not sbverify(signed, KEYS / "KEK.pem")
    # shim's second stage on shim-uki is the signed UKI itself; shim-grub carries shim, GRUB, its config, Linux.
    assert _get(at["shim-uki"], "EFI/BOOT/grubx64.efi", tmp_path / "g.efi").read_bytes() == signed.read_bytes()
    assert _get(at["shim-uki"], "EFI/BOOT/BOOTX64.EFI", tmp_path / "sh.efi").read_bytes() == shim.read_bytes()
    assert _get(at["shim-grub"], "EFI/BOOT/grubx64.efi", tmp_path / "gr.efi").read_bytes() == grub.read_bytes()
    for cfg in ("EFI/BOOT/grub.cfg", "EFI/debian/grub.cfg"):
        assert _get(at["shim-grub"], cfg, tmp_path / "c").read_text() == sbdisks.GRUB_CFG
        (tmp_path / "c").unlink()
    initrd = _get(at["shim-grub"], sbdisks.GRUB_INITRD, tmp_path / "i").read_bytes()
    assert read_newc(initrd)["lib/efivarfs.ko"][1] == b"stand-in efivarfs.ko"
    # The UKI carries that initramfs and the OS disk's command line.
    sections = subprocess.run(["objdump", "-h", str(unsigned)], capture_output=True, text=True, check=True).stdout
    assert all(s in sections for s in (".linux", ".initrd", ".cmdline", ".osrel"))
