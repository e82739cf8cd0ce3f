"""Boot the published firmware in QEMU through both of its entry points and judge the debug log.

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

KVM is not usable on the machines this runs on (and must never be required): QEMU always runs
with TCG, which reaches XenPlatformPei in about a second.
"""

from __future__ import annotations

import enum
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ovmfgen.edk2.releases import path_part
from ovmfgen.elf import boot_fv_address, fv_header_ok
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.paths import DIST_DIR
from ovmfgen.run import DEVNULL, STDOUT, popen, stop
from ovmfgen.ui import say

if TYPE_CHECKING:
    from ovmfgen.boot.xen import XenBootResult

ENTRIES = ("pvh", "reset")
QEMU = "qemu-system-x86_64"
# OvmfXen's PlatformDebugLibIoPort writes the DEBUG log to this I/O port (QEMU's isa-debugcon).
DEBUG_PORT = 0x402
# Flash is mapped in the last 16 MiB below 4 GiB; a boot FV there means SEC runs from the reset
# vector's mapping, anywhere lower means it runs from RAM where the PVH loader put the ELF.
FLASH_WINDOW_BASE = 0xFF000000

TAIL_LINES = 25
# Stop waiting when the log has not grown for this long (the firmware hangs without a message).
STALL_SECONDS = 30.0
# After a firmware ASSERT/exception, let the rest of the dump arrive (it is short) before stopping.
FAILURE_GRACE_SECONDS = 0.5
POLL_SECONDS = 0.05


class Verdict(str, enum.Enum):
    """What a boot attempt proved."""

    REACHED_XEN_PLATFORM_PEI = "REACHED_XEN_PLATFORM_PEI"  # the whole chain, through the requested entry
    WRONG_ENTRY = "WRONG_ENTRY"  # SEC ran, but from the other entry point
    UNPROVEN = "UNPROVEN"  # "Xen isn't detected" printed, but the chain of milestones is incomplete
    FIRMWARE_ERROR = "FIRMWARE_ERROR"  # an ASSERT or CPU exception before XenPlatformPei finished
    STALLED = "STALLED"  # the log stopped (hang, or the guest reset/triple-faulted) before the end
    QEMU_FAILED = "QEMU_FAILED"  # QEMU exited non-zero or died of a signal (e.g. SIGFPE on p_align 0)
    TIMEOUT = "TIMEOUT"  # still printing when the time ran out


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
FINAL_MILESTONE = MILESTONES[-1][0]

# Firmware failure lines (DebugLib ASSERT, CpuExceptionHandlerLib dump).
_FAILURE = re.compile(r"^ASSERT[ _]|^!!!! (X64|IA32) Exception Type|ASSERT_EFI_ERROR")
# SeaBIOS handing over to an option ROM: only the QEMU PVH path (pvh.bin) goes through SeaBIOS.
_SEABIOS = re.compile(r"^SeaBIOS \(version|^Booting from ROM")


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


def _check_entry(entry: str) -> None:
    if entry not in ENTRIES:
        raise OvmfgenError(f"unknown boot entry {entry!r}: expected one of {', '.join(ENTRIES)}")


def qemu_argv(image: Path, entry: str, log: Path, memory_mb: int = 512) -> list[str]:
    """The QEMU command line that boots ``image`` through ``entry`` ("pvh" or "reset").

    ``pvh`` loads the ELF with ``-kernel`` (SeaBIOS's pvh.bin jumps to the PHYS32 entry at 1 MiB);
    ``reset`` maps the whole image below 4 GiB with ``-bios`` and starts at 0xFFFFFFF0. The
    firmware's DEBUG log goes to ``log`` through the debug console on port 0x402. Always TCG: KVM
    is neither needed nor assumed. ``-no-reboot`` turns a triple fault into an exit instead of a
    reboot loop that would print the same start of the log forever.
    """
    _check_entry(entry)
    # QEMU splits chardev options at commas; a literal comma is written twice.
    log_spec = "file:" + str(log).replace(",", ",,")
    return [
        QEMU,
        "-machine", "pc",
        "-accel", "tcg",
        "-m", str(memory_mb),
        "-kernel" if entry == "pvh" else "-bios", str(image),
        "-debugcon", log_spec,
        "-global", f"isa-debugcon.iobase={DEBUG_PORT:#x}",
        "-display", "none",
        "-net", "none",
        "-no-reboot",
    ]


def _lines(text: str) -> list[str]:
    return [line.rstrip("\r") for line in text.replace("\r\n", "\n").split("\n") if line.strip("\r ")]


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join(_lines(text)[-lines:])


