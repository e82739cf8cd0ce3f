"""Predicted measurements: the events edk2 logs for an image, the PCR values they make, the pcrlock file.

Volumes are built here byte by byte (tests/test_fvfile.py's helpers); the real images, their
virt-fw-measure check and a real TPM's PCRs are in tests/integration/test_tpm.py.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import replace

import pytest

from helpers import sb_template_image
from ovmfgen.builder.measure import (DXEFV_NAME, EFI_IMAGE_SECURITY_DATABASE, PEIFV_NAME, SECURE_BOOT_VARIABLES,
                                     cross_check, firmware_events, pcr_values, pcrlock,
                                     secure_boot_events, virt_fw_check)
from ovmfgen.builder.secureboot import enroll, read_store
from ovmfgen.errors import OvmfgenError
from ovmfgen.platform.load import load_platform
from ovmfgen.varstore import Variable
from tests.test_fvfile import COMPACT, OTHER, ffs, lzma_section, section, volume

BASES = {"PEIFV": 0x820000, "DXEFV": 0x900000}


FFS2_GUID = uuid.UUID("8c8ce578-8a3d-4f1c-9935-896185c32dd3")     # EFI_FIRMWARE_FILE_SYSTEM2_GUID


def ffs2(files: list[bytes], size: int, name: str | None = None) -> bytes:
    """``volume`` with the file system GUID and block map edk2 writes (what virt-fw-measure looks for)."""
    fv = bytearray(volume(files, size=size, name=name))
    fv[0x10:0x20] = FFS2_GUID.bytes_le
    fv[0x38:0x40] = (size // 0x1000).to_bytes(4, "little") + (0x1000).to_bytes(4, "little")
    fv[0x32:0x34] = bytes(2)
    checksum = (-sum(int.from_bytes(fv[i:i + 2], "little") for i in range(0, 0x48, 2))) % 0x10000
    fv[0x32:0x34] = checksum.to_bytes(2, "little")
    return bytes(fv)


def image() -> tuple[bytes, bytes, bytes]:
    pei = ffs2([ffs(OTHER, 0x06, section(0x10, b"MZpei"))], size=0x2000, name=PEIFV_NAME)
    dxe = ffs2([ffs(OTHER, 0x07, section(0x10, b"MZdxe"))], size=0x3000, name=DXEFV_NAME)
    compact = ffs2([ffs(COMPACT, 0x0B, lzma_section(section(0x17, pei) + section(0x17, dxe)))], size=0x8000)
    return ffs2([], size=0x1000) + compact, pei, dxe


def extend(*measured: bytes, bank: str = "sha256") -> str:
    value = bytes(hashlib.new(bank).digest_size)
    for data in measured:
        value = hashlib.new(bank, value + hashlib.new(bank, data).digest()).digest()
    return value.hex()


def test_the_events_are_edk2s_in_its_order() -> None:
    fd, pei, dxe = image()
    events = firmware_events(fd, "v1", BASES)
    assert [(e.pcr, e.event_type) for e in events] == [
        (0, "EV_S_CRTM_VERSION"), (0, "EV_EFI_PLATFORM_FIRMWARE_BLOB"), (0, "EV_EFI_PLATFORM_FIRMWARE_BLOB"),
        *[(7, "EV_EFI_VARIABLE_DRIVER_CONFIG")] * 5, (0, "EV_SEPARATOR"), (7, "EV_SEPARATOR")]
    assert events[0].data == "v1\0".encode("utf-16-le")                    # StrSize: the NUL counts
    assert events[1].hashed == pei and events[1].data == (0x820000).to_bytes(8, "little") + (0x2000).to_bytes(8, "little")
    assert events[2].hashed == dxe and events[2].data == (0x900000).to_bytes(8, "little") + (0x3000).to_bytes(8, "little")
    # UEFI_VARIABLE_DATA of an absent "PK": EFI_GLOBAL_VARIABLE, name length 2, data length 0, L"PK".
    assert events[4].data.hex() == "61dfe48bca93d211aa0d00e098032b8c" + "0200000000000000" + "0000000000000000" + "50004b00"


def test_pcr_values_extend_each_bank_from_zero() -> None:
    fd, pei, dxe = image()
    events = firmware_events(fd, "v1", BASES)
    values = pcr_values(events)
    sep = bytes(4)
    for bank in ("sha1", "sha256", "sha384", "sha512"):
        assert values["0"][bank] == extend("v1\0".encode("utf-16-le"), pei, dxe, sep, bank=bank)
    assert values["7"]["sha256"] == extend(*[e.hashed for e in events if e.pcr == 7])
    assert set(values) == {"0", "7"}
    # Another version string, another PCR 0; PCR 7 does not depend on the image.
    other = pcr_values(firmware_events(fd, "v2", BASES))
    assert other["0"] != values["0"] and other["7"] == values["7"]


def test_the_pcrlock_file_leaves_the_separators_to_systemd() -> None:
    fd, _pei, _dxe = image()
    events = firmware_events(fd, "v1", BASES)
    records = json.loads(pcrlock(events))["records"]
    assert len(records) == 8 and all(r["content"]["event_type"] != "EV_SEPARATOR" for r in records)
    assert records[1]["digests"][1] == {"hashAlg": "sha256", "digest": hashlib.sha256(events[1].hashed).hexdigest()}
    assert pcrlock(events) == pcrlock(firmware_events(fd, "v1", BASES))     # deterministic


def test_a_missing_volume_or_address_is_one_clear_error() -> None:
    fd, pei, _dxe = image()
    with pytest.raises(OvmfgenError, match=f"error: the image holds no DXEFV \\(FvNameGuid {DXEFV_NAME}\\)"):
        firmware_events(volume([ffs(COMPACT, 0x0B, lzma_section(section(0x17, pei)))], size=0x8000), "v", BASES)
    with pytest.raises(OvmfgenError, match="names no RAM address for PEIFV"):
        firmware_events(fd, "v", {"DXEFV": 1})


def test_cross_check_with_virt_fw_measure() -> None:
    fd, _pei, _dxe = image()
    events = firmware_events(fd, "v1", BASES)
    pcr0 = pcr_values(events, ("sha256",))["0"]["sha256"]
    assert cross_check(events, {"values": [{"pcr": 0, "hashAlg": "sha256", "digest": pcr0}]}) is None
    assert "virt-fw-measure computes 00" in cross_check(events, {"values": [{"pcr": 0, "hashAlg": "sha256",
                                                                             "digest": "00"}]})
    assert "computes nothing" in cross_check(events, {"values": []})
    # And virt-fw-measure itself, run on the image's bytes.
    assert virt_fw_check(events, fd, "v1", None) is None
    assert "PCR 0 (sha256) predicted" in virt_fw_check(firmware_events(fd, "v2", BASES), fd, "v1", None)


# Secure Boot on (feature secure_boot): PCR 7 measures the store the post-build step enrolled.

@pytest.fixture(scope="module")
def sb_image():
    """A 4 MiB image as a tpm2 + secure_boot build publishes it: the test key set enrolled by virt-fw-vars
    into xen-pvh's store at 0x1000, the firmware volumes where the 4 MiB FDF puts FVMAIN (0x84000)."""
    sb = load_platform("xen-pvh", feature_overrides={"secure_boot": "test", "tpm": "tpm2"}).secure_boot
    fd = bytearray(enroll(sb_template_image(), sb, 4))
    volumes, _pei, _dxe = image()
    fd[0x84000:0x84000 + len(volumes)] = volumes
    return bytes(fd), read_store(bytes(fd), sb, 4)


