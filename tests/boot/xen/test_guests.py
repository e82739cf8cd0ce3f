"""Unit tests of the ovmfgen.boot.xen package: log classification on captured real logs, generated text, cache keys."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import DATA as DATA_ROOT
from helpers import REPO
from ovmfgen import apt
from ovmfgen.boot.xen import cache, debian, guests, nested, persist, verdicts, watch
from ovmfgen.errors import OvmfgenError
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
    assert {classify_capture(s).verdict for s in
            ("shell", "os", "assert", "triplefault", "gone", "timeout")} | {Verdict.HARNESS_FAILURE} \
        == verdicts.XEN_VERDICTS


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


# --- generated text ------------------------------------------------------------------------------


def test_xl_config_text():
    assert guests.xl_config("/ovmfgen/ovmf.elf") == (
        'name = "ovmfgen-pvh"\n'
        'type = "pvh"\n'
        'kernel = "/ovmfgen/ovmf.elf"\n'
        "memory = 256\n"
        "vcpus = 1\n"
        'cpus = "1"\n'
        'on_poweroff = "destroy"\n'
        'on_reboot = "destroy"\n'
        'on_crash = "preserve"\n'
        'timer_mode = "no_missed_ticks_pending"\n'
    )
    assert "memory = 32\n" in guests.xl_config("/k", memory_mib=32)
    # dom0 sits on pCPU 0, the guest on pCPU 1
    assert "dom0_vcpus_pin" in nested.XEN_CMDLINE and "dom0_max_vcpus=1" in nested.XEN_CMDLINE


def test_qemu_argv(tmp_path):
    argv = nested.qemu_argv(Path("/c/xen-4.17"), Path("/t/vmlinuz"), Path("/t/dom0.cpio"), tmp_path / "s.log")
    assert argv[0] == "qemu-system-x86_64"
    joined = " ".join(argv)
    for piece in ("-accel tcg", "-icount shift=0,sleep=off", "-cpu max,-smap,-smep,-rdtscp", "-smp 2",
                  "-m 2048", "-no-reboot",
                  "-nodefaults", "-display none", "-vga none", "-monitor none", "-kernel /c/xen-4.17"):
        assert piece in joined
    assert argv[argv.index("-serial") + 1] == f"file:{tmp_path / 's.log'}"
    append = argv[argv.index("-append") + 1]
    assert "dom0_mem=1024M,max:1024M" in append and "console=com1" in append and "noreboot" in append
    assert argv[argv.index("-initrd") + 1] == \
        "/t/vmlinuz console=hvc0 earlyprintk=xen rdinit=/init,/t/dom0.cpio"
    retry = nested.qemu_argv(Path("/x"), Path("/t/v"), Path("/t/i"), Path("/s"), icount_shift=1)
    assert retry[retry.index("-icount") + 1] == "shift=1,sleep=off"
    assert nested.QEMU_ICOUNT_SHIFTS[0] != nested.QEMU_ICOUNT_SHIFTS[1]


def test_qemu_argv_per_xen_release(tmp_path):
    # 4.20: the host's QEMU with icount too, 3 GiB with 1536 MiB for dom0
    r = debian.XEN_420
    argv = nested.qemu_argv(Path("/tmp/r/xen-4.20"), Path("/tmp/r/vmlinuz"), Path("/tmp/r/i.cpio"),
                            Path("/tmp/r/s.log"), release=r)
    assert argv[0] == "qemu-system-x86_64"
    assert argv[argv.index("-icount") + 1] == "shift=0,sleep=off"
    assert argv[argv.index("-m") + 1] == "3072"
    assert "dom0_mem=1536M,max:1536M" in argv[argv.index("-append") + 1]
    assert argv[argv.index("-serial") + 1] == "file:/tmp/r/s.log"
    # 4.17's line is what it was
    assert nested.qemu_argv(Path("/x"), Path("/v"), Path("/i"), Path("/s")) == nested.qemu_argv(
        Path("/x"), Path("/v"), Path("/i"), Path("/s"), release=debian.XEN_417)
    assert nested.xen_cmdline() == nested.XEN_CMDLINE


def test_xen_releases_and_what_each_needs():
    a, b = debian.check_xen("4.17"), debian.check_xen("4.20")
    assert debian.check_xen(None) is a and debian.DEFAULT_XEN == "4.17"
    assert (a.suite, a.host_apt, a.qemu_memory_mib, a.cache_subdir) == ("bookworm", True, 2048, "")
    assert (b.suite, b.host_apt, b.qemu_memory_mib, b.cache_subdir) == ("trixie", False, 3072, "4.20")
    assert b.hypervisor_package == "xen-hypervisor-4.20-amd64" and b.utils_package == "xen-utils-4.20"
    assert b.security_suite == "trixie-security" and b.dom0_mem_mib > 1024
    assert debian.check_xen(b) is b


@pytest.mark.parametrize("bad", ["4.18", "4", "", "xen-4.20", "4.20.4"])
def test_unknown_xen_version_is_one_clear_line(bad):
    with pytest.raises(OvmfgenError) as e:
        debian.check_xen(bad)
    assert str(e.value) == f"error: unknown Xen version {bad!r}: expected 4.17 or 4.20"


def test_private_apt_sources_for_trixie_use_the_machines_archive(tmp_path):
    text = debian.private_apt_sources(debian.XEN_420, "http://mirror.example/debian",
                                      "http://mirror.example/debian-security")
    assert "URIs: http://mirror.example/debian\nSuites: trixie\n" in text
    assert "URIs: http://mirror.example/debian-security\nSuites: trixie-security\n" in text
    assert text.count("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg") == 2
    assert "security" not in debian.private_apt_sources(debian.XEN_420, "http://m.example/debian", None)
    opts = apt.private_apt_options(tmp_path)
    assert f"Dir::State::Lists={tmp_path / 'lists'}" in opts and "Dir::Etc::SourceList=/dev/null" in opts


def test_4_17_cache_keys_are_unchanged_by_4_20():
    # The 4.17 dom0 entry cached on machines before 4.20 existed keeps its key (no rebuild).
    v = debian.XenVersions("4.17.7+13-g2445b30a44-0+deb12u1", "4.17.7+13-g2445b30a44-0+deb12u1",
                           "linux-image-6.1.0-57-amd64", "6.1.192-3", "1:7.2+dfsg-7+deb12u18+b3")
    assert v.rootfs_key() == "07b0779ed7cfe2af"
    assert cache.xen_cache_dir(debian.XEN_417) == cache.xen_cache_dir()
    assert cache.xen_cache_dir(debian.XEN_420) == cache.xen_cache_dir() / "4.20"
    # the same tools version in another suite is another root file system
    from dataclasses import replace
    assert replace(v, suite="trixie").rootfs_key() != v.rootfs_key()
    # 4.20's dom0 entry kept its key when its outer QEMU became the host's (no rebuild)
    t = debian.XenVersions("4.20.4+63-g7abfd2bce2-0+deb13u1", "4.20.4+63-g7abfd2bce2-0+deb13u1",
                           "linux-image-6.1.0-57-amd64", "6.1.192-3", "1:10.0.13+ds-0+deb13u1", "trixie")
    assert t.rootfs_key() == "a8ebbe8ae509f605"


def test_dom0_init_runs_the_releases_tools():
    assert "export PATH=/usr/lib/xen-4.20/bin:" in guests.dom0_init_script("4.20")
    assert "export PATH=/usr/lib/xen-4.17/bin:" in guests.dom0_init_script()


QEMU_72_ABORT = """\
qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.80000001H:ECX.svm [bit 2]
**
ERROR:../accel/tcg/tcg-accel-ops.c:83:tcg_handle_interrupt: assertion failed: (qemu_mutex_iothread_locked())
Bail out! ERROR:../accel/tcg/tcg-accel-ops.c:83:tcg_handle_interrupt: assertion failed: (qemu_mutex_iothread_locked())
"""


def test_qemu_message_is_qemus_own_last_error_line():
    assert nested.qemu_message(QEMU_72_ABORT).startswith("Bail out! ERROR:../accel/tcg/tcg-accel-ops.c:83:")
    assert nested.qemu_message("qemu: Bad icount read\n\n") == "qemu: Bad icount read"
    assert nested.qemu_message("just a line\n") == "just a line"
    assert nested.qemu_message("") == ""


def test_wall_cap_is_a_safety_net_not_the_guest_deadline():
    # dom0's deadline is in its own seconds; the host's cap only grows with the guests it must allow for.
    assert nested.wall_cap_s(1) < nested.wall_cap_s(3) < nested.wall_cap_s(5)
    d = guests.GuestDeadline()
    # At 25 wall s per dom0 s (measured under load 12) dom0's boot (~40 s) and a guest that takes its
    # whole idle limit still fit in the cap of a one-guest run.
    assert (40 + d.idle_s) * 25 <= nested.wall_cap_s(1)
    with pytest.raises(OvmfgenError, match="bad guest deadline"):
        guests.GuestDeadline(idle_s=10, cap_s=5)


def test_qemu_argv_rejects_module_paths_qemu_would_split():
    with pytest.raises(OvmfgenError):
        nested.qemu_argv(Path("/x"), Path("/a b/vmlinuz"), Path("/t/i"), Path("/s"))
    with pytest.raises(OvmfgenError):
        nested.qemu_argv(Path("/x"), Path("/t/vmlinuz"), Path("/t/a,b"), Path("/s"))


def test_dom0_scripts_are_valid_sh(tmp_path):
    for name, text in (("init", guests.dom0_init_script()),
                       ("test.sh", guests.dom0_test_script(guests.GuestDeadline()))):
        p = tmp_path / name
        p.write_text(text)
        subprocess.run(["sh", "-n", str(p)], check=True)
    init = guests.dom0_init_script()
    assert init.index("insmod /ovmfgen/modules/xen-privcmd.ko") < init.index("insmod /ovmfgen/modules/xenfs.ko")
    assert "mount -t xenfs xenfs /proc/xen" in init
    assert "xenconsoled --log=all --log-dir=/var/log/xen/console" in init
    text = guests.dom0_test_script(guests.GuestDeadline(idle_s=45, cap_s=120, tick_s=3))
    assert "IDLE=$(( 45 * SCALE ))" in text and "CAP=$(( 120 * SCALE ))" in text and "+ 3 ))" in text
    two = guests.dom0_test_script(guests.GuestDeadline(), ["a", "b"])
    assert two.endswith("run_guest a a 'Shell>' shell\nrun_guest b b 'Shell>' shell\n")
    assert "xl create /ovmfgen/$NAME.cfg" in two
    assert "OVMFGEN-GUEST-START $LABEL" in two and "OVMFGEN-GUEST-STOP $LABEL" in two


def test_dom0_runs_each_payload_waits_for_its_own_sign(tmp_path):
    disk = tmp_path / "d.img"
    g = [guests.XenGuest("pvh", "os", tmp_path, disk=disk), guests.XenGuest("hvm", "persist", tmp_path, disk=disk),
         guests.XenGuest("pvh", "disk", tmp_path, disk=disk)]
    assert guests.guest_runs(g) == [
        ("ovmfgen-pvh-os", "ovmfgen-pvh-os", verdicts.OS_MARKER, "os"),
        ("ovmfgen-hvm-persist", "ovmfgen-hvm-persist", persist.DONE, "persist"),
        ("ovmfgen-hvm-persist", "ovmfgen-hvm-persist-restart", persist.DONE, "persist"),
        ("ovmfgen-pvh-disk", "ovmfgen-pvh-disk", f"{verdicts.OS_MARKER}|Linux version [0-9]", "os"),
    ]
    script = guests.dom0_test_script(guests.GuestDeadline(), runs=guests.guest_runs(g))
    p = tmp_path / "t.sh"
    p.write_text(script)
    subprocess.run(["sh", "-n", str(p)], check=True)
    # A guest that should boot an OS but shows the Shell stops at once, as "shell".
    assert '[ "$EVENT" != shell ] && grep -q \'Shell>\'' in script
    # The restart keeps the disk: the same domain config, a fresh console log.
    assert script.count("run_guest ovmfgen-hvm-persist ") == 2 and 'rm -f "$LOG"' in script


def test_block_hotplug_script_is_valid_sh_and_announces_the_loop_device(tmp_path):
    p = tmp_path / "block"
    p.write_text(guests.block_script())
    subprocess.run(["sh", "-n", str(p)], check=True)
    text = guests.block_script()
    for key in ("physical-device", "physical-device-path", "hotplug-status"):
        assert f'"$XENBUS_PATH/{key}"' in text
    assert "losetup -f --show" in text and "losetup -d" in text
    cfg = guests.xl_config("/ovmfgen/f.elf", "g", 256, "pvh", "/ovmfgen/disk-0.img")
    # xl parses the disk spec up to target=, which takes the rest: it must come last.
    assert cfg.endswith(f'disk = [ "format=raw,vdev=xvda,access=rw,script={guests.BLOCK_SCRIPT},'
                        'target=/ovmfgen/disk-0.img" ]\n')
    assert "disk =" not in guests.xl_config("/ovmfgen/f.elf", "g", 256, "pvh")


def _read_newc(data: bytes) -> dict[str, tuple[int, bytes]]:
    out, pos = {}, 0
    while True:
        hdr = data[pos:pos + 110]
        assert hdr[:6] == b"070701"
        f = [int(hdr[6 + 8 * i: 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        body = data[pos: pos + size]
        pos += size
        pos += -pos % 4
        if name == "TRAILER!!!":
            assert pos == len(data)
            return out
        out[name] = (mode, body)


def test_newc_archive_round_trip_and_cpio_reads_it(tmp_path):
    data = guests.newc_archive([("d", 0o040755, b""), ("d/f", 0o100644, b"hello"), ("/x", 0o100755, b"12345678")])
    assert data == guests.newc_archive([("d", 0o040755, b""), ("d/f", 0o100644, b"hello"),
                                     ("/x", 0o100755, b"12345678")])  # deterministic
    got = _read_newc(data)
    assert got == {"d": (0o040755, b""), "d/f": (0o100644, b"hello"), "x": (0o100755, b"12345678")}
    if subprocess.run(["which", "cpio"], capture_output=True).returncode == 0:
        listing = subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True, check=True)
        assert listing.stdout.decode().split() == ["d", "d/f", "x"]


def _pvh_elf(tmp_path: Path) -> Path:
    """A small but well-formed PVH ELF (ovmfgen.elf's header around a fake 1 MiB FD) on disk."""
    from ovmfgen import elf as elfmod

    fd = bytearray(b"\xff" * (1 << 20))
    image = tmp_path / "ovmf.elf"
    image.write_bytes(elfmod.pvh_header(len(fd)) + bytes(fd[len(elfmod.pvh_header(len(fd))):]))
    return image


def test_overlay_cpio_carries_init_modules_each_guests_firmware_and_config(tmp_path):
    mods = tmp_path / "modules"
    mods.mkdir()
    for m in debian.DOM0_MODULES:
        (mods / f"{m}.ko").write_bytes(m.encode())
    image = _pvh_elf(tmp_path)
    os_disk, p1, p2 = tmp_path / "os.img", tmp_path / "p1.img", tmp_path / "p2.img"
    for d in (os_disk, p1, p2):
        d.write_bytes(d.name.encode())
    disks = {"os": os_disk, "persist": p1}
    guest_set = [guests.XenGuest(m, p, image, disk=disks.get(p) if (m, p) != ("hvm", "persist") else p2)
                 for m, p in guests.check_mode("all")]
    guest_set.append(guests.XenGuest("pvh", "shell", image, variant="4M"))
    got = _read_newc(guests.overlay_cpio(guest_set, mods, guests.GuestDeadline(cap_s=200)))
    assert got["init"][0] == 0o100755 and got["init"][1].startswith(b"#!/bin/sh")
    assert got["ovmfgen/ovmf-pvh-shell.elf"][1] == image.read_bytes()
    assert got["ovmfgen/ovmf-hvm-shell.elf"][1] == image.read_bytes()
    ud2 = got["ovmfgen/ovmf-pvh-ud2.elf"][1]
    at = guests.pvh_entry_offset(image.read_bytes())
    assert ud2[at:at + 2] == b"\x0f\x0b" and ud2[:at] == image.read_bytes()[:at]
    assert got["ovmfgen/modules/xenfs.ko"][1] == b"xenfs"
    assert b'kernel = "/ovmfgen/ovmf-pvh-shell.elf"' in got["ovmfgen/ovmfgen-pvh-shell.cfg"][1]
    assert b'bios_path_override = "/ovmfgen/ovmf-hvm-shell.elf"' in got["ovmfgen/ovmfgen-hvm-shell.cfg"][1]
    script = got["ovmfgen/test.sh"][1].decode()
    assert "CAP=$(( 200 * SCALE ))" in script
    assert script.index("run_guest ovmfgen-pvh-shell ") < script.index("run_guest ovmfgen-pvh-os ") \
        < script.index("run_guest ovmfgen-hvm-shell ") < script.index("run_guest ovmfgen-hvm-os ") \
        < script.index("run_guest ovmfgen-pvh-ud2 ") < script.index("run_guest ovmfgen-pvh-shell-4M ")
    assert got["ovmfgen/ovmf-pvh-shell-4M.elf"][1] == image.read_bytes()
    assert b'kernel = "/ovmfgen/ovmf-pvh-shell-4M.elf"' in got["ovmfgen/ovmfgen-pvh-shell-4M.cfg"][1]
    # Each guest has its own copy of its disk: the two OS guests do not share what the firmware writes.
    assert got["ovmfgen/disk-pvh-os.img"][1] == got["ovmfgen/disk-hvm-os.img"][1] == b"os.img"
    assert (got["ovmfgen/disk-pvh-persist.img"][1], got["ovmfgen/disk-hvm-persist.img"][1]) == (b"p1.img", b"p2.img")
    assert sorted(n for n in got if n.startswith("ovmfgen/disk-")) == [
        "ovmfgen/disk-hvm-os.img", "ovmfgen/disk-hvm-persist.img", "ovmfgen/disk-pvh-os.img",
        "ovmfgen/disk-pvh-persist.img"]
    assert got["ovmfgen/block-loop"][0] == 0o100755
    assert b"target=/ovmfgen/disk-hvm-os.img" in got["ovmfgen/ovmfgen-hvm-os.cfg"][1]
    assert b"target=/ovmfgen/disk-pvh-os.img" in got["ovmfgen/ovmfgen-pvh-os.cfg"][1]
    assert b"disk =" not in got["ovmfgen/ovmfgen-pvh-shell.cfg"][1]


def test_guest_names_modes_and_expected_verdicts(tmp_path):
    g = guests.XenGuest("hvm", "shell", tmp_path / "x.elf")
    assert g.name == "ovmfgen-hvm-shell" and g.expected is Verdict.SHELL_REACHED
    assert guests.XenGuest("pvh", "ud2", tmp_path).expected is Verdict.GUEST_CRASHED
    assert guests.check_mode("pvh") == (("pvh", "shell"),)
    assert [k for k in guests.check_mode("all")] == [
        ("pvh", "shell"), ("pvh", "os"), ("hvm", "shell"), ("hvm", "os"), ("pvh", "persist"), ("hvm", "persist"),
        ("pvh", "ud2")]
    with pytest.raises(OvmfgenError, match="unknown Xen boot mode 'kvm': expected all, hvm, os, persist, pvh"):
        guests.check_mode("kvm")
    four = guests.XenGuest("pvh", "shell", tmp_path / "4m.elf", variant="4M")
    assert four.name == "ovmfgen-pvh-shell-4M" and four.expected is Verdict.SHELL_REACHED
    assert nested.guest_log_names(four) == ("xen-pvh-shell-4M.log", "xen-pvh-shell-4M.console.log")
    assert nested.guest_log_names(g) == ("xen-hvm-shell.log", "xen-hvm-shell.console.log")
    with pytest.raises(OvmfgenError, match="letters and digits"):
        guests.XenGuest("pvh", "shell", tmp_path, variant="4 M")


def test_one_run_refuses_two_guests_of_the_same_name(tmp_path):
    image = _pvh_elf(tmp_path)
    with pytest.raises(OvmfgenError, match="same name"):
        nested.boot_xen_guests([guests.XenGuest("pvh", "shell", image)] * 2, tmp_path)
    assert guests.XenGuest("pvh", "os", tmp_path).expected is Verdict.OS_REACHED
    assert guests.XenGuest("hvm", "disk", tmp_path).expected is Verdict.OS_REACHED
    assert guests.XenGuest("hvm", "persist", tmp_path).expected is Verdict.SHELL_REACHED
    assert guests.XenGuest("hvm", "persist", tmp_path).runs == ("ovmfgen-hvm-persist", "ovmfgen-hvm-persist-restart")


def test_disk_requests_give_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert nested.check_disk_request("all", None) == guests.check_mode("all")
    good = tmp_path / "g.img"
    good.write_bytes(b"\0" * 510 + b"\x55\xaa")
    assert nested.check_disk_request("all", good) == (("pvh", "disk"), ("hvm", "disk"))
    assert nested.check_disk_request("hvm", good) == (("hvm", "disk"),)
    with pytest.raises(OvmfgenError, match="unknown Xen boot mode 'kvm'"):
        nested.check_disk_request("kvm", good)
    with pytest.raises(OvmfgenError, match="--disk boots your disk in --mode all, hvm, pvh, not 'persist'"):
        nested.check_disk_request("persist", good)
    with pytest.raises(OvmfgenError, match="^error: missing.img: no such disk image$"):
        nested.check_disk_request("pvh", "missing.img")
    (tmp_path / "notes.txt").write_text("hello\n")
    with pytest.raises(OvmfgenError, match="^error: notes.txt: not a disk image"):
        nested.check_disk_request("pvh", "notes.txt")


def test_hvm_xl_config_boots_the_same_blob_through_hvmloader():
    cfg = guests.xl_config("/ovmfgen/f.elf", "g", 256, "hvm")
    assert 'type = "hvm"\nbios = "ovmf"\nbios_path_override = "/ovmfgen/f.elf"\n' in cfg
    assert f'device_model_override = "{guests.DEVICE_MODEL}"' in cfg and 'serial = "pty"' in cfg
    assert "kernel =" not in cfg and 'timer_mode = "no_missed_ticks_pending"' in cfg


def test_pvh_entry_offset_rejects_what_is_not_a_pvh_elf(tmp_path):
    with pytest.raises(OvmfgenError, match="not an ELF"):
        guests.pvh_entry_offset(b"MZ" + b"\0" * 100)
    data = bytearray(_pvh_elf(tmp_path).read_bytes())
    data[data.index(b"Xen\0") + 4 - 16 + 8] = 99  # the note's type: no longer PHYS32_ENTRY
    with pytest.raises(OvmfgenError, match="no XEN_ELFNOTE_PHYS32_ENTRY"):
        guests.pvh_entry_offset(bytes(data))


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


# --- apt sources and versions ----------------------------------------------------------------------

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main
"""

ONE_LINE = """\
# deb http://old.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian/ bookworm main contrib
deb http://one.example/debian-security bookworm-security main
deb-src http://one.example/debian bookworm main
"""


def test_mirrors_from_deb822():
    assert debian.debian_mirrors(apt.parse_deb822_sources(DEB822, 'test')) == \
        ("http://mirror.example/debian", "http://mirror.example/debian-security")


def test_mirrors_from_one_line_format():
    assert debian.debian_mirrors(apt.parse_one_line_sources(ONE_LINE, 'test')) == \
        ("http://one.example/debian", "http://one.example/debian-security")


def test_mirrors_read_from_an_etc_apt_tree(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text("deb http://no.example/ bookworm main\n")
    assert debian.debian_mirrors(apt.read_apt_sources(tmp_path))[0] == "http://mirror.example/debian"


def test_no_bookworm_source_is_an_error():
    with pytest.raises(OvmfgenError):
        debian.debian_mirrors(apt.parse_one_line_sources("deb http://x.example/debian trixie main\n", "t"))
    assert debian.debian_mirrors(apt.parse_one_line_sources("deb http://x.example/debian bookworm main\n", "t"))[1] is None


def test_this_machines_mirror_is_derived_not_written():
    # The repository names no mirror host: whatever is found comes from /etc/apt.
    src = "".join(p.read_text() for p in sorted(Path(debian.__file__).parent.glob("*.py")))
    assert "deb.debian.org" not in src
    if Path("/etc/apt").is_dir() and debian.pick_mirror(apt.read_apt_sources(), "bookworm"):
        main, _ = debian.debian_mirrors()
        assert main.startswith(("http://", "https://"))


APT_SHOW = """\
Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
Description: Linux for 64-bit PCs (meta-package)
 continuation line

Package: xen-utils-4.17
Version: 4.17.7+13-g2445b30a44-0+deb12u1
Depends: libc6 (>= 2.35), python3
"""


def test_apt_show_parsing_and_kernel_package():
    recs = debian.parse_apt_show(APT_SHOW)
    assert recs["xen-utils-4.17"]["Version"] == "4.17.7+13-g2445b30a44-0+deb12u1"
    assert debian.kernel_package(recs["linux-image-amd64"]) == "linux-image-6.1.0-56-amd64"
    with pytest.raises(OvmfgenError):
        debian.kernel_package({"Depends": "linux-headers-amd64"})


def test_cache_key_follows_the_tools_version_only():
    a = debian.XenVersions("4.17.7", "4.17.7", "linux-image-6.1.0-56-amd64", "6.1.192-2")
    assert a.rootfs_key() == debian.XenVersions("4.17.7", "4.17.7", "linux-image-6.1.0-57-amd64", "6.1.200-1").rootfs_key()
    assert a.rootfs_key() != debian.XenVersions("4.17.7", "4.17.8", "linux-image-6.1.0-56-amd64", "6.1.192-2").rootfs_key()
    assert len(a.rootfs_key()) == 16
    # HVM's device model lives in dom0's root file system: its version is part of the key
    assert a.rootfs_key() != debian.XenVersions("4.17.7", "4.17.7", "linux-image-6.1.0-56-amd64", "6.1.192-2",
                                                "1:7.2+dfsg-7+deb12u18").rootfs_key()


def test_safe_name():
    assert debian.safe_name("1:7.2+dfsg-7+deb12u18+b3") == "1_7.2+dfsg-7+deb12u18+b3"


def test_result_line_and_shell_seconds():
    r = verdicts.XenBootResult(Verdict.SHELL_REACHED, "ok", create_at=10.0, shell_at=17.25, qemu_seconds=38.2,
                          qemu_max_rss_mib=2700.0)
    assert r.shell_seconds == 7.25
    line = verdicts.format_result(r)
    assert line.startswith("xen: SHELL_REACHED") and "7.2 s after xl create" in line and "38.2 s" in line


def test_boot_xen_command_rejects_an_unknown_mode_before_anything_else(tmp_path):
    with pytest.raises(OvmfgenError, match="unknown Xen boot mode 'both': expected all, hvm, os, persist, pvh$"):
        nested.boot_xen_command(tmp_path / "missing.elf", mode="both")


def test_boot_xen_command_rejects_an_unknown_xen_version_before_anything_else(tmp_path):
    with pytest.raises(OvmfgenError, match="^error: unknown Xen version '4.18': expected 4.17 or 4.20$"):
        nested.boot_xen_command(tmp_path / "missing.elf", xen="4.18")


def test_ensure_host_packages_uses_the_setup_installer(monkeypatch):
    asked = []
    monkeypatch.setattr(debian, "ensure_apt_packages", lambda packages: asked.append(packages))
    debian.ensure_host_packages()
    assert asked == [tuple(debian.HOST_PACKAGES)]


# --- dom0's wait for a guest, run for real in sh with a fake xl and a fake clock ------------------

_FAKE_XL = """#!/bin/sh
# xl for the test: the domain's state and Xen's ring come from files the scenario writes.
case "$1" in
  create) echo "Parsing config from $2"; exit 0 ;;
  list) echo "Name ID Mem VCPUs State Time(s)"; [ -f "$FAKE/state" ] && echo "$NAME_X 1 256 1 $(cat "$FAKE/state") 1.0" ;;
  dmesg) [ "$2" = -c ] || cat "$FAKE/dmesg" 2>/dev/null ;;
  domid) echo 7 ;;