def _describe_exit(returncode: int) -> str:
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
    _check_entry(entry)
    lines = _lines(text)

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
    tail = _tail(text)
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
        message = next((l for l in reversed(_lines(qemu_output)) if l.strip()), "")
        detail = _describe_exit(returncode)
        if returncode == -signal.SIGFPE and entry == "pvh":
            detail += (" while loading the ELF: QEMU (7.2 at least) divides by a PT_NOTE's p_align, "
                       "so p_align 0 crashes it (run `invoke check-elf`)")
        elif "could not load PC BIOS" in message:
            detail += " (-bios needs a readable image whose size is a multiple of 64 KiB)"
        return result(Verdict.QEMU_FAILED, message or _describe_exit(returncode), detail)

    failure = next((l for l in lines if _FAILURE.search(l)), None)
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


def _preflight(image: Path | str, out_dir: Path | str) -> tuple[Path, Path]:
    """The image (absolute) and a created output dir, or one clear error before QEMU starts."""
    image = Path(image).resolve()
    if not image.is_file():
        raise OvmfgenError(f"no firmware image at {display_path(image)}")
    if shutil.which(QEMU) is None:
        raise OvmfgenError(f"{QEMU} not found: install the qemu-system-x86 package (invoke setup)")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    return image, out_dir


def boot_qemu(image: Path, entry: str, out_dir: Path, timeout: float = 90,
              stall_seconds: float = STALL_SECONDS, memory_mb: int = 512) -> BootResult:
    """Boot ``image`` in QEMU (TCG) through ``entry`` and judge its DEBUG log.

    QEMU is stopped as soon as the verdict is certain: the final milestone, SEC running from the
    wrong entry, a firmware ASSERT/exception, no output for ``stall_seconds``, or ``timeout``
    seconds in all. The log is saved as ``out_dir/boot-<entry>.log`` (written under a temporary name
    and renamed when QEMU is gone).
    """
    _check_entry(entry)
    image, out_dir = _preflight(image, out_dir)
    final_log = out_dir / f"boot-{entry}.log"
    expected_fv = boot_fv_address(image.read_bytes(), entry)

    # QEMU writes the log under a temporary name; it is renamed once QEMU is gone.
    tmp_log = out_dir / f".boot-{entry}.{os.getpid()}.log.tmp"
    tmp_log.write_bytes(b"")
    argv = qemu_argv(image, entry, tmp_log, memory_mb=memory_mb)
    # QEMU's own messages (load errors) go to a temporary file: a pipe nobody reads could fill up.
    qemu_out = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
    text = ""
    returncode: int | None = None
    timed_out = False
    stalled_for: float | None = None
    start = time.monotonic()
    try:
        proc = popen(argv, stdin=DEVNULL, stdout=qemu_out, stderr=STDOUT)
        try:
            last_growth = start
            failed_at: float | None = None
            with open(tmp_log, "rb") as fh:
                while True:
                    chunk = fh.read()
                    now = time.monotonic()
                    if chunk:
                        text += chunk.decode("utf-8", errors="replace")
                        last_growth = now
                    exited = proc.poll()
                    verdict = classify_log(text, entry, expected_fv=expected_fv).verdict
                    if verdict in (Verdict.REACHED_XEN_PLATFORM_PEI, Verdict.UNPROVEN, Verdict.WRONG_ENTRY):
                        break
                    if verdict is Verdict.FIRMWARE_ERROR:
                        failed_at = failed_at or now
                        if now - last_growth >= FAILURE_GRACE_SECONDS or now - failed_at > 3:
                            break
                    if exited is not None:
                        returncode = exited
                        break
                    if now - start >= timeout:
                        timed_out = True
                        break
                    if now - last_growth >= stall_seconds:
                        stalled_for = now - last_growth
                        break
                    time.sleep(POLL_SECONDS)
            duration = time.monotonic() - start
        finally:
            stop(proc)
        # Whatever QEMU wrote between the last read and its end belongs in the saved log.
        text = tmp_log.read_bytes().decode("utf-8", errors="replace")
        os.replace(tmp_log, final_log)
        qemu_out.seek(0)
        # Drop QEMU's note that we stopped it (it names our pid): only its own complaints matter.
        output = "".join(l for l in qemu_out.readlines() if "terminating on signal" not in l)
    finally:
        qemu_out.close()
        tmp_log.unlink(missing_ok=True)

    result = classify_log(text, entry, returncode=returncode, qemu_output=output,
                          timed_out=timed_out, stalled_for=stalled_for, expected_fv=expected_fv)
    return replace(result, duration=duration, log_path=final_log)


