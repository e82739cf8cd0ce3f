"""Run Xen nested in QEMU TCG with a Debian dom0 and turn the run into a verdict; the CLI entry."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from ovmfgen.boot.xen.cache import XenAssets, prepare_xen_cache
from ovmfgen.boot.xen.guests import GUEST_MEMORY_MIB, overlay_cpio
from ovmfgen.boot.xen.verdicts import (
    Verdict,
    XenBootResult,
    classify_xen_run,
    extract_guest_console,
    format_result,
)
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.fsutil import atomic_write_bytes
from ovmfgen.paths import DIST_DIR
from ovmfgen.run import DEVNULL, STDOUT, popen, stop, wait
from ovmfgen.ui import say

# QEMU settings that make Xen work nested under TCG here (each was needed):
# -smap,-smep: without them dom0 dies at once (#PF in create_bounce_frame); -rdtscp: without it PVH
# guests die ("SVM Insn len emulation failed"); 2 GiB / dom0_mem=1024M: with less, dom0's initramfs
# (the root file system) does not unpack.
QEMU_BINARY = "qemu-system-x86_64"
QEMU_CPU = "max,-smap,-smep,-rdtscp"
QEMU_MEMORY_MIB = 2048
# -icount with a fixed shift and sleep=off: guest time advances by instructions executed, not by
# the host's clock. Without it QEMU 7.2 aborted in most boots of an edk2 guest ("tcg_handle_interrupt:
# assertion failed: (qemu_mutex_iothread_locked())"): edk2's interrupt exit path writes CR8, and a
# CR8 write by a nested SVM guest while Xen has an interrupt window (V_IRQ) open calls
# cpu_interrupt() without the BQL. Windows open when a second interrupt is pending during the
# handler, which wall-clock time (host load, TCG translation) makes common. With icount the run is
# also close to deterministic. The cost: one TCG thread for both vCPUs (~70 s instead of ~30 s).
# A retry (see boot_xen) uses the next shift, so it does not replay the same instruction stream.
QEMU_ICOUNT_SHIFTS = (0, 1)
XEN_CMDLINE = ("console=com1 com1=115200,8n1 loglvl=all guest_loglvl=all "
               "dom0_mem=1024M,max:1024M dom0_max_vcpus=1 dom0_vcpus_pin noreboot")
DOM0_CMDLINE = "console=hvc0 earlyprintk=xen rdinit=/init"

#: Wall seconds dom0 needs to boot and report back, reserved out of the overall timeout.
DOM0_OVERHEAD_S = 60.0
#: Wall seconds per guest (virtual, icount) second, measured here (~70 s wall for ~12 s virtual);
#: used only to turn the wall-clock timeout into dom0's deadline for the guest.
WALL_PER_GUEST_SECOND = 6.0
MIN_GUEST_TIMEOUT_S = 20


SERIAL_LOG_NAME = "xen-serial.log"
GUEST_LOG_NAME = "xen-guest-console.log"
QEMU_LOG_NAME = "xen-qemu.log"
SUMMARY_NAME = "xen-boot.json"

def qemu_argv(xen: Path, dom0_kernel: Path, dom0_initrd: Path, serial_log: Path,
              icount_shift: int = QEMU_ICOUNT_SHIFTS[0], qemu: str = QEMU_BINARY) -> list[str]:
    """QEMU's command line: Xen by multiboot, dom0 kernel and initramfs as its modules."""
    for p in (dom0_kernel, dom0_initrd):
        # QEMU splits multiboot modules at commas and a module's path from its arguments at spaces.
        if "," in str(p) or " " in str(p):
            raise OvmfgenError(f"path unusable as a QEMU multiboot module (comma or space): {p}")
    return [
        qemu, "-machine", "pc", "-accel", "tcg", "-icount", f"shift={icount_shift},sleep=off",
        "-cpu", QEMU_CPU, "-smp", "2", "-m", str(QEMU_MEMORY_MIB),
        "-display", "none", "-vga", "none", "-no-reboot", "-nodefaults", "-monitor", "none",
        "-serial", f"file:{serial_log}",
        "-kernel", str(xen),
        "-append", XEN_CMDLINE,
        "-initrd", f"{dom0_kernel} {DOM0_CMDLINE},{dom0_initrd}",
    ]


# --- Booting --------------------------------------------------------------------------------------


def _peak_rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _run_qemu(argv: list[str], qemu_log: Path, timeout: float) -> tuple[int | None, float, int | None]:
    """Run QEMU to completion or ``timeout``; (returncode or None if killed, seconds, peak RSS KiB)."""
    start = time.monotonic()
    peak: int | None = None
    with open(qemu_log, "w", encoding="utf-8", errors="replace") as log:
        proc = popen(argv, stdin=DEVNULL, stdout=log, stderr=STDOUT)
        try:
            while True:
                rc = wait(proc, 1.0)
                if rc is not None:
                    return rc, time.monotonic() - start, peak
                hwm = _peak_rss_kib(proc.pid)
                if hwm is not None:
                    peak = max(peak or 0, hwm)
                if time.monotonic() - start > timeout:
                    stop(proc, signals=(signal.SIGKILL,))
                    return None, time.monotonic() - start, peak
        finally:
            stop(proc, signals=(signal.SIGKILL,))


def guest_deadline_s(timeout: float) -> int:
    """dom0's deadline for the guest (guest seconds) so that dom0 reports before ``timeout`` (wall)."""
    return max(MIN_GUEST_TIMEOUT_S, int((timeout - DOM0_OVERHEAD_S) / WALL_PER_GUEST_SECOND))


