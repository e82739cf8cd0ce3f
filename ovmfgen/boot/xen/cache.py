"""The Xen boot cache under ``cache_dir()/xen``: hypervisor, dom0 kernel + modules, dom0 root file system.

Xen 4.17's entries sit in ``xen/`` itself (where they always were), 4.20's in ``xen/4.20/``; dom0's
kernel (bookworm's) is shared, in ``xen/``. One lock (``xen/.lock``) serializes all preparation; each
entry is a ``cacheentry`` (temp dir, stamp.json, rename; killed runs' leftovers removed).
"""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ovmfgen.boot.xen.debian import (
    DEBOOTSTRAP_INCLUDE,
    DEVICE_MODEL_PACKAGE,
    DOM0_MODULES,
    ROOTFS_RECIPE,
    ROOTFS_STRIP,
    XEN_417,
    XenRelease,
    XenVersions,
    _apt_download,
    debian_mirrors,
    ensure_host_packages,
    private_apt,
    query_versions,
    safe_name,
)
from ovmfgen.cacheentry import ensure
from ovmfgen.errors import OvmfgenError
from ovmfgen.fsutil import Lock, exclusive
from ovmfgen.paths import cache_dir
from ovmfgen.run import run
from ovmfgen.ui import say

# --- The cache ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class XenAssets:
    """Everything a Xen boot needs besides the firmware, all inside the cache."""

    xen: Path            # the hypervisor, plain ELF (multiboot)
    dom0_kernel: Path    # vmlinuz
    modules_dir: Path    # the DOM0_MODULES as <name>.ko
    rootfs_cpio: Path    # dom0's root file system, newc cpio
    versions: XenVersions
    release: XenRelease = XEN_417


def xen_cache_dir(release: XenRelease | None = None) -> Path:
    """Where the Xen boot assets live (inside ovmfgen's cache; safe to delete); ``release``'s own part."""
    base = cache_dir() / "xen"
    return base / release.cache_subdir if release is not None and release.cache_subdir else base


#: The lock of the Xen cache (``xen/.lock``, for 4.17's and 4.20's entries alike).
CACHE_LOCK = ".lock"
#: Said while waiting for another run's preparation.
CACHE_LOCK_WHAT = "another run is preparing the Xen cache"

# Each kind of entry keeps only its newest version (``siblings``): each dom0 cpio is ~155 MB.


def _prepare_hypervisor(root: Path, v: XenVersions, release: XenRelease, opts: Sequence[str], lock: Lock) -> Path:
    final = root / f"hypervisor-{safe_name(v.hypervisor)}"
    xen = final / f"xen-{release.series}"

    def make(stage: Path) -> None:
        say(f"xen cache: hypervisor {v.hypervisor}")
        deb = _apt_download(release.hypervisor_package, v.hypervisor, stage / "dl", opts)
        run(["dpkg", "-x", deb, stage / "x"])
        gz = stage / "x" / "boot" / f"xen-{release.series}-amd64.gz"
        if not gz.is_file():
            raise OvmfgenError(f"{deb.name} has no boot/{gz.name}")
        with gzip.open(gz, "rb") as src:
            data = src.read()
        if data[:4] != b"\x7fELF":
            raise OvmfgenError(f"{gz.name} does not hold an ELF image")
        (stage / xen.name).write_bytes(data)
        shutil.rmtree(stage / "dl")
        shutil.rmtree(stage / "x")

    ensure(final, make, stamp={"package": release.hypervisor_package, "version": v.hypervisor}, lock=lock,
           complete=lambda d: (d / xen.name).is_file(), siblings="hypervisor-*")
    return xen


def _prepare_kernel(root: Path, v: XenVersions, lock: Lock) -> tuple[Path, Path]:
    final = root / f"kernel-{safe_name(v.kernel_package)}-{safe_name(v.kernel)}"

    def make(stage: Path) -> None:
        say(f"xen cache: dom0 kernel {v.kernel_package} {v.kernel}")
        deb = _apt_download(v.kernel_package, v.kernel, stage / "dl")
        x = stage / "x"
        run(["dpkg", "-x", deb, x])
        vmlinuz = sorted((x / "boot").glob("vmlinuz-*"))
        if not vmlinuz:
            raise OvmfgenError(f"{deb.name} has no boot/vmlinuz-*")
        shutil.copyfile(vmlinuz[0], stage / "vmlinuz")
        mods = stage / "modules"
        mods.mkdir()
        found = {p.name[:-3]: p for p in (x / "lib" / "modules").glob("*/kernel/drivers/**/*.ko")}
        for m in DOM0_MODULES:
            if m not in found:
                raise OvmfgenError(f"{deb.name} has no module {m}.ko under drivers/ (built in?)")
            shutil.copyfile(found[m], mods / f"{m}.ko")
        shutil.rmtree(stage / "dl")
        shutil.rmtree(x)

    # An entry made before a module joined DOM0_MODULES lacks it: make it again.
    ensure(final, make, stamp={"package": v.kernel_package, "version": v.kernel}, lock=lock,
           complete=lambda d: all((d / "modules" / f"{m}.ko").is_file() for m in DOM0_MODULES), siblings="kernel-*")
    return final / "vmlinuz", final / "modules"