class BootError(OvmfgenError):
    """One or more boots failed; ``tail()`` gives the end of each failed log (printed by the CLI)."""

    def __init__(self, message: str, tails: str) -> None:
        super().__init__(message)
        self._tails = tails

    def tail(self) -> str:
        """The last lines of the failed boots' logs (and QEMU's own messages)."""
        return self._tails


def _entries(entry: str) -> tuple[str, ...]:
    if entry == "both":
        return ENTRIES
    _check_entry(entry)
    return (entry,)


def boot_command(platform: str = "xen-pvh", target: str = "DEBUG", entry: str = "both", on: str = "qemu",
                 image: str | Path | None = None, edk2: str | None = None) -> list[BootResult] | XenBootResult:
    """``invoke boot``: boot the published ELF through the PVH entry and/or the reset vector.

    ``image`` defaults to ``dist/<platform>/[<tag>/]<target>/ovmf.elf`` (``edk2``: the tree's tag; None:
    the default tree); the logs are saved beside it. Prints one verdict line per entry and raises
    ``BootError`` (exit 1, log tails shown) if any failed. ``on="xen"`` boots under real Xen instead
    (``ovmfgen.boot.xen.boot_xen_command``, returning its result).
    """
    tree_args = f" --edk2 {edk2}" if edk2 else ""
    if image is None and edk2 and path_part(edk2):
        image = DIST_DIR / platform / path_part(edk2) / target / "ovmf.elf"
        if not image.is_file():
            raise OvmfgenError(f"no published firmware at {display_path(image)}: run `invoke build --platform "
                               f"{platform} --target {target}{tree_args}` first")
    if on == "xen":
        from ovmfgen.boot import xen  # lazily: only this path needs it

        return xen.boot_xen_command(platform=platform, target=target, image=image)
    if on != "qemu":
        raise OvmfgenError(f"unknown boot host {on!r}: expected qemu or xen")
    entries = _entries(entry)
    if target.upper() == "RELEASE":
        raise OvmfgenError("a RELEASE build prints no DEBUG log, so its boot cannot be judged: "
                           "boot a DEBUG or NOOPT build")
    if image is None:
        path = DIST_DIR / platform / target / "ovmf.elf"
        if not path.is_file():
            raise OvmfgenError(f"no published firmware at {display_path(path)}: "
                               f"run `invoke build --platform {platform} --target {target}` first")
    else:
        path = Path(image)
        if not path.is_file():
            raise OvmfgenError(f"no firmware image at {display_path(path)}")
    out_dir = path.resolve().parent

    results = []
    for name in entries:
        say(f"booting {display_path(path)} in QEMU (TCG) through the {name} entry")
        result = boot_qemu(path, name, out_dir)
        print(result.summary(), flush=True)
        results.append(result)
    failed = [r for r in results if not r.ok]
    stacks = {r.sec_stack for r in results if r.ok}
    if not failed and len(stacks) > 1:
        # The temporary RAM is the image's (FixedAtBuild PCDs), whichever entry SEC came through.
        raise BootError("boot failed: SEC's stack differs between the entries (" + ", ".join(
            f"{r.entry} {r.sec_stack:#x}" for r in results) + ")", "")
    if failed:
        tails = []
        for r in failed:
            where = display_path(r.log_path) if r.log_path else "log"
            tails.append(f"--- last lines of {where} ({r.entry}) ---\n{r.log_tail or '(empty)'}")
            if r.qemu_output.strip():
                tails.append(f"--- QEMU output ({r.entry}) ---\n{_tail(r.qemu_output)}")
        names = ", ".join(f"{r.entry} {r.verdict.value}" for r in failed)
        raise BootError(f"boot failed: {names}", "\n".join(tails))
    return results


# ---------------------------------------------------------------------------------------------
# Booting a full OVMF (qemu-x64) to the UEFI Shell
#
# The XenPlatformPei smoke test above proves the early chain of a Xen-only firmware. A platform for
# QEMU itself can go all the way: PEI, DXE, BDS, the UEFI Shell, a FAT file system and a script. The
# firmware is given to QEMU as distributions ship it, a read-only OVMF_CODE pflash plus a private
# copy of OVMF_VARS (split from the unified OVMF.fd the build publishes), and a small FAT disk whose
# startup.nsh prints a marker on the serial console. The marker only appears if the Shell ran the
# script: the script builds it from a Shell variable, so the script's own text never contains it.

