"""Judging a boot from its DEBUG log: the milestones, the entry SEC ran from, the ``Verdict``.

One OVMF image starts from two places:

* ``pvh``: loaded at 1 MiB as a PVH ELF, entered at XEN_ELFNOTE_PHYS32_ENTRY (xl ``type='pvh'``).
  QEMU does the same with ``-kernel X.elf``: SeaBIOS's ``pvh.bin`` option ROM jumps to the entry.
* ``reset``: mapped just below 4 GiB and started at the reset vector 0xFFFFFFF0, as hvmloader hands
  over to it in HVM guests. QEMU does the same with ``-bios X.elf``.

Without Xen both paths must get as far as XenPlatformPei, which stops with
"ERROR: Xen isn't detected". The two paths are told apart by SEC's first line,
``SecCoreStartupWithStack(BootFv, TopOfStack)``: its first argument is the address of the boot
firmware volume (SECFV) SEC is running from. From flash under 4 GiB it is 0xFFFxxxxx; from the ELF
loaded at 1 MiB it is a low RAM address. The exact address on each path is derived from the booted
image (``elf.boot_fv_address``): edk2-stable202502's 2 MiB layout has SECFV at 0x1CC000 (0x2CC000 in
RAM), edk2-stable202605's at 0x1DC000. In QEMU the PVH path is also
preceded by SeaBIOS's own debug lines ("Booting from ROM..."), which the reset path never prints.
"""

from __future__ import annotations

import enum
import re
import signal
from dataclasses import dataclass
from pathlib import Path

from ovmfgen.errors import OvmfgenError, display_path

ENTRIES = ("pvh", "reset")
# Flash is mapped in the last 16 MiB below 4 GiB; a boot FV there means SEC runs from the reset
# vector's mapping, anywhere lower means it runs from RAM where the PVH loader put the ELF.
FLASH_WINDOW_BASE = 0xFF000000

TAIL_LINES = 25


class Verdict(str, enum.Enum):
    """What a boot proved: the one vocabulary of every boot ovmfgen judges (QEMU's logs, the UEFI Shell
    in QEMU, guests under real Xen), as records, reports and messages spell it."""

    # Boots in QEMU through an entry (classify_log).
    REACHED_XEN_PLATFORM_PEI = "REACHED_XEN_PLATFORM_PEI"  # the whole chain, through the requested entry
    WRONG_ENTRY = "WRONG_ENTRY"  # SEC ran, but from the other entry point
    UNPROVEN = "UNPROVEN"  # "Xen isn't detected" printed, but the chain of milestones is incomplete
    STALLED = "STALLED"  # the log stopped (hang, or the guest reset/triple-faulted) before the end
    # Any boot.
    FIRMWARE_ERROR = "FIRMWARE_ERROR"  # an ASSERT or CPU exception (in QEMU: before XenPlatformPei finished)
    QEMU_FAILED = "QEMU_FAILED"  # QEMU exited non-zero or died of a signal (e.g. SIGFPE on p_align 0)
    TIMEOUT = "TIMEOUT"  # still running (printing) when the time ran out, without the expected end
    # Boots that go on past PEI: to the UEFI Shell (in QEMU or under Xen) and to an OS.
    SHELL_REACHED = "SHELL_REACHED"    # the UEFI Shell ran (its prompt, or startup.nsh's marker)
    OS_REACHED = "OS_REACHED"          # an OS booted from the guest's disk ran (the marker, or Linux's banner)
    # Guests under real Xen (boot/xen/verdicts.py).
    FW_ASSERT = "FW_ASSERT"            # the firmware hit an ASSERT (detail: the ASSERT line)
    GUEST_CRASHED = "GUEST_CRASHED"    # Xen saw the guest crash (triple fault, domain_crash, state c)
    GUEST_GONE = "GUEST_GONE"          # the domain vanished (or was never created) without a shell
    HARNESS_FAILURE = "HARNESS_FAILURE"  # QEMU (abort, stall)/Xen/dom0 failed: says nothing about the firmware
    # Secure Boot: the firmware (or shim, or GRUB through shim) would not start an image. Never a pass:
    # the verdict a Secure Boot firmware must give an unsigned image (detail: the refusal line).
    SECURE_BOOT_REFUSED = "SECURE_BOOT_REFUSED"

    def __str__(self) -> str:
        return self.value


