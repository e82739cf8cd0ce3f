"""builder/secureboot.py: the key set enrolled by virt-fw-vars, read back by ovmfgen's own parser."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import pytest

from helpers import sb_template_image
from ovmfgen.builder.secureboot import EnrollFailed, describe, enroll, read_store
from ovmfgen.platform.load import load_platform
from ovmfgen.varstore import GLOBAL_VARIABLE_GUID


@pytest.fixture(scope="module")
def sb():
    return load_platform("xen-pvh", feature_overrides={"secure_boot": "test"}).secure_boot


@pytest.fixture(scope="module")
def enrolled(sb) -> bytes:
    return enroll(sb_template_image(), sb, 4)


def test_enrollment_is_deterministic_and_stays_in_the_store(sb, enrolled) -> None:
    image = sb_template_image()
    assert enroll(image, sb, 4) == enrolled
    lo, hi = sb.store_offset, sb.store_offset + 0x40000
    assert enrolled[:lo] == image[:lo] and enrolled[hi:] == image[hi:] and enrolled[lo:hi] != image[lo:hi]


def test_the_store_holds_the_key_set_and_secure_boot_on(sb, enrolled) -> None:
    store = read_store(enrolled, sb, 4)
    names = {v.name for v in store.variables}
    assert {"PK", "KEK", "db", "dbx", "SecureBootEnable"} <= names
    info = describe(store, sb)
    assert [c["spec"] for c in info["PK"]["certificates"]] == ["keys/ovmfgen-test/PK.pem"]
    assert [c["spec"] for c in info["db"]["certificates"]] == [
        "keys/ovmfgen-test/db.pem", "ms-uefi-2011", "ms-uefi-2023", "debian-2016"]
    assert info["KEK"]["certificates"][1]["owner"] == "77fa9abd-0359-4d32-bd60-28f4e78f784b"
    assert "Microsoft Corporation KEK CA 2011" in info["KEK"]["certificates"][1]["subject"]
    assert info["dbx"]["entries"] >= 1 and len(info["dbx"]["sha256"]) == 64
    assert store.get("PK", GLOBAL_VARIABLE_GUID).size <= 0x8400


def test_virt_firmware_reads_the_same_store(enrolled, tmp_path) -> None:
    path = tmp_path / "ovmf.elf"
    path.write_bytes(enrolled)
    out = subprocess.run([sys.executable, "-m", "virt.firmware.vars", "-i", str(path), "--print"],
                         capture_output=True, text=True, check=True)
    text = out.stdout + out.stderr
    assert "var store range: 0x1064 -> 0x41000" in text
    for line in ("PK ", "KEK ", "db ", "dbx "):
        assert any(ln.startswith(line) for ln in out.stdout.splitlines()), line
    assert any(ln.startswith("SecureBootEnable") and ln.endswith("ON") for ln in out.stdout.splitlines())


def test_a_key_set_other_than_the_store_holds_is_caught(sb, enrolled) -> None:
    other = replace(sb, key_set=replace(sb.key_set, db=sb.key_set.db[:1]))
    with pytest.raises(EnrollFailed, match="db in the enrolled store holds 4 entries, not the key set's 1"):
        describe(read_store(enrolled, other, 4), other)


def test_an_image_without_a_store_is_one_line(sb) -> None:
    with pytest.raises(EnrollFailed, match="could not enroll key set test"):
        enroll(b"\xff" * (4 << 20), sb, 4)
