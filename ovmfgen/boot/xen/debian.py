"""What a Xen boot runs, from Debian: the Xen releases (4.17 from bookworm, 4.20 from trixie), package names,
apt mirrors, candidate versions, downloads."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovmfgen.errors import OvmfgenError
from ovmfgen.fsutil import write_if_changed
from ovmfgen.apt import AptSource, ensure_apt_packages, private_apt_options, read_apt_sources
from ovmfgen.run import CommandError, run
from ovmfgen.ui import say

# --- What we run: Debian bookworm's Xen 4.17 (the default; 4.20 is XEN_420 below) ----------------

SUITE = "bookworm"
SECURITY_SUITE = f"{SUITE}-security"
XEN_SERIES = "4.17"
KERNEL_META_PACKAGE = "linux-image-amd64"
#: HVM guests' device model (hvmloader itself comes with the tools): installed in dom0.
DEVICE_MODEL_PACKAGE = "qemu-system-xen"
#: Host tools a Xen boot needs (apt package names): the dom0 build and QEMU itself.
HOST_PACKAGES = ("debootstrap", "cpio", "qemu-system-x86")
#: Packages debootstrap adds to minbase: modprobe/insmod, ps, and busybox for poweroff.
DEBOOTSTRAP_INCLUDE = ("kmod", "procps", "busybox")
#: dom0's driver modules, in load order (xenfs needs xen-privcmd); loop and xen-blkback serve guest disks.
DOM0_MODULES = ("xen-privcmd", "xenfs", "xen-evtchn", "xen-gntdev", "xen-gntalloc", "loop", "xen-blkback")
#: Bump when the way the dom0 root file system is made changes (forces a rebuild of that entry).
ROOTFS_RECIPE = 3
#: Stripped from the root file system: only people read these, and they cost initramfs unpack time.
ROOTFS_STRIP = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
                "usr/share/lintian", "var/cache/apt", "var/lib/apt/lists")


@dataclass(frozen=True)
class XenRelease:
    """One Xen version ovmfgen boots: where its packages come from, and how much memory it gets.

    Both run under the host's QEMU 7.2 with icount (measured on this machine, nested.QEMU_ICOUNT_SHIFTS):
    QEMU 10 makes Xen 4.17's guests triple-fault, aborts under Xen 4.20 without icount
    (tcg_handle_interrupt) and stops on "Bad icount read" with it; QEMU 7.2 without icount aborts both.
    """

    series: str             # "4.17"
    suite: str              # the Debian suite of the hypervisor, the tools and dom0's userland
    #: True: the machine's own apt knows ``suite`` (bookworm); False: a private apt configuration for it.
    host_apt: bool
    qemu_memory_mib: int
    dom0_mem_mib: int
    #: Under ``cache_dir()/xen``: "" for 4.17 (where its cache always was), the series otherwise.
    cache_subdir: str

    @property
    def hypervisor_package(self) -> str:
        """The hypervisor's Debian package."""
        return f"xen-hypervisor-{self.series}-amd64"

    @property
    def utils_package(self) -> str:
        """The Xen tools' Debian package (xl, xenstored, hvmloader), installed in dom0."""
        return f"xen-utils-{self.series}"

    @property
    def security_suite(self) -> str:
        """The suite's security updates."""
        return f"{self.suite}-security"


XEN_417 = XenRelease("4.17", "bookworm", True, 3072, 1536, "")
# dom0 of 4.20 needs more than 1 GiB: trixie's qemu-system-xen (HVM device model) and its libraries
# live in dom0's initramfs, and with 1 GiB HVM guests' device model did not start.
XEN_420 = XenRelease("4.20", "trixie", False, 3072, 1536, "4.20")
XEN_RELEASES = {r.series: r for r in (XEN_417, XEN_420)}
DEFAULT_XEN = XEN_417.series


def check_xen(version: str | XenRelease | None) -> XenRelease:
    """The release ``--xen`` names (None: the default, 4.17), or one clear error."""
    if isinstance(version, XenRelease):
        return version
    key = DEFAULT_XEN if version is None else str(version).strip()
    if key not in XEN_RELEASES:
        raise OvmfgenError(f"unknown Xen version {version!r}: expected {' or '.join(sorted(XEN_RELEASES))}")
    return XEN_RELEASES[key]


# --- apt: mirrors, versions, downloads ------------------------------------------------------------


def pick_mirror(sources: Sequence[AptSource], suite: str) -> str | None:
    """The URI of the first binary (``deb``) source carrying ``suite``'s main component, or None."""
    for s in sources:
        if "deb" in s.types and suite in s.suites and "main" in s.components \
                and not s.uri.startswith(("cdrom:", "file:")):
            return s.uri.rstrip("/")
    return None


def debian_mirrors(sources: Sequence[AptSource] | None = None) -> tuple[str, str | None]:
    """(bookworm mirror, bookworm-security mirror or None), taken from the machine's apt sources.

    The same archive serves every Debian suite: a trixie dom0 comes from these URIs too.
    """
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


