"""ovmfgen.varstore: the variable store read back without virt-firmware, and what the firmware checks."""

from __future__ import annotations

import struct

import pytest

from helpers import sb_template_image
from ovmfgen.varstore import (
    GLOBAL_VARIABLE_GUID, StoreError, check_secure_boot_store, parse_store, signature_lists,
)

LAYOUT = dict(fv_length=0x84000, variable_size=0x40000)


def _var(name: str, guid, data: bytes, state: int = 0x3F) -> bytes:
    raw_name = (name + "\0").encode("utf-16-le")
    head = struct.pack("<HBxIQ16sIII", 0x55AA, state, 0x27, 0, bytes(16), 0, len(raw_name), len(data)) + guid.bytes_le
    blob = head + raw_name + data
    return blob + b"\xff" * (-len(blob) % 4)


def test_empty_template_parses_with_no_variables() -> None:
    image = sb_template_image()
    store = parse_store(image, 0x1000, **LAYOUT)
    assert store.variables == () and store.end == 0x1000 + 0x48 + 28


def test_variables_in_force_and_deleted_ones() -> None:
    image = bytearray(sb_template_image())
    pos = 0x1000 + 0x48 + 28
    blob = _var("Old", GLOBAL_VARIABLE_GUID, b"gone", state=0x3C) + _var("PK", GLOBAL_VARIABLE_GUID, b"x" * 5)
    image[pos:pos + len(blob)] = blob
    store = parse_store(bytes(image), 0x1000, **LAYOUT)
    assert [(v.name, v.data) for v in store.variables] == [("PK", b"xxxxx")]
    assert store.end == pos + len(blob)


@pytest.mark.parametrize("patch, message", [
    ((0x1000 + 0x28, b"_FVX"), "no variable store at 0x1000"),
    ((0x1000 + 0x20, struct.pack("<Q", 0x20000)), "has FvLength 0x20000"),
    ((0x1000 + 0x32, b"\x00\x00"), "bad checksum"),
    ((0x1000 + 0x48 + 16, struct.pack("<I", 0xdfb8)), "Size is 0xdfb8"),
    ((0x1000 + 0x48 + 20, b"\x00"), "not a formatted, healthy"),
])
def test_what_the_firmware_refuses(patch, message) -> None:
    image = bytearray(sb_template_image())
    at, data = patch
    image[at:at + len(data)] = data
    with pytest.raises(StoreError, match=message):
        parse_store(bytes(image), 0x1000, **LAYOUT)


def test_a_variable_running_past_the_store() -> None:
    image = bytearray(sb_template_image())
    pos = 0x1000 + 0x48 + 28
    blob = _var("PK", GLOBAL_VARIABLE_GUID, b"x")
    blob = blob[:40] + struct.pack("<I", 0x7FFFFFFF) + blob[44:]
    image[pos:pos + len(blob)] = blob
    with pytest.raises(StoreError, match="runs past the end"):
        parse_store(bytes(image), 0x1000, **LAYOUT)


def test_a_store_without_keys_is_not_a_secure_boot_store() -> None:
    store = parse_store(sb_template_image(), 0x1000, **LAYOUT)
    with pytest.raises(StoreError, match="has no PK"):
        check_secure_boot_store(store, 0x8400, 0x40000)


def test_signature_lists_reject_impossible_sizes() -> None:
    with pytest.raises(StoreError, match="impossible sizes"):
        signature_lists(bytes(16) + struct.pack("<III", 10, 0, 16))
