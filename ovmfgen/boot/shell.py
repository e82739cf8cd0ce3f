"""Booting a full OVMF (qemu-x64) to the UEFI Shell.

QEMU itself can go all the way: PEI, DXE, BDS, the UEFI Shell, a FAT file system and a script. The
firmware is given to QEMU as distributions ship it, a read-only OVMF_CODE pflash plus a private copy
of OVMF_VARS (split from the unified OVMF.fd the build publishes), and a small FAT disk whose
startup.nsh prints a marker on the serial console. The marker only appears if the Shell ran the
script: the script builds it from a Shell variable, so the script's own text never contains it.

The disk also carries the image's own Shell as ``\\EFI\\BOOT\\BOOTX64.EFI``, as edk2's PlatformCI
does: from edk2-stable202605 on, OVMF registers its built-in Shell as an application
(LOAD_OPTION_CATEGORY_APP, upstream 896907b53b) that BDS never boots on its own, so without it a
diskless boot ends at "Press any key to enter the Boot Manager Menu". The verdict names the boot
option that started the Shell (``BdsDxe: starting Boot####``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovmfgen.fvfile import file_pe32
from ovmfgen.boot.qemu import DEBUG_PORT, QEMU, preflight
from ovmfgen.boot.verdict import FAILURE_LINE, TAIL_LINES, Verdict, describe_exit, log_lines
from ovmfgen.elf import fv_headers, read_fv_header
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.run import DEVNULL, STDOUT, popen, run, stop

SHELL_MARKER = "OVMFGEN-SHELL-REACHED"
SHELL_TIMEOUT_SECONDS = 240.0
FAT_IMAGE_KIB = 4096
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\x1b[=>]")
#: The removable-media default path BDS boots from a disk with no boot option of its own (X64).
DEFAULT_BOOT_PATH = "EFI/BOOT/BOOTX64.EFI"
# PlatformBmPrintScLib's console line when BDS starts a boot option.
_STARTING = re.compile(r'BdsDxe: starting (Boot[0-9A-Fa-f]{4} "[^"]*")')


def startup_script(marker: str = SHELL_MARKER, power_off: bool = True) -> str:
    """The startup.nsh that prints ``marker`` (assembled at run time) and powers the guest off (unless not
    ``power_off``: the Shell then waits at its prompt until QEMU is stopped)."""
    head, _, tail = marker.rpartition("-")
    return ("@echo -off\r\n"
            f"set -v OVMFGEN_TAIL {tail}\r\n"
            f"echo {head}-%OVMFGEN_TAIL%\r\n"
            + ("reset -s\r\n" if power_off else ""))


def _tools_hint() -> str:
    return "install mtools and dosfstools (`invoke setup`, or apt-get install mtools dosfstools)"


def make_fat_image(path: Path, files: dict[str, bytes], size_kib: int = FAT_IMAGE_KIB) -> Path:
    """A FAT disk image (no partition table) holding ``files`` (``DIR/NAME`` keys make the folders): mkfs.fat + mmd + mcopy."""
    for tool in ("mkfs.fat", "mmd", "mcopy"):
        if shutil.which(tool) is None:
            raise OvmfgenError(f"{tool} not found: {_tools_hint()}")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    # A fixed volume id keeps the image the same from run to run.
    run(["mkfs.fat", "-C", "-i", "0F6E2E00", "-n", "OVMFGEN", str(path), str(size_kib)])
    staging = Path(tempfile.mkdtemp(prefix="ovmfgen-fat-", dir=path.parent))
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    try:
        folders = sorted({"/".join(name.split("/")[:i]) for name in files for i in range(1, name.count("/") + 1)})
        for folder in folders:
            run(["mmd", "-i", str(path), f"::/{folder}"], env=env)
        for i, (name, data) in enumerate(sorted(files.items())):
            src = staging / str(i)
            src.write_bytes(data)
            run(["mcopy", "-i", str(path), "-o", str(src), f"::/{name}"], env=env)
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
    store = read_fv_header(fd, 0)
    if store is None:
        raise OvmfgenError("not a unified OVMF image: no firmware volume (the variable store) at offset 0")
    for code in fv_headers(fd, start=store.end):
        return fd[:code.offset], fd[code.offset:]
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

    verdict: Verdict               # SHELL_REACHED, FIRMWARE_ERROR, QEMU_FAILED, TIMEOUT
    detail: str
    duration: float
    serial_log: Path
    debug_log: Path
    serial_tail: str = ""
    returncode: int | None = None

    @property
    def ok(self) -> bool:
        """True when the Shell ran startup.nsh from the FAT disk (the marker was printed)."""
        return self.verdict == Verdict.SHELL_REACHED

    def summary(self) -> str:
        """One line for people."""
        return f"shell: {self.verdict} in {self.duration:.1f} s - {self.detail} ({display_path(self.serial_log)})"


def classify_shell_boot(serial: str, debug: str, marker: str = SHELL_MARKER, returncode: int | None = None,
                        timed_out: bool = False) -> tuple[Verdict, str]:
    """(verdict, detail) for a shell boot from its serial console and DEBUG log (pure)."""
    console = strip_ansi(serial)
    if any(line.strip() == marker for line in console.splitlines()):
        started = _STARTING.findall(console)
        how = f" (started by {started[-1]})" if started else ""
        return Verdict.SHELL_REACHED, f"startup.nsh printed {marker} on the serial console{how}"
    failure = next((l for l in log_lines(debug) if FAILURE_LINE.search(l)), None)
    if failure is not None:
        return Verdict.FIRMWARE_ERROR, failure.strip()
    if returncode is not None:
        reached = "the Shell started" if "Shell>" in console or "UEFI Interactive Shell" in console else \
            "no Shell banner"
        return Verdict.QEMU_FAILED, f"{describe_exit(returncode) if returncode else 'QEMU exited'} before the marker ({reached})"
    if timed_out:
        last = next((l for l in reversed(console.splitlines()) if l.strip()), "")
        return Verdict.TIMEOUT, f"no marker before the time limit; last console line: {last.strip()[:120]!r}"
    return "UNKNOWN", "the boot was not judged"


def boot_qemu_shell(image: Path, out_dir: Path, timeout: float = SHELL_TIMEOUT_SECONDS,
                    memory_mb: int = 512, marker: str = SHELL_MARKER, shell_on_disk: bool = True,
                    extra_args: Sequence[str] = (), power_off: bool = True,
                    stop_signals: Sequence[signal.Signals] = (signal.SIGTERM, signal.SIGKILL)) -> ShellBootResult:
    """Boot a unified OVMF.fd to the UEFI Shell in QEMU (TCG) and wait for startup.nsh's marker.

    Writes into ``out_dir``: ``OVMF_CODE.fd`` and ``OVMF_VARS.fd`` (split from ``image``),
    ``boot-shell-vars.fd`` (the VM's copy of OVMF_VARS, which the firmware writes), ``shell-disk.img`` (FAT:
    startup.nsh and, with ``shell_on_disk``, the image's own Shell at EFI/BOOT/BOOTX64.EFI), ``boot-shell-serial.log`` (the
    console) and ``boot-shell-debug.log`` (the DEBUG log, port 0x402). QEMU is stopped as soon as
    the marker appears, the firmware ASSERTs, or ``timeout`` seconds pass, with ``stop_signals``.
    ``extra_args`` go to QEMU (a TPM device, say); without ``power_off`` the script leaves the guest
    running, so that only ``stop_signals`` end QEMU (SIGKILL alone: a swtpm keeps the PCRs).
    """
    image, out_dir = preflight(image, out_dir)
    data = image.read_bytes()
    vars_fd, code_fd = split_unified_fd(data)
    # The pair as shipped (OVMF_VARS.fd stays the pristine template) and the VM's private copy of
    # the variable store, which the firmware writes to while it boots.
    code, template, vars_copy = out_dir / "OVMF_CODE.fd", out_dir / "OVMF_VARS.fd", out_dir / "boot-shell-vars.fd"
    code.write_bytes(code_fd)
    template.write_bytes(vars_fd)
    vars_copy.write_bytes(vars_fd)
    files = {"startup.nsh": startup_script(marker, power_off).encode()}
    if shell_on_disk:
        files[DEFAULT_BOOT_PATH] = file_pe32(data)
    disk = make_fat_image(out_dir / "shell-disk.img", files)
    serial_log, debug_log = out_dir / "boot-shell-serial.log", out_dir / "boot-shell-debug.log"
    for log_file in (serial_log, debug_log):
        log_file.write_bytes(b"")
    argv = [*shell_qemu_argv(code, vars_copy, disk, serial_log, debug_log, memory_mb), *extra_args]
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
                if verdict == Verdict.SHELL_REACHED:
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
            stop(proc, signals=stop_signals)
        qemu_out.seek(0)
        output = "".join(l for l in qemu_out.readlines() if "terminating on signal" not in l)
    finally:
        qemu_out.close()
    serial = serial_log.read_bytes().decode("utf-8", errors="replace")
    debug = debug_log.read_bytes().decode("utf-8", errors="replace")
    verdict, detail = classify_shell_boot(serial, debug, marker, returncode, timed_out)
    if verdict == Verdict.SHELL_REACHED:
        returncode = None
    elif output.strip():
        detail += f"; QEMU said: {log_lines(output)[-1].strip()}" if log_lines(output) else ""
    return ShellBootResult(verdict, detail, round(duration, 1), serial_log, debug_log,
                           "\n".join(strip_ansi(serial).splitlines()[-TAIL_LINES:]), returncode)
