"""GPT disk images, byte for byte (no tools, no mounting): one partition around a file system image.

Also the check ``invoke boot --on xen --disk`` makes on a user's file: does it start like a disk?
"""

from __future__ import annotations

import struct
import uuid
import zlib
from pathlib import Path

from ovmfgen.errors import OvmfgenError, display_path

SECTOR = 512
#: The EFI system partition's type GUID (UEFI spec 5.3.3).
ESP_TYPE = uuid.UUID("C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
ENTRIES = 128
ENTRY_SIZE = 128
#: Sectors the partition entry array takes (128 entries of 128 bytes).
ENTRY_SECTORS = ENTRIES * ENTRY_SIZE // SECTOR
#: The first partition starts at 1 MiB, as partitioning tools align it.
FIRST_LBA = 2048
#: The first LBA a partition may use: after the MBR, the header and the entry array.
FIRST_LBA_USABLE = 2 + ENTRY_SECTORS
# Names are derived from the content, never random: the same inputs give the same bytes.
_NAMESPACE = uuid.UUID("6f766d66-6765-6e00-8000-6f766d666765")


def _protective_mbr(total_sectors: int) -> bytes:
    """LBA 0: one partition of type 0xEE covering the disk, so MBR-only tools leave it alone."""
    size = min(total_sectors - 1, 0xFFFFFFFF)
    entry = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0xEE, b"\xff\xff\xff", 1, size)
    return b"\0" * 446 + entry + b"\0" * 48 + b"\x55\xaa"


def _header(my_lba: int, alt_lba: int, last_usable: int, disk_guid: uuid.UUID, entries_lba: int,
            entries_crc: int) -> bytes:
    fields = [b"EFI PART", 0x00010000, 92, 0, 0, my_lba, alt_lba, FIRST_LBA_USABLE, last_usable,
              disk_guid.bytes_le, entries_lba, ENTRIES, ENTRY_SIZE, entries_crc]
    fmt = "<8sIIIIQQQQ16sQIII"
    crc = zlib.crc32(struct.pack(fmt, *fields))
    fields[3] = crc
    return struct.pack(fmt, *fields).ljust(SECTOR, b"\0")


def gpt_disk(partition: bytes, name: str = "EFI system partition", type_guid: uuid.UUID = ESP_TYPE,
             label: str = "ovmfgen") -> bytes:
    """A GPT disk holding ``partition`` (a file system image, whole sectors) as its one partition.

    The disk and partition GUIDs are derived from ``label`` and the partition's size, so the same
    inputs give the same bytes. The disk ends 1 MiB after the partition (room for the backup GPT).
    """
    if len(partition) % SECTOR or not partition:
        raise OvmfgenError(f"a partition must be whole {SECTOR}-byte sectors (got {len(partition)} bytes)")
    part_sectors = len(partition) // SECTOR
    total = FIRST_LBA + part_sectors + FIRST_LBA  # 1 MiB before and after
    last_usable = total - 1 - ENTRY_SECTORS - 1
    disk_guid = uuid.uuid5(_NAMESPACE, f"disk:{label}:{part_sectors}")
    part_guid = uuid.uuid5(_NAMESPACE, f"part:{label}:{part_sectors}:{name}")
    encoded = name.encode("utf-16-le")
    if len(encoded) > 72:
        raise OvmfgenError(f"partition name too long for GPT (36 UTF-16 units): {name!r}")
    entry = struct.pack("<16s16sQQQ72s", type_guid.bytes_le, part_guid.bytes_le, FIRST_LBA,
                        FIRST_LBA + part_sectors - 1, 0, encoded)
    array = entry.ljust(ENTRIES * ENTRY_SIZE, b"\0")
    array_crc = zlib.crc32(array)
    backup_entries = total - 1 - ENTRY_SECTORS
    primary = _header(1, total - 1, last_usable, disk_guid, 2, array_crc)
    backup = _header(total - 1, 1, last_usable, disk_guid, backup_entries, array_crc)
    head = _protective_mbr(total) + primary + array
    gap = b"\0" * (FIRST_LBA * SECTOR - len(head))
    tail_gap = b"\0" * ((backup_entries - FIRST_LBA - part_sectors) * SECTOR)
    return head + gap + partition + tail_gap + array + backup


def read_gpt_partitions(disk: bytes) -> list[tuple[uuid.UUID, int, int, str]]:
    """The used entries of ``disk``'s primary GPT as (type GUID, first LBA, last LBA, name); checks both CRCs."""
    hdr = disk[SECTOR:2 * SECTOR]
    if hdr[:8] != b"EFI PART":
        raise OvmfgenError("no GPT header at LBA 1")
    fmt = "<8sIIIIQQQQ16sQIII"
    fields = list(struct.unpack_from(fmt, hdr))
    crc, fields[3] = fields[3], 0
    if zlib.crc32(struct.pack(fmt, *fields)) != crc:
        raise OvmfgenError("GPT header CRC32 mismatch")
    lba, count, size, array_crc = fields[10], fields[11], fields[12], fields[13]
    array = disk[lba * SECTOR:lba * SECTOR + count * size]
    if zlib.crc32(array) != array_crc:
        raise OvmfgenError("GPT partition array CRC32 mismatch")
    out = []
    for i in range(count):
        t, _, first, last, _, raw = struct.unpack_from("<16s16sQQQ72s", array, i * size)
        if t != b"\0" * 16:
            out.append((uuid.UUID(bytes_le=t), first, last, raw.decode("utf-16-le").rstrip("\0")))
    return out


def check_disk_image(path: Path) -> str:
    """What kind of disk ``path`` holds ("GPT", "MBR"), or one clear error: missing, unreadable, not a disk.

    A disk image is a file whose first sector ends in the 0x55AA boot signature (an MBR, GPT's
    protective MBR, or a partitionless FAT volume, which firmware boots too); GPT also has
    "EFI PART" at LBA 1.
    """
    shown = display_path(path)
    if not path.exists():
        raise OvmfgenError(f"{shown}: no such disk image")
    if not path.is_file():
        raise OvmfgenError(f"{shown}: not a regular file (a disk image file is expected)")
    try:
        with open(path, "rb") as fh:
            head = fh.read(2 * SECTOR)
    except OSError as e:
        raise OvmfgenError(f"{shown}: cannot read: {e.strerror}") from None
    if len(head) < SECTOR or head[510:512] != b"\x55\xaa":
        raise OvmfgenError(f"{shown}: not a disk image (no MBR/GPT boot signature 0x55AA at byte 510)")
    return "GPT" if head[SECTOR:SECTOR + 8] == b"EFI PART" else "MBR"