SHELL_MARKER = "OVMFGEN-SHELL-REACHED"
SHELL_TIMEOUT_SECONDS = 240.0
FAT_IMAGE_KIB = 4096
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]")


def startup_script(marker: str = SHELL_MARKER) -> str:
    """The startup.nsh that prints ``marker`` (assembled at run time) and powers the guest off."""
    head, _, tail = marker.rpartition("-")
    return ("@echo -off\r\n"
            f"set -v OVMFGEN_TAIL {tail}\r\n"
            f"echo {head}-%OVMFGEN_TAIL%\r\n"
            "reset -s\r\n")


def _tools_hint() -> str:
    return "install mtools and dosfstools (`invoke setup`, or apt-get install mtools dosfstools)"


def make_fat_image(path: Path, files: dict[str, bytes], size_kib: int = FAT_IMAGE_KIB) -> Path:
    """A FAT disk image (no partition table) holding ``files`` at its root: mkfs.fat + mcopy."""
    for tool in ("mkfs.fat", "mcopy"):
        if shutil.which(tool) is None:
            raise OvmfgenError(f"{tool} not found: {_tools_hint()}")
    from ovmfgen.run import run

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    # A fixed volume id keeps the image the same from run to run.
    run(["mkfs.fat", "-C", "-i", "0F6E2E00", "-n", "OVMFGEN", str(path), str(size_kib)])
    staging = Path(tempfile.mkdtemp(prefix="ovmfgen-fat-", dir=path.parent))
    try:
        for name, data in sorted(files.items()):
            src = staging / name
            src.write_bytes(data)
            run(["mcopy", "-i", str(path), "-o", str(src), f"::/{name}"],
                env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


def split_unified_fd(fd: bytes) -> tuple[bytes, bytes]:
    """OVMF.fd -> (OVMF_VARS.fd, OVMF_CODE.fd), the pflash pair QEMU maps as units 0 and 1.

    The unified image is the variable store region (VARS_SIZE: 0x20000 for 1/2 MiB, 0x84000 for
    4 MiB) followed by the code (FVMAIN_COMPACT, SECFV); the build's OVMF_VARS.fd/OVMF_CODE.fd are
    exactly those two slices. The split point is the first valid firmware volume header after the
    variable store's own FV, so no size table is needed.
    """
    if not fv_header_ok(fd, 0):
        raise OvmfgenError("not a unified OVMF image: no firmware volume (the variable store) at offset 0")
    first = int.from_bytes(fd[0x20:0x28], "little")
    for off in range(first, len(fd), 0x1000):
        if fv_header_ok(fd, off):
            return fd[:off], fd[off:]
    raise OvmfgenError("not a unified OVMF image: no code firmware volume after the variable store")


def shell_qemu_argv(code: Path, vars_copy: Path, disk: Path, serial_log: Path, debug_log: Path,
                    memory_mb: int = 512) -> list[str]:
    """QEMU (TCG) booting OVMF from pflash with a FAT disk; serial console and debug log to files."""
    def chardev_path(p: Path) -> str:
        return str(p).replace(",", ",,")

    def drive_path(p: Path) -> str:
        return str(p).replace(",", ",,")

    return [
        QEMU,
        "-machine", "pc",
        "-accel", "tcg",
        "-m", str(memory_mb),
        "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={drive_path(code)}",
        "-drive", f"if=pflash,format=raw,unit=1,file={drive_path(vars_copy)}",
        "-drive", f"if=virtio,format=raw,file={drive_path(disk)}",
        "-serial", "file:" + chardev_path(serial_log),
        "-debugcon", "file:" + chardev_path(debug_log),
        "-global", f"isa-debugcon.iobase={DEBUG_PORT:#x}",
        "-display", "none",
        "-net", "none",
        "-no-reboot",
    ]


def strip_ansi(text: str) -> str:
    """Console text without the terminal escape sequences the UEFI console emits."""
    return _ANSI.sub("", text).replace("\r", "")


@dataclass(frozen=True)
class ShellBootResult:
    """The verdict on a boot to the UEFI Shell."""

    verdict: str                   # SHELL_REACHED, FIRMWARE_ERROR, QEMU_FAILED, TIMEOUT
    detail: str
    duration: float
    serial_log: Path
    debug_log: Path
    serial_tail: str = ""
    returncode: int | None = None

    @property
    def ok(self) -> bool:
        """True when the Shell ran startup.nsh from the FAT disk (the marker was printed)."""
        return self.verdict == "SHELL_REACHED"

    def summary(self) -> str:
        """One line for people."""
        return f"shell: {self.verdict} in {self.duration:.1f} s - {self.detail} ({display_path(self.serial_log)})"


def classify_shell_boot(serial: str, debug: str, marker: str = SHELL_MARKER, returncode: int | None = None,
                        timed_out: bool = False) -> tuple[str, str]:
    """(verdict, detail) for a shell boot from its serial console and DEBUG log (pure)."""
    console = strip_ansi(serial)
    if any(line.strip() == marker for line in console.splitlines()):
        return "SHELL_REACHED", f"startup.nsh printed {marker} on the serial console"
    failure = next((l for l in _lines(debug) if _FAILURE.search(l)), None)
    if failure is not None:
        return "FIRMWARE_ERROR", failure.strip()
    if returncode is not None:
        reached = "the Shell started" if "Shell>" in console or "UEFI Interactive Shell" in console else \
            "no Shell banner"
        return "QEMU_FAILED", f"{_describe_exit(returncode) if returncode else 'QEMU exited'} before the marker ({reached})"
    if timed_out:
        last = next((l for l in reversed(console.splitlines()) if l.strip()), "")
        return "TIMEOUT", f"no marker before the time limit; last console line: {last.strip()[:120]!r}"
    return "UNKNOWN", "the boot was not judged"


def boot_qemu_shell(image: Path, out_dir: Path, timeout: float = SHELL_TIMEOUT_SECONDS,
                    memory_mb: int = 512, marker: str = SHELL_MARKER) -> ShellBootResult:
    """Boot a unified OVMF.fd to the UEFI Shell in QEMU (TCG) and wait for startup.nsh's marker.

    Writes into ``out_dir``: ``OVMF_CODE.fd`` and ``OVMF_VARS.fd`` (split from ``image``),
    ``boot-shell-vars.fd`` (the VM's copy of OVMF_VARS, which the firmware writes), ``shell-disk.img`` (FAT, startup.nsh), ``boot-shell-serial.log`` (the
    console) and ``boot-shell-debug.log`` (the DEBUG log, port 0x402). QEMU is stopped as soon as
    the marker appears, the firmware ASSERTs, or ``timeout`` seconds pass.
    """
    image, out_dir = _preflight(image, out_dir)
    vars_fd, code_fd = split_unified_fd(image.read_bytes())
    # The pair as shipped (OVMF_VARS.fd stays the pristine template) and the VM's private copy of
    # the variable store, which the firmware writes to while it boots.
    code, template, vars_copy = out_dir / "OVMF_CODE.fd", out_dir / "OVMF_VARS.fd", out_dir / "boot-shell-vars.fd"
    code.write_bytes(code_fd)
    template.write_bytes(vars_fd)
    vars_copy.write_bytes(vars_fd)
    disk = make_fat_image(out_dir / "shell-disk.img", {"startup.nsh": startup_script(marker).encode()})
    serial_log, debug_log = out_dir / "boot-shell-serial.log", out_dir / "boot-shell-debug.log"
    for log_file in (serial_log, debug_log):
        log_file.write_bytes(b"")
    argv = shell_qemu_argv(code, vars_copy, disk, serial_log, debug_log, memory_mb)
    qemu_out = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
    returncode: int | None = None
    timed_out = False
    start = time.monotonic()
    try:
        proc = popen(argv, stdin=DEVNULL, stdout=qemu_out, stderr=STDOUT)
        try:
            while True:
                serial = serial_log.read_bytes().decode("utf-8", errors="replace")
                verdict, _ = classify_shell_boot(serial, "", marker)
                if verdict == "SHELL_REACHED":
                    break
                exited = proc.poll()
                if exited is not None:
                    returncode = exited
                    break
                if time.monotonic() - start >= timeout:
                    timed_out = True
                    break
                time.sleep(0.2)
            duration = time.monotonic() - start
        finally:
            stop(proc)
        qemu_out.seek(0)
        output = "".join(l for l in qemu_out.readlines() if "terminating on signal" not in l)
    finally:
        qemu_out.close()
    serial = serial_log.read_bytes().decode("utf-8", errors="replace")
    debug = debug_log.read_bytes().decode("utf-8", errors="replace")
    verdict, detail = classify_shell_boot(serial, debug, marker, returncode, timed_out)
    if verdict == "SHELL_REACHED":
        returncode = None
    elif output.strip():
        detail += f"; QEMU said: {_lines(output)[-1].strip()}" if _lines(output) else ""
    return ShellBootResult(verdict, detail, round(duration, 1), serial_log, debug_log,
                           "\n".join(strip_ansi(serial).splitlines()[-TAIL_LINES:]), returncode)
