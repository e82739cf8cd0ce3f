"""``invoke setup``: make this machine ready to build (apt packages, the edk2 tree, BaseTools).

Idempotent and cached: a second run checks a few files and says it has nothing to do. The edk2 side
lives in ``ovmfgen.edk2`` (install, fetch, debian, basetools); apt in ``ovmfgen.apt``.
"""

from __future__ import annotations

import time

from ovmfgen.edk2.install import ensure_edk2
from ovmfgen.apt import ensure_apt_packages
from ovmfgen.ui import say

# mtools/dosfstools make the boot tests' FAT disks; sbsigntool/faketime sign the Secure Boot guests' image
# reproducibly (boot/xen/sbdisks.py, which also installs them when it needs them); swtpm/swtpm-tools are the
# software TPM the TPM boot test reads the PCRs from (boot/swtpm.py).
APT_PACKAGES = ("nasm", "acpica-tools", "uuid-dev", "build-essential", "dpkg-dev", "qemu-system-x86", "ccache", "mtools", "dosfstools",
                "sbsigntool", "faketime", "swtpm", "swtpm-tools")


def setup_all(force: bool = False, edk2: str | None = None) -> None:
    """Make this machine ready to build: apt packages, the edk2 tree ``edk2`` (default: DEFAULT_TAG), BaseTools.

    Idempotent: when all is in place it only checks and says so (well under 2 s). ``force`` refetches,
    re-unpacks and rebuilds (the previous tree stays usable until the new one is complete).
    """
    start = time.monotonic()
    did = ensure_apt_packages(APT_PACKAGES)
    tree, did_edk2 = ensure_edk2(edk2, force=force)
    took = time.monotonic() - start
    what = f"edk2 {tree.tag} ({tree.identity['source']}) at {tree.root}"
    if did or did_edk2:
        say(f"setup done in {took:.1f} s: {what}; EDK_TOOLS_PATH={tree.basetools}")
    else:
        say(f"setup: already done, nothing to do ({took:.2f} s): {what}")
