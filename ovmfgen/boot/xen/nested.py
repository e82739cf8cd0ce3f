"""Run Xen nested in QEMU TCG with a Debian dom0 and turn the run into a verdict; the CLI entry."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ovmfgen.boot.xen.cache import XenAssets, prepare_xen_cache
from ovmfgen.boot.xen.guests import GUEST_MEMORY_MIB, XenGuest, check_mode, overlay_cpio
from ovmfgen.boot.xen.verdicts import (
    Verdict,
    XenBootResult,
    classify_guest,
    extract_guest_console,
    guest_segments,
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


def guest_deadline_s(timeout: float, guests: int = 1) -> int:
    """dom0's deadline per guest (guest seconds) so that dom0 reports on all ``guests`` before ``timeout`` (wall)."""
    return max(MIN_GUEST_TIMEOUT_S, int((timeout - DOM0_OVERHEAD_S) / max(guests, 1) / WALL_PER_GUEST_SECOND))


@dataclass(frozen=True)
class GuestOutcome:
    """One guest of a nested run and its verdict; ``ok`` when the verdict is the one a good firmware gets."""

    guest: XenGuest
    result: XenBootResult

    @property
    def ok(self) -> bool:
        """True when the verdict is the expected one (the Shell; a crash for the ud2 control)."""
        return self.result.verdict is self.guest.expected


def guest_log_names(guest: XenGuest) -> tuple[str, str]:
    """(this guest's part of Xen's serial log, its console log): file names in the output directory."""
    return f"xen-{guest.mode}-{guest.payload}.log", f"xen-{guest.mode}-{guest.payload}.console.log"


def _attempt(guests: Sequence[XenGuest], out_dir: Path, assets: XenAssets, timeout: float, memory_mib: int,
             icount_shift: int) -> list[XenBootResult]:
    guest_timeout = guest_deadline_s(timeout, len(guests))
    serial, qemu_log = out_dir / SERIAL_LOG_NAME, out_dir / QEMU_LOG_NAME
    serial.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="ovmfgen-xen-") as tmp:
        t = Path(tmp)
        # dom0's initramfs = the cached root file system + this run's overlay, one file (Xen takes
        # one initrd module; the kernel unpacks concatenated cpio archives in order).
        initrd = t / "dom0-initrd.cpio"
        with open(initrd, "wb") as fh:
            with open(assets.rootfs_cpio, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)
            fh.write(overlay_cpio(guests, assets.modules_dir, guest_timeout, memory_mib))
        kernel = t / "vmlinuz"
        shutil.copyfile(assets.dom0_kernel, kernel)
        argv = qemu_argv(assets.xen, kernel, initrd, serial, icount_shift=icount_shift)
        names = ", ".join(g.name for g in guests)
        say(f"booting {names} under Xen {assets.versions.hypervisor} in QEMU (TCG)")
        rc, seconds, peak = _run_qemu(argv, qemu_log, timeout)
    serial_text = serial.read_text(encoding="utf-8", errors="replace") if serial.is_file() else ""
    parts, _, _ = guest_segments(serial_text)
    tail = ""
    if rc not in (None, 0):
        lines = qemu_log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
        tail = lines[0].strip() if lines else ""
    results = []
    for g in guests:
        log_name, console_name = guest_log_names(g)
        part = parts.get(g.name, "")
        console = extract_guest_console(part)
        atomic_write_bytes(out_dir / log_name, part.encode())
        atomic_write_bytes(out_dir / console_name, console.encode())
        result = classify_guest(serial_text, g.name, rc)
        if result.verdict is Verdict.HARNESS_FAILURE and tail:
            result = replace(result, detail=f"{result.detail}: {tail}")
        results.append(replace(result, qemu_seconds=round(seconds, 1),
                               qemu_max_rss_mib=None if peak is None else round(peak / 1024, 1),
                               serial_log=out_dir / log_name, guest_log=out_dir / console_name,
                               guest_console=console))
    return results


