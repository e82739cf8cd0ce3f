"""Secure Boot verdicts: a refusal is SECURE_BOOT_REFUSED, a guest's Secure Boot state from its logs (captured
consoles of the Secure Boot disks and the firmware's DEBUG lines), dom0 stopping at the refusal."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers import DATA as DATA_ROOT
from ovmfgen.boot.xen import Verdict, guests, nested, verdicts
from ovmfgen.boot.xen.guests import XenGuest
from ovmfgen.boot.xen.verdicts import SecureBootState
from ovmfgen.nightly.cell import secure_boot_text

DATA = DATA_ROOT / "xen" / "sb"
_ANSI = re.compile(r"\x1b\[[0-9;=?]*[A-Za-z]")


def console(name: str) -> str:
    return (DATA / f"qemu-{name}.console.log").read_text(encoding="utf-8", errors="replace")


def as_serial(label: str, guest_console: str, events: list[tuple[str, float]], result: str,
              firmware: list[str] = ()) -> str:
    """A run's serial log as dom0 writes it for one guest: its events, the firmware's (d1) lines, its console."""
    out = [f"{verdicts.GUEST_START} {label}"]
    out += [f"(XEN) (d1) {line}" for line in firmware]
    out += [f"{verdicts.EVENT} {name} {at:.2f}" for name, at in events]
    out.append(verdicts.GUEST_BEGIN)
    out += [f"{verdicts.GUEST_PREFIX}{line}" for line in guest_console.replace("\r", "").split("\n")]
    out += [verdicts.GUEST_END, f"{verdicts.RESULT} {result}", f"{verdicts.GUEST_STOP} {label}"]
    return "\n".join(out) + "\n"


SB_FIRMWARE = ["XenPlatformPei: Secure Boot: pre-enrolled variable store at 0x101000 copied",
               "Variable PK exists.", "Variable SetupMode is 0", "Variable SecureBoot is 1",
               "Variable SecureBootEnable is 1"]
REFUSAL_DEBUG = ["DxeImageVerificationLib: Image is not signed and SHA256 hash of image is not found in DB/DBX.",
                 "The image doesn't pass verification: PciRoot(0x0)/Pci(0x2,0x0)/HD(1,GPT,...)/\\EFI\\BOOT\\BOOTX64.EFI"]


# --- the refusal -----------------------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    # edk2-stable202605 (PlatformBmPrintScLib since 202511)
    'BdsDxe: failed to load Boot0001 "UEFI Misc Device" from VenHW(3D3CA290-B9A5-11E3-B75D-B8AC6F7D65E6)/'
    'PciRoot(0x0): Access Denied -- rejected probably by Secure Boot',
    # edk2-stable202502 and Debian's 2022.11: no suffix
    'BdsDxe: failed to load Boot0002 "UEFI Misc Device" from PciRoot(0x0)/Pci(0x2,0x0): Access Denied',
    'BdsDxe: failed to start Boot0003 "x" from Fv(1)/FvFile(2): Security Violation',
    "Verification failed: (0x1A) Security Violation",  # shim
    "error: bad shim signature.",  # Debian's GRUB through shim's protocol
])
def test_refusal_lines_match_in_python_and_in_dom0s_grep(line, tmp_path):
    assert re.search(verdicts.SB_REFUSED, line)
    f = tmp_path / "log"
    f.write_text(line + "\n")
    assert subprocess.run(["grep", "-Eq", verdicts.SB_REFUSED, str(f)]).returncode == 0


@pytest.mark.parametrize("line", [
    'BdsDxe: failed to load Boot0001 "UEFI QEMU DVD-ROM QM00005 " from PciRoot(0x0)/Pci(0x1F,0x2): Not Found',
    'BdsDxe: starting Boot0002 "UEFI Misc Device" from PciRoot(0x0)/Pci(0x2,0x0)',
    "[    0.000000] secureboot: Secure boot enabled",
])
def test_other_lines_are_no_refusal(line):
    assert not re.search(verdicts.SB_REFUSED, line)


def test_unsigned_image_refused_is_its_own_verdict_never_a_pass():
    text = console("unsigned")
    serial = as_serial("ovmfgen-pvh-sb-refused", text, [("create", 40.0), ("created", 40.5), ("refused", 52.25)],
                       "refused", SB_FIRMWARE + REFUSAL_DEBUG)
    r = verdicts.classify_guest(serial, "ovmfgen-pvh-sb-refused", None)
    assert r.verdict is Verdict.SECURE_BOOT_REFUSED and not r.ok
    assert r.detail.startswith('BdsDxe: failed to load Boot0002 "UEFI Misc Device"') and "Access Denied" in r.detail
    assert r.refused_seconds == 12.25
    sb = r.secure_boot
    assert (sb.firmware, sb.linux, sb.efivar, sb.enabled) == (True, None, None, True)
    assert sb.store == "pre-enrolled variable store at 0x101000 copied"
    assert sb.verification.startswith("Image is not signed and SHA256 hash")
    line = verdicts.format_result(r)
    assert line.startswith("xen: SECURE_BOOT_REFUSED (BdsDxe: failed to load") and "refused 12.2 s after" in line
    assert "[Secure Boot on (firmware: SecureBoot=1; XenPlatformPei: pre-enrolled" in line


def test_refusal_known_only_to_dom0_is_still_a_refusal():
    # The console copy lost the line (tail -c): dom0's event says what it saw.
    serial = as_serial("g", "BdsDxe: loading Boot0001\n", [("create", 1.0), ("refused", 2.0)], "refused")
    r = verdicts.classify_guest(serial, "g", 0)
    assert r.verdict is Verdict.SECURE_BOOT_REFUSED and r.detail == "dom0 saw a Secure Boot refusal"


def test_refusal_before_an_os_that_ran_is_reported_in_the_detail():
    text = console("unsigned").split("BdsDxe: No bootable")[0] + "\n" + console("signed")
    r = verdicts.classify_xen_run(as_serial("g", text, [("create", 1.0), ("os", 9.0)], "os"),
                                  text, 0)
    assert r.verdict is Verdict.OS_REACHED and "after a Secure Boot refusal: BdsDxe: failed to load" in r.detail


# --- the Secure Boot state ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["signed", "shim-uki", "shim-grub"])
def test_signed_chains_reach_the_os_with_secure_boot_on(name):
    text = console(name)
    r = verdicts.classify_xen_run(as_serial("g", text, [("create", 1.0), ("os", 11.5)], "os", SB_FIRMWARE), text, 0)
    assert r.verdict is Verdict.OS_REACHED and r.os_seconds == 10.5
    sb = r.secure_boot
    assert (sb.firmware, sb.linux, sb.efivar, sb.refused, sb.enabled) == (True, True, True, None, True)
    assert sb.text == ("Secure Boot on (firmware: SecureBoot=1; XenPlatformPei: pre-enrolled variable store at "
                       "0x101000 copied; Linux: enabled; efivar: 01)")
    if name == "shim-grub":
        assert [ln for ln in _ANSI.sub("", text).splitlines() if ln.startswith(verdicts.GRUB_MARKER)] == [
            "OVMFGEN-GRUB: loading Linux", "OVMFGEN-GRUB: loading the initramfs", "OVMFGEN-GRUB: starting Linux"]


def test_secure_boot_off_is_said_off():
    text = console("signed").replace("Secure boot enabled", "Secure boot disabled").replace("efivar=01", "efivar=00")
    fw = [ln.replace("SecureBoot is 1", "SecureBoot is 0") for ln in SB_FIRMWARE]
    sb = verdicts.classify_xen_run(as_serial("g", text, [("os", 2.0)], "os", fw), text, 0).secure_boot
    assert (sb.firmware, sb.linux, sb.efivar, sb.enabled) == (False, False, False, False)
    assert sb.text.startswith("Secure Boot off (firmware: SecureBoot=0;")
    # One source saying off is enough to say off.
    assert SecureBootState(firmware=True, linux=False).enabled is False


def test_no_word_on_secure_boot_is_unknown():
    r = verdicts.classify_xen_run(as_serial("g", "Shell> ", [("shell", 2.0)], "shell"), "Shell> ", 0)
    assert r.secure_boot == SecureBootState() and r.secure_boot.enabled is None and not r.secure_boot.seen
    assert "Secure Boot" not in verdicts.format_result(r)
    assert r.secure_boot.as_json() == {"enabled": None, "firmware": None, "store": None, "linux": None,
                                       "efivar": None, "refused": None, "verification": None}


def test_efivar_none_when_the_init_could_not_read_it():
    sb = verdicts.secure_boot_state("", f"{verdicts.SB_MARKER} efivar=none kernel=none\n")
    assert sb == SecureBootState()


def test_nightly_line_is_the_states_text():
    sb = SecureBootState(firmware=True, linux=True, efivar=True)
    assert secure_boot_text(sb.as_json()) == sb.text == "Secure Boot on (firmware: SecureBoot=1; Linux: enabled; efivar: 01)"


# --- guests and outcomes -----------------------------------------------------------------------------


def test_secure_boot_guests_expect_the_refusal_or_the_os():
    img = Path("ovmf.elf")
    assert XenGuest("pvh", "sb-refused", img).expected is Verdict.SECURE_BOOT_REFUSED
    for p in ("sb-signed", "sb-shim", "sb-os", "sb-persist"):
        assert XenGuest("hvm", p, img).expected is Verdict.OS_REACHED and XenGuest("hvm", p, img).secure_boot
    assert not XenGuest("pvh", "os", img).secure_boot
    assert XenGuest("pvh", "sb-os", img).name == "ovmfgen-pvh-sb-os"
    assert guests.check_mode("sb") == tuple((m, p) for m in ("pvh", "hvm")
                                            for p in ("sb-refused", "sb-signed", "sb-shim", "sb-persist", "sb-os"))
    assert set(guests.SB_PAYLOAD_DISKS) <= set(guests.PAYLOADS) and set(guests.SB_PAYLOAD_DISKS) <= set(guests.WANT)


def _outcome(payload: str, verdict: Verdict, sb: SecureBootState) -> nested.GuestOutcome:
    return nested.GuestOutcome(XenGuest("pvh", payload, Path("x.elf")),
                               verdicts.XenBootResult(verdict, secure_boot=sb))


def test_a_secure_boot_guest_passes_only_with_secure_boot_on():
    on, off = SecureBootState(firmware=True, linux=True), SecureBootState(firmware=False, linux=False)
    assert _outcome("sb-signed", Verdict.OS_REACHED, on).ok
    o = _outcome("sb-signed", Verdict.OS_REACHED, off)
    assert not o.ok and o.why_not.startswith("Secure Boot off (firmware: SecureBoot=0; Linux: disabled):")
    assert not _outcome("sb-os", Verdict.OS_REACHED, SecureBootState()).ok  # no word on it: no proof
    # The unsigned image: the refusal is the pass; booting it is the failure.
    assert _outcome("sb-refused", Verdict.SECURE_BOOT_REFUSED, SecureBootState(refused="x")).ok
    o = _outcome("sb-refused", Verdict.OS_REACHED, off)
    assert not o.ok and o.why_not == "expected SECURE_BOOT_REFUSED"
    # Other guests do not care.
    assert _outcome("os", Verdict.OS_REACHED, off).ok


def test_nightly_specs_name_the_secure_boot_guests():
    assert guests.parse_guest_spec("hvm-sb-refused") == guests.GuestSpec("hvm", "sb-refused")
    assert guests.parse_guest_spec("pvh-sb-os-4M") == guests.GuestSpec("pvh", "sb-os", "4M")
    assert guests.parse_guest_spec("pvh-sb-os").text == "pvh-sb-os"
    for bad in ("pvh-sb", "pvh-sb-os-4M-x", "pvh-sb-os-", "pvh-sbos"):
        with pytest.raises(Exception, match="is not MODE-PAYLOAD"):
            guests.parse_guest_spec(bad)


def test_the_grub_guest_gets_the_memory_debians_grub_needs(tmp_path):
    from helpers import read_newc
    mods = tmp_path / "m"
    mods.mkdir()
    for m in guests.DOM0_MODULES:
        (mods / f"{m}.ko").write_bytes(b"ko")
    elf = tmp_path / "ovmf.elf"
    elf.write_bytes(b"elf")
    disk = tmp_path / "d.img"
    disk.write_bytes(b"disk")
    gs = [XenGuest("pvh", "sb-os", elf, disk=disk), XenGuest("pvh", "sb-signed", elf, disk=disk)]
    files = read_newc(guests.overlay_cpio(gs, mods, guests.GuestDeadline()))
    assert b"memory = 512\n" in files["ovmfgen/ovmfgen-pvh-sb-os.cfg"][1]
    assert b"memory = 256\n" in files["ovmfgen/ovmfgen-pvh-sb-signed.cfg"][1]


# --- the Secure Boot persistence guest ---------------------------------------------------------------


def _sb_console(var: str, write: str = "refused:EACCES", db: str = "present") -> str:
    return (f"[    9.1] Secure boot enabled\r\n{verdicts.SB_MARKER} efivar=01 kernel=enabled\r\n"
            f"{verdicts.PERSIST_MARKER} var={var} db={db} db-write={write}\r\n{verdicts.OS_MARKER} 6.1.0-57-amd64\r\n")


def test_the_persistence_guest_boots_the_signed_disk_twice_to_the_os(tmp_path):
    g = XenGuest("pvh", "sb-persist", tmp_path / "x.elf", disk=tmp_path / "d.img")
    assert g.runs == ("ovmfgen-pvh-sb-persist", "ovmfgen-pvh-sb-persist-restart")
    assert g.expected is Verdict.OS_REACHED and g.secure_boot and guests.SB_PAYLOAD_DISKS["sb-persist"] == "signed"
    assert guests.guest_runs([g]) == [("ovmfgen-pvh-sb-persist", "ovmfgen-pvh-sb-persist", verdicts.OS_MARKER, "os"),
                                      ("ovmfgen-pvh-sb-persist", "ovmfgen-pvh-sb-persist-restart",
                                       verdicts.OS_MARKER, "os")]
    assert guests.parse_guest_spec("hvm-sb-persist") == guests.GuestSpec("hvm", "sb-persist")


def _boots(*consoles: str, verdict: Verdict = Verdict.OS_REACHED) -> list[verdicts.XenBootResult]:
    on = SecureBootState(firmware=True, linux=True, efivar=True)
    return [verdicts.XenBootResult(verdict, secure_boot=on, guest_console=c) for c in consoles]


def test_a_stateless_restart_passes():
    g = XenGuest("pvh", "sb-persist", Path("x.elf"))
    o = nested._combine(g, _boots(_sb_console("absent->written"), _sb_console("absent->written")))
    assert o.ok and o.why_not == ""
    assert o.persistence == {
        "persisted": {"variable": False},
        "first": {"variable": "absent", "set": "written", "db": "present", "db_write": "refused:EACCES"},
        "second": {"variable": "absent", "set": "written", "db": "present", "db_write": "refused:EACCES"}}


@pytest.mark.parametrize(("first", "second", "why"), [
    (("absent->written", "refused:EACCES"), ("present->written", "refused:EACCES"),
     "the variable the first boot set was present after the restart (expected absent: stateless)"),
    (("absent->failed", "refused:EACCES"), ("absent->written", "refused:EACCES"),
     "the first boot did not find the variable absent and set it (var=absent->failed)"),
    (("absent->written", "written"), ("absent->written", "refused:EACCES"),
     "the first boot's unauthenticated db append was not refused (db-write=written)"),
    (("none", "none", "none"), ("none", "none", "none"),
     "the first boot did not find the variable absent and set it (var=None->None)"),
])
def test_what_lasted_or_was_not_shown_fails_the_guest(first, second, why):
    g = XenGuest("hvm", "sb-persist", Path("x.elf"))
    o = nested._combine(g, _boots(_sb_console(*first), _sb_console(*second)))
    assert o.result.verdict is Verdict.OS_REACHED and not o.ok and o.why_not == why


def test_no_persistence_line_fails_the_guest():
    g = XenGuest("pvh", "sb-persist", Path("x.elf"))
    plain = f"{verdicts.OS_MARKER} 6.1.0-57-amd64\r\n"
    o = nested._combine(g, _boots(plain, plain))
    assert not o.ok and o.why_not == "the first boot printed no persistence line"
    o = nested._combine(g, _boots(_sb_console("absent->written"), plain))
    assert not o.ok and o.why_not == "the restart printed no persistence line"
    assert o.persistence["persisted"] == {"variable": None}


def test_a_restart_that_went_wrong_is_the_guests_verdict():
    g = XenGuest("pvh", "sb-persist", Path("x.elf"))
    boots = _boots(_sb_console("absent->written"))
    boots.append(verdicts.XenBootResult(Verdict.TIMEOUT, detail="no new guest output", guest_console=""))
    o = nested._combine(g, boots)
    assert o.result.verdict is Verdict.TIMEOUT and o.result.detail == "boot 2 of 2: no new guest output"
    assert not o.ok and o.why_not == "expected OS_REACHED"
