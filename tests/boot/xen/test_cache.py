"""ovmfgen.boot.xen.cache: the cache keys of the Xen assets (pinned: a warm cache stays warm)."""

from __future__ import annotations


from ovmfgen.boot.xen import cache, debian


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