esac
exit 0
"""

# xenstore-read for the test: the guest's console tty is a file the key goes into.
_FAKE_XENSTORE_READ = """#!/bin/sh
[ "$1" = /local/domain/7/console/tty ] && echo "$FAKE/tty"
"""

# `sleep 1` advances dom0's clock by one second and lets the scenario act at that second.
_FAKE_SLEEP = """#!/bin/sh
t=$(( $(cut -d. -f1 "$OVMFGEN_UPTIME") + 1 ))
echo "$t.00 0.00" > "$OVMFGEN_UPTIME"
sh "$FAKE/scenario" "$t"
"""


def _wait_for_guest(tmp_path: Path, scenario: str, deadline: guests.GuestDeadline) -> tuple[str, int]:
    """Run dom0's test script on one guest; (its output, dom0's clock at the end)."""
    fake, bin_dir, console = tmp_path / "fake", tmp_path / "bin", tmp_path / "console"
    for d in (fake, bin_dir, console):
        d.mkdir()
    (bin_dir / "xl").write_text(_FAKE_XL)
    (bin_dir / "sleep").write_text(_FAKE_SLEEP)
    (bin_dir / "xenstore-read").write_text(_FAKE_XENSTORE_READ)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    (fake / "scenario").write_text(scenario)
    (fake / "state").write_text("-b----")
    uptime = fake / "uptime"
    uptime.write_text("10.00 0.00\n")
    script = tmp_path / "test.sh"
    script.write_text(guests.dom0_test_script(deadline, ["g"]))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "FAKE": str(fake), "NAME_X": "g", "OVMFGEN_UPTIME": str(uptime),
           "OVMFGEN_CONSOLE_DIR": str(console), "TMPDIR": str(tmp_path)}
    out = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True, timeout=120, check=True)
    return out.stdout, int(uptime.read_text().split(".")[0])


# The scenario gets dom0's second; $FAKE/... and the console log are its to write.
_TALKS_UNTIL = """t=$1
if [ "$t" -le {until} ]; then echo "(d1) line $t" >> "$FAKE/dmesg"; fi
"""


def test_a_silent_guest_times_out_after_the_idle_limit(tmp_path):
    out, clock = _wait_for_guest(tmp_path, "", guests.GuestDeadline(idle_s=8, cap_s=100, tick_s=2))
    assert "OVMFGEN-RESULT timeout" in out
    assert "OVMFGEN-DEADLINE no new guest output for 8 s" in out and "host scale 1" in out
    assert 18 <= clock <= 20  # created at 10, silent from the start
    r = verdicts.classify_xen_run(out, "", 0)
    assert r.verdict is Verdict.TIMEOUT and r.detail.startswith("no new guest output for 8 s")


def test_a_guest_that_keeps_printing_is_not_cut_off_by_the_idle_limit(tmp_path):
    # It prints until second 24, far past the idle limit of 5 from its start, then hangs.
    out, clock = _wait_for_guest(tmp_path, _TALKS_UNTIL.format(until=24),
                                 guests.GuestDeadline(idle_s=5, cap_s=100, tick_s=4))
    assert "no new guest output for 5 s" in out and 29 <= clock <= 31
    # dom0's heartbeat came every 4 of its seconds while it waited (the host's stall watch needs it).
    ticks = [float(x.split()[2]) for x in out.splitlines() if x.startswith("OVMFGEN-EVENT tick ")]
    assert len(ticks) >= 4 and all(4 <= b - a <= 5 for a, b in zip(ticks, ticks[1:]))


def test_a_guest_printing_forever_stops_at_the_cap(tmp_path):
    out, clock = _wait_for_guest(tmp_path, _TALKS_UNTIL.format(until=10 ** 6),
                                 guests.GuestDeadline(idle_s=5, cap_s=15, tick_s=5))
    assert "OVMFGEN-DEADLINE no shell after 15 s" in out and 25 <= clock <= 26
    assert verdicts.classify_xen_run(out, "", 0).detail.startswith("no shell after 15 s")


def test_console_output_counts_as_progress_and_the_shell_ends_the_wait(tmp_path):
    scenario = """t=$1
