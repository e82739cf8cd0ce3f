"""The vCPU side of the Xen harness (issue #26): guests with many vCPUs, what the logs say about their
processors (``verdicts.cpu_state``) and when that is right (``XenGuest.cpu_problem``), from real captures
(tests/data/xen/cpus/, see tests/data/xen/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import DATA, pvh_elf_file
from ovmfgen.boot.xen import Verdict, guests, nested, verdicts
from ovmfgen.errors import OvmfgenError

CPUS = DATA / "xen" / "cpus"


def judged(name: str) -> verdicts.XenBootResult:
    text = (CPUS / name).read_text(encoding="utf-8", errors="replace")
    return verdicts.classify_xen_run(text, verdicts.extract_guest_console(text), 0)


@pytest.mark.parametrize("capture", ["pvh-shell-128cpus.log", "hvm-shell-128cpus.log"])
def test_a_128_vcpu_guest_reaches_the_shell_with_128_processors_found(capture, tmp_path):
    r = judged(capture)
    assert r.verdict is Verdict.SHELL_REACHED
    assert r.cpus == verdicts.CpuState(firmware=128) and r.cpus.text == "firmware: 128 processors"
    mode = capture.split("-")[0]
    guest = guests.XenGuest(mode, "shell", tmp_path / "x.elf", variant="128cpus", vcpus=128)
    assert nested.GuestOutcome(guest, r).ok
    # The same logs for a guest that had more vCPUs: the firmware did not find them all.
    more = guests.XenGuest(mode, "shell", tmp_path / "x.elf", variant="96cpus", vcpus=127)
    assert nested.GuestOutcome(more, r).why_not == "the firmware found 128: expected 127 of 127 processors"


def test_above_the_limit_the_firmware_uses_its_limit_and_says_so(tmp_path):
    r = judged("hvm-shell-96cpus-maxcpus-64.log")
    assert r.verdict is Verdict.SHELL_REACHED
    assert r.cpus.firmware == 64
    assert r.cpus.over_limit == ("96 processors woke up, more than PcdCpuMaxLogicalProcessorNumber (64): "
                                 "using 64, the others stay halted")
    assert "[firmware: 64 processors; MpInitLib: 96 processors woke up" in verdicts.format_result(r)
    limited = guests.XenGuest("hvm", "shell", tmp_path / "x.elf", variant="96cpus", vcpus=96, firmware_cpus=64)
    assert nested.GuestOutcome(limited, r).ok
    # Expecting all 96 (a build for 128): the same logs fail, with the counts.
    unlimited = guests.XenGuest("hvm", "shell", tmp_path / "x.elf", variant="96cpus", vcpus=96)
    assert nested.GuestOutcome(unlimited, r).why_not == "the firmware found 64: expected 96 of 96 processors"


def test_fewer_processors_without_the_line_is_wrong(tmp_path):
    g = guests.XenGuest("pvh", "shell", tmp_path / "x.elf", vcpus=96, firmware_cpus=64)
    assert g.cpu_problem(verdicts.CpuState(firmware=64), False) == \
        "the firmware used 64 of 96 processors without saying it left the others halted"
    assert g.cpu_problem(verdicts.CpuState(), False) == "the firmware said nothing: expected 64 of 96 processors"


@pytest.mark.parametrize("payload", ["os", "smp"])
def test_linux_must_bring_up_every_vcpu(tmp_path, payload):
    g = guests.XenGuest("hvm", payload, tmp_path / "x.elf", vcpus=128)
    assert g.expected is Verdict.OS_REACHED
    assert g.cpu_problem(verdicts.CpuState(firmware=128, linux=128), True) == ""
    assert g.cpu_problem(verdicts.CpuState(firmware=128, linux=1), True) == "Linux brought up 1: expected 128 CPUs"
    assert g.cpu_problem(verdicts.CpuState(firmware=128), True) == "Linux said nothing: expected 128 CPUs"
    # Linux counts from the ACPI tables: all vCPUs even when the firmware used fewer.
    limited = guests.XenGuest("hvm", "os", tmp_path / "x.elf", vcpus=96, firmware_cpus=64)
    assert limited.cpu_problem(verdicts.CpuState(64, "96 processors woke up, ...", 96), True) == ""


@pytest.mark.parametrize("capture, madt, firmware", [("pvh-shell-128cpus-madt.log", 128, 128),
                                                     ("hvm-shell-128cpus-madt.log", 128, 128),
                                                     ("hvm-shell-96cpus-maxcpus-64-madt.log", 96, 64)])
def test_the_firmware_says_how_many_processors_xens_madt_lists(capture, madt, firmware):
    """xen-pvh's XenPlatformPei counts the MADT's processors (Xen 4.20, 2026-12-05): MpInitLib waits for them
    all; above the build's limit it keeps its timed count and uses the limit."""
    r = judged(capture)
    assert r.verdict is Verdict.SHELL_REACHED
    assert (r.cpus.madt, r.cpus.firmware, r.cpus.over_limit is not None) == (madt, firmware, madt > firmware)
    assert r.cpus.text.startswith(f"MADT: {madt}; firmware: {firmware} processors")
    assert r.cpus.as_json()["madt"] == madt


