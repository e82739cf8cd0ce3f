"""ovmfgen.boot.xen.osdisk: the OS disk's pieces (initramfs, UKI header, FAT volume) and the persistence disk."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from ovmfgen.boot.xen import gpt, osdisk, persist
from ovmfgen.boot.xen.verdicts import OS_MARKER
from ovmfgen.errors import OvmfgenError

needs_mtools = pytest.mark.skipif(shutil.which("mcopy") is None or shutil.which("mkfs.fat") is None,
                                  reason="mtools and dosfstools (invoke setup) not installed")


def _newc_names(data: bytes) -> dict[str, int]:
    out, pos = {}, 0
    while True:
        f = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        name = data[pos + 110: pos + 110 + f[11] - 1].decode()
        pos += 110 + f[11]
        pos += -pos % 4
        pos += f[6]
        pos += -pos % 4
        if name == "TRAILER!!!":
            return out
        out[name] = f[1]


def test_initramfs_holds_busybox_and_an_init_that_prints_the_marker_and_powers_off():
    data = osdisk.initramfs(b"BUSYBOX")
    assert data == osdisk.initramfs(b"BUSYBOX")  # deterministic
    names = _newc_names(data)
    assert names["init"] == 0o100755 and names["bin/busybox"] == 0o100755 and names["dev"] == 0o040755
    init = osdisk._INIT
    assert init.startswith("#!/bin/busybox sh\n")
    # The marker is assembled by the shell, so the script's own bytes never show it whole.
    assert OS_MARKER not in init and OS_MARKER[:11] in init and OS_MARKER[11:] in init
    assert "> /dev/kmsg" in init and "poweroff -f" in init
    # PVH and HVM: the PV console only (the one xenconsoled logs; no console on a serial port). It gets
    # the kernel's info lines too: the lines the verdicts read (smp's, Secure Boot's) as the kernel prints them.
    assert osdisk.KERNEL_CMDLINE == "console=hvc0 loglevel=7 panic=-1 rdinit=/init"
    assert "dmesg" not in init


def _fake_pe(stamp: int, checksum: int) -> bytes:
    pe = 0x80
    data = bytearray(0x200)
    data[:2] = b"MZ"
    struct.pack_into("<I", data, 0x3C, pe)
    data[pe:pe + 4] = b"PE\0\0"
    struct.pack_into("<I", data, pe + 8, stamp)
    struct.pack_into("<I", data, pe + 88, checksum)
    data[0x180:0x190] = bytes(range(16))
    return bytes(data)


def test_pe_without_timestamp_zeroes_the_stamp_and_fixes_the_checksum():
    a = osdisk.pe_without_timestamp(_fake_pe(0x12345678, 0))
    b = osdisk.pe_without_timestamp(_fake_pe(0x7FFFFFFF, 99))
    assert a == b
    assert struct.unpack_from("<I", a, 0x80 + 8)[0] == 0
    assert struct.unpack_from("<I", a, 0x80 + 88)[0] == osdisk.pe_checksum(a, 0x80 + 88) != 0
    with pytest.raises(OvmfgenError, match="not a PE image"):
        osdisk.pe_without_timestamp(b"\x7fELF" + b"\0" * 200)


def test_pe_checksum_matches_the_stub_debian_ships():
    """The checksum routine agrees with the one in systemd-boot-efi's stub, when the host has it."""
    stub = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
    if not stub.is_file():
        pytest.skip("systemd-boot-efi not installed on the host")
    data = stub.read_bytes()
    at = struct.unpack_from("<I", data, 0x3C)[0] + 88
    assert osdisk.pe_checksum(data, at) == struct.unpack_from("<I", data, at)[0]


@needs_mtools
def test_fat_image_is_reproducible_and_holds_the_files(tmp_path):
    src = tmp_path / "f.efi"
    src.write_bytes(b"payload")
    a = osdisk.fat_image(tmp_path / "a.img", {"EFI/BOOT/BOOTX64.EFI": src}, size_kib=8 * 1024)
    src.write_bytes(b"payload")  # a fresh mtime: must not matter
    b = osdisk.fat_image(tmp_path / "b.img", {"EFI/BOOT/BOOTX64.EFI": src}, size_kib=8 * 1024)
    assert a == b and len(a) == 8 << 20
    out = subprocess.run(["mtype", "-i", str(tmp_path / "a.img"), "::/EFI/BOOT/BOOTX64.EFI"],
                         capture_output=True, check=True)
    assert out.stdout == b"payload"


