"""ovmfgen.boot.xen.gpt: GPT images byte for byte, and the check a user's disk gets."""

from __future__ import annotations

import struct
import uuid
import zlib
from pathlib import Path

import pytest

from ovmfgen.boot.xen import gpt
from ovmfgen.errors import OvmfgenError


def test_gpt_disk_layout_crcs_and_backup():
    part = bytes(range(256)) * (4 * gpt.SECTOR // 256)  # 4 sectors
    disk = gpt.gpt_disk(part, label="t")
    total = len(disk) // gpt.SECTOR
    assert len(disk) % gpt.SECTOR == 0 and total == gpt.FIRST_LBA * 2 + 4
    assert disk[510:512] == b"\x55\xaa" and disk[446 + 4] == 0xEE  # protective MBR
    assert disk[gpt.FIRST_LBA * gpt.SECTOR:][:len(part)] == part
    assert gpt.read_gpt_partitions(disk) == [(gpt.ESP_TYPE, gpt.FIRST_LBA, gpt.FIRST_LBA + 3, "EFI system partition")]
    # The backup header at the last LBA mirrors the primary, pointing back at LBA 1.
    backup = disk[-gpt.SECTOR:]
    assert backup[:8] == b"EFI PART"
    my_lba, alt_lba = struct.unpack_from("<QQ", backup, 24)
    assert (my_lba, alt_lba) == (total - 1, 1)
    entries_lba = struct.unpack_from("<Q", backup, 72)[0]
    array = disk[entries_lba * gpt.SECTOR:(entries_lba + gpt.ENTRY_SECTORS) * gpt.SECTOR]
    assert zlib.crc32(array) == struct.unpack_from("<I", backup, 88)[0]
    assert array == disk[2 * gpt.SECTOR:(2 + gpt.ENTRY_SECTORS) * gpt.SECTOR]


def test_gpt_disk_is_deterministic_and_names_come_from_the_label():
    part = b"\0" * gpt.SECTOR
    assert gpt.gpt_disk(part, label="a") == gpt.gpt_disk(part, label="a")
    assert gpt.gpt_disk(part, label="a") != gpt.gpt_disk(part, label="b")
    guid = uuid.UUID(bytes_le=gpt.gpt_disk(part, label="a")[gpt.SECTOR + 56:gpt.SECTOR + 72])
    assert guid.version == 5


def test_gpt_reader_notices_corruption():
    disk = bytearray(gpt.gpt_disk(b"\0" * gpt.SECTOR))
    disk[2 * gpt.SECTOR + 60] ^= 1  # a byte of the first entry
    with pytest.raises(OvmfgenError, match="partition array CRC32 mismatch"):
        gpt.read_gpt_partitions(bytes(disk))
    disk = bytearray(gpt.gpt_disk(b"\0" * gpt.SECTOR))
    disk[gpt.SECTOR + 40] ^= 1  # the header's FirstUsableLBA
    with pytest.raises(OvmfgenError, match="header CRC32 mismatch"):
        gpt.read_gpt_partitions(bytes(disk))


def test_gpt_disk_rejects_partial_sectors_and_long_names():
    with pytest.raises(OvmfgenError, match="whole 512-byte sectors"):
        gpt.gpt_disk(b"\0" * 100)
    with pytest.raises(OvmfgenError, match="partition name too long"):
        gpt.gpt_disk(b"\0" * gpt.SECTOR, name="x" * 37)


def test_sgdisk_reads_our_gpt(tmp_path):
    """An outside opinion, when the host has sgdisk: the table verifies clean."""
    import shutil
    import subprocess

    if shutil.which("sgdisk") is None:
        pytest.skip("sgdisk (gdisk) not installed")
    img = tmp_path / "d.img"
    img.write_bytes(gpt.gpt_disk(b"\0" * 64 * gpt.SECTOR))
    out = subprocess.run(["sgdisk", "-v", str(img)], capture_output=True, text=True)
    assert "No problems found" in out.stdout, out.stdout


def test_check_disk_image_kinds_and_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = tmp_path / "g.img"
    g.write_bytes(gpt.gpt_disk(b"\0" * gpt.SECTOR))
    assert gpt.check_disk_image(g) == "GPT"
    m = tmp_path / "m.img"
    m.write_bytes(b"\0" * 510 + b"\x55\xaa" + b"\0" * 512)
    assert gpt.check_disk_image(m) == "MBR"
    with pytest.raises(OvmfgenError, match=r"^error: nope.img: no such disk image$"):
        gpt.check_disk_image(Path("nope.img"))
    with pytest.raises(OvmfgenError, match=r"^error: sub: not a regular file"):
        (tmp_path / "sub").mkdir()
        gpt.check_disk_image(Path("sub"))
    (tmp_path / "elf").write_bytes(b"\x7fELF" + b"\0" * 2000)
    with pytest.raises(OvmfgenError, match=r"^error: elf: not a disk image \(no MBR/GPT boot signature 0x55AA at byte 510\)$"):
        gpt.check_disk_image(Path("elf"))
    (tmp_path / "short").write_bytes(b"\x55\xaa")
    with pytest.raises(OvmfgenError, match="not a disk image"):
        gpt.check_disk_image(Path("short"))