def test_cpu_state_reads_the_firmwares_last_count_and_linuxs():
    serial = ("(d3) MpInitLib: Find 2 processors in system.\n(XEN) noise\n"
              "(d3) MpInitLib: Find 128 processors in system.\r\n")
    console = "[    1.9] smp: Bringing up secondary CPUs ...\n[    2.6] smp: Brought up 1 node, 128 CPUs\n"
    assert verdicts.cpu_state(serial, console) == verdicts.CpuState(128, None, 128)
    assert verdicts.cpu_state("", "smp: Brought up 1 node, 1 CPU\n") == verdicts.CpuState(linux=1)
    assert not verdicts.cpu_state("(d0) MpInitLib: Find 1 processors in system.", "").seen  # dom0's own
    assert verdicts.cpu_state("(d2) XenCpuCountInitialization: 4 processors in the MADT\n", "") == \
        verdicts.CpuState(madt=4)


def test_one_vcpu_guests_are_not_checked(tmp_path):
    g = guests.XenGuest("pvh", "shell", tmp_path / "x.elf")
    assert g.vcpus == 1 and g.cpu_problem(verdicts.CpuState(), False) == ""


def test_a_guest_gets_memory_for_its_vcpus(tmp_path):
    # Debian's kernel ran out of memory with 128 vCPUs in 256 MiB; each vCPU beyond the first adds 2 MiB.
    elf = tmp_path / "x.elf"
    assert guests.XenGuest("pvh", "os", elf).memory_mib() == 256
    assert guests.XenGuest("hvm", "os", elf, vcpus=128).memory_mib() == 510
    assert guests.XenGuest("pvh", "sb-os", elf, vcpus=16).memory_mib() == 542
    assert guests.XenGuest("pvh", "shell", elf, vcpus=2).memory_mib(32) == 34


def test_a_run_with_many_vcpus_gets_a_longer_cap_but_the_same_idle_limit():
    d = guests.GuestDeadline()
    assert d.for_vcpus(1) == d
    big = d.for_vcpus(128)
    assert big.cap_s == d.cap_s + 2 * 127 and big.idle_s == d.idle_s and big.tick_s == d.tick_s


def test_xl_config_gives_the_guest_its_vcpus_on_its_pcpu():
    text = guests.xl_config("/k", vcpus=128)
    assert "vcpus = 128\n" in text and 'cpus = "1"\n' in text


def test_vcpu_counts_are_checked(tmp_path):
    for bad in (0, 129):
        with pytest.raises(OvmfgenError, match=f"a guest has 1 to 128 vCPUs, got {bad}"):
            guests.XenGuest("pvh", "shell", tmp_path, vcpus=bad)
    with pytest.raises(OvmfgenError, match="a guest's firmware finds 1 to its 4 vCPUs, not 5"):
        guests.XenGuest("pvh", "shell", tmp_path, vcpus=4, firmware_cpus=5)
    assert guests.check_vcpus("128") == 128
    for bad in ("0", "129", "x", "-1", "1.5"):
        with pytest.raises(OvmfgenError, match=r"--vcpus takes a whole number from 1 to 128 \(Xen's most for a PVH "
                                               rf"or HVM guest\), not '{bad}'"):
            guests.check_vcpus(bad)


def test_the_firmwares_limit_comes_from_its_builds_manifest(tmp_path):
    elf = pvh_elf_file(tmp_path)
    g = guests.XenGuest("hvm", "shell", elf, vcpus=96)
    assert nested.firmware_cpu_limit(elf) is None and nested.with_cpu_limit(g) == g  # no manifest: all of them
    (tmp_path / "manifest.json").write_text(json.dumps({"features": {"max_cpus": "64"}}))
    assert nested.firmware_cpu_limit(elf) == 64
    assert nested.with_cpu_limit(g).firmware_cpus == 64
    assert nested.with_cpu_limit(guests.XenGuest("hvm", "shell", elf, vcpus=8)).firmware_cpus == 8
    assert nested.with_cpu_limit(guests.XenGuest("hvm", "shell", elf)).firmware_cpus is None


@pytest.mark.parametrize("text, vcpus, variant", [
    ("pvh-shell-128cpus", 128, "128cpus"), ("hvm-os-4M-96cpus", 96, "4M96cpus"), ("pvh-shell-4M", 1, "4M")])
def test_nightly_guest_specs_take_a_vcpu_count(text, vcpus, variant):
    spec = guests.parse_guest_spec(text)
    assert (spec.vcpus, spec.variant, spec.text) == (vcpus, variant, text)
    g = spec.guest(Path("x.elf"))
    assert g.vcpus == vcpus and g.name == f"ovmfgen-{text.split('-')[0]}-{spec.payload}" + (f"-{variant}")