# The milestones, in the order the firmware must print them.
MILESTONES: tuple[tuple[str, re.Pattern[str]], ...] = (
    # SEC: OvmfPkg/Sec/SecMain.c prints the boot FV and the top of the temporary stack.
    ("sec", re.compile(r"SecCoreStartupWithStack\(0x(?P<fv>[0-9A-Fa-f]+), 0x(?P<stack>[0-9A-Fa-f]+)\)")),
    # PEI core: PeiMain's FV discovery/dispatcher.
    ("pei_core", re.compile(r"The \d+th FV start address is|DiscoverPeimsAndOrderWithApriori\(\)")),
    # PEI core loads XenPlatformPei (DEBUG builds name the image).
    ("xen_platform_pei", re.compile(r"Loading PEIM at 0x[0-9A-Fa-f]+ EntryPoint=0x[0-9A-Fa-f]+ XenPlatformPei\.efi")),
    # XenPlatformPei's XenDetect() fails: the expected end without Xen.
    ("xen_not_detected", re.compile(r"ERROR: Xen isn't detected")),
)

# Firmware failure lines (DebugLib ASSERT, CpuExceptionHandlerLib dump).
FAILURE_LINE = re.compile(r"^ASSERT[ _]|^!!!! (X64|IA32) Exception Type|ASSERT_EFI_ERROR")
# SeaBIOS handing over to an option ROM: only the QEMU PVH path (pvh.bin) goes through SeaBIOS.
_SEABIOS = re.compile(r"^SeaBIOS \(version|^Booting from ROM")


# The PEI core logs each PPI it installs ("Install PPI: <guid>", PeiCore's InternalPeiInstallPpi),
# the list SEC hands to its entry point among them.
_INSTALL_PPI = re.compile(r"^Install PPI: ([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\s*$",
                          re.MULTILINE)


def installed_ppis(log_text: str) -> tuple[str, ...]:
    """The GUIDs (upper case) of the PPIs a DEBUG log says the PEI core installed, in order."""
    return tuple(m.group(1).upper() for m in _INSTALL_PPI.finditer(log_text))


@dataclass(frozen=True)
class BootResult:
    """The verdict on one boot attempt, with the evidence for it."""

    entry: str  # the entry point asked for: "pvh" or "reset"
    verdict: Verdict
    proven_entry: str | None  # the entry point the log proves SEC ran from (None: no SEC line)
    milestones: tuple[str, ...]  # milestones reached, in order
    decisive_line: str  # the log line (or QEMU message) the verdict rests on
    detail: str = ""
    boot_fv: int | None = None  # SECFV address from SEC's first line
    sec_stack: int | None = None  # the top of SEC's temporary stack from that line (the same on both entries)
    returncode: int | None = None  # QEMU's exit status when it exited on its own
    duration: float | None = None  # seconds from starting QEMU to the verdict
    log_path: Path | None = None
    log_tail: str = ""
    qemu_output: str = ""

    @property
    def ok(self) -> bool:
        """True when the firmware reached XenPlatformPei through the requested entry point."""
        return self.verdict is Verdict.REACHED_XEN_PLATFORM_PEI

    def summary(self) -> str:
        """One line for people: entry, verdict, time, evidence."""
        took = f" in {self.duration:.1f} s" if self.duration is not None else ""
        parts = [f"{self.entry}: {self.verdict.value}{took}"]
        if self.proven_entry and self.proven_entry != self.entry:
            parts.append(f"(SEC ran from the {self.proven_entry} entry)")
        if self.detail:
            parts.append(f"- {self.detail}")
        if self.decisive_line and self.decisive_line not in self.detail:
            parts.append(f"[{self.decisive_line}]")
        if self.log_path is not None:
            parts.append(f"({display_path(self.log_path)})")
        return " ".join(parts)


def check_entry(entry: str) -> None:
    """Refuse an entry other than ``pvh`` or ``reset`` (one clear line)."""
    if entry not in ENTRIES:
        raise OvmfgenError(f"unknown boot entry {entry!r}: expected one of {', '.join(ENTRIES)}")


def log_lines(text: str) -> list[str]:
    """The non-blank lines of a log (CRLF or LF), without trailing CRs."""
    return [line.rstrip("\r") for line in text.replace("\r\n", "\n").split("\n") if line.strip("\r ")]


