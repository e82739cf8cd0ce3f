"""The boot stage without QEMU: the command line, and verdicts on real captured logs (tests/data/boot/)."""

from __future__ import annotations

import signal

import pytest

from helpers import DATA as DATA_ROOT
from helpers import boot_log
from ovmfgen.boot.verdict import BootResult, Verdict, classify_log, installed_ppis


DATA = DATA_ROOT / "boot"


ALL_MILESTONES = ("sec", "pei_core", "xen_platform_pei", "xen_not_detected")


# --- classify_log on real logs --------------------------------------------------------------------

def test_pvh_log_reaches_xen_platform_pei():
    r = classify_log(boot_log("pvh-reached.log"), "pvh")
    assert r.verdict is Verdict.REACHED_XEN_PLATFORM_PEI
    assert r.ok
    assert r.proven_entry == "pvh"
    assert r.milestones == ALL_MILESTONES
    assert r.decisive_line == "ERROR: Xen isn't detected"
    assert r.boot_fv == 0x2CC000  # SECFV at 1 MiB + 0x1CC000 in RAM
    assert "SeaBIOS pvh.bin" in r.detail


def test_reset_log_reaches_xen_platform_pei():
    r = classify_log(boot_log("reset-reached.log"), "reset")
    assert r.verdict is Verdict.REACHED_XEN_PLATFORM_PEI
    assert r.proven_entry == "reset"
    assert r.milestones == ALL_MILESTONES
    assert r.decisive_line == "ERROR: Xen isn't detected"
    assert r.boot_fv == 0xFFFCC000  # SECFV in flash just below 4 GiB
    assert "reset vector" in r.detail


def test_the_two_paths_are_told_apart():
    # The same firmware printing the same PEI lines: only SEC's boot FV (and SeaBIOS) tells them apart.
    pvh = classify_log(boot_log("pvh-reached.log"), "reset")
    assert pvh.verdict is Verdict.WRONG_ENTRY
    assert pvh.proven_entry == "pvh"
    assert pvh.decisive_line == "SecCoreStartupWithStack(0x2CC000, 0x820000)"
    reset = classify_log(boot_log("reset-reached.log"), "pvh")
    assert reset.verdict is Verdict.WRONG_ENTRY
    assert reset.proven_entry == "reset"
    assert reset.decisive_line == "SecCoreStartupWithStack(0xFFFCC000, 0x820000)"
    assert not pvh.ok and not reset.ok


def test_wrong_entry_is_known_from_the_sec_line_alone():
    first = boot_log("reset-reached.log").splitlines(keepends=True)[0]
    assert classify_log(first, "pvh").verdict is Verdict.WRONG_ENTRY
    assert classify_log(first, "reset").verdict is Verdict.STALLED


def test_firmware_assert_before_pei_core():
    r = classify_log(boot_log("reset-assert.log"), "reset")
    assert r.verdict is Verdict.FIRMWARE_ERROR
    assert r.decisive_line == "ASSERT PeCoffGetEntryPoint.c(158): Pe32Data != ((void *) 0)"
    assert r.milestones == ("sec",)
    assert "after sec" in r.detail


def test_assert_after_xen_not_detected_is_the_expected_end():
    # Both real logs go on with XenPlatformPei's ASSERT after the final line: still a success.
    text = boot_log("reset-reached.log")
    assert "ASSERT Platform.c" in text
    assert classify_log(text, "reset").ok


def test_triple_fault_after_seabios_is_a_stall_with_the_last_line():
    r = classify_log(boot_log("pvh-triple-fault.log"), "pvh", returncode=0)
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
    lines = boot_log(name).splitlines(keepends=True)
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
    text = boot_log("reset-reached.log").replace("XenPlatformPei.efi", "SomethingElse.efi")
    r = classify_log(text, "reset")
    assert r.verdict is Verdict.UNPROVEN
    assert "xen_platform_pei" in r.detail


def test_milestones_must_come_in_order():
    lines = boot_log("reset-reached.log").splitlines(keepends=True)
    final = next(i for i, line in enumerate(lines) if "Xen isn't detected" in line)
    reordered = [lines[0], lines[final], *lines[1:final]]
    r = classify_log("".join(reordered), "reset")
    assert r.verdict is Verdict.UNPROVEN


def test_crlf_and_lf_logs_classify_the_same():
    text = boot_log("reset-reached.log")
    assert "\r\n" in text
    assert classify_log(text.replace("\r\n", "\n"), "reset") == classify_log(text, "reset")


def test_summary_is_one_line():
    r = classify_log(boot_log("pvh-reached.log"), "pvh")
    line = r.summary()
    assert "\n" not in line
    assert line.startswith("pvh: REACHED_XEN_PLATFORM_PEI")


def test_boot_result_is_frozen():
    r = classify_log("", "pvh", timed_out=True)
    assert isinstance(r, BootResult)
    with pytest.raises(AttributeError):
        r.verdict = Verdict.REACHED_XEN_PLATFORM_PEI  # type: ignore[misc]


def test_a_boot_fv_other_than_the_images_is_unproven():
    """SEC must run from the booted image's own SECFV (derived from it), not merely from low RAM."""
    ok = classify_log(boot_log("pvh-reached.log"), "pvh", expected_fv=0x2CC000)
    assert ok.verdict is Verdict.REACHED_XEN_PLATFORM_PEI and "(the image's SECFV)" in ok.detail
    moved = classify_log(boot_log("pvh-reached.log"), "pvh", expected_fv=0x2DC000)  # 202605's layout
    assert moved.verdict is Verdict.UNPROVEN
    assert moved.detail == "SEC ran from a boot FV at 0x2cc000, but the image's SECFV is at 0x2dc000 on the pvh path"
    assert classify_log(boot_log("reset-reached.log"), "reset", expected_fv=0xFFFCC000).ok
    assert not classify_log(boot_log("reset-reached.log"), "reset", expected_fv=0xFFFDC000).ok


def test_sec_stack_is_read_from_the_sec_line():
    assert classify_log(boot_log("pvh-reached.log"), "pvh").sec_stack == 0x820000
    assert classify_log(boot_log("reset-reached.log"), "reset").sec_stack == 0x820000
    assert classify_log("", "pvh").sec_stack is None


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
    pvh, reset = installed_ppis(boot_log("pvh-reached.log")), installed_ppis(boot_log("reset-reached.log"))
    sec = ("DBE23AA9-A345-4B97-85B6-B226F1617389", "138F9CF4-F0E7-4721-8F49-F5FFECF42D40")
    i = reset.index(sec[0])
    assert reset[i:i + 2] == sec
    assert pvh[i:i + 2] == ("00000000-0000-0000-0000-000000000000",) * 2
    assert pvh[:i] == reset[:i]
