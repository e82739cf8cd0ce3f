"""Boot truth on real Xen: run a PVH ELF as a guest of Xen 4.17 or 4.20, itself running nested under QEMU TCG.

Xen 4.17 (the default) comes from Debian bookworm; Xen 4.20 comes from trixie, with a trixie dom0
(``debian.XenRelease``). Both run under the host's QEMU (7.2, with icount: ``nested.QEMU_ICOUNT_SHIFTS``
and ``limits`` say why). For 4.17 the pieces are these bookworm packages, cached under
``cache_dir()/xen`` (4.20's: the same in trixie, under ``cache_dir()/xen/4.20``):

* the hypervisor (``xen-hypervisor-4.17-amd64``), gunzipped, because QEMU's multiboot loader wants
  the plain ELF;
* a dom0 kernel (the ``linux-image-<abi>-amd64`` that ``linux-image-amd64`` depends on) and the five
  Xen driver modules dom0 needs (privcmd, xenfs, evtchn, gntdev, gntalloc);
* a dom0 root file system (debootstrap minbase + ``xen-utils-4.17`` from bookworm and
  bookworm-security, so the tools match the hypervisor), packed once as a newc cpio (~155 MB).

Each entry is keyed by the package versions apt reports, so it is rebuilt only when those change.
Per run, a small second cpio is appended to the big one: ``/init`` (brings up dom0's Xen services),
the firmware and the test script. QEMU boots Xen with dom0 = that kernel + initramfs; dom0 runs
``xl create`` on the firmware as a ``type="pvh"`` guest and watches its PV console for the UEFI Shell
prompt. Everything dom0 prints goes to Xen's console, so a single serial log holds the hypervisor's
messages, the guest's debug output (``(d1) ...``, when the firmware writes debug output to the
hypervisor console port 0xe9), dom0's events and, at the end, the guest console copied out.

The package, one job per module (imports flow downwards only):

* ``verdicts``: the markers dom0 prints, ``Verdict``/``XenBootResult`` and ``classify_xen_run``, which
  turns the logs into exactly one verdict (a pure function, unit-tested on captured logs);
* ``debian``: package names, apt mirrors (from the machine's apt sources), candidate versions;
* ``cache``: the cache entries (hypervisor, dom0 kernel + modules, dom0 root file system);
* ``gpt``: GPT disk images byte for byte, and the check a user's disk gets (``--disk``);
* ``osdisk``: the OS disk made from Debian packages (a unified kernel image, cached) and the persistence disk;
* ``persist``: the persistence guest's startup.nsh and what its two boots read back;
* ``guests``: the generated xl config, dom0 /init, test and hotplug scripts, and the per-run overlay cpio;
* ``watch``: the host's watch over a run: wall seconds per guest, the host's speed, stalls;
* ``nested``: the QEMU run itself, ``boot_xen`` (runs it all) and ``boot_xen_command`` (the CLI entry);
* ``bench``: ``invoke bench --xen``, the real-Xen figure (one nested boot of the guest set).

How long things may take: dom0 waits for each guest by its own clock (``guests.GuestDeadline``:
no new guest output for a while, or a cap, stretched by dom0's measure of the host's speed), and
prints a heartbeat while it waits; the host kills QEMU only when the serial log stops growing
(``watch.STALL_S``) or at a generous wall-clock safety net (``nested.wall_cap_s``). So a loaded host
makes a run slower, never a guest's verdict a false TIMEOUT, and a real hang still ends.
"""

from ovmfgen.boot.xen.debian import XEN_RELEASES, XenRelease, check_xen
from ovmfgen.boot.xen.guests import XenGuest, check_mode, check_vcpus
from ovmfgen.boot.xen.nested import GuestOutcome, boot_xen, boot_xen_command, boot_xen_guests, check_disk_request
from ovmfgen.boot.xen.verdicts import Verdict, XenBootResult, classify_xen_run, format_result

__all__ = ["GuestOutcome", "Verdict", "XEN_RELEASES", "XenBootResult", "XenGuest", "XenRelease", "boot_xen",
           "boot_xen_command", "boot_xen_guests", "check_disk_request", "check_mode", "check_vcpus", "check_xen",
           "classify_xen_run", "format_result"]
