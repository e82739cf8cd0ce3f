"""Running QEMU (TCG) on one OVMF image through one entry, stopped as soon as the verdict is certain.

KVM is not usable on the machines this runs on (and must never be required): QEMU always runs
with TCG, which reaches XenPlatformPei in about a second.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ovmfgen.boot.verdict import BootResult, Verdict, check_entry, classify_log
from ovmfgen.elf import boot_fv_address
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.run import DEVNULL, STDOUT, popen, stop

QEMU = "qemu-system-x86_64"
# OvmfXen's PlatformDebugLibIoPort writes the DEBUG log to this I/O port (QEMU's isa-debugcon).
DEBUG_PORT = 0x402
# Stop waiting when the log has not grown for this long (the firmware hangs without a message).
STALL_SECONDS = 30.0
# After a firmware ASSERT/exception, let the rest of the dump arrive (it is short) before stopping.
FAILURE_GRACE_SECONDS = 0.5
POLL_SECONDS = 0.05


def qemu_argv(image: Path, entry: str, log: Path, memory_mb: int = 512) -> list[str]:
    """The QEMU command line that boots ``image`` through ``entry`` ("pvh" or "reset").

    ``pvh`` loads the ELF with ``-kernel`` (SeaBIOS's pvh.bin jumps to the PHYS32 entry at 1 MiB);
    ``reset`` maps the whole image below 4 GiB with ``-bios`` and starts at 0xFFFFFFF0. The
    firmware's DEBUG log goes to ``log`` through the debug console on port 0x402. Always TCG: KVM
    is neither needed nor assumed. ``-no-reboot`` turns a triple fault into an exit instead of a
    reboot loop that would print the same start of the log forever.
    """
    check_entry(entry)
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


def preflight(image: Path | str, out_dir: Path | str) -> tuple[Path, Path]:
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
    check_entry(entry)
    image, out_dir = preflight(image, out_dir)
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