def _chroot_apt_install(rootfs: Path, packages: Sequence[str]) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8",
           "HOME": "/root"}
    # The mirror may be a dated snapshot whose Release files are past Valid-Until, as on the host.
    opts = ["-o", "Acquire::Check-Valid-Until=false"]
    run(["chroot", rootfs, "apt-get", *opts, "update"], env=env, timeout=900)
    run(["chroot", rootfs, "apt-get", *opts, "install", "-y", "--no-install-recommends", *packages],
        env=env, timeout=1800)


def _pack_cpio(tree: Path, out: Path) -> None:
    """Pack ``tree`` as a newc cpio (sorted names, for a stable archive) with GNU cpio."""
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(tree):
        rel = os.path.relpath(dirpath, tree)
        if rel != ".":
            names.append(rel)
        # A symlink to a directory (bookworm's merged /bin, /lib, /sbin -> usr/...) is listed among
        # dirnames but never walked: archive it as the link it is.
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = sorted(d for d in dirnames if d not in links)
        names += [os.path.join(rel, f) if rel != "." else f for f in sorted(filenames + links)]
    run(["cpio", "--create", "--format=newc", "--null", "--reproducible", "--quiet", "-O", out],
        cwd=tree, input_text="\0".join(names) + "\0", timeout=900)


def _debootstrap(rootfs: Path, release: XenRelease, packages: Sequence[str]) -> None:
    """A minbase ``release.suite`` tree at ``rootfs`` (from the machine's own Debian archive) + ``packages``."""
    main, security = debian_mirrors()
    run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBOOTSTRAP_INCLUDE)}", release.suite,
         rootfs, main], timeout=1800)
    lines = [f"deb {main} {release.suite} main"]
    if security:
        lines.append(f"deb {security} {release.security_suite} main")
    else:
        say(f"no security apt source on this machine: {release.suite}'s packages without its security updates")
    (rootfs / "etc/apt/sources.list").write_text("\n".join(lines) + "\n")
    # No daemons may start inside the chroot while packages install.
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    _chroot_apt_install(rootfs, packages)
    policy.unlink()


def _strip(rootfs: Path) -> None:
    for rel in ROOTFS_STRIP:
        d = rootfs / rel
        if d.is_dir():
            shutil.rmtree(d)
            d.mkdir()
    (rootfs / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def _prepare_rootfs(root: Path, v: XenVersions, release: XenRelease, lock: Lock) -> Path:
    final = root / f"dom0-{v.rootfs_key()}"
    cpio = final / "dom0.cpio"

    def make(stage: Path) -> dict[str, object]:
        if os.geteuid() != 0:
            raise OvmfgenError("building the Xen dom0 root file system (debootstrap, chroot) needs root")
        say(f"xen cache: dom0 root file system (debootstrap {release.suite} + {release.utils_package} {v.utils}); "
            "a few minutes, once")
        rootfs = stage / "root"
        _debootstrap(rootfs, release, [f"{release.utils_package}={v.utils}",
                                       f"{DEVICE_MODEL_PACKAGE}={v.device_model}"])
        got = run(["chroot", rootfs, "dpkg-query", "-W", "-f=${Version}", release.utils_package]).stdout.strip()
        _strip(rootfs)
        _pack_cpio(rootfs, stage / cpio.name)
        shutil.rmtree(rootfs)
        return {"utils": got}  # the version dpkg reports inside dom0

    ensure(final, make, stamp={"suite": release.suite, "recipe": ROOTFS_RECIPE, "key": v.rootfs_key()}, lock=lock,
           complete=lambda d: (d / cpio.name).is_file(), siblings="dom0-*")
    return cpio


def prepare_xen_cache(release: XenRelease = XEN_417) -> XenAssets:
    """Make sure the cache holds ``release``'s Xen, dom0's kernel + modules and dom0's root file system.

    Idempotent; each entry is keyed by the package versions apt reports and rebuilt only when
    they change; built in a temp dir and renamed into place. Needs root (apt, debootstrap, chroot).
    A release the machine's apt does not carry (trixie's 4.20 on bookworm) is looked up through a
    private apt configuration in its cache directory, on the machine's own Debian archive.
    """
    base = xen_cache_dir()
    root = xen_cache_dir(release)
    with exclusive(base / CACHE_LOCK, CACHE_LOCK_WHAT) as lock:
        ensure_host_packages()
        root.mkdir(parents=True, exist_ok=True)
        opts = [] if release.host_apt else private_apt(release, root / "apt")
        v = query_versions(release, opts)
        if v.hypervisor != v.utils:
            say(f"note: {release.hypervisor_package} {v.hypervisor} and {release.utils_package} {v.utils} differ")
        xen = _prepare_hypervisor(root, v, release, opts, lock)
        vmlinuz, modules = _prepare_kernel(base, v, lock)
        cpio = _prepare_rootfs(root, v, release, lock)
    return XenAssets(xen, vmlinuz, modules, cpio, v, release)


