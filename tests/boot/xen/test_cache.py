"""ovmfgen.boot.xen.cache: the cache keys and paths of the Xen assets (pinned: a warm cache stays warm)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ovmfgen.boot.xen import cache, debian
from ovmfgen.errors import OvmfgenError


def test_4_17_cache_keys_are_unchanged_by_4_20():
    # The 4.17 dom0 entry cached on machines before 4.20 existed keeps its key (no rebuild).
    v = debian.XenVersions("4.17.7+13-g2445b30a44-0+deb12u1", "4.17.7+13-g2445b30a44-0+deb12u1",
                           "linux-image-6.1.0-57-amd64", "6.1.192-3", "1:7.2+dfsg-7+deb12u18+b3")
    assert v.rootfs_key() == "07b0779ed7cfe2af"
    assert cache.xen_cache_dir(debian.XEN_417) == cache.xen_cache_dir()
    assert cache.xen_cache_dir(debian.XEN_420) == cache.xen_cache_dir() / "4.20"
    # the same tools version in another suite is another root file system
    from dataclasses import replace
    assert replace(v, suite="trixie").rootfs_key() != v.rootfs_key()
    # 4.20's dom0 entry kept its key when its outer QEMU became the host's (no rebuild)
    t = debian.XenVersions("4.20.4+63-g7abfd2bce2-0+deb13u1", "4.20.4+63-g7abfd2bce2-0+deb13u1",
                           "linux-image-6.1.0-57-amd64", "6.1.192-3", "1:10.0.13+ds-0+deb13u1", "trixie")
    assert t.rootfs_key() == "a8ebbe8ae509f605"


def test_cache_key_follows_the_tools_version_only():
    a = debian.XenVersions("4.17.7", "4.17.7", "linux-image-6.1.0-56-amd64", "6.1.192-2")
    assert a.rootfs_key() == debian.XenVersions("4.17.7", "4.17.7", "linux-image-6.1.0-57-amd64", "6.1.200-1").rootfs_key()
    assert a.rootfs_key() != debian.XenVersions("4.17.7", "4.17.8", "linux-image-6.1.0-56-amd64", "6.1.192-2").rootfs_key()
    assert len(a.rootfs_key()) == 16
    # HVM's device model lives in dom0's root file system: its version is part of the key
    assert a.rootfs_key() != debian.XenVersions("4.17.7", "4.17.7", "linux-image-6.1.0-56-amd64", "6.1.192-2",
                                                "1:7.2+dfsg-7+deb12u18").rootfs_key()


# --- A warm cache stays warm ------------------------------------------------------------------------

V417 = debian.XenVersions("4.17.7+13-g2445b30a44-0+deb12u1", "4.17.7+13-g2445b30a44-0+deb12u1",
                          "linux-image-6.1.0-57-amd64", "6.1.192-3", "1:7.2+dfsg-7+deb12u18+b3")
V420 = debian.XenVersions("4.20.4+63-g7abfd2bce2-0+deb13u1", "4.20.4+63-g7abfd2bce2-0+deb13u1",
                          "linux-image-6.1.0-57-amd64", "6.1.192-3", "1:10.0.13+ds-0+deb13u1", "trixie")


def _entry(d: Path, stamp: dict, files: list[str]) -> None:
    """An entry as the cache code before cacheentry wrote it (stamp.json: sorted JSON, indent 2)."""
    for f in files:
        (d / f).parent.mkdir(parents=True, exist_ok=True)
        (d / f).write_bytes(b"cached " + f.encode())
    (d / "stamp.json").write_text(json.dumps(stamp, indent=2, sort_keys=True) + "\n")


def _warm_cache(xen: Path) -> None:
    """Both versions' entries, at the paths (spelled out: they must not move) machines already have."""
    kos = [f"modules/{m}.ko" for m in debian.DOM0_MODULES]
    _entry(xen / "kernel-linux-image-6.1.0-57-amd64-6.1.192-3",
           {"package": "linux-image-6.1.0-57-amd64", "version": "6.1.192-3"}, ["vmlinuz", *kos])
    _entry(xen / "hypervisor-4.17.7+13-g2445b30a44-0+deb12u1",
           {"package": "xen-hypervisor-4.17-amd64", "version": V417.hypervisor}, ["xen-4.17"])
    _entry(xen / "dom0-07b0779ed7cfe2af", {"suite": "bookworm", "utils": V417.utils, "recipe": 3,
                                           "key": "07b0779ed7cfe2af"}, ["dom0.cpio"])
    _entry(xen / "4.20" / "hypervisor-4.20.4+63-g7abfd2bce2-0+deb13u1",
           {"package": "xen-hypervisor-4.20-amd64", "version": V420.hypervisor}, ["xen-4.20"])
    _entry(xen / "4.20" / "dom0-a8ebbe8ae509f605", {"suite": "trixie", "utils": V420.utils, "recipe": 3,
                                                    "key": "a8ebbe8ae509f605"}, ["dom0.cpio"])


