"""``invoke boot``: boot a published build in QEMU through both entries, or under real Xen."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ovmfgen.boot import xen
from ovmfgen.boot.qemu import boot_qemu
from ovmfgen.boot.verdict import ENTRIES, BootResult, check_entry, tail_text
from ovmfgen.edk2.releases import path_part
from ovmfgen.errors import OvmfgenError, display_path
from ovmfgen.paths import DIST_DIR
from ovmfgen.ui import say

if TYPE_CHECKING:
    from ovmfgen.boot.xen import XenBootResult


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
                tails.append(f"--- QEMU output ({r.entry}) ---\n{tail_text(r.qemu_output)}")
        names = ", ".join(f"{r.entry} {r.verdict.value}" for r in failed)
        raise BootError(f"boot failed: {names}", "\n".join(tails))
    return results