def boot_xen_guests(guests: Sequence[XenGuest], out_dir: Path, timeout: float = 600,
                    memory_mib: int = GUEST_MEMORY_MIB) -> list[GuestOutcome]:
    """Boot ``guests`` one after the other in ONE nested Xen run; one verdict per guest.

    Logs go to ``out_dir``: ``xen-serial.log`` (Xen's console for the whole run), per guest
    ``xen-<mode>-<payload>.log`` (its part of it: ``(dN)`` debug lines, Xen's lines about it, dom0's
    events) and ``xen-<mode>-<payload>.console.log``, ``xen-qemu.log`` and ``xen-boot.json``.
    ``timeout`` bounds each QEMU run (wall seconds). Guests that got a HARNESS_FAILURE (QEMU itself
    died, ...) run again, once, in a second nested run with another icount shift; the first run's
    logs are kept as ``*.attempt1.log``.
    """
    guests = list(guests)
    if not guests:
        raise OvmfgenError("no guests to boot")
    for g in guests:
        if not g.image.is_file():
            raise OvmfgenError(f"no firmware image at {display_path(g.image)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("xen-*.attempt1.log"):
        old.unlink()
    assets = prepare_xen_cache()
    started = time.monotonic()
    results = dict(zip([g.name for g in guests],
                       _attempt(guests, out_dir, assets, timeout, memory_mib, QEMU_ICOUNT_SHIFTS[0])))
    runs = [{"guests": [g.name for g in guests], "qemu_seconds": next(iter(results.values())).qemu_seconds,
             "qemu_max_rss_mib": next(iter(results.values())).qemu_max_rss_mib}]
    again = [g for g in guests if results[g.name].verdict is Verdict.HARNESS_FAILURE]
    if again:
        say(f"harness failure ({results[again[0].name].detail}); retrying {len(again)} guest(s) once")
        for p in [out_dir / SERIAL_LOG_NAME, out_dir / QEMU_LOG_NAME, *(out_dir / n for g in again
                                                                       for n in guest_log_names(g))]:
            if p.exists():
                os.replace(p, p.with_name(p.name.replace(".log", ".attempt1.log")))
        retried = _attempt(again, out_dir, assets, timeout, memory_mib, QEMU_ICOUNT_SHIFTS[1])
        for g, r in zip(again, retried):
            results[g.name] = replace(r, attempts=2)
        runs.append({"guests": [g.name for g in again], "qemu_seconds": retried[0].qemu_seconds,
                     "qemu_max_rss_mib": retried[0].qemu_max_rss_mib})
    outcomes = [GuestOutcome(g, results[g.name]) for g in guests]
    v = assets.versions
    summary = {
        "xen": v.hypervisor, "xen_utils": v.utils, "device_model": v.device_model,
        "dom0_kernel": f"{v.kernel_package} {v.kernel}", "seconds": round(time.monotonic() - started, 1),
        "runs": runs,
        "guests": [{
            "name": o.guest.name, "xen": v.hypervisor, "mode": o.guest.mode, "payload": o.guest.payload,
            "image": display_path(o.guest.image), "verdict": o.result.verdict.value,
            "expected": o.guest.expected.value, "ok": o.ok, "detail": o.result.detail,
            "seconds_to_shell": o.result.shell_seconds, "attempts": o.result.attempts,
            "log": o.result.serial_log.name if o.result.serial_log else None,
            "console_log": o.result.guest_log.name if o.result.guest_log else None,
        } for o in outcomes],
    }
    atomic_write_bytes(out_dir / SUMMARY_NAME, (json.dumps(summary, indent=2) + "\n").encode())
    return outcomes


def boot_xen(image: Path, out_dir: Path, timeout: float = 300,
             memory_mib: int = GUEST_MEMORY_MIB) -> XenBootResult:
    """Boot ``image`` (a PVH ELF) as a PVH guest of Xen 4.17 nested in QEMU TCG; one verdict.

    The one-guest case of ``boot_xen_guests`` (same logs in ``out_dir``).
    """
    return boot_xen_guests([XenGuest("pvh", "shell", Path(image))], out_dir, timeout, memory_mib)[0].result


def boot_xen_command(platform: str = "xen-pvh", target: str = "DEBUG", image: Path | str | None = None,
                     timeout: float | None = None, mode: str = "pvh") -> list[GuestOutcome]:
    """CLI entry: boot the published (or given) ELF under real Xen as the ``mode`` guest set; raise unless
    every guest got the verdict a good firmware gets.

    The image defaults to ``dist/<platform>/<target>/ovmf.elf``; logs are written beside it.
    """
    kinds = check_mode(mode)
    path = Path(image) if image else DIST_DIR / platform / target / "ovmf.elf"
    if not path.is_file():
        hint = "" if image else f" (build it: invoke build --platform {platform} --target {target})"
        raise OvmfgenError(f"no firmware image at {display_path(path)}{hint}")
    started = time.monotonic()
    guests = [XenGuest(m, p, path) for m, p in kinds]
    outcomes = boot_xen_guests(guests, path.parent, timeout=timeout or 300 * len(guests))
    for o in outcomes:
        mark = "ok" if o.ok else f"FAILED (expected {o.guest.expected})"
        print(f"{o.guest.mode} {o.guest.payload}: {format_result(o.result)} - {mark}; "
              f"log: {display_path(o.result.serial_log or path.parent)}", flush=True)
    print(f"xen: {len(outcomes)} guest(s) in {time.monotonic() - started:.1f} s; "
          f"summary: {display_path(path.parent / SUMMARY_NAME)}", flush=True)
    bad = [o for o in outcomes if not o.ok]
    if bad:
        o = bad[0]
        raise OvmfgenError(f"{display_path(path)}: {o.guest.mode} {o.guest.payload} guest under Xen: "
                           f"{o.result.verdict}{': ' + o.result.detail if o.result.detail else ''} "
                           f"(expected {o.guest.expected})")
    return outcomes