def tail_text(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` non-blank lines of ``text``."""
    return "\n".join(log_lines(text)[-lines:])


def describe_exit(returncode: int) -> str:
    """QEMU's exit status in words (a negative one names the signal)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"QEMU died of {name}"
    return f"QEMU exited with status {returncode}"


def classify_log(
    text: str,
    entry: str,
    *,
    returncode: int | None = None,
    qemu_output: str = "",
    timed_out: bool = False,
    stalled_for: float | None = None,
    expected_fv: int | None = None,
) -> BootResult:
    """Judge a firmware DEBUG log of a boot through ``entry``.

    Pure: the log is all it reads. ``returncode`` is QEMU's exit status when QEMU ended on its own
    (None while it runs or when the caller stopped it), ``qemu_output`` its own stdout/stderr,
    ``timed_out`` whether the caller's time ran out, ``stalled_for`` how long the log had been
    silent when the caller gave up on it.

    The verdict is REACHED_XEN_PLATFORM_PEI only when SEC -> PEI core -> XenPlatformPei loaded ->
    "Xen isn't detected" appear in that order and SEC's boot FV address proves the requested entry:
    it is ``expected_fv`` when given (``elf.boot_fv_address`` of the booted image: each release puts
    SECFV elsewhere), else at least on the right side of the flash window.
    """
    check_entry(entry)
    lines = log_lines(text)

    # Milestones in order: each is searched for after the previous one.
    reached: list[str] = []
    pos = 0
    for name, pattern in MILESTONES:
        for i in range(pos, len(lines)):
            if pattern.search(lines[i]):
                reached.append(name)
                pos = i + 1
                break
    # The final line is also looked for anywhere, so a broken chain is reported as such.
    final_at = next((i for i, l in enumerate(lines) if MILESTONES[-1][1].search(l)), None)

    sec_at = next((i for i, l in enumerate(lines) if MILESTONES[0][1].search(l)), None)
    boot_fv: int | None = None
    sec_stack: int | None = None
    proven: str | None = None
    sec_line = ""
    if sec_at is not None:
        sec_line = lines[sec_at]
        m = MILESTONES[0][1].search(sec_line)
        assert m is not None
        boot_fv = int(m.group("fv"), 16)
        sec_stack = int(m.group("stack"), 16)
        proven = "reset" if boot_fv >= FLASH_WINDOW_BASE else "pvh"
    seabios = any(_SEABIOS.search(l) for l in lines[: sec_at if sec_at is not None else len(lines)])

    last = lines[-1] if lines else ""
    tail = tail_text(text)
    base = dict(entry=entry, proven_entry=proven, milestones=tuple(reached), boot_fv=boot_fv, sec_stack=sec_stack,
                returncode=returncode, log_tail=tail, qemu_output=qemu_output)

    def result(verdict: Verdict, line: str, detail: str) -> BootResult:
        return BootResult(verdict=verdict, decisive_line=line, detail=detail, **base)  # type: ignore[arg-type]

    fv_text = f"boot FV at {boot_fv:#x}" if boot_fv is not None else ""
    if proven is not None and proven != entry:
        how = ("from flash below 4 GiB (reset vector)" if proven == "reset"
               else "from RAM where the PVH loader put the ELF")
        return result(Verdict.WRONG_ENTRY, sec_line, f"asked for {entry}, but SEC ran {how}: {fv_text}")

    if proven is not None and expected_fv is not None and boot_fv != expected_fv:
        return result(Verdict.UNPROVEN, sec_line, f"SEC ran from a boot FV at {boot_fv:#x}, but the image's "
                                                  f"SECFV is at {expected_fv:#x} on the {entry} path")

    if final_at is not None:
        if len(reached) == len(MILESTONES):
            via = ("PVH entry" + (" via SeaBIOS pvh.bin" if seabios else "")) if proven == "pvh" \
                else "reset vector"
            same = " (the image's SECFV)" if expected_fv is not None else ""
            return result(Verdict.REACHED_XEN_PLATFORM_PEI, lines[final_at], f"{via}, {fv_text}{same}")
        missing = [name for name, _ in MILESTONES if name not in reached]
        return result(Verdict.UNPROVEN, lines[final_at],
                      f"milestone(s) missing or out of order before it: {', '.join(missing)}")

    if returncode is not None and returncode != 0:
        message = next((l for l in reversed(log_lines(qemu_output)) if l.strip()), "")
        detail = describe_exit(returncode)
        if returncode == -signal.SIGFPE and entry == "pvh":
            detail += (" while loading the ELF: QEMU (7.2 at least) divides by a PT_NOTE's p_align, "
                       "so p_align 0 crashes it (run `invoke check-elf`)")
        elif "could not load PC BIOS" in message:
            detail += " (-bios needs a readable image whose size is a multiple of 64 KiB)"
        return result(Verdict.QEMU_FAILED, message or describe_exit(returncode), detail)

    failure = next((l for l in lines if FAILURE_LINE.search(l)), None)
    if failure is not None:
        where_txt = f"after {reached[-1]}" if reached else "before SEC"
        return result(Verdict.FIRMWARE_ERROR, failure, f"firmware stopped {where_txt}")

    stage = f"last milestone: {reached[-1]}" if reached else (
        "no SEC line" + (" (SeaBIOS handed over, the firmware printed nothing)" if seabios else ""))
    if timed_out:
        return result(Verdict.TIMEOUT, last, f"still running at the time limit; {stage}"
                      if lines else "no debug output at all before the time limit")
    if returncode == 0:
        why = "QEMU exited (guest shut down or triple-faulted; -no-reboot)"
    elif stalled_for is not None:
        why = f"no output for {stalled_for:.0f} s"
    else:
        why = "the log ends here"
    return result(Verdict.STALLED, last, f"{why}; {stage}" if lines else f"{why}; the log is empty")