@pytest.fixture
def no_apt(monkeypatch: pytest.MonkeyPatch):
    """No host packages, no apt: versions as given; a download is recorded and fails."""
    downloads: list[str] = []

    def download(package, version, dest, opts=()):
        downloads.append(package)
        raise OvmfgenError(f"test: no download of {package}")

    monkeypatch.setattr(cache, "ensure_host_packages", lambda: None)
    monkeypatch.setattr(cache, "private_apt", lambda release, d: ["-o", "private"])
    monkeypatch.setattr(cache, "_apt_download", download)
    return downloads


@pytest.mark.parametrize("release, v", [(debian.XEN_417, V417), (debian.XEN_420, V420)], ids=["4.17", "4.20"])
def test_a_warm_cache_is_used_as_it_is(isolated_cache: Path, no_apt: list[str], monkeypatch: pytest.MonkeyPatch,
                                       release, v) -> None:
    xen = isolated_cache / "xen"
    _warm_cache(xen)
    before = {p: p.read_bytes() for p in xen.rglob("*") if p.is_file()}
    monkeypatch.setattr(cache, "query_versions", lambda rel, opts: v)
    assets = cache.prepare_xen_cache(release)
    assert no_apt == []
    root = xen / release.cache_subdir if release.cache_subdir else xen
    assert assets.xen == root / f"hypervisor-{debian.safe_name(v.hypervisor)}" / f"xen-{release.series}"
    assert assets.dom0_kernel == xen / "kernel-linux-image-6.1.0-57-amd64-6.1.192-3" / "vmlinuz"
    assert assets.rootfs_cpio == root / f"dom0-{v.rootfs_key()}" / "dom0.cpio"
    assert {p: p.read_bytes() for p in xen.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_killed_runs_leftovers_go_and_a_changed_version_is_made_again(
        isolated_cache: Path, no_apt: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    xen = isolated_cache / "xen"
    _warm_cache(xen)
    (xen / ".dom0.k2j_3x.tmp").mkdir()   # a stage of the code before cacheentry, killed
    (xen / ".dom0.k2j_3x.tmp" / "root").mkdir()
    (xen / ".kernel-linux-image-6.1.0-57-amd64-6.1.192-3.old").mkdir()   # killed inside replace_dir
    newer = dataclasses.replace(V417, hypervisor="4.17.8-1")
    monkeypatch.setattr(cache, "query_versions", lambda rel, opts: newer)
    with pytest.raises(OvmfgenError, match="no download of xen-hypervisor-4.17-amd64"):
        cache.prepare_xen_cache(debian.XEN_417)
    assert no_apt == ["xen-hypervisor-4.17-amd64"]
    # the leftovers are gone, the failed stage too; the entries in place are untouched
    assert sorted(p.name for p in xen.iterdir()) == [
        ".lock", "4.20", "dom0-07b0779ed7cfe2af", "hypervisor-4.17.7+13-g2445b30a44-0+deb12u1",
        "kernel-linux-image-6.1.0-57-amd64-6.1.192-3"]
    # a stamp that says another version is no entry of this one
    stamp = xen / "hypervisor-4.17.7+13-g2445b30a44-0+deb12u1" / "stamp.json"
    stamp.write_text(stamp.read_text().replace(V417.hypervisor, "4.17.6"))
    monkeypatch.setattr(cache, "query_versions", lambda rel, opts: V417)
    with pytest.raises(OvmfgenError, match="no download of xen-hypervisor-4.17-amd64"):
        cache.prepare_xen_cache(debian.XEN_417)
