"""The boot stage without QEMU: the command line, and verdicts on real captured logs (tests/data/boot/)."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from helpers import DATA as DATA_ROOT
from ovmfgen.boot import command as boot_command
from ovmfgen.boot import shell as boot_shell
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen.boot.command import BootError
from ovmfgen.boot.qemu import qemu_argv
from ovmfgen.boot.verdict import BootResult, Verdict, classify_log, installed_ppis
from ovmfgen.errors import OvmfgenError
from ovmfgen.paths import Layout

DATA = DATA_ROOT / "boot"
ALL_MILESTONES = ("sec", "pei_core", "xen_platform_pei", "xen_not_detected")


def log(name: str) -> str:
    return (DATA / name).read_bytes().decode("utf-8")


# --- qemu_argv ------------------------------------------------------------------------------------

def _value(argv: list[str], option: str) -> str:
    return argv[argv.index(option) + 1]


def test_qemu_argv_pvh_loads_the_elf_as_a_kernel():
    argv = qemu_argv(Path("/d/ovmf.elf"), "pvh", Path("/d/boot-pvh.log"))
    assert argv[0] == "qemu-system-x86_64"
    assert _value(argv, "-kernel") == "/d/ovmf.elf"
    assert "-bios" not in argv
    assert _value(argv, "-accel") == "tcg"
    assert _value(argv, "-m") == "512"
    assert _value(argv, "-debugcon") == "file:/d/boot-pvh.log"
    assert _value(argv, "-global") == "isa-debugcon.iobase=0x402"
    assert _value(argv, "-display") == "none"
    assert _value(argv, "-net") == "none"
    assert "-no-reboot" in argv


def test_qemu_argv_reset_maps_the_same_image_as_bios():
    argv = qemu_argv(Path("/d/ovmf.elf"), "reset", Path("/d/boot-reset.log"), memory_mb=256)
    assert _value(argv, "-bios") == "/d/ovmf.elf"
    assert "-kernel" not in argv
    assert _value(argv, "-m") == "256"
    pvh = qemu_argv(Path("/d/ovmf.elf"), "pvh", Path("/d/boot-reset.log"), memory_mb=256)
    # Only the way the image is handed to QEMU differs between the two entries.
    assert [a for a in argv if a != "-bios"] == [a for a in pvh if a != "-kernel"]


def test_qemu_argv_never_uses_kvm():
    argv = qemu_argv(Path("x.elf"), "pvh", Path("x.log"))
    assert "-enable-kvm" not in argv
    assert not any("kvm" in a for a in argv)


def test_qemu_argv_escapes_commas_in_the_log_path():
    argv = qemu_argv(Path("x.elf"), "pvh", Path("/a,b/boot.log"))
    assert _value(argv, "-debugcon") == "file:/a,,b/boot.log"


def test_qemu_argv_rejects_unknown_entry():
    with pytest.raises(OvmfgenError, match="unknown boot entry 'hvm'"):
        qemu_argv(Path("x.elf"), "hvm", Path("x.log"))


# --- classify_log on real logs --------------------------------------------------------------------

def test_pvh_log_reaches_xen_platform_pei():
    r = classify_log(log("pvh-reached.log"), "pvh")
    assert r.verdict is Verdict.REACHED_XEN_PLATFORM_PEI
    assert r.ok
    assert r.proven_entry == "pvh"
    assert r.milestones == ALL_MILESTONES
    assert r.decisive_line == "ERROR: Xen isn't detected"
    assert r.boot_fv == 0x2CC000  # SECFV at 1 MiB + 0x1CC000 in RAM
    assert "SeaBIOS pvh.bin" in r.detail


def test_reset_log_reaches_xen_platform_pei():
    r = classify_log(log("reset-reached.log"), "reset")
    assert r.verdict is Verdict.REACHED_XEN_PLATFORM_PEI
    assert r.proven_entry == "reset"
    assert r.milestones == ALL_MILESTONES
    assert r.decisive_line == "ERROR: Xen isn't detected"
    assert r.boot_fv == 0xFFFCC000  # SECFV in flash just below 4 GiB
    assert "reset vector" in r.detail


def test_the_two_paths_are_told_apart():
    # The same firmware printing the same PEI lines: only SEC's boot FV (and SeaBIOS) tells them apart.
    pvh = classify_log(log("pvh-reached.log"), "reset")
    assert pvh.verdict is Verdict.WRONG_ENTRY
    assert pvh.proven_entry == "pvh"
    assert pvh.decisive_line == "SecCoreStartupWithStack(0x2CC000, 0x820000)"
    reset = classify_log(log("reset-reached.log"), "pvh")
    assert reset.verdict is Verdict.WRONG_ENTRY
    assert reset.proven_entry == "reset"
    assert reset.decisive_line == "SecCoreStartupWithStack(0xFFFCC000, 0x820000)"
    assert not pvh.ok and not reset.ok


def test_wrong_entry_is_known_from_the_sec_line_alone():
    first = log("reset-reached.log").splitlines(keepends=True)[0]
    assert classify_log(first, "pvh").verdict is Verdict.WRONG_ENTRY
    assert classify_log(first, "reset").verdict is Verdict.STALLED


def test_firmware_assert_before_pei_core():
    r = classify_log(log("reset-assert.log"), "reset")
    assert r.verdict is Verdict.FIRMWARE_ERROR
    assert r.decisive_line == "ASSERT PeCoffGetEntryPoint.c(158): Pe32Data != ((void *) 0)"
    assert r.milestones == ("sec",)
    assert "after sec" in r.detail


def test_assert_after_xen_not_detected_is_the_expected_end():
    # Both real logs go on with XenPlatformPei's ASSERT after the final line: still a success.
    text = log("reset-reached.log")
    assert "ASSERT Platform.c" in text
    assert classify_log(text, "reset").ok


def test_triple_fault_after_seabios_is_a_stall_with_the_last_line():
    r = classify_log(log("pvh-triple-fault.log"), "pvh", returncode=0)
    assert r.verdict is Verdict.STALLED
    assert r.decisive_line == "Booting from ca00:003c"
    assert r.milestones == ()
    assert r.proven_entry is None
    assert "triple-fault" in r.detail and "SeaBIOS handed over" in r.detail


def test_qemu_sigfpe_on_p_align_zero():
    # Captured: QEMU 7.2 -kernel with upstream's p_align 0 dies of SIGFPE before the guest runs.
    r = classify_log("", "pvh", returncode=-signal.SIGFPE)
    assert r.verdict is Verdict.QEMU_FAILED
    assert r.decisive_line == "QEMU died of SIGFPE"
    assert "p_align" in r.detail
    assert r.returncode == -8


def test_qemu_error_message_is_the_decisive_line():
    out = (DATA / "pvh-no-note.qemu.txt").read_text()
    r = classify_log("", "pvh", returncode=1, qemu_output=out)
    assert r.verdict is Verdict.QEMU_FAILED
    assert r.decisive_line == "qemu-system-x86_64: Error loading uncompressed kernel without PVH ELF Note"
    assert r.detail == "QEMU exited with status 1"


def test_bios_load_failure_gets_a_hint():
    r = classify_log("", "reset", returncode=1, qemu_output="qemu: could not load PC BIOS 'x.elf'\n")
    assert r.verdict is Verdict.QEMU_FAILED
    assert "multiple of 64 KiB" in r.detail


def _truncated(name: str, through: str) -> str:
    lines = log(name).splitlines(keepends=True)
    end = next(i for i, line in enumerate(lines) if through in line)
    return "".join(lines[: end + 1])


def test_stall_after_xen_platform_pei_loaded():
    text = _truncated("reset-reached.log", "Platform PEIM Loaded")
    r = classify_log(text, "reset", stalled_for=30)
    assert r.verdict is Verdict.STALLED
    assert r.decisive_line == "Platform PEIM Loaded"
    assert r.milestones == ("sec", "pei_core", "xen_platform_pei")
    assert "no output for 30 s" in r.detail


def test_timeout_while_still_printing():
    text = _truncated("pvh-reached.log", "PcdPeim.efi")
    r = classify_log(text, "pvh", timed_out=True)
    assert r.verdict is Verdict.TIMEOUT
    assert r.decisive_line.endswith("PcdPeim.efi")
    assert r.milestones == ("sec", "pei_core")


def test_timeout_with_no_output():
    r = classify_log("", "reset", timed_out=True)
    assert r.verdict is Verdict.TIMEOUT
    assert r.decisive_line == ""
    assert "no debug output" in r.detail


def test_final_line_without_the_chain_is_unproven():
    text = log("reset-reached.log").replace("XenPlatformPei.efi", "SomethingElse.efi")
    r = classify_log(text, "reset")
    assert r.verdict is Verdict.UNPROVEN
    assert "xen_platform_pei" in r.detail


def test_milestones_must_come_in_order():
    lines = log("reset-reached.log").splitlines(keepends=True)
    final = next(i for i, line in enumerate(lines) if "Xen isn't detected" in line)
    reordered = [lines[0], lines[final], *lines[1:final]]
    r = classify_log("".join(reordered), "reset")
    assert r.verdict is Verdict.UNPROVEN


def test_crlf_and_lf_logs_classify_the_same():
    text = log("reset-reached.log")
    assert "\r\n" in text
    assert classify_log(text.replace("\r\n", "\n"), "reset") == classify_log(text, "reset")


def test_summary_is_one_line():
    r = classify_log(log("pvh-reached.log"), "pvh")
    line = r.summary()
    assert "\n" not in line
    assert line.startswith("pvh: REACHED_XEN_PLATFORM_PEI")


# --- boot_command's checks that need no QEMU -------------------------------------------------------

def test_boot_command_without_published_image(tmp_path, real_cache):
    layout = Layout(dist_root=tmp_path)
    with pytest.raises(OvmfgenError, match=r"no published firmware at .*xen-pvh/DEBUG/ovmf.elf.*invoke build"):
        boot_command.boot_command(layout=layout)
    with pytest.raises(OvmfgenError, match=r"xen-pvh/DEBUG-4M-hvcon/ovmf.elf: run `invoke build --platform xen-pvh "
                                           r"--target DEBUG --fd-size 4M --feature debug_output=hypervisor-console`"):
        boot_command.boot_command(fd_size="4M", features=["debug_output=hypervisor-console"], layout=layout)


def test_boot_finds_the_variant_build_through_the_layout(tmp_path, real_cache):
    """--fd-size/--feature/--target name the same dist directory the build published to."""
    layout = Layout(dist_root=tmp_path)
    for kw, rel in [({}, "DEBUG"), ({"fd_size": "4M"}, "DEBUG-4M"), ({"target": "RELEASE"}, "RELEASE"),
                    ({"features": ["debug_output=hypervisor-console"]}, "DEBUG-hvcon"),
                    ({"fd_size": "2M"}, "DEBUG")]:  # the platform's default size: no suffix
        elf = tmp_path / "xen-pvh" / rel / "ovmf.elf"
        elf.parent.mkdir(parents=True, exist_ok=True)
        elf.write_bytes(b"ELF")
        assert resolve(make_request("xen-pvh", **kw), layout).published() == elf


def test_boot_command_rejects_release_and_bad_options(tmp_path):
    with pytest.raises(OvmfgenError, match="RELEASE build prints no DEBUG log"):
        boot_command.boot_command(target="RELEASE")
    with pytest.raises(OvmfgenError, match="unknown boot entry 'hvm'"):
        boot_command.boot_command(entry="hvm")
    with pytest.raises(OvmfgenError, match="unknown boot host 'kvm'"):
        boot_command.boot_command(on="kvm")


def test_boot_error_carries_the_tail():
    err = BootError("boot failed: pvh STALLED", "--- last lines ---\nBooting from ca00:003c")
    assert str(err) == "error: boot failed: pvh STALLED"
    assert err.tail().endswith("Booting from ca00:003c")
    assert isinstance(err, OvmfgenError)


def test_boot_result_is_frozen():
    r = classify_log("", "pvh", timed_out=True)
    assert isinstance(r, BootResult)
    with pytest.raises(AttributeError):
        r.verdict = Verdict.REACHED_XEN_PLATFORM_PEI  # type: ignore[misc]


# --- QEMU shell boot helpers ---------------------------------------------------------------------

def test_startup_script_never_contains_the_marker_itself():
    script = boot_shell.startup_script()
    assert boot_shell.SHELL_MARKER not in script
    assert script.startswith("@echo -off") and "reset -s" in script


def test_shell_boot_classification():
    ok = f"\x1b[0mPress ESC in 1 seconds\r\n\x1b[1m{boot_shell.SHELL_MARKER}\x1b[0m\r\nReset with"
    assert boot_shell.classify_shell_boot(ok, "")[0] == "SHELL_REACHED"
    echoed = f"Shell> echo {boot_shell.SHELL_MARKER}\r\n"  # a command line mentioning it is not the output
    assert boot_shell.classify_shell_boot(echoed, "", timed_out=True)[0] == "TIMEOUT"
    assert boot_shell.classify_shell_boot("", "ASSERT [DxeCore] x.c(1): y\n")[0] == "FIRMWARE_ERROR"
    verdict, detail = boot_shell.classify_shell_boot("UEFI Interactive Shell v2.2", "", returncode=0)
    assert verdict == "QEMU_FAILED" and "the Shell started" in detail


def test_shell_boot_names_the_boot_option_that_started_the_shell():
    serial = ('BdsDxe: loading Boot0002 "UEFI Non-Block Boot Device" from PciRoot(0x0)/Pci(0x3,0x0)\r\n'
              'BdsDxe: starting Boot0002 "UEFI Non-Block Boot Device" from PciRoot(0x0)/Pci(0x3,0x0)\r\n'
              f"UEFI Interactive Shell v2.2\r\n{boot_shell.SHELL_MARKER}\r\n")
    verdict, detail = boot_shell.classify_shell_boot(serial, "")
    assert verdict == "SHELL_REACHED" and detail.endswith('(started by Boot0002 "UEFI Non-Block Boot Device")')
    assert "started by" not in boot_shell.classify_shell_boot(f"{boot_shell.SHELL_MARKER}\r\n", "")[1]


def test_shell_qemu_argv_uses_pflash_a_fat_disk_and_tcg():
    argv = boot_shell.shell_qemu_argv(Path("/f/CODE.fd"), Path("/f/VARS.fd"), Path("/f/disk.img"), Path("/f/s.log"),
                                Path("/f/d,1.log"))
    text = " ".join(argv)
    assert "-accel tcg" in text and "kvm" not in text
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/f/CODE.fd" in argv
    assert "if=pflash,format=raw,unit=1,file=/f/VARS.fd" in argv
    assert "if=virtio,format=raw,file=/f/disk.img" in argv
    assert "file:/f/s.log" in argv and "file:/f/d,,1.log" in argv


@pytest.mark.skipif(shutil.which("mkfs.fat") is None or shutil.which("mcopy") is None,
                    reason="dosfstools/mtools not installed (invoke setup installs them)")
def test_fat_image_holds_the_startup_script(tmp_path: Path):
    img = boot_shell.make_fat_image(tmp_path / "disk.img", {"startup.nsh": boot_shell.startup_script().encode()})
    assert img.stat().st_size == boot_shell.FAT_IMAGE_KIB * 1024
    from ovmfgen.run import run

    out = run(["mtype", "-i", str(img), "::/startup.nsh"], env={"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"})
    assert out.stdout.replace("\r", "") == boot_shell.startup_script().replace("\r", "")


@pytest.mark.skipif(shutil.which("mkfs.fat") is None or shutil.which("mmd") is None,
                    reason="dosfstools/mtools not installed (invoke setup installs them)")
def test_fat_image_makes_the_folders_of_the_default_boot_path(tmp_path: Path):
    img = boot_shell.make_fat_image(tmp_path / "disk.img", {"startup.nsh": b"x", boot_shell.DEFAULT_BOOT_PATH: b"MZ"})
    from ovmfgen.run import run

    env = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}
    assert run(["mtype", "-i", str(img), "::/EFI/BOOT/BOOTX64.EFI"], env=env).stdout == "MZ"
    assert run(["mtype", "-i", str(img), "::/startup.nsh"], env=env).stdout == "x"


def test_a_boot_fv_other_than_the_images_is_unproven():
    """SEC must run from the booted image's own SECFV (derived from it), not merely from low RAM."""
    ok = classify_log(log("pvh-reached.log"), "pvh", expected_fv=0x2CC000)
    assert ok.verdict is Verdict.REACHED_XEN_PLATFORM_PEI and "(the image's SECFV)" in ok.detail
    moved = classify_log(log("pvh-reached.log"), "pvh", expected_fv=0x2DC000)  # 202605's layout
    assert moved.verdict is Verdict.UNPROVEN
    assert moved.detail == "SEC ran from a boot FV at 0x2cc000, but the image's SECFV is at 0x2dc000 on the pvh path"
    assert classify_log(log("reset-reached.log"), "reset", expected_fv=0xFFFCC000).ok
    assert not classify_log(log("reset-reached.log"), "reset", expected_fv=0xFFFDC000).ok