def test_secure_boot_on_measures_the_enrolled_keys(sb_image) -> None:
    fd, store = sb_image
    events = [e for e in firmware_events(fd, "v1", BASES, store) if e.pcr == 7]
    assert [e.event_type for e in events] == ["EV_EFI_VARIABLE_DRIVER_CONFIG"] * 5 + ["EV_SEPARATOR"]
    # SecureBoot = 1: EFI_GLOBAL_VARIABLE, name length 10, data length 1, L"SecureBoot", 01.
    assert events[0].data.hex() == ("61dfe48bca93d211aa0d00e098032b8c" + "0a00000000000000" + "0100000000000000"
                                    + "SecureBoot".encode("utf-16-le").hex() + "01")
    for event, (name, guid) in zip(events[1:5], SECURE_BOOT_VARIABLES[1:]):
        data = store.get(name, guid).data
        assert len(data) > 0 and event.data == guid.bytes_le + (len(name)).to_bytes(8, "little") \
            + len(data).to_bytes(8, "little") + name.encode("utf-16-le") + data
    off = pcr_values(firmware_events(fd, "v1", BASES))
    on = pcr_values(firmware_events(fd, "v1", BASES, store))
    assert on["0"] == off["0"] and on["7"] != off["7"]


def test_secure_boot_prediction_agrees_with_virt_fw_measure(sb_image) -> None:
    # Real virt-fw-measure on the image's bytes: PCR 0 from the volumes after the store, PCR 7 from the store.
    fd, store = sb_image
    assert virt_fw_check(firmware_events(fd, "v1", BASES, store), fd, "v1", store) is None
    # The model of an image without Secure Boot does not fit this one: PCR 7 tells.
    why = virt_fw_check(firmware_events(fd, "v1", BASES), fd, "v1", store)
    assert why is not None and why.startswith("PCR 7 (sha256) predicted ")
    # Another version string: PCR 0 tells.
    why = virt_fw_check(firmware_events(fd, "v2", BASES, store), fd, "v1", store)
    assert why is not None and why.startswith("PCR 0 (sha256) predicted ")


def test_dbt_is_measured_when_present_and_a_missing_key_is_an_error(sb_image) -> None:
    _fd, store = sb_image
    dbt = Variable("dbt", EFI_IMAGE_SECURITY_DATABASE, 0x27, b"dbt-data", 0, 0)
    events = secure_boot_events(replace(store, variables=(*store.variables, dbt)))
    assert len(events) == 6 and events[5].data.endswith("dbt".encode("utf-16-le") + b"dbt-data")
    without_kek = tuple(v for v in store.variables if v.name != "KEK")
    with pytest.raises(OvmfgenError, match="error: the Secure Boot store has no KEK to predict PCR 7 from"):
        secure_boot_events(replace(store, variables=without_kek))


def test_virt_fw_measure_needs_a_volume_after_the_store(sb_image) -> None:
    fd, store = sb_image
    with pytest.raises(OvmfgenError, match="no firmware volume after its variable store at 0x1000"):
        virt_fw_check(firmware_events(fd, "v1", BASES, store), fd[:0x84000], "v1", store)