def _apt_candidates(packages: Sequence[str], opts: Sequence[str] = ()) -> dict[str, dict[str, str]]:
    proc = run(["apt-cache", *opts, "show", "--no-all-versions", *packages], check=False)
    return parse_apt_show(proc.stdout)


def apt_candidates(packages: Sequence[str], opts: Sequence[str] = (), suite: str = SUITE) -> dict[str, dict[str, str]]:
    """apt's candidate record of each package; runs ``apt-get update`` once if one is unknown.

    ``opts``: a private apt configuration (``private_apt_options``) instead of the machine's.
    """
    recs = _apt_candidates(packages, opts)
    if any(p not in recs for p in packages):
        say(f"apt does not know every Xen package of {suite} yet: apt-get update")
        try:
            run(["apt-get", *opts, "-o", "Acquire::Check-Valid-Until=false", "update"], timeout=600)
        except CommandError as exc:
            raise OvmfgenError(f"apt-get update for Debian {suite} failed (no network?): {exc.first_error()}") \
                from None
        recs = _apt_candidates(packages, opts)
    missing = [p for p in packages if p not in recs]
    if missing:
        raise OvmfgenError(f"apt has no candidate for {', '.join(missing)} in Debian {suite}")
    return recs


def private_apt_sources(release: XenRelease, main: str, security: str | None) -> str:
    """The deb822 sources of ``release``'s suite (and its security suite) on the machine's own archive."""
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    text = f"Types: deb\nURIs: {main}\nSuites: {release.suite}\nComponents: main\nSigned-By: {keyring}\n"
    if security:
        text += f"\nTypes: deb\nURIs: {security}\nSuites: {release.security_suite}\nComponents: main\n" \
                f"Signed-By: {keyring}\n"
    return text


def private_apt(release: XenRelease, adir: Path) -> list[str]:
    """Set up (once) a private apt configuration for ``release``'s suite in ``adir``; its apt options."""
    main, security = debian_mirrors()
    for sub in ("sources.list.d", "lists/partial", "cache/archives/partial"):
        (adir / sub).mkdir(parents=True, exist_ok=True)
    write_if_changed(adir / "sources.list.d" / f"ovmfgen-xen-{release.suite}.sources",
                     private_apt_sources(release, main, security).encode())
    return private_apt_options(adir)


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
    #: The suite of dom0's userland (bookworm for 4.17, trixie for 4.20).
    suite: str = SUITE

    def rootfs_key(self) -> str:
        """Key of the dom0 root file system: what goes into it, and how it is made."""
        recipe = {"suite": self.suite, "utils": self.utils, "device_model": self.device_model,
                  "include": list(DEBOOTSTRAP_INCLUDE),
                  "strip": list(ROOTFS_STRIP), "recipe": ROOTFS_RECIPE}
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


def query_versions(release: XenRelease = XEN_417, opts: Sequence[str] = ()) -> XenVersions:
    """The candidate versions apt reports for the hypervisor, the tools and dom0's kernel.

    ``opts``: the private apt configuration of a release the machine's apt does not carry (its
    hypervisor, tools and device model come from there). dom0's kernel is always the
    machine's own suite's (bookworm's 6.1, whose Xen drivers are the modules dom0 loads).
    """
    wanted = [release.hypervisor_package, release.utils_package, DEVICE_MODEL_PACKAGE]
    recs = apt_candidates(wanted, opts, release.suite) if opts else \
        apt_candidates([*wanted, KERNEL_META_PACKAGE])
    meta = recs[KERNEL_META_PACKAGE] if not opts else apt_candidates([KERNEL_META_PACKAGE])[KERNEL_META_PACKAGE]
    kpkg = kernel_package(meta)
    krec = apt_candidates([kpkg])[kpkg]
    return XenVersions(recs[release.hypervisor_package]["Version"], recs[release.utils_package]["Version"], kpkg,
                       krec["Version"], recs[DEVICE_MODEL_PACKAGE]["Version"], release.suite)


def safe_name(version: str) -> str:
    """A Debian version as a directory-name component (epoch colon and other oddities made ``_``)."""
    return re.sub(r"[^A-Za-z0-9.+~-]", "_", version)


def ensure_host_packages(packages: Sequence[str] = HOST_PACKAGES) -> None:
    """apt-get install whichever of ``packages`` is missing (the setup stage's installer)."""
    ensure_apt_packages(tuple(packages))


def _apt_download(package: str, version: str, dest: Path, opts: Sequence[str] = ()) -> Path:
    """``apt-get download PACKAGE=VERSION`` into ``dest`` (``opts``: a private apt configuration); the .deb path."""
    dest.mkdir(parents=True, exist_ok=True)
    run(["apt-get", *opts, "download", f"{package}={version}"], cwd=dest, timeout=900)
    debs = sorted(dest.glob(f"{package}_*.deb"))
    if not debs:
        raise OvmfgenError(f"apt-get download {package}={version} left no .deb in {dest}")
    return debs[-1]