def test_sec_stack_is_read_from_the_sec_line():
    assert classify_log(log("pvh-reached.log"), "pvh").sec_stack == 0x820000
    assert classify_log(log("reset-reached.log"), "reset").sec_stack == 0x820000
    assert classify_log("", "pvh").sec_stack is None


def test_boot_command_wants_the_same_sec_stack_on_both_entries(tmp_path: Path, monkeypatch):
    from dataclasses import replace

    image = tmp_path / "ovmf.elf"
    image.write_bytes(b"x")
    logs = {"pvh": classify_log(log("pvh-reached.log"), "pvh"), "reset": classify_log(log("reset-reached.log"), "reset")}
    monkeypatch.setattr(boot_command, "boot_qemu", lambda path, entry, out_dir: logs[entry])
    assert [r.entry for r in boot_command.boot_command(image=image)] == ["pvh", "reset"]
    logs["reset"] = replace(logs["reset"], sec_stack=0x830000)
    with pytest.raises(OvmfgenError, match=r"SEC's stack differs between the entries \(pvh 0x820000, reset 0x830000\)"):
        boot_command.boot_command(image=image)


def test_installed_ppis_reads_the_pei_core_lines_in_order():
    log = ("SecCoreStartupWithStack(0xFFFCC000, 0x820000)\r\n"
           "Install PPI: dbe23aa9-a345-4b97-85b6-b226f1617389\r\n"
           "Install PPI: 00000000-0000-0000-0000-000000000000\n"
           "Install PPIs: not one\n"
           "  Install PPI: 138F9CF4-F0E7-4721-8F49-F5FFECF42D40 (indented: not PeiCore's line)\n")
    assert installed_ppis(log) == ("DBE23AA9-A345-4B97-85B6-B226F1617389", "00000000-0000-0000-0000-000000000000")
    assert installed_ppis("") == ()


def test_upstream_sec_hands_pei_zero_guids_through_the_pvh_entry():
    # The captured logs are upstream OvmfXen (no override): what overrides/xen-pvh/.../SecMain.c fixes.
    pvh, reset = installed_ppis(log("pvh-reached.log")), installed_ppis(log("reset-reached.log"))
    sec = ("DBE23AA9-A345-4B97-85B6-B226F1617389", "138F9CF4-F0E7-4721-8F49-F5FFECF42D40")
    i = reset.index(sec[0])
    assert reset[i:i + 2] == sec
    assert pvh[i:i + 2] == ("00000000-0000-0000-0000-000000000000",) * 2
    assert pvh[:i] == reset[:i]