LOG="$OVMFGEN_CONSOLE_DIR/guest-g.log"
if [ "$t" -le 22 ]; then echo "boot $t" >> "$LOG"; fi
if [ "$t" -eq 22 ]; then printf 'Shell> ' >> "$LOG"; fi
"""
    out, clock = _wait_for_guest(tmp_path, scenario, guests.GuestDeadline(idle_s=5, cap_s=100, tick_s=5))
    assert "OVMFGEN-RESULT shell" in out and clock == 22
    r = verdicts.classify_xen_run(out, verdicts.extract_guest_console(out), 0)
    assert r.verdict is Verdict.SHELL_REACHED and r.shell_seconds == 12.0


def test_dom0_presses_a_key_at_the_shells_startup_countdown(tmp_path):
    # The Shell counts down from 5 (a busy wait): dom0 presses one key (a space, not ESC: startup.nsh
    # still runs) on the guest's console once it shows, and the Shell goes on at the next step.
    scenario = """t=$1
LOG="$OVMFGEN_CONSOLE_DIR/guest-g.log"
if [ "$t" -eq 13 ]; then printf 'Press \\033[1mESC\\033[0m in 5 seconds to skip startup.nsh' >> "$LOG"; fi
if [ "$t" -ge 14 ] && [ "$t" -lt 18 ] && [ -s "$FAKE/tty" ]; then printf 'Shell> ' >> "$LOG"; fi
"""
    out, clock = _wait_for_guest(tmp_path, scenario, guests.GuestDeadline(idle_s=30, cap_s=100, tick_s=5))
    assert (tmp_path / "fake" / "tty").read_text() == " "
    events = [x.split()[1:] for x in out.splitlines() if x.startswith("OVMFGEN-EVENT ")]
    assert ["key", "13.00"] in events and ["shell", "14.00"] in events and clock == 14, events
    # No countdown, no key.
    (tmp_path / "quiet").mkdir()
    scenario = """t=$1