@needs_mtools
def test_persist_disk_has_startup_nsh_and_no_default_boot_file(tmp_path):
    disk = osdisk.persist_disk(tmp_path / "w", persist.startup_nsh())
    assert disk == osdisk.persist_disk(tmp_path / "w2", persist.startup_nsh())
    [(kind, first, last, _)] = gpt.read_gpt_partitions(disk)
    assert kind == gpt.ESP_TYPE and first == gpt.FIRST_LBA
    img = tmp_path / "p.img"
    img.write_bytes(disk)
    at = f"{img}@@{first * gpt.SECTOR}"
    nsh = subprocess.run(["mtype", "-i", at, "::/startup.nsh"], capture_output=True, check=True).stdout
    assert nsh.startswith(b"@echo -off\r\n") and persist.DONE.encode() in nsh
    listing = subprocess.run(["mdir", "-/", "-b", "-i", at, "::/"], capture_output=True, text=True).stdout
    assert "target.efi" in listing.lower() and "bootx64" not in listing.lower()


def test_os_disk_cache_key_follows_every_package_version():
    v = osdisk.OsDiskVersions("linux-image-6.1.0-1-amd64", "6.1.1-1", "252-1", "1:1.35-1")
    assert v.key() == osdisk.OsDiskVersions(*v.__dict__.values()).key()
    for field in ("kernel", "stub", "busybox"):
        other = osdisk.OsDiskVersions(**{**v.__dict__, field: "9"})
        assert other.key() != v.key(), field


def test_a_warm_os_disk_entry_is_used_as_it_is(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch):
    # The entry as the code before cacheentry wrote it, at its path (key pinned: a warm cache stays warm;
    # it changes with the recipe, the command line and the init).
    v = osdisk.OsDiskVersions("linux-image-6.1.0-57-amd64", "6.1.192-3", "252.39-1~deb12u1", "1:1.35.0-4+b3")
    assert v.key() == "8adb2662d3648884"
    final = isolated_cache / "disks" / "osdisk-8adb2662d3648884"
    final.mkdir(parents=True)
    (final / "os-disk.img").write_bytes(b"cached disk")
    stamp = {"kernel": "linux-image-6.1.0-57-amd64 6.1.192-3", "systemd-boot-efi": v.stub, "busybox-static": v.busybox,
             "recipe": 1, "cmdline": osdisk.KERNEL_CMDLINE, "sha256": "0" * 64, "key": v.key()}
    (final / "stamp.json").write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    (final.parent / ".osdisk.a1b2c3.tmp").mkdir()   # a killed run's stage (removed only when something is made)
    downloads: list[str] = []

    def download(package, version, dest, opts=()):
        downloads.append(package)
        raise OvmfgenError(f"test: no download of {package}")

    monkeypatch.setattr(osdisk, "ensure_disk_tools", lambda: None)
    monkeypatch.setattr(osdisk, "query_os_disk_versions", lambda: v)
    monkeypatch.setattr(osdisk, "_apt_download", download)
    assert osdisk.prepare_os_disk() == final / "os-disk.img"
    assert downloads == [] and (final / "os-disk.img").read_bytes() == b"cached disk"
    # Another recipe's stamp (same path) is made again, under the lock, after the leftovers went.
    (final / "stamp.json").write_text(json.dumps({**stamp, "recipe": 0}, indent=2, sort_keys=True) + "\n")
    with pytest.raises(OvmfgenError, match="no download of linux-image-6.1.0-57-amd64"):
        osdisk.prepare_os_disk()
    assert sorted(p.name for p in final.parent.iterdir()) == [".lock", final.name]
    assert (final / "os-disk.img").read_bytes() == b"cached disk"
