"""ovmfgen.boot.xen.debian: the Xen releases, this machine's Debian archive for them, package versions."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovmfgen import apt
from ovmfgen.boot.xen import debian
from ovmfgen.errors import OvmfgenError


def test_xen_releases_and_what_each_needs():
    a, b = debian.check_xen("4.17"), debian.check_xen("4.20")
    assert debian.check_xen(None) is a and debian.DEFAULT_XEN == "4.17"
    assert (a.suite, a.host_apt, a.qemu_memory_mib, a.cache_subdir) == ("bookworm", True, 3072, "")
    assert (b.suite, b.host_apt, b.qemu_memory_mib, b.cache_subdir) == ("trixie", False, 3072, "4.20")
    assert b.hypervisor_package == "xen-hypervisor-4.20-amd64" and b.utils_package == "xen-utils-4.20"
    assert b.security_suite == "trixie-security" and b.dom0_mem_mib > 1024
    assert debian.check_xen(b) is b


@pytest.mark.parametrize("bad", ["4.18", "4", "", "xen-4.20", "4.20.4"])
def test_unknown_xen_version_is_one_clear_line(bad):
    with pytest.raises(OvmfgenError) as e:
        debian.check_xen(bad)
    assert str(e.value) == f"error: unknown Xen version {bad!r}: expected 4.17 or 4.20"


def test_private_apt_sources_for_trixie_use_the_machines_archive(tmp_path):
    text = debian.private_apt_sources(debian.XEN_420, "http://mirror.example/debian",
                                      "http://mirror.example/debian-security")
    assert "URIs: http://mirror.example/debian\nSuites: trixie\n" in text
    assert "URIs: http://mirror.example/debian-security\nSuites: trixie-security\n" in text
    assert text.count("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg") == 2
    assert "security" not in debian.private_apt_sources(debian.XEN_420, "http://m.example/debian", None)
    opts = apt.private_apt_options(tmp_path)
    assert f"Dir::State::Lists={tmp_path / 'lists'}" in opts and "Dir::Etc::SourceList=/dev/null" in opts


# --- apt sources and versions ----------------------------------------------------------------------

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main
"""


ONE_LINE = """\
# deb http://old.example/debian bookworm main
deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian/ bookworm main contrib
deb http://one.example/debian-security bookworm-security main
deb-src http://one.example/debian bookworm main
"""


def test_mirrors_from_deb822():
    assert debian.debian_mirrors(apt.parse_deb822_sources(DEB822, 'test')) == \
        ("http://mirror.example/debian", "http://mirror.example/debian-security")


def test_mirrors_from_one_line_format():
    assert debian.debian_mirrors(apt.parse_one_line_sources(ONE_LINE, 'test')) == \
        ("http://one.example/debian", "http://one.example/debian-security")


def test_mirrors_read_from_an_etc_apt_tree(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "other.list.disabled").write_text("deb http://no.example/ bookworm main\n")
    assert debian.debian_mirrors(apt.read_apt_sources(tmp_path))[0] == "http://mirror.example/debian"


def test_no_bookworm_source_is_an_error():
    with pytest.raises(OvmfgenError):
        debian.debian_mirrors(apt.parse_one_line_sources("deb http://x.example/debian trixie main\n", "t"))
    assert debian.debian_mirrors(apt.parse_one_line_sources("deb http://x.example/debian bookworm main\n", "t"))[1] is None


def test_this_machines_mirror_is_derived_not_written():
    # The repository names no mirror host: whatever is found comes from /etc/apt.
    src = "".join(p.read_text() for p in sorted(Path(debian.__file__).parent.glob("*.py")))
    assert "deb.debian.org" not in src
    if Path("/etc/apt").is_dir() and debian.pick_mirror(apt.read_apt_sources(), "bookworm"):
        main, _ = debian.debian_mirrors()
        assert main.startswith(("http://", "https://"))


APT_SHOW = """\
Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
Description: Linux for 64-bit PCs (meta-package)
 continuation line

Package: xen-utils-4.17
Version: 4.17.7+13-g2445b30a44-0+deb12u1
Depends: libc6 (>= 2.35), python3
"""


def test_apt_show_parsing_and_kernel_package():
    recs = debian.parse_apt_show(APT_SHOW)
    assert recs["xen-utils-4.17"]["Version"] == "4.17.7+13-g2445b30a44-0+deb12u1"
    assert debian.kernel_package(recs["linux-image-amd64"]) == "linux-image-6.1.0-56-amd64"
    with pytest.raises(OvmfgenError):
        debian.kernel_package({"Depends": "linux-headers-amd64"})


def test_safe_name():
    assert debian.safe_name("1:7.2+dfsg-7+deb12u18+b3") == "1_7.2+dfsg-7+deb12u18+b3"


def test_ensure_host_packages_uses_the_setup_installer(monkeypatch):
    asked = []
    monkeypatch.setattr(debian, "ensure_apt_packages", lambda packages: asked.append(packages))
    debian.ensure_host_packages()
    assert asked == [tuple(debian.HOST_PACKAGES)]
