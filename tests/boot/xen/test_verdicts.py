"""ovmfgen.boot.xen.verdicts: a guest's verdict from the captured consoles of real runs (and from one run of several)."""

from __future__ import annotations


import subprocess

import pytest

from helpers import DATA as DATA_ROOT
from ovmfgen.boot.xen import verdicts
from ovmfgen.boot.xen import Verdict, classify_xen_run

DATA = DATA_ROOT / "xen"


def load(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8", errors="replace")


def classify_capture(stem: str, rc: int | None = 0) -> verdicts.XenBootResult:
    serial = load(f"{stem}.serial.log")
    return classify_xen_run(serial, verdicts.extract_guest_console(serial), rc)


# --- classification on captured logs ------------------------------------------------------------


def test_shell_reached_capture():
    r = classify_capture("shell")
    assert r.verdict is Verdict.SHELL_REACHED, r
    assert r.ok
    assert r.shell_seconds is not None and 0 < r.shell_seconds < 120
    guest = verdicts.extract_guest_console(load("shell.serial.log"))
    assert "Shell>" in guest
    assert verdicts.GUEST_PREFIX not in guest


def test_assert_capture_gives_the_assert_line():
    r = classify_capture("assert")
    assert r.verdict is Verdict.FW_ASSERT, r
    assert r.detail.startswith("ASSERT")
    assert ".c(" in r.detail  # file(line): the line a developer needs


def test_triple_fault_capture_is_a_crash():
    r = classify_capture("triplefault")
    assert r.verdict is Verdict.GUEST_CRASHED, r
    assert "Triple fault" in r.detail


def test_guest_gone_capture():
    r = classify_capture("gone")
    assert r.verdict is Verdict.GUEST_GONE, r


def test_create_failed_capture_is_gone_with_xl_error():
    r = classify_capture("createfailed")
    assert r.verdict is Verdict.GUEST_GONE, r
    assert r.detail.startswith("xl create failed")


def test_timeout_capture():
    r = classify_capture("timeout")
    assert r.verdict is Verdict.TIMEOUT, r
    assert "dom0" in r.detail


def test_qemu_killed_after_xl_create_before_dom0_reported_is_a_stall():
    # dom0's own deadline makes a firmware TIMEOUT; a run killed before dom0 could report is the
    # emulator's stall (or crawl), not a firmware verdict.
    r = classify_capture("timeout-killed", rc=None)
    assert r.verdict is Verdict.HARNESS_FAILURE, r
    assert r.detail.startswith("QEMU stalled")
    # the same log with QEMU having exited by itself: dom0 never reported, nothing to conclude
    assert classify_capture("timeout-killed", rc=0).verdict is Verdict.HARNESS_FAILURE


def test_qemu_abort_is_harness_failure_even_after_shell():
    serial = load("shell.serial.log")
    r = classify_xen_run(serial, verdicts.extract_guest_console(serial), -6)
    assert r.verdict is Verdict.HARNESS_FAILURE
    assert "reached the shell" in r.detail
    assert not r.ok


def test_captured_qemu_abort_is_harness_failure():
    # QEMU 7.2 died (SIGABRT) with the guest at its shell's startup countdown, without -icount.
    r = classify_capture("qemu-abort", rc=-6)
    assert r.verdict is Verdict.HARNESS_FAILURE, r
    assert "-6" in r.detail


def test_qemu_abort_mid_boot_is_harness_failure():
    serial = load("shell.serial.log")
    cut = serial[: serial.index(verdicts.EVENT + " created")]
    r = classify_xen_run(cut, "", 134)
    assert r.verdict is Verdict.HARNESS_FAILURE


def test_killed_before_dom0_reached_xl_is_harness_failure():
    serial = load("shell.serial.log")
    cut = serial[: serial.index(verdicts.EVENT + " create ")]
    assert classify_xen_run(cut, "", None).verdict is Verdict.HARNESS_FAILURE


def test_killed_after_xl_create_without_dom0_result_is_harness_failure():
    serial = load("shell.serial.log")
    cut = serial[: serial.index(verdicts.EVENT + " created")]
    assert classify_xen_run(cut, "", None).verdict is Verdict.HARNESS_FAILURE
    # dom0's own deadline still makes a firmware TIMEOUT, whether or not QEMU was killed later
    assert classify_xen_run(cut + f"{verdicts.RESULT} timeout\n", "", None).verdict is Verdict.TIMEOUT


def test_dom0_ended_without_result_is_harness_failure():
    assert classify_xen_run("(XEN) Xen version 4.17\n", "", 0).verdict is Verdict.HARNESS_FAILURE


def test_dom0_out_of_room_names_the_cause_for_every_guest():
    # A real run (Xen 4.17, 2026-12-05) whose guests' disk copies did not fit in dom0's RAM root file system:
    # the kernel could not unpack the whole initramfs, dom0's test script was missing, dom0 powered off.
    serial = load("dom0-nospace.serial.log")
    for name in ("ovmfgen-pvh-shell", "ovmfgen-hvm-sb-shim"):
        r = verdicts.classify_guest(serial, name, 0)
        assert (r.verdict, r.detail) == (Verdict.HARNESS_FAILURE, "never started: dom0's initramfs did not fit in "
                                         "its RAM (Initramfs unpacking failed: write error)")
    # Without the kernel's line, dom0's shell saying it: the first line that tells.
    rest = serial.replace("Initramfs unpacking failed: write error", "")
    assert verdicts.classify_guest(rest, "g", 0).detail == (
        "never started: dom0 ran out of space in its RAM root file system (libxl: error: libxl_utils.c:506:"
        "libxl_write_exactly: failed to write /var/lib/xen/userdata-n.0.00000000-0000-0000-0000-000000000000"
        ".libxl-json from userdata: No space left on device)")


@pytest.mark.parametrize("line, detail", [
    # dom0's /init when the run's files did not unpack (what it prints, guests.dom0_init_script)
    (f"{verdicts.DOM0_FAILURE} this run's files are not in dom0's RAM root file system "
     "(Initramfs unpacking failed: write error)",
     "dom0: this run's files are not in dom0's RAM root file system (Initramfs unpacking failed: write error)"),
    (f"{verdicts.DOM0_FAILURE} insmod virtio_blk failed", "dom0: insmod virtio_blk failed"),
    # Linux 6.1's OOM killer in dom0
    ("[   61.204917] Out of memory: Killed process 312 (xenstored) total-vm:9316kB, anon-rss:1204kB",
     "dom0 ran out of memory (Out of memory: Killed process 312 (xenstored) total-vm:9316kB, anon-rss:1204kB)"),
])
def test_dom0_failure_lines_name_the_cause(line, detail):
    serial = f"(XEN) Xen version 4.17\n{verdicts.EVENT} dom0-up 5.0\n{line}\n{verdicts.EVENT} done 6.0\n"
    r = verdicts.classify_guest(serial, "g", 0)
    assert (r.verdict, r.detail) == (Verdict.HARNESS_FAILURE, f"never started: {detail}")
    # Killed by the host before dom0 reached xl create: the same cause.
    assert classify_xen_run(serial, "", None).detail == detail


def test_guest_lines_are_never_dom0s_failure():
    # A guest's console and its (dN) lines may say anything: only dom0's own lines count.
    serial = (f"{verdicts.GUEST_PREFIX}Out of memory: Killed process 1 (init)\n"
              "(XEN) (d1) No space left on device\n")
    assert verdicts.dom0_failure(serial) is None
    assert classify_xen_run(serial, "", 0).detail == "dom0 ended without reporting a result"
    # A guest's dom0-failed run is dom0's failure, whatever else happened before its turn.
    two = (f"{verdicts.GUEST_START} a\n{verdicts.DOM0_FAILURE} no block device with serial d0-pvh-os for the "
           f"guest's disk (dom0's disks: none)\n{verdicts.RESULT} dom0-failed\n{verdicts.GUEST_STOP} a\n"
           f"{verdicts.GUEST_START} b\n{verdicts.EVENT} create 7.0\n{verdicts.EVENT} shell 9.0\n"
           f"{verdicts.RESULT} shell\n{verdicts.GUEST_STOP} b\n")
    a, b = verdicts.classify_guest(two, "a", 0), verdicts.classify_guest(two, "b", 0)
    assert (a.verdict, a.detail) == (Verdict.HARNESS_FAILURE, "dom0: no block device with serial d0-pvh-os for the "
                                     "guest's disk (dom0's disks: none)")
    assert b.verdict is Verdict.SHELL_REACHED


def test_dom0_own_lines_are_not_guest_asserts():
    # (d0) is dom0; only guest domains' debug lines can carry a firmware ASSERT.
    serial = "(XEN) (d0) ASSERT something\nOVMFGEN-EVENT create 1.0\nOVMFGEN-RESULT gone\n"
    assert classify_xen_run(serial, "", 0).verdict is Verdict.GUEST_GONE


def test_assert_wins_over_everything_but_a_dead_qemu():
    serial = ("(XEN) d1v0 Triple fault\n(d1) ASSERT [PlatformPei] /x/y.c(12): FALSE\n"
              "OVMFGEN-EVENT create 3.5\nOVMFGEN-RESULT crashed\n")
    r = classify_xen_run(serial, "", 0)
    assert r.verdict is Verdict.FW_ASSERT
    assert r.detail == "ASSERT [PlatformPei] /x/y.c(12): FALSE"
    assert classify_xen_run(serial, "", -6).verdict is Verdict.HARNESS_FAILURE


def test_xen_panic_is_harness_failure():
    serial = "(XEN) ****************************************\n(XEN) Panic on CPU 0:\nOVMFGEN-RESULT timeout\n"
    assert classify_xen_run(serial, "", 0).verdict is Verdict.HARNESS_FAILURE


def test_every_verdict_has_a_capture():
    # SECURE_BOOT_REFUSED: its capture is a console of Debian's Secure Boot OVMF under QEMU
    # (data/xen/sb, test_sbverdicts.py) until a Secure Boot xen-pvh runs under Xen.
    assert {classify_capture(s).verdict for s in
            ("shell", "os", "assert", "triplefault", "gone", "timeout")} | {Verdict.HARNESS_FAILURE} \
        | {Verdict.SECURE_BOOT_REFUSED} == verdicts.XEN_VERDICTS


def test_os_capture_is_os_reached_with_seconds_from_xl_create():
    r = classify_capture("os")
    assert r.verdict is Verdict.OS_REACHED and r.ok, r
    assert r.detail == (f"{verdicts.OS_MARKER} printed by the OS disk's init; the firmware booted Boot0001 "
                        '"UEFI Misc Device" from the PV disk (XenBus, XenPvBlkDxe)')
    assert r.boot is not None and r.boot.disk_kind == "pv" and r.boot.option == "Boot0001"
    assert r.os_seconds == 10.16 and r.shell_seconds is None
    assert "OS 10.2 s after xl create" in verdicts.format_result(r)


def test_linux_that_stops_before_the_marker_shows_its_last_lines():
    serial = "\n".join(ln for ln in load("os.serial.log").splitlines()
                       if "REACHED" not in ln and "EVENT os" not in ln).replace("RESULT os", "RESULT crashed")
    r = classify_xen_run(serial, verdicts.extract_guest_console(serial), 0)
    assert r.verdict is Verdict.GUEST_CRASHED, r
    assert r.detail.startswith('xl list shows the domain crashed; the firmware booted Boot0001 "UEFI Misc Device" '
                               "from the PV disk (XenBus, XenPvBlkDxe); Linux's last lines: [    0.000000] Command line:")
    assert r.detail.endswith("efi: EFI v2.70 by EDK II | [    2.098355] Run /init as init process")
    # QEMU dying under Linux is the harness's failure, and says Linux had started.
    r = classify_xen_run(serial, verdicts.extract_guest_console(serial), -6)
    assert r.verdict is Verdict.HARNESS_FAILURE and "Run /init as init process" in r.detail


def test_hvm_os_capture_booted_the_emulated_ide_disk_from_the_reset_vector():
    # A real HVM guest with the OS disk as xvda: libxl gives it as an IDE disk (dom0's QEMU) AND a PV
    # disk; the firmware's boot manager listed both and started the IDE one.
    r = classify_capture("hvm-os")
    assert r.verdict is Verdict.OS_REACHED and r.os_seconds == 24.16, r
    assert r.boot == verdicts.BootStart("Boot0001", "UEFI QEMU HARDDISK QM00001 ",
                                        "PciRoot(0x0)/Pci(0x1,0x1)/Ata(Primary,Master,0x0)")
    assert r.detail.endswith('booted Boot0001 "UEFI QEMU HARDDISK QM00001" from the emulated IDE disk '
                             "(dom0's device model, AtaAtapiPassThruDxe)")
    assert "SecCoreStartupWithStack(0xFFFCC000, 0x820000)" in load("hvm-os.serial.log")


@pytest.mark.parametrize("path, kind", [
    ("VenHw(A732241F-383D-4D9C-8AE1-8E09837589D7,00F09E0F00000000)/VenHw(3D3CA290-B9A5-11E3-B75D-B8AC6F7D65E6,"
     "010000CA)", "pv"),
    ("PciRoot(0x0)/Pci(0x2,0x0)/VenHw(3D3CA290-B9A5-11E3-B75D-B8AC6F7D65E6,010000CA)/HD(1,GPT,X,0x800,0xF000)", "pv"),
    ("PciRoot(0x0)/Pci(0x1,0x1)/Ata(Primary,Master,0x0)", "ide"),
    ("PciRoot(0x0)/Pci(0x3,0x0)/Sata(0x0,0xFFFF,0x0)", "ahci"),
    ("Fv(7CB8BDC9-F8EB-4F34-AAEA-3EE4AF6516A1)/FvFile(7C04A583-9E3E-4F1C-AD65-E05268D0B4D1)", "other"),
])
def test_booted_from_names_the_disk_path_the_firmware_took(path, kind):
    console = f'\x1b[2JBdsDxe: loading Boot0002 "x" from {path}\nBdsDxe: starting Boot0002 "UEFI QEMU HARDDISK " from {path}\n'
    boot = verdicts.booted_from(console)
    assert boot == verdicts.BootStart("Boot0002", "UEFI QEMU HARDDISK ", path) and boot.disk_kind == kind
    assert boot.text.startswith('Boot0002 "UEFI QEMU HARDDISK" from ')
    assert verdicts.booted_from("no boot option started") is None


def test_a_users_disk_counts_as_os_reached_at_linux_s_banner():
    serial = "\n".join(ln for ln in load("os.serial.log").splitlines() if "REACHED" not in ln)
    r = classify_xen_run(serial, verdicts.extract_guest_console(serial), 0)
    assert r.verdict is Verdict.OS_REACHED
    assert r.detail == "the Linux kernel's banner on the guest's console; " + f"the firmware booted {r.boot.text}"


# --- several guests in one run -------------------------------------------------------------------


def _two_guest_log(first_stop: bool = True) -> str:
    shell = load("shell.serial.log")
    crash = load("triplefault.serial.log")
    one = "OVMFGEN-GUEST-START ovmfgen-pvh-shell\n" + shell + ("OVMFGEN-GUEST-STOP ovmfgen-pvh-shell\n" if first_stop else "")
    return "(XEN) Xen version 4.17\n" + one + "OVMFGEN-GUEST-START ovmfgen-pvh-ud2\n" + crash + \
        "OVMFGEN-GUEST-STOP ovmfgen-pvh-ud2\n"


def test_each_guest_is_judged_on_its_own_part_of_the_run():
    log = _two_guest_log()
    parts, stopped, rest = verdicts.guest_segments(log)
    assert set(parts) == stopped == {"ovmfgen-pvh-shell", "ovmfgen-pvh-ud2"}
    assert rest == "(XEN) Xen version 4.17\n"
    a = verdicts.classify_guest(log, "ovmfgen-pvh-shell", 0)
    b = verdicts.classify_guest(log, "ovmfgen-pvh-ud2", 0)
    assert a.verdict is Verdict.SHELL_REACHED and a.shell_seconds and a.shell_seconds > 0
    assert b.verdict is Verdict.GUEST_CRASHED and "Triple fault" in b.detail


def test_qemu_dying_later_does_not_undo_a_finished_guest():
    cut = _two_guest_log()
    cut = cut[: cut.index("OVMFGEN-RESULT", cut.index("OVMFGEN-GUEST-START ovmfgen-pvh-ud2"))]
    assert verdicts.classify_guest(cut, "ovmfgen-pvh-shell", -6).verdict is Verdict.SHELL_REACHED
    r = verdicts.classify_guest(cut, "ovmfgen-pvh-ud2", -6)
    assert r.verdict is Verdict.HARNESS_FAILURE and "-6" in r.detail
    never = verdicts.classify_guest(cut, "ovmfgen-hvm-shell", -6)
    assert never.verdict is Verdict.HARNESS_FAILURE
    assert never.detail == "never started: QEMU exited with status -6 before its turn"
    assert verdicts.classify_guest(cut, "ovmfgen-hvm-shell", None).detail == \
        "never started: the QEMU run timed out before its turn"
    assert verdicts.classify_guest("(XEN) x\n", "g", None).detail.startswith("never started: dom0 never")


def test_result_line_and_shell_seconds():
    r = verdicts.XenBootResult(Verdict.SHELL_REACHED, "ok", create_at=10.0, shell_at=17.25, qemu_seconds=38.2,
                          qemu_max_rss_mib=2700.0)
    assert r.shell_seconds == 7.25
    line = verdicts.format_result(r)
    assert line.startswith("xen: SHELL_REACHED") and "7.2 s after xl create" in line and "38.2 s" in line


def test_last_words_say_where_a_stopped_guest_was():
    """A stalled run's guest: the console's last line (ANSI codes gone), else its last (dN) debug line."""
    console = "\x1b[2J\x1b[01;01HWelcome to GRUB!\n\n\x1b[0m  Booting `Debian GNU/Linux'\n  \n"
    assert verdicts.last_words("", console) == "its console last said: Booting `Debian GNU/Linux'"
    serial = "(XEN) d2v0 something\n(d2) BdsDxe: starting Boot0002 \"debian\" from HD(1,GPT,...)\r\n(d0) not it\n"
    assert verdicts.last_words(serial, "") == 'its last debug line: BdsDxe: starting Boot0002 "debian" from HD(1,GPT,...)'
    assert verdicts.last_words("(XEN) only Xen\n", "  \n") == ""


# --- the kernel's lines the verdicts read on the console ------------------------------------------


def test_linux_smp_is_the_kernels_cpu_report_the_smp_payload_waits_for():
    # A real kernel's log (Debian's kernel under Secure Boot, its console with info lines), plus smp's line
    # as that kernel prints it: grep -E (what dom0 runs on the smp guest's console) finds that line only,
    # and cpu_state reads its count.
    smp = "[    0.537622] smp: Brought up 1 node, 2 CPUs"
    log = load("sb/qemu-signed.console.log") + smp + "\n"
    kept = subprocess.run(["grep", "-E", verdicts.LINUX_SMP], input=log, capture_output=True,
                          text=True, check=True).stdout
    assert kept.splitlines() == [smp]
    assert verdicts.cpu_state("", log).linux == 2
    assert verdicts.secure_boot_state("", log).linux is True
    for one in ("smp: Brought up 1 node, 1 CPU", "smp: Brought up 2 nodes, 128 CPUs"):
        assert subprocess.run(["grep", "-qE", verdicts.LINUX_SMP], input=one, text=True).returncode == 0


def test_os_evidence_names_the_strongest_sign_that_the_os_ran():
    banner = "[    0.000000] Linux version 6.1.0-57-amd64 (debian-kernel@lists.debian.org)\n"
    smp = "[    0.912345] smp: Brought up 1 node, 128 CPUs\n"
    assert verdicts.os_evidence(banner) == "the Linux kernel's banner on the guest's console"
    assert verdicts.os_evidence(banner + smp) == ("Linux's report of its CPUs on the guest's console "
                                                  "(smp: Brought up 1 node, 128 CPUs)")
    assert verdicts.os_evidence(banner + smp + f"{verdicts.OS_MARKER} 6.1.0-57-amd64\n") == (
        f"{verdicts.OS_MARKER} printed by the OS disk's init")