[ "$t" -eq 13 ] && printf 'Shell> ' >> "$OVMFGEN_CONSOLE_DIR/guest-g.log"
"""
    out, _ = _wait_for_guest(tmp_path / "quiet", scenario, guests.GuestDeadline(idle_s=30, cap_s=100, tick_s=5))
    assert "OVMFGEN-EVENT key" not in out and not (tmp_path / "quiet" / "fake" / "tty").exists()


def test_a_crash_and_an_assert_end_the_wait_at_once(tmp_path):
    # xl list's fifth column is the state; "c": crashed (on_crash = "preserve" keeps the domain).
    (tmp_path / "c").mkdir()
    out, clock = _wait_for_guest(tmp_path / "c", 'echo "----c-" > "$FAKE/state"\n',
                                 guests.GuestDeadline(idle_s=8, cap_s=100))
    assert "OVMFGEN-RESULT crashed" in out and clock <= 12
    (tmp_path / "a").mkdir()
    out, clock = _wait_for_guest(tmp_path / "a", 'echo "(d1) ASSERT [PeiCore] x.c(1): y" >> "$FAKE/dmesg"\n',
                                 guests.GuestDeadline(idle_s=8, cap_s=100))
    assert "OVMFGEN-RESULT assert" in out and clock <= 12


# --- the host's watch of a run ---------------------------------------------------------------------


def test_watch_stamps_markers_with_the_wall_clock_and_measures_the_host():
    w = watch.RunWatch(stall_s=100)
    w.feed("(XEN) booting\nOVMFGEN-EVENT dom0-up 4.", 50.0)  # a line cut in the middle
    assert w.dom0_up is None
    w.feed("68\nOVMFGEN-GUEST-START ovmfgen-pvh-shell\nOVMFGEN-EVENT create 4.70\n", 52.0)
    assert w.dom0_up == 52.0 and w.guest_start == {"ovmfgen-pvh-shell": 52.0}
    w.feed("OVMFGEN-EVENT tick 9.70\r\n", 102.0)
    w.feed("OVMFGEN-EVENT shell 11.70\nOVMFGEN-GUEST-STOP ovmfgen-pvh-shell\n", 122.0)
    assert w.guest_wall_seconds("ovmfgen-pvh-shell") == 70.0 and w.guest_wall_seconds("other") is None
    assert w.wall_per_dom0_second() == 9.97  # 70 wall s for 7.02 dom0 s (dom0-up to shell)
    assert not w.stalled(200.0) and w.stalled(222.5)
    w.feed("", 300.0)  # nothing read: still silent since 122
    assert w.stalled(300.0)


def test_watch_without_events_has_no_speed():
    w = watch.RunWatch()
    w.feed("(XEN) only Xen\n", 3.0)
    assert w.wall_per_dom0_second() is None and w.dom0_up is None and not w.stalled(3.0 + watch.STALL_S)


# --- invoke bench --xen ------------------------------------------------------------------------------


def _bench_summary(wall: tuple[float, ...], set_s: float, runs: int = 1) -> dict:
    names = ["ovmfgen-pvh-shell", "ovmfgen-hvm-shell", "ovmfgen-pvh-ud2"][:len(wall)]
    return {"xen": "4.17.x", "device_model": "7.2",
            "runs": [{"guests": names, "qemu_seconds": set_s, "dom0_up_wall_s": 80.0, "wall_per_dom0_second": 6.5,
                      "qemu_max_rss_mib": 2900.0}] * runs,
            "guests": [{"name": n, "verdict": "SHELL_REACHED", "ok": True, "wall_seconds": w, "seconds_to_shell": 6.8}
                       for n, w in zip(names, wall)]}


def test_bench_figures_from_xen_boot_json():
    from ovmfgen.boot.xen import bench

    f = bench.xen_figures(_bench_summary((25.0, 29.0, 3.0), 150.0), 1.5, 0.4)
    assert f["met"] and f["set_s"] == 150.0 and f["dom0_up_wall_s"] == 80.0 and f["load_before"] == 1.5
    assert f["guests"]["ovmfgen-pvh-shell"] == {"verdict": "SHELL_REACHED", "ok": True, "wall_s": 25.0,
                                                "dom0_s_to_shell": 6.8, "dom0_s_to_os": None, "met": True}
    slow = bench.xen_figures(_bench_summary((25.0, 31.0, 3.0), 150.0), None, 0.0)
    assert not slow["met"] and not slow["guests"]["ovmfgen-hvm-shell"]["met"]
    assert not bench.xen_figures(_bench_summary((5.0,), 201.0), None, 0.0)["met"]  # the whole set
    assert not bench.xen_figures(_bench_summary((5.0,), 100.0, runs=2), None, 0.0)["met"]  # a retry is no figure


def test_bench_xen_names_the_build_it_needs(tmp_path, real_cache):
    from ovmfgen.boot.xen import bench
    from ovmfgen.paths import Layout

    layout = Layout(build_root=tmp_path / "b", dist_root=tmp_path / "d")
    with pytest.raises(OvmfgenError, match=r"DEBUG-hvcon/ovmf.elf: run `invoke build --platform xen-pvh --target "
                                           r"DEBUG --feature debug_output=hypervisor-console` first"):
        bench.bench_xen_command(layout=layout)
    with pytest.raises(OvmfgenError, match="unknown Xen boot mode"):
        bench.bench_xen_command(mode="kvm", layout=layout)


def test_bench_results_keep_the_other_figures(tmp_path):
    from ovmfgen.builder.bench import merge_results

    out = tmp_path / "results.json"
    merge_results(out, {"noop": {"ovmfgen_s": 0.5}})
    merge_results(out, {"xen": {"set_s": 150.0}})
    merge_results(out, {"noop": {"ovmfgen_s": 0.6}})
    assert json.loads(out.read_text()) == {"noop": {"ovmfgen_s": 0.6}, "xen": {"set_s": 150.0}}
    out.write_text("not json")
    merge_results(out, {"xen": {}})
    assert json.loads(out.read_text()) == {"xen": {}}


def test_guests_of_two_trees_share_one_run_apart(tmp_path):
    """The newest tree's firmware (variant "202605") rides in the same nested run as the default tree's:
    its own name, firmware file, xl config and log files; two guests with one name are refused."""
    mods = tmp_path / "modules"
    mods.mkdir()
    for m in debian.DOM0_MODULES:
        (mods / f"{m}.ko").write_bytes(m.encode())
    old_dir, new_dir = tmp_path / "old", tmp_path / "new"
    old_dir.mkdir()
    new_dir.mkdir()
    old, new = _pvh_elf(old_dir), _pvh_elf(new_dir)
    new.write_bytes(new.read_bytes() + b"202605")
    both = [guests.XenGuest("pvh", "shell", old), guests.XenGuest("pvh", "shell", new, variant="202605"),
            guests.XenGuest("hvm", "shell", new, variant="202605")]
    assert [g.name for g in both] == ["ovmfgen-pvh-shell", "ovmfgen-pvh-shell-202605", "ovmfgen-hvm-shell-202605"]
    got = _read_newc(guests.overlay_cpio(both, mods, guests.GuestDeadline(cap_s=200)))
    assert got["ovmfgen/ovmf-pvh-shell.elf"][1] == old.read_bytes()
    assert got["ovmfgen/ovmf-pvh-shell-202605.elf"][1] == new.read_bytes()
    assert b'kernel = "/ovmfgen/ovmf-pvh-shell-202605.elf"' in got["ovmfgen/ovmfgen-pvh-shell-202605.cfg"][1]
    assert b'bios_path_override = "/ovmfgen/ovmf-hvm-shell-202605.elf"' in got["ovmfgen/ovmfgen-hvm-shell-202605.cfg"][1]
    script = got["ovmfgen/test.sh"][1].decode()
    assert "run_guest ovmfgen-hvm-shell-202605 ovmfgen-hvm-shell-202605 'Shell>' shell\n" in script
    assert nested.guest_log_names(both[1]) == ("xen-pvh-shell-202605.log", "xen-pvh-shell-202605.console.log")
    assert nested.guest_log_names(both[0]) == ("xen-pvh-shell.log", "xen-pvh-shell.console.log")
    with pytest.raises(OvmfgenError, match="letters and digits"):
        guests.XenGuest("pvh", "shell", new, variant="edk2-stable202605")
    with pytest.raises(OvmfgenError, match="two guests of one run have the same name"):
        nested.boot_xen_guests([both[0], guests.XenGuest("pvh", "shell", new)], tmp_path / "out")


@pytest.mark.parametrize("args, message", [
    (["--on", "xen", "--xen", "4.18"], "error: unknown Xen version '4.18': expected 4.17 or 4.20"),
    (["--xen", "4.20"], "error: --xen chooses the Xen version: use it with --on xen"),
])
def test_invoke_boot_bad_xen_argument_is_one_line(args, message):
    """`invoke boot` itself: exit 1, the one line on stderr, no traceback (before any cache or image work)."""
    root = REPO
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.run([sys.executable, "-m", "invoke", "boot", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines() == [message], proc.stderr


def test_known_emulator_limit_needs_the_combination_the_qemu_and_its_message():
    from ovmfgen.boot.xen import limits
    abort = verdicts.XenBootResult(Verdict.HARNESS_FAILURE, "QEMU exited with status -6: QEMU 10.0.13 (Debian "
                                   "1:10.0.13+ds-0+deb13u1): ERROR:../accel/tcg/tcg-accel-ops.c:90:"
                                   "tcg_handle_interrupt: assertion failed: (bql_locked())")
    # Every combination CI runs passes today: no abort is excused, on any QEMU.
    assert limits.KNOWN_LIMITS == ()
    assert limits.known_limit("4.20", "pvh", "shell", "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)", abort) is None
    table = [limits.EmulatorLimit("4.20", "*", "*", "10.0", r"tcg_handle_interrupt: assertion failed", "e")]
    lim = limits.known_limit("4.20", "hvm", "os", "10.0.13 (Debian 1:10.0.13+ds-0+deb13u1)", abort, table)
    assert lim is table[0]
    assert lim.reason("10.0.13").startswith("known emulator limit (QEMU 10.0.13: tcg_handle_interrupt: assertion failed): ")
    # never for another combination, another QEMU, another message, or anything but a harness failure
    assert limits.known_limit("4.17", "hvm", "os", "10.0.13", abort, table) is None
    assert limits.known_limit("4.20", "hvm", "os", "7.2.22", abort, table) is None
    assert limits.known_limit("4.20", "hvm", "os", "11.1.0", abort, table) is None
    # a limit scoped to one guest kind does not cover another
    one = limits.EmulatorLimit("4.20", "hvm", "os", "10.0", "tcg_handle_interrupt", "e")
    assert limits.known_limit("4.20", "pvh", "os", "10.0.13", abort, [one]) is None
    assert limits.known_limit("4.20", "hvm", "os", "10.0.13", abort, [one]) is one
    other = verdicts.XenBootResult(Verdict.HARNESS_FAILURE, "QEMU exited with status 1: QEMU 10.0.13: out of memory")
    assert limits.known_limit("4.20", "hvm", "os", "10.0.13", other, table) is None
    for v in (Verdict.SHELL_REACHED, Verdict.TIMEOUT, Verdict.GUEST_CRASHED):
        assert limits.known_limit("4.20", "hvm", "os", "10.0.13",
                                  verdicts.XenBootResult(v, abort.detail), table) is None


@pytest.mark.parametrize("args, message", [
    (["--mode", "kvm"], "error: unknown Xen boot mode 'kvm': expected all, hvm, os, persist, pvh"),
    (["--disk", "missing.img"], "error: missing.img: no such disk image"),
    (["--disk", "notes.txt"], "error: notes.txt: not a disk image (no MBR/GPT boot signature 0x55AA at byte 510)"),
    (["--disk", "good.img", "--mode", "os"], "error: --disk boots your disk in --mode all, hvm, pvh, not 'os'"),
])
def test_invoke_boot_on_xen_bad_arguments_give_one_line(tmp_path, args, message):
    """Through the CLI, before any build lookup or Xen cache work: one line, exit 1, no traceback."""
    (tmp_path / "notes.txt").write_text("not a disk\n")
    (tmp_path / "good.img").write_bytes(b"\0" * 510 + b"\x55\xaa")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "ovmfgen", "boot", "--on", "xen", *args], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc
    assert proc.stderr.strip().splitlines()[-1] == message and "Traceback" not in proc.stderr
    assert set(os.listdir(tmp_path)) == {"notes.txt", "good.img"}  # nothing written


def test_nightly_guest_specs_name_the_guest_sets_payloads():
    assert guests.parse_guest_spec("hvm-os") == guests.GuestSpec("hvm", "os")
    assert guests.parse_guest_spec("pvh-os-4M") == guests.GuestSpec("pvh", "os", "4M")
    with pytest.raises(OvmfgenError, match="payloads: shell, os, ud2"):
        guests.parse_guest_spec("pvh-persist")


@pytest.mark.skipif(shutil.which("mcopy") is None or shutil.which("mkfs.fat") is None,
                    reason="mtools and dosfstools (invoke setup) not installed")
def test_with_disks_gives_each_payload_its_disk(tmp_path, monkeypatch):
    """os: the cached OS disk (here a stand-in: making the real one downloads Debian packages); persist: a
    fresh persistence disk per guest; shell and ud2: none; disk: the user's."""
    os_disk = tmp_path / "os.img"
    monkeypatch.setattr(nested, "prepare_os_disk", lambda: os_disk)
    image = tmp_path / "ovmf.elf"
    got = nested.with_disks([guests.XenGuest("pvh", "shell", image), guests.XenGuest("hvm", "os", image),
                             guests.XenGuest("pvh", "os", image, variant="4M"),
                             guests.XenGuest("pvh", "persist", image), guests.XenGuest("pvh", "persist", image,
                                                                                       variant="4M"),
                             guests.XenGuest("pvh", "ud2", image)], tmp_path / "out")
    assert [g.disk for g in got[:3]] == [None, os_disk, os_disk] and got[5].disk is None
    assert [g.disk.name for g in got[3:5]] == ["xen-pvh-persist-disk.img", "xen-pvh-persist-4M-disk.img"]
    assert all(g.disk.stat().st_size > 0 for g in got[3:5])
    assert [g.name for g in got] == [g.name for g in nested.with_disks(got, tmp_path / "out")]
    with pytest.raises(OvmfgenError, match="needs a disk image"):
        nested.with_disks([guests.XenGuest("pvh", "disk", image)], tmp_path / "out")
    assert nested.with_disks([guests.XenGuest("pvh", "disk", image)], tmp_path, disk=os_disk)[0].disk == os_disk


def test_each_xen_version_keeps_its_own_outputs_beside_the_firmware(tmp_path):
    """`invoke boot --on xen --xen 4.17` and `--xen 4.20` of one build at once write apart (they used to share
    xen-serial.log and xen-boot.json, and one run's log was renamed under the other)."""
    from ovmfgen.boot.xen.debian import XEN_RELEASES

    image = tmp_path / "dist" / "xen-pvh" / "DEBUG" / "ovmf.elf"
    dirs = {series: nested.xen_output_dir(image, release) for series, release in XEN_RELEASES.items()}
    assert dirs == {"4.17": image.parent / "xen-4.17", "4.20": image.parent / "xen-4.20"}