def _attempt(image: Path, out_dir: Path, assets: XenAssets, timeout: float, memory_mib: int,
             icount_shift: int) -> XenBootResult:
    guest_timeout = guest_deadline_s(timeout)
    serial, guest, qemu_log = (out_dir / n for n in (SERIAL_LOG_NAME, GUEST_LOG_NAME, QEMU_LOG_NAME))
    serial.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="ovmfgen-xen-") as tmp:
        t = Path(tmp)
        # dom0's initramfs = the cached root file system + this run's overlay, one file (Xen takes
        # one initrd module; the kernel unpacks concatenated cpio archives in order).
        initrd = t / "dom0-initrd.cpio"
        with open(initrd, "wb") as fh:
            with open(assets.rootfs_cpio, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)
            fh.write(overlay_cpio(image, assets.modules_dir, guest_timeout, memory_mib))
        kernel = t / "vmlinuz"
        shutil.copyfile(assets.dom0_kernel, kernel)
        argv = qemu_argv(assets.xen, kernel, initrd, serial, icount_shift=icount_shift)
        say(f"booting {display_path(image)} under Xen {assets.versions.hypervisor} in QEMU (TCG)")
        rc, seconds, peak = _run_qemu(argv, qemu_log, timeout)
    serial_text = serial.read_text(encoding="utf-8", errors="replace") if serial.is_file() else ""
    guest_text = extract_guest_console(serial_text)
    atomic_write_bytes(guest, guest_text.encode())
    result = classify_xen_run(serial_text, guest_text, rc)
    if result.verdict is Verdict.HARNESS_FAILURE and rc not in (None, 0):
        tail = qemu_log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        if tail:
            result = replace(result, detail=f"{result.detail}: {tail[0].strip()}")
    return replace(result, qemu_seconds=round(seconds, 1),
                   qemu_max_rss_mib=None if peak is None else round(peak / 1024, 1),
                   serial_log=serial, guest_log=guest, guest_console=guest_text)


def boot_xen(image: Path, out_dir: Path, timeout: float = 300,
             memory_mib: int = GUEST_MEMORY_MIB) -> XenBootResult:
    """Boot ``image`` (a PVH ELF) as a PVH guest of Xen 4.17 nested in QEMU TCG; one verdict.

    Logs go to ``out_dir``: ``xen-serial.log`` (Xen's console: hypervisor, ``(d1)`` guest debug,
    dom0), ``xen-guest-console.log`` (the guest's PV console), ``xen-qemu.log``, ``xen-boot.json``.
    ``timeout`` bounds each QEMU run (wall seconds). A HARNESS_FAILURE (QEMU itself died, ...) is
    retried once with another icount shift; the first attempt's logs are kept as ``*.attempt1.log``.
    """
    image = Path(image)
    if not image.is_file():
        raise OvmfgenError(f"no firmware image at {display_path(image)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    assets = prepare_xen_cache()
    for name in (SERIAL_LOG_NAME, GUEST_LOG_NAME, QEMU_LOG_NAME):
        (out_dir / name.replace(".log", ".attempt1.log")).unlink(missing_ok=True)
    result = _attempt(image, out_dir, assets, timeout, memory_mib, QEMU_ICOUNT_SHIFTS[0])
    if result.verdict is Verdict.HARNESS_FAILURE:
        say(f"harness failure ({result.detail}); retrying once")
        for name in (SERIAL_LOG_NAME, GUEST_LOG_NAME, QEMU_LOG_NAME):
            p = out_dir / name
            if p.exists():
                os.replace(p, out_dir / name.replace(".log", ".attempt1.log"))
        result = replace(_attempt(image, out_dir, assets, timeout, memory_mib, QEMU_ICOUNT_SHIFTS[1]),
                         attempts=2)
    summary = {
        "image": str(image), "verdict": result.verdict.value, "detail": result.detail,
        "attempts": result.attempts, "qemu_seconds": result.qemu_seconds,
        "qemu_max_rss_mib": result.qemu_max_rss_mib, "shell_seconds_after_xl_create": result.shell_seconds,
        "xen": assets.versions.hypervisor, "xen_utils": assets.versions.utils,
        "dom0_kernel": f"{assets.versions.kernel_package} {assets.versions.kernel}",
    }
    atomic_write_bytes(out_dir / SUMMARY_NAME, (json.dumps(summary, indent=2) + "\n").encode())
    return result


def boot_xen_command(platform: str = "xen-pvh", target: str = "DEBUG", image: Path | str | None = None,
                     timeout: float = 300) -> XenBootResult:
    """CLI entry: boot the published (or given) ELF under real Xen; raise unless SHELL_REACHED.

    The image defaults to ``dist/<platform>/<target>/ovmf.elf``; logs are written beside it.
    """
    path = Path(image) if image else DIST_DIR / platform / target / "ovmf.elf"
    if not path.is_file():
        hint = "" if image else f" (build it: invoke build --platform {platform} --target {target})"
        raise OvmfgenError(f"no firmware image at {display_path(path)}{hint}")
    started = time.monotonic()
    result = boot_xen(path, path.parent, timeout=timeout)
    print(f"{format_result(result)}; total {time.monotonic() - started:.1f} s; "
          f"logs: {display_path(result.serial_log or path.parent)}", flush=True)
    if not result.ok:
        raise OvmfgenError(f"{display_path(path)} did not reach the UEFI Shell under Xen: "
                           f"{result.verdict}{': ' + result.detail if result.detail else ''}")
    return result
