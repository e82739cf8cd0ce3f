"""``invoke boot``: boot a published build in QEMU through both entries, or under real Xen."""

from __future__ import annotations

from pathlib import Path

from ovmfgen.boot import xen
from ovmfgen.boot.qemu import boot_qemu
from ovmfgen.boot.verdict import ENTRIES, BootResult, check_entry, tail_text
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.paths import Layout
from ovmfgen.platform.resolve import resolve
from ovmfgen.request import make_request
from ovmfgen.ui import say


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
    check_entry(entry)
    return (entry,)


def boot_command(entry: str = "both", on: str = "qemu", image: str | Path | None = None,
                 layout: Layout | None = None, mode: str | None = None, xen_version: str | None = None,
                 disk: str | Path | None = None, vcpus: int | str | None = None, **build: object) -> list[BootResult] | list[xen.GuestOutcome]:
    """``invoke boot``: boot the published ELF through the PVH entry and/or the reset vector.

    ``image`` defaults to the ``ovmf.elf`` that the build the ``build`` options select (``make_request``'s:
    platform, default xen-pvh, target, fd_size, features, defines, edk2) published in ``layout``
    (``Resolved.published``); the logs are saved beside it. Prints one verdict line per entry and raises
    ``BootError`` (exit 1, log tails shown) if any failed. ``on="xen"`` boots that image under real
    Xen instead as the ``mode`` guest set: pvh (default), hvm, os, persist, all or sb
    (``ovmfgen.boot.xen.boot_xen_command``, returning one outcome per guest), on Xen ``xen_version``
    (4.17, the default, or 4.20); ``disk`` boots a user's disk image there instead; ``vcpus`` gives each
    Xen guest that many vCPUs (``boot_xen_command``).
    """
    request = make_request(**{"platform": "xen-pvh", **build})  # type: ignore[arg-type]
    if on not in ("qemu", "xen"):
        raise OvmfgenError(f"unknown boot host {on!r}: expected qemu or xen")
    guest_vcpus = 1
    if on == "xen":
        xen.check_disk_request(mode or "pvh", disk)
        xen.check_xen(xen_version)
        if vcpus is not None:
            guest_vcpus = xen.check_vcpus(vcpus)
    elif mode is not None:
        raise OvmfgenError("--mode chooses the Xen guests: use it with --on xen")
    elif xen_version is not None:
        raise OvmfgenError("--xen chooses the Xen version: use it with --on xen")
    elif disk is not None:
        raise OvmfgenError("--disk boots a disk under Xen: use it with --on xen")
    elif vcpus is not None:
        raise OvmfgenError("--vcpus gives Xen guests vCPUs: use it with --on xen")
    entries = _entries(entry) if on == "qemu" else ()
    if on == "qemu" and request.target == "RELEASE":
        raise OvmfgenError("a RELEASE build prints no DEBUG log, so its boot cannot be judged: "
                           "boot a DEBUG or NOOPT build")
    if image is None:
        path = resolve(request, layout).published()
    else:
        path = Path(image)
        if not path.is_file():
            raise OvmfgenError(f"no firmware image at {display_path(path)}")
    if on == "xen":
        return xen.boot_xen_command(path, mode=mode or "pvh", xen=xen_version, disk=disk,
                                    vcpus=guest_vcpus)
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
                tails.append(f"--- QEMU output ({r.entry}) ---\n{tail_text(r.qemu_output)}")
        names = ", ".join(f"{r.entry} {r.verdict.value}" for r in failed)
        raise BootError(f"boot failed: {names}", "\n".join(tails))
    return results
