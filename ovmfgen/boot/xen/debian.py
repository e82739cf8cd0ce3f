"""What a Xen boot runs, from Debian bookworm: package names, apt mirrors, candidate versions, downloads."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovmfgen.errors import OvmfgenError
from ovmfgen.host.apt import AptSource, ensure_apt_packages, read_apt_sources
from ovmfgen.run import run
from ovmfgen.ui import say

# --- What we run: Debian bookworm's Xen 4.17 ------------------------------------------------------

SUITE = "bookworm"
SECURITY_SUITE = f"{SUITE}-security"
XEN_SERIES = "4.17"
HYPERVISOR_PACKAGE = f"xen-hypervisor-{XEN_SERIES}-amd64"
UTILS_PACKAGE = f"xen-utils-{XEN_SERIES}"
KERNEL_META_PACKAGE = "linux-image-amd64"
#: HVM guests' device model (hvmloader itself comes with the tools): installed in dom0.
DEVICE_MODEL_PACKAGE = "qemu-system-xen"
#: Host tools a Xen boot needs (apt package names): the dom0 build and QEMU itself.
HOST_PACKAGES = ("debootstrap", "cpio", "qemu-system-x86")
#: Packages debootstrap adds to minbase: modprobe/insmod, ps, and busybox for poweroff.
DEBOOTSTRAP_INCLUDE = ("kmod", "procps", "busybox")
#: dom0's Xen driver modules, in load order (xenfs needs xen-privcmd).
DOM0_MODULES = ("xen-privcmd", "xenfs", "xen-evtchn", "xen-gntdev", "xen-gntalloc")
#: Bump when the way the dom0 root file system is made changes (forces a rebuild of that entry).
ROOTFS_RECIPE = 3
#: Stripped from the root file system: only people read these, and they cost initramfs unpack time.
ROOTFS_STRIP = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
                "usr/share/lintian", "var/cache/apt", "var/lib/apt/lists")

# --- apt: mirrors, versions, downloads ------------------------------------------------------------


def pick_mirror(sources: Sequence[AptSource], suite: str) -> str | None:
    """The URI of the first binary (``deb``) source carrying ``suite``'s main component, or None."""
    for s in sources:
        if "deb" in s.types and suite in s.suites and "main" in s.components \
                and not s.uri.startswith(("cdrom:", "file:")):
            return s.uri.rstrip("/")
    return None


def debian_mirrors(sources: Sequence[AptSource] | None = None) -> tuple[str, str | None]:
    """(bookworm mirror, bookworm-security mirror or None), taken from the machine's apt sources."""
    sources = read_apt_sources() if sources is None else sources  # the setup stage's reader
    main = pick_mirror(sources, SUITE)
    if main is None:
        raise OvmfgenError(f"no apt source for Debian {SUITE} main in /etc/apt: cannot fetch Xen packages")
    return main, pick_mirror(sources, SECURITY_SUITE)


def parse_apt_show(text: str) -> dict[str, dict[str, str]]:
    """``apt-cache show`` records as {package: {Field: value}} (first record per package wins)."""
    records: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", text):
        rec: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1].isspace() and key:
                rec[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                rec[key] = value.strip()
        if "Package" in rec:
            records.setdefault(rec["Package"], rec)
    return records


def _apt_candidates(packages: Sequence[str]) -> dict[str, dict[str, str]]:
    proc = run(["apt-cache", "show", "--no-all-versions", *packages], check=False)
    return parse_apt_show(proc.stdout)


def apt_candidates(packages: Sequence[str]) -> dict[str, dict[str, str]]:
    """apt's candidate record of each package; runs ``apt-get update`` once if one is unknown."""
    recs = _apt_candidates(packages)
    if any(p not in recs for p in packages):
        say("apt does not know every Xen package yet: apt-get update")
        run(["apt-get", "update"], timeout=600)
        recs = _apt_candidates(packages)
    missing = [p for p in packages if p not in recs]
    if missing:
        raise OvmfgenError(f"apt has no candidate for {', '.join(missing)} (is this Debian {SUITE}?)")
    return recs


def kernel_package(meta_record: dict[str, str]) -> str:
    """The ``linux-image-<abi>-amd64`` package the meta package's candidate depends on."""
    for dep in meta_record.get("Depends", "").split(","):
        name = dep.strip().split(" ", 1)[0]
        if re.fullmatch(r"linux-image-\d.*-amd64", name):
            return name
    raise OvmfgenError(f"{KERNEL_META_PACKAGE} depends on no linux-image-*-amd64 package")


@dataclass(frozen=True)
class XenVersions:
    """Package versions the cache is keyed by."""

    hypervisor: str
    utils: str
    kernel_package: str
    kernel: str
    #: qemu-system-xen's version (HVM guests' device model, in dom0).
    device_model: str = ""

    def rootfs_key(self) -> str:
        """Key of the dom0 root file system: what goes into it, and how it is made."""
        recipe = {"suite": SUITE, "utils": self.utils, "device_model": self.device_model, "include": list(DEBOOTSTRAP_INCLUDE),
                  "strip": list(ROOTFS_STRIP), "recipe": ROOTFS_RECIPE}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def query_versions() -> XenVersions:
    """The candidate versions apt reports for the hypervisor, the tools and dom0's kernel."""
    recs = apt_candidates([HYPERVISOR_PACKAGE, UTILS_PACKAGE, KERNEL_META_PACKAGE, DEVICE_MODEL_PACKAGE])
    kpkg = kernel_package(recs[KERNEL_META_PACKAGE])
    krec = apt_candidates([kpkg])[kpkg]
    return XenVersions(recs[HYPERVISOR_PACKAGE]["Version"], recs[UTILS_PACKAGE]["Version"], kpkg,
                       krec["Version"], recs[DEVICE_MODEL_PACKAGE]["Version"])


def safe_name(version: str) -> str:
    """A Debian version as a directory-name component (epoch colon and other oddities made ``_``)."""
    return re.sub(r"[^A-Za-z0-9.+~-]", "_", version)


def ensure_host_packages(packages: Sequence[str] = HOST_PACKAGES) -> None:
    """apt-get install whichever of ``packages`` is missing (the setup stage's installer)."""
    ensure_apt_packages(tuple(packages))


def _apt_download(package: str, version: str, dest: Path) -> Path:
    """``apt-get download PACKAGE=VERSION`` into ``dest``; the .deb path."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["apt-get", "download", f"{package}={version}"], cwd=dest, timeout=900)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        raise OvmfgenError(f"apt-get download {package}={version} left no .deb in {dest}")
    return debs[-1]


